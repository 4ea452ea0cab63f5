"""Application ``.wasm``/``.wat`` → a static ring-3 x86-64 ELF image for the keep.

Steps, each a deterministic, cached step:

1. ``.wat`` is assembled (wasmtime's ``wat2wasm``); the binary is validated by wasmtime; its
   imports must be WASI preview 1 functions of the right types, and it must export ``_start``
   (and ``memory`` when it uses WASI).
2. ``wasm2c`` (pinned WABT) translates it to ``app.c``/``app.h``; ``entry.c`` instantiates it.
3. ``zig cc`` compiles the application, the wasm2c runtime, the WASI layer, the libc shim and the
   glue (``runtime/guest/wasm``) for ring 3; ``zig ld.lld`` links them at the user image address of
   ``runtime/guest/ukernel/ABI.md`` with ``runtime/guest/wasm/user.ld``.

The application-independent objects (wasm2c runtime, WASI layer, libc shim, glue, platform files)
depend only on the toolchain and their sources: the build cache keys them by exactly that, so they
are compiled once and shared by every application. Every compile of a build goes to one pool (at
most ``compile.jobs()`` compilers at a time); wasm2c runs meanwhile. Outputs do not depend on the
scheduling.

Optimisation of the generated C (``opt``): ``O2`` by default (every released keep was built so),
``O1`` or ``Os`` on request (``keep build --opt``). Only the application's generated C is affected,
never the runtime, and a level other than ``-O2`` is recorded in the provenance. Measured on the
~1 MB module of bench/bench_build.py (bench/opt_levels.py, bench/README.md): ``-O1`` saves about
15% of the compile time of wasm2c's output (clang spends it on the sheer size at any level) and
costs run time, so it does not earn a place as the default.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError, PlatformError
from toolchain.image import tools
from toolchain.image.cache import BuildCache, sha256_file, step_key
from toolchain.image.compile import RING3, compile_c, jobs, link
from toolchain.image.wasm_info import FuncType, ModuleInfo, read_module_info

#: The address the runtime image is linked at (ABI.md: KEEP_USER_BASE).
USER_IMAGE_BASE = 0x0100_0000

SOURCE_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIR = SOURCE_ROOT / "runtime" / "guest" / "wasm"
UKERNEL_INCLUDE = SOURCE_ROOT / "runtime" / "guest" / "ukernel" / "include"
LINKER_SCRIPT = RUNTIME_DIR / "user.ld"

#: Our runtime sources common to both link targets, plus one platform file per target.
RUNTIME_SOURCES = (
    "glue.c",
    "libc.c",
    "wasi.c",
    "wasi_fs.c",
    "keep_fs.c",
    "keep_trees.c",
    "sha512.c",
    "keep_linear.c",
)
KEEP_PLATFORM = "keep_hc.c"
HOSTCHECK_PLATFORM = "hostcheck.c"
WASM2C_RUNTIME_SOURCES = ("wasm-rt-impl.c", "wasm-rt-mem-impl.c")

#: Flags for everything that includes wasm-rt.h: C99 (so wasm-rt.h wants neither pthreads nor
#: _Thread_local), no thread-local storage (the keep sets up no FS base), and one configuration.
#: ``-fno-optimize-sibling-calls`` also switches off LLVM's tail-recursion elimination: every wasm
#: call stays a machine call that uses stack, so unbounded recursion reaches the stack guard
#: (the only exhaustion check, keep_rt_config.h) and traps, as in wasmtime, instead of becoming
#: an endless loop (``f(n) = f(n + 1) + n`` is otherwise turned into one).
WASM2C_FLAGS = (
    "-std=gnu99",
    "-fno-optimize-sibling-calls",
    "-D__thread=",
    "-DNDEBUG",
    "-include",
    "keep_rt_config.h",
    "-Wno-keyword-macro",
)
OWN_FLAGS = ("-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter")

WASI_MODULE = "wasi_snapshot_preview1"
_I, _L = "i32", "i64"
#: WASI preview 1: name → (params, results). Mirrors runtime/guest/wasm/keep_wasi.h.
WASI_SIGNATURES: dict[str, FuncType] = {
    name: FuncType(tuple(params), tuple(results))
    for name, params, results in (
        ("args_get", [_I, _I], [_I]),
        ("args_sizes_get", [_I, _I], [_I]),
        ("environ_get", [_I, _I], [_I]),
        ("environ_sizes_get", [_I, _I], [_I]),
        ("clock_res_get", [_I, _I], [_I]),
        ("clock_time_get", [_I, _L, _I], [_I]),
        ("fd_advise", [_I, _L, _L, _I], [_I]),
        ("fd_allocate", [_I, _L, _L], [_I]),
        ("fd_close", [_I], [_I]),
        ("fd_datasync", [_I], [_I]),
        ("fd_fdstat_get", [_I, _I], [_I]),
        ("fd_fdstat_set_flags", [_I, _I], [_I]),
        ("fd_fdstat_set_rights", [_I, _L, _L], [_I]),
        ("fd_filestat_get", [_I, _I], [_I]),
        ("fd_filestat_set_size", [_I, _L], [_I]),
        ("fd_filestat_set_times", [_I, _L, _L, _I], [_I]),
        ("fd_pread", [_I, _I, _I, _L, _I], [_I]),
        ("fd_prestat_get", [_I, _I], [_I]),
        ("fd_prestat_dir_name", [_I, _I, _I], [_I]),
        ("fd_pwrite", [_I, _I, _I, _L, _I], [_I]),
        ("fd_read", [_I, _I, _I, _I], [_I]),
        ("fd_readdir", [_I, _I, _I, _L, _I], [_I]),
        ("fd_renumber", [_I, _I], [_I]),
        ("fd_seek", [_I, _L, _I, _I], [_I]),
        ("fd_sync", [_I], [_I]),
        ("fd_tell", [_I, _I], [_I]),
        ("fd_write", [_I, _I, _I, _I], [_I]),
        ("path_create_directory", [_I, _I, _I], [_I]),
        ("path_filestat_get", [_I, _I, _I, _I, _I], [_I]),
        ("path_filestat_set_times", [_I, _I, _I, _I, _L, _L, _I], [_I]),
        ("path_link", [_I, _I, _I, _I, _I, _I, _I], [_I]),
        ("path_open", [_I, _I, _I, _I, _I, _L, _L, _I, _I], [_I]),
        ("path_readlink", [_I, _I, _I, _I, _I, _I], [_I]),
        ("path_remove_directory", [_I, _I, _I], [_I]),
        ("path_rename", [_I, _I, _I, _I, _I, _I], [_I]),
        ("path_symlink", [_I, _I, _I, _I, _I], [_I]),
        ("path_unlink_file", [_I, _I, _I], [_I]),
        ("poll_oneoff", [_I, _I, _I, _I], [_I]),
        ("proc_exit", [_I], []),
        ("proc_raise", [_I], [_I]),
        ("sched_yield", [], [_I]),
        ("random_get", [_I, _I], [_I]),
        ("sock_accept", [_I, _I, _I], [_I]),
        ("sock_recv", [_I, _I, _I, _I, _I, _I], [_I]),
        ("sock_send", [_I, _I, _I, _I, _I], [_I]),
        ("sock_shutdown", [_I, _I], [_I]),
    )
}

_ENTRY_TEMPLATE = """\
/* Generated by toolchain/image/app.py: instantiate the application and run its _start. */
#include "app.h"
#include "keep_runtime.h"
{wasi_include}
int keep_app_run(void) {{
    static w2c_app app;
    wasm2c_app_instantiate(&app{wasi_arg});
{bind_memory}    w2c_app_0x5Fstart(&app);
    return 0;
}}
"""


@dataclass(frozen=True)
class Artifact:
    """One file of a build and its digests."""

    path: Path
    sha256: str
    sha384: str

    @classmethod
    def of(cls, path: Path) -> Artifact:
        data = path.read_bytes()
        return cls(path, hashlib.sha256(data).hexdigest(), hashlib.sha384(data).hexdigest())


@dataclass(frozen=True)
class AppImage:
    """The outputs of ``build_app_image``: paths and digests."""

    wasm: Artifact  # the validated binary module (assembled when the input was .wat)
    c_sources: tuple[Artifact, ...]  # wasm2c's app.c (or app_0.c ... for a big module)
    c_headers: tuple[Artifact, ...]  # app.h (and app-impl.h)
    entry_source: Artifact  # generated entry.c
    objects: tuple[Artifact, ...]  # one object per C file of the application
    elf: Artifact  # the linked ring-3 image
    runtime_objects: tuple[Artifact, ...]  # everything else linked into the image
    app_flags: tuple[str, ...] = ()  # flags added for the generated C (an -O level other than -O2)

    @property
    def c_source(self) -> Artifact:
        """The (first) generated C file."""
        return self.c_sources[0]

    @property
    def object(self) -> Artifact:
        """The (first) application object."""
        return self.objects[0]

    def artifacts(self) -> tuple[Artifact, ...]:
        return (
            self.wasm,
            *self.c_sources,
            *self.c_headers,
            self.entry_source,
            *self.objects,
            *self.runtime_objects,
            self.elf,
        )


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def load_wasm(source: Path) -> bytes:
    """The binary module of a ``.wasm`` or ``.wat`` file, validated by wasmtime."""
    import wasmtime

    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from exc
    if not data.startswith(b"\0asm"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{source} is neither a WebAssembly binary nor UTF-8 text") from None
        try:
            data = bytes(wasmtime.wat2wasm(text))
        except wasmtime.WasmtimeError as exc:
            raise InputError(f"{source}: invalid WebAssembly text: {_one_line(str(exc))}") from None
    try:
        wasmtime.Module.validate(wasmtime.Engine(), data)
    except wasmtime.WasmtimeError as exc:
        raise InputError(f"{source}: invalid WebAssembly module: {_one_line(str(exc))}") from None
    return bytes(data)


def check_interface(info: ModuleInfo, source: Path) -> bool:
    """The module only imports WASI preview 1 and is a command; returns whether it uses WASI."""
    for imp in info.imports:
        where = f"{source}: import {imp.module}.{imp.name}"
        if imp.module != WASI_MODULE:
            raise InputError(f"{where}: the keep provides only {WASI_MODULE} imports")
        if imp.kind != "func":
            raise InputError(f"{where} is a {imp.kind}; WASI imports are functions")
        expected = WASI_SIGNATURES.get(imp.name)
        if expected is None:
            raise InputError(f"{where}: not a {WASI_MODULE} function")
        if imp.type != expected:
            raise InputError(f"{where} has type {imp.type}, WASI defines {expected}")
    start = info.export("_start")
    if start is None or start.kind != "func":
        raise InputError(f"{source}: exports no _start function (a WASI command is required)")
    if start.type != FuncType((), ()):
        raise InputError(f"{source}: _start has type {start.type}, expected () -> ()")
    if info.memories > 1:  # the keep guards one: runtime/guest/wasm/keep_linear.c
        raise InputError(
            f"{source}: declares {info.memories} memories; a keep gives a module one linear "
            f"memory (multi-memory is not supported)"
        )
    uses_wasi = bool(info.imports)
    memory = info.export("memory")
    if uses_wasi and (memory is None or memory.kind != "memory"):
        raise InputError(f"{source}: imports WASI but exports no memory named 'memory'")
    return uses_wasi


def _entry_source(uses_wasi: bool) -> str:
    return _ENTRY_TEMPLATE.format(
        wasi_include='#include "keep_wasi.h"\n' if uses_wasi else "",
        wasi_arg=", keep_wasi_instance()" if uses_wasi else "",
        bind_memory="    keep_wasi_bind_memory(w2c_app_memory(&app));\n" if uses_wasi else "",
    )


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write only when different, so an unchanged file keeps its identity for the cache."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.write_bytes(data)


#: wasm2c splits a module's C into one file per this many bytes of wasm (at most MAX_C_FILES),
#: so big modules compile in parallel and recompile in parts.
WASM_BYTES_PER_C_FILE = 256 * 1024
MAX_C_FILES = 8


def c_file_count(wasm_size: int) -> int:
    """How many C files wasm2c writes for a module of this size (a function of the size only)."""
    return max(1, min(MAX_C_FILES, -(-wasm_size // WASM_BYTES_PER_C_FILE)))


def _wasm2c(wasm_path: Path, out_dir: Path, cache: BuildCache) -> tuple[list[Path], list[Path]]:
    """Run wasm2c; returns (C files, headers)."""
    tool = tools.wasm2c()
    wasm = wasm_path.read_bytes()
    count = c_file_count(len(wasm))
    if count == 1:
        c_files, headers, extra = [out_dir / "app.c"], [out_dir / "app.h"], []
    else:
        c_files = [out_dir / f"app_{i}.c" for i in range(count)]
        headers = [out_dir / "app.h", out_dir / "app-impl.h"]
        extra = [f"--num-outputs={count}"]
    key = step_key("wasm2c", tool.describe(), "-n app", *extra, wasm)
    hit = cache.lookup(key)
    if hit is not None and all(p.name in hit.outputs for p in (*c_files, *headers)):
        for path in (*c_files, *headers):
            hit.restore(path.name, path)
        return c_files, headers
    from toolchain.image.compile import build_env

    tools.run_tool(
        [str(tool.path), wasm_path.name, "-n", "app", "-o", "app.c", *extra],
        env=build_env(),
        cwd=out_dir,
    )
    cache.store(key, {p.name: p for p in (*c_files, *headers)})
    return c_files, headers


#: The optimisation levels of the application's generated C; ``O2`` is the default.
OPT_LEVELS = ("O1", "O2", "Os")


def app_opt_flags(opt: str) -> tuple[str, ...]:
    """The flags added to the target's (which say ``-O2``) for a module's generated C."""
    if opt not in OPT_LEVELS:
        raise InputError(f"unknown optimisation level {opt!r} (known: {', '.join(OPT_LEVELS)})")
    # -O2 adds nothing, so the objects and cache keys of every module are what they always were.
    return _LEVEL_FLAGS[opt]


#: ``zig cc`` reads -O1 as its ReleaseFast mode and hands clang -O2 (it knows only Debug, -Os
#: and "fast"), so -O1 goes to clang's cc1 itself, where the last -O wins.
_LEVEL_FLAGS: dict[str, tuple[str, ...]] = {"O1": ("-Xclang", "-O1"), "O2": (), "Os": ("-Os",)}


def _remove_stale(out_dir: Path, current: set[str]) -> None:
    """Drop generated files of an earlier build of another module (they would never be linked,
    but ``out_dir`` must hold exactly what this build made)."""
    for pattern in ("app*.c", "app*.h", "obj/app*.o"):
        for path in out_dir.glob(pattern):
            if path.name not in current and path.with_suffix(".c").name not in current:
                path.unlink()


def runtime_dir(source_root: Path | None = None) -> Path:
    """``runtime/guest/wasm`` of the source tree at ``source_root`` (default: beside the
    package)."""
    return RUNTIME_DIR if source_root is None else Path(source_root) / "runtime" / "guest" / "wasm"


def _include_dirs(source_root: Path | None = None) -> list[Path]:
    runtime = tools.wasm2c_runtime()
    sources = runtime_dir(source_root)
    ukernel_include = (
        UKERNEL_INCLUDE
        if source_root is None
        else Path(source_root) / "runtime" / "guest" / "ukernel" / "include"
    )
    return [
        sources / "include",
        sources,
        ukernel_include,
        runtime.directory,
        runtime.directory.parent / "include",  # simde, for modules with SIMD
    ]


def _submit_runtime(
    pool: ThreadPoolExecutor, obj_dir: Path, cache: BuildCache, *, source_root: Path | None = None
) -> dict[str, Future[Path]]:
    """Start compiling the application-independent objects; futures by source file name."""
    sources = runtime_dir(source_root)
    if not sources.is_dir():
        raise PlatformError(f"the runtime sources are missing: {sources}")
    runtime = tools.wasm2c_runtime()
    includes = _include_dirs(source_root)
    units: list[tuple[Path, tuple[str, ...]]] = [
        (runtime.directory / name, WASM2C_FLAGS) for name in WASM2C_RUNTIME_SOURCES
    ]
    units += [
        (sources / name, (*WASM2C_FLAGS, *OWN_FLAGS))
        for name in (*RUNTIME_SOURCES, KEEP_PLATFORM, HOSTCHECK_PLATFORM)
    ]
    return {
        source.name: pool.submit(
            compile_c,
            source,
            obj_dir / source.name.replace(".c", ".o"),
            flags=flags,
            include_dirs=includes,
            target=RING3,
            cache=cache,
        )
        for source, flags in units
    }


def _compile_runtime(
    obj_dir: Path, cache: BuildCache, *, source_root: Path | None = None
) -> dict[str, Path]:
    """The application-independent objects, by source file name."""
    with ThreadPoolExecutor(max_workers=4 * jobs() + 8) as pool:
        futures = _submit_runtime(pool, obj_dir, cache, source_root=source_root)
        return {name: future.result() for name, future in futures.items()}


def build_app_image(
    wasm: Path,
    out_dir: Path,
    *,
    hostcheck: bool = False,
    cache: BuildCache | None = None,
    source_root: Path | None = None,
    opt: str = "O2",
) -> AppImage:
    """Build the ring-3 image of an application (``out_dir/app.elf``) from ``.wasm``/``.wat``.

    With ``hostcheck=True`` also link ``out_dir/hostcheck.elf``, the same runtime as a static
    Linux executable (for tests; never part of a keep). ``source_root`` is the source tree whose
    ``runtime/`` is built (default: the tree beside the package). ``opt`` is the optimisation
    level of the generated C (see the module docstring).
    """
    source = Path(wasm)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_cache = cache if cache is not None else BuildCache()
    binary = load_wasm(source)
    uses_wasi = check_interface(read_module_info(binary), source)
    app_flags = app_opt_flags(opt)

    obj_dir = out_dir / "obj"
    includes = _include_dirs(source_root)
    # Threads only wait for compiler processes; compile.jobs() bounds how many run at once.
    with ThreadPoolExecutor(max_workers=4 * jobs() + 8) as pool:
        runtime_futures = _submit_runtime(pool, obj_dir, build_cache, source_root=source_root)
        generated = _generate_c(out_dir, binary, uses_wasi, build_cache)
        app_units: list[tuple[Path, Path, tuple[str, ...]]] = [
            (c, obj_dir / f"{c.stem}.o", (*WASM2C_FLAGS, *app_flags)) for c in generated.c_files
        ]
        app_units.append((generated.entry, obj_dir / "entry.o", (*WASM2C_FLAGS, *OWN_FLAGS)))
        futures = [
            pool.submit(
                compile_c,
                source,
                obj,
                flags=flags,
                include_dirs=includes,
                target=RING3,
                cache=build_cache,
            )
            for source, obj, flags in app_units
        ]
        *app_objs, entry_obj = [f.result() for f in futures]
        runtime_objects = {name: f.result() for name, f in runtime_futures.items()}
    elf = _link_images(
        [*app_objs, entry_obj],
        runtime_objects,
        out_dir,
        build_cache,
        hostcheck=hostcheck,
        source_root=source_root,
    )
    linked_runtime = sorted(
        (runtime_objects[n] for n in (*WASM2C_RUNTIME_SOURCES, *RUNTIME_SOURCES, KEEP_PLATFORM)),
        key=lambda p: p.name,
    )
    return AppImage(
        wasm=Artifact.of(generated.wasm),
        c_sources=tuple(Artifact.of(p) for p in generated.c_files),
        c_headers=tuple(Artifact.of(p) for p in generated.headers),
        entry_source=Artifact.of(generated.entry),
        objects=tuple(Artifact.of(p) for p in app_objs),
        elf=Artifact.of(elf),
        runtime_objects=tuple(Artifact.of(p) for p in (entry_obj, *linked_runtime)),
        app_flags=app_flags,
    )


@dataclass(frozen=True)
class _GeneratedC:
    """The files written into ``out_dir`` for one module, before anything is compiled."""

    wasm: Path  # app.wasm, the binary module wasm2c reads
    c_files: list[Path]
    headers: list[Path]
    entry: Path  # entry.c


def _generate_c(out_dir: Path, binary: bytes, uses_wasi: bool, cache: BuildCache) -> _GeneratedC:
    """Write app.wasm, translate it with wasm2c and write entry.c; drop an earlier module's."""
    wasm_path = out_dir / "app.wasm"
    _write_if_changed(wasm_path, binary)
    c_files, headers = _wasm2c(wasm_path, out_dir, cache)
    _remove_stale(out_dir, {p.name for p in (*c_files, *headers)})
    entry_path = out_dir / "entry.c"
    _write_if_changed(entry_path, _entry_source(uses_wasi).encode())
    return _GeneratedC(wasm_path, c_files, headers, entry_path)


