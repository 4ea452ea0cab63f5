"""What this host offers for running keeps: KVM, a software KVM, SEV-SNP, the simulated root.

``probe()`` gathers facts without changing anything (it boots two tiny guests when KVM works,
to time ring 0 against ring 3); ``platform_checklist()`` turns them into the ✔/✗ list of
``keep platform``. A software KVM such as PVM runs guest ring 3 natively but emulates ring 0
one instruction at a time; it is recognised by its kernel module and confirmed by timing.

An SEV-SNP host is told from others by four facts, each reported with what was found:
``/dev/sev`` (the AMD secure processor's driver), the ``kvm_amd`` module's ``sev_snp``
parameter, ``KVM_CAP_VM_TYPES`` offering ``KVM_X86_SNP_VM`` together with the capabilities an
SNP launch needs (``runtime.vmm.snp_launch.snp_missing_capabilities``), and — where ``/dev/sev``
can be opened — the firmware's SNP_PLATFORM_STATUS (API version, build, TCB). ``snp_missing()``
lists what is missing, for ``keep platform`` and the ``snp`` backend's errors. Beside them, the
host's C-bit position (CPUID 0x8000001F EBX[5:0]) and CPU generation, from KVM's supported CPUID
(``runtime.vmm.snp_cpuid``): an snp plan must be laid out for that C-bit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.checks import Checklist
from toolchain.errors import KeepError, PlatformError

#: Kernel modules that implement KVM in software (guest kernel mode emulated or deprivileged).
SOFTWARE_KVM_MODULES = ("kvm_pvm",)
HARDWARE_KVM_MODULES = ("kvm_intel", "kvm_amd")
#: Ring 0 slower than ring 3 by more than this factor means ring 0 is emulated.
EMULATION_RATIO = 20.0
TIMING_LOOP_ITERATIONS = 20000
ROUND_TRIPS = 200
_SYS_MODULE = Path("/sys/module")
SEV_DEVICE = "/dev/sev"


@dataclass
class PlatformFacts:
    """Facts about the host, each with the evidence behind it."""

    kvm_device: bool = False
    kvm_usable: bool = False
    kvm_error: str = ""
    kvm_modules: list[str] = field(default_factory=list)
    software_kvm: bool | None = None  # None: unknown (KVM unusable)
    software_kvm_evidence: str = ""
    ring0_ns_per_iteration: float | None = None
    ring3_ns_per_iteration: float | None = None
    boot_ms: float | None = None
    ring3_round_trip_us: float | None = None  # one doorbell hypercall from ring 3, served
    mmio_caching: bool | None = None  # kvm.mmio_caching (None: not readable)
    max_vcpus: int = 0
    snp_vm_type: bool = False
    snp_host: bool = False
    snp_evidence: str = ""
    sev_device: bool = False  # /dev/sev exists
    sev_snp_parameter: str | None = None  # kvm_amd.sev_snp as read; None: kvm_amd not loaded
    vm_types: int | None = None  # KVM_CAP_VM_TYPES; None: KVM unusable
    snp_kvm_missing: list[str] = field(default_factory=list)  # from KVM_CHECK_EXTENSION
    snp_firmware: str | None = None  # SNP_PLATFORM_STATUS, None: not readable
    snp_firmware_note: str = ""  # why not readable
    c_bit: int | None = None  # CPUID 0x8000001F EBX[5:0] as KVM reports it; None: no SEV
    host_cpu: str = ""  # family/model/generation and C-bit, as ``HostCpu.describe`` says
    sim_root: str | None = None

    def snp_missing(self) -> list[str]:
        """What this host lacks for the ``snp`` backend, one phrase each (empty: nothing)."""
        missing = []
        if not self.sev_device:
            missing.append("no /dev/sev (the AMD secure processor driver, ccp)")
        if self.sev_snp_parameter is None:
            missing.append("kvm_amd is not loaded (no kvm_amd.sev_snp)")
        elif self.sev_snp_parameter not in ("Y", "1"):
            missing.append(f"kvm_amd.sev_snp is {self.sev_snp_parameter}")
        if self.vm_types is None:
            missing.append("no usable KVM to ask for the SNP VM type")
        else:
            missing += self.snp_kvm_missing
        return missing


def kvm_unavailable_reason() -> str | None:
    """Why keeps cannot run on KVM here, or None: /dev/kvm opens, speaks API 12, creates a VM."""
    import fcntl

    from runtime.vmm import kvm_abi
    from runtime.vmm.vm import open_kvm

    try:
        fd = open_kvm()
    except PlatformError as exc:
        return exc.message
    try:
        vm_fd = int(fcntl.ioctl(fd, kvm_abi.KVM_CREATE_VM, 0))
    except OSError as exc:
        return f"/dev/kvm cannot create a VM: {exc.strerror}"
    finally:
        os.close(fd)
    os.close(vm_fd)
    return None


def _modules() -> list[str]:
    return [
        name
        for name in (*HARDWARE_KVM_MODULES, *SOFTWARE_KVM_MODULES, "kvm")
        if (_SYS_MODULE / name).is_dir()
    ]


def _sev_snp_parameter() -> str | None:
    try:
        return (_SYS_MODULE / "kvm_amd" / "parameters" / "sev_snp").read_text().strip()
    except OSError:
        return None


def snp_firmware_status(path: str = SEV_DEVICE) -> tuple[str | None, str]:
    """(the firmware's SNP status as text, or None; why not) via SEV_ISSUE_CMD on /dev/sev."""
    import ctypes
    import fcntl

    from runtime.vmm import kvm_snp

    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot open {path}: {exc.strerror}"
    try:
        status = kvm_snp.SevUserDataSnpStatus()
        command = kvm_snp.SevIssueCmd(
            cmd=kvm_snp.SNP_PLATFORM_STATUS, data=ctypes.addressof(status)
        )
        try:
            fcntl.ioctl(fd, kvm_snp.SEV_ISSUE_CMD, command, True)
        except OSError as exc:
            error = kvm_snp.sev_error_name(int(command.error))
            return None, f"SNP_PLATFORM_STATUS failed: {exc.strerror}, firmware status {error}"
    finally:
        os.close(fd)
    return (
        f"SNP API {status.api_major}.{status.api_minor} build {status.build_id}, "
        f"reported TCB {status.reported_tcb_version:#018x}, {status.guest_count} guests"
    ), ""


def _snp_facts(facts: PlatformFacts) -> None:
    """Fill the SNP facts that need no KVM: /dev/sev, kvm_amd.sev_snp, the firmware."""
    facts.sev_device = Path(SEV_DEVICE).exists()
    facts.sev_snp_parameter = _sev_snp_parameter()
    if facts.sev_device:
        facts.snp_firmware, facts.snp_firmware_note = snp_firmware_status()
    else:
        facts.snp_firmware_note = "no /dev/sev"


def _cpu_facts(facts: PlatformFacts, kvm_fd: int) -> None:
    """The C-bit and CPU generation from KVM_GET_SUPPORTED_CPUID on ``kvm_fd``."""
    from runtime.vmm.snp_cpuid import host_cpu
    from runtime.vmm.snp_launch import RealSnpSystem

    try:
        host = host_cpu(RealSnpSystem(), kvm_fd)
    except PlatformError as exc:
        facts.host_cpu = exc.message
        return
    facts.c_bit = host.c_bit
    facts.host_cpu = host.describe()


def _snp_verdict(facts: PlatformFacts) -> None:
    missing = facts.snp_missing()
    facts.snp_host = not missing
    facts.snp_evidence = (
        "kvm_amd.sev_snp=Y, /dev/sev, KVM_X86_SNP_VM" if not missing else "; ".join(missing)
    )


def _run_loop(ring: int, iterations: int) -> tuple[float, float]:
    from runtime.vmm import miniguest
    from runtime.vmm.keep import Keep

    plan = miniguest.mini_plan(miniguest.counting_guest(iterations), ring=ring)
    with Keep(plan, firmware=miniguest.NullFirmware()) as keep:
        keep.launch()
        started = time.perf_counter()
        result = keep.run(require_attestation=False, timeout=30.0)
        elapsed = time.perf_counter() - started
    if result.error is not None:
        raise result.error
    return elapsed, result.total_ms


def _round_trip_us() -> float:
    """Microseconds per ring-3 doorbell hypercall (CLOCK), entry and exit costs subtracted."""
    from runtime.vmm import miniguest
    from runtime.vmm.keep import Keep

    def run(count: int) -> float:
        plan = miniguest.mini_plan(miniguest.hypercall_loop(count))
        with Keep(plan, firmware=miniguest.NullFirmware()) as keep:
            keep.launch()
            result = keep.run(require_attestation=False, timeout=30.0)
        if result.error is not None:
            raise result.error
        return result.total_ms

    one = min(run(1) for _ in range(3))
    many = min(run(ROUND_TRIPS + 1) for _ in range(3))
    return max(many - one, 0.0) * 1e3 / ROUND_TRIPS


def _time_loop(ring: int) -> tuple[float, float]:
    """(ns per loop iteration, ms from KVM_CREATE_VM to exit) of a counting loop at ``ring``.

    The run of an empty loop is subtracted, so entry and exit costs drop out.
    """
    baseline, _ = min(_run_loop(ring, 1) for _ in range(3))
    loop, boot_ms = min(_run_loop(ring, TIMING_LOOP_ITERATIONS) for _ in range(3))
    return max(loop - baseline, 0.0) * 1e9 / TIMING_LOOP_ITERATIONS, boot_ms


def probe(*, timing: bool = True) -> PlatformFacts:
    """Collect the facts (``timing=False`` skips booting the two timing guests)."""
    from runtime.firmware.sim import sim_root_present
    from runtime.vmm import kvm_abi
    from runtime.vmm.snp_launch import RealSnpSystem, snp_missing_capabilities
    from runtime.vmm.vm import KVM_DEVICE, check_extension, open_kvm

    facts = PlatformFacts()
    facts.kvm_device = Path(KVM_DEVICE).exists()
    facts.kvm_modules = _modules()
    _snp_facts(facts)
    try:
        caching = (_SYS_MODULE / "kvm" / "parameters" / "mmio_caching").read_text().strip()
    except OSError:
        caching = ""
    facts.mmio_caching = {"Y": True, "N": False}.get(caching)
    root = sim_root_present()
    facts.sim_root = str(root) if root is not None else None
    reason = kvm_unavailable_reason()
    if reason is not None:
        facts.kvm_error = reason
        _snp_verdict(facts)
        return facts
    fd = open_kvm()
    try:
        facts.max_vcpus = check_extension(fd, kvm_abi.KVM_CAP_MAX_VCPUS)
        facts.vm_types = check_extension(fd, kvm_abi.KVM_CAP_VM_TYPES)
        facts.snp_vm_type = bool(facts.vm_types >> kvm_abi.KVM_X86_SNP_VM & 1)
        facts.snp_kvm_missing = snp_missing_capabilities(RealSnpSystem(), fd)
        _cpu_facts(facts, fd)
    finally:
        os.close(fd)
    _snp_verdict(facts)
    software = [m for m in facts.kvm_modules if m in SOFTWARE_KVM_MODULES]
    if software:
        facts.software_kvm = True
        facts.software_kvm_evidence = f"kernel module {software[0]}"
    elif any(m in facts.kvm_modules for m in HARDWARE_KVM_MODULES):
        facts.software_kvm = False
        facts.software_kvm_evidence = "hardware KVM module loaded"
    if not timing:
        facts.kvm_usable = True
        return facts
    try:
        facts.ring3_ns_per_iteration, facts.boot_ms = _time_loop(3)
        facts.ring0_ns_per_iteration, _ = _time_loop(0)
        facts.ring3_round_trip_us = _round_trip_us()
    except KeepError as exc:
        facts.kvm_error = f"a test guest did not run: {exc.message}"
        return facts
    facts.kvm_usable = True
    # A two-instruction loop iteration takes at least ~1 ns natively: floor ring 3 there.
    ratio = facts.ring0_ns_per_iteration / max(facts.ring3_ns_per_iteration, 1.0)
    emulated = ratio > EMULATION_RATIO
    timing_note = f"ring 0 at least {ratio:.0f}x slower than ring 3"
    if facts.software_kvm is None or emulated:
        facts.software_kvm = emulated or bool(facts.software_kvm)
        facts.software_kvm_evidence = ", ".join(
            part for part in (facts.software_kvm_evidence, timing_note) if part
        )
    else:
        facts.software_kvm_evidence += f"; {timing_note}"
    return facts


def platform_checklist(facts: PlatformFacts) -> Checklist:
    """``keep platform``: what the host offers, one ✔/✗ line each."""
    checks = Checklist("this host")
    checks.add(
        "kvm",
        facts.kvm_usable,
        expected="a usable /dev/kvm",
        found=facts.kvm_error or "/dev/kvm",
        detail=", ".join(facts.kvm_modules) or "no KVM module loaded",
    )
    if facts.kvm_usable:
        detail = facts.software_kvm_evidence
        if facts.ring0_ns_per_iteration is not None and facts.ring3_ns_per_iteration is not None:
            detail += (
                f"; loop iteration ring 0 {facts.ring0_ns_per_iteration:.0f} ns, "
                f"ring 3 {facts.ring3_ns_per_iteration:.1f} ns"
            )
        checks.add(
            "hardware virtualization",
            not facts.software_kvm,
            expected="hardware KVM",
            found="software KVM (ring 0 emulated; keeps still run, ring 3 at native speed)"
            if facts.software_kvm
            else "hardware KVM",
            detail=detail,
        )
        if facts.boot_ms is not None:
            checks.add("test guest boot", True, found=f"{facts.boot_ms:.2f} ms from KVM_CREATE_VM")
        if facts.ring3_round_trip_us is not None:
            caching = {True: "on", False: "off (MMIO accesses are not cached)", None: "unknown"}
            checks.add(
                "hypercall round trip",
                True,
                found=f"{facts.ring3_round_trip_us:.1f} us from ring 3",
                detail=f"kvm.mmio_caching {caching[facts.mmio_caching]}",
            )
    _snp_checks(facts, checks)
    checks.add(
        "simulated AMD root",
        None if facts.sim_root is None else True,
        found=facts.sim_root or "",
        detail="trusted only with --dev; created on first use"
        if facts.sim_root is None
        else "trusted only with --dev",
    )
    return checks


def _snp_checks(facts: PlatformFacts, checks: Checklist) -> None:
    """The SEV-SNP verdict, then one line per fact it rests on."""
    missing = facts.snp_missing()
    checks.add(
        "sev-snp",
        not missing,
        expected="an AMD SEV-SNP host (/dev/sev, kvm_amd.sev_snp, KVM_X86_SNP_VM)",
        found="an AMD SEV-SNP host" if not missing else "missing: " + "; ".join(missing),
        detail="without it keeps use the simulated firmware: no memory encryption"
        if missing
        else "",
    )
    checks.add(
        "sev-snp /dev/sev",
        facts.sev_device,
        expected="/dev/sev (the AMD secure processor driver, ccp)",
        found=SEV_DEVICE if facts.sev_device else "no such device",
    )
    parameter = facts.sev_snp_parameter
    checks.add(
        "sev-snp kvm_amd.sev_snp",
        parameter in ("Y", "1"),
        expected="Y",
        found=parameter if parameter is not None else "kvm_amd is not loaded",
    )
    if facts.vm_types is None:
        checks.add("sev-snp KVM SNP VM type", None, detail="KVM is not usable: not asked")
    else:
        checks.add(
            "sev-snp KVM SNP VM type",
            not facts.snp_kvm_missing,
            expected="KVM_CAP_VM_TYPES bit 4 (KVM_X86_SNP_VM), guest_memfd, memory attributes",
            found="; ".join(facts.snp_kvm_missing)
            or f"KVM_CAP_VM_TYPES {facts.vm_types:#x} with KVM_X86_SNP_VM",
        )
    checks.add(
        "sev-snp C-bit",
        None if facts.c_bit is None else True,
        found="" if facts.c_bit is None else f"{facts.c_bit} (CPUID 0x8000001F EBX[5:0])",
        detail=facts.host_cpu or "KVM is not usable: not asked",
    )
    if facts.snp_firmware is not None:
        checks.add("sev-snp firmware", True, found=facts.snp_firmware)
    else:
        checks.add(
            "sev-snp firmware", None, detail=f"version not readable: {facts.snp_firmware_note}"
        )
