"""``keep sign``: sign a reference statement into a DSSE envelope, or co-sign an envelope.

Only an in-toto Statement v1 with the Keepstack reference predicate is signed (``keep statement``
writes one); anything else, such as a build's ``provenance.json``, is refused by name (exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from toolchain.cli.keygen import add_passphrase_options

    key = parser.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=Path, metavar="PATH", help="private key (from keep keygen)")
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


def run(args: argparse.Namespace) -> int:
    import json

    from toolchain.errors import InputError
    from toolchain.sign import strict_json
    from toolchain.sign.dsse import Envelope
    from toolchain.sign.keys import dev_key, key_id
    from toolchain.sign.passphrase import load_key_for_signing
    from toolchain.sign.signing import add_signature, require_reference_statement, sign_statement

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
    else:
        key_path = args.key
        key = load_key_for_signing(args, key_path)
    if existing is not None:
        envelope = add_signature(existing, key)
    else:  # a reference statement, checked above
        envelope = sign_statement(statement, key)  # type: ignore[arg-type]
    _write_atomically(output, envelope)
    count = len(Envelope.parse(envelope).signatures)
    print(f"signed {output} with key {key_id(key)} ({key_path}); {count} signature(s)")
    return 0
