"""Where a private key's passphrase comes from: an environment variable or a terminal prompt.

Shared by ``keep keygen`` and ``keep sign``; the options themselves are in ``toolchain.cli.keygen``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from toolchain.errors import InputError


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


def passphrase_for_key(args: argparse.Namespace, path: Path) -> bytes | None:
    """The passphrase to read ``path`` with; prompts on a terminal for an encrypted key."""
    from toolchain.sign.keys import is_encrypted, passphrase_from_env

    if args.passphrase_env:
        return passphrase_from_env(args.passphrase_env)
    if args.passphrase_prompt or (is_encrypted(path) and sys.stdin.isatty()):
        return _prompt(f"passphrase for {path}: ")
    return None
