"""The VMM on /dev/kvm: boot time, hypercall round trip, a real keep, and leaks over many boots.

Figures (medians of several runs, each keep in a fresh VM):
  1. minimal guest, ring 3 and (peer) ring 0: KVM_CREATE_VM -> first console output, and
     -> exit; split into VM creation + load + measurement (launch) and run;
  2. hypercall round trip (doorbell exit -> Python handler -> resume), ring 3 and ring 0,
     against its peer in the same run: the same handler called directly (no exit);
  3. a real keep (examples/hello: microkernel + wasm2c runtime, sim firmware, ATTEST verified by
     a callback): KVM_CREATE_VM -> report request, -> first output, -> exit;
  4. open fds and resident memory before/after N boots;
  5. the emulated ring 0's cost model: microseconds per instruction of each kind (register
     ALU, multiply, taken branch, load, store, ALU with a memory operand, read-modify-write),
     from loops of 32 of them against the empty loop (best of several runs; peer: ring 3,
     which runs natively).
Prints figures and ratios; asserts nothing. Skips (says why) where /dev/kvm is unusable.
"""

from __future__ import annotations

import io
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.vmm import hypercalls, miniguest  # noqa: E402
from runtime.vmm.keep import Keep, run_keep  # noqa: E402
from runtime.vmm.memory import GuestMemory, ram_ranges  # noqa: E402
from runtime.vmm.platform import kvm_unavailable_reason  # noqa: E402
from toolchain.measure import abi  # noqa: E402

RUNS = 30
ROUND_TRIPS = 2000
LEAK_BOOTS = 200


def median(values: list[float]) -> float:
    return statistics.median(values)


def figure(values: list[float]) -> str:
    """median (best): the machine is shared, so both say something."""
    return f"{median(values):7.3f} ms (best {min(values):.3f})"


def quiet_run(plan, **options):
    return run_keep(
        plan,
        firmware=miniguest.NullFirmware(),
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
        require_attestation=False,
        timeout=30.0,
        **options,
    )


def bench_minimal() -> None:
    for ring in (3, 0):
        plan = miniguest.mini_plan(miniguest.hello_guest(b"hi\n"), ring=ring)
        first, total, launch, run = [], [], [], []
        for _ in range(RUNS):
            with Keep(plan, firmware=miniguest.NullFirmware()) as keep:
                started = time.perf_counter()
                keep.launch()
                launched = time.perf_counter()
                result = keep.run(stdout=io.BytesIO(), require_attestation=False)
                ended = time.perf_counter()
            assert result.ok
            first.append(result.to_first_output_ms)
            total.append(result.total_ms)
            launch.append((launched - started) * 1e3)
            run.append((ended - launched) * 1e3)
        peer = "" if ring == 3 else " (peer: the same guest in emulated ring 0)"
        print(f"1. minimal ring-{ring} guest (prints, exits){peer}, median (best) of {RUNS}")
        print(f"   KVM_CREATE_VM -> first output  {figure(first)}")
        print(f"   KVM_CREATE_VM -> exit          {figure(total)}")
        print(f"   launch (VM + load + measure)   {figure(launch)}")
        print(f"   run (enter -> exit)            {figure(run)}")


def round_trip_us(ring: int) -> float:
    one = median(
        [
            quiet_run(miniguest.mini_plan(miniguest.hypercall_loop(1), ring=ring)).total_ms
            for _ in range(5)
        ]
    )
    many = median(
        [
            quiet_run(
                miniguest.mini_plan(miniguest.hypercall_loop(ROUND_TRIPS), ring=ring)
            ).total_ms
            for _ in range(5)
        ]
    )
    return (many - one) * 1e3 / (ROUND_TRIPS - 1)


