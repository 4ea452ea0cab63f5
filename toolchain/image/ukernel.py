"""Build the microkernel (``runtime/guest/ukernel/``) into one deterministic ELF.

Every ``.c`` and ``.S`` file directly in ``runtime/guest/ukernel/`` is one object, compiled for the
ring-0 target (``-mgeneral-regs-only``: no SSE in ring 0, which this machine's emulator cannot run)
and linked at ``0x100000`` by ``runtime/guest/ukernel/link.ld``, which discards ``.comment``,
``.eh_frame*`` and unwanted notes and keeps the ``.note.keepstack`` layout note. The output depends
only on the sources, the flags below, the platform and the pinned ``zig``.

The platform picks the microkernel's platform layer (``platform.c``, ABI.md "The SNP guest
request"): ``simulated`` (the default: ``ukernel.elf``, for backends kvm and nil) replaces
VMGEXIT with the doorbell; ``snp`` (``-DKEEP_PLATFORM_SNP``: ``ukernel-snp.elf``, what every
``snp`` plan is laid out from) executes it. ``keep build`` builds both. Being in the ELF, the
choice is in the launch digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputError
from toolchain.measure.keep import PLATFORMS, SNP_UKERNEL_ELF
from toolchain.measure.plan import PLATFORM_SIMULATED, PLATFORM_SNP

if TYPE_CHECKING:
    from toolchain.image.cache import BuildCache

#: The microkernel's sources, beside the Python package (shipped in the wheel too).
SOURCE_DIR = Path(__file__).resolve().parents[2] / "runtime" / "guest" / "ukernel"
INCLUDE_DIR = SOURCE_DIR / "include"
LINKER_SCRIPT = SOURCE_DIR / "link.ld"
ELF_NAME = "ukernel.elf"
#: The ELF's file name per platform.
ELF_NAMES = {PLATFORM_SIMULATED: ELF_NAME, PLATFORM_SNP: SNP_UKERNEL_ELF}

#: Flags on top of the ring-0 target's fixed ones (which already exclude SSE, MMX and x87).
UKERNEL_FLAGS = (
    "-fomit-frame-pointer",
    "-fno-builtin",
    "-Wall",
    "-Wextra",
    "-Werror",
)


def ukernel_sources(source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The microkernel's translation units, sorted by name."""
    sources = sorted(p for p in source_dir.iterdir() if p.is_file() and p.suffix in {".c", ".S"})
    if not sources:
        raise InputError(f"no microkernel sources (*.c, *.S) in {source_dir}")
    return sources


def build_ukernel(
    out_dir: Path,
    *,
    source_dir: Path = SOURCE_DIR,
    cache: BuildCache | None = None,
    platform: str = PLATFORM_SIMULATED,
) -> Path:
    """Compile and link the microkernel into ``out_dir/ELF_NAMES[platform]``; returns its path.

    ``cache`` defaults to the per-user build cache; ``platform`` is one of ``PLATFORMS``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from toolchain.image.compile import RING0, compile_c, link

    if platform not in PLATFORMS:
        raise InputError(f"unknown platform {platform!r}: one of {', '.join(PLATFORMS)}")
    flags = (*UKERNEL_FLAGS, "-DKEEP_PLATFORM_SNP") if platform == PLATFORM_SNP else UKERNEL_FLAGS

    out_dir = Path(out_dir)
    # One object directory per platform: both builds may share ``out_dir``.
    simulated = platform == PLATFORM_SIMULATED
    obj_dir = out_dir / ("ukernel-obj" if simulated else f"ukernel-{platform}-obj")
    sources = ukernel_sources(source_dir)
    # Independent compiles in parallel (compile.jobs() bounds the processes); link order is by
    # file name, so the ELF does not depend on which finished first.
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [
            pool.submit(
                compile_c,
                source,
                obj_dir / f"{source.stem}{source.suffix.replace('.', '_')}.o",
                flags=flags,
                include_dirs=[source_dir / "include", source_dir],
                target=RING0,
                source_root=source_dir,
                cache=cache,
            )
            for source in sources
        ]
        objects = [f.result() for f in futures]
    script = source_dir / "link.ld"
    return link(objects, out_dir / ELF_NAMES[platform], linker_script=script, cache=cache)
