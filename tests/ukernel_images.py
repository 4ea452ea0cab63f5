"""Builds the microkernel and a tiny hand-written ring-3 image for the ukernel/plan/layout tests.

The ring-3 image (``tests/keep_user/hello.c``) stands in for the runtime image: it has text,
rodata, data and bss, and its first launch argument picks a forbidden access (``ACTIONS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
USER_DIR = HERE / "keep_user"

#: action character → (what it does, the fault names accepted, expected error code or None).
#: A software interrupt from ring 3 through a DPL-0 gate is #GP on hardware; PVM reports #UD.
ACTIONS: dict[str, tuple[str, tuple[str, ...], int | None]] = {
    "1": ("write to the null page", ("#PF",), 0x6),
    "2": ("int $0x80 through a DPL-0 gate", ("#GP", "#UD"), None),
    "3": ("write to microkernel text", ("#PF",), 0x7),
    "4": ("execute the NX heap", ("#PF",), 0x15),
    "5": ("read the unmapped page tables", ("#PF",), 0x4),
    "6": ("write to the read-only user-info page", ("#PF",), 0x7),
    "7": ("read the ring-0 secrets page", ("#PF",), 0x5),
    "9": ("cli in ring 3", ("#GP",), 0),
    "c": ("read just past the reserved linear-memory range", ("#PF",), 0x4),
    "d": ("read the page below the linear memory's gate", ("#PF",), 0x4),
    "i": ("read the unmapped gap between the image and the 2 MiB-aligned heap", ("#PF",), 0x4),
}
#: The one ring-3 fault the microkernel does not report as FAULT: a write to the stack guard
#: page is the application exhausting its stack (trap line on stderr, exit status 134).
STACK_GUARD_ACTION = "8"
#: A write to the guard's lowest byte, heap_end (ABI 5: 2 MiB below the stack): the same trap.
STACK_GUARD_LOW_ACTION = "j"
#: Ring-3 faults in the reserved linear-memory range (ABI 4): reads of its first byte and of the
#: guard's last byte, which the microkernel ends as the trap "out of bounds memory access".
LINEAR_OOB_ACTIONS = ("a", "b")
#: The linear memory's gate: the microkernel's answers to rows of grow requests
#: (tests/keep_user/hello.c, linear_answers), each followed by a read past the end (a trap).
LINEAR_GATE_ACTIONS = ("g", "h")


@dataclass(frozen=True)
class Images:
    ukernel: Path
    user: Path
    #: the microkernel built for snp (only when asked for: ``build_images(snp=True)``)
    snp_ukernel: Path | None = None


def build_images(out: Path, *, cache_dir: Path, snp: bool = False) -> Images:
    """Build both ELFs into ``out`` using a private build cache."""
    old = os.environ.get("KEEPSTACK_CACHE_DIR")
    os.environ["KEEPSTACK_CACHE_DIR"] = str(cache_dir)
    try:
        from toolchain.image.compile import RING3, compile_c, link
        from toolchain.image.ukernel import INCLUDE_DIR, build_ukernel

        ukernel = build_ukernel(out)
        snp_ukernel = build_ukernel(out, platform="snp") if snp else None
        obj = compile_c(
            USER_DIR / "hello.c", out / "hello.o", include_dirs=[INCLUDE_DIR], target=RING3
        )
        user = link([obj], out / "hello.elf", linker_script=USER_DIR / "user.ld")
    finally:
        if old is None:
            del os.environ["KEEPSTACK_CACHE_DIR"]
        else:
            os.environ["KEEPSTACK_CACHE_DIR"] = old
    return Images(ukernel, user, snp_ukernel)
