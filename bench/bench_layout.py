"""Laying out and measuring a keep: LaunchPlan build, launch digests and JSON, vs the hashlib floor.

For each example keep (built with ``build_keep``, warm cache): best-of-N wall times of

* ``build_plan`` (ELF validation, page tables, GDT/IDT, page-by-page layout);
* ``launch_digests([1, 2, 4])`` against the floor: one SHA-384 over every launched byte plus one
  SHA-384 per PAGE_INFO record (what any implementation must hash);
* ``to_json`` / ``from_json`` (the committed artifact; ``from_json`` re-checks the digest);
* where /dev/kvm works: KVM_CREATE_VM → first output of the keep (median), through the VMM.

Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolchain.image.keep_build import build_keep  # noqa: E402
from toolchain.measure.keep import build_plan  # noqa: E402
from toolchain.measure.plan import LaunchPlan  # noqa: E402

ROUNDS = 15
EXAMPLES = {
    "hello": ROOT / "examples" / "hello" / "hello.wat",
    "cpu": next(iter(sorted((ROOT / "examples" / "cpu").glob("*.wat"))), None),
}


def best(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def floor(plan: LaunchPlan) -> None:
    records = 0
    for region in plan.regions:
        if region.data is not None:
            hashlib.sha384(region.data).digest()
        records += region.pages
    vmsa_pages = 1 + 2 + 4  # one VMSA per vCPU for each of the three counts
    for _ in range(vmsa_pages):
        hashlib.sha384(bytes(4096)).digest()
    for _ in range(records + vmsa_pages):
        hashlib.sha384(bytes(112)).digest()


def boot_ms(plan: LaunchPlan) -> float | None:
    from runtime.vmm.platform import kvm_unavailable_reason

    if kvm_unavailable_reason() is not None:
        return None
    from runtime.firmware.sim import SimFirmware
    from runtime.vmm.keep import run_keep

    firsts = []
    for _ in range(10):
        result = run_keep(
            plan,
            firmware=SimFirmware(),
            args=["app"],
            stdout=io.BytesIO(),
            stderr=io.BytesIO(),
            on_report=lambda _raw: None,
        )
        if result.to_first_output_ms is not None:
            firsts.append(result.to_first_output_ms)
    return statistics.median(firsts) if firsts else None


def bench_one(name: str, app: Path, scratch: Path) -> None:
    out = scratch / name
    build_keep(app, out, vcpu_counts=(1,))
    ukernel, runtime = out / "ukernel.elf", out / "runtime.elf"
    plan = build_plan(ukernel, runtime)
    text = plan.to_json()
    t_plan = best(lambda: build_plan(ukernel, runtime))
    t_digest = best(lambda: plan.launch_digests([1, 2, 4]))
    t_floor = best(lambda: floor(plan))
    t_to = best(plan.to_json)
    t_from = best(lambda: LaunchPlan.from_json(text))
    pages = plan.page_counts(1)
    print(
        f"{name}: ukernel.elf {ukernel.stat().st_size} B, runtime.elf "
        f"{runtime.stat().st_size} B, {sum(pages.values())} launched pages {pages}"
    )
    print(f"  build_plan            {t_plan * 1e3:8.2f} ms")
    print(
        f"  launch_digests(1,2,4) {t_digest * 1e3:8.2f} ms   hashlib floor "
        f"{t_floor * 1e3:6.2f} ms   ratio {t_digest / t_floor:5.2f}x"
    )
    print(f"  to_json / from_json   {t_to * 1e3:8.2f} / {t_from * 1e3:.2f} ms")
    first = boot_ms(plan)
    if first is None:
        print("  boot: skipped (no usable /dev/kvm)")
    else:
        print(f"  KVM_CREATE_VM -> first output (median of 10): {first:.2f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-layout-") as scratch:
        for name, app in EXAMPLES.items():
            if app is None:
                print(f"{name}: no example found, skipped")
                continue
            bench_one(name, app, Path(scratch))


if __name__ == "__main__":
    main()
