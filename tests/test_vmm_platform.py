"""Host detection for `keep platform`, and the watchdog from a non-main thread."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from runtime.vmm import miniguest
from runtime.vmm.errors import GuestError
from runtime.vmm.keep import KeepResult, run_keep
from runtime.vmm.platform import (
    PlatformFacts,
    kvm_unavailable_reason,
    platform_checklist,
    probe,
    snp_firmware_status,
)
from runtime.vmm.vcpu import install_kick_signal
from runtime.vmm.vm import open_kvm
from toolchain.errors import PlatformError

KVM_MISSING = kvm_unavailable_reason()


def test_missing_device_is_explained() -> None:
    with pytest.raises(PlatformError, match="does not exist") as info:
        open_kvm("/nonexistent/kvm")
    assert "--backend nil" in (info.value.hint or "")


def test_a_device_that_is_not_kvm_is_explained() -> None:
    with pytest.raises(PlatformError, match="not a KVM device"):
        open_kvm("/dev/null")


def test_checklist_without_kvm() -> None:
    facts = PlatformFacts(kvm_device=False, kvm_error="/dev/kvm does not exist")
    checks = platform_checklist(facts)
    lines = [check.line() for check in checks.checks]
    assert lines[0].startswith("✗ kvm")
    assert "/dev/kvm does not exist" in lines[0]
    assert any(line.startswith("✗ sev-snp") for line in lines)
    assert any(line.startswith("- simulated AMD root") for line in lines)
    assert not checks.ok


def test_checklist_of_a_software_kvm() -> None:
    facts = PlatformFacts(
        kvm_device=True,
        kvm_usable=True,
        kvm_modules=["kvm_pvm", "kvm"],
        software_kvm=True,
        software_kvm_evidence="kernel module kvm_pvm",
        ring0_ns_per_iteration=600.0,
        ring3_ns_per_iteration=0.5,
        boot_ms=1.5,
        ring3_round_trip_us=75.0,
        mmio_caching=False,
        sim_root="/somewhere",
    )
    lines = [check.line() for check in platform_checklist(facts).checks]
    assert lines[0].startswith("✔ kvm")
    assert lines[1].startswith("✗ hardware virtualization")
    assert "software KVM" in lines[1]
    assert "ring 0 600 ns" in lines[1]
    assert any("1.50 ms" in line for line in lines)
    assert any("75.0 us from ring 3" in line and "mmio_caching off" in line for line in lines)
    assert any(line.startswith("✔ simulated AMD root") for line in lines)


@pytest.mark.parametrize("timing", [False, True])
def test_probe_this_host(timing: bool) -> None:
    if KVM_MISSING is not None:
        facts = probe(timing=timing)
        assert not facts.kvm_usable
        assert facts.kvm_error
        return
    facts = probe(timing=timing)
    assert facts.kvm_usable
    assert facts.max_vcpus >= 1
    if "kvm_pvm" in facts.kvm_modules:
        assert facts.software_kvm is True
    if timing:
        assert facts.ring0_ns_per_iteration is not None
        assert facts.ring3_ns_per_iteration is not None
        assert facts.boot_ms is not None
        assert facts.boot_ms > 0
        assert facts.ring3_round_trip_us is not None
        assert "ring 0" in facts.software_kvm_evidence  # the timing is reported, not asserted


@pytest.mark.kvm
@pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}")
def test_watchdog_works_for_a_keep_run_from_another_thread() -> None:
    install_kick_signal()
    asm = miniguest.Asm()
    asm.jmp(asm.here())
    results: list[KeepResult] = []

    def target() -> None:
        results.append(
            run_keep(
                miniguest.mini_plan(asm),
                firmware=miniguest.NullFirmware(),
                stdout=io.BytesIO(),
                require_attestation=False,
                timeout=0.2,
            )
        )

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(results[0].error, GuestError)
    assert "time limit" in results[0].error.message


@pytest.mark.kvm
@pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}")
def test_keeps_in_parallel_threads_each_get_their_own_watchdog() -> None:
    install_kick_signal()
    forever = miniguest.Asm()
    forever.jmp(forever.here())
    plans = {
        "loop": miniguest.mini_plan(forever),
        "hello": miniguest.mini_plan(miniguest.hello_guest(b"hi\n")),
    }
    outcomes: dict[str, list[str]] = {"loop": [], "hello": []}
    lock = threading.Lock()

    def worker(kind: str, timeout: float) -> None:
        for _ in range(5):
            result = run_keep(
                plans[kind],
                firmware=miniguest.NullFirmware(),
                stdout=io.BytesIO(),
                require_attestation=False,
                timeout=timeout,
            )
            with lock:
                outcomes[kind].append("ok" if result.ok else str(result.error))

    threads = [
        threading.Thread(target=worker, args=("loop", 0.05)),
        threading.Thread(target=worker, args=("loop", 0.08)),
        threading.Thread(target=worker, args=("hello", 30.0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes["hello"] == ["ok"] * 5
    assert len(outcomes["loop"]) == 10
    assert all("time limit" in outcome for outcome in outcomes["loop"])


# ---- telling an SEV-SNP host from others ---------------------------------------------------------
def _snp_host_facts() -> PlatformFacts:
    return PlatformFacts(
        kvm_device=True,
        kvm_usable=True,
        kvm_modules=["kvm_amd", "kvm"],
        software_kvm=False,
        sev_device=True,
        sev_snp_parameter="Y",
        vm_types=0x1D,
        snp_kvm_missing=[],
        snp_firmware="SNP API 1.55 build 21, reported TCB 0x1b00000000000004, 0 guests",
        c_bit=51,
        host_cpu="family 0x19 model 0x11 stepping 1 (Genoa), C-bit 51",
    )


def test_an_snp_host_is_recognised_fact_by_fact() -> None:
    facts = _snp_host_facts()
    assert facts.snp_missing() == []
    lines = [check.line() for check in platform_checklist(facts).checks]
    snp = [line for line in lines if "sev-snp" in line]
    assert snp == [
        "✔ sev-snp: an AMD SEV-SNP host",
        "✔ sev-snp /dev/sev: /dev/sev",
        "✔ sev-snp kvm_amd.sev_snp: Y",
        "✔ sev-snp KVM SNP VM type: KVM_CAP_VM_TYPES 0x1d with KVM_X86_SNP_VM",
        (
            "✔ sev-snp C-bit: 51 (CPUID 0x8000001F EBX[5:0]) "
            "(family 0x19 model 0x11 stepping 1 (Genoa), C-bit 51)"
        ),
        "✔ sev-snp firmware: SNP API 1.55 build 21, reported TCB 0x1b00000000000004, 0 guests",
    ]


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        ({"sev_device": False}, "no /dev/sev (the AMD secure processor driver, ccp)"),
        ({"sev_snp_parameter": "N"}, "kvm_amd.sev_snp is N"),
        ({"sev_snp_parameter": None}, "kvm_amd is not loaded (no kvm_amd.sev_snp)"),
        ({"vm_types": None}, "no usable KVM to ask for the SNP VM type"),
        (
            {"snp_kvm_missing": ["KVM_CAP_VM_TYPES 0x1 lacks KVM_X86_SNP_VM (bit 4)"]},
            "KVM_CAP_VM_TYPES 0x1 lacks KVM_X86_SNP_VM (bit 4)",
        ),
    ],
)
def test_each_missing_fact_is_named(change: dict[str, object], missing: str) -> None:
    facts = _snp_host_facts()
    for name, value in change.items():
        setattr(facts, name, value)
    assert facts.snp_missing() == [missing]
    lines = [check.line() for check in platform_checklist(facts).checks]
    assert any(line.startswith("✗ sev-snp: ") and missing in line for line in lines)


def test_unreadable_firmware_is_said_not_failed() -> None:
    facts = _snp_host_facts()
    facts.snp_firmware, facts.snp_firmware_note = None, "cannot open /dev/sev: Permission denied"
    lines = [check.line() for check in platform_checklist(facts).checks]
    assert "- sev-snp firmware (version not readable: cannot open /dev/sev: Permission denied)" in (
        lines
    )
    assert facts.snp_missing() == []


def test_firmware_status_of_devices_that_are_not_sev() -> None:
    status, why = snp_firmware_status("/nonexistent/sev")
    assert status is None
    assert why.startswith("cannot open /nonexistent/sev")
    status, why = snp_firmware_status("/dev/null")
    assert status is None
    assert why.startswith("SNP_PLATFORM_STATUS failed")


def test_this_host_says_what_it_lacks_for_snp() -> None:
    facts = probe(timing=False)
    missing = facts.snp_missing()
    assert facts.snp_host == (not missing)
    if not Path("/dev/sev").exists():
        assert "no /dev/sev (the AMD secure processor driver, ccp)" in missing
    if KVM_MISSING is None:
        assert facts.vm_types is not None
        if not facts.vm_types >> 4 & 1:
            assert any("lacks KVM_X86_SNP_VM" in phrase for phrase in missing)


def test_keep_platform_explains_why_snp_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    from keep.cli import main

    assert main(["platform", "--no-timing"]) == 0
    out = capsys.readouterr().out
    facts = probe(timing=False)
    if facts.snp_missing():
        assert "=> the snp backend (real SEV-SNP) cannot run here: " in out
        assert "; ".join(facts.snp_missing()) in out
    else:
        assert "=> this is an SEV-SNP host" in out
