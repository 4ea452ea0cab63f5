"""Build benchmarks: clean `keep build`, no-op rebuild, and wasm2c + zig cc for a ~1 MB module.

Peer in the same run: wasmtime (Cranelift) compiling the same 1 MB module, i.e. what the `nil`
backend pays per start, against our ahead-of-time translation paid once per build.
"""

from __future__ import annotations

import os
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


def main() -> None:
    import wasmtime

    with tempfile.TemporaryDirectory(prefix="keep-bench-") as scratch:
        base = Path(scratch)
        os.environ["KEEPSTACK_CACHE_DIR"] = str(base / "cache")  # cold caches (zig's too)
        from toolchain.build import app, keep_build

        hello = ROOT / "examples" / "hello" / "hello.wat"
        print("keep build examples/hello/hello.wat")
        clean = timed(
            "clean build (cold caches)", lambda: keep_build.build_keep(hello, base / "out")
        )
        noop = timed("no-op rebuild", lambda: keep_build.build_keep(hello, base / "out"))
        print(f"  {'clean / no-op':<44} {clean / noop:8.1f} x")

        functions = 4000
        wat = generate_module(functions)
        wasm = bytes(wasmtime.wat2wasm(wat))
        functions = int(functions * TARGET_BYTES / len(wasm))
        wasm = bytes(wasmtime.wat2wasm(generate_module(functions)))
        module_path = base / "big.wasm"
        module_path.write_bytes(wasm)
        print(f"1 MB module: {len(wasm)} bytes, {functions} functions")
        from toolchain.build.cache import BuildCache

        (base / "w2c").mkdir()
        (base / "w2c" / "app.wasm").write_bytes(wasm)
        timed(
            "wasm2c alone",
            lambda: app._wasm2c(base / "w2c" / "app.wasm", base / "w2c", BuildCache(enabled=False)),
        )
        aot = timed(
            "wasm2c + zig cc + link (cold cache)",
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
        print(f"  {'ours / wasmtime':<44} {aot / jit:8.1f} x")


if __name__ == "__main__":
    main()
