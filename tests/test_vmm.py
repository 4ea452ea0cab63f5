"""The VMM on /dev/kvm with hand-assembled guests: boot, hypercalls, misbehaviour, no leaks."""

from __future__ import annotations

import io
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.firmware.sim import SimFirmware
from runtime.vmm import kvm_abi, miniguest, vcpu
from runtime.vmm.errors import GuestError
from runtime.vmm.hypercalls import (
    ATTEST,
    CLOCK,
    CONSOLE_WRITE,
    EXIT,
    FAULT,
    LAUNCH_ARGS,
    REPORT_DATA,
    STDIN_READ,
)
from runtime.vmm.keep import Keep, KeepResult, run_keep
from runtime.vmm.memory import GuestMemory
from runtime.vmm.miniguest import (
    HC_BUFFER_GPA,
    HC_PAGE_GPA,
    Asm,
    NullFirmware,
    mini_plan,
)
from runtime.vmm.platform import kvm_unavailable_reason
from runtime.vmm.vm import Vm
from toolchain.errors import EvidenceError, InputError, PlatformError
from toolchain.measure.abi import OFF_ARGS, OFF_CALL, OFF_RET
from toolchain.snp.report import AttestationReport

KVM_MISSING = kvm_unavailable_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]


def _run(
    code: Asm, *, ring: int = 3, firmware: object = None, **options: object
) -> tuple[KeepResult, bytes, bytes]:
    out, err = io.BytesIO(), io.BytesIO()
    options.setdefault("require_attestation", False)
    options.setdefault("timeout", 10.0)
    result = run_keep(
        mini_plan(code, ring=ring),
        firmware=firmware or NullFirmware(),  # type: ignore[arg-type]
        stdout=out,
        stderr=err,
        **options,  # type: ignore[arg-type]
    )
    return result, out.getvalue(), err.getvalue()


def _write_ret0(asm: Asm, fd: int = 1) -> Asm:
    """CONSOLE_WRITE(fd, 0, ret0 of the previous call): prints what the previous call returned."""
    asm.mov_rbx(HC_PAGE_GPA).store32(OFF_CALL, CONSOLE_WRITE)
    asm.store64(OFF_ARGS, fd).store64(OFF_ARGS + 8, 0)
    asm.load_rax(OFF_RET).store_rax(OFF_ARGS + 16)
    return asm.ring_doorbell()


# ---- booting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ring", [3, 0])
def test_guest_prints_and_exits(ring: int) -> None:
    result, out, err = _run(miniguest.hello_guest(b"hello, keep\n", status=7), ring=ring)
    assert result.error is None
    assert result.exit_status == 7
    assert out == b"hello, keep\n"
    assert err == b""
    assert result.exits == {"MMIO": 2}
    assert result.calls == {"CONSOLE_WRITE": 1, "EXIT": 1}
    assert not result.attested
    assert result.to_first_output_ms is not None
    assert 0 < result.to_first_output_ms < result.total_ms


def test_stderr_goes_to_stderr() -> None:
    asm = Asm().put_buffer(0, b"oops\n").hypercall(CONSOLE_WRITE, 2, 0, 5).hypercall(EXIT, 1)
    result, out, err = _run(asm)
    assert (result.exit_status, out, err) == (1, b"", b"oops\n")


@pytest.mark.parametrize("ring", [3, 0])
def test_vcpu_state_reads_back_as_the_plan_says(ring: int) -> None:
    plan = mini_plan(miniguest.hello_guest(), ring=ring)
    with Vm(_ranges(plan)) as vm:  # type: ignore[arg-type]
        vcpu.write_vcpu_state(vm.vcpus[0], plan.boot_vcpu)
        assert vcpu.read_vcpu_state(vm.vcpus[0]) == plan.boot_vcpu


def test_every_vmsa_register_round_trips_through_kvm() -> None:
    plan = mini_plan(miniguest.hello_guest())
    state = plan.boot_vcpu._replace(
        rax=5,
        r15=9,
        rflags=0x202,
        dr7=0x401,
        star=0x0023001000000000,
        lstar=0xFFFF800000001000,
        g_pat=0x0007040600070407,
        mxcsr=0x1F00,
        x87_fcw=0x27F,
        xcr0=0x7,
        fpreg_x87=bytes(range(1, 81)),
        fpreg_xmm=bytes(i % 255 + 1 for i in range(256)),
        fpreg_ymm=bytes(i * 7 % 255 + 1 for i in range(256)),
    )
    with Vm(_ranges(plan)) as vm:  # type: ignore[arg-type]
        try:
            vcpu.write_vcpu_state(vm.vcpus[0], state)
        except PlatformError as exc:
            pytest.skip(f"this host's KVM refuses AVX state (XCR0=7): {exc.message}")
        assert vcpu.read_vcpu_state(vm.vcpus[0]) == state


