"""Verifying signed reference measurements: round trip, threshold, every rejection by name, CLI."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tufrepo import make_repository

import toolchain.sign.trust as sign_trust
from keep.cli import main
from toolchain.errors import EvidenceError, InputError
from toolchain.sign import (
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    PrivateKey,
    TrustPolicy,
    add_signature,
    build_statement,
    dev_key,
    generate_private_key,
    key_id,
    require_references,
    sign_statement,
    verify_envelope,
)
from toolchain.sign.dsse import Envelope, Signature
from toolchain.sign.keys import public_key_pem
from toolchain.sign.trust import TrustedKey

ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MILAN_DIGEST = bytes(range(48))
GENOA_DIGEST = bytes(range(48, 96))
POLICY = 0x30000
ARTIFACTS = {"ukernel.elf": b"\x7fELF microkernel", "keep.img": b"keep image bytes"}


def _predicate(*, development: bool = False, release: str = "0.1.0") -> KeepPredicate:
    return KeepPredicate(
        release=release,
        configs=[
            LaunchConfig("milan", 1, POLICY, "kvm", MILAN_DIGEST),
            LaunchConfig("genoa", 4, POLICY, "kvm", GENOA_DIGEST),
            LaunchConfig("any", 2, POLICY, "nil", GENOA_DIGEST),
        ],
        components=[
            ComponentDigest(
                name, hashlib.sha256(data).hexdigest(), hashlib.sha384(data).hexdigest()
            )
            for name, data in ARTIFACTS.items()
        ],
        toolchain={"ziglang": "0.15.2", "wabt": "1.0.42"},
        provenance_sha256="ab" * 32,
        not_before=AT - timedelta(days=1),
        not_after=AT + timedelta(days=90),
        development=development,
    )


def _statement(**kwargs: object) -> dict[str, object]:
    subjects = {
        name: {
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha384": hashlib.sha384(data).hexdigest(),
        }
        for name, data in ARTIFACTS.items()
    }
    return build_statement(_predicate(**kwargs), subjects)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def key_a() -> PrivateKey:
    return generate_private_key("ecdsa-p384")


@pytest.fixture(scope="module")
def key_b() -> PrivateKey:
    return generate_private_key("ed25519")


@pytest.fixture(scope="module")
def envelope(key_a: PrivateKey) -> bytes:
    return sign_statement(_statement(), key_a)


def _trust(*keys: PrivateKey, threshold: int = 1) -> TrustPolicy:
    return TrustPolicy.from_keys([k.public_key() for k in keys], threshold=threshold)


def _failed(checklist: object) -> list[str]:
    return [c.line() for c in checklist.failures]  # type: ignore[attr-defined]


def _rewrite(envelope: bytes, **changes: object) -> bytes:
    document = json.loads(envelope)
    document.update(changes)
    return json.dumps(document).encode()


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_and_allowed_pairs(envelope: bytes, key_a: PrivateKey) -> None:
    checklist, references = verify_envelope(envelope, _trust(key_a), at=AT)
    assert checklist.ok, checklist.render()
    assert references is not None
    assert references.release == "0.1.0"
    assert references.development is False
    assert references.signers == (key_id(key_a),)
    assert references.allows(MILAN_DIGEST, cpu_generation="milan", vcpus=1, guest_policy=POLICY)
    assert references.allows(MILAN_DIGEST)
    assert not references.allows(MILAN_DIGEST, cpu_generation="genoa")
    assert not references.allows(MILAN_DIGEST, vcpus=2)
    assert not references.allows(MILAN_DIGEST, guest_policy=POLICY | 1)
    assert not references.allows(bytes(48))
    # "any" CPU generation fits every generation, but only with its own vCPU count and backend.
    assert references.allows(GENOA_DIGEST, cpu_generation="turin", vcpus=2, backend="nil")
    assert not references.allows(GENOA_DIGEST, cpu_generation="turin", vcpus=2, backend="kvm")
    assert references.allows(GENOA_DIGEST, cpu_generation="turin", vcpus=4) is False
    pairs = references.allowed_pairs()
    assert (MILAN_DIGEST, LaunchConfig("milan", 1, POLICY, "kvm", MILAN_DIGEST)) in pairs
    assert len(pairs) == 3


def test_keygen_sign_cosign_verify_cli_reaches_threshold_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "a.pem"]) == 0
    monkeypatch.setenv("B_PASS", "b-secret")
    assert main(["keygen", "b.pem", "--algorithm", "ed25519", "--passphrase-env", "B_PASS"]) == 0
    Path("statement.json").write_text(json.dumps(_statement()))
    for name, data in ARTIFACTS.items():
        Path("artifacts").mkdir(exist_ok=True)
        Path("artifacts", name).write_bytes(data)
    assert main(["sign", "--key", "a.pem", "--statement", "statement.json", "-o", "e.json"]) == 0
    trust = ["--trusted-key", "a.pem.pub", "--trusted-key", "b.pem.pub"]
    at = ["--at", "2026-11-27T12:00:00Z"]
    capsys.readouterr()
    assert main(["references", "verify", "e.json", *trust, "--threshold", "2", *at]) == 1
    out = capsys.readouterr().out
    assert "✗ threshold: expected 2 distinct trusted key(s), found 1" in out
    assert main(["sign", "--key", "b.pem", "--passphrase-env", "B_PASS", "--add-to", "e.json"]) == 0
    capsys.readouterr()
    code = main(
        [
            "references",
            "verify",
            "e.json",
            *trust,
            "--threshold",
            "2",
            *at,
            "--artifacts",
            "artifacts",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "✔ threshold: 2 distinct trusted key(s) signed" in out
    assert "✔ artifact keep.img: sha256, sha384 match" in out
    assert "=> VALID" in out
    # Co-signing twice with the same key is refused.
    assert main(["sign", "--key", "a.pem", "--add-to", "e.json"]) == 2
    assert "already signed" in capsys.readouterr().err
    # JSON output carries the same verdict.
    assert main(["references", "verify", "e.json", *trust, *at, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_threshold_two_and_a_key_scoped_to_releases(
    tmp_path: Path,
    key_a: PrivateKey,
    key_b: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a TUF role gives its keys: a threshold and the releases they sign (the target's
    folder; tests/test_tuf.py shows the client scoping a role's keys so)."""
    scoped = TrustedKey(key_b.public_key(), key_id(key_b), "release-b", ("0.1.*",))
    policy = TrustPolicy((TrustPolicy.from_keys([key_a.public_key()]).keys[0], scoped), 2)
    both = add_signature(sign_statement(_statement(), key_a), key_b)
    checklist, references = verify_envelope(both, policy, at=AT)
    assert checklist.ok, checklist.render()
    assert references is not None
    assert set(references.signers) == {key_id(key_a), key_id(key_b)}
    # Key b is trusted only for 0.1.*: for another release it does not count.
    other_release = add_signature(sign_statement(_statement(release="0.2.0"), key_a), key_b)
    checklist, references = verify_envelope(other_release, policy, at=AT)
    assert references is None
    assert "not trusted for release 0.2.0 (only 0.1.*); not counted" in checklist.render()
    # The CLI refuses to lower the threshold of a TUF trust.
    root = make_repository(tmp_path, key_a, {"0.1.0/e.dsse.json": both})
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(root.parent.parent))
    env = str(root.parent.parent / "0.1.0/e.dsse.json")
    assert main(["references", "verify", env, "--trust", str(root), "--threshold", "0"]) == 2
    assert "may only be raised" in capsys.readouterr().err


