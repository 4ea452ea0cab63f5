"""PLACEHOLDER for the runner — the real SEV-SNP PSP as a ``Firmware``. NOT WIRED IN YET.

The host side of the ``snp`` backend exists: ``runtime.vmm.snp_launch.SnpLaunch`` drives the
launch on Linux's KVM SNP API (``KVM_X86_SNP_VM``, ``KVM_SEV_INIT2``, guest_memfd-backed private
memory, ``KVM_SEV_SNP_LAUNCH_START`` / ``_UPDATE`` / ``_FINISH``) and measures the bytes it hands
over; ``runtime.vmm.snp_launch.SnpExits`` serves the guest's page-state changes. It does not fit
this interface: on SNP the VMM never holds the guest's memory after LAUNCH_UPDATE, KVM (not the
VMM) builds and measures the VMSAs at LAUNCH_FINISH, and the report is requested by the guest
itself through VMPCK-encrypted SNP guest messages the VMM only relays. It joins ``keep run`` as
a ``runtime.run.backends.Backend`` (added to ``BACKENDS``), not through the runner. Until then
every use raises ``PlatformError`` saying so — and, for this host, what it lacks for SNP
(``keep platform``).
"""

from __future__ import annotations

from runtime.firmware.interface import CertificateChain
from toolchain.errors import KeepError, PlatformError
from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import VcpuState

_NOT_IMPLEMENTED = (
    "the real SEV-SNP firmware backend is not implemented in keep run yet "
    "(its host side is runtime/vmm/snp_launch.py; tests/hardware/ runs it on an SNP host); "
    "use the simulated firmware (kvm or nil backend)"
)


def _unavailable() -> PlatformError:
    """The placeholder's error, with what this host lacks for SNP (``keep platform``'s facts)."""
    from runtime.vmm.platform import probe

    try:
        missing = probe(timing=False).snp_missing()
    except (KeepError, OSError) as exc:  # the probe only decorates the message
        missing = [f"the host probe failed: {exc}"]
    host = "; this host lacks: " + "; ".join(missing) if missing else "; this host has SNP"
    return PlatformError(_NOT_IMPLEMENTED + host, hint="keep platform lists the SEV-SNP facts")


class SnpFirmware:
    """The real PSP. Not implemented: every method raises ``PlatformError``."""

    name = "snp"

    def __init__(self) -> None:
        raise _unavailable()

    @property
    def measurement(self) -> bytes:
        raise _unavailable()

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        raise _unavailable()

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        raise _unavailable()

    def launch_vmsa(self, state: VcpuState) -> None:
        raise _unavailable()

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        raise _unavailable()

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        raise _unavailable()

    def guest_request(self, message: bytes) -> bytes:
        raise PlatformError(_NOT_IMPLEMENTED)

    def certificate_chain(self) -> CertificateChain:
        raise _unavailable()
