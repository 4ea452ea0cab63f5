"""Boot one keep from its LaunchPlan on KVM, attest it through the firmware, and run it.

``run_keep`` is the whole life of a keep: create the VM, copy the plan's NORMAL regions into
guest RAM, then drive the firmware — LAUNCH_START, one LAUNCH_UPDATE per region with the bytes
*read back from guest memory*, one VMSA per vCPU from the register state *read back from KVM*,
LAUNCH_FINISH — run the boot vCPU, serve its hypercalls, and release every fd and mapping
whatever happens. The firmware therefore measures what was really loaded; a plan that claims
one thing and loads another shows up as a different launch digest.

Guest misbehaviour (bad hypercall, fault, flood, timeout) and a report the runner refuses end
the keep and come back in ``KeepResult.error``; a broken host raises ``PlatformError``; an
unusable plan raises ``InputError``. Only the boot vCPU runs: application processors are
created, given their initial state and measured, and stay parked (the keep is single-threaded).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from runtime.firmware.interface import Firmware, measured_launch
from runtime.vmm.doorbell import DoorbellHandler
from runtime.vmm.errors import GuestError
from runtime.vmm.ghcb import GhcbServer
from runtime.vmm.hypercalls import DEFAULT_OUTPUT_LIMIT, HypercallServer, ReportVerifier
from runtime.vmm.memory import PAGE_SIZE, RamRange
from runtime.vmm.rmp import Rmp
from runtime.vmm.vcpu import Watchdog, read_vcpu_state, write_vcpu_state
from runtime.vmm.vm import Vm
from toolchain.errors import EvidenceError, InputError, KeepError
from toolchain.measure.abi import ABI_VERSIONS, GHCB_GPA, GUEST_MESSAGE_VERSION, REPORT_DATA_SIZE

if TYPE_CHECKING:
    from toolchain.measure.plan import LaunchPlan, Region
    from toolchain.snp.vmsa import VcpuState

DEFAULT_TIMEOUT = 60.0


@dataclass
class KeepResult:
    """How a keep ended, and the figures of its run."""

    exit_status: int | None  # the guest's EXIT status; None when it was stopped
    error: KeepError | None  # why it was stopped (GuestError, EvidenceError for a refused report)
    measurement: bytes  # the launch digest the firmware computed
    report: bytes | None  # the ATTESTATION_REPORT the keep obtained, if any
    #: Whether the runner's verifier accepted a report from this keep (only then did it run).
    attested: bool = False
    output_bytes: int = 0
    #: Milliseconds from KVM_CREATE_VM to: the report request, the first console output, the end.
    to_attest_ms: float | None = None
    to_first_output_ms: float | None = None
    total_ms: float = 0.0
    exits: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    #: The ``:rw`` trees the keep handed back at exit (RESULT), checked; None without.
    result: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_status is not None


def _ms(start: float, stamp: float | None) -> float | None:
    return None if stamp is None else (stamp - start) * 1e3


class Keep:
    """One keep: ``launch()`` builds and measures the VM, ``run()`` runs it, ``close()`` ends it."""

    def __init__(self, plan: LaunchPlan, *, firmware: Firmware) -> None:
        self.plan = plan
        self.firmware = firmware
        self.layout = plan.abi.hypercalls
        self._check_layout()
        self.vm: Vm | None = None
        self.measurement = b""

    def _check_layout(self) -> None:
        plan, layout = self.plan, self.layout
        if plan.abi.abi_version not in ABI_VERSIONS:
            raise InputError(
                f"the plan speaks hypercall ABI {plan.abi.abi_version}; this VMM: "
                f"{', '.join(map(str, ABI_VERSIONS))}"
            )
        spans = {
            "hypercall page": (layout.page, PAGE_SIZE),
            "hypercall buffer": (layout.buffer, layout.buffer_size),
        }
        doorbell = plan.abi.doorbell
        if doorbell % PAGE_SIZE or doorbell >= plan.ram_size:
            raise InputError(f"doorbell {doorbell:#x} is not a page inside guest RAM")
        for name, (gpa, size) in spans.items():
            if gpa % PAGE_SIZE or size <= 0 or gpa + size > plan.ram_size:
                raise InputError(f"{name} {gpa:#x}+{size:#x} is not page aligned inside RAM")
            if gpa <= doorbell < gpa + size:
                raise InputError(f"{name} {gpa:#x}+{size:#x} covers the doorbell")
            for region in plan.regions:
                if gpa < region.end and region.gpa < gpa + size:
                    raise InputError(
                        f"{name} {gpa:#x}+{size:#x} overlaps launched region {region.label!r}: "
                        "shared pages are never part of the launch"
                    )

    def launch(
        self, *, vcpus: int = 1, id_block: bytes | None = None, host_data: bytes = bytes(32)
    ) -> bytes:
        """Create the VM with ``vcpus`` vCPUs, load and measure the plan; returns the firmware's
        launch digest (of the bytes and registers read back: ``measured_launch``)."""
        plan = self.plan
        states = plan.vcpu_states(vcpus)  # the count is checked before anything is created
        self.vm = vm = Vm(
            [RamRange(gpa, size) for gpa, size in plan.memory_ranges()], vcpu_count=len(states)
        )
        for region in plan.regions:
            if region.data is not None:
                vm.ram.write(region.gpa, region.data)
        self.measurement = measured_launch(
            self.firmware, plan, vcpus, _VmTarget(vm), id_block, host_data
        )
        return self.measurement

    def run(
        self,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        report_data: bytes = bytes(REPORT_DATA_SIZE),
        on_report: ReportVerifier | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        require_attestation: bool = True,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        trees: bytes = b"",
        rw: Sequence[bool] = (),
    ) -> KeepResult:
        """Run the boot vCPU until the keep exits or is stopped."""
        if self.vm is None:
            raise InputError("launch() the keep before running it")
        if not timeout > 0:
            raise InputError(f"timeout must be positive, not {timeout!r}")
        vm = self.vm
        env_pairs = list(env.items()) if isinstance(env, Mapping) else list(env)
        server = HypercallServer(
            vm.ram,
            self.layout,
            stdout=stdout if stdout is not None else sys.stdout.buffer,
            stderr=stderr if stderr is not None else sys.stderr.buffer,
            stdin=stdin,
            args=args,
            env=env_pairs,
            report_data=report_data,
            request_report=self.firmware.guest_request_report,
            verify_report=on_report,
            require_attestation=require_attestation,
            output_limit=output_limit,
            abi_version=self.plan.abi.abi_version,
            trees=trees,
            rw=rw,
        )
        ghcb = self._ghcb_server(server.serve)
        boot = vm.vcpus[0]
        exit_status: int | None = None
        error: KeepError | None = None
        watchdog = Watchdog(timeout, boot.run_struct)
        try:
            exit_status = boot.run(
                doorbell_gpa=self.plan.abi.doorbell,
                on_doorbell=server.serve,
                watchdog=watchdog,
                on_vmgexit=ghcb.serve if ghcb is not None else None,
                ghcb_msr=ghcb,
            )
        except (GuestError, EvidenceError) as exc:
            error = exc
            if ghcb is not None and ghcb.failure is not None:
                # The guest stopped on the firmware's refusal: the firmware says why.
                error = GuestError(f"{exc.message}; the firmware refused: {ghcb.failure}")
        except InputError as exc:
            # Raised while serving the guest (e.g. a malformed report from a broken firmware
            # model): this keep cannot go on, the VMM can.
            error = GuestError(f"while serving the keep: {exc.message}")
        finally:
            watchdog.stop()
        end = time.perf_counter()
        stats = server.stats
        return KeepResult(
            exit_status=exit_status,
            error=error,
            measurement=self.measurement,
            report=stats.report,
            attested=stats.attested_at is not None,
            output_bytes=stats.output_bytes,
            to_attest_ms=_ms(vm.created_at, stats.attested_at),
            to_first_output_ms=_ms(vm.created_at, stats.first_output_at),
            total_ms=(end - vm.created_at) * 1e3,
            exits=dict(boot.exit_counts),
            calls=dict(stats.calls),
            result=stats.result if exit_status is not None else None,
        )

    def _ghcb_server(self, on_doorbell: DoorbellHandler) -> GhcbServer | None:
        """ABI 4: the GHCB's guest requests go to the firmware (the simulated VMGEXIT), its
        doorbell MMIO requests to ``on_doorbell``, as plain doorbell writes do."""
        if self.vm is None or self.plan.abi.abi_version < GUEST_MESSAGE_VERSION:
            return None
        layout = self.layout
        return GhcbServer(
            self.vm.ram,
            ghcb=GHCB_GPA,
            shared=(layout.buffer, layout.buffer + layout.buffer_size),
            guest_request=self.firmware.guest_request,
            hc_page=layout.page,
            doorbell=self.plan.abi.doorbell,
            on_doorbell=on_doorbell,
            # The launch made exactly the plan's regions private and validated.
            rmp=Rmp(self.plan.ram_size, [(r.gpa, r.size) for r in self.plan.regions]),
        )

    def close(self) -> None:
        if self.vm is not None:
            self.vm.close()
            self.vm = None

    def __enter__(self) -> Keep:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _VmTarget:
    """The VM as the launch sees it: its RAM and its vCPUs' registers, read back from KVM."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    def loaded(self, region: Region) -> bytes:
        return self.vm.ram.read(region.gpa, region.size)

    def place(self, region: Region, data: bytes) -> None:
        self.vm.ram.write(region.gpa, data)

    def vcpu_state(self, index: int, state: VcpuState) -> VcpuState:
        vcpu = self.vm.vcpus[index]
        write_vcpu_state(vcpu, state)
        return read_vcpu_state(vcpu)


