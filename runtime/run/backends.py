"""The backends ``keep run`` boots a keep on: one type, one launch sequence, chosen by name.

A ``Backend`` says whether it can run on this host, what it attests with (its ``Firmware``),
what it does not protect (said before every run and in ``--quiet``'s verdict), and runs one
``Launch``: the build (with its parsed plan), the vCPU count — a launch argument, never the
plan's — and what the runner verifies with. Every backend launches through
``runtime.firmware.interface.measured_launch``, so the firmware measures what the backend really
loaded; the runner never asks which backend it holds.

* ``kvm`` — the keep in its own VM on /dev/kvm (``runtime.vmm.keep.run_keep``), the simulated
  SNP firmware measuring the bytes and registers read back from the VM;
* ``nil`` — no VM: the simulated firmware measures the plan itself (``PlanOnly``) and the
  application runs in wasmtime in this process (``runtime.run.nil``), with NO isolation;
* ``snp`` — the keep in an SEV-SNP VM on Linux's KVM SNP API: the build's ``snp`` twin plan
  (``snp_plan_of``) launched by ``runtime.vmm.snp_launch.SnpLaunch``, which measures the bytes it
  hands to LAUNCH_UPDATE and refuses a launch that does not give the plan's ``snp`` digest; the
  firmware is the real AMD-SP (``runtime.firmware.snp``), whose report the keep obtains itself
  and which is verified against AMD's roots only. It is never a default: only ``--backend snp``
  picks it, and where the host lacks SNP it fails with ``keep platform``'s reasons.

A new backend implements ``Backend`` and is added to ``BACKENDS``; the runner does not change.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from toolchain.errors import InputError, KeepError, PlatformError

if TYPE_CHECKING:
    from pathlib import Path

    from runtime.firmware.interface import Firmware
    from runtime.vmm.snp_cpuid import HostCpu
    from runtime.vmm.snp_launch import SnpLaunch, SnpSystem, VcpuSetup
    from toolchain.image.keep_build import KeepBuild
    from toolchain.measure.plan import LaunchPlan


@dataclass(frozen=True)
class Launch:
    """One keep to launch and run, as the runner hands it to a backend."""

    build: KeepBuild
    vcpus: int
    #: The runner's (witnessed) firmware: every launch command and report request goes through it.
    firmware: Firmware
    argv: Sequence[str]
    env: Sequence[tuple[str, str]]
    timeout: float
    #: The runner's verifier: accepts the keep's report or raises ``EvidenceError``.
    verified: Callable[[bytes], bool]
    report_data: bytes
    #: The preopened trees' transfer blob (``toolchain.measure.trees.transfer_blob``).
    trees: bytes
    #: Per tree, whether the keep may hand it back at exit (``--dir ...:rw``).
    rw: Sequence[bool] = ()


@dataclass
class Ended:
    """How a launched keep ended: its exit status (None when stopped), the firmware's launch
    digest, why it was stopped (a guest's or the verifier's error), and timings in ms."""

    exit_status: int | None
    measurement: bytes
    error: KeepError | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The ``:rw`` trees the keep handed back at the application's exit (a result blob,
    #: ``toolchain.measure.trees.result_blob``), or None.
    result: bytes | None = None


class Backend(Protocol):
    """A way to launch and run a keep."""

    #: The name users pass to ``--backend`` and references list (``LaunchConfig.backend``).
    name: str
    #: What it does not protect, for ``--quiet``'s verdict line.
    isolation: str

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this host, or None."""
        ...

    def firmware(self, vcek: Path | None = None) -> Firmware:
        """A fresh firmware context to attest one keep with; ``vcek`` is the operator's VCEK
        file for a real firmware (the runner passes one only to ``snp``)."""
        ...

    def statement(self, firmware: Firmware) -> str:
        """What a run on this backend proves and does not (said before every run)."""
        ...

    def run(self, launch: Launch) -> Ended:
        """Launch ``launch.build.plan`` with ``launch.vcpus`` vCPUs and run it to the end."""
        ...


class KvmBackend:
    """The keep in its own VM on /dev/kvm, attested by the simulated SNP firmware."""

    name = "kvm"
    isolation = "no memory encryption"

    def unavailable(self) -> str | None:
        from runtime.vmm.platform import kvm_unavailable_reason

        return kvm_unavailable_reason()

    def firmware(self, vcek: Path | None = None) -> Firmware:
        from runtime.firmware.sim import SimFirmware

        return SimFirmware()

    def statement(self, firmware: Firmware) -> str:
        return (
            "keep: backend kvm: the keep runs in its own VM on /dev/kvm; "
            f"firmware {firmware.name}: a software model of the SNP PSP — no memory encryption, "
            "the host can read and change the keep; the report proves only what the host could "
            "forge"
        )

    def run(self, launch: Launch) -> Ended:
        from runtime.vmm.keep import run_keep

        sys.stdout.flush()
        result = run_keep(
            launch.build.plan,
            firmware=launch.firmware,
            vcpus=launch.vcpus,
            args=launch.argv,
            env=list(launch.env),
            timeout=launch.timeout,
            stdin=sys.stdin.buffer if sys.stdin is not None else None,
            stdout=sys.stdout.buffer,
            stderr=sys.stderr.buffer,
            on_report=launch.verified,
            report_data=launch.report_data,
            trees=launch.trees,
            rw=launch.rw,
        )
        ended = Ended(result.exit_status, result.measurement, result.error, result=result.result)
        if result.to_first_output_ms is not None:
            ended.timings_ms["create_vm_to_first_output"] = result.to_first_output_ms
        return ended


