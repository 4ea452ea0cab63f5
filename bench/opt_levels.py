"""Optimisation level of the generated C: build time against run time, -O1 / -O2 / -Os.

Figures, side by side in one run (each level has its own cache keys, so each compiles):
  1. the ~1 MB module of bench_build.py: wasm2c + zig cc + link of the application image, per
     level, and the ring-3 image's size; peer: wasmtime.Module() on the same bytes;
  2. the CPU-bound programs of bench_run.py (bench/programs/*.c, wasm32-wasi) built per level and
     run as the keep's runtime image as a Linux process ("hostcheck", within ~5% of the keep):
     the in-program time of the kernel, median of the repetitions.
This is what kept -O2 the default of ``keep build --opt``.
It takes minutes (clang on 17 MB of C, three times), so ``nox -s bench`` leaves it out: run it
alone, ``.nox/tests/bin/python bench/opt_levels.py`` (after ``./noxw -s bench`` made the venv).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

LEVELS = ("O1", "O2", "Os")


def main() -> None:
    import wasmtime
    from bench_build import TARGET_BYTES, generate_module
    from bench_run import CPU_PROGRAMS, PROGRAMS, REPETITIONS, kernel_times
    from wasi_c.wasi_cc import HERE as WASI_C_DIR
    from wasi_c.wasi_cc import compile_wasi

    from toolchain.image.app import _wasm2c, build_app_image
    from toolchain.image.cache import BuildCache

    with tempfile.TemporaryDirectory(prefix="keep-bench-opt-") as scratch:
        base = Path(scratch)
        os.environ["KEEPSTACK_CACHE_DIR"] = str(base / "cache")
        functions = 4000
        wasm = bytes(wasmtime.wat2wasm(generate_module(functions)))
        functions = int(functions * TARGET_BYTES / len(wasm))
        wasm = bytes(wasmtime.wat2wasm(generate_module(functions)))
        module = base / "big.wasm"
        module.write_bytes(wasm)
        # Cache the runtime objects (hello) and wasm2c's output, so each level times its C only
        # (every level has its own cache key, so none reuses another's objects).
        build_app_image(ROOT / "examples" / "hello" / "hello.wat", base / "warm")
        (base / "w2c").mkdir()
        (base / "w2c" / "app.wasm").write_bytes(wasm)
        _wasm2c(base / "w2c" / "app.wasm", base / "w2c", BuildCache())
        started = time.perf_counter()
        wasmtime.Module(wasmtime.Engine(), wasm)
        jit = time.perf_counter() - started
        print(f"1. {len(wasm)}-byte module: app C build per level (runtime, wasm2c cached)")
        print(f"   {'level':6} {'build s':>8} {'/ wasmtime':>11} {'image MB':>9}")
        for level in LEVELS:
            out = base / f"big-{level}"
            started = time.perf_counter()
            image = build_app_image(module, out, opt=level)
            seconds = time.perf_counter() - started
            size = image.elf.path.stat().st_size / 1e6
            print(f"   -{level:5} {seconds:8.2f} {seconds / jit:10.1f}x {size:9.2f}")
        print(f"   peer: wasmtime.Module() {jit:.2f} s")

        print(f"2. bench/programs as hostcheck, kernel time (median of {REPETITIONS}), per level")
        print(f"   {'program':11}" + "".join(f" {'-' + level:>9}" for level in LEVELS))
        for name in CPU_PROGRAMS:
            wasm_path = compile_wasi(
                PROGRAMS / f"{name}.c", base / f"{name}.wasm", include_dirs=(PROGRAMS, WASI_C_DIR)
            )
            cells = []
            for level in LEVELS:
                out = base / f"{name}-{level}"
                build_app_image(wasm_path, out, hostcheck=True, opt=level)
                done = subprocess.run(
                    [str(out / "hostcheck.elf"), str(REPETITIONS)],
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=True,
                )
                cells.append(statistics.median(kernel_times(done.stdout)))
            print(f"   {name:11}" + "".join(f" {ms:7.2f}ms" for ms in cells))


if __name__ == "__main__":
    main()