def _ranges(plan: object) -> list[object]:
    from runtime.vmm.memory import RamRange

    return [RamRange(gpa, size) for gpa, size in plan.memory_ranges()]  # type: ignore[attr-defined]


# ---- the measurement is of what was loaded -----------------------------------------------------


def test_measurement_matches_the_plan_when_loaded_faithfully() -> None:
    plan = mini_plan(miniguest.hello_guest())
    with Keep(plan, firmware=SimFirmware()) as keep:
        assert keep.launch() == plan.launch_digest(1)


def test_a_byte_changed_in_guest_memory_changes_the_measurement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = mini_plan(miniguest.hello_guest())
    original = GuestMemory.write

    def tampering_write(self: GuestMemory, gpa: int, data: bytes) -> None:
        if gpa == miniguest.RING3_CODE_GPA:
            data = bytes([data[0] ^ 1]) + bytes(data[1:])
        original(self, gpa, data)

    monkeypatch.setattr(GuestMemory, "write", tampering_write)
    with Keep(plan, firmware=SimFirmware()) as keep:
        assert keep.launch() != plan.launch_digest(1)


def test_a_changed_register_changes_the_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = mini_plan(miniguest.hello_guest())
    original = vcpu.write_vcpu_state

    def tampering_state(target: vcpu.Vcpu, state: object) -> None:
        original(target, state)  # type: ignore[arg-type]
        regs = target.get_regs()
        regs.rip += 1
        target.set_regs(regs)

    monkeypatch.setattr("runtime.vmm.keep.write_vcpu_state", tampering_state)
    with Keep(plan, firmware=SimFirmware()) as keep:
        assert keep.launch() != plan.launch_digest(1)


# ---- attestation -------------------------------------------------------------------------------


def test_attest_returns_a_report_bound_to_the_runner_nonce() -> None:
    nonce = bytes(range(64))
    seen: list[bytes] = []
    result, out, _ = _run(
        miniguest.attesting_guest(b"app runs\n"),
        firmware=SimFirmware(),
        require_attestation=True,
        report_data=nonce,
        on_report=seen.append,
    )
    assert result.ok, result.error
    assert result.attested
    assert out == b"app runs\n"
    assert len(seen) == 1
    assert seen[0] == result.report
    report = AttestationReport.parse(seen[0])
    assert report.report_data == nonce
    assert report.measurement == result.measurement
    assert report.measurement == mini_plan(miniguest.attesting_guest(b"app runs\n")).launch_digest(
        1
    )
    assert result.to_attest_ms is not None


@pytest.mark.parametrize("refusal", ["false", "raise", "no verifier"])
def test_a_refused_report_stops_the_keep_before_the_app(refusal: str) -> None:
    def verifier(_report: bytes) -> bool:
        if refusal == "raise":
            raise EvidenceError("measurement differs", field="measurement", expected="a", found="b")
        return False

    result, out, err = _run(
        miniguest.attesting_guest(b"must not print\n"),
        firmware=SimFirmware(),
        require_attestation=True,
        on_report=None if refusal == "no verifier" else verifier,
    )
    assert isinstance(result.error, EvidenceError)
    assert result.exit_status is None
    assert not result.attested
    assert out == err == b""
    assert "CONSOLE_WRITE" not in result.calls
    if refusal == "raise":
        assert result.error.field == "measurement"


def test_nothing_leaves_or_enters_before_attestation() -> None:
    result, out, _ = _run(miniguest.hello_guest(), require_attestation=True)
    assert isinstance(result.error, GuestError)
    assert "CONSOLE_WRITE" in str(result.error)
    assert "attested" in str(result.error)
    assert out == b""


# ---- the WASI-facing calls ---------------------------------------------------------------------


def test_launch_args_blob() -> None:
    asm = Asm().hypercall(LAUNCH_ARGS, 0, 0x1000)
    _write_ret0(asm).hypercall(EXIT, 0)
    result, out, _ = _run(asm, args=["app.wasm", "x y"], env={"K": "V"})
    assert result.ok, result.error
    assert out == b"\x02\x00\x00\x00\x01\x00\x00\x00app.wasm\x00x y\x00K=V\x00"


def test_launch_args_too_big_is_e2big_not_a_crash() -> None:
    asm = Asm().hypercall(LAUNCH_ARGS, 0, 4)
    asm.mov_rbx(HC_PAGE_GPA).load_rax(0x0C)  # status (low 32 bits) and ret0 follow
    asm.mov_rbx(HC_BUFFER_GPA).store_rax(0)
    asm.hypercall(CONSOLE_WRITE, 1, 0, 4).hypercall(EXIT, 0)
    result, out, _ = _run(asm, args=["long argument"])
    assert result.ok, result.error
    assert int.from_bytes(out, "little", signed=True) == -7


