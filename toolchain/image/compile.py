"""The one deterministic compile/link helper (C and assembly, x86-64), used by every build.

Usage::

    from toolchain.image.compile import RING0, RING3, compile_c, link

    obj = compile_c(Path("entry.S"), out / "entry.o", target=RING0, include_dirs=[inc])
    obj2 = compile_c(Path("main.c"), out / "main.o", flags=["-DFOO=1"], target=RING0)
    elf = link([obj, obj2], out / "kernel.elf", linker_script=Path("kernel.ld"))

What makes the output a function of the inputs only:

* the pinned ``zig cc`` (clang) and ``zig ld.lld`` from the ``ziglang`` wheel, never a system tool;
* fixed flags per target (``-mcpu`` pinned to the x86-64 baseline: SSE2 only, no SSE4.1+), ``-g0``,
  ``-fno-ident``, no unwind tables, ``-Werror=date-time`` (``__DATE__``/``__TIME__`` are errors);
* ``-ffile-prefix-map`` maps the source's directory (``source_root``) to ``/keepstack``, so no
  build path leaks into an object;
* a scrubbed environment: only ``LC_ALL=C``, ``TZ=UTC``, ``SOURCE_DATE_EPOCH=0``, ``PATH`` and a
  private ``ZIG_GLOBAL_CACHE_DIR``/``ZIG_LOCAL_CACHE_DIR``;
* link inputs sorted by file name; ``--build-id=none``; the linker script decides the layout.

Each compile is one cached step (see ``toolchain.image.cache``): the key covers the tool identity,
the target, the flags and the source bytes; headers found by the compiler's depfile are re-checked
by digest on every lookup. A no-op rebuild therefore only hashes files.

``compile_c`` and ``link`` may be called from many threads at once (the builds submit their
independent compiles to a pool): at most ``jobs()`` tool processes run at a time, each in its own
scratch directory, so neither the order nor the bytes of any output depend on the scheduling.

Every failure is a ``toolchain.errors`` exception: a missing tool is ``PlatformError``; a source or
object that does not compile or link is ``InputError`` carrying the compiler's message.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError, PlatformError
from toolchain.image import tools
from toolchain.image.cache import BuildCache, restore, step_key

#: The path every source directory appears as inside objects (via -ffile-prefix-map).
PREFIX = "/keepstack"

#: The CPU model every target is compiled for: the x86-64 baseline (SSE2; no SSE4.1 and later).
CPU = "x86_64"

_COMMON_FLAGS = (
    "-std=gnu11",
    "-O2",
    "-g0",
    "-fno-ident",
    "-fno-pic",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-common",
    "-ffreestanding",
    "-fno-strict-aliasing",
    "-Werror=date-time",
    "-Wno-unused-command-line-argument",
)


@dataclass(frozen=True)
class Target:
    """A compilation target: triple, pinned CPU and the flags that define the ABI."""

    name: str
    triple: str
    cpu: str
    flags: tuple[str, ...]

    def compiler_flags(self) -> tuple[str, ...]:
        """Everything passed to ``zig cc`` for this target, before per-call flags."""
        return ("-target", self.triple, f"-mcpu={self.cpu}", *_COMMON_FLAGS, *self.flags)


#: Ring-0 microkernel code: no SSE/x87 registers at all (the PVM emulator dies on SSE in ring 0),
#: no red zone (interrupts arrive on the same stack). ``zig cc`` silently drops
#: ``-mgeneral-regs-only`` (a struct copy still compiles to movups/xmm), so the SSE, MMX and x87
#: features are also switched off one by one; tests/test_ukernel.py checks the generated code.
RING0 = Target(
    "ring0",
    "x86_64-freestanding-none",
    CPU,
    (
        "-mgeneral-regs-only",
        "-mno-red-zone",
        "-mno-mmx",
        "-mno-sse",
        "-mno-sse2",
        "-mno-80387",
    ),
)

#: Ring-3 runtime and application code: the normal x86-64 SysV ABI, SSE2 allowed.
#: The same objects link into the keep image and into the Linux "hostcheck" executable.
#: Stack clash protection: a frame larger than a page touches every page as it grows, so no
#: frame steps over the one-page guard below the ring-3 stack, whose fault is the only stack
#: exhaustion check (runtime/guest/wasm/keep_rt_config.h). The driver flag is silently dropped for a
#: freestanding triple (clang renders it for Linux and FreeBSD only), so it goes straight to
#: cc1; tests/test_build_compile.py checks the probes in the generated code.
RING3 = Target("ring3", "x86_64-freestanding-none", CPU, ("-Xclang", "-fstack-clash-protection"))

TARGETS: dict[str, Target] = {t.name: t for t in (RING0, RING3)}


def _target(target: Target | str) -> Target:
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except KeyError:
        known = ", ".join(TARGETS)
        raise InputError(f"unknown compile target {target!r} (known: {known})") from None


def build_env() -> dict[str, str]:
    """The scrubbed environment every tool runs in."""
    from toolchain.state import cache_dir

    zig_cache = str(cache_dir("zig"))
    return {
        "PATH": os.defpath,
        "LC_ALL": "C",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": "0",
        "ZIG_GLOBAL_CACHE_DIR": zig_cache,
        "ZIG_LOCAL_CACHE_DIR": zig_cache,
    }


def jobs() -> int:
    """How many compiler or linker processes run at once: the cores this process may use
    (``KEEPSTACK_BUILD_JOBS`` overrides, at least 1; read once, when this module is imported)."""
    override = os.environ.get("KEEPSTACK_BUILD_JOBS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: Bounds the tool processes of every thread of this process (see ``jobs``).
_SLOTS = threading.BoundedSemaphore(jobs())


def _run(argv: list[str], what: str) -> None:
    try:
        with _SLOTS:
            done = subprocess.run(
                argv, env=build_env(), cwd="/", capture_output=True, text=True, check=False
            )
    except OSError as exc:
        raise PlatformError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise InputError(f"{what} failed:\n{message}")


def _parse_depfile(text: str) -> list[Path]:
    """The prerequisites listed in a make-style depfile written by ``-MD``."""
    body = text.replace("\\\n", " ")
    _, _, prerequisites = body.partition(": ")
    deps: list[Path] = []
    word = ""
    escaped = False
    for char in prerequisites:
        if escaped:
            word += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if word:
                deps.append(Path(word))
            word = ""
        else:
            word += char
    if word:
        deps.append(Path(word))
    return deps


def compile_c(
    source: Path,
    output: Path,
    *,
    flags: Sequence[str] = (),
    include_dirs: Sequence[Path] = (),
    target: Target | str = RING3,
    source_root: Path | None = None,
    cache: BuildCache | None = None,
) -> Path:
    """Compile one C (``.c``) or assembly (``.S``/``.s``) file to one object; returns ``output``.

    ``flags`` come after the target's fixed flags (so ``-O3`` or ``-DX=1`` may be added);
    ``include_dirs`` are searched in the given order; ``source_root`` (default: the source's
    directory) is what ``-ffile-prefix-map`` maps to ``/keepstack``. ``cache`` defaults to the
    per-user build cache.
    """
    tgt = _target(target)
    source = Path(source).resolve()
    output = Path(output)
    if not source.is_file():
        raise InputError(f"source file {source} does not exist")
    root = (source_root or source.parent).resolve()
    zig = tools.zig()
    argv_flags = [
        *tgt.compiler_flags(),
        f"-ffile-prefix-map={root}={PREFIX}",
        *[f"-I{Path(d).resolve()}" for d in include_dirs],
        *flags,
    ]
    # The include directories are part of the key by name relative to the root where possible,
    # so the same sources in another checkout hit the same entry.
    key_flags = [f.replace(str(root), "@") for f in argv_flags]
    build_cache = cache if cache is not None else BuildCache()
    key = step_key(
        "compile",
        zig.describe(),
        "\0".join(key_flags),
        source.relative_to(root).as_posix(),
        source.read_bytes(),
    )
    hit = build_cache.lookup(key, base=root)
    if hit is not None:
        hit.restore("object", output)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keep-cc-") as scratch:
        depfile = Path(scratch) / "deps.d"
        tmp_obj = Path(scratch) / "out.o"
        argv = [
            str(zig.path),
            "cc",
            *argv_flags,
            "-MD",
            "-MF",
            str(depfile),
            "-c",
            str(source),
            "-o",
            str(tmp_obj),
        ]
        _run(argv, f"compiling {source.name}")
        zig_lib = zig.path.parent / "lib"
        deps = [
            d.resolve()
            for d in _parse_depfile(depfile.read_text(encoding="utf-8"))
            if not d.resolve().is_relative_to(zig_lib)  # covered by the zig identity
        ]
        build_cache.store(key, {"object": tmp_obj}, deps=deps, base=root)
        restore(tmp_obj, output)
    return output


def link(
    objects: Sequence[Path],
    output: Path,
    *,
    linker_script: Path | None,
    entry: str | None = None,
    flags: Sequence[str] = (),
    strip: bool = False,
    cache: BuildCache | None = None,
) -> Path:
    """Link objects into a static ELF with ``zig ld.lld``; returns ``output``.

    Inputs are sorted by file name, so the caller's order does not matter. ``linker_script``
    decides the layout (it should ``/DISCARD/`` ``.comment``, ``.note*`` you do not want and
    ``.eh_frame*``); ``entry`` overrides the script's ``ENTRY``; ``strip`` drops symbols.
    """
    if not objects:
        raise InputError("nothing to link: no object files given")
    # Absolute: the linker runs in "/" (so relative paths could not leak into the output), and
    # an object under a relative --out would not be found there.
    ordered = sorted((Path(o).resolve() for o in objects), key=lambda p: (p.name, str(p)))
    for obj in ordered:
        if not obj.is_file():
            raise InputError(f"object file {obj} does not exist")
    zig = tools.zig()
    argv_flags = [
        "-nostdlib",
        "-static",
        "--build-id=none",
        "--no-undefined",
        "-z",
        "noexecstack",
        "-z",
        "norelro",
        "--hash-style=gnu",
        "--sort-common",
    ]
    if entry is not None:
        argv_flags += ["-e", entry]
    if strip:
        argv_flags.append("--strip-all")
    argv_flags += list(flags)
    parts: list[str | bytes] = ["link", zig.describe(), "\0".join(argv_flags)]
    if linker_script is not None:
        script = Path(linker_script).resolve()
        if not script.is_file():
            raise InputError(f"linker script {script} does not exist")
        parts.append(script.read_bytes())  # by content: the script's path does not matter
        argv_flags += ["-T", str(script)]
    for obj in ordered:
        parts += [obj.name, obj.read_bytes()]
    key = step_key(*parts)
    build_cache = cache if cache is not None else BuildCache()
    hit = build_cache.lookup(key)
    output = Path(output)
    if hit is not None:
        hit.restore("elf", output, mode=0o755)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keep-ld-") as scratch:
        tmp_elf = Path(scratch) / "out.elf"
        argv = [str(zig.path), "ld.lld", *argv_flags, "-o", str(tmp_elf), *map(str, ordered)]
        _run(argv, f"linking {output.name}")
        build_cache.store(key, {"elf": tmp_elf})
        restore(tmp_elf, output, mode=0o755)
    return output


def describe_flags() -> Mapping[str, tuple[str, ...]]:
    """The fixed compiler flags of every target (recorded in provenance)."""
    return {name: t.compiler_flags() for name, t in sorted(TARGETS.items())}
