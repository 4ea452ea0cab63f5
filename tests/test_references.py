"""Verifying signed reference measurements: round trip, threshold, every rejection by name, CLI."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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


def test_trust_toml_policy_with_threshold_two(
    tmp_path: Path, key_a: PrivateKey, key_b: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keys").mkdir()
    for name, key in (("a", key_a), ("b", key_b)):
        (tmp_path / "keys" / f"{name}.pub.pem").write_bytes(public_key_pem(key.public_key()))
    (tmp_path / "trust.toml").write_text(
        f"""version = 1
threshold = 2
[[keys]]
file = "keys/a.pub.pem"
keyid = "{key_id(key_a)}"
[[keys]]
file = "keys/b.pub.pem"
keyid = "{key_id(key_b)}"
name = "release-b"
releases = ["0.1.*"]
not_before = 2026-01-01T00:00:00Z
not_after = 2027-01-01T00:00:00Z
"""
    )
    policy = TrustPolicy.load(tmp_path / "trust.toml")
    assert policy.threshold == 2
    both = add_signature(sign_statement(_statement(), key_a), key_b)
    checklist, references = verify_envelope(both, policy, at=AT)
    assert checklist.ok, checklist.render()
    assert references is not None
    assert set(references.signers) == {key_id(key_a), key_id(key_b)}
    # Key b is trusted only for 0.1.* and only during 2026: outside that it does not count.
    other_release = add_signature(sign_statement(_statement(release="0.2.0"), key_a), key_b)
    checklist, references = verify_envelope(other_release, policy, at=AT)
    assert references is None
    assert "not trusted for release 0.2.0" in checklist.render()
    checklist, references = verify_envelope(both, policy, at=datetime(2027, 2, 1, tzinfo=UTC))
    assert references is None
    assert "key trusted only until 2027-01-01T00:00:00Z" in checklist.render()
    # The CLI refuses to lower the policy's threshold.
    env = tmp_path / "e.json"
    env.write_bytes(both)
    assert main(["references", "verify", str(env), "--trust", str(tmp_path / "trust.toml"),
                 "--threshold", "1"]) == 2  # fmt: skip
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


def test_same_key_under_two_entries_of_trust_toml_is_refused(
    tmp_path: Path, key_a: PrivateKey
) -> None:
    pem = public_key_pem(key_a.public_key())
    (tmp_path / "one.pem").write_bytes(pem)
    (tmp_path / "two.pem").write_bytes(pem)
    (tmp_path / "trust.toml").write_text(
        f'threshold = 2\n[[keys]]\nfile = "one.pem"\nkeyid = "{key_id(key_a)}"\n'
        f'[[keys]]\nfile = "two.pem"\nkeyid = "{key_id(key_a)}"\n'
    )
    with pytest.raises(InputError, match="same key is listed more than once"):
        TrustPolicy.load(tmp_path / "trust.toml")
    (tmp_path / "trust.toml").write_text(f'[[keys]]\nfile = "one.pem"\nkeyid = "{"0" * 64}"\n')
    with pytest.raises(InputError, match=r"does not match one\.pem"):
        TrustPolicy.load(tmp_path / "trust.toml")


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


def test_built_in_policy_comes_from_the_package_and_trusts_only_release_keys() -> None:
    policy = TrustPolicy.load_builtin()
    if TrustPolicy.builtin_file("root.json").is_file():  # the pinned TUF root (tests/test_tuf.py)
        assert policy.tuf is not None
        assert "pinned built-in root" in policy.describe()
        assert not TrustPolicy.builtin_file().exists(), "trust.toml outlived the TUF root"
        return
    assert policy.source == "built-in"
    # The installed package's file (under the mutation runner, the package is a copy elsewhere).
    package = Path(sign_trust.__file__).resolve().parent
    assert policy.path == package / "release-trust/trust.toml"
    assert policy.sha256 == hashlib.sha256(policy.path.read_bytes()).hexdigest()
    assert policy.describe() == f"built-in, sha256 {policy.sha256}"
    assert policy.threshold == 1
    assert policy.keys
    for key in policy.keys:  # release keys, each scoped to release versions
        assert key.releases, f"{key.name} is trusted for every release"
    # The repository holds one copy: no second policy beside the releases.
    assert not (ROOT / "reference-measurements" / "trust.toml").exists()


def test_bad_trust_toml_is_unusable_input(tmp_path: Path) -> None:
    path = tmp_path / "trust.toml"
    for text, message in [
        ("threshold = [", "not valid TOML"),
        ("threshold = 0", "at least 1"),
        ("version = 2", "policy version"),
        ("thresold = 1", "unknown setting"),
        ('[[keys]]\nfile = "missing.pem"\nkeyid = "00"', "cannot read public key"),
        ("[[keys]]\nkeyid = 1", "needs file"),
    ]:
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            TrustPolicy.load(path)


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


def plant_trust_policy(directory: Path, key: PrivateKey) -> Path:
    """Someone else's ``reference-measurements/trust.toml`` and key in ``directory`` (the
    attacker's checkout, or a downloaded tarball), trusting ``key``; returns the policy file."""
    references = directory / "reference-measurements"
    (references / "keys").mkdir(parents=True)
    (references / "keys" / "theirs.pub.pem").write_bytes(public_key_pem(key.public_key()))
    policy = references / "trust.toml"
    policy.write_text(
        f'version = 1\nthreshold = 1\n[[keys]]\nfile = "keys/theirs.pub.pem"\n'
        f'keyid = "{key_id(key)}"\n'
    )
    return policy


