"""keep verify-evidence: a real evidence file from `keep run --dev --evidence` on this machine
verifies as a whole, and every field tampered with (or left unsigned) is caught or ignored."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keep.cli import main
from runtime.firmware.sim import sim_identity_dir
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.sign import dev_key, generate_private_key, sign_statement
from toolchain.sign.keys import ECDSA_P384, public_path_for
from toolchain.snp.certs import amd_certificate
from toolchain.snp.tcb import Product
from toolchain.verify import Verifier
from toolchain.verify.evidence import verify_evidence

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`keep run --dev --evidence` for the hello example (kvm where it works, as users run it)."""
    out = tmp_path_factory.mktemp("evidence")
    evidence = out / "ev.json"
    backend = "kvm" if kvm_unavailable_reason() is None else "nil"
    argv = ["run", "--dev", "--backend", backend, "--build-dir", str(out / "build")]
    assert main([*argv, "--evidence", str(evidence), str(HELLO)]) == 0
    _, key_path = dev_key()
    return {
        "path": evidence,
        "document": json.loads(evidence.read_text()),
        "pub": public_path_for(key_path),
        "ark": sim_identity_dir() / "ark.pem",
        "backend": backend,
    }


def _check(
    made: dict[str, Any], tmp_path: Path, document: dict[str, Any] | None, *extra: str
) -> list[str]:
    path = made["path"]
    if document is not None:
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(document))
    return [
        "verify-evidence",
        str(path),
        "--trusted-key",
        str(made["pub"]),
        "--extra-root",
        str(made["ark"]),
        "--json",
        *extra,
    ]


