"""Sign an in-toto statement into a DSSE envelope, or add a co-signature to one.

Every statement is validated before it is signed (our predicate against its schema), and the
per-user development key signs only references whose predicate says ``development: true``.
``keep sign`` signs nothing but reference statements: ``require_reference_statement`` refuses any
other document by name (an SLSA provenance signed by mistake verified VALID and then matched
nothing in ``keep run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from toolchain.errors import InputError
from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope
from toolchain.sign.intoto import (
    STATEMENT_TYPE,
    canonical_payload,
    parse_statement,
    validate_statement,
)
from toolchain.sign.keys import PrivateKey, is_development_key, key_id, verify_bytes
from toolchain.sign.predicate import PREDICATE_TYPE, KeepPredicate

if TYPE_CHECKING:
    from toolchain.sign.keys import PublicKey
    from toolchain.sign.tokens import SigningKey


def _public(key: PrivateKey | SigningKey) -> PublicKey:
    """The public half of a key in memory, in a file or in a token."""
    return key.public_key() if isinstance(key, PrivateKey) else key.public_key


_SLSA_PROVENANCE = "https://slsa.dev/provenance/"
_MAKE_ONE = "make a reference statement with: keep statement BUILD_DIR -o statement.json"


def _what_it_is(document: object) -> str | None:
    """What ``document`` is when it is not a reference statement (None when it may be one)."""
    if not isinstance(document, dict):
        return f"a JSON {type(document).__name__}, not an in-toto statement"
    if "payloadType" in document and "signatures" in document:
        return "a DSSE envelope (already signed), not a statement"
    if document.get("_type") != STATEMENT_TYPE:
        return f"not an in-toto Statement v1 (_type {document.get('_type')!r})"
    kind = document.get("predicateType")
    if isinstance(kind, str) and kind.startswith(_SLSA_PROVENANCE):
        return f"an SLSA build provenance (predicateType {kind}), not a reference statement"
    if kind != PREDICATE_TYPE:
        return f"an in-toto statement with predicateType {kind!r}, not {PREDICATE_TYPE}"
    return None


def require_reference_statement(document: object, source: str) -> KeepPredicate:
    """``keep sign``'s gate: ``document`` must be an in-toto Statement v1 whose predicate is a
    Keepstack reference (schema-valid); anything else is refused, saying what it is."""
    problem = _what_it_is(document)
    if problem is not None:
        hint = _MAKE_ONE
        if problem.startswith("a DSSE envelope"):
            hint = f"to co-sign it: keep sign --key PATH --add-to {source}"
        raise InputError(f"{source} is {problem}", hint=hint)
    try:
        predicate = validate_statement(document)
    except InputError as exc:
        raise InputError(f"{source}: {exc.message}", hint=_MAKE_ONE) from exc
    if predicate is None:  # excluded by _what_it_is; kept for the type checker
        raise InputError(f"{source} is not a reference statement", hint=_MAKE_ONE)
    return predicate


def _check_development_key(
    predicate_is_ours: bool, development: bool, key: PrivateKey | SigningKey
) -> None:
    if is_development_key(_public(key)) and not (predicate_is_ours and development):
        raise InputError(
            "the per-user development key signs only Keepstack references marked development",
            hint="sign releases with a release key given by --key PATH",
        )


def sign_statement(statement: Mapping[str, Any], key: PrivateKey | SigningKey) -> bytes:
    """Validate ``statement`` and return a DSSE envelope (JSON bytes) signed by ``key``."""
    predicate = validate_statement(dict(statement))
    _check_development_key(
        predicate is not None, predicate is not None and predicate.development, key
    )
    payload = canonical_payload(statement)
    return Envelope(payload, INTOTO_PAYLOAD_TYPE, ()).signed_by(key).to_json()


def add_signature(envelope: bytes, key: PrivateKey | SigningKey) -> bytes:
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
    public = _public(key)
    own_id = key_id(public)
    message = parsed.pae()
    for signature in parsed.signatures:
        if signature.keyid == own_id or verify_bytes(public, signature.sig, message):
            raise InputError(f"this envelope is already signed by key {own_id}")
    return parsed.signed_by(key).to_json()