def handler_only_us() -> float:
    """The peer: the same CLOCK request served without a VM exit."""
    with GuestMemory(ram_ranges(0x400000)) as memory:
        layout = abi.HypercallLayout(abi.HC_PAGE_GPA, abi.HC_BUFFER_GPA, abi.HC_BUFFER_SIZE)
        server = hypercalls.HypercallServer(
            memory, layout, stdout=io.BytesIO(), stderr=io.BytesIO(), require_attestation=False
        )
        request = {"magic": abi.HC_MAGIC, "version": abi.ABI_VERSION, "reserved": 0, "status": 0}
        arg = (abi.CLOCK_MONOTONIC, 0, 0, 0, 0, 0)
        page = {**request, "call": abi.Hypercall.CLOCK, "arg": arg, "ret": (0, 0)}
        memory.write(abi.HC_PAGE_GPA, abi.HC_PAGE.pack(page))
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(ROUND_TRIPS):
                server.serve()
            best = min(best, time.perf_counter() - started)
    return best * 1e6 / ROUND_TRIPS


def bench_round_trip() -> None:
    ring3, ring0 = round_trip_us(3), round_trip_us(0)
    handler = handler_only_us()
    print(f"2. hypercall round trip (CLOCK), {ROUND_TRIPS} calls, median of 5")
    print(f"   ring 3 guest                   {ring3:7.2f} us")
    print(f"   ring 0 guest                   {ring0:7.2f} us")
    print(f"   peer: handler alone, no exit   {handler:7.2f} us")
    print(
        f"   exit + re-entry cost (ring 3)  {ring3 - handler:7.2f} us "
        f"({ring3 / handler:.1f}x the handler alone)"
    )


def bench_real_keep() -> None:
    from runtime.firmware.sim import SimFirmware
    from toolchain.image.keep_build import build_keep

    with tempfile.TemporaryDirectory() as out:
        try:
            hello = ROOT / "examples" / "hello" / "hello.wat"
            plan = build_keep(hello, Path(out), vcpu_counts=(1,)).plan
        except Exception as exc:  # noqa: BLE001 - a bench reports and goes on
            print(f"3. real keep: skipped, the build failed: {exc}")
            return
    SimFirmware()  # the simulated chain exists before timing
    attest, first, total, launch = [], [], [], []
    for _ in range(RUNS):
        with Keep(plan, firmware=SimFirmware()) as keep:
            started = time.perf_counter()
            keep.launch()
            launch.append((time.perf_counter() - started) * 1e3)
            result = keep.run(args=["hello.wasm"], stdout=io.BytesIO(), on_report=accept)
        assert result.ok, result.error
        attest.append(result.to_attest_ms)
        first.append(result.to_first_output_ms)
        total.append(result.total_ms)
    print("3. real keep (examples/hello, sim firmware), median (best) of", RUNS)
    print(f"   KVM_CREATE_VM -> ATTEST served {figure(attest)}")
    print(f"   KVM_CREATE_VM -> first output  {figure(first)}   (target < 20 ms)")
    print(f"   KVM_CREATE_VM -> exit          {figure(total)}")
    print(f"   launch (VM + load + measure)   {figure(launch)}")


def accept(_report: bytes) -> None:
    """The runner's verdict in this bench: accept (verification is timed in bench_verify)."""


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_leaks() -> None:
    plans = [
        miniguest.mini_plan(miniguest.hello_guest(b"ok\n")),
        miniguest.mini_plan(miniguest.Asm().store_rax_at(0x7FFF_0000_0000)),
        miniguest.mini_plan(miniguest.Asm().hypercall(hypercalls.CONSOLE_WRITE, 1, 0xFFFF, 2)),
    ]
    for plan in plans:
        quiet_run(plan)
    fds = open_fds()
    rss = resident_bytes()
    started = time.perf_counter()
    for index in range(LEAK_BOOTS):
        quiet_run(plans[index % len(plans)])
    elapsed = time.perf_counter() - started
    print(f"4. {LEAK_BOOTS} keeps in a row (good, faulting, hostile)")
    print(f"   open fds before/after          {fds} / {open_fds()}")
    print(f"   resident memory growth         {(resident_bytes() - rss) / 1024:7.0f} KiB")
    print(f"   per keep                       {elapsed * 1e3 / LEAK_BOOTS:7.3f} ms")


