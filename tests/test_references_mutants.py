"""Reference-verification checks that mutation testing found unpinned (tests/MUTATION.md).

Statements are signed here with a key generated in the test, as in test_references.py.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.sign import (
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    PrivateKey,
    TrustPolicy,
    build_statement,
    generate_private_key,
    sign_statement,
    verify_envelope,
)
from toolchain.sign import references as references_module
from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DIGEST = bytes(range(48))
KEEP = b"keep image bytes"


def _predicate() -> KeepPredicate:
    return KeepPredicate(
        release="0.1.0",
        configs=[LaunchConfig("milan", 1, 0x30000, "kvm", DIGEST)],
        components=[
            ComponentDigest(
                "keep.img", hashlib.sha256(KEEP).hexdigest(), hashlib.sha384(KEEP).hexdigest()
            )
        ],
        toolchain={"ziglang": "0.15.2"},
        provenance_sha256="ab" * 32,
        not_before=AT - timedelta(days=1),
        not_after=AT + timedelta(days=90),
    )


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key("ecdsa-p384")


def _trust(key: PrivateKey) -> TrustPolicy:
    return TrustPolicy.from_keys([key.public_key()], threshold=1)


def _artifacts(tmp_path: Path) -> Path:
    (tmp_path / "keep.img").write_bytes(KEEP)
    (tmp_path / "notes.txt").write_bytes(b"release notes")
    return tmp_path


def test_subject_with_only_an_unrecomputable_digest_fails(tmp_path: Path, key: PrivateKey) -> None:
    """A subject we cannot hash (only a git commit, say) is not silently taken as verified."""
    subjects = {
        "keep.img": {"sha256": hashlib.sha256(KEEP).hexdigest()},
        "notes.txt": {"gitCommit": "0123456789abcdef0123456789abcdef01234567"},
    }
    envelope = sign_statement(build_statement(_predicate(), subjects), key)
    checklist, references = verify_envelope(
        envelope, _trust(key), at=AT, artifacts=_artifacts(tmp_path)
    )
    assert references is None
    failed = {c.name: c for c in checklist.failures}
    assert set(failed) == {"artifact notes.txt"}, checklist.render()
    assert failed["artifact notes.txt"].found == "gitCommit"
    assert [c.name for c in checklist.checks].count("artifact notes.txt") == 1
    # the same file with a digest we can recompute passes
    subjects["notes.txt"] = {"sha512": hashlib.sha512(b"release notes").hexdigest()}
    envelope = sign_statement(build_statement(_predicate(), subjects), key)
    checklist, references = verify_envelope(
        envelope, _trust(key), at=AT, artifacts=_artifacts(tmp_path)
    )
    assert checklist.ok, checklist.render()
    assert references is not None


def test_a_naive_verification_time_is_unusable_input(key: PrivateKey) -> None:
    envelope = sign_statement(
        build_statement(_predicate(), {"keep.img": {"sha256": hashlib.sha256(KEEP).hexdigest()}}),
        key,
    )
    with pytest.raises(InputError, match="time zone"):
        verify_envelope(envelope, _trust(key), at=datetime(2026, 11, 27, 12, 0))


def test_a_signature_whose_keyid_names_its_key_carries_no_hint_note(key: PrivateKey) -> None:
    envelope = sign_statement(
        build_statement(_predicate(), {"keep.img": {"sha256": hashlib.sha256(KEEP).hexdigest()}}),
        key,
    )
    checklist, references = verify_envelope(envelope, _trust(key), at=AT)
    assert references is not None
    signature = next(c for c in checklist.checks if c.name.startswith("signature 1"))
    assert (signature.ok, signature.detail) == (True, "")


def test_a_wrong_keyid_hint_is_said_and_the_envelope_is_listed(key: PrivateKey) -> None:
    envelope = sign_statement(
        build_statement(_predicate(), {"keep.img": {"sha256": hashlib.sha256(KEEP).hexdigest()}}),
        key,
    )
    document = json.loads(envelope)
    document["signatures"][0]["keyid"] = "not-this-key"
    checklist, references = verify_envelope(json.dumps(document).encode(), _trust(key), at=AT)
    assert references is not None, checklist.render()
    assert checklist.checks[0].name == "trust policy"  # which policy decided comes first
    first = checklist.checks[1]
    assert (first.name, first.ok, first.found) == ("envelope", True, "DSSE, 1 signature(s)")
    signature = next(c for c in checklist.checks if c.name.startswith("signature 1"))
    assert signature.ok is True
    assert signature.detail == "keyid hint not-this-key is not this key's ID"


def test_a_signed_deeply_nested_payload_is_a_failed_statement(key: PrivateKey) -> None:
    """Even a trusted signer's payload is input: too deep to parse is a failed check."""
    envelope = Envelope(b"[" * 100_000, INTOTO_PAYLOAD_TYPE, ()).signed_by(key).to_json()
    checklist, references = verify_envelope(envelope, _trust(key), at=AT)
    assert references is None
    statement = next(c for c in checklist.checks if c.name == "statement")
    assert statement.ok is False
    assert "nested too deeply" in statement.found


