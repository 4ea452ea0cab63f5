"""Compile a C test or benchmark program to a wasm32-wasi command with the pinned ``zig cc``.

The compiler is the one the keep build uses (``toolchain.image.tools.zig``, checked against its
wheel's RECORD), run in the same scrubbed environment (``toolchain.image.compile.build_env``).
Flags are fixed and name no build path, so a program compiles to the same bytes everywhere; the
result is cached by (zig identity, flags, source and header bytes) in the build cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toolchain.image import tools
from toolchain.image.cache import BuildCache, step_key
from toolchain.image.compile import build_env

HERE = Path(__file__).resolve().parent

#: wasi-libc (musl) comes with zig; libm is part of it. -s drops the name and debug sections.
WASI_CFLAGS = (
    "-target",
    "wasm32-wasi",
    "-O2",
    "-g0",
    "-s",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Werror=date-time",
    "-fno-ident",
)


def compile_wasi(
    source: Path,
    output: Path,
    *,
    include_dirs: Sequence[Path] = (HERE,),
    extra_flags: Sequence[str] = (),
    cache: BuildCache | None = None,
) -> Path:
    """``source`` (one C file) → ``output`` (a WASI preview 1 command module).

    ``extra_flags`` go after the fixed ones (e.g. ``-Wl,-z,stack-size=65536``: zig's default
    wasm stack is 16 MiB, so every module starts with 257 pages of linear memory).
    """
    source = Path(source).resolve()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    zig = tools.zig()
    headers = sorted(h for d in include_dirs for h in Path(d).glob("*.h"))
    # Every directory appears by a fixed name, so the module is the same wherever it is built.
    prefix_maps = [f"-ffile-prefix-map={source.parent}=/src"] + [
        f"-ffile-prefix-map={Path(d).resolve()}=/include{i}" for i, d in enumerate(include_dirs)
    ]
    flags = [
        *WASI_CFLAGS,
        *prefix_maps,
        *(f"-I{Path(d).resolve()}" for d in include_dirs),
        *extra_flags,
    ]
    key = step_key(
        "wasi-cc",
        zig.describe(),
        *WASI_CFLAGS,
        *extra_flags,
        source.name,
        source.read_bytes(),
        *(part for h in headers for part in (h.name, h.read_bytes())),
    )
    build_cache = cache if cache is not None else BuildCache()
    hit = build_cache.lookup(key)
    if hit is not None and "module.wasm" in hit.outputs:
        hit.restore("module.wasm", output)
        return output
    tools.run_tool(
        [str(zig.path), "cc", *flags, source.name, "-o", str(output.resolve())],
        env=build_env(),
        cwd=source.parent,
    )
    build_cache.store(key, {"module.wasm": output})
    return output
