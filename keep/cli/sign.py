"""``keep sign``: sign a reference statement into a DSSE envelope, or co-sign an envelope.

Only an in-toto Statement v1 with the Keepstack reference predicate is signed (``keep statement``
writes one); anything else, such as a build's ``provenance.json``, is refused by name (exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    from keep.cli.keygen import add_passphrase_options

    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--key",
        metavar="PATH|URI",
        help="private key file (from keep keygen) or a PKCS#11 URI "
        "pkcs11:token=LABEL;object=LABEL (module and PIN from $KEEPSTACK_PKCS11_MODULE and "
        "$KEEPSTACK_PKCS11_PIN)",
    )
    key.add_argument(
        "--development",
        action="store_true",
        help="sign with your per-user development key (development references only)",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--statement",
        type=Path,
        metavar="FILE",
        help="reference statement (in-toto Statement v1 JSON, from keep statement)",
    )
    what.add_argument(
        "--add-to", type=Path, metavar="ENVELOPE", help="add a co-signature to this envelope"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="ENVELOPE",
        help="where to write the envelope (required with --statement; "
        "default for --add-to: update it in place)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_passphrase_options(parser)


def _read(path: Path, what: str) -> bytes:
    from toolchain.errors import InputError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    from toolchain.errors import PlatformError

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise PlatformError(f"cannot write {path}: {exc.strerror}") from exc


def _sign(statement: object, existing: bytes | None, key: Any) -> bytes:
    from toolchain.sign.signing import add_signature, sign_statement

    if existing is not None:
        return add_signature(existing, key)
    return sign_statement(statement, key)  # type: ignore[arg-type]  # checked by the caller


def run(args: argparse.Namespace) -> int:
    import json

    from toolchain.errors import InputError
    from toolchain.sign import strict_json
    from toolchain.sign.dsse import Envelope
    from toolchain.sign.keys import dev_key, key_id
    from toolchain.sign.passphrase import load_key_for_signing
    from toolchain.sign.signing import require_reference_statement
    from toolchain.sign.tokens import open_signing_key

    if args.statement is not None and args.output is None:
        raise InputError("--statement needs -o ENVELOPE (where to write the signed envelope)")
    output: Path = args.output or args.add_to
    if args.statement is not None and output.exists() and not args.force:
        raise InputError(f"{output} already exists", hint="pass --force to overwrite it")

    # What is signed is checked first: no passphrase is asked for a document that is refused.
    statement: object = None
    existing: bytes | None = None
    if args.statement is not None:
        try:
            statement = json.loads(_read(args.statement, "statement"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"statement {args.statement} is not JSON: {exc}") from exc
        require_reference_statement(statement, str(args.statement))
    else:
        existing = _read(args.add_to, "envelope")
        try:
            payload = strict_json.loads(Envelope.parse(existing).payload)
        except ValueError as exc:  # also UnicodeDecodeError and JSONDecodeError
            raise InputError(f"the payload of {args.add_to} is not JSON ({exc})") from exc
        require_reference_statement(payload, f"the payload of {args.add_to}")

    if args.development:
        key, key_path = dev_key()
        identity = key_id(key)
        envelope = _sign(statement, existing, key)
    else:  # a key file or a key in a PKCS#11 token
        key_path = args.key
        token_or_file = open_signing_key(
            args.key, passphrase=lambda path: load_key_for_signing(args, path)
        )
        try:
            envelope = _sign(statement, existing, token_or_file)
        finally:
            token_or_file.close()
        identity = token_or_file.key_id
    _write_atomically(output, envelope)
    count = len(Envelope.parse(envelope).signatures)
    print(f"signed {output} with key {identity} ({key_path}); {count} signature(s)")
    return 0