def _link_images(
    app_objects: list[Path],
    runtime_objects: dict[str, Path],
    out_dir: Path,
    cache: BuildCache,
    *,
    hostcheck: bool,
    source_root: Path | None,
) -> Path:
    """Link ``out_dir/app.elf`` (and, with ``hostcheck``, ``hostcheck.elf``); the keep's image.

    Both link the same objects but for the platform layer: hypercalls, or Linux system calls.
    """
    linker_script = runtime_dir(source_root) / "user.ld"
    common = [
        *app_objects,
        *(runtime_objects[n] for n in (*WASM2C_RUNTIME_SOURCES, *RUNTIME_SOURCES)),
    ]
    elf = link(
        [*common, runtime_objects[KEEP_PLATFORM]],
        out_dir / "app.elf",
        linker_script=linker_script,
        cache=cache,
    )
    if hostcheck:
        link(
            [*common, runtime_objects[HOSTCHECK_PLATFORM]],
            out_dir / "hostcheck.elf",
            linker_script=linker_script,
            cache=cache,
        )
    return elf


def runtime_source_digests() -> dict[str, str]:
    """name → SHA-256 of every trusted runtime source (for provenance)."""
    files = sorted(
        p for p in RUNTIME_DIR.rglob("*") if p.is_file() and p.suffix in {".c", ".h", ".ld"}
    )
    return {
        f"runtime/guest/wasm/{p.relative_to(RUNTIME_DIR).as_posix()}": sha256_file(p) for p in files
    }
