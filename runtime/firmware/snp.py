"""The real SEV-SNP firmware (the AMD-SP) as the ``snp`` backend's ``Firmware``: reached via KVM.

On an SNP host the VMM never speaks to the firmware itself:

* the launch commands are KVM's: ``runtime.vmm.snp_launch.SnpLaunch`` drives them through
  ``KVM_MEMORY_ENCRYPT_OP`` (``KVM_SEV_SNP_LAUNCH_START`` / ``_UPDATE`` / ``_FINISH``), measures
  the bytes it hands over itself, and KVM (not the VMM) builds and measures the VMSAs at
  LAUNCH_FINISH — so ``measured_launch`` (the simulated firmware's sequence) never runs here,
  and every ``launch_*`` method refuses;
* the firmware's MEASUREMENT exists only inside its signed report: ``measurement`` is empty;
* the report is the guest's to obtain: an SNP guest message sealed under VMPCK0, sent through
  the GHCB (``SNP_GUEST_REQUEST``) and served by KVM in the kernel (Linux 6.12
  ``snp_handle_guest_req``, ``arch/x86/kvm/svm/sev.c``). A VMM cannot ask the AMD-SP for a
  guest's report, so ``guest_request_report`` (the current microkernel's plain-text hypercall)
  refuses, and so does ``guest_request`` (no host interface relays a sealed message);
* the report is verified against AMD's pinned roots only: this chain is never ``simulated``, so
  ``--dev`` never adds the simulated root for it. The chip's VCEK (and its ASK/ARK) for the
  reported TCB is not obtained yet — it comes from the extended guest request's certificate
  table or AMD's KDS — so ``certificate_chain`` refuses, naming that.

Every refusal is a ``PlatformError`` saying what is missing; nothing here ever answers with a
value that a verifier could mistake for the firmware's.
"""

from __future__ import annotations

from runtime.firmware.interface import CertificateChain
from toolchain.errors import PlatformError
from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import VcpuState

_LAUNCH_IS_KVMS = (
    "on SEV-SNP, KVM issues the launch commands (runtime/vmm/snp_launch.py, SnpLaunch) and "
    "the VMM measures what it hands over; the firmware is not driven directly"
)
#: What the keep still lacks to obtain its report on SNP (the guest side, issue 13 §2).
GUEST_PATH_MISSING = (
    "on SEV-SNP only the keep can obtain its report, as an SNP guest message sealed under "
    "VMPCK0 and sent through the GHCB (KVM serves SNP_GUEST_REQUEST in the kernel); the "
    "microkernel does not do that yet — it registers no GHCB, handles no #VC and asks the VMM "
    "for its report through the plain-text hypercall, which no VMM can answer on SNP"
)
VCEK_MISSING = (
    "the report-signing VCEK of this chip and TCB (with its ASK and ARK) is not obtained yet: "
    "it comes with the extended guest request's certificate table or from AMD's KDS, and must "
    "chain to AMD's pinned roots"
)


class SnpFirmware:
    """The real AMD-SP, as the runner holds it for backend ``snp``: it answers nothing itself."""

    name = "snp"

    @property
    def measurement(self) -> bytes:
        """Empty: the real MEASUREMENT is only in the signed report (equal to no 48-byte digest)."""
        return b""

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        raise PlatformError(f"SNP_LAUNCH_START: {_LAUNCH_IS_KVMS}")

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        raise PlatformError(f"SNP_LAUNCH_UPDATE: {_LAUNCH_IS_KVMS}")

    def launch_vmsa(self, state: VcpuState) -> None:
        raise PlatformError(f"the VMSA: {_LAUNCH_IS_KVMS} (KVM builds the VMSAs)")

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        raise PlatformError(f"SNP_LAUNCH_FINISH: {_LAUNCH_IS_KVMS}")

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        raise PlatformError(GUEST_PATH_MISSING)

    def guest_request(self, message: bytes) -> bytes:
        raise PlatformError(
            "a VMM cannot relay an SNP guest message to the real firmware: the keep sends it "
            "through the GHCB and KVM serves it in the kernel"
        )

    def certificate_chain(self) -> CertificateChain:
        raise PlatformError(VCEK_MISSING, hint="keep platform lists the SEV-SNP facts")