def builtin_line() -> str:
    return f"✔ trust policy: {TrustPolicy.load_builtin().describe()}"


#: Whether the package pins the project's TUF root (then trust.toml is gone) or ships the bridge.
TUF_BUILTIN = TrustPolicy.builtin_file("root.json").is_file()
#: How the built-in trust refuses an envelope signed by someone else's key: TUF lists no such
#: envelope; the trust.toml bridge counts no trusted signature.
FOREIGN_REFUSED = "✗ TUF target" if TUF_BUILTIN else "✗ threshold"
FOREIGN_REFUSED_LINE = (
    "listed by no TUF targets role"
    if TUF_BUILTIN
    else "✗ threshold: expected 1 distinct trusted key(s), found 0"
)


def test_a_policy_in_the_current_directory_is_never_used(
    tmp_path: Path,
    envelope: bytes,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack: a directory holding someone else's trust.toml, key and envelope. Their
    envelope must not print VALID; the checklist names the built-in policy that decided."""
    planted = plant_trust_policy(tmp_path, key_a)
    monkeypatch.chdir(tmp_path)
    Path("their.dsse.json").write_bytes(envelope)
    assert main(["references", "verify", "their.dsse.json", "--at", "2026-11-27T12:00:00Z"]) == 1
    out = capsys.readouterr().out
    assert builtin_line() in out
    assert FOREIGN_REFUSED_LINE in out
    assert "=> INVALID" in out
    assert "=> VALID" not in out
    # Only when given does their policy count, and the checklist then names it and its digest.
    at = ["--at", "2026-11-27T12:00:00Z"]
    assert main(["references", "verify", "their.dsse.json", "--trust", str(planted), *at]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    assert f"✔ trust policy: {planted}, sha256 {digest}" in out
    assert "=> VALID" in out


def test_keepstack_trust_names_a_policy_and_the_checklist_says_so(
    tmp_path: Path,
    envelope: bytes,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted = plant_trust_policy(tmp_path / "mine", key_a)
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    monkeypatch.setenv("KEEPSTACK_TRUST", str(planted))
    verify = ["references", "verify", str(path), "--at", "2026-11-27T12:00:00Z", "--json"]
    assert main(verify) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert checks[0]["name"] == "trust policy"
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    assert checks[0]["found"] == f"{planted} (from $KEEPSTACK_TRUST), sha256 {digest}"
    # --trust wins over the variable; a variable naming a missing file is unusable input.
    monkeypatch.setenv("KEEPSTACK_TRUST", str(tmp_path / "missing.toml"))
    assert main(verify) == 2
    assert "(from $KEEPSTACK_TRUST)" in capsys.readouterr().err
    assert main([*verify, "--trust", str(planted)]) == 0
    capsys.readouterr()
    monkeypatch.delenv("KEEPSTACK_TRUST")
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

    plant_trust_policy(tmp_path, key_a)
    release = tmp_path / "reference-measurements" / __version__
    release.mkdir()
    statement = _statement(release=__version__)
    statement["predicate"]["validity"]["notAfter"] = "2099-01-01T00:00:00Z"  # type: ignore[index]
    (release / "hello.dsse.json").write_bytes(sign_statement(statement, key_a))

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
    plant_trust_policy(tmp_path, key_a)
    (tmp_path / "their.dsse.json").write_bytes(sign_statement(statement, key_a))
    monkeypatch.chdir(tmp_path)
    run = ["run", "--dev", "--backend", "nil", "--build-dir", "build", "--references"]
    status = main([*run, "their.dsse.json", str(ROOT / "examples/hello/hello.wat")])
    captured = capfd.readouterr()
    assert status == 1, captured.err
    assert "hello from a keep" not in captured.out
    assert "do not verify; the keep was not started" in captured.err
    assert ("TUF target" if TUF_BUILTIN else "threshold") in captured.err


# --- keep trust: show, add a key, retire a key ---------------------------------------------------


def test_trust_show_names_the_policy_a_verification_would_use(
    tmp_path: Path,
    key_a: PrivateKey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin = TrustPolicy.load_builtin()
    plant_trust_policy(tmp_path, key_a)
    monkeypatch.chdir(tmp_path)  # a trust.toml here is not the default
    assert main(["trust", "show"]) == 0
    out = capsys.readouterr().out
    if TUF_BUILTIN:  # the root followed from the pinned one, each role and its keys
        assert out.startswith("trust: TUF (built-in)\n")
        assert builtin.describe() in out
    else:
        assert out.startswith("trust policy: built-in\n")
        assert f"sha256     {builtin.sha256}" in out
        for key in builtin.keys:
            assert f"keyid      {key.key_id}" in out
    monkeypatch.setenv("KEEPSTACK_TRUST", "reference-measurements/trust.toml")
    assert main(["trust", "show", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["source"] == "reference-measurements/trust.toml (from $KEEPSTACK_TRUST)"
    assert [k["keyid"] for k in document["keys"]] == [key_id(key_a)]


def test_trust_add_key_and_retire_edit_only_the_given_file(
    tmp_path: Path,
    envelope: bytes,
    key_a: PrivateKey,
    key_b: PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy_file = tmp_path / "policy" / "trust.toml"
    pub_a, pub_b = tmp_path / "a.pem.pub", tmp_path / "b.pub.pem"
    pub_a.write_bytes(public_key_pem(key_a.public_key()))
    pub_b.write_bytes(public_key_pem(key_b.public_key()))
    trust = ["--trust", str(policy_file)]
    # Writes need --trust: never the built-in policy by default.
    with pytest.raises(SystemExit):
        main(["trust", "add-key", str(pub_a)])
    capsys.readouterr()
    shipped = TrustPolicy.builtin_file("root.json" if TUF_BUILTIN else "trust.toml")
    builtin = shipped.read_bytes()
    assert main(["trust", "add-key", str(pub_a), *trust, "--releases", "0.*"]) == 0
    assert f"created {policy_file}: trusts key a" in capsys.readouterr().out
    args = ["--releases", "0.1.*", "--releases", "1.*", "--not-after", "2027-06-01T00:00:00Z"]
    assert main(["trust", "add-key", str(pub_b), *trust, "--name", "second", *args]) == 0
    capsys.readouterr()
    assert shipped.read_bytes() == builtin
    policy = TrustPolicy.load(policy_file)
    a, b = policy.key(key_id(key_a)), policy.key(key_id(key_b))
    assert a is not None
    assert b is not None
    assert a.name == "a"
    assert a.releases == ("0.*",)
    assert b.releases == ("0.1.*", "1.*")
    assert b.not_after == datetime(2027, 6, 1, tzinfo=UTC)
    assert (tmp_path / "policy/keys/second.pub.pem").read_bytes() == pub_b.read_bytes()
    # The same key twice is refused, and the file is left as it was.
    before = policy_file.read_bytes()
    assert main(["trust", "add-key", str(pub_a), *trust, "--name", "again"]) == 2
    assert "already trusts key" in capsys.readouterr().err
    assert policy_file.read_bytes() == before
    # Verifying with it works; after retiring key a, its signature no longer counts.
    path = tmp_path / "e.json"
    path.write_bytes(envelope)
    verify = ["references", "verify", str(path), *trust, "--at", "2026-11-27T12:00:00Z"]
    assert main(verify) == 0
    capsys.readouterr()
    retire = ["trust", "retire", key_id(key_a)[:12], *trust]
    assert main([*retire, "--not-after", "2026-11-20T00:00:00Z"]) == 0
    assert "counts until 2026-11-20T00:00:00Z" in capsys.readouterr().out
    assert main(verify) == 1
    assert "key trusted only until 2026-11-20T00:00:00Z; not counted" in capsys.readouterr().out
    # Retiring again moves the one not_after line; the other key's entry is untouched.
    assert main([*retire, "--not-after", "2026-12-01T00:00:00Z"]) == 0
    capsys.readouterr()
    text = policy_file.read_text()
    assert text.count("not_after") == 2
    assert "not_after = 2026-12-01T00:00:00Z" in text
    assert "not_after = 2027-06-01T00:00:00Z" in text
    assert main(verify) == 0
    capsys.readouterr()
    # An unknown key ID, or too short a prefix, is unusable input.
    assert main(["trust", "retire", "00000000", *trust, "--not-after", "2027-01-01"]) == 2
    assert "lists no key 00000000" in capsys.readouterr().err
    assert main(["trust", "retire", key_id(key_a)[:4], *trust, "--not-after", "2027-01-01"]) == 2
    assert "at least 8 hex digits" in capsys.readouterr().err


def test_retire_keeps_comments_and_refuses_an_empty_window(
    tmp_path: Path, key_a: PrivateKey, key_b: PrivateKey
) -> None:
    from toolchain.sign.trust import add_key, retire_key

    policy_file = tmp_path / "trust.toml"
    add_key(
        policy_file,
        key_a.public_key(),
        name="a",
        releases=None,
        not_before=datetime(2026, 6, 1, tzinfo=UTC),
    )
    add_key(policy_file, key_b.public_key(), name="b", releases=["0.*"])
    policy_file.write_text("# our policy: keep this comment\n" + policy_file.read_text())
    before = policy_file.read_bytes()
    with pytest.raises(InputError, match="not_before must be earlier than not_after"):
        retire_key(policy_file, key_id(key_a), datetime(2026, 1, 1, tzinfo=UTC))
    assert policy_file.read_bytes() == before  # restored
    policy, key = retire_key(policy_file, key_id(key_b), datetime(2027, 1, 1, tzinfo=UTC))
    assert key.not_after == datetime(2027, 1, 1, tzinfo=UTC)
    assert policy.key(key_id(key_a)).not_after is None  # type: ignore[union-attr]
    assert policy_file.read_text().startswith("# our policy: keep this comment\n")
    with pytest.raises(InputError, match="holds another key"):
        add_key(policy_file, generate_private_key().public_key(), name="a", releases=None)
    with pytest.raises(InputError, match="key name"):
        add_key(policy_file, generate_private_key().public_key(), name='x"y', releases=None)


def test_an_installed_wheel_carries_the_built_in_policy(tmp_path: Path, key_a: PrivateKey) -> None:
    """The wheel holds the policy and its keys; unpacked as pip installs it and run from a
    directory holding someone else's trust.toml, it uses its own copy and names it."""
    import io
    import os
    import subprocess
    import sys
    import zipfile

    from toolchain.image.wheel import wheel_bytes

    _, data = wheel_bytes(ROOT)
    site = tmp_path / "site-packages"
    zipfile.ZipFile(io.BytesIO(data)).extractall(site)
    name = "root.json" if TUF_BUILTIN else "trust.toml"
    shipped = site / "toolchain/sign/release-trust" / name
    assert shipped.read_bytes() == TrustPolicy.builtin_file(name).read_bytes()
    here = tmp_path / "elsewhere"
    plant_trust_policy(here, key_a)
    (here / "e.json").write_bytes(sign_statement(_statement(), key_a))
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
    if TUF_BUILTIN:
        assert f"(followed from the pinned built-in root, sha256 {sha})" in done.stdout
    else:
        assert f"✔ trust policy: built-in, sha256 {sha}" in done.stdout
    assert "=> INVALID" in done.stdout
