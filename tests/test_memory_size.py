"""Guest memory as a build and run parameter (``--memory``): plan, measurement and limit.

* ``build_plan(memory=...)`` moves the stack and the heap's end to the new top of RAM, so the
  page tables, the user-info page and the launch digest change with it; sizes outside
  64 MiB-4 GiB or not whole 2 MiB pages are refused;
* ``keep run --memory`` gives the same linear-memory limit on kvm and nil, and it follows the
  size (a module growing page by page stops at the same count on both);
* an application asking at start for more than the keep holds is refused at build, naming the
  numbers, on both backends alike; a build directory made with ``--memory`` runs with that size
  and refuses another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ukernel_images import Images, build_images

from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.errors import InputError
from toolchain.measure.keep import (
    GUEST_MEMORY_MAX,
    GUEST_MEMORY_MIN,
    build_plan,
    check_guest_memory,
    parse_memory_size,
)
from toolchain.measure.plan import PLAN_FILE

ROOT = Path(__file__).resolve().parent.parent
KVM_MISSING = kvm_unavailable_reason()
MiB = 1 << 20
#: Grows linear memory one page at a time until memory.grow fails; exits with pages // 64.
GROW = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $n i32)
    (loop $more
      (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
        (then (local.set $n (i32.add (local.get $n) (i32.const 1))) (br $more))))
    (call $exit (i32.shr_u (local.get $n) (i32.const 6)))))
"""
#: Asks for 200 MiB of linear memory at start.
BIG_START = '(module (memory (export "memory") 3200) (func (export "_start")))'


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("memory")
    return build_images(base / "out", cache_dir=base / "cache")


def test_sizes_parse_and_are_bounded() -> None:
    assert parse_memory_size("512M") == 512 * MiB
    assert parse_memory_size("1GiB") == 1 << 30
    assert parse_memory_size("268435456") == 256 * MiB
    assert parse_memory_size("65536k") == 64 * MiB
    for bad in ("", "lots", "1.5G", "-1M"):
        with pytest.raises(InputError, match="not a number"):
            parse_memory_size(bad)
    check_guest_memory(GUEST_MEMORY_MIN)
    check_guest_memory(GUEST_MEMORY_MAX)
    for bad in (GUEST_MEMORY_MIN - 2 * MiB, GUEST_MEMORY_MAX + 2 * MiB, 129 * MiB):
        with pytest.raises(InputError, match="64 MiB to 4096 MiB in whole 2 MiB pages"):
            check_guest_memory(bad)


def test_memory_moves_the_stack_and_changes_the_measurement(images: Images) -> None:
    default = build_plan(images.ukernel, images.user)
    assert default.ram_size == 256 * MiB
    assert build_plan(images.ukernel, images.user, memory=256 * MiB) == default
    bigger = build_plan(images.ukernel, images.user, memory=512 * MiB)
    assert bigger.ram_size == 512 * MiB
    assert bigger.abi.stack_top == 512 * MiB
    assert bigger.abi.heap_end - default.abi.heap_end == 256 * MiB
    assert bigger.launch_digest(1) != default.launch_digest(1)
    with pytest.raises(InputError, match="whole 2 MiB pages"):
        build_plan(images.ukernel, images.user, memory=100 * MiB + 4096)


def _keep(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-c", "import sys; from keep.cli import main; sys.exit(main())"]
    return subprocess.run(
        [*command, *argv], input=stdin, capture_output=True, timeout=300, check=False
    )


@pytest.mark.kvm
@pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs /dev/kvm: {KVM_MISSING}")
def test_both_backends_share_the_limit_and_it_follows_the_size(tmp_path: Path) -> None:
    app = tmp_path / "grow.wat"
    app.write_text(GROW)
    grown: dict[tuple[str, str], int] = {}
    for memory in ("128M", "512M"):
        for backend in ("kvm", "nil"):
            done = _keep(
                "run", "--dev", "--quiet", "--backend", backend, "--memory", memory,
                "--build-dir", str(tmp_path / f"build-{memory}"), str(app),
            )  # fmt: skip
            assert done.stderr.count(b"\n") == 1, done.stderr  # only the verdict line
            grown[backend, memory] = done.returncode * 64
    assert grown["kvm", "128M"] == grown["nil", "128M"]
    assert grown["kvm", "512M"] == grown["nil", "512M"]
    assert 1500 < grown["kvm", "128M"] < 2048  # most of 128 MiB, never all of it
    assert 7500 < grown["kvm", "512M"] < 8192


@pytest.mark.parametrize("backend", ["kvm", "nil"])
def test_an_app_asking_for_more_than_the_keep_holds_is_refused_at_build(
    tmp_path: Path, backend: str
) -> None:
    app = tmp_path / "big.wat"
    app.write_text(BIG_START)
    done = _keep("run", "--dev", "--backend", backend, "--memory", "128M", str(app))
    assert done.returncode == 2
    assert (
        "the application asks for 3200 pages (200 MiB) of linear memory at start; a keep with "
        "128 MiB of guest memory holds at most " in done.stderr.decode()
    )
    assert "--memory" in done.stderr.decode()


def test_a_build_directory_keeps_its_memory_size(tmp_path: Path) -> None:
    app = tmp_path / "grow.wat"
    app.write_text(GROW)
    out = tmp_path / "keep"
    built = _keep("build", str(app), "--out", str(out), "--memory", "128M", "--vcpus", "1")
    assert built.returncode == 0, built.stderr
    plan = json.loads((out / PLAN_FILE).read_text())
    assert plan["ram_size"] == 128 * MiB
    statement = json.loads((out / "provenance.json").read_text())
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert external["memory"] == 128 * MiB
    refused = _keep("run", "--dev", "--backend", "nil", "--memory", "256M", str(out))
    assert refused.returncode == 2
    assert "differs from the 134217728 bytes" in refused.stderr.decode()
    ran = _keep("run", "--dev", "--quiet", "--backend", "nil", str(out))
    assert 1500 < ran.returncode * 64 < 2048, ran.stderr
