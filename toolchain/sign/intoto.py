"""in-toto Statement v1: build one around our predicate, and validate any statement before signing.

https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md — subjects are artifacts by
digest; the predicate says what is claimed about them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from toolchain.errors import InputError
from toolchain.sign import strict_json
from toolchain.sign.predicate import PREDICATE_TYPE, KeepPredicate

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# Digest algorithms whose hex length we know (and can recompute from a file).
DIGEST_SIZES = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def build_statement(
    predicate: KeepPredicate, subjects: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """An in-toto Statement v1 with our predicate about ``subjects`` (name -> {alg: hex})."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": dict(digests)} for name, digests in sorted(subjects.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate.to_json(),
    }
    validate_statement(statement)
    return statement


def canonical_payload(statement: Mapping[str, Any]) -> bytes:
    """The bytes that get signed: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_statement(payload: bytes) -> tuple[dict[str, Any], KeepPredicate | None]:
    """Parse and validate a statement: (statement, our predicate or None for other types)."""
    try:
        statement = strict_json.loads(payload)
    except ValueError as exc:  # also UnicodeDecodeError and JSONDecodeError
        raise InputError(f"payload is not a JSON in-toto statement ({exc})") from exc
    predicate = validate_statement(statement)
    return statement, predicate


def validate_statement(statement: object) -> KeepPredicate | None:
    """Check the Statement v1 envelope fields; for our predicate type also its schema.

    Returns the parsed predicate when it is ours, None for any other predicate type.
    """
    if not isinstance(statement, dict):
        raise InputError("an in-toto statement must be a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise InputError(
            f"statement _type must be {STATEMENT_TYPE!r}, found {statement.get('_type')!r}"
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise InputError("statement subject must be a non-empty list of artifacts by digest")
    names: set[str] = set()
    for index, subject in enumerate(subjects):
        _validate_subject(subject, index)
        if subject["name"] in names:
            raise InputError(f"statement subject {subject['name']!r} is listed twice")
        names.add(subject["name"])
    predicate_type = statement.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise InputError("statement predicateType must be a non-empty string (a URI)")
    if not isinstance(statement.get("predicate"), dict):
        raise InputError("statement predicate must be a JSON object")
    if predicate_type == PREDICATE_TYPE:
        return KeepPredicate.from_json(statement["predicate"])
    return None


def _validate_subject(subject: object, index: int) -> None:
    where = f"statement subject[{index}]"
    if not isinstance(subject, dict):
        raise InputError(f"{where} must be an object with name and digest")
    name = subject.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"{where} needs a non-empty name")
    digests = subject.get("digest")
    if not isinstance(digests, dict) or not digests:
        raise InputError(f"{where} ({name}) needs a non-empty digest set")
    for algorithm, value in digests.items():
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise InputError(f"{where} ({name}): digest {algorithm} must be lowercase hex")
        size = DIGEST_SIZES.get(algorithm)
        if size is not None and len(value) != size:
            raise InputError(
                f"{where} ({name}): {algorithm} digest must be {size} hex digits, "
                f"found {len(value)}"
            )
