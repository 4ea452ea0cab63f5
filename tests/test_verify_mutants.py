"""Report-verifier checks that mutation testing found unpinned (tests/MUTATION.md).

Each test takes a real report from tests/data, edits one field, and re-signs it with a VCEK minted
here whose AMD extensions copy the real one's (TCB, hwID, product). The minted chain (ARK, ASK,
VCEK under AMD's names) is trusted only through an explicit extra root, so every other check
passes and exactly the check under test must fail: a mutant that deletes that check, forces it to
pass or weakens its condition makes the verdict valid and the test fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from toolchain.checks import Checklist
from toolchain.snp import certs
from toolchain.snp.policy import GuestPolicy
from toolchain.snp.report import AttestationReport, KeyInfo, PlatformInfo, load_report
from toolchain.snp.tcb import Product
from toolchain.verify import (
    TrustedRoot,
    TrustedRoots,
    VerificationPolicy,
    Verifier,
    report_signature_ok,
)

SNP = Path("vectors") / "snp-reports"
MILAN_REPORT = "trustee/test-report.bin"  # v2, VCEK, Milan
TURIN_REPORT = "microsoft-tee-av/turin_attestation_report.bin"  # v5, 8-byte chip ID
GENOA_REPORT = "microsoft-tee-av/genoa_attestation_report.bin"  # v3, CPUID bytes set
VLEK_REPORT = "trustee/test-vlek-report.bin"  # v3, VLEK, VMPL 1, Milan

# NIST P-384 group order (FIPS 186-4, D.1.2.4), written out independently of the verifier's copy.
P384_N = int(
    "39402006196394479212279040100143613805079739270465446667946905279627659399113263569398956308152294913554433653942643",
)


def _name(cn: str, product: Product) -> x509.Name:
    """AMD's distinguished name for this product with the given CN."""
    amd = certs.amd_certificate(product, "ark").subject
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn) if a.oid == NameOID.COMMON_NAME else a
            for a in amd
        ]
    )


def _issue(
    subject: x509.Name,
    issuer: x509.Name,
    public: object,
    signer: rsa.RSAPrivateKey,
    extensions: list[x509.Extension[x509.UnrecognizedExtension]] | None = None,
    *,
    days: tuple[int, int] = (-1, 365),  # validity from, to: days from now
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=days[0]))
        .not_valid_after(now + timedelta(days=days[1]))
    )
    for ext in extensions or []:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=pss)