# --- rejections, each named ---------------------------------------------------------------------


def test_changed_payload_byte_is_rejected(envelope: bytes, key_a: PrivateKey) -> None:
    parsed = Envelope.parse(envelope)
    for position in (0, len(parsed.payload) // 2, len(parsed.payload) - 1):
        payload = bytearray(parsed.payload)
        payload[position] ^= 0x01
        changed = Envelope(bytes(payload), parsed.payload_type, parsed.signatures).to_json()
        checklist, references = verify_envelope(changed, _trust(key_a), at=AT)
        assert references is None
        failures = _failed(checklist)
        assert any("signature 1" in f and "does not verify" in f for f in failures), failures
        assert any("payload or payload type changed" in f for f in failures)
        assert any(f.startswith("✗ threshold") for f in failures)


def test_changed_payload_type_is_rejected(envelope: bytes, key_a: PrivateKey) -> None:
    changed = _rewrite(envelope, payloadType="application/vnd.in-toto+jsoN")
    checklist, references = verify_envelope(changed, _trust(key_a), at=AT)
    assert references is None
    failures = _failed(checklist)
    assert failures[0].startswith("✗ payload type: expected application/vnd.in-toto+json")
    assert any("signature 1" in f and "does not verify" in f for f in failures)


def test_signature_by_untrusted_key_is_rejected(envelope: bytes, key_b: PrivateKey) -> None:
    checklist, references = verify_envelope(envelope, _trust(key_b), at=AT)
    assert references is None
    text = checklist.render()
    assert "not by any trusted key; not counted" in text
    assert "✗ threshold: expected 1 distinct trusted key(s), found 0" in text
    assert "signature 1 is by an untrusted key" in text


def test_untrusted_cosignature_does_not_count(key_a: PrivateKey, key_b: PrivateKey) -> None:
    both = add_signature(sign_statement(_statement(), key_a), key_b)
    stranger = generate_private_key()
    checklist, references = verify_envelope(both, _trust(key_a, stranger, threshold=2), at=AT)
    assert references is None
    assert "found 1 distinct trusted key(s) signed" in checklist.render()


def test_same_key_twice_with_the_same_keyid_counts_once(
    envelope: bytes, key_a: PrivateKey, key_b: PrivateKey
) -> None:
    parsed = Envelope.parse(envelope)
    # A second, different but valid ECDSA signature by the same key (ECDSA is randomised).
    again = Envelope.parse(sign_statement(_statement(), key_a)).signatures[0]
    assert again.sig != parsed.signatures[0].sig
    for second in (parsed.signatures[0], again):
        doubled = Envelope(parsed.payload, parsed.payload_type, (parsed.signatures[0], second))
        checklist, references = verify_envelope(
            doubled.to_json(), _trust(key_a, key_b, threshold=2), at=AT
        )
        assert references is None
        text = checklist.render()
        assert "same key as signature 1; counted once" in text
        assert "✗ threshold: expected 2 distinct trusted key(s), found 1" in text
        assert "signed more than once and counts once" in text


def test_same_key_under_two_keyids_counts_once(
    envelope: bytes, key_a: PrivateKey, key_b: PrivateKey
) -> None:
    parsed = Envelope.parse(envelope)
    original = parsed.signatures[0]
    for fake_id in ("", "ff" * 32, key_id(key_b)):
        relabelled = Signature(fake_id, original.sig)
        doubled = Envelope(parsed.payload, parsed.payload_type, (original, relabelled))
        checklist, references = verify_envelope(
            doubled.to_json(), _trust(key_a, key_b, threshold=2), at=AT
        )
        assert references is None, fake_id
        text = checklist.render()
        assert "same key as signature 1; counted once" in text
        assert "found 1 distinct" in text


def test_same_key_listed_twice_in_policy_counts_once(envelope: bytes, key_a: PrivateKey) -> None:
    # from_keys keeps one copy, so a policy cannot be satisfied twice by one key...
    policy = TrustPolicy.from_keys([key_a.public_key(), key_a.public_key()], threshold=2)
    assert len(policy.keys) == 1
    with pytest.raises(InputError, match="1 distinct key"):
        verify_envelope(envelope, policy, at=AT)


def test_same_key_under_two_entries_of_a_policy_is_refused(key_a: PrivateKey) -> None:
    (entry,) = TrustPolicy.from_keys([key_a.public_key()]).keys
    with pytest.raises(InputError, match="same key is listed more than once"):
        TrustPolicy((entry, replace(entry, name="again")), 2)


@pytest.mark.parametrize(
    ("at", "found"),
    [
        (AT + timedelta(days=91), "expired at 2027-02-26T12:00:00Z"),
        (AT - timedelta(days=2), "not yet valid at 2026-11-25T12:00:00Z"),
    ],
)
def test_expired_and_not_yet_valid_are_rejected(
    envelope: bytes, key_a: PrivateKey, at: datetime, found: str
) -> None:
    checklist, references = verify_envelope(envelope, _trust(key_a), at=at)
    assert references is None
    assert _failed(checklist) == [
        "✗ validity window: expected 2026-11-26T12:00:00Z to 2027-02-25T12:00:00Z, found " + found
    ]
    with pytest.raises(EvidenceError, match="validity window"):
        require_references(envelope, _trust(key_a), at=at)


def test_validity_bounds_are_inclusive(envelope: bytes, key_a: PrivateKey) -> None:
    for at in (AT - timedelta(days=1), AT + timedelta(days=90)):
        assert verify_envelope(envelope, _trust(key_a), at=at)[1] is not None


def test_artifact_digest_difference_is_rejected(
    tmp_path: Path, envelope: bytes, key_a: PrivateKey
) -> None:
    for name, data in ARTIFACTS.items():
        (tmp_path / name).write_bytes(data)
    checklist, references = verify_envelope(envelope, _trust(key_a), at=AT, artifacts=tmp_path)
    assert references is not None, checklist.render()
    (tmp_path / "keep.img").write_bytes(ARTIFACTS["keep.img"] + b"\x00")
    checklist, references = verify_envelope(envelope, _trust(key_a), at=AT, artifacts=tmp_path)
    assert references is None
    failures = _failed(checklist)
    assert len(failures) == 1
    assert failures[0].startswith("✗ artifact keep.img sha256: expected ")
    assert "the file differs from the signed digest" in failures[0]
    (tmp_path / "keep.img").unlink()
    checklist, _ = verify_envelope(envelope, _trust(key_a), at=AT, artifacts=tmp_path)
    assert _failed(checklist) == [
        f"✗ artifact keep.img: expected a file in {tmp_path}, found missing"
    ]


def test_unsafe_subject_name_is_not_read(tmp_path: Path, key_a: PrivateKey) -> None:
    statement = _statement()
    statement["subject"] = [{"name": "../escape", "digest": {"sha256": "0" * 64}}]
    envelope = sign_statement(statement, key_a)
    checklist, references = verify_envelope(envelope, _trust(key_a), at=AT, artifacts=tmp_path)
    assert references is None
    assert "an unsafe subject name" in checklist.render()


@pytest.mark.parametrize("cut", [1, 40, 200, -2])
def test_truncated_envelope_is_unusable_input(envelope: bytes, key_a: PrivateKey, cut: int) -> None:
    with pytest.raises(InputError, match="truncated"):
        verify_envelope(envelope[:cut], _trust(key_a), at=AT)


def test_non_json_envelope_is_unusable_input(
    tmp_path: Path, key_a: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputError, match="not JSON"):
        verify_envelope(b"-----BEGIN PGP MESSAGE-----", _trust(key_a), at=AT)
    path = tmp_path / "e.json"
    path.write_bytes(b"\x00\x01binary")
    pub = tmp_path / "a.pub"
    pub.write_bytes(public_key_pem(key_a.public_key()))
    assert main(["references", "verify", str(path), "--trusted-key", str(pub)]) == 2
    err = capsys.readouterr().err
    assert "unusable input" in err
    assert "not JSON" in err


def test_signed_garbage_payload_fails_the_statement_check(key_a: PrivateKey) -> None:
    envelope = Envelope(b"not json", "application/vnd.in-toto+json", ()).signed_by(key_a)
    checklist, references = verify_envelope(envelope.to_json(), _trust(key_a), at=AT)
    assert references is None
    assert _failed(checklist)[0].startswith("✗ statement: expected an in-toto Statement v1")


def test_other_predicate_types_verify_without_references(key_a: PrivateKey) -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {}},
    }
    checklist, references = verify_envelope(sign_statement(statement, key_a), _trust(key_a), at=AT)
    assert checklist.ok
    assert references is None
    assert "no validity window or launch digests" in checklist.render()


