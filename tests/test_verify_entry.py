"""One verification entry point: ``Verifier.verify`` for the runner, verify-report and evidence.

A report from the simulated firmware (the mini guest, launched here), a reference signed in the
test for its measurement, and the simulated root trusted only as an explicit extra root. The three
callers must reach ``Verifier.verify`` and list the same report checks; the references narrow the
allowed measurements by the report's configuration, the runner's backend and vCPU count, and the
policy's own allow-list; an envelope that does not verify allows nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_firmware_sim import _launched as launched_firmware
from test_verify_references import signed_reference

from keep.cli import main
from runtime.firmware.sim import SimFirmware, sim_identity
from runtime.run.attest import LiveAttestation
from runtime.vmm import miniguest
from toolchain.checks import Checklist
from toolchain.errors import EvidenceError
from toolchain.sign import (
    LaunchConfig,
    PrivateKey,
    TrustPolicy,
    generate_private_key,
    write_key_pair,
)
from toolchain.snp.report import AttestationReport
from toolchain.snp.tcb import Product
from toolchain.verify import References, TrustedRoots, VerificationPolicy, Verifier
from toolchain.verify.evidence import EVIDENCE_TYPE, verify_evidence

NONCE = bytes(range(64))


@dataclass(frozen=True)
class Launched:
    firmware: SimFirmware
    report: bytes
    vcek: x509.Certificate
    ask: x509.Certificate
    ark: x509.Certificate
    key: PrivateKey
    envelope: bytes

    @property
    def trust(self) -> TrustPolicy:
        return TrustPolicy.from_keys([self.key.public_key()])

    @property
    def verifier(self) -> Verifier:
        return Verifier(TrustedRoots.amd().with_extra(self.ark, label="simulated (test)"))

    def references(self) -> References:
        return References.verify(self.envelope, self.trust)


@pytest.fixture(scope="module")
def launched() -> Launched:
    firmware = launched_firmware()  # the mini guest, launched on the simulated firmware
    chain = sim_identity().chain()
    vcek, ask, ark = (x509.load_der_x509_certificate(c) for c in (chain.vcek, chain.ask, chain.ark))
    key = generate_private_key("ecdsa-p384")
    config = LaunchConfig("genoa", 1, miniguest.GUEST_POLICY, "kvm", firmware.measurement)
    envelope = signed_reference([config], key)
    report = firmware.guest_request_report(NONCE, 0)
    return Launched(firmware, report, vcek, ask, ark, key, envelope)


def _live(launched: Launched, **changes: object) -> LiveAttestation:
    references = launched.references()
    assert references.verified is not None, references.checks.render()
    fields: dict[str, object] = {
        "nonce": NONCE,
        "firmware": launched.firmware,
        "references": references.verified,
        "reference_checks": references.checks,
        "verifier": launched.verifier,
        "policy": VerificationPolicy(),
        "backend": "kvm",
        "vcpus": 1,
    }
    fields.update(changes)
    return LiveAttestation(**fields)  # type: ignore[arg-type]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _evidence(launched: Launched) -> bytes:
    document = {
        "_type": EVIDENCE_TYPE,
        "nonce": NONCE.hex(),
        "report": launched.report.hex(),
        "vcek": _pem(launched.vcek),
        "ask": _pem(launched.ask),
        "ark": _pem(launched.ark),
        "references": base64.b64encode(launched.envelope).decode(),
    }
    return json.dumps(document).encode()


def _report_names(checks: Checklist) -> list[str]:
    names = [c.name for c in checks.checks]
    return names[names.index("report.version") :]


def test_the_three_callers_share_one_entry_point(
    launched: Launched,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[Checklist] = []
    original = Verifier.verify

    def counted(self: Verifier, *args: object, **kwargs: object) -> Checklist:
        result = original(self, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(result)
        return result

    monkeypatch.setattr(Verifier, "verify", counted)
    # the runner's live attestation
    live = _live(launched)
    assert live(launched.report) is True
    assert live.checklist is not None
    # keep verify-evidence's library call
    evidence = verify_evidence(
        _evidence(launched), verifier=launched.verifier, trust=launched.trust
    )
    assert evidence.ok, evidence.render()
    # keep verify-report
    (tmp_path / "report.bin").write_bytes(launched.report)
    (tmp_path / "chain.pem").write_text("".join(map(_pem, (launched.vcek, launched.ask))))
    (tmp_path / "ark.pem").write_text(_pem(launched.ark))
    (tmp_path / "ref.dsse.json").write_bytes(launched.envelope)
    write_key_pair(tmp_path / "release", launched.key)
    argv = ["verify-report", str(tmp_path / "report.bin"), "--vcek", str(tmp_path / "chain.pem")]
    argv += ["--extra-root", str(tmp_path / "ark.pem"), "--report-data", NONCE.hex(), "--json"]
    argv += ["--references", str(tmp_path / "ref.dsse.json")]
    argv += ["--trusted-key", str(tmp_path / "release.pub")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(calls) == 3
    names = _report_names(calls[0])
    assert names == _report_names(calls[1]) == _report_names(calls[2])
    assert names == [c["name"] for c in printed["checks"]][-len(names) :]
    # references first, then the report, under the report's title
    assert printed["title"].startswith("SEV-SNP attestation report v3 (Genoa): ")
    assert printed["title"].endswith(f"with references {tmp_path / 'ref.dsse.json'}")
    assert printed["checks"][len(printed["checks"]) - len(names) - 1]["name"] == (
        "references.configuration"
    )


def test_the_runner_narrows_by_backend_and_vcpus(launched: Launched) -> None:
    for changes in ({"backend": "nil"}, {"vcpus": 2}):
        live = _live(launched, **changes)
        with pytest.raises(EvidenceError) as caught:
            live(launched.report)
        assert caught.value.field == "references.configuration", changes
        assert not live.accepted
        line = next(c for c in live.checklist.checks if c.name == "references.configuration")  # type: ignore[union-attr]
        assert f", {live.vcpus} vCPU(s), backend {live.backend} on genoa" in line.expected


def test_the_runner_keeps_the_policy_allow_list(launched: Launched) -> None:
    """A --policy allow-list of measurements narrows the references, as in verify-report."""
    elsewhere = VerificationPolicy(allowed_measurements=frozenset({bytes(48)}))
    live = _live(launched, policy=elsewhere)
    with pytest.raises(EvidenceError) as caught:
        live(launched.report)
    assert caught.value.field == "references.configuration"
    assert "0 matching launch digest(s)" in str(caught.value.found)
    listed = VerificationPolicy(allowed_measurements=frozenset({launched.firmware.measurement}))
    assert _live(launched, policy=listed)(launched.report) is True


def test_an_envelope_that_does_not_verify_allows_nothing(launched: Launched) -> None:
    stranger = TrustPolicy.from_keys([generate_private_key("ecdsa-p384").public_key()])
    references = References.verify(launched.envelope, stranger, title="refs")
    assert references.verified is None
    report = AttestationReport.parse(launched.report)
    policy = VerificationPolicy(report_data=NONCE)
    checks = launched.verifier.verify(
        report, launched.vcek, policy=policy, references=references, ask=launched.ask
    )
    assert not checks.ok
    failed = [c.name for c in checks.failures]
    assert "measurement" in failed
    assert "references.configuration" not in [c.name for c in checks.checks]
    # the envelope's own failure comes first; everything else about the report passes
    assert checks.checks[0].name == references.checks.checks[0].name
    assert set(failed) - {"measurement"} <= {c.name for c in references.checks.failures}
    accepted = launched.verifier.verify(
        report, launched.vcek, policy=policy, references=launched.references(), ask=launched.ask
    )
    assert accepted.ok, accepted.render()
    # the envelope's verdict is not changed by a verification that uses it (the runner reuses it)
    before = list(references.checks.checks)
    launched.verifier.verify(report, launched.vcek, policy=policy, references=references)
    assert references.checks.checks == before


def test_a_given_product_chooses_the_references_generation(launched: Launched) -> None:
    report = AttestationReport.parse(launched.report)
    policy = VerificationPolicy(report_data=NONCE)
    for product in (Product.MILAN, "milan"):
        checks = launched.verifier.verify(
            report,
            launched.vcek,
            policy=policy,
            references=launched.references(),
            ask=launched.ask,
            product=product,
        )
        line = next(c for c in checks.checks if c.name == "references.configuration")
        assert line.ok is False
        assert line.expected.endswith(" on milan"), line.expected
