"""The SEV-SNP firmware as the VMM drives it: launch commands and the guest's report request.

The order of a launch is fixed: ``launch_start`` once, ``launch_update`` for every region in
LaunchPlan order, ``launch_vmsa`` for every vCPU (boot CPU first), ``launch_finish`` once; after
that only ``guest_request`` (the guest's sealed SNP guest message, as on real hardware) and
``guest_request_report`` (the plain-text path of the current microkernel's hypercall). An
implementation refuses any other order with an ``InputError``.

``launch_update`` receives the bytes that are really in guest memory and returns what the guest
page holds afterwards (the real PSP encrypts in place; the model zeroes ZERO pages and fills the
SECRETS page), and the VMM writes that back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import VcpuState

HOST_DATA_SIZE = 32
ID_BLOCK_SIZE = 96


@dataclass(frozen=True)
class CertificateChain:
    """The chain that vouches for the report-signing key, as DER: ARK -> ASK -> VCEK."""

    ark: bytes
    ask: bytes
    vcek: bytes
    simulated: bool


@runtime_checkable
class Firmware(Protocol):
    """One guest context on an SNP firmware (real or simulated)."""

    #: "sim" or "snp": named in every run's output, with what it means for security.
    name: str

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        """SNP_LAUNCH_START with the GUEST_POLICY (and the VMSA's SEV_FEATURES)."""
        ...

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        """SNP_LAUNCH_UPDATE of ``data`` (a multiple of 4 KiB) at ``gpa``; returns the new bytes."""
        ...

    def launch_vmsa(self, state: VcpuState) -> None:
        """Measure one vCPU's VMSA (as KVM does at LAUNCH_FINISH), boot CPU first."""
        ...

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        """SNP_LAUNCH_FINISH: seal the launch digest (checked against the ID block if given)."""
        ...

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        """MSG_REPORT_REQ: a signed 0x4A0-byte ATTESTATION_REPORT binding ``report_data``."""
        ...

    def guest_request(self, message: bytes) -> bytes:
        """SNP_GUEST_REQUEST: a sealed guest message page in, the sealed response page out.

        Layout and checks: ``toolchain.snp.guest_msg``. A refused message raises; after a
        failure on a VMPCK the firmware answers nothing more on it.
        """
        ...

    def certificate_chain(self) -> CertificateChain:
        """The certificates a verifier needs for this firmware's reports."""
        ...
