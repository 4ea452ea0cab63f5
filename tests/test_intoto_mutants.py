"""Tests that kill the mutants of ``toolchain.sign.intoto`` its suite let survive
(tests/MUTATION.md): each Statement v1 field check on its own (the suite's bad statements often
failed two at once), the digest lengths we recompute, the non-ASCII canonical payload, and that
``build_statement`` refuses what it would otherwise sign."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from toolchain.errors import InputError
from toolchain.sign import KeepPredicate, LaunchConfig
from toolchain.sign.intoto import (
    DIGEST_SIZES,
    build_statement,
    canonical_payload,
    parse_statement,
    validate_statement,
)

NOW = datetime(2026, 11, 30, tzinfo=UTC)
PREDICATE = KeepPredicate(
    release="9.9.9",
    configs=[LaunchConfig("milan", 1, 0x30000, "snp", bytes(48))],
    components=[],
    toolchain={},
    provenance_sha256=hashlib.sha256(b"provenance").hexdigest(),
    not_before=NOW - timedelta(days=1),
    not_after=NOW + timedelta(days=1),
)
STATEMENT = build_statement(PREDICATE, {"keep.img": {"sha256": "00" * 32}})


def _edited(**changes: object) -> dict[str, Any]:
    statement = copy.deepcopy(STATEMENT)
    statement.update(changes)
    return statement


def test_the_digest_lengths_are_the_algorithms_hex_lengths() -> None:
    assert DIGEST_SIZES == {"sha256": 64, "sha384": 96, "sha512": 128}
    for algorithm, size in DIGEST_SIZES.items():
        good = {"name": "a", "digest": {algorithm: "0" * size}}
        assert validate_statement(_edited(subject=[good])) == PREDICATE
        for wrong in (size - 1, size + 1):
            bad = {"name": "a", "digest": {algorithm: "0" * wrong}}
            with pytest.raises(InputError, match=f"{algorithm} digest must be {size} hex digits"):
                validate_statement(_edited(subject=[bad]))


def test_each_statement_field_is_checked_on_its_own() -> None:
    for not_object in ([STATEMENT], "statement", None):
        with pytest.raises(InputError, match="an in-toto statement must be a JSON object"):
            validate_statement(not_object)
    for predicate_type in ("", 7, None):
        with pytest.raises(InputError, match="predicateType must be a non-empty string"):
            validate_statement(_edited(predicateType=predicate_type))
    for subject in (["keep.img"], [7], [None]):
        with pytest.raises(InputError, match=r"subject\[0\] must be an object with name and"):
            validate_statement(_edited(subject=subject))
    for digests in ({}, [], "00" * 32, None):
        with pytest.raises(InputError, match=r"subject\[0\] \(a\) needs a non-empty digest set"):
            validate_statement(_edited(subject=[{"name": "a", "digest": digests}]))


def test_build_statement_refuses_what_it_would_sign() -> None:
    with pytest.raises(InputError, match="sha256 digest must be 64 hex digits"):
        build_statement(PREDICATE, {"keep.img": {"sha256": "00" * 31}})
    with pytest.raises(InputError, match="non-empty list"):
        build_statement(PREDICATE, {})


def test_the_canonical_payload_is_utf8_not_escaped() -> None:
    statement = _edited(subject=[{"name": "é.img", "digest": {"sha256": "00" * 32}}])
    payload = canonical_payload(statement)
    assert "é.img".encode() in payload
    assert b"\\u00e9" not in payload
    assert json.loads(payload) == statement
    assert parse_statement(payload) == (statement, PREDICATE)