def test_unsatisfiable_policy_is_unusable_input(envelope: bytes) -> None:
    empty = TrustPolicy((), 1)
    with pytest.raises(InputError, match="lists 0 distinct key"):
        verify_envelope(envelope, empty, at=AT)


def test_built_in_trust_is_the_tuf_root_the_package_pins() -> None:
    policy = TrustPolicy.load_builtin()
    assert policy.tuf is not None
    assert "pinned built-in root" in policy.describe()
    # The installed package's file (under the mutation runner, the package is a copy elsewhere).
    package = Path(sign_trust.__file__).resolve().parent
    assert policy.path == package / "release-trust/root.json"
    assert policy.tuf.pinned_sha256 == hashlib.sha256(policy.path.read_bytes()).hexdigest()
    # No policy of the removed format anywhere: not in the package, not beside the releases.
    assert not (package / "release-trust/trust.toml").exists()
    assert not (ROOT / "reference-measurements" / "trust.toml").exists()


def test_a_trust_file_that_is_not_a_tuf_root_is_refused(
    tmp_path: Path,
    envelope: bytes,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trust.toml format was removed in 0.3.0: a file of it is never read, and the error
    says what to use instead, for --trust and for $KEEPSTACK_TRUST alike."""
    policy = tmp_path / "trust.toml"
    policy.write_text("version = 1\nthreshold = 1\n")
    for chosen in (policy, tmp_path / "missing.toml"):
        with pytest.raises(InputError, match=r"removed in Keepstack 0\.3\.0") as caught:
            TrustPolicy.select(chosen)
        assert "keep tuf init" in str(caught.value.hint)
        assert "--trusted-key" in str(caught.value.hint)
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    assert main(["references", "verify", str(path), "--trust", str(policy)]) == 2
    err = capsys.readouterr().err
    assert f"--trust {policy}: not a TUF root (.json)" in err
    monkeypatch.setenv("KEEPSTACK_TRUST", str(policy))
    assert main(["references", "verify", str(path)]) == 2
    assert f"$KEEPSTACK_TRUST {policy}: not a TUF root" in capsys.readouterr().err
    with pytest.raises(InputError, match="threshold must be at least 1"):
        TrustPolicy((), 0)


# --- development references -------------------------------------------------------------------


def test_development_key_signs_only_development_references(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key, _ = dev_key()
    with pytest.raises(InputError, match="development"):
        sign_statement(_statement(), key)
    envelope = sign_statement(_statement(development=True), key)
    checklist, references = verify_envelope(envelope, _trust(key), at=AT)
    assert references is not None
    assert references.development is True
    assert "development reference" in checklist.render()
    with pytest.raises(InputError, match="development"):
        add_signature(sign_statement(_statement(), generate_private_key()), key)
    # The CLI says "development" too.
    path = tmp_path / "dev.json"
    path.write_bytes(envelope)
    pub = tmp_path / "dev.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    verify = ["references", "verify", str(path), "--trusted-key", str(pub)]
    assert main([*verify, "--at", "2026-11-27T12:00:00Z"]) == 0
    assert "DEVELOPMENT reference" in capsys.readouterr().out
    statement = tmp_path / "s.json"
    statement.write_text(json.dumps(_statement(development=True)))
    out = tmp_path / "out.json"
    assert main(["sign", "--development", "--statement", str(statement), "-o", str(out)]) == 0
    assert Envelope.parse(out.read_bytes()).signatures[0].keyid == key_id(key)


# --- keep references show ------------------------------------------------------------------------


def test_show_prints_the_predicate_as_a_table(
    tmp_path: Path, envelope: bytes, key_a: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    assert main(["references", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("UNVERIFIED")
    assert "release      0.1.0" in out
    assert f"  milan  1      0x0000000000030000  kvm      {MILAN_DIGEST.hex()}" in out.splitlines()
    assert f"  ukernel.elf  {hashlib.sha256(ARTIFACTS['ukernel.elf']).hexdigest()}" in out
    assert "  ziglang  0.15.2" in out
    assert f"sha256:{'ab' * 32}" in out
    pub = tmp_path / "a.pub"
    pub.write_bytes(public_key_pem(key_a.public_key()))
    assert (
        main(["references", "show", str(path), "--trusted-key", str(pub), "--at", "2026-12-01"])
        == 0
    )
    out = capsys.readouterr().out
    assert "=> VALID" in out
    assert "UNVERIFIED" not in out
    assert main(["references", "show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predicate"]["release"] == "0.1.0"


def test_threshold_zero_is_unusable_input(
    tmp_path: Path, envelope: bytes, key_a: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    pub = tmp_path / "a.pub"
    pub.write_bytes(public_key_pem(key_a.public_key()))
    assert (
        main(["references", "verify", str(path), "--trusted-key", str(pub), "--threshold", "0"])
        == 2
    )
    assert "threshold must be at least 1" in capsys.readouterr().err


# --- which trust policy decides (issue 10, finding 3) -------------------------------------------


def plant_trust_policy(directory: Path, key: PrivateKey, envelope: bytes) -> Path:
    """Someone else's TUF repository ``directory/reference-measurements`` (the attacker's
    checkout, or a downloaded tarball), listing ``envelope`` under the release it names and
    trusting ``key`` to sign it; returns its root (what a tenant would have to pin to trust it)."""
    release = json.loads(Envelope.parse(envelope).payload)["predicate"]["release"]
    return make_repository(directory, key, {f"{release}/their.dsse.json": envelope})


def builtin_line() -> str:
    return f"✔ trust policy: {TrustPolicy.load_builtin().describe()}"


#: How the built-in trust refuses an envelope signed by someone else's key: TUF lists none.
FOREIGN_REFUSED = "✗ TUF target"
FOREIGN_REFUSED_LINE = "listed by no TUF targets role"


def test_a_policy_in_the_current_directory_is_never_used(
    tmp_path: Path,
    envelope: bytes,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack: a directory holding someone else's TUF repository, key and envelope. Their
    envelope must not print VALID; the checklist names the built-in root that decided."""
    planted = plant_trust_policy(tmp_path, key_a, envelope)
    monkeypatch.chdir(tmp_path)
    Path("their.dsse.json").write_bytes(envelope)
    assert main(["references", "verify", "their.dsse.json", "--at", "2026-11-27T12:00:00Z"]) == 1
    out = capsys.readouterr().out
    assert builtin_line() in out
    assert FOREIGN_REFUSED_LINE in out
    assert "=> INVALID" in out
    assert "=> VALID" not in out
    # Only when given (root and metadata) does their trust count; the checklist then names it.
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(planted.parent.parent))
    at = ["--at", "2026-11-27T12:00:00Z"]
    assert main(["references", "verify", "their.dsse.json", "--trust", str(planted), *at]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    assert f"(followed from the pinned {planted} root, sha256 {digest})" in out
    assert "=> VALID" in out


def test_keepstack_trust_names_a_policy_and_the_checklist_says_so(
    tmp_path: Path,
    envelope: bytes,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted = plant_trust_policy(tmp_path / "mine", key_a, envelope)
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(planted.parent.parent))
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    monkeypatch.setenv("KEEPSTACK_TRUST", str(planted))
    verify = ["references", "verify", str(path), "--at", "2026-11-27T12:00:00Z", "--json"]
    assert main(verify) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert checks[0]["name"] == "trust policy"
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    origin = f"{planted} (from $KEEPSTACK_TRUST)"
    assert f"(followed from the pinned {origin} root, sha256 {digest})" in checks[0]["found"]
    # --trust wins over the variable; a variable naming a missing file is unusable input.
    monkeypatch.setenv("KEEPSTACK_TRUST", str(tmp_path / "missing.json"))
    assert main(verify) == 2
    assert "(from $KEEPSTACK_TRUST)" in capsys.readouterr().err
    assert main([*verify, "--trust", str(planted)]) == 0
    capsys.readouterr()
    monkeypatch.delenv("KEEPSTACK_TRUST")
    monkeypatch.delenv("KEEPSTACK_TUF_REPOSITORY")
    assert main(verify) == 1
    first = json.loads(capsys.readouterr().out)["checks"][0]["found"]
    assert first == TrustPolicy.load_builtin().describe()
    assert "built-in" in first


def test_trusted_keys_are_named_in_the_checklist(
    tmp_path: Path, envelope: bytes, key_a: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    pub = tmp_path / "a.pub"
    pub.write_bytes(public_key_pem(key_a.public_key()))
    assert main(["references", "verify", str(path), "--trusted-key", str(pub),
                 "--at", "2026-11-27T12:00:00Z"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"✔ trust policy: --trusted-key {pub} (key ID: SHA-256 of the public key " in out
    assert key_id(key_a) in out


def test_reproduce_refuses_an_envelope_trusted_only_by_a_planted_policy(
    tmp_path: Path,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """keep reproduce from the attacker's directory: refused before anything is built."""
    from toolchain import __version__

    statement = _statement(release=__version__)
    statement["predicate"]["validity"]["notAfter"] = "2099-01-01T00:00:00Z"  # type: ignore[index]
    envelope = sign_statement(statement, key_a)
    make_repository(tmp_path, key_a, {f"{__version__}/hello.dsse.json": envelope})

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("reproduce built from an envelope the built-in policy refuses")

    monkeypatch.setattr("toolchain.image.keep_build.build_keep", no_build)
    monkeypatch.chdir(tmp_path)
    relative = f"reference-measurements/{__version__}/hello.dsse.json"
    assert main(["reproduce", relative]) == 1
    out = capsys.readouterr().out
    assert builtin_line() in out
    assert FOREIGN_REFUSED in out
    assert "=> REPRODUCED" not in out


def test_cli_reports_changed_payload_with_exit_1(
    tmp_path: Path, envelope: bytes, key_a: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(envelope)
    payload = bytearray(base64.b64decode(document["payload"]))
    payload[10] ^= 0x20
    document["payload"] = base64.b64encode(bytes(payload)).decode()
    path = tmp_path / "e.json"
    path.write_text(json.dumps(document))
    pub = tmp_path / "a.pub"
    pub.write_bytes(public_key_pem(key_a.public_key()))
    assert main(["references", "verify", str(path), "--trusted-key", str(pub)]) == 1
    out = capsys.readouterr().out
    assert "✗ signature 1" in out
    assert "=> INVALID" in out


def test_run_refuses_references_trusted_only_by_a_planted_policy(
    tmp_path: Path,
    key_a: PrivateKey,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """keep run --references from the attacker's directory: their envelope lists the very keep
    built here (so their policy alone would let it run); the built-in policy refuses it."""
    from toolchain.image import tools
    from toolchain.image.keep_build import build_keep
    from toolchain.measure.reference import keep_statement

    build = build_keep(ROOT / "examples/hello/hello.wat", tmp_path / "build", vcpu_counts=(1,))
    plan = build.plan
    statement = keep_statement(
        release="9.9.9",
        artifacts=build.artifacts,
        provenance=build.provenance,
        launch_digests=build.launch_digests,
        guest_policy=plan.guest_policy,
        backends=["nil"],
        generations=["any"],
        toolchain=tools.toolchain_versions(),
        not_before=datetime.now(UTC) - timedelta(minutes=5),
        valid_for=timedelta(days=1),
        development=False,
    )
    their = sign_statement(statement, key_a)
    make_repository(tmp_path, key_a, {"9.9.9/their.dsse.json": their})
    (tmp_path / "their.dsse.json").write_bytes(their)
    monkeypatch.chdir(tmp_path)
    run = ["run", "--dev", "--backend", "nil", "--build-dir", "build", "--references"]
    status = main([*run, "their.dsse.json", str(ROOT / "examples/hello/hello.wat")])
    captured = capfd.readouterr()
    assert status == 1, captured.err
    assert "hello from a keep" not in captured.out
    assert "do not verify; the keep was not started" in captured.err
    assert "TUF target" in captured.err


# --- keep trust show ----------------------------------------------------------------------------


def test_trust_show_names_the_policy_a_verification_would_use(
    tmp_path: Path,
    envelope: bytes,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin = TrustPolicy.load_builtin()
    planted = plant_trust_policy(tmp_path, key_a, envelope)
    monkeypatch.chdir(tmp_path)  # a repository here is not the default
    assert main(["trust", "show"]) == 0
    out = capsys.readouterr().out
    # The root followed from the pinned one, each role and its keys.
    assert out.startswith("trust: TUF (built-in)\n")
    assert builtin.describe() in out
    monkeypatch.setenv("KEEPSTACK_TRUST", "reference-measurements/metadata/1.root.json")
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(planted.parent.parent))
    assert main(["trust", "show", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    origin = "reference-measurements/metadata/1.root.json (from $KEEPSTACK_TRUST)"
    assert document["source"] == f"TUF ({origin})"
    assert document["targets"]["0.1.0/their.dsse.json"] == {
        "role": "release",
        "keys": [key_id(key_a)],
    }


def test_trust_edits_of_the_removed_format_are_gone(
    tmp_path: Path, key_a: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keep trust add-key`` and ``retire`` edited trust.toml; keys are now added and revoked
    in the TUF repository (keep tuf add-release-key, revoke-key: tests/test_tuf.py)."""
    pub = tmp_path / "a.pub"
    pub.write_bytes(public_key_pem(key_a.public_key()))
    for action in (["add-key", str(pub)], ["retire", key_id(key_a)]):
        with pytest.raises(SystemExit) as caught:
            main(["trust", *action, "--trust", str(tmp_path / "trust.toml")])
        assert caught.value.code == 2
        assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "trust.toml").exists()


def test_an_installed_wheel_carries_the_built_in_policy(tmp_path: Path, key_a: PrivateKey) -> None:
    """The wheel holds the policy and its keys; unpacked as pip installs it and run from a
    directory holding someone else's TUF repository, it uses its own copy and names it."""
    import io
    import os
    import subprocess
    import sys
    import zipfile

    from toolchain.image.wheel import wheel_bytes

    _, data = wheel_bytes(ROOT)
    site = tmp_path / "site-packages"
    zipfile.ZipFile(io.BytesIO(data)).extractall(site)
    shipped = site / "toolchain/sign/release-trust/root.json"
    assert shipped.read_bytes() == TrustPolicy.builtin_file().read_bytes()
    here = tmp_path / "elsewhere"
    their = sign_statement(_statement(), key_a)
    plant_trust_policy(here, key_a, their)
    (here / "e.json").write_bytes(their)
    script = (
        "import sys, toolchain; from keep.cli import main; print(toolchain.__file__); "
        "sys.exit(main(['references', 'verify', 'e.json', '--at', '2026-11-27T12:00:00Z']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=here,
        # A wheel has no TUF metadata: it comes from a checkout (verified from the pinned root).
        env={
            **os.environ,
            "PYTHONPATH": str(site),
            "KEEPSTACK_TUF_REPOSITORY": str(ROOT / "reference-measurements"),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(str(site / "toolchain"))
    sha = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert f"(followed from the pinned built-in root, sha256 {sha})" in done.stdout
    assert "=> INVALID" in done.stdout
