"""The runner's verdict on a live attestation report.

``LiveAttestation`` is the callback the VMM (``kvm`` backend) or the ``nil`` backend calls with
the keep's ATTESTATION_REPORT. It verifies the report against the firmware's certificate chain,
the trusted roots (AMD's only, unless the simulated root was explicitly trusted), the runner's
fresh nonce, the verification policy and the signed reference measurements, and raises
``EvidenceError`` naming the first failed check — so the application never starts on a report
that does not check out.

The backend (the VMM for ``kvm``) is untrusted, so the runner does not take its word that the keep
attested: it hands the backend its own firmware wrapped in ``WitnessedFirmware``, which counts the
report requests the firmware really served, and after the run ``LiveAttestation.verdict`` decides
from what the runner itself saw — one report requested, produced, accepted by this verifier. A keep
that fails any step ends the run as a failure whatever exit status it asked for, on every backend.

What the runner can witness depends on the platform (``Firmware.sees_report_requests``):

* simulated firmware (``kvm``, ``nil``): the report requests pass through the runner's firmware,
  which counts each one and each report it produced;
* SEV-SNP (``snp``): the keep's request is a sealed guest message that KVM serves in the kernel,
  so the runner never sees it. It witnesses instead the reports the keep hands over (ATTEST):
  *requested* is a report handed over, *produced* is that report's signature verifying under
  the VCEK chained to AMD's pinned ARK (only the AMD-SP holds that key), *once* is exactly one
  report handed over. Zero reports, or two, fail the run as on every other platform.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolchain.checks import Checklist
from toolchain.errors import EvidenceError, KeepError, PlatformError
from toolchain.measure.abi import REPORT_DATA_SIZE

if TYPE_CHECKING:
    from runtime.firmware.interface import CertificateChain, Firmware
    from toolchain.sign.references import VerifiedReferences
    from toolchain.snp.digest import PageType
    from toolchain.snp.report import AttestationReport
    from toolchain.snp.vmsa import VcpuState
    from toolchain.verify import VerificationPolicy, Verifier

NONCE_SIZE = REPORT_DATA_SIZE  # the nonce is the REPORT_DATA the keep attests


#: What the verdict's lines say, by whether the runner's firmware sees the report requests:
#: (what was witnessed, requested, not requested, produced, once, what "once" counts).
_SEEN = {
    True: (
        "the report requests the runner's firmware served",
        "the keep requests its attestation report before it runs anything",
        "no request",
        "the firmware produces a report bound to this run's nonce",
        "exactly one report request per run",
        "report requests",
    ),
    False: (
        "the reports the keep handed over (ATTEST), checked against the AMD-SP's VCEK chain",
        "the keep hands over its attestation report (ATTEST) before it runs anything",
        "no report handed over",
        "the report is signed by the AMD-SP (its VCEK, chained to AMD's pinned ARK)",
        "exactly one report handed over per run",
        "reports handed over",
    ),
}


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
    #: The run's verifier: AMD's pinned roots, plus the simulated one only under ``--dev``.
    verifier: Verifier
    policy: VerificationPolicy
    backend: str
    vcpus: int
    checklist: Checklist | None = None
    #: The REPORT_DATA the report must carry: the nonce, or SHA-512(nonce || tree digests) when
    #: directories are preopened (``toolchain.measure.trees.bind_report_data``). None: the nonce.
    report_data: bytes | None = None
    #: (guest path, SHA-512 digest) of each preopened tree, in the order they are bound.
    trees: list[tuple[str, bytes]] = field(default_factory=list)
    #: Per tree, whether it is ``:rw`` (bound too when one is: ``bind_report_data``).
    rw: list[bool] = field(default_factory=list)
    report: bytes | None = None
    calls: int = field(default=0)
    #: True once a report passed every check (the only way the application may start).
    accepted: bool = field(default=False)
    #: The chain the report was checked against (for the evidence file), once obtained.
    chain: CertificateChain | None = None
    #: The error the verifier refused the report with (the run ends with it).
    error: KeepError | None = None
    witness: WitnessedFirmware = field(init=False)

    def __post_init__(self) -> None:
        self.witness = WitnessedFirmware(self.firmware)

    @property
    def expected_report_data(self) -> bytes:
        return self.nonce if self.report_data is None else self.report_data

    def __call__(self, report_bytes: bytes) -> bool:
        self.calls += 1
        if self.calls > 1:
            # One report per run, before anything else: a second request could only be a replay
            # attempt. The first report and its checklist stay as the run's evidence.
            raise EvidenceError(
                "the keep asked for a second attestation report in one run",
                field="attestation.once",
                expected="one report request per run",
                found=f"request number {self.calls}",
            )
        self.report = bytes(report_bytes)
        try:
            self.checklist = self._verify(report_bytes)
        except KeepError as exc:
            self.checklist = Checklist("live attestation")
            self.checklist.add("report.usable", False, expected="a verifiable report", found=exc)
            # The host lacks what the check needs (the chip's VCEK): that error says how to fix it.
            self.error = (
                exc
                if isinstance(exc, PlatformError)
                else EvidenceError(f"the keep's attestation report is unusable: {exc}")
            )
            raise self.error from exc
        failures = self.checklist.failures
        if failures or not self.checklist.ok:
            first = failures[0] if failures else None
            raise EvidenceError(
                "the keep's attestation report does not verify; the application was not started",
                field=first.name if first else "checklist",
                expected=first.expected if first else "at least one passing check",
                found=first.found if first else "none",
            )
        self.accepted = True
        return True

    @property
    def witnessed(self) -> tuple[int, int, str | None]:
        """(reports requested, reports produced, why none was) as the runner itself saw them.

        Through its firmware where the requests pass it; on SNP from the reports handed over,
        one counting as produced only when its signature verified under the AMD chain.
        """
        if self.witness.sees_report_requests:
            return self.witness.requested, self.witness.produced, self.witness.failure
        checks = self.checklist.checks if self.checklist is not None else []
        signed = [c for c in checks if c.name == "report.signature" or ".signed-by-" in c.name]
        if any(c.name == "report.signature" for c in signed) and all(c.ok for c in signed):
            return self.calls, 1, None
        # Name the signing check that failed, else what kept the chain from being checked.
        unsigned = next((c for c in [*signed, *checks] if c.ok is False), None)
        why = f"{unsigned.name}: {unsigned.found}" if unsigned is not None else None
        return self.calls, 0, why

    def verdict(self, ended: str) -> Checklist:
        """The runner's verdict on the whole run: did this keep attest, once, before it ran?

        Decided from the runner's own observations (its firmware's counters, this verifier's
        state), never from what the backend reports. ``ended`` says how the keep ended, for the
        line that names the missing step. The first missing step is ✗, later ones not reached.
        """
        requested, produced, failure = self.witnessed
        if self.calls and not self.accepted:
            failures = self.checklist.failures if self.checklist else []
            first = failures[0] if failures else None
            rejected = f"it failed {first.name}" if first else "it did not verify"
        else:
            rejected = "the report never reached the runner's verifier"
        seen = _SEEN[self.witness.sees_report_requests]
        steps = [
            ("attestation.requested", requested > 0, seen[1], f"{seen[2]}: {ended}"),
            ("attestation.produced", produced > 0, seen[3], f"no report: {failure or ended}"),
            (
                "attestation.verified",
                self.accepted,
                "the runner's verifier accepts the report",
                rejected,
            ),
            (
                "attestation.once",
                requested == 1 and self.calls == 1,
                seen[4],
                f"{requested} {seen[5]}, {self.calls} given to the verifier",
            ),
        ]
        checks = Checklist(
            f"attestation of this run ({self.backend}, the runner's verdict; witnessed: {seen[0]})"
        )
        missing = False
        for name, ok, expected, found in steps:
            if missing:
                checks.add(name, None, detail="not reached")
            elif ok:
                checks.add(name, True)
            else:
                checks.add(name, False, expected=expected, found=found)
                missing = True
        return checks

    def _verify(self, report_bytes: bytes) -> Checklist:
        from toolchain.snp.certs import load_certificate
        from toolchain.snp.report import AttestationReport
        from toolchain.verify import References

        report = AttestationReport.parse(report_bytes)
        chain = self.chain = self.firmware.certificate_chain(report)
        # The references verified before boot; only configurations for this launch count.
        references = References(
            self.reference_checks, self.references, backend=self.backend, vcpus=self.vcpus
        )
        checks = Checklist(f"live attestation ({self.firmware.name} firmware, {self.backend})")
        checks.extend(
            self.verifier.verify(
                report,
                load_certificate(chain.vcek),
                policy=self.policy.replace(report_data=self.expected_report_data),
                references=references,
                ask=load_certificate(chain.ask),
                ark=load_certificate(chain.ark),
            )
        )
        return checks


class WitnessedFirmware:
    """The runner's firmware as a backend gets it: it counts the report requests it serves.

    Every launch command goes straight through; ``guest_request_report`` is counted before and
    after the firmware answers, so the runner knows — without asking the untrusted VMM — whether
    the keep asked for a report and whether one was produced.
    """

    def __init__(self, inner: Firmware) -> None:
        self.inner = inner
        self.name = inner.name
        self.simulated = inner.simulated
        self.sees_report_requests = inner.sees_report_requests
        self.requested = 0
        self.produced = 0
        self.failure: str | None = None

    @property
    def measurement(self) -> bytes:
        return self.inner.measurement

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        self.inner.launch_start(policy, sev_features=sev_features)

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        return self.inner.launch_update(page_type, gpa, data)

    def launch_vmsa(self, state: VcpuState) -> None:
        self.inner.launch_vmsa(state)

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        self.inner.launch_finish(id_block, host_data)

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        self.requested += 1
        try:
            report = self.inner.guest_request_report(report_data, vmpl)
        except KeepError as exc:
            self.failure = f"the firmware failed: {exc.message}"
            raise
        self.produced += 1
        return report

    def guest_request(self, message: bytes) -> bytes:
        """An SNP guest message (sealed under VMPCK0): counted like a plain report request. The
        runner cannot read the sealed answer; whether it held a good report is the verification
        step's to say, which every run needs anyway."""
        self.requested += 1
        try:
            response = self.inner.guest_request(message)
        except KeepError as exc:
            self.failure = f"the firmware failed: {exc.message}"
            raise
        self.produced += 1
        return response

    def certificate_chain(self, report: AttestationReport | None = None) -> CertificateChain:
        return self.inner.certificate_chain(report)