def test_stdin_is_echoed() -> None:
    asm = Asm().hypercall(STDIN_READ, 0, 0x100)
    _write_ret0(asm).hypercall(EXIT, 0)
    result, out, _ = _run(asm, stdin=io.BytesIO(b"from stdin"))
    assert result.ok, result.error
    assert out == b"from stdin"


def test_clock_is_host_time() -> None:
    asm = Asm().hypercall(CLOCK, 1)
    asm.mov_rbx(HC_PAGE_GPA).load_rax(OFF_RET).mov_rbx(HC_BUFFER_GPA).store_rax(0)
    asm.hypercall(CONSOLE_WRITE, 1, 0, 8).hypercall(EXIT, 0)
    before = time.monotonic_ns()
    result, out, _ = _run(asm)
    assert result.ok, result.error
    assert before <= int.from_bytes(out, "little") <= time.monotonic_ns()


# ---- misbehaving guests end their own keep -----------------------------------------------------


def _stopped(code: Asm, *, ring: int = 3, **options: object) -> GuestError:
    result, _, _ = _run(code, ring=ring, **options)
    assert result.exit_status is None
    assert isinstance(result.error, GuestError), result.error
    return result.error


def test_write_to_a_gpa_without_memory() -> None:
    error = _stopped(Asm().store_rax_at(miniguest.DOORBELL_GPA + 8))
    assert "no memory" in error.message
    assert f"{miniguest.DOORBELL_GPA + 8:#x}" in error.message


def test_write_through_an_unmapped_pointer_triple_faults() -> None:
    # No IDT in a mini guest: the #PF escalates to a triple fault (the microkernel reports it).
    error = _stopped(Asm().store_rax_at(0x7FFF_0000_0000))
    assert "triple-fault" in error.message


def test_loop_forever_hits_the_watchdog() -> None:
    asm = Asm()
    asm.jmp(asm.here())
    started = time.monotonic()
    error = _stopped(asm, timeout=0.3)
    assert "time limit of 0.3 s" in error.message
    assert time.monotonic() - started < 5


def test_ring0_loop_forever_hits_the_watchdog() -> None:
    asm = Asm()
    asm.jmp(asm.here())
    error = _stopped(asm, ring=0, timeout=0.2)
    assert "time limit" in error.message


def test_console_flood_is_cut_at_the_output_limit() -> None:
    asm = Asm().put_buffer(0, b"flood!!\n")
    top = asm.here()
    asm.hypercall(CONSOLE_WRITE, 1, 0, 0x10000)
    asm.jmp(top)
    out = io.BytesIO()
    result = run_keep(
        mini_plan(asm),
        firmware=NullFirmware(),
        stdout=out,
        stderr=io.BytesIO(),
        require_attestation=False,
        output_limit=1 << 20,
        timeout=10.0,
    )
    assert isinstance(result.error, GuestError)
    assert result.error.call == "CONSOLE_WRITE"
    assert result.error.argument == "length"
    assert len(out.getvalue()) == 1 << 20
    assert result.output_bytes == 1 << 20


def test_hostile_buffer_offset_names_the_call_and_argument() -> None:
    error = _stopped(Asm().hypercall(CONSOLE_WRITE, 1, 0xFFF0, 0x20))
    assert (error.call, error.argument) == ("CONSOLE_WRITE", "length")
    error = _stopped(Asm().hypercall(CONSOLE_WRITE, 1, 1 << 63, 1))
    assert (error.call, error.argument) == ("CONSOLE_WRITE", "offset")


def test_attest_with_a_hostile_report_offset() -> None:
    asm = Asm().hypercall(REPORT_DATA, 0).hypercall(ATTEST, 0, 0, 0xFFFF)
    error = _stopped(asm, firmware=SimFirmware(), require_attestation=True, on_report=bool)
    assert (error.call, error.argument) == ("ATTEST", "offset + 0x4A0")


def test_port_io_is_refused() -> None:
    error = _stopped(Asm().out_port(0x3F8), ring=0)
    assert "port I/O" in error.message
    assert "0x3f8" in error.message


def test_hlt_is_refused() -> None:
    error = _stopped(Asm().hlt(), ring=0)
    assert "halted" in error.message


def test_doorbell_with_a_wrong_value() -> None:
    asm = Asm().mov_rcx(miniguest.DOORBELL_GPA)
    asm.code += b"\xc7\x01\x02\x00\x00\x00"  # mov dword [rcx], 2
    assert "doorbell written" in _stopped(asm).message