LOAD_RSI = b"\x48\x8b\x04\x33"  # mov rax, [rbx + rsi]
WRAP_RSI = b"\x81\xe6\xff\xff\x3f\x00"  # and esi, 0x3fffff
#: One instruction of each kind (rbx points at scratch RAM, rax, rdx and rsi start at zero).
COST_KINDS = {
    "add reg, reg": b"\x48\x01\xd0",
    "imul reg, reg": b"\x48\x0f\xaf\xc2",
    "jmp (taken)": b"\xeb\x00",
    "load [rbx]": b"\x48\x8b\x03",
    "store [rbx]": b"\x48\x89\x03",
    "xor reg, [rbx]": b"\x48\x33\x03",
    "table load [rbx+rax*8+3]": b"\x8b\x44\xc3\x03",
    "add [rbx], rax (read-modify-write)": b"\x48\x01\x03",
    # Three instructions each (load [rbx+rsi]; add rsi, step; and esi, 4 MiB - 1): whether a
    # new page costs more than the same page (a software TLB, or a page walk every access?).
    "3: load, next 8 bytes": LOAD_RSI + b"\x48\x83\xc6\x08" + WRAP_RSI,
    "3: load, next 4 KiB page": LOAD_RSI + b"\x48\x81\xc6\x00\x10\x00\x00" + WRAP_RSI,
}
COST_LOOPS, COST_UNROLL, COST_RUNS = 2000, 32, 5


def cost_loop(body: bytes) -> miniguest.Asm:
    """rbx = scratch RAM, rax = rdx = rsi = 0; COST_LOOPS times: COST_UNROLL copies of body."""
    asm = miniguest.Asm().mov_rbx(0x1800000).mov_rax(0)
    asm.code += b"\x48\x31\xd2\x48\x31\xf6"  # xor rdx, rdx; xor rsi, rsi
    asm.mov_rcx(COST_LOOPS)
    top = asm.here()
    asm.code += body * COST_UNROLL + b"\x48\xff\xc9"  # ...; dec rcx
    asm.code += b"\x0f\x85" + struct.pack("<i", top - (len(asm.code) + 6))  # jnz top
    return asm.hypercall(hypercalls.EXIT, 0)


def loop_ms(body: bytes, ring: int) -> float:
    """The guest's run (enter -> exit), best of COST_RUNS, in this thread's CPU time: the vCPU
    runs in it and the emulation is its system time, which other jobs on the machine do not
    inflate as they do the wall time."""
    best = float("inf")
    plan = miniguest.mini_plan(cost_loop(body), ring=ring)
    for _ in range(COST_RUNS):
        with Keep(plan, firmware=miniguest.NullFirmware()) as keep:
            keep.launch()
            started = time.thread_time()
            result = keep.run(stdout=io.BytesIO(), require_attestation=False, timeout=60.0)
            best = min(best, time.thread_time() - started)
        assert result.ok, result.error
    return best * 1e3


def bench_cost_model() -> None:
    count = COST_LOOPS * COST_UNROLL
    empty = loop_ms(b"", 0)
    costs = {name: (loop_ms(body, 0) - empty) * 1e3 / count for name, body in COST_KINDS.items()}
    base = costs["add reg, reg"]
    print(f"5. emulated ring 0: us per instruction, {count} of each, best of {COST_RUNS}")
    for name, cost in costs.items():
        print(f"   {name:36s} {cost:6.3f} us  ({cost / base:.1f}x add reg, reg)")
    add = COST_KINDS["add reg, reg"]
    ring0, ring3 = loop_ms(add, 0), loop_ms(add, 3)
    print(f"   peer: the add loop, enter -> exit: ring 3 {ring3:.3f} ms, ring 0 {ring0:.3f} ms")


def main() -> None:
    reason = kvm_unavailable_reason()
    if reason is not None:
        print(f"bench_vmm: skipped, /dev/kvm is unusable here: {reason}")
        return
    bench_minimal()
    bench_round_trip()
    bench_real_keep()
    bench_leaks()
    bench_cost_model()


if __name__ == "__main__":
    main()
