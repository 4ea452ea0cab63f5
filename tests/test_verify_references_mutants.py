"""Tests that kill the mutants of ``toolchain.verify.references`` its suite let survive
(tests/MUTATION.md): which launch configurations of a verified reference a report may match
(guest policy, CPU generation, backend, vCPU count: each filter on its own), and where the CPU
generation comes from when the VCEK lacks productName. The report and VCEK are real
(tests/data/vectors/snp-reports/enarx-steward); the certificate without productName is minted."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testdata import DATA

from toolchain.sign import KeepPredicate, LaunchConfig
from toolchain.sign.references import VerifiedReferences
from toolchain.snp.certs import load_certificate
from toolchain.snp.report import AttestationReport
from toolchain.verify.references import allowed_measurements, report_generation

REPORT = AttestationReport.parse(
    (DATA / "vectors/snp-reports/enarx-steward/report.bin").read_bytes()
)
VCEK = load_certificate((DATA / "vectors/snp-reports/enarx-steward/vcek.der").read_bytes())
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _digest(tag: str) -> bytes:
    return hashlib.sha384(tag.encode()).digest()


def _references(configs: list[LaunchConfig]) -> VerifiedReferences:
    predicate = KeepPredicate(
        release="9.9.9",
        configs=configs,
        components=[],
        toolchain={},
        provenance_sha256=hashlib.sha256(b"provenance").hexdigest(),
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=1),
    )
    return VerifiedReferences(predicate, {}, ("key",), NOW)


def test_each_configuration_filter_narrows_on_its_own() -> None:
    policy = REPORT.policy.value
    references = _references(
        [
            LaunchConfig("milan", 1, policy, "snp", _digest("milan-1-snp")),
            LaunchConfig("milan", 2, policy, "snp", _digest("milan-2-snp")),
            LaunchConfig("milan", 1, policy, "kvm", _digest("milan-1-kvm")),
            LaunchConfig("genoa", 1, policy, "snp", _digest("genoa-1-snp")),
            LaunchConfig("any", 1, policy, "snp", _digest("any-1-snp")),
            LaunchConfig("milan", 1, policy ^ 1 << 19, "snp", _digest("other-policy")),
        ]
    )

    def allowed(**given: object) -> set[str]:
        names = {
            _digest(n): n
            for n in ("milan-1-snp", "milan-2-snp", "milan-1-kvm", "genoa-1-snp", "any-1-snp")
        }
        return {names[d] for d in allowed_measurements(references, REPORT, **given)}  # type: ignore[arg-type]

    everything = {"milan-1-snp", "milan-2-snp", "milan-1-kvm", "genoa-1-snp", "any-1-snp"}
    assert allowed() == everything  # never the other guest policy
    assert allowed(product="auto") == everything
    assert allowed(product="Milan") == everything - {"genoa-1-snp"}
    assert allowed(backend="kvm") == {"milan-1-kvm"}
    assert allowed(backend="snp") == everything - {"milan-1-kvm"}
    assert allowed(vcpus=2) == {"milan-2-snp"}
    assert allowed(vcpus=1) == everything - {"milan-2-snp"}
    assert allowed(product="milan", backend="snp", vcpus=1) == {"milan-1-snp", "any-1-snp"}


def _without_product_name(issuer_cn: str) -> x509.Certificate:
    """A VCEK-shaped certificate with no AMD extensions, issued under ``issuer_cn``."""
    key = ec.generate_private_key(ec.SECP384R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA384())
    )


def test_generation_from_the_issuer_when_productname_is_absent() -> None:
    assert REPORT.cpuid_product is None  # a v2 report: nothing to fall back on but the issuer
    assert report_generation(REPORT, VCEK) == "milan"  # the real VCEK's productName
    assert report_generation(REPORT, _without_product_name("SEV-Genoa")) == "genoa"
    assert report_generation(REPORT, _without_product_name("someone")) is None
    assert report_generation(REPORT, VCEK, "Turin") == "turin"