class NilBackend:
    """No VM: the simulated firmware measures the plan, wasmtime runs the application here."""

    name = "nil"
    isolation = "NO isolation"

    def unavailable(self) -> str | None:
        return None

    def firmware(self, vcek: Path | None = None) -> Firmware:
        from runtime.firmware.sim import SimFirmware

        return SimFirmware()

    def statement(self, firmware: Firmware) -> str:
        from runtime.run.nil import NIL_WARNING

        return f"keep: {NIL_WARNING}"

    def run(self, launch: Launch) -> Ended:
        from runtime.firmware.interface import PlanOnly, measured_launch
        from runtime.run.nil import run_wasi

        plan = launch.build.plan
        measurement = measured_launch(launch.firmware, plan, launch.vcpus, PlanOnly())
        report = launch.firmware.guest_request_report(launch.report_data, 0)
        launch.verified(report)  # raises EvidenceError before the application starts
        handed_back: list[bytes] = []
        status = run_wasi(
            launch.build.artifacts["app.wasm"],
            argv=list(launch.argv),
            env=list(launch.env),
            memory_limit=plan.abi.heap_end - plan.abi.heap_start,
            timeout=launch.timeout,
            trees=launch.trees,
            attested=launch.report_data,
            on_result=handed_back.append,
        )
        return Ended(status, measurement, result=handed_back[0] if handed_back else None)


class SnpBackend:
    """The keep in an SEV-SNP VM on Linux's KVM SNP API, attested by the real AMD-SP.

    ``system``, ``vcpu_setup`` and ``run_vcpus`` are the real ones unless a test passes the fake
    KVM (``runtime.vmm.fake_kvm_snp``) and its vCPUs.

    The launch: the snp plan, its pages PRIVATE, the CPUID page filled from the host's supported
    CPUID, LAUNCH_START / UPDATE / FINISH with ``launch.vcpus`` vCPUs (one VMSA each, measured by
    KVM in vCPU-index order), refused when the plan's C-bit is not the host's. Then the boot
    vCPU's exit loop, with the SNP exits (``SnpExits``: MAP_GPA_RANGE, MEMORY_FAULT) and the
    keep's hypercalls served; the keep obtains its report from the AMD-SP itself and hands it over
    with ATTEST, where the runner verifies it against the operator's VCEK and AMD's pinned chain.

    Application processors: KVM needs every vCPU to exist at LAUNCH_FINISH (it builds and measures
    each one's VMSA from its registers there), so all ``launch.vcpus`` are created and given the
    plan's initial state; only the boot vCPU is ever run. An AP that is never entered with
    KVM_RUN executes nothing (KVM does not require running it; an SNP AP would start at its
    launched VMSA only when run), and the keep does not use them: their VMSAs count in the
    digest, which is the plan's for that vCPU count.
    """

    name = "snp"
    isolation = "memory encrypted and integrity-protected by SEV-SNP"

    def __init__(
        self,
        *,
        system: SnpSystem | None = None,
        vcpu_setup: VcpuSetup | None = None,
        run_vcpus: Callable[[SnpLaunch, Launch], int | None] | None = None,
    ) -> None:
        self._system = system
        self._vcpu_setup = vcpu_setup
        self._run_vcpus = run_vcpus if run_vcpus is not None else run_snp_vcpus

    def unavailable(self) -> str | None:
        """``keep platform``'s reasons, verbatim (``PlatformFacts.snp_missing``), or None."""
        from runtime.vmm.platform import probe

        missing = probe(timing=False).snp_missing()
        return "; ".join(missing) if missing else None

    def firmware(self, vcek: Path | None = None) -> Firmware:
        """The real AMD-SP of this host's generation (its CPUID, never a default), with the
        operator's VCEK checked against AMD's pinned chain for it; without one, the keep's
        report is refused naming where its VCEK is (``runtime.firmware.snp``)."""
        from runtime.firmware.snp import SnpFirmware, load_vcek

        host = self.host_cpu()
        product = host.product
        if product is None:
            raise PlatformError(
                f"this host's CPU is not an SEV-SNP EPYC (Milan, Genoa or Turin): {host.describe()}"
            )
        return SnpFirmware(load_vcek(vcek, product) if vcek is not None else None, product)

    def host_cpu(self) -> HostCpu:
        """The host's supported CPUID (C-bit, generation), through this backend's system."""
        from runtime.vmm.snp_cpuid import host_cpu
        from runtime.vmm.snp_launch import KVM_DEVICE, RealSnpSystem

        system = self._system if self._system is not None else RealSnpSystem()
        try:
            fd = system.open(KVM_DEVICE)
        except OSError as exc:
            raise PlatformError(f"cannot open {KVM_DEVICE}: {exc.strerror}") from exc
        try:
            return host_cpu(system, fd)
        finally:
            system.close(fd)

    def statement(self, firmware: Firmware) -> str:
        return (
            "keep: backend snp: the keep runs in an SEV-SNP VM on /dev/kvm; firmware "
            f"{firmware.name}: the AMD secure processor — the host cannot read or change the "
            "keep's private memory; the report is verified against AMD's roots only"
        )

    def run(self, launch: Launch) -> Ended:
        from runtime.vmm.snp_launch import SnpLaunch

        plan = snp_plan(launch.build)
        sys.stdout.flush()
        with SnpLaunch(
            plan, vcpus=launch.vcpus, system=self._system, vcpu_setup=self._vcpu_setup
        ) as vm:
            # SnpLaunch refuses bytes that do not measure as the plan's snp digest for this
            # vCPU count (naming both) before LAUNCH_FINISH: no vCPU runs unmeasured code.
            measurement = vm.launch()
            status = self._run_vcpus(vm, launch)
        return Ended(status, measurement)


