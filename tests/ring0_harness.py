"""Host harnesses for ring-0 code: the microkernel's own objects, compiled with its flags, linked
with a libc-free driver from tests/c/ (tests/c/harness_io.h) into a Linux executable that
answers one request per input line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from toolchain.image.cache import BuildCache
from toolchain.image.compile import RING0, compile_c, link
from toolchain.image.ukernel import INCLUDE_DIR, SOURCE_DIR, UKERNEL_FLAGS

HARNESS_DIR = Path(__file__).parent / "c"


def build_harness(driver: str, ukernel_sources: list[str], out: Path) -> Path:
    """tests/c/``driver`` linked with runtime/guest/ukernel/``ukernel_sources``; returns the exe."""
    cache = BuildCache(out / "cache")
    sources = [SOURCE_DIR / name for name in ukernel_sources] + [HARNESS_DIR / driver]
    objects = [
        compile_c(
            source,
            out / f"{source.stem}.o",
            flags=UKERNEL_FLAGS,
            include_dirs=[INCLUDE_DIR, SOURCE_DIR],
            target=RING0,
            source_root=source.parent,
            cache=cache,
        )
        for source in sources
    ]
    return link(objects, out / Path(driver).stem, linker_script=None, entry="_start", cache=cache)


def hexfield(data: bytes) -> str:
    return data.hex() or "-"


def ask(harness: Path, requests: list[str]) -> list[str]:
    """One answer line per request line ("-" fields read back as empty)."""
    done = subprocess.run(
        [harness],
        input="\n".join(requests) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(requests)
    return [" ".join("" if word == "-" else word for word in line.split(" ")) for line in lines]