def _envelope(key: PrivateKey) -> bytes:
    statement = build_statement(
        _predicate(), {"keep.img": {"sha256": hashlib.sha256(KEEP).hexdigest()}}
    )
    return sign_statement(statement, key)


def _signature_checks(checklist: object, index: int) -> list:
    prefix = f"signature {index} "
    return [c for c in checklist.checks if c.name.startswith(prefix)]  # type: ignore[attr-defined]


def test_each_signature_gets_exactly_one_line(key: PrivateKey) -> None:
    # a trusted key's signature that does not verify: one failure line, not also "untrusted"
    document = json.loads(_envelope(key))
    document["signatures"][0]["sig"] = base64.b64encode(bytes(96)).decode()
    checklist, _ = verify_envelope(json.dumps(document).encode(), _trust(key), at=AT)
    (line,) = _signature_checks(checklist, 1)
    assert line.ok is False
    threshold = next(c for c in checklist.checks if c.name == "threshold")
    assert "untrusted" not in threshold.detail
    # the same key twice: the second is listed once, as counted once
    twice = Envelope.parse(_envelope(key)).signed_by(key).to_json()
    checklist, references = verify_envelope(twice, _trust(key), at=AT)
    assert references is not None
    (second,) = _signature_checks(checklist, 2)
    assert second.ok is None
    assert "counted once" in second.detail


def test_a_key_out_of_its_scope_is_listed_not_counted(key: PrivateKey) -> None:
    trusted = _trust(key)
    scoped = dataclasses.replace(trusted.keys[0], releases=("9.*",))
    policy = dataclasses.replace(trusted, keys=(scoped,))
    checklist, references = verify_envelope(_envelope(key), policy, at=AT)
    assert references is None
    (line,) = _signature_checks(checklist, 1)
    assert line.ok is None
    assert "not trusted for release 0.1.0" in line.detail
    threshold = next(c for c in checklist.checks if c.name == "threshold")
    assert threshold.ok is False
    assert "not trusted for release 0.1.0" in threshold.detail


def test_an_unauthenticated_or_foreign_payload_is_not_examined(key: PrivateKey) -> None:
    stranger = generate_private_key("ed25519")
    checklist, references = verify_envelope(_envelope(stranger), _trust(key), at=AT)
    assert references is None
    statement = next(c for c in checklist.checks if c.name == "statement")
    assert (statement.ok, statement.detail) == (None, "not examined: no trusted signature verifies")
    foreign = Envelope(b"{}", "text/plain", ()).signed_by(key).to_json()
    checklist, references = verify_envelope(foreign, _trust(key), at=AT)
    assert references is None
    assert {c.name for c in checklist.failures} == {"payload type"}
    statement = next(c for c in checklist.checks if c.name == "statement")
    assert (statement.ok, statement.detail) == (None, "not examined: not an in-toto payload")


def test_the_artifact_list_and_every_line_of_a_valid_envelope(
    tmp_path: Path, key: PrivateKey
) -> None:
    checklist, references = verify_envelope(_envelope(key), _trust(key), at=AT)
    assert references is not None
    names = [c.name for c in checklist.checks]
    assert names[:3] == ["trust policy", "envelope", "payload type"]
    assert names[4:] == ["threshold", "statement", "predicate", "validity window", "artifacts"]
    assert [c.ok for c in checklist.checks] == [*[True] * 8, None]
    with pytest.raises(InputError, match="does not exist"):
        verify_envelope(_envelope(key), _trust(key), at=AT, artifacts=tmp_path / "absent")


def test_a_subject_outside_the_artifacts_directory_is_refused_unread(
    tmp_path: Path, key: PrivateKey
) -> None:
    inside = tmp_path / "artifacts"
    inside.mkdir()
    (inside / "keep.img").write_bytes(KEEP)
    (tmp_path / "outside.txt").write_bytes(b"outside")
    subjects = {
        "keep.img": {"sha256": hashlib.sha256(KEEP).hexdigest()},
        "../outside.txt": {"sha256": hashlib.sha256(b"outside").hexdigest()},
    }
    envelope = sign_statement(build_statement(_predicate(), subjects), key)
    checklist, references = verify_envelope(envelope, _trust(key), at=AT, artifacts=inside)
    assert references is None
    lines = [c for c in checklist.checks if c.name.startswith("artifact ../outside.txt")]
    assert [(c.ok, c.found) for c in lines] == [(False, "an unsafe subject name")]


def test_an_unreadable_artifact_is_unusable_input(
    tmp_path: Path, key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading fails (as a permission error would, which root in CI never sees): one clear error."""

    def unreadable(path: Path, algorithms: list[str]) -> dict[str, str]:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(references_module, "_file_digests", unreadable)
    with pytest.raises(InputError, match=r"cannot read artifact .*keep\.img: Permission denied"):
        verify_envelope(_envelope(key), _trust(key), at=AT, artifacts=_artifacts(tmp_path))
