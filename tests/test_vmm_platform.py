"""Host detection for `keep platform`, and the watchdog from a non-main thread."""

from __future__ import annotations

import io
import threading

import pytest

from runtime.vmm import miniguest
from runtime.vmm.errors import GuestError
from runtime.vmm.keep import KeepResult, run_keep
from runtime.vmm.platform import (
    PlatformFacts,
    kvm_unavailable_reason,
    platform_checklist,
    probe,
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