def snp_plan(build: KeepBuild) -> LaunchPlan:
    """The build's ``snp`` twin plan, laid out from its own ELFs (C-bit 51, every generation
    ``toolchain.measure.reference.SNP_C_BITS`` knows)."""
    from toolchain.measure.keep import SNP_UKERNEL_ELF, snp_plan_of

    artifacts = build.artifacts
    return snp_plan_of(
        build.plan, artifacts["ukernel.elf"], artifacts["runtime.elf"], artifacts[SNP_UKERNEL_ELF]
    )


def run_snp_vcpus(vm: SnpLaunch, launch: Launch) -> int | None:
    """Run the launched keep's boot vCPU until it exits, its SNP exits and hypercalls served.

    The APs are never run (see ``SnpBackend``). The keep hands its report over with ATTEST
    (hypercall ABI 4) to ``launch.verified``, the runner's verifier; an older keep's request to
    the runner's firmware is refused (``SnpFirmware``: only the guest can obtain it on SNP).
    """
    from runtime.vmm.hypercalls import HypercallServer
    from runtime.vmm.vcpu import Vcpu, Watchdog

    boot = vm.vcpus[0]
    if not isinstance(boot, Vcpu) or vm.memory is None:
        raise PlatformError("the SNP launch has no runnable boot vCPU")
    vm.exits().install(boot)
    abi = vm.plan.abi
    server = HypercallServer(
        vm.memory,
        abi.hypercalls,
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
        stdin=sys.stdin.buffer if sys.stdin is not None else None,
        args=launch.argv,
        env=list(launch.env),
        report_data=launch.report_data,
        request_report=launch.firmware.guest_request_report,
        verify_report=launch.verified,
        abi_version=abi.abi_version,
        trees=launch.trees,
        rw=launch.rw,
    )
    watchdog = Watchdog(launch.timeout, boot.run_struct)
    try:
        return boot.run(doorbell_gpa=abi.doorbell, on_doorbell=server.serve, watchdog=watchdog)
    finally:
        watchdog.stop()


#: Every backend ``keep run`` knows, by name; the first available one is the default (``snp``
#: comes last: it is only ever chosen by name).
BACKENDS: dict[str, Backend] = {"kvm": KvmBackend(), "nil": NilBackend(), "snp": SnpBackend()}


def choose_backend(name: str | None, say: Callable[[str], None]) -> Backend:
    """The backend ``name`` (it must be able to run here), or with None the first of
    ``BACKENDS`` that can, saying why any before it cannot."""
    if name is not None:
        backend = BACKENDS.get(name)
        if backend is None:
            raise InputError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
        reason = backend.unavailable()
        if reason is not None:
            raise PlatformError(f"the {name} backend cannot run here: {reason}")
        return backend
    skipped: list[str] = []
    for backend in BACKENDS.values():
        reason = backend.unavailable()
        if reason is None:
            for line in skipped:
                say(f"{line}; falling back to the {backend.name} backend")
            return backend
        skipped.append(f"keep: the {backend.name} backend cannot run here ({reason})")
    raise PlatformError("no backend can run here:\n" + "\n".join(skipped))
