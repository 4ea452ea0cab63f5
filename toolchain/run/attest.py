"""The runner's verdict on a live attestation report.

``LiveAttestation`` is the callback the VMM (``kvm`` backend) or the ``nil`` backend calls with
the keep's ATTESTATION_REPORT. It verifies the report against the firmware's certificate chain,
the trusted roots (AMD's only, unless the simulated root was explicitly trusted), the runner's
fresh nonce, the verification policy and the signed reference measurements, and raises
``EvidenceError`` naming the first failed check — so the application never starts on a report
that does not check out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolchain.checks import Checklist
from toolchain.errors import EvidenceError, KeepError

if TYPE_CHECKING:
    from runtime.firmware.interface import Firmware
    from toolchain.sign.references import VerifiedReferences
    from toolchain.verify import TrustedRoots, VerificationPolicy

NONCE_SIZE = 64


def fresh_nonce() -> bytes:
    """64 random bytes: the REPORT_DATA that binds a report to this one run."""
    return secrets.token_bytes(NONCE_SIZE)


@dataclass
class LiveAttestation:
    """Verify the keep's report; keep the checklist and the evidence for the caller."""

    nonce: bytes
    firmware: Firmware
    references: VerifiedReferences
    reference_checks: Checklist
    roots: TrustedRoots
    policy: VerificationPolicy
    backend: str
    vcpus: int
    checklist: Checklist | None = None
    report: bytes | None = None
    calls: int = field(default=0)

    def __call__(self, report_bytes: bytes) -> bool:
        self.calls += 1
        self.report = bytes(report_bytes)
        try:
            self.checklist = self._verify(report_bytes)
        except KeepError as exc:
            self.checklist = Checklist("live attestation")
            self.checklist.add("report.usable", False, expected="a verifiable report", found=exc)
            raise EvidenceError(f"the keep's attestation report is unusable: {exc}") from exc
        failures = self.checklist.failures
        if failures or not self.checklist.ok:
            first = failures[0] if failures else None
            raise EvidenceError(
                "the keep's attestation report does not verify; the application was not started",
                field=first.name if first else "checklist",
                expected=first.expected if first else "at least one passing check",
                found=first.found if first else "none",
            )
        return True

    def _verify(self, report_bytes: bytes) -> Checklist:
        from toolchain.snp.certs import load_certificate
        from toolchain.snp.report import AttestationReport
        from toolchain.verify import verify_report
        from toolchain.verify.references import allowed_measurements, report_generation

        if self.calls > 1:
            # One report per run: a second request could only be a replay attempt.
            raise EvidenceError("the keep asked for a second attestation report in one run")
        report = AttestationReport.parse(report_bytes)
        chain = self.firmware.certificate_chain()
        vcek = load_certificate(chain.vcek)
        ask = load_certificate(chain.ask)
        ark = load_certificate(chain.ark)
        generation = report_generation(report, vcek)
        allowed = allowed_measurements(
            self.references, report, product=generation, backend=self.backend, vcpus=self.vcpus
        )
        policy = self.policy.replace(report_data=self.nonce, allowed_measurements=allowed)
        checks = Checklist(f"live attestation ({self.firmware.name} firmware, {self.backend})")
        checks.extend(self.reference_checks)
        checks.add(
            "references.configuration",
            bool(allowed),
            expected=f"a reference for guest policy {report.policy.value:#x}, "
            f"{self.vcpus} vCPU(s), backend {self.backend}, {generation or 'any generation'}",
            found=f"{len(allowed)} matching launch digest(s) in release {self.references.release}",
            detail="development reference" if self.references.development else "",
        )
        checks.extend(
            verify_report(report, vcek, policy=policy, ask=ask, ark=ark, roots=self.roots)
        )
        return checks