@dataclass(frozen=True)
class Minted:
    """A simulated AMD chain for one product, trusted only through ``roots``."""

    product: Product
    ark: x509.Certificate
    ask: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    roots: TrustedRoots

    def vek(
        self,
        report: AttestationReport,
        *,
        key: object = None,
        kind: str = "VCEK",
        edit: Callable[[list[x509.Extension[x509.UnrecognizedExtension]]], list] | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A VCEK (or VLEK) whose extensions state the report's TCB and chip ID."""
        private = ec.generate_private_key(ec.SECP384R1())
        public = key if key is not None else private.public_key()
        chip = b"" if kind == "VLEK" else report.chip_id
        extensions = certs.vcek_extensions(
            report.reported_tcb, chip, self.product, csp_id="keepstack" if kind == "VLEK" else None
        )
        if edit is not None:
            extensions = edit(extensions)
        name = self.product.value
        issuer = f"SEV-VLEK-{name}" if kind == "VLEK" else f"SEV-{name}"
        cert = _issue(
            _name(f"SEV-{kind}", self.product),
            _name(issuer, self.product),
            public,
            self.ask_key,
            extensions,
        )
        return cert, private

    def verify(
        self, report: AttestationReport, vek: x509.Certificate, **options: object
    ) -> Checklist:
        policy = options.pop("policy", VerificationPolicy(vmpl=report.vmpl))
        return Verifier(self.roots).verify_report(
            report,
            vek,
            policy=policy,  # type: ignore[arg-type]
            ask=self.ask,
            ark=self.ark,
            **options,  # type: ignore[arg-type]
        )


def _mint(
    product: Product,
    *,
    vlek: bool = False,
    ark_days: tuple[int, int] = (-1, 365),
    ask_days: tuple[int, int] = (-1, 365),
    ark_signer: rsa.RSAPrivateKey | None = None,
) -> Minted:
    """ARK and ASK (or ASVK) under AMD's names; the ARK is trusted as an extra root.

    ``ark_signer`` signs the ARK with another key: a root that is not self-signed, pinned
    directly (``with_extra`` would refuse it).
    """
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ark_name = _name(f"ARK-{product.value}", product)
    ask_cn = f"SEV-VLEK-{product.value}" if vlek else f"SEV-{product.value}"
    ark = _issue(ark_name, ark_name, ark_key.public_key(), ark_signer or ark_key, days=ark_days)
    ask = _issue(_name(ask_cn, product), ark_name, ask_key.public_key(), ark_key, days=ask_days)
    label = "minted in the test"
    if ark_signer is None:
        roots = TrustedRoots.amd().with_extra(ark, label=label)
    else:
        pinned = TrustedRoot(ark, label, certs.der_sha256(ark))
        roots = TrustedRoots((*TrustedRoots.amd().roots, pinned))
    return Minted(product, ark, ask, ask_key, roots)


@pytest.fixture(scope="module")
def milan() -> Minted:
    return _mint(Product.MILAN)


@pytest.fixture(scope="module")
def turin() -> Minted:
    return _mint(Product.TURIN)


def _real(data_dir: Path, name: str) -> AttestationReport:
    return load_report((data_dir / SNP / name).read_bytes())[0]


def _signed(report: AttestationReport, key: ec.EllipticCurvePrivateKey) -> AttestationReport:
    der = key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    return report.with_signature(*decode_dss_signature(der))


def _failures(checklist: Checklist) -> set[str]:
    return {c.name for c in checklist.failures}


def _check(checklist: Checklist, name: str) -> object:
    return next(c for c in checklist.checks if c.name == name)


def test_the_minted_chain_accepts_the_real_reports_resigned(
    data_dir: Path, milan: Minted, turin: Minted
) -> None:
    """The baseline every test below edits: one field away from valid."""
    for minted, name in ((milan, MILAN_REPORT), (turin, TURIN_REPORT)):
        report = _real(data_dir, name)
        vek, key = minted.vek(report)
        checklist = minted.verify(_signed(report, key), vek)
        assert checklist.ok, checklist.render()


# ---- the report's binding to the certificate -------------------------------------------------


def test_signing_key_field_must_match_the_certificate_kind(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    for signing_key in (1, 7, 3):  # VLEK, none, reserved: all claimed by a VCEK-signed report
        edited = dataclasses.replace(report, key_info=KeyInfo(signing_key << 2))
        checklist = milan.verify(_signed(edited, key), vcek)
        assert _failures(checklist) == {"report.signing-key"}, checklist.render()
        check = _check(checklist, "report.signing-key")
        assert check.expected == "VCEK"  # type: ignore[attr-defined]


def test_vlek_report_claiming_a_vcek_fails(data_dir: Path) -> None:
    minted = _mint(Product.MILAN, vlek=True)  # its CPUID bytes say Milan
    report = _real(data_dir, VLEK_REPORT)
    vlek, key = minted.vek(report, kind="VLEK")
    assert minted.verify(_signed(report, key), vlek).ok
    edited = dataclasses.replace(report, key_info=KeyInfo(0))  # SIGNING_KEY = VCEK
    checklist = minted.verify(_signed(edited, key), vlek)
    assert _failures(checklist) == {"report.signing-key"}, checklist.render()


def test_certificate_without_a_p384_key_fails_the_signature(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    for other in (ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)):
        vcek, key = milan.vek(report, key=other.public_key())
        checklist = milan.verify(_signed(report, key), vcek)
        assert _failures(checklist) == {"report.signature"}, checklist.render()
        assert _check(checklist, "report.signature").found == "none"  # type: ignore[attr-defined]


def _without_arc(arc: int) -> Callable[[list], list]:
    oid = f"{certs.AMD_OID}.3.{arc}"
    return lambda exts: [e for e in exts if e.oid.dotted_string != oid]


def test_unreadable_certificate_tcb_fails_reported_tcb(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report, edit=_without_arc(3))  # the SNP level's extension is missing
    checklist = milan.verify(_signed(report, key), vcek)
    assert _failures(checklist) == {"report.reported-tcb"}, checklist.render()
    assert "lacks TCB" in _check(checklist, "report.reported-tcb").found  # type: ignore[attr-defined]


def test_vcek_without_hwid_fails_chip_id(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    hwid = certs.OID_HWID.dotted_string
    vcek, key = milan.vek(
        report, edit=lambda exts: [e for e in exts if e.oid.dotted_string != hwid]
    )
    checklist = milan.verify(_signed(report, key), vcek)
    assert _failures(checklist) == {"report.chip-id"}, checklist.render()
    assert _check(checklist, "report.chip-id").found == "none"  # type: ignore[attr-defined]


def test_turin_chip_id_bytes_after_the_eighth_must_be_zero(data_dir: Path, turin: Minted) -> None:
    report = _real(data_dir, TURIN_REPORT)
    vcek, key = turin.vek(report)
    for index in (8, 9, 63):
        chip = bytearray(report.chip_id)
        chip[index] = 1
        edited = dataclasses.replace(report, chip_id=bytes(chip))
        checklist = turin.verify(_signed(edited, key), vcek)
        assert _failures(checklist) == {"report.chip-id"}, (index, checklist.render())
        assert "bytes 8-63 not zero" in _check(checklist, "report.chip-id").found  # type: ignore[attr-defined]


def test_milan_chip_id_is_all_64_bytes(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    chip = bytearray(report.chip_id)
    chip[63] ^= 1
    checklist = milan.verify(_signed(dataclasses.replace(report, chip_id=bytes(chip)), key), vcek)
    assert _failures(checklist) == {"report.chip-id"}, checklist.render()


# ---- the report's format ---------------------------------------------------------------------


def test_signature_algorithm_other_than_1_fails(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    for algo in (0, 2):
        edited = dataclasses.replace(report, signature_algo=algo)
        checklist = milan.verify(_signed(edited, key), vcek)
        assert _failures(checklist) == {"report.signature-algorithm"}, checklist.render()


def test_every_report_version_2_to_5_is_accepted_and_others_are_not(
    data_dir: Path, milan: Minted
) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    for version in (2, 3, 4, 5):
        edited = dataclasses.replace(report, version=version)
        checklist = milan.verify(_signed(edited, key), vcek)
        assert checklist.ok, (version, checklist.render())
    for version in (1, 6):
        edited = dataclasses.replace(report, version=version)
        checklist = milan.verify(_signed(edited, key), vcek)
        assert _failures(checklist) == {"report.version"}, (version, checklist.render())


class _AcceptingKey:
    """A key that accepts any signature: only the range pre-check can refuse."""

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, *_args: object) -> None:
        self.calls += 1


def test_signature_r_and_s_range_is_checked_before_the_curve(data_dir: Path) -> None:
    """R and S must be 1..n-1 (SEC 1, 4.1.4 step 1) whatever the backend would say."""
    report = _real(data_dir, MILAN_REPORT)
    r, s = report.signature_r, report.signature_s
    for bad_r, bad_s in ((0, s), (r, 0), (P384_N, s), (r, P384_N), (P384_N + 1, s)):
        key = _AcceptingKey()
        assert report_signature_ok(report.with_signature(bad_r, bad_s), key) is False  # type: ignore[arg-type]
        assert key.calls == 0, (bad_r, bad_s)
    for good_r, good_s in ((1, 1), (P384_N - 1, P384_N - 1)):
        key = _AcceptingKey()
        assert report_signature_ok(report.with_signature(good_r, good_s), key) is True  # type: ignore[arg-type]


# ---- the tenant's policy at its boundaries ---------------------------------------------------


def test_naive_verification_time_is_utc(data_dir: Path) -> None:
    """A time without a zone means UTC (the VLEK sample expires 2025-12-10)."""
    report = _real(data_dir, VLEK_REPORT)
    vlek = certs.load_certificate((data_dir / SNP / "trustee/test-vlek.der").read_bytes())
    policy = VerificationPolicy(vmpl=1)
    assert Verifier.amd().verify_report(report, vlek, policy=policy, at=datetime(2025, 6, 1)).ok
    late = Verifier.amd().verify_report(report, vlek, policy=policy, at=datetime(2025, 12, 11))
    assert _failures(late) == {"vlek.validity"}
    assert "2025-12-11 00:00:00 UTC" in _check(late, "vlek.validity").expected  # type: ignore[attr-defined]


def test_min_tcb_floor_for_a_component_the_report_lacks(data_dir: Path) -> None:
    """Milan has no FMC level: a floor of fmc>=1 cannot be met (absent is below 1)."""
    report = _real(data_dir, "virtee-sev/report_milan.hex")
    vcek = certs.load_certificate((data_dir / SNP / "virtee-sev/vcek_milan.der").read_bytes())
    assert (
        Verifier.amd().verify_report(report, vcek, policy=VerificationPolicy(min_tcb={"fmc": 0})).ok
    )
    checklist = Verifier.amd().verify_report(
        report, vcek, policy=VerificationPolicy(min_tcb={"fmc": 1})
    )
    assert _failures(checklist) == {"tcb.minimum"}
    assert "below: fmc" in _check(checklist, "tcb.minimum").detail  # type: ignore[attr-defined]


def test_min_tcb_and_guest_svn_are_inclusive(data_dir: Path) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek = certs.load_certificate((data_dir / SNP / "trustee/test-vcek.der").read_bytes())
    tcb = report.reported_tcb.components()
    exact = VerificationPolicy(min_tcb=dict(tcb), min_guest_svn=report.guest_svn)
    assert Verifier.amd().verify_report(report, vcek, policy=exact).ok
    for name in ("snp", "microcode"):
        above = VerificationPolicy(min_tcb={name: tcb[name] + 1})
        assert _failures(Verifier.amd().verify_report(report, vcek, policy=above)) == {
            "tcb.minimum"
        }
    above_svn = VerificationPolicy(min_guest_svn=report.guest_svn + 1)
    assert _failures(Verifier.amd().verify_report(report, vcek, policy=above_svn)) == {
        "guest-svn.minimum"
    }


def test_vmpl_must_equal_the_policy(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    for vmpl in (0, 1, 2, 3):
        edited = _signed(dataclasses.replace(report, vmpl=vmpl), key)
        assert milan.verify(edited, vcek, policy=VerificationPolicy(vmpl=vmpl)).ok
        other = VerificationPolicy(vmpl=(vmpl + 1) % 4)
        assert _failures(milan.verify(edited, vcek, policy=other)) == {"report.vmpl"}


def test_reserved_key_and_platform_bits_fail_in_strict_mode(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    strict = VerificationPolicy(strict=True)
    edits = {
        "KEY_INFO reserved bits 0x20": {"key_info": KeyInfo(report.key_info.value | 1 << 5)},
        "PLATFORM_INFO unknown bits 0x100": {
            "platform_info": PlatformInfo(report.platform_info.value | 1 << 8)
        },
    }
    for text, change in edits.items():
        edited = _signed(dataclasses.replace(report, **change), key)
        assert milan.verify(edited, vcek).ok  # lenient: reported, not rejected
        checklist = milan.verify(edited, vcek, policy=strict)
        assert _failures(checklist) == {"report.reserved"}, checklist.render()
        assert text in _check(checklist, "report.reserved").found  # type: ignore[attr-defined]


# ---- which product: every source must agree, and there must be one ---------------------------


def _product_name(name: str | None) -> Callable[[list], list]:
    """Replace (or, with None, drop) the certificate's productName extension."""
    oid = certs.OID_PRODUCT_NAME

    def edit(exts: list) -> list:
        kept = [e for e in exts if e.oid != oid]
        if name is not None:
            value = x509.UnrecognizedExtension(oid, certs.der_ia5(name))
            kept.append(x509.Extension(oid, False, value))
        return kept

    return edit


def test_unknown_product_name_in_the_certificate_fails(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report, edit=_product_name("Bergamo"))
    checklist = milan.verify(_signed(report, key), vcek)
    assert "product" in _failures(checklist), checklist.render()
    assert "'Bergamo'" in _check(checklist, "product").found  # type: ignore[attr-defined]


def test_certificate_issuer_is_a_product_source(data_dir: Path, milan: Minted) -> None:
    """A Genoa productName under a SEV-Milan issuer: the sources disagree."""
    report = _real(data_dir, MILAN_REPORT)  # v2: no CPUID bytes to name a product
    vcek, key = milan.vek(report, edit=_product_name("Genoa"))
    checklist = milan.verify(_signed(report, key), vcek)
    assert _failures(checklist) == {"product"}, checklist.render()
    assert "certificate issuer: Milan" in _check(checklist, "product").found  # type: ignore[attr-defined]


def test_no_product_source_at_all_fails_unless_given(data_dir: Path) -> None:
    """No productName, an issuer that names no product, a v2 report: --product decides."""
    minted = _mint(Product.MILAN)
    report = _real(data_dir, MILAN_REPORT)
    private = ec.generate_private_key(ec.SECP384R1())
    extensions = _product_name(None)(
        certs.vcek_extensions(report.reported_tcb, report.chip_id, Product.MILAN)
    )
    vcek = _issue(
        _name("SEV-VCEK", Product.MILAN),
        _name("KDS-Test", Product.MILAN),
        private.public_key(),
        minted.ask_key,
        extensions,
    )
    signed = _signed(report, private)
    checklist = minted.verify(signed, vcek)
    assert "product" in _failures(checklist), checklist.render()
    assert _check(checklist, "product").found == "none detected"  # type: ignore[attr-defined]
    given = minted.verify(signed, vcek, product="milan")
    assert "product" not in _failures(given), given.render()


def test_tcb_is_read_in_the_layout_of_the_certificates_product(
    data_dir: Path, turin: Minted
) -> None:
    """A Turin report whose CPUID bytes are blank is still read with Turin's FMC byte."""
    report = dataclasses.replace(_real(data_dir, TURIN_REPORT), cpuid_fam_id=0, cpuid_mod_id=0)
    parsed = AttestationReport.parse(report.to_bytes())
    assert not parsed.turin_layout  # nothing in the report itself says Turin now
    vcek, key = turin.vek(report)
    fmc = report.reported_tcb.components()["fmc"]
    policy = VerificationPolicy(min_tcb={"fmc": fmc})
    checklist = turin.verify(_signed(parsed, key), vcek, policy=policy)
    assert checklist.ok, checklist.render()
    assert "(Turin)" in checklist.title


# ---- the chain: each link and date is its own check ------------------------------------------


def test_certificate_that_is_neither_vcek_nor_vlek_fails(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    _, key = milan.vek(report)
    extensions = certs.vcek_extensions(report.reported_tcb, report.chip_id, Product.MILAN)
    other = _issue(
        _name("SEV-VXEK", Product.MILAN),
        _name("SEV-Milan", Product.MILAN),
        key.public_key(),
        milan.ask_key,
        extensions,
    )
    checklist = milan.verify(_signed(report, key), other)
    assert _failures(checklist) == {"certificate.kind", "report.signing-key"}, checklist.render()
    assert "SEV-VXEK" in _check(checklist, "certificate.kind").found  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "failing"),
    [
        ({"ark_days": (-30, -2)}, "ark.validity"),
        ({"ark_days": (2, 30)}, "ark.validity"),
        ({"ask_days": (-30, -2)}, "ask.validity"),
        ({"ask_days": (2, 30)}, "ask.validity"),
    ],
    ids=["ark-expired", "ark-not-yet", "ask-expired", "ask-not-yet"],
)
def test_each_link_of_the_chain_must_be_current(
    data_dir: Path, options: dict[str, tuple[int, int]], failing: str
) -> None:
    minted = _mint(Product.MILAN, **options)  # type: ignore[arg-type]
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = minted.vek(report)
    checklist = minted.verify(_signed(report, key), vcek)
    assert _failures(checklist) == {failing}, checklist.render()


def test_a_pinned_root_must_still_be_self_signed(data_dir: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    minted = _mint(Product.MILAN, ark_signer=other)
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = minted.vek(report)
    checklist = minted.verify(_signed(report, key), vcek)
    assert _failures(checklist) == {"ark.self-signature"}, checklist.render()


def test_no_product_and_no_intermediate_names_every_missing_link(data_dir: Path) -> None:
    """Without a product there is no packaged ASK to chain through: each missing link fails."""
    report = _real(data_dir, MILAN_REPORT)
    minted = _mint(Product.MILAN)
    private = ec.generate_private_key(ec.SECP384R1())
    extensions = _product_name(None)(
        certs.vcek_extensions(report.reported_tcb, report.chip_id, Product.MILAN)
    )
    vcek = _issue(
        _name("SEV-VCEK", Product.MILAN),
        _name("KDS-Test", Product.MILAN),
        private.public_key(),
        minted.ask_key,
        extensions,
    )
    checklist = Verifier.amd().verify_report(
        _signed(report, private), vcek, policy=VerificationPolicy()
    )
    assert _failures(checklist) == {
        "product",
        "ark.trusted",
        "ask.signed-by-ark",
        "report.reported-tcb",
    }, checklist.render()
    assert _check(checklist, "report.reported-tcb").found == "unknown product"  # type: ignore[attr-defined]


def test_an_intermediate_whose_issuer_no_pinned_root_names_fails(data_dir: Path) -> None:
    """ASK issued by "ARK-Elsewhere": no pinned root by that name, so no root and no link."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elsewhere = _name("ARK-Elsewhere", Product.MILAN)
    ask = _issue(_name("SEV-Milan", Product.MILAN), elsewhere, ask_key.public_key(), ark_key)
    report = _real(data_dir, MILAN_REPORT)
    minted = Minted(Product.MILAN, ask, ask, ask_key, TrustedRoots.amd())
    vcek, key = minted.vek(report)
    checklist = Verifier.amd().verify_report(
        _signed(report, key), vcek, policy=VerificationPolicy(), ask=ask
    )
    assert _failures(checklist) == {"ark.trusted", "ask.signed-by-ark"}, checklist.render()
    assert "'CN=ARK-Elsewhere," in _check(checklist, "ark.trusted").found  # type: ignore[attr-defined]


def test_an_unrooted_chain_makes_a_given_crl_unusable(data_dir: Path) -> None:
    """No root, so the CRL cannot be authenticated: revocation fails rather than trusting it."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elsewhere = _name("ARK-Elsewhere", Product.MILAN)
    ask = _issue(_name("SEV-Milan", Product.MILAN), elsewhere, ask_key.public_key(), ark_key)
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = Minted(Product.MILAN, ask, ask, ask_key, TrustedRoots.amd()).vek(report)
    crl = (data_dir / SNP / "enarx-steward/milan_vcek_crl_2022-05-09.der").read_bytes()
    # The 2022 CRL is stale now; accepting that isolates what this test is about.
    policy = VerificationPolicy(allow_stale_crl=True)
    checklist = Verifier.amd().verify_report(
        _signed(report, key), vcek, policy=policy, ask=ask, crl=crl
    )
    assert _failures(checklist) == {
        "ark.trusted",
        "ask.signed-by-ark",
        "crl.signature",
        "ask.revocation",
    }, checklist.render()
    assert _check(checklist, "ask.revocation").found == "CRL not authentic"  # type: ignore[attr-defined]


def test_the_root_that_signed_the_intermediate_is_chosen_among_namesakes(
    data_dir: Path, milan: Minted
) -> None:
    """AMD's ARK-Milan and a minted ARK-Milan share a name; the one that signed the ASK wins."""
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    checklist = Verifier(milan.roots).verify_report(
        _signed(report, key),
        vcek,
        policy=VerificationPolicy(),
        ask=milan.ask,  # no ark=: the root is found by the ASK's issuer name
    )
    assert checklist.ok, checklist.render()
    assert "minted in the test" in _check(checklist, "ark.trusted").found  # type: ignore[attr-defined]


# ---- every check is shown, skipped ones with their reason -------------------------------------


def test_crl_freshness_window_is_inclusive_and_shown(data_dir: Path) -> None:
    report = _real(data_dir, "enarx-steward/report.bin")
    vcek = certs.load_certificate((data_dir / SNP / "enarx-steward/vcek.der").read_bytes())
    data = (data_dir / SNP / "enarx-steward/milan_vcek_crl_2022-05-09.der").read_bytes()
    crl = certs.read_crl(data)
    assert crl.next_update_utc is not None
    policy = VerificationPolicy()  # a fresh CRL is required by default
    second = timedelta(seconds=1)
    for at in (crl.last_update_utc, crl.next_update_utc):
        checklist = Verifier.amd().verify_report(report, vcek, policy=policy, crl=data, at=at)
        assert _check(checklist, "crl.freshness").ok is True, (at, checklist.render())  # type: ignore[attr-defined]
    for at in (crl.last_update_utc - second, crl.next_update_utc + second):
        checklist = Verifier.amd().verify_report(report, vcek, policy=policy, crl=data, at=at)
        assert _check(checklist, "crl.freshness").ok is False, (at, checklist.render())  # type: ignore[attr-defined]


def test_chip_id_skips_are_shown_with_their_reason(data_dir: Path, milan: Minted) -> None:
    vlek_report = _real(data_dir, VLEK_REPORT)
    vlek = certs.load_certificate((data_dir / SNP / "trustee/test-vlek.der").read_bytes())
    checklist = Verifier.amd().verify_report(
        vlek_report, vlek, policy=VerificationPolicy(vmpl=1), at=datetime(2025, 6, 1, tzinfo=UTC)
    )
    chip = _check(checklist, "report.chip-id")
    assert (chip.ok, "VLEK" in chip.detail) == (None, True)  # type: ignore[attr-defined]

    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    masked = dataclasses.replace(report, key_info=KeyInfo(1 << 1), chip_id=bytes(64))
    checklist = milan.verify(_signed(masked, key), vcek)
    assert checklist.ok, checklist.render()
    chip = _check(checklist, "report.chip-id")
    assert (chip.ok, "MASK_CHIP_ID" in chip.detail) == (None, True)  # type: ignore[attr-defined]


CHAIN_CHECKS = [
    "report.version",
    "report.signature-algorithm",
    "product",
    "certificate.kind",
    "report.signing-key",
    "ark.trusted",
    "ark.self-signature",
    "ark.validity",
    "ask.signed-by-ark",
    "ask.validity",
    "vcek.signed-by-ask",
    "vcek.validity",
    "ask.revocation",
    "report.signature",
    "report.reported-tcb",
    "report.chip-id",
]
VALUE_CHECKS = [
    "report.vmpl",
    "firmware.min-abi",
    "tcb.minimum",
    "guest-svn.minimum",
    "report-data",
    "host-data",
    "family-id",
    "image-id",
    "measurement",
    "id-key-digest",
    "author-key-digest",
    "report.reserved",
]


def test_every_check_is_listed_once_accepted_or_skipped(data_dir: Path) -> None:
    """A check that passes or is skipped still appears: the list says what was looked at."""
    report = _real(data_dir, "go-sev-guest/attestation.bin")  # debug and SMT allowed by the guest
    vcek = certs.load_certificate((data_dir / SNP / "go-sev-guest/vcek.testcer").read_bytes())
    checklist = Verifier.amd().verify_report(
        report, vcek, policy=VerificationPolicy(allow_debug=True)
    )
    assert [c.name for c in checklist.checks] == [
        *CHAIN_CHECKS,
        "policy.debug",
        "policy.migrate-ma",
        "policy.required-flags",
        "platform.smt",
        "platform.required-flags",
        *VALUE_CHECKS,
    ]
    debug = _check(checklist, "policy.debug")
    assert (debug.ok, debug.detail) == (True, "accepted: --allow-debug")  # type: ignore[attr-defined]
    assert _check(checklist, "platform.smt").ok is True  # type: ignore[attr-defined]

    required = VerificationPolicy(
        allow_debug=True,
        allow_smt=False,
        required_policy_flags=frozenset({"smt"}),
        required_platform_flags=frozenset({"smt_enabled"}),
    )
    checklist = Verifier.amd().verify_report(report, vcek, policy=required)
    assert [c.name for c in checklist.checks] == [
        *CHAIN_CHECKS,
        "policy.debug",
        "policy.migrate-ma",
        "policy.smt",
        "platform.smt",
        "platform.smt_enabled",
        *VALUE_CHECKS,
    ]
    assert _failures(checklist) == {"platform.smt"}


def test_an_allowed_migration_agent_is_listed_as_accepted(data_dir: Path, milan: Minted) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    policy_value = report.policy.value | 1 << 18  # MIGRATE_MA
    edited = _signed(dataclasses.replace(report, policy=GuestPolicy(policy_value)), key)
    assert _failures(milan.verify(edited, vcek)) == {"policy.migrate-ma"}
    allowed = milan.verify(edited, vcek, policy=VerificationPolicy(allow_migration_agent=True))
    assert allowed.ok, allowed.render()
    migrate = _check(allowed, "policy.migrate-ma")
    assert (migrate.ok, migrate.detail) == (True, "accepted by policy")  # type: ignore[attr-defined]


def test_a_short_expected_value_is_compared_zero_padded_and_says_so(data_dir: Path) -> None:
    report = _real(data_dir, MILAN_REPORT)
    vcek = certs.load_certificate((data_dir / SNP / "trustee/test-vcek.der").read_bytes())
    full = VerificationPolicy(report_data=report.report_data)
    check = _check(Verifier.amd().verify_report(report, vcek, policy=full), "report-data")
    assert (check.ok, check.detail) == (True, "")  # type: ignore[attr-defined]
    short = VerificationPolicy(report_data=report.report_data[:32])
    check = _check(Verifier.amd().verify_report(report, vcek, policy=short), "report-data")
    assert check.ok is (report.report_data[32:] == bytes(32))  # type: ignore[attr-defined]
    assert "zero-padded to 64 bytes" in check.detail  # type: ignore[attr-defined]


def test_any_vmpl_is_listed_as_a_skip(data_dir: Path) -> None:
    report = _real(data_dir, VLEK_REPORT)  # VMPL 1
    vlek = certs.load_certificate((data_dir / SNP / "trustee/test-vlek.der").read_bytes())
    at = datetime(2025, 6, 1, tzinfo=UTC)
    checklist = Verifier.amd().verify_report(
        report, vlek, policy=VerificationPolicy(vmpl=None), at=at
    )
    assert checklist.ok, checklist.render()
    vmpl = _check(checklist, "report.vmpl")
    assert (vmpl.ok, vmpl.found, vmpl.detail) == (None, "1", "any VMPL accepted by the policy")  # type: ignore[attr-defined]


def test_when_no_namesake_root_signed_the_intermediate_the_first_pinned_is_named(
    data_dir: Path, milan: Minted
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask = _issue(
        _name("SEV-Milan", Product.MILAN),
        _name("ARK-Milan", Product.MILAN),
        milan.ask_key.public_key(),
        stranger,
    )
    report = _real(data_dir, MILAN_REPORT)
    vcek, key = milan.vek(report)
    checklist = Verifier(milan.roots).verify_report(
        _signed(report, key), vcek, policy=VerificationPolicy(), ask=ask
    )
    assert _failures(checklist) == {"ask.signed-by-ark"}, checklist.render()
    assert "AMD Milan (pinned)" in _check(checklist, "ark.trusted").found  # type: ignore[attr-defined]
