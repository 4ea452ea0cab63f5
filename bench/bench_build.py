"""Build benchmarks: cold `keep build`, no-op rebuild, and wasm2c + zig cc for a ~1 MB module.

Figures, each with its peer in the same run (ratios keep / peer):
  * cold `keep build examples/hello/hello.wat`, two ways: everything cold (empty build and tool
    caches: the runtime and microkernel objects compile too), and a cold *application* (its own
    steps all run; the app-independent objects were built once for this toolchain and these
    sources, by the build of another app, and are shared); peer: wasmtime compiling and
    serializing the same module (Module() + serialize(), its ahead-of-time path), in process
    and as whole processes (`keep build` vs a Python process running wasmtime);
  * the ~1 MB module, cold application; peer: wasmtime.Module() on the same bytes, i.e. what the
    `nil` backend pays per start, against our ahead-of-time translation paid once per build.
Targets (issue 15): cold hello <= 6x, 1 MB module <= 12x. Printed, never asserted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_BYTES = 1 << 20


def generate_module(functions: int) -> str:
    """A WASI command with many small arithmetic functions, all reachable from _start."""
    parts = ['(module (memory (export "memory") 1)']
    parts.extend(
        f"(func $f{i} (param i32 i32) (result i32) (local i32)"
        f" (local.set 2 (i32.mul (local.get 0) (i32.const {i * 2654435761 % 2**31})))"
        f" (if (i32.gt_u (local.get 2) (local.get 1)) (then (local.set 2"
        f" (i32.xor (local.get 2) (i32.rotl (local.get 1) (i32.const {i % 31}))))))"
        f" (i32.store (i32.and (local.get 2) (i32.const 0xfffc)) (local.get 2))"
        f" (i32.add (local.get 2) (i32.load (i32.and (local.get 1) (i32.const 0xfffc)))))"
        for i in range(functions)
    )
    calls = "".join(f" (drop (call $f{i} (i32.const {i}) (i32.const 7)))" for i in range(functions))
    parts.append(f'(func (export "_start"){calls}))')
    return "\n".join(parts)


def timed(label: str, action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"  {label:<44} {seconds:8.3f} s")
    return seconds


def median_of(runs: int, action: object) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def whole_process(base: Path, hello: Path, runs: int = 7) -> None:
    """`keep build` as a fresh process (cold application: a copy of a cache in which another
    app was built by a `keep` process, so hello's own steps run) against a fresh Python process
    that compiles the same module with wasmtime and writes the serialized code (its
    ahead-of-time path)."""
    keep = Path(sys.executable).parent / "keep"
    serialize = (
        "import sys, wasmtime\n"
        "engine = wasmtime.Engine()\n"
        "module = wasmtime.Module.from_file(engine, sys.argv[1])\n"
        "open(sys.argv[2], 'wb').write(module.serialize())\n"
    )
    ours, theirs = [], []
    for run in range(runs):
        cache = base / f"cache-run{run}"
        shutil.copytree(base / "cache-other-app", cache)
        env = {**os.environ, "KEEPSTACK_CACHE_DIR": str(cache)}
        argv = [str(keep), "build", str(hello), "--out", str(base / f"process-{run}")]
        started = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        ours.append(time.perf_counter() - started)
        argv = [sys.executable, "-c", serialize, str(hello), str(base / f"hello-{run}.cwasm")]
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        theirs.append(time.perf_counter() - started)
    keep_s, peer_s = statistics.median(ours), statistics.median(theirs)
    print(f"  whole process, median of {runs}:")
    print(f"  {'keep build, cold application':<44} {keep_s:8.3f} s")
    print(f"  {'peer: python + wasmtime compile + serialize':<44} {peer_s:8.3f} s")
    print(f"  {'keep / peer (target 6)':<44} {keep_s / peer_s:8.1f} x")


def main() -> None:
    import wasmtime

    with tempfile.TemporaryDirectory(prefix="keep-bench-") as scratch:
        base = Path(scratch)
        os.environ["KEEPSTACK_CACHE_DIR"] = str(base / "cache")  # cold caches (zig's too)
        from toolchain.image import app, keep_build
        from toolchain.image.compile import jobs as compile_jobs

        hello = ROOT / "examples" / "hello" / "hello.wat"
        other = ROOT / "examples" / "cpu" / "fib.wat"
        print(f"keep build examples/hello/hello.wat ({compile_jobs()} compiler processes at once)")
        clean = timed(
            "cold: every cache empty", lambda: keep_build.build_keep(hello, base / "cold")
        )
        noop = timed("no-op rebuild", lambda: keep_build.build_keep(hello, base / "cold"))
        print(f"  {'cold / no-op':<44} {clean / noop:8.1f} x")
        # A cache in which another app was built: hello's own steps are all cold. Built by a
        # `keep` process, so the cache holds what a user's earlier build leaves in it: the
        # shared objects and the pinned tools' hash memo (this process hashed the tools once,
        # for the first cache, and remembers them in memory only). Whole processes start from
        # a copy taken before hello is built here (else its objects would be cached).
        os.environ["KEEPSTACK_CACHE_DIR"] = str(base / "cache-app")
        keep = Path(sys.executable).parent / "keep"
        argv = [str(keep), "build", str(other), "--out", str(base / "other")]
        subprocess.run(argv, capture_output=True, check=True)
        shutil.copytree(base / "cache-app", base / "cache-other-app")
        cold_app = timed(
            "cold application (shared objects built)",
            lambda: keep_build.build_keep(hello, base / "cold-app"),
        )
        module = bytes(wasmtime.wat2wasm(hello.read_text()))
        peer = median_of(5, lambda: wasmtime.Module(wasmtime.Engine(), module).serialize())
        print(f"  {'peer: wasmtime Module() + serialize()':<44} {peer:8.3f} s")
        print(f"  {'cold application / peer':<44} {cold_app / peer:8.1f} x")
        whole_process(base, hello)

        functions = 4000
        wat = generate_module(functions)
        wasm = bytes(wasmtime.wat2wasm(wat))
        functions = int(functions * TARGET_BYTES / len(wasm))
        wasm = bytes(wasmtime.wat2wasm(generate_module(functions)))
        module_path = base / "big.wasm"
        module_path.write_bytes(wasm)
        print(f"1 MB module: {len(wasm)} bytes, {functions} functions")
        from toolchain.image.cache import BuildCache

        (base / "w2c").mkdir()
        (base / "w2c" / "app.wasm").write_bytes(wasm)
        timed(
            "wasm2c alone",
            lambda: app._wasm2c(base / "w2c" / "app.wasm", base / "w2c", BuildCache(enabled=False)),
        )
        aot = timed(
            "wasm2c + zig cc + link (cold application)",
            lambda: app.build_app_image(module_path, base / "big"),
        )
        timed("  the same again (cached)", lambda: app.build_app_image(module_path, base / "big"))
        image = app.build_app_image(module_path, base / "big")
        c_size = sum(a.path.stat().st_size for a in image.c_sources)
        print(f"  {'generated C':<44} {c_size / 1e6:8.1f} MB in {len(image.c_sources)} files")
        print(f"  {'ring-3 image':<44} {image.elf.path.stat().st_size / 1e6:8.2f} MB")
        jit = timed(
            "peer: wasmtime Module() (Cranelift JIT)",
            lambda: wasmtime.Module(wasmtime.Engine(), wasm),
        )
        print(f"  {'ours / wasmtime (target 12)':<44} {aot / jit:8.1f} x")


if __name__ == "__main__":
    main()