def run_keep(
    plan: LaunchPlan,
    *,
    firmware: Firmware,
    vcpus: int = 1,
    args: Sequence[str] = (),
    env: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    timeout: float = DEFAULT_TIMEOUT,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    on_report: ReportVerifier | None = None,
    report_data: bytes = bytes(REPORT_DATA_SIZE),
    host_data: bytes = bytes(32),
    id_block: bytes | None = None,
    require_attestation: bool = True,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    trees: bytes = b"",
    rw: Sequence[bool] = (),
) -> KeepResult:
    """Launch ``plan`` on KVM with ``firmware`` and ``vcpus`` vCPUs and run it to the end; see
    the module docstring.

    ``trees`` is the preopened trees' transfer blob (``toolchain.measure.trees.transfer_blob``),
    served by the TREES call after attestation; ``report_data`` must then bind their digests.
    ``rw`` says per tree whether the keep may hand it back at exit (``KeepResult.result``).

    ``on_report`` is the runner's verifier: it gets the keep's ATTESTATION_REPORT (bound to
    ``report_data``, the runner's nonce) and accepts it by returning, refuses it by raising
    (``EvidenceError``) or returning False — then the keep is stopped before ring 3 and the
    error is in the result. Without ``on_report`` an attesting keep is always refused.

    The vCPU runs in the calling thread. The watchdog interrupts it with a signal whose handler
    is installed on first use: run the first keep from the main thread, or call
    ``runtime.vmm.vcpu.install_kick_signal()`` there beforehand. A blocking read of ``stdin``
    is not interrupted by the watchdog.
    """
    with Keep(plan, firmware=firmware) as keep:
        keep.launch(vcpus=vcpus, id_block=id_block, host_data=host_data)
        return keep.run(
            args=args,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            report_data=report_data,
            on_report=on_report,
            timeout=timeout,
            require_attestation=require_attestation,
            output_limit=output_limit,
            trees=trees,
            rw=rw,
        )
