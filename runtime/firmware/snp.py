"""PLACEHOLDER — the real SEV-SNP PSP through Linux's KVM SEV-SNP interface. NOT IMPLEMENTED.

This is where the ``snp`` backend will drive the AMD secure processor: ``KVM_SEV_INIT2`` with
``KVM_X86_SNP_VM``, ``KVM_SEV_SNP_LAUNCH_START`` / ``_LAUNCH_UPDATE`` / ``_LAUNCH_FINISH`` on the
VM fd (``KVM_MEMORY_ENCRYPT_OP``, guest_memfd-backed private memory), and reports requested by the
guest itself through its VMPCK-encrypted SNP guest messages, with certificates from the host's
``SNP_GET_EXT_CONFIG``/KDS. Until then every use raises ``PlatformError`` saying so.
"""

from __future__ import annotations

from runtime.firmware.interface import CertificateChain
from toolchain.errors import PlatformError
from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import VcpuState

_NOT_IMPLEMENTED = (
    "the real SEV-SNP firmware backend (Linux KVM SEV-SNP) is not implemented yet; "
    "use the simulated firmware (kvm or nil backend)"
)


class SnpFirmware:
    """The real PSP. Not implemented: every method raises ``PlatformError``."""

    name = "snp"

    def __init__(self) -> None:
        raise PlatformError(_NOT_IMPLEMENTED)

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        raise PlatformError(_NOT_IMPLEMENTED)

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        raise PlatformError(_NOT_IMPLEMENTED)

    def launch_vmsa(self, state: VcpuState) -> None:
        raise PlatformError(_NOT_IMPLEMENTED)

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        raise PlatformError(_NOT_IMPLEMENTED)

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        raise PlatformError(_NOT_IMPLEMENTED)

    def guest_request(self, message: bytes) -> bytes:
        raise PlatformError(_NOT_IMPLEMENTED)

    def certificate_chain(self) -> CertificateChain:
        raise PlatformError(_NOT_IMPLEMENTED)