def test_bad_magic_and_unknown_call() -> None:
    asm = Asm().mov_rbx(HC_PAGE_GPA).store32(0, 0xDEAD).ring_doorbell()
    error = _stopped(asm)
    assert (error.call, error.argument) == ("doorbell", "magic")
    error = _stopped(Asm().hypercall(99))
    assert (error.call, error.argument) == ("doorbell", "call")


def test_fault_call_is_reported() -> None:
    asm = Asm().hypercall(FAULT, 14, 6, 0xDEAD000, 0x1000123, 0x1B, 0x7000)
    error = _stopped(asm)
    assert "#PF page fault" in error.message
    assert "RIP 0x1000123" in error.message
    assert "ring 3" in error.message


def test_unknown_exit_reasons_and_entry_failures_stop_the_keep() -> None:
    plan = mini_plan(miniguest.hello_guest())
    with Vm(_ranges(plan)) as vm:  # type: ignore[arg-type]
        target = vm.vcpus[0]
        fake = kvm_abi.KvmRun()
        for reason, text in (
            (99, "exit reason 99"),
            (kvm_abi.KVM_EXIT_FAIL_ENTRY, "could not enter"),
            (kvm_abi.KVM_EXIT_INTERNAL_ERROR, "internal error"),
            (kvm_abi.KVM_EXIT_SHUTDOWN, "triple-fault"),
            (kvm_abi.KVM_EXIT_MMIO, "no memory"),
        ):
            fake.exit_reason = reason
            with pytest.raises(GuestError, match=text):
                target.handle_exit(fake, doorbell_gpa=miniguest.DOORBELL_GPA, on_doorbell=int)


def test_a_plan_whose_shared_pages_overlap_a_region_is_refused() -> None:
    plan = mini_plan(miniguest.hello_guest())
    bad = replace(plan, abi=replace(plan.abi, hc_page=miniguest.GDT_GPA))
    with pytest.raises(InputError, match="overlaps launched region"):
        Keep(bad, firmware=NullFirmware())


# ---- the VMM stays healthy -----------------------------------------------------------------------


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_200_keeps_in_a_row_leak_no_fds_or_memory() -> None:
    flood = Asm()
    top = flood.here()
    flood.hypercall(CONSOLE_WRITE, 1, 0, 0x1000).jmp(top)
    guests = [
        (miniguest.hello_guest(b"ok\n"), {}),
        (Asm().store_rax_at(miniguest.DOORBELL_GPA + 8), {}),
        (Asm().store_rax_at(0x7FFF_0000_0000), {}),
        (Asm().hypercall(CONSOLE_WRITE, 1, 0xFFFF, 2), {}),
        (flood, {"output_limit": 0x4000}),
    ]
    plans = [(mini_plan(code), options) for code, options in guests]
    # Warm up allocator pools before taking the baseline.
    for plan, options in plans:
        run_keep(plan, firmware=NullFirmware(), stdout=io.BytesIO(), require_attestation=False,
                 **options)  # fmt: skip
    fds, resident = _open_fds(), _resident_bytes()
    outcomes = {"exit": 0, "stopped": 0}
    for index in range(200):
        plan, options = plans[index % len(plans)]
        result = run_keep(
            plan,
            firmware=NullFirmware(),
            stdout=io.BytesIO(),
            stderr=io.BytesIO(),
            require_attestation=False,
            timeout=10.0,
            **options,  # type: ignore[arg-type]
        )
        outcomes["exit" if result.ok else "stopped"] += 1
    assert outcomes == {"exit": 40, "stopped": 160}
    assert _open_fds() == fds
    assert _resident_bytes() - resident < 16 << 20


# ---- fuzz through a real guest: hostile hypercalls end the keep cleanly -----------------------

_ARG = st.one_of(
    st.integers(0, 0x20),
    st.integers(0xFB00, 0x10010),
    st.sampled_from([1 << 63, (1 << 64) - 1, 0x4A0, 64]),
    st.integers(0, (1 << 64) - 1),
)


@settings(max_examples=40, deadline=None)
@given(call=st.integers(0, 10), args=st.lists(_ARG, min_size=6, max_size=6), attest=st.booleans())
def test_fuzz_hypercalls_from_a_guest(call: int, args: list[int], attest: bool) -> None:
    asm = Asm().put_buffer(0, b"x" * 16).hypercall(call, *args).hypercall(EXIT, 0)
    result, _, _ = _run(
        asm,
        firmware=SimFirmware(),
        require_attestation=attest,
        on_report=lambda _r: None,
        output_limit=0x8000,
        stdin=io.BytesIO(b"input"),
        timeout=10.0,
    )
    if result.error is not None:
        assert isinstance(result.error, GuestError)
        assert result.error.call is not None
    else:
        assert result.exit_status is not None
    assert result.output_bytes <= 0x8000
