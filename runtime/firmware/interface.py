"""The SEV-SNP firmware as the VMM drives it: launch commands and the guest's report request.

The order of a launch is fixed: ``launch_start`` once, ``launch_update`` for every region in
LaunchPlan order, ``launch_vmsa`` for every vCPU (boot CPU first), ``launch_finish`` once; after
that only ``guest_request`` (the guest's sealed SNP guest message, as on real hardware) and
``guest_request_report`` (the plain-text path of the current microkernel's hypercall). An
implementation refuses any other order with an ``InputError``.

``launch_update`` receives the bytes that are really in guest memory and returns what the guest
page holds afterwards (the real PSP encrypts in place; the model zeroes ZERO pages and fills the
SECRETS page), and the VMM writes that back.

``measured_launch`` is that sequence, the one every backend runs: it feeds the firmware what a
``LaunchTarget`` really holds (a VM's memory and vCPU registers read back; with no VM, the plan's
own bytes and states), with the vCPU count as a launch argument, and returns the firmware's own
``measurement`` — the independent recomputation the launch is checked by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import VcpuState

if TYPE_CHECKING:
    from toolchain.measure.plan import LaunchPlan, Region
    from toolchain.snp.report import AttestationReport

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
    #: Its reports chain to the simulated root (trusted only under ``--dev``), not AMD's.
    simulated: bool
    #: The keep's report requests pass through this object (``guest_request``), so the runner
    #: can count them; False on SNP, where KVM serves them in the kernel.
    sees_report_requests: bool

    @property
    def measurement(self) -> bytes:
        """The launch digest the firmware computed (empty before LAUNCH_FINISH)."""
        ...

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

    def certificate_chain(self, report: AttestationReport | None = None) -> CertificateChain:
        """The certificates a verifier needs for this firmware's reports (for ``report``: a
        firmware without them says how to obtain the ones that report needs)."""
        ...


class LaunchTarget(Protocol):
    """Where a launch puts a plan: the guest's memory and vCPUs, as the firmware must see them."""

    def loaded(self, region: Region) -> bytes:
        """The bytes guest memory holds at ``region`` now (what LAUNCH_UPDATE measures)."""
        ...

    def place(self, region: Region, data: bytes) -> None:
        """Write back what the firmware left at ``region`` (zeroed, filled or encrypted)."""
        ...

    def vcpu_state(self, index: int, state: VcpuState) -> VcpuState:
        """Give vCPU ``index`` its initial ``state``; the state it really holds (read back)."""
        ...


class PlanOnly:
    """No VM (the ``nil`` backend): memory holds what the plan says and nothing is written back,
    so the firmware measures the plan's own bytes and vCPU states."""

    def loaded(self, region: Region) -> bytes:
        return region.data if region.data is not None else bytes(region.size)

    def place(self, region: Region, data: bytes) -> None:
        """Nothing to write back to: there is no guest memory."""

    def vcpu_state(self, index: int, state: VcpuState) -> VcpuState:
        return state


def measured_launch(  # noqa: PLR0917 - the launch's inputs, in the order the firmware takes them
    firmware: Firmware,
    plan: LaunchPlan,
    vcpus: int,
    target: LaunchTarget,
    id_block: bytes | None = None,
    host_data: bytes = bytes(HOST_DATA_SIZE),
) -> bytes:
    """LAUNCH_START, one LAUNCH_UPDATE per region, one VMSA per vCPU (boot CPU first),
    LAUNCH_FINISH; returns the firmware's launch digest (``Firmware.measurement``)."""
    firmware.launch_start(plan.guest_policy, sev_features=plan.sev_features)
    for region in plan.regions:
        loaded = target.loaded(region)
        placed = firmware.launch_update(region.page_type, region.gpa, loaded)
        if placed != loaded:
            target.place(region, placed)
    for index, state in enumerate(plan.vcpu_states(vcpus)):
        firmware.launch_vmsa(target.vcpu_state(index, state))
    firmware.launch_finish(id_block, host_data)
    return firmware.measurement
