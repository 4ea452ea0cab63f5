"""Report verification: every real sample gets the verdict its README states, bit flips, roots."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from keep.cli import main
from toolchain.checks import Checklist
from toolchain.errors import InputError, KeepError
from toolchain.snp import certs
from toolchain.snp.policy import GuestPolicy
from toolchain.snp.report import REPORT_SIZE, SIGNED_SIZE, AttestationReport, load_report
from toolchain.snp.tcb import Product, TcbVersion
from toolchain.verify import TrustedRoots, VerificationPolicy, Verifier

SNP = Path("vectors") / "snp-reports"
GENOA_CRL = "enarx-steward/genoa_vcek_crl_2022-10-31.der"
MILAN_CRL = "enarx-steward/milan_vcek_crl_2022-05-09.der"
REVOKED_GENOA_ASK = "enarx-steward/genoa_ask_REVOKED_serial_0x20001.pem"


@dataclass(frozen=True)
class Sample:
    """One README verdict: a report, its certificate, the options, and the expected outcome."""

    id: str
    report: str
    vcek: str
    valid: bool
    failing: frozenset[str] = frozenset()  # names that must fail (exactly these when given)
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    ask: str | None = None
    crl: str | None = None
    at: datetime | None = None


SAMPLES = [
    Sample("virtee-milan-valid", "virtee-sev/report_milan.hex", "virtee-sev/vcek_milan.der", True),
    Sample("trustee-milan-valid", "trustee/test-report.bin", "trustee/test-vcek.der", True),
    Sample(
        "trustee-vcek-tampered-legacy-hwid",
        "trustee/test-report.bin",
        "trustee/test-vcek-invalid-legacy.der",
        False,
        frozenset(
            {"vcek.signed-by-ask", "report.signature", "report.reported-tcb", "report.chip-id"}
        ),
    ),
    Sample(
        "trustee-vcek-tampered-der-hwid",
        "trustee/test-report.bin",
        "trustee/test-vcek-invalid-new.der",
        False,
        frozenset(
            {"vcek.signed-by-ask", "report.signature", "report.reported-tcb", "report.chip-id"}
        ),
    ),
    # The VLEK report was made at VMPL 1 (README); the policy says so, so only time decides.
    Sample(
        "trustee-vlek-expired-now",
        "trustee/test-vlek-report.bin",
        "trustee/test-vlek.der",
        False,
        frozenset({"vlek.validity"}),
        policy=VerificationPolicy(vmpl=1),
    ),
    Sample(
        "trustee-vlek-valid-at-2025-06-01",
        "trustee/test-vlek-report.bin",
        "trustee/test-vlek.der",
        True,
        policy=VerificationPolicy(vmpl=1),
        at=datetime(2025, 6, 1, tzinfo=UTC),
    ),
    Sample(
        "trustee-vlek-expired-after-2025-12-10",
        "trustee/test-vlek-report.bin",
        "trustee/test-vlek.der",
        False,
        frozenset({"vlek.validity"}),
        policy=VerificationPolicy(vmpl=1),
        at=datetime(2025, 12, 11, tzinfo=UTC),
    ),
    Sample(
        "trustee-vlek-default-vmpl",
        "trustee/test-vlek-report.bin",
        "trustee/test-vlek.der",
        False,
        frozenset({"report.vmpl"}),
        at=datetime(2025, 6, 1, tzinfo=UTC),
    ),
    Sample(
        "microsoft-genoa-valid",
        "microsoft-tee-av/genoa_attestation_report.bin",
        "microsoft-tee-av/genoa_vcek.pem",
        True,
    ),
    Sample(
        "microsoft-turin-v5-valid",
        "microsoft-tee-av/turin_attestation_report.bin",
        "microsoft-tee-av/turin_vcek.pem",
        True,
    ),
    Sample(
        "microsoft-genoa-with-ask-file",
        "microsoft-tee-av/genoa_attestation_report.bin",
        "microsoft-tee-av/genoa_vcek.pem",
        True,
        policy=VerificationPolicy(allow_stale_crl=True),
        ask="microsoft-tee-av/genoa_ask.pem",
        crl=GENOA_CRL,
    ),
    Sample("enarx-milan-valid", "enarx-steward/report.bin", "enarx-steward/vcek.der", True),
    Sample(
        "enarx-milan-valid-with-stale-crl-accepted",
        "enarx-steward/report.bin",
        "enarx-steward/vcek.der",
        True,
        policy=VerificationPolicy(allow_stale_crl=True),
        crl=MILAN_CRL,
    ),
    # By default a CRL past its nextUpdate fails: it says nothing of later revocations.
    Sample(
        "enarx-milan-stale-crl-rejected",
        "enarx-steward/report.bin",
        "enarx-steward/vcek.der",
        False,
        frozenset({"crl.freshness", "ask.revocation"}),
        crl=MILAN_CRL,
    ),
    Sample(
        "enarx-milan-valid-with-crl-current-at-the-time",
        "enarx-steward/report.bin",
        "enarx-steward/vcek.der",
        True,
        crl=MILAN_CRL,
        at=datetime(2022, 12, 1, tzinfo=UTC),
    ),
    Sample(
        "genoa-revoked-ask",
        "microsoft-tee-av/genoa_attestation_report.bin",
        "microsoft-tee-av/genoa_vcek.pem",
        False,
        frozenset({"ask.revocation", "vcek.signed-by-ask"}),
        policy=VerificationPolicy(allow_stale_crl=True),
        ask=REVOKED_GENOA_ASK,
        crl=GENOA_CRL,
    ),
    # A revocation is final: a stale CRL that lists the ASK still revokes it.
    Sample(
        "genoa-revoked-ask-stale-crl",
        "microsoft-tee-av/genoa_attestation_report.bin",
        "microsoft-tee-av/genoa_vcek.pem",
        False,
        frozenset({"ask.revocation", "vcek.signed-by-ask", "crl.freshness"}),
        ask=REVOKED_GENOA_ASK,
        crl=GENOA_CRL,
    ),
    Sample(
        "go-sev-guest-debug-rejected",
        "go-sev-guest/attestation.bin",
        "go-sev-guest/vcek.testcer",
        False,
        frozenset({"policy.debug"}),
    ),
    Sample(
        "go-sev-guest-debug-allowed",
        "go-sev-guest/attestation.bin",
        "go-sev-guest/vcek.testcer",
        True,
        policy=VerificationPolicy(allow_debug=True),
    ),
    Sample(
        "wrong-product-crl",
        "enarx-steward/report.bin",
        "enarx-steward/vcek.der",
        False,
        frozenset({"crl.signature", "ask.revocation"}),
        policy=VerificationPolicy(allow_stale_crl=True),
        crl=GENOA_CRL,
    ),
]


def _sample(name: str) -> Sample:
    return next(s for s in SAMPLES if s.id == name)


@pytest.fixture(scope="module")
def vectors(data_dir: Path) -> Path:
    return data_dir / SNP


def _report(vectors: Path, name: str) -> AttestationReport:
    return load_report((vectors / name).read_bytes())[0]


def _cert(vectors: Path, name: str) -> x509.Certificate:
    return certs.load_certificate((vectors / name).read_bytes())


def _run(vectors: Path, sample: Sample) -> Checklist:
    return Verifier.amd().verify_report(
        _report(vectors, sample.report),
        _cert(vectors, sample.vcek),
        policy=sample.policy,
        ask=_cert(vectors, sample.ask) if sample.ask else None,
        crl=(vectors / sample.crl).read_bytes() if sample.crl else None,
        at=sample.at,
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_sample_verdict(vectors: Path, sample: Sample) -> None:
    checklist = _run(vectors, sample)
    failed = {c.name for c in checklist.failures}
    assert checklist.ok is sample.valid, checklist.render()
    assert failed == sample.failing, checklist.render()
    names = [c.name for c in checklist.checks]
    assert len(names) == len(set(names)), "every check is named once"


def test_turin_checks_fmc_and_8_byte_chip_id(vectors: Path) -> None:
    sample = next(s for s in SAMPLES if s.id == "microsoft-turin-v5-valid")
    checks = {c.name: c for c in _run(vectors, sample).checks}
    assert "fmc=1" in checks["report.reported-tcb"].found
    assert checks["report.chip-id"].found == "59790fb1c39f35c1"
    assert "Turin" in checks["product"].found
    assert "report CPUID: Turin" in checks["product"].found


def test_revoked_ask_is_correctly_signed_but_revoked(vectors: Path) -> None:
    """A checker of signatures and dates alone would accept this ASK; the CRL rejects it."""
    revoked = _cert(vectors, REVOKED_GENOA_ASK)
    ark = certs.amd_certificate(Product.GENOA, "ark")
    assert certs.signed_by(revoked, ark)[0]
    crl = certs.read_crl((vectors / GENOA_CRL).read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(0x20001) is not None
    checks = {c.name: c for c in _run(vectors, _sample("genoa-revoked-ask")).checks}
    assert checks["ask.signed-by-ark"].ok is True
    assert checks["ask.validity"].ok is True
    assert checks["ask.revocation"].ok is False
    assert "revoked 2022" in checks["ask.revocation"].found


def test_stale_crl_fails_revocation_by_default_and_is_said_when_accepted(vectors: Path) -> None:
    """A CRL past its nextUpdate says nothing of later revocations: it fails unless accepted."""
    sample = _sample("enarx-milan-stale-crl-rejected")
    checklist = _run(vectors, sample)
    checks = {c.name: c for c in checklist.checks}
    assert not checklist.ok
    assert checks["crl.freshness"].ok is False
    assert checks["crl.freshness"].found == "stale CRL (2022-05-09 .. 2023-05-09)"
    assert checks["ask.revocation"].ok is False
    assert "revocation not checked" in checks["ask.revocation"].found
    assert "--allow-stale-crl" in checks["ask.revocation"].detail
    accepted = _run(vectors, _sample("enarx-milan-valid-with-stale-crl-accepted"))
    assert accepted.ok
    assert accepted.caveats == [
        "revocation checked only as of a stale CRL (2022-05-09 .. 2023-05-09): accepted by policy"
    ]
    assert accepted.render().endswith(f"=> VALID ({accepted.caveats[0]})")
    current = _run(vectors, _sample("enarx-milan-valid-with-crl-current-at-the-time"))
    assert current.ok
    assert current.caveats == []
    assert current.render().endswith("=> VALID")


def test_no_crl_is_a_skip_with_reason_or_a_failure_when_required(vectors: Path) -> None:
    sample = SAMPLES[0]
    checklist = _run(vectors, sample)
    checks = {c.name: c for c in checklist.checks}
    assert checks["ask.revocation"].ok is None
    assert "no CRL" in checks["ask.revocation"].detail
    # the verdict itself says what it did not cover
    assert checklist.render().endswith("=> VALID (revocation not checked: no CRL given)")
    required = dataclasses.replace(sample, policy=VerificationPolicy(require_crl=True))
    assert {c.name for c in _run(vectors, required).failures} == {"ask.revocation"}


def test_stale_crl_policy_key_and_its_predecessor() -> None:
    assert VerificationPolicy.from_toml("allow_stale_crl = true").allow_stale_crl
    assert not VerificationPolicy().allow_stale_crl
    # require_fresh_crl = true asked for today's default; false would silently weaken it
    assert VerificationPolicy.from_toml("require_fresh_crl = true") == VerificationPolicy()
    with pytest.raises(InputError) as info:
        VerificationPolicy.from_toml("require_fresh_crl = false")
    assert "allow_stale_crl = true" in (info.value.hint or "")


def test_every_skipped_check_says_why(vectors: Path) -> None:
    for sample in SAMPLES:
        for check in _run(vectors, sample).checks:
            if check.ok is None:
                assert check.detail, f"{sample.id}: {check.name} skipped without a reason"


# ---- a flipped bit anywhere in the signed part breaks the report -------------------------------


def test_every_bit_flip_in_the_signed_region_fails(vectors: Path) -> None:
    data = (vectors / "microsoft-tee-av/genoa_attestation_report.bin").read_bytes()
    vcek = _cert(vectors, "microsoft-tee-av/genoa_vcek.pem")
    policy = VerificationPolicy()
    assert Verifier.amd().verify_report(AttestationReport.parse(data), vcek, policy=policy).ok
    survivors = []
    for offset in range(SIGNED_SIZE):
        flipped = bytearray(data)
        flipped[offset] ^= 1 << (offset % 8)
        checklist = Verifier.amd().verify_report(
            AttestationReport.parse(bytes(flipped)), vcek, policy=policy
        )
        failed = {c.name for c in checklist.failures}
        if checklist.ok or "report.signature" not in failed:
            survivors.append(offset)
    assert survivors == []


def test_unsigned_tail_is_reported_not_trusted(vectors: Path) -> None:
    data = bytearray((vectors / "microsoft-tee-av/genoa_attestation_report.bin").read_bytes())
    data[REPORT_SIZE - 1] ^= 0x80  # reserved, outside the signature
    vcek = _cert(vectors, "microsoft-tee-av/genoa_vcek.pem")
    report = AttestationReport.parse(bytes(data))
    lenient = Verifier.amd().verify_report(report, vcek, policy=VerificationPolicy())
    assert lenient.ok
    reserved = next(c for c in lenient.checks if c.name == "report.reserved")
    assert reserved.ok is None
    assert "reserved_330" in reserved.detail
    strict = Verifier.amd().verify_report(report, vcek, policy=VerificationPolicy(strict=True))
    assert {c.name for c in strict.failures} == {"report.reserved"}


def test_signature_r_s_out_of_range_fails(vectors: Path) -> None:
    report = _report(vectors, "trustee/test-report.bin")
    vcek = _cert(vectors, "trustee/test-vcek.der")
    for r, s in ((0, report.signature_s), (report.signature_r + (1 << 400), report.signature_s)):
        checklist = Verifier.amd().verify_report(
            report.with_signature(r, s), vcek, policy=VerificationPolicy()
        )
        assert "report.signature" in {c.name for c in checklist.failures}


# ---- policy checks ----------------------------------------------------------------------------


def test_policy_checks_against_a_real_genoa_report(vectors: Path) -> None:
    report = _report(vectors, "microsoft-tee-av/genoa_attestation_report.bin")
    vcek = _cert(vectors, "microsoft-tee-av/genoa_vcek.pem")

    def failures(**changes: object) -> set[str]:
        policy = VerificationPolicy().replace(**changes)
        return {c.name for c in Verifier.amd().verify_report(report, vcek, policy=policy).failures}

    assert failures(allowed_measurements=frozenset({report.measurement})) == set()
    assert failures(allowed_measurements=frozenset({bytes(48)})) == {"measurement"}
    assert failures(host_data=report.host_data) == set()
    assert failures(host_data=bytes(32)) == {"host-data"}
    assert failures(report_data=b"nonce") == {"report-data"}
    assert failures(report_data=report.report_data) == set()
    assert failures(min_tcb={"snp": 23, "microcode": 84}) == set()
    assert failures(min_tcb={"snp": 24}) == {"tcb.minimum"}
    assert failures(min_guest_svn=report.guest_svn + 1) == {"guest-svn.minimum"}
    assert failures(min_abi=(1, 55)) == set()
    assert failures(min_abi=(1, 56)) == {"firmware.min-abi"}
    assert failures(required_platform_flags=frozenset({"tsme_enabled"})) == set()
    assert failures(required_platform_flags=frozenset({"ciphertext_hiding_enabled"})) == {
        "platform.ciphertext_hiding_enabled"
    }
    assert failures(required_policy_flags=frozenset({"single_socket"})) == {"policy.single_socket"}
    assert failures(allow_smt=False) == {"platform.smt"}
    assert failures(allowed_versions=frozenset({5})) == {"report.version"}
    assert failures(vmpl=2) == {"report.vmpl"}
    assert failures(vmpl=None) == set()
    assert failures(family_id=report.family_id, image_id=report.image_id) == set()
    assert failures(image_id=b"\x01") == {"image-id"}
    assert failures(allowed_id_key_digests=frozenset({report.id_key_digest})) == set()
    assert failures(allowed_id_key_digests=frozenset({bytes(48)})) == {"id-key-digest"}
    # the Azure guest has no author key
    assert failures(allowed_author_key_digests=frozenset({bytes(48)})) == {"author-key-digest"}


def test_lazy_texts_say_what_the_checks_saw(vectors: Path) -> None:
    """Check texts are formatted when printed (``toolchain.checks``): a policy failing many checks
    at once, every text pinned, so no text can name a value bound after its check was added."""
    report = _report(vectors, "microsoft-tee-av/genoa_attestation_report.bin")
    vcek = _cert(vectors, "microsoft-tee-av/genoa_vcek.pem")
    policy = VerificationPolicy(
        min_abi=(9, 9),
        min_tcb={"snp": 250, "tee": 3},
        allowed_versions=frozenset({4, 2}),
        report_data=b"nonce",
        allowed_measurements=frozenset({bytes(48), b"\x01" * 48}),
        strict=True,
    )
    at = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    checks = Verifier.amd().verify_report(report, vcek, policy=policy, at=at)
    lines = {c.name: c.line() for c in checks.checks}
    assert lines["firmware.min-abi"] == ("✗ firmware.min-abi: expected >= 9.9, found 1.55 build 40")
    assert lines["tcb.minimum"] == (
        "✗ tcb.minimum: expected snp>=250 tee>=3, found bootloader=10 tee=0 snp=23 microcode=84 "
        "(below: snp, tee)"
    ), lines["tcb.minimum"]
    assert lines["report.version"] == "✗ report.version: expected one of [2, 4], found 3"
    assert lines["report-data"].startswith("✗ report-data: expected 6e6f6e636500"), lines
    assert lines["measurement"].startswith(
        "✗ measurement: expected one of 2 (000000000000000000000000…, 010101010101010101010101…)"
    ), lines["measurement"]
    assert checks.to_json().count("valid at 2025-06-01 12:00:00 UTC") == 3


def test_migration_agent_forbidden_by_default(vectors: Path) -> None:
    report = _report(vectors, "trustee/test-report.bin")
    vcek = _cert(vectors, "trustee/test-vcek.der")
    # change the policy: the signature breaks too, but the policy check must say it on its own
    with_ma = dataclasses.replace(report, policy=GuestPolicy(report.policy.value | 1 << 18))
    failed = {
        c.name
        for c in Verifier.amd().verify_report(with_ma, vcek, policy=VerificationPolicy()).failures
    }
    assert failed == {"report.signature", "policy.migrate-ma"}
    allowed = VerificationPolicy(allow_migration_agent=True)
    assert {
        c.name for c in Verifier.amd().verify_report(with_ma, vcek, policy=allowed).failures
    } == {"report.signature"}


def test_policy_from_toml() -> None:
    policy = VerificationPolicy.from_toml(
        """
        allow_debug = true
        vmpl = 1
        min_abi = "1.55"
        min_tcb = { bootloader = 3, snp = 8, microcode = 115, fmc = 1 }
        allowed_measurements = ["%s"]
        report_data = "0102"
        required_platform_flags = ["tsme_enabled"]
        allowed_versions = [3, 5]
        strict = true
        """
        % ("ab" * 48)
    )
    assert policy.allow_debug
    assert policy.vmpl == 1
    assert policy.min_abi == (1, 55)
    assert policy.min_tcb == {"bootloader": 3, "snp": 8, "microcode": 115, "fmc": 1}
    assert policy.allowed_measurements == frozenset({b"\xab" * 48})
    assert policy.report_data == b"\x01\x02"
    assert policy.allowed_versions == frozenset({3, 5})
    assert policy.strict
    assert not VerificationPolicy().allow_debug
    assert VerificationPolicy().vmpl == 0
    for bad in (
        "no_such_key = 1",
        "vmpl = 7",
        "allow_debug = 'yes'",
        "allowed_measurements = ['abcd']",
        "min_tcb = { bogus = 1 }",
        "required_platform_flags = ['warp_drive']",
        "report_data = 'zz'",
        "min_abi = 'one'",
        "not toml [",
    ):
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(bad)


# ---- roots: pinned only, extras by explicit request -------------------------------------------


@dataclass(frozen=True)
class SimulatedChain:
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    report: AttestationReport


def _name(cn: str) -> x509.Name:
    """AMD's distinguished name with the given CN (so the impersonation is exact)."""
    amd = certs.amd_certificate(Product.MILAN, "ark").subject
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn) if a.oid == NameOID.COMMON_NAME else a
            for a in amd
        ]
    )


