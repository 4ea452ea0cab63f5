"""Feeding signed reference measurements into report verification.

A report's MEASUREMENT is accepted only if a verified reference lists it for a launch
configuration that matches the report: the same guest policy and, where the product is known,
the same CPU generation (or a configuration for "any" generation); and, when the caller knows
them (the runner does), the same backend and vCPU count. ``References`` is what
``Verifier.verify`` takes: the envelope's verdict and those two launch facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from cryptography import x509

    from toolchain.checks import Checklist
    from toolchain.sign.references import VerifiedReferences
    from toolchain.sign.trust import TrustPolicy
    from toolchain.snp.report import AttestationReport
    from toolchain.verify.policy import VerificationPolicy


def report_generation(
    report: AttestationReport, vcek: x509.Certificate, given: str | None = None
) -> str | None:
    """The CPU generation to match references with: given, else what the certificate or the
    report's CPUID says (the verifier separately checks that these sources agree)."""
    from toolchain.errors import InputError
    from toolchain.snp import certs
    from toolchain.snp.tcb import Product

    if given not in (None, "auto"):
        return str(given).lower()
    try:
        name = certs.parse_vcek_extensions(vcek).product_name
        if name:
            return Product.from_name(name).value.lower()
    except InputError:
        pass  # an unusable extension is reported by verify_report itself
    product = certs.product_from_issuer(vcek) or report.cpuid_product
    return product.value.lower() if product is not None else None


def allowed_measurements(
    references: VerifiedReferences,
    report: AttestationReport,
    *,
    product: str | None = None,
    backend: str | None = None,
    vcpus: int | None = None,
) -> frozenset[bytes]:
    """The launch digests ``references`` allow for ``report``'s configuration."""
    generation = None if product in (None, "auto") else str(product).lower()
    allowed: set[bytes] = set()
    for config in references.configs:
        if config.guest_policy != report.policy.value:
            continue
        if generation is not None and config.cpu_generation not in ("any", generation):
            continue
        if backend is not None and config.backend != backend:
            continue
        if vcpus is not None and config.vcpus != vcpus:
            continue
        allowed.add(config.launch_digest)
    return frozenset(allowed)


@dataclass(frozen=True)
class References:
    """A signed reference envelope's verdict, as the verifier takes it: the envelope's checklist
    and, only when it verified, the references; plus what the caller itself knows of the launch
    (backend, vCPU count) to narrow the configurations further. An envelope that did not verify
    allows nothing (fail closed), and its failed lines are part of the verdict."""

    checks: Checklist
    verified: VerifiedReferences | None
    backend: str | None = None
    vcpus: int | None = None

    @classmethod
    def verify(
        cls,
        envelope: bytes,
        trust: TrustPolicy,
        *,
        at: datetime | None = None,
        title: str = "signed reference measurements",
    ) -> References:
        """Verify ``envelope`` against ``trust`` (``toolchain.sign.references.verify_envelope``)."""
        from toolchain.sign.references import verify_envelope

        checks, verified = verify_envelope(envelope, trust, at=at)
        checks.title = title
        return cls(checks, verified)

    def checklist(
        self,
        report: AttestationReport,
        vcek: x509.Certificate,
        policy: VerificationPolicy,
        *,
        product: str | None = None,
    ) -> tuple[Checklist, VerificationPolicy]:
        """The envelope's lines and ``references.configuration``, and ``policy`` with its allowed
        measurements narrowed to what the references list for ``report``'s configuration."""
        from toolchain.checks import Checklist

        checks = Checklist(self.checks.title)
        checks.extend(self.checks)
        if self.verified is None:
            return checks, policy.replace(allowed_measurements=frozenset())
        generation = report_generation(report, vcek, product)
        allowed = allowed_measurements(
            self.verified, report, product=generation, backend=self.backend, vcpus=self.vcpus
        )
        if policy.allowed_measurements is not None:
            allowed &= policy.allowed_measurements
        launch = "".join(
            (
                f", {self.vcpus} vCPU(s)" if self.vcpus is not None else "",
                f", backend {self.backend}" if self.backend is not None else "",
            )
        )
        checks.add(
            "references.configuration",
            bool(allowed),
            expected=f"a launch configuration for guest policy {report.policy.value:#x}{launch}"
            f" on {generation or 'any CPU generation'}",
            found=f"{len(allowed)} matching launch digest(s) in release {self.verified.release}",
            detail="development reference" if self.verified.development else "",
        )
        return checks, policy.replace(allowed_measurements=allowed)