def _failures(capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Names of the failed checks ("signature 1 (key ab12…)" counts as "signature 1")."""
    result = json.loads(capsys.readouterr().out)
    return {c["name"].split(" (")[0] for c in result["checks"] if c["ok"] is False}


def test_real_evidence_verifies_as_a_whole(
    made: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert made["document"]["simulated_root"] is True
    assert main(_check(made, tmp_path, None)) == 0
    result = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in result["checks"]}
    for name in ("report.signature", "report-data", "measurement", "references.configuration"):
        assert by_name[name]["ok"] is True, by_name[name]
    assert by_name["report-data"]["found"] == made["document"]["nonce"]
    assert "(development)" in by_name["ark.trusted"]["found"]
    assert by_name["evidence.nonce"]["ok"] is None  # freshness: said to be unproved
    assert f"backend {made['backend']}" in result["title"]
    assert "unsigned, not trusted" in result["title"]
    # with the nonce the verifier expects, freshness is checked too
    assert main(_check(made, tmp_path, None, "--nonce", made["document"]["nonce"])) == 0
    capsys.readouterr()
    assert main(_check(made, tmp_path, None, "--nonce", "00" * 64)) == 1
    assert _failures(capsys) == {"evidence.nonce"}


def test_the_simulated_root_is_trusted_only_when_given(
    made: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify-evidence", str(made["path"]), "--trusted-key", str(made["pub"])]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "✗ ark.trusted: expected one of the pinned roots" in captured.out
    assert f"--extra-root naming your simulated ARK (this user's: {made['ark']})" in captured.err
    # a verifier of AMD's pinned roots fails it, whatever the file claims about its root
    checks = verify_evidence(
        made["path"].read_bytes(), verifier=Verifier.amd(), trust=_dev_trust(made)
    )
    assert "ark.trusted" in {c.name for c in checks.failures}


def _dev_trust(made: dict[str, Any]) -> Any:
    from toolchain.sign import TrustPolicy
    from toolchain.sign.keys import load_public_key

    return TrustPolicy.from_keys([load_public_key(made["pub"])])


def _flip_hex(text: str, byte: int) -> str:
    raw = bytearray(bytes.fromhex(text))
    raw[byte] ^= 0x01
    return raw.hex()


def _other_reference(document: dict[str, Any]) -> str:
    """The same statement, signed by a key nobody trusts."""
    envelope = json.loads(base64.b64decode(document["references"]))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    signed = sign_statement(statement, generate_private_key(ECDSA_P384))
    return base64.b64encode(signed).decode()


def _edited_payload(document: dict[str, Any]) -> str:
    """The signed statement changed by one byte (a space), the signature kept."""
    envelope = json.loads(base64.b64decode(document["references"]))
    payload = base64.b64decode(envelope["payload"]).replace(b'"notAfter"', b'"notAfter" ', 1)
    envelope["payload"] = base64.b64encode(payload).decode()
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def _pem(product: Product, role: str) -> str:
    return amd_certificate(product, role).public_bytes(PEM).decode()


# field -> (how to tamper, checks that must fail). Offsets: MEASUREMENT 0x90, REPORT_DATA 0x50.
TAMPERED: dict[str, tuple[Callable[[dict[str, Any]], Any], set[str]]] = {
    "report.measurement": (
        lambda d: _flip_hex(d["report"], 0x90),
        {"report.signature", "measurement"},
    ),
    "report.report_data": (
        lambda d: _flip_hex(d["report"], 0x50),
        {"report.signature", "report-data"},
    ),
    "report.signature": (lambda d: _flip_hex(d["report"], 0x2A0), {"report.signature"}),
    "nonce": (lambda d: _flip_hex(d["nonce"], 0), {"report-data"}),
    "vcek": (
        lambda d: _pem(Product.GENOA, "ask"),  # not a VCEK at all
        {"certificate.kind", "report.signing-key", "report.signature", "report.chip-id"},
    ),
    "ask": (lambda d: _pem(Product.GENOA, "ask"), {"ask.signed-by-ark", "vcek.signed-by-ask"}),
    # AMD's real Genoa root is pinned, but it signed neither the simulated ASK nor anything here
    "ark": (lambda d: _pem(Product.GENOA, "ark"), {"ask.signed-by-ark"}),
    "references.signer": (_other_reference, {"threshold", "measurement"}),
    "references.payload": (_edited_payload, {"signature 1", "threshold", "measurement"}),
}


@pytest.mark.parametrize("field", list(TAMPERED))
def test_each_tampered_field_is_caught(
    made: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str
) -> None:
    tamper, must_fail = TAMPERED[field]
    document = dict(made["document"])
    document[field.split(".", maxsplit=1)[0]] = tamper(document)
    assert main(_check(made, tmp_path, document)) == 1
    failed = _failures(capsys)
    assert must_fail <= failed, failed


def test_unsigned_claims_never_decide(
    made: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = dict(made["document"])
    document.update(backend="snp", firmware="amd-psp", simulated_root=False, future_key=1)
    assert main(_check(made, tmp_path, document)) == 0
    assert "backend snp, firmware amd-psp" in json.loads(capsys.readouterr().out)["title"]
    # the runner's own checklist says VALID; a tampered report is still INVALID
    document["report"] = _flip_hex(document["report"], 0x90)
    assert document["checklist"]["ok"] is True
    assert main(_check(made, tmp_path, document)) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(_type="https://example.com/other"), "_type"),
        (lambda d: d.pop("report"), "'report' must be a string, found missing"),
        (lambda d: d.update(report=d["report"][:-2]), "1184 bytes"),
        (lambda d: d.update(nonce="zz"), "'nonce' is not hex"),
        (lambda d: d.update(nonce="00" * 32), "nonce is 32 bytes"),
        (lambda d: d.update(vcek="not a certificate"), "'vcek'"),
        (lambda d: d.update(references="%%%"), "not base64"),
        (lambda d: d.update(ask=42), "'ask' must be a string, found int"),
    ],
)
def test_unusable_evidence_is_exit_2(
    made: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], Any],
    message: str,
) -> None:
    document = dict(made["document"])
    edit(document)
    assert main(_check(made, tmp_path, document)) == 2
    assert message in capsys.readouterr().err


def test_not_json_and_duplicate_keys_are_exit_2(
    made: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[")
    argv = ["verify-evidence", str(path), "--trusted-key", str(made["pub"])]
    assert main(argv) == 2
    text = made["path"].read_text()
    # a second "nonce" key: parsers disagree on which one counts, so the file is refused
    path.write_text(text.replace('"nonce":', '"nonce": "00", "nonce":', 1))
    assert main(argv) == 2
    assert "duplicate key 'nonce'" in capsys.readouterr().err


def test_a_policy_in_the_current_directory_is_never_used(
    made: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Someone else's TUF repository (reference-measurements/) in the current directory,
    trusting the key that signed the evidence's references: without --trust it decides nothing."""
    from test_references import FOREIGN_REFUSED_LINE, builtin_line, plant_trust_policy

    key, _ = dev_key()
    envelope = base64.b64decode(made["document"]["references"])
    planted = plant_trust_policy(tmp_path, key, envelope)
    monkeypatch.chdir(tmp_path)
    argv = ["verify-evidence", str(made["path"]), "--extra-root", str(made["ark"])]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert builtin_line() in out
    assert FOREIGN_REFUSED_LINE in out
    assert "=> VALID" not in out
    # Named explicitly (root and metadata), the same trust is used, and named in the checklist.
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(planted.parent.parent))
    assert main([*argv, "--trust", str(planted)]) == 0
    assert f"(followed from the pinned {planted} root, sha256" in capsys.readouterr().out
