"""The report's signature and its binding to the certificate that signed it.

``detect_product`` decides the CPU generation from every source (the caller's, the certificate's
productName and issuer, the report's CPUID) and fails when they disagree. ``signature_checks``
adds, in order: the certificate's kind (VCEK or VLEK), the report's signing key (it must name that
kind), the ECDSA P-384 signature, the reported TCB equal to the certificate's, and the chip ID
equal to the certificate's hwID (a VLEK, or a report with MASK_CHIP_ID, has none to compare).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.snp import certs
from toolchain.snp.report import AttestationReport, SigningKey
from toolchain.snp.tcb import Product, TcbVersion
from toolchain.verify.validate import hexs

if TYPE_CHECKING:
    from toolchain.verify.chain import ChainCache

#: Stateless, so one serves every verification (the bench's bare ECDSA makes it once too).
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)


def report_signature_ok(report: AttestationReport, key: ec.EllipticCurvePublicKey) -> bool:
    """ECDSA P-384/SHA-384 over bytes 0x000-0x29F with R, S taken from the 72-byte LE fields."""
    r, s = report.signature_r, report.signature_s
    if not (0 < r < _P384_ORDER and 0 < s < _P384_ORDER):
        return False
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes(), _ECDSA_SHA384)
    except InvalidSignature:
        return False
    return True


def detect_product(  # noqa: PLR0917
    cache: ChainCache,
    report: AttestationReport,
    ext: certs.VekExtensions,
    vek: x509.Certificate,
    given: str | Product | None,
    checks: Checklist,
) -> Product | None:
    sources: dict[str, Product] = {}
    if isinstance(given, Product):
        sources["given"] = given
    elif given is not None and given.lower() != "auto":
        sources["given"] = Product.from_name(given)
    if ext.product_name:
        try:
            sources["certificate productName"] = Product.from_name(ext.product_name)
        except InputError:
            checks.add(
                "product",
                False,
                expected="Milan, Genoa or Turin",
                found=f"certificate productName {ext.product_name!r}",
            )
            return None
    issuer_product = cache.facts(vek).issuer_product
    if issuer_product is not None:
        sources["certificate issuer"] = issuer_product
    cpuid = report.cpuid_product
    if cpuid is not None:
        sources["report CPUID"] = cpuid

    def found() -> str:
        return ", ".join(f"{where}: {p.value}" for where, p in sources.items())

    if not sources:
        checks.add(
            "product",
            False,
            expected="a product (given or from the certificate)",
            found="none detected",
            detail="pass --product",
        )
        return None
    distinct = set(sources.values())
    chosen = next(iter(sources.values()))
    if len(distinct) > 1:
        checks.add("product", False, expected="one product from every source", found=found)
        return chosen
    checks.add("product", True, found=lambda: f"{chosen.value} ({found()})")
    return chosen


def key_kind_checks(
    report: AttestationReport, kind: str | None, subject_cn: str, checks: Checklist
) -> None:
    """The certificate is a VCEK or VLEK, and the report says it was signed by that kind."""
    checks.add(
        "certificate.kind",
        kind is not None,
        expected="SEV-VCEK or SEV-VLEK",
        found=kind or f"subject CN {subject_cn!r}",
    )
    signing_key = report.key_info.signing_key
    expected_key = {"VCEK": SigningKey.VCEK, "VLEK": SigningKey.VLEK}.get(kind or "")
    checks.add(
        "report.signing-key",
        expected_key is not None and signing_key == expected_key,
        expected=kind or "VCEK or VLEK",
        found=report.key_info.signing_key_name,
    )


def signature_checks(
    cache: ChainCache,
    report: AttestationReport,
    vek: x509.Certificate,
    product: Product | None,
    checks: Checklist,
) -> None:
    """The signature by ``vek``'s key, the reported TCB and the chip ID against ``vek``."""
    facts = cache.facts(vek)
    key = facts.ec_key
    if key is None:
        checks.add(
            "report.signature",
            False,
            expected="a P-384 public key in the certificate",
            found="none",
        )
    else:
        signature_ok = report_signature_ok(report, key)
        checks.add(
            "report.signature",
            signature_ok,
            expected=f"ECDSA P-384/SHA-384 by this {facts.kind or 'certificate'}",
            found="valid" if signature_ok else "does not verify",
        )
    _reported_tcb_check(cache, report, vek, product, checks)
    _chip_id_check(report, cache.extensions(vek), facts.kind, product, checks)


def _reported_tcb_check(
    cache: ChainCache,
    report: AttestationReport,
    vek: x509.Certificate,
    product: Product | None,
    checks: Checklist,
) -> None:
    if product is None:
        checks.add(
            "report.reported-tcb",
            False,
            expected="a known product to read the TCB",
            found="unknown product",
        )
        return
    try:
        cert_tcb: TcbVersion = cache.tcb(vek, turin=product.turin_layout)
    except InputError as exc:
        checks.add(
            "report.reported-tcb", False, expected="TCB in the certificate", found=exc.message
        )
        return
    checks.add(
        "report.reported-tcb",
        cert_tcb.to_int() == report.reported_tcb.to_int(),
        expected=lambda: f"certificate TCB {cert_tcb}",
        found=report.reported_tcb,
    )


def _chip_id_check(
    report: AttestationReport,
    ext: certs.VekExtensions,
    kind: str | None,
    product: Product | None,
    checks: Checklist,
) -> None:
    if kind == "VLEK":
        checks.add("report.chip-id", None, detail="a VLEK is not bound to one chip (no hwID)")
        return
    if report.key_info.mask_chip_id:
        checks.add(
            "report.chip-id",
            None,
            detail="MASK_CHIP_ID is set: the report carries no chip ID to compare",
        )
        return
    if ext.hwid is None:
        checks.add("report.chip-id", False, expected="a hwID extension", found="none")
        return
    chip = report.chip_id_meaningful(product)
    rest_zero = product is None or not product.turin_layout or not any(report.chip_id[8:])
    hwid = ext.hwid
    checks.add(
        "report.chip-id",
        chip == hwid and rest_zero,
        expected=lambda: f"hwID {hexs(hwid, 32)}",
        found=lambda: hexs(chip, 32) + ("" if rest_zero else " (bytes 8-63 not zero)"),
    )