def _issue(
    subject: str,
    issuer: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    signer: rsa.RSAPrivateKey,
    extensions: list[x509.Extension[x509.UnrecognizedExtension]] = (),  # type: ignore[assignment]
    salt: int = 48,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=salt)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=pss)


@pytest.fixture(scope="module")
def simulated() -> SimulatedChain:
    """A simulated chain that impersonates AMD's names (ARK-Milan, SEV-Milan)."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    tcb = TcbVersion(bootloader=4, tee=0, snp=22, microcode=213)
    chip_id = bytes(range(64))
    ark = _issue("ARK-Milan", "ARK-Milan", ark_key, ark_key)
    ask = _issue("SEV-Milan", "ARK-Milan", ask_key, ark_key)
    vcek = _issue(
        "SEV-VCEK", "SEV-Milan", vcek_key, ask_key, certs.vcek_extensions(tcb, chip_id, "Milan")
    )
    unsigned = AttestationReport(
        version=3,
        policy=GuestPolicy.build(abi_major=1, abi_minor=51),
        reported_tcb=tcb,
        current_tcb=tcb,
        committed_tcb=tcb,
        launch_tcb=tcb,
        chip_id=chip_id,
        cpuid_fam_id=0x19,
        cpuid_mod_id=0x01,
        measurement=b"\x5a" * 48,
    )
    der = vcek_key.sign(unsigned.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    report = unsigned.with_signature(*decode_dss_signature(der))
    return SimulatedChain(ark, ask, vcek, vcek_key, report)


def test_simulated_root_passed_as_ark_is_not_trusted(simulated: SimulatedChain) -> None:
    checklist = Verifier.amd().verify_report(
        simulated.report,
        simulated.vcek,
        policy=VerificationPolicy(),
        ask=simulated.ask,
        ark=simulated.ark,
    )
    assert not checklist.ok
    trusted = next(c for c in checklist.checks if c.name == "ark.trusted")
    assert trusted.ok is False
    assert "not pinned" in trusted.found


def test_simulated_ask_under_amds_name_does_not_chain(simulated: SimulatedChain) -> None:
    checklist = Verifier.amd().verify_report(
        simulated.report, simulated.vcek, policy=VerificationPolicy(), ask=simulated.ask
    )
    assert {c.name for c in checklist.failures} == {"ask.signed-by-ark"}
    # and with AMD's packaged ASK the simulated VCEK does not chain either
    checklist = Verifier.amd().verify_report(
        simulated.report, simulated.vcek, policy=VerificationPolicy()
    )
    assert {c.name for c in checklist.failures} == {"vcek.signed-by-ask"}


def test_simulated_root_trusted_only_on_request(simulated: SimulatedChain) -> None:
    roots = TrustedRoots.amd().with_extra(simulated.ark, label="simulated (development)")
    checklist = Verifier(roots).verify_report(
        simulated.report,
        simulated.vcek,
        policy=VerificationPolicy(allowed_measurements=frozenset({b"\x5a" * 48})),
        ask=simulated.ask,
        ark=simulated.ark,
    )
    assert checklist.ok, checklist.render()
    trusted = next(c for c in checklist.checks if c.name == "ark.trusted")
    assert "simulated (development)" in trusted.found
    # AMD's roots are still AMD's in that set
    real = Verifier(roots).verify_report(
        simulated.report,
        simulated.vcek,
        policy=VerificationPolicy(),
        ask=simulated.ask,
    )
    assert real.ok
    assert "simulated" in next(c for c in real.checks if c.name == "ark.trusted").found


def test_amd_links_need_salt_exactly_48() -> None:
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark = _issue("ARK-Milan", "ARK-Milan", ark_key, ark_key)
    assert certs.signed_by(_issue("SEV-Milan", "ARK-Milan", ask_key, ark_key), ark)[0]
    for salt in (32, 64):
        ask = _issue("SEV-Milan", "ARK-Milan", ask_key, ark_key, salt=salt)
        ok, why = certs.signed_by(ask, ark)
        assert not ok
        assert "salt 48" in why


def test_extra_root_must_be_self_signed(simulated: SimulatedChain) -> None:
    with pytest.raises(InputError):
        TrustedRoots.amd().with_extra(simulated.ask, label="not a root")


def test_product_mismatch_is_a_failure(vectors: Path) -> None:
    sample = SAMPLES[0]
    report, vcek = _report(vectors, sample.report), _cert(vectors, sample.vcek)
    checklist = Verifier.amd().verify_report(
        report, vcek, policy=VerificationPolicy(), product="genoa"
    )
    assert "product" in {c.name for c in checklist.failures}
    assert (
        Verifier.amd()
        .verify_report(report, vcek, policy=VerificationPolicy(), product=Product.MILAN)
        .ok
    )
    with pytest.raises(InputError):
        Verifier.amd().verify_report(report, vcek, policy=VerificationPolicy(), product="rome")


# ---- the command ------------------------------------------------------------------------------


def test_cli_valid_report(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "verify-report",
            str(vectors / "virtee-sev/report_milan.hex"),
            "--vcek",
            str(vectors / "virtee-sev/vcek_milan.der"),
            "--ask-chain",
            str(vectors / "virtee-sev/cert_chain_milan"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "✔ report.signature" in out
    assert "- ask.revocation (no CRL given" in out
    assert "=> VALID" in out


def test_cli_debug_policy_exit_1_then_allow_debug(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "verify-report",
        str(vectors / "go-sev-guest/attestation.bin"),
        "--vcek",
        str(vectors / "go-sev-guest/vcek.testcer"),
        "--report-data",
        "0102030405",
    ]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "✗ policy.debug: expected debugging forbidden, found debugging allowed" in out
    assert main([*args, "--allow-debug", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    by_name = {c["name"]: c for c in doc["checks"]}
    assert by_name["report-data"]["ok"] is True
    assert by_name["measurement"]["ok"] is None
    assert by_name["measurement"]["detail"]


def _vlek_args(vectors: Path) -> list[str]:
    """verify-report of trustee's VLEK-signed report (VMPL 1), its VLEK and AMD's ASVK chain."""
    return [
        "verify-report",
        str(vectors / "trustee/test-vlek-report.bin"),
        "--vcek",
        str(vectors / "trustee/test-vlek.der"),
        "--ask-chain",
        str(vectors / "go-sev-guest/milanvlek.testcer"),
        "--vmpl",
        "1",
    ]


def test_cli_vlek_time_and_vmpl(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _vlek_args(vectors)
    assert main(args) == 1
    assert "✗ vlek.validity" in capsys.readouterr().out
    assert main([*args, "--at", "2025-06-01T00:00:00Z"]) == 0
    assert main([*args, "--at", "2025-06-01"]) == 0
    capsys.readouterr()
    assert main([*args, "--at", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_cli_revoked_genoa_ask(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "verify-report",
            str(vectors / "microsoft-tee-av/genoa_attestation_report.bin"),
            "--vcek",
            str(vectors / "microsoft-tee-av/genoa_vcek.pem"),
            "--ask-chain",
            str(vectors / "enarx-steward/genoa.pkipath"),
            "--crl",
            str(vectors / GENOA_CRL),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "✗ ask.revocation: expected serial 0x20001 not revoked, found revoked" in out


def test_cli_policy_file_and_measurement(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(vectors, "microsoft-tee-av/turin_attestation_report.bin")
    policy = tmp_path / "policy.toml"
    policy.write_text('min_tcb = { fmc = 1, snp = 4 }\nrequired_platform_flags = ["ecc_enabled"]\n')
    base = [
        "verify-report",
        str(vectors / "microsoft-tee-av/turin_attestation_report.bin"),
        "--vcek",
        str(vectors / "microsoft-tee-av/turin_vcek.pem"),
        "--product",
        "turin",
        "--policy",
        str(policy),
    ]
    assert main([*base, "--measurement", report.measurement.hex()]) == 0
    assert main([*base, "--measurement", "00" * 48, "--json"]) == 1
    capsys.readouterr()
    policy.write_text("min_tcb = { fmc = 2 }\n")
    assert main(base) == 1
    assert "✗ tcb.minimum" in capsys.readouterr().out


def test_cli_unusable_inputs(vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vcek = str(vectors / "go-sev-guest/vcek.testcer")
    corrupt = str(vectors / "lit-sev-snp-utils/guest_report_corrupt.bin")
    assert main(["verify-report", corrupt, "--vcek", vcek]) == 2
    assert "793 bytes" in capsys.readouterr().err
    bad_sig = str(vectors / "lit-sev-snp-utils/guest_report_bad_sig.bin")
    assert main(["verify-report", bad_sig, "--vcek", vcek]) == 2
    # read at offset 0, it is a report whose signature (and chip) do not match
    assert main(["verify-report", bad_sig, "--offset", "0", "--vcek", vcek]) == 1
    assert "✗ report.signature" in capsys.readouterr().out
    report = str(vectors / "go-sev-guest/attestation.bin")
    assert main(["verify-report", report, "--vcek", corrupt]) == 2
    assert main(["verify-report", report, "--vcek", vcek, "--crl", vcek]) == 2
    assert main(["verify-report", report, "--vcek", vcek, "--report-data", "xyz"]) == 2
    assert main(["verify-report", report, "--vcek", "/nonexistent.der"]) == 2


def test_cli_extra_root(
    simulated: SimulatedChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = serialization.Encoding.PEM
    (tmp_path / "report.bin").write_bytes(simulated.report.to_bytes())
    (tmp_path / "vcek.pem").write_bytes(simulated.vcek.public_bytes(pem))
    (tmp_path / "chain.pem").write_bytes(
        simulated.ask.public_bytes(pem) + simulated.ark.public_bytes(pem)
    )
    (tmp_path / "ark.pem").write_bytes(simulated.ark.public_bytes(pem))
    args = [
        "verify-report",
        str(tmp_path / "report.bin"),
        "--vcek",
        str(tmp_path / "vcek.pem"),
        "--ask-chain",
        str(tmp_path / "chain.pem"),
    ]
    assert main(args) == 1
    assert "✗ ark.trusted" in capsys.readouterr().out
    assert main([*args, "--extra-root", str(tmp_path / "ark.pem")]) == 0
    assert "(development)" in capsys.readouterr().out


# ---- fuzzing: a damaged certificate never escapes as anything but KeepError ---------------------


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fuzz_damaged_vcek(vectors: Path, data: st.DataObject) -> None:
    blob = bytearray((vectors / "trustee/test-vcek.der").read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    report = _report(vectors, "trustee/test-report.bin")
    try:
        vcek = certs.load_certificate(bytes(blob))
        Verifier.amd().verify_report(report, vcek, policy=VerificationPolicy())
    except KeepError:
        pass


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_fuzz_random_reports_never_verify(vectors: Path, data: bytes) -> None:
    vcek = _cert(vectors, "trustee/test-vcek.der")
    checklist = Verifier.amd().verify_report(
        AttestationReport.parse(data), vcek, policy=VerificationPolicy()
    )
    assert not checklist.ok
    assert "report.signature" in {c.name for c in checklist.failures}


# ---- messages that name the real cause ---------------------------------------------------------


@pytest.fixture(scope="module")
def sim_evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the simulated firmware and its chain, as `keep run --evidence` hands them out."""
    from runtime.firmware.interface import PlanOnly, measured_launch
    from runtime.firmware.sim import SimFirmware
    from runtime.vmm import miniguest

    firmware = SimFirmware()
    measured_launch(firmware, miniguest.mini_plan(miniguest.hello_guest()), 1, PlanOnly())
    out = tmp_path_factory.mktemp("sim-evidence")
    (out / "report.bin").write_bytes(firmware.guest_request_report(bytes(64), 0))
    chain = firmware.certificate_chain()
    pem = serialization.Encoding.PEM
    ark, ask, vcek = (certs.load_certificate(d) for d in (chain.ark, chain.ask, chain.vcek))
    (out / "vcek.pem").write_bytes(vcek.public_bytes(pem))
    (out / "chain.pem").write_bytes(ask.public_bytes(pem) + ark.public_bytes(pem))
    (out / "ask.pem").write_bytes(ask.public_bytes(pem))
    (out / "ark.pem").write_bytes(ark.public_bytes(pem))
    return out


