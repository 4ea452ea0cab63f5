"""Where a private key's passphrase comes from: an environment variable or a terminal prompt.

Shared by ``keep keygen`` and ``keep sign``; the options themselves are in ``keep.cli.keygen``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputError

if TYPE_CHECKING:
    from toolchain.sign.keys import PrivateKey


def _prompt(prompt: str) -> bytes:
    try:
        value = getpass.getpass(prompt)
    except (EOFError, OSError) as exc:
        raise InputError("cannot prompt for a passphrase: no terminal") from exc
    if not value:
        raise InputError("empty passphrase")
    return value.encode()


def passphrase_for_new_key(args: argparse.Namespace) -> bytes | None:
    """The passphrase to encrypt a new key with (None: unencrypted)."""
    from toolchain.sign.keys import passphrase_from_env

    if args.passphrase_env:
        return passphrase_from_env(args.passphrase_env)
    if args.passphrase_prompt:
        first = _prompt("passphrase for the new key: ")
        if _prompt("repeat the passphrase: ") != first:
            raise InputError("the two passphrases differ")
        return first
    return None


def load_key_for_signing(args: argparse.Namespace, path: Path) -> PrivateKey:
    """Load ``path`` with the passphrase the options name; on a terminal, an encrypted key
    without one is prompted for."""
    from toolchain.sign.keys import load_private_key, passphrase_from_env

    def ask(key_path: Path) -> bytes:
        return _prompt(f"passphrase for {key_path}: ")

    if args.passphrase_env:
        return load_private_key(path, passphrase=passphrase_from_env(args.passphrase_env))
    if args.passphrase_prompt:
        return load_private_key(path, passphrase=ask(path))
    return load_private_key(path, ask_passphrase=ask if sys.stdin.isatty() else None)
