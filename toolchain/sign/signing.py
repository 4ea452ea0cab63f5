"""Sign an in-toto statement into a DSSE envelope, or add a co-signature to one.

Every statement is validated before it is signed (our predicate against its schema), and the
per-user development key signs only references whose predicate says ``development: true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolchain.errors import InputError
from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope
from toolchain.sign.intoto import canonical_payload, parse_statement, validate_statement
from toolchain.sign.keys import PrivateKey, is_development_key, key_id, verify_bytes


def _check_development_key(predicate_is_ours: bool, development: bool, key: PrivateKey) -> None:
    if is_development_key(key) and not (predicate_is_ours and development):
        raise InputError(
            "the per-user development key signs only Keepstack references marked development",
            hint="sign releases with a release key given by --key PATH",
        )


def sign_statement(statement: Mapping[str, Any], key: PrivateKey) -> bytes:
    """Validate ``statement`` and return a DSSE envelope (JSON bytes) signed by ``key``."""
    predicate = validate_statement(dict(statement))
    _check_development_key(
        predicate is not None, predicate is not None and predicate.development, key
    )
    payload = canonical_payload(statement)
    return Envelope(payload, INTOTO_PAYLOAD_TYPE, ()).signed_by(key).to_json()


def add_signature(envelope: bytes, key: PrivateKey) -> bytes:
    """Co-sign: the same envelope with one more signature, by ``key``.

    Refuses an envelope that is not an in-toto statement, one whose existing signatures by this
    key do not verify, and a second signature by the same key (it would not count twice anyway).
    """
    parsed = Envelope.parse(envelope)
    if parsed.payload_type != INTOTO_PAYLOAD_TYPE:
        raise InputError(
            f"envelope payload type is {parsed.payload_type!r}, not {INTOTO_PAYLOAD_TYPE!r}"
        )
    _, predicate = parse_statement(parsed.payload)
    _check_development_key(
        predicate is not None, predicate is not None and predicate.development, key
    )
    public = key.public_key()
    own_id = key_id(key)
    message = parsed.pae()
    for signature in parsed.signatures:
        if signature.keyid == own_id or verify_bytes(public, signature.sig, message):
            raise InputError(f"this envelope is already signed by key {own_id}")
    return parsed.signed_by(key).to_json()