def _verify_sim(sim_evidence: Path, *extra: str) -> dict[str, dict[str, Any]]:
    args = ["verify-report", str(sim_evidence / "report.bin"), "--vcek"]
    args += [str(sim_evidence / "vcek.pem"), *extra, "--json"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(args) == 1
    return {c["name"]: c for c in json.loads(out.getvalue())["checks"]}


def test_issuers_that_differ_are_shown_by_full_name(sim_evidence: Path) -> None:
    """The simulated 'SEV-Milan' and AMD's 'SEV-Milan' differ only outside the CN."""
    check = _verify_sim(sim_evidence)["vcek.signed-by-ask"]
    assert check["ok"] is False
    assert "O=Keepstack simulated SNP firmware (NOT AMD)" in check["found"]
    assert "O=Advanced Micro Devices" in check["found"]
    assert "--ask-chain" in check["detail"]
    assert "--extra-root" in check["detail"]


def test_an_unpinned_simulated_root_is_named_as_the_cause(sim_evidence: Path) -> None:
    checks = _verify_sim(sim_evidence, "--ask-chain", str(sim_evidence / "chain.pem"))
    assert checks["ark.trusted"]["ok"] is False
    link = checks["ask.signed-by-ark"]
    assert link["ok"] is False
    assert link["found"] == "no pinned root"
    assert "no product" not in link["detail"]
    assert "simulated AMD root" in link["detail"]
    assert "'keep run --dev'" in link["detail"]
    assert "--extra-root" in link["detail"]
    # without the root in the file: the issuer is looked up among the pinned roots by full name
    checks = _verify_sim(sim_evidence, "--ask-chain", str(sim_evidence / "ask.pem"))
    assert "O=Keepstack simulated" in checks["ark.trusted"]["found"]
    assert "'keep run --dev'" in checks["ark.trusted"]["detail"]


def test_an_unpinned_root_is_named_as_the_cause(simulated: SimulatedChain) -> None:
    checklist = Verifier.amd().verify_report(
        simulated.report,
        simulated.vcek,
        policy=VerificationPolicy(),
        ask=simulated.ask,
        ark=simulated.ark,
    )
    link = next(c for c in checklist.checks if c.name == "ask.signed-by-ark")
    assert link.found == "no pinned root"
    assert "is not pinned (see ark.trusted)" in link.detail


def test_at_with_a_utc_offset_is_converted(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*_vlek_args(vectors), "--json"]
    assert main([*args, "--at", "2025-06-01T02:30:00+02:00"]) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["vlek.validity"]["expected"] == "valid at 2025-06-01 00:30:00 UTC"
    # and in the library too, whatever the caller passes
    report = _report(vectors, "trustee/test-vlek-report.bin")
    vlek = _cert(vectors, "trustee/test-vlek.der")
    east = datetime(2025, 6, 1, 2, 30, tzinfo=timezone(timedelta(hours=2)))
    checklist = Verifier.amd().verify_report(
        report, vlek, policy=VerificationPolicy(vmpl=1), at=east
    )
    validity = next(c for c in checklist.checks if c.name == "vlek.validity")
    assert validity.expected == "valid at 2025-06-01 00:30:00 UTC"


def test_cli_stale_crl_fails_unless_allowed_and_the_verdict_says_so(
    vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "verify-report",
        str(vectors / "enarx-steward/report.bin"),
        "--vcek",
        str(vectors / "enarx-steward/vcek.der"),
        "--crl",
        str(vectors / MILAN_CRL),
    ]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "✗ crl.freshness: expected a CRL current at" in out
    assert "✗ ask.revocation" in out
    assert main([*args, "--allow-stale-crl"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(
        "=> VALID (revocation checked only as of a stale CRL (2022-05-09 .. 2023-05-09): "
        "accepted by policy)"
    )
    assert main([*args, "--at", "2022-12-01"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("=> VALID")


# ---- policy values are strictly typed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("min_abi = 1.60", ["min_abi", "found float 1.6", 'min_abi = "1.55"']),
        ("min_abi = 1", ["min_abi", "found integer 1", 'min_abi = "1.55"']),
        ('min_abi = "1.256"', ["min_abi", "found string '1.256'", "0..255"]),
        ('min_abi = "1.5.2"', ["min_abi", "found string '1.5.2'"]),
        ('min_abi = "1.٥"', ["min_abi"]),
        ("vmpl = 0.0", ["vmpl", "found float 0.0", "vmpl = 0"]),
        ("vmpl = true", ["vmpl", "found boolean True"]),
        ("min_guest_svn = '3'", ["min_guest_svn", "found string '3'"]),
        ("allow_debug = 1", ["allow_debug", "found integer 1", "allow_debug = false"]),
        ("strict = 'true'", ["strict", "found string 'true'"]),
        ("allow_stale_crl = 0", ["allow_stale_crl", "found integer 0"]),
        ("allowed_versions = 3", ["allowed_versions", "found integer 3"]),
        ("allowed_versions = [3, true]", ["allowed_versions[1]", "found boolean True"]),
        ("allowed_versions = [3.0]", ["allowed_versions[0]", "found float 3.0"]),
        ("min_tcb = { snp = 8.0 }", ["min_tcb.snp", "found float 8.0", "microcode = 115"]),
        ("min_tcb = { snp = true }", ["min_tcb.snp", "found boolean True"]),
        ("min_tcb = 8", ["min_tcb", "found integer 8"]),
        ("required_platform_flags = 'smt_enabled'", ["required_platform_flags", "found string"]),
        ("required_policy_flags = [1]", ["required_policy_flags[0]", "found integer 1"]),
        ("report_data = 1234", ["report_data", "found integer 1234", 'report_data = "0011aabb"']),
        ("allowed_measurements = 'ab'", ["allowed_measurements", "found string 'ab'"]),
        ("allowed_measurements = [12]", ["allowed_measurements[0]", "found integer 12"]),
        ("host_data = 1979-05-27", ["host_data", "found date"]),
    ],
)
def test_policy_values_are_strictly_typed(line: str, words: list[str]) -> None:
    with pytest.raises(InputError) as info:
        VerificationPolicy.from_toml(line)
    text = info.value.explain()
    for word in words:
        assert word in text, text
    assert "for example: " in text, text


def test_min_abi_is_exact_and_a_float_never_weakens_it(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`min_abi = 1.60` once read as ABI 1.6: firmware 1.52 passed a policy asking for 1.60."""
    assert VerificationPolicy.from_toml('min_abi = "1.60"').min_abi == (1, 60)
    assert VerificationPolicy.from_toml('min_abi = "0.255"').min_abi == (0, 255)
    with pytest.raises(InputError):
        VerificationPolicy(min_abi=(1, 256))
    policy = tmp_path / "policy.toml"
    policy.write_text("min_abi = 1.60\n")
    args = [
        "verify-report",
        str(vectors / "microsoft-tee-av/genoa_attestation_report.bin"),
        "--vcek",
        str(vectors / "microsoft-tee-av/genoa_vcek.pem"),
        "--policy",
        str(policy),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert 'policy min_abi: expected a string "MAJOR.MINOR"' in err
    assert "found float 1.6" in err
    assert 'min_abi = "1.55"' in err
    assert len(err.strip().splitlines()) == 2  # the error and its hint, no traceback
