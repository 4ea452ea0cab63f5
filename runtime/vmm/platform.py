"""What this host offers for running keeps: KVM, a software KVM, SEV-SNP, the simulated root.

``probe()`` gathers facts without changing anything (it boots two tiny guests when KVM works,
to time ring 0 against ring 3); ``platform_checklist()`` turns them into the ✔/✗ list of
``keep platform``. A software KVM such as PVM runs guest ring 3 natively but emulates ring 0
one instruction at a time; it is recognised by its kernel module and confirmed by timing.
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
    sim_root: str | None = None


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


def _snp_host() -> tuple[bool, str]:
    parameter = _SYS_MODULE / "kvm_amd" / "parameters" / "sev_snp"
    try:
        enabled = parameter.read_text().strip() in ("Y", "1")
    except OSError:
        return False, "kvm_amd is not loaded (no AMD SEV-SNP host support)"
    if not enabled:
        return False, "kvm_amd.sev_snp is off"
    if not Path("/dev/sev").exists():
        return False, "kvm_amd.sev_snp is on but /dev/sev is missing"
    return True, "kvm_amd.sev_snp=Y and /dev/sev present"


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
    from runtime.vmm.vm import KVM_DEVICE, check_extension, open_kvm

    facts = PlatformFacts()
    facts.kvm_device = Path(KVM_DEVICE).exists()
    facts.kvm_modules = _modules()
    facts.snp_host, facts.snp_evidence = _snp_host()
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
        return facts
    fd = open_kvm()
    try:
        facts.max_vcpus = check_extension(fd, kvm_abi.KVM_CAP_MAX_VCPUS)
        vm_types = check_extension(fd, kvm_abi.KVM_CAP_VM_TYPES)
        facts.snp_vm_type = bool(vm_types >> kvm_abi.KVM_X86_SNP_VM & 1)
    finally:
        os.close(fd)
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
    checks.add(
        "sev-snp",
        facts.snp_host and facts.snp_vm_type,
        expected="an AMD SEV-SNP host (kvm_amd.sev_snp, /dev/sev, KVM_X86_SNP_VM)",
        found=facts.snp_evidence
        + ("" if facts.snp_vm_type else "; KVM does not offer the SNP VM type"),
        detail="without it keeps use the simulated firmware: no memory encryption",
    )
    checks.add(
        "simulated AMD root",
        None if facts.sim_root is None else True,
        found=facts.sim_root or "",
        detail="trusted only with --dev; created on first use"
        if facts.sim_root is None
        else "trusted only with --dev",
    )
    return checks
