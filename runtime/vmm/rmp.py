"""The RMP as the simulated platform models it: per 4 KiB page of guest RAM, whether it is
assigned to the guest (private) and whether the guest validated it.

On SEV-SNP the Reverse Map Table is the hardware's; here nothing enforces it, but the
microkernel's checks still need a host that answers like one (ABI.md, "Private RAM"): pages the
plan launched are private and validated at launch (LAUNCH_UPDATE does both); every other page
is shared. A page-state change to private assigns a page with its validated bit clear (as
RMPUPDATE does), to shared unassigns it. PVALIDATE (``pvalidate``, AMD APM vol. 3) answers as
the instruction: EAX 0 and CF 0 when it changed the page; CF 1 when the page already had the
state asked for (a validated page validated again: what a host that replays or remaps pages
shows); FAIL_INPUT for a page that is not private, outside RAM or not aligned to its size;
FAIL_SIZEMISMATCH for a 2 MiB PVALIDATE over pages of mixed state.

The simulated platform layer replaces PVALIDATE with a 64-bit write at the doorbell +
``DOORBELL_PVALIDATE_OFFSET`` (``request``) and a 64-bit read there (``answer``).
"""

from __future__ import annotations

from collections.abc import Iterable

from toolchain.errors import InputError
from toolchain.measure.abi import PVALIDATE_FAIL_INPUT, PVALIDATE_FAIL_SIZEMISMATCH

PAGE_SIZE = 0x1000
LARGE_PAGE = 0x200000
SHARED, PRIVATE, VALIDATED = 0, 1, 2


class Rmp:
    """One keep's RMP model. ``launched`` are the ``(gpa, size)`` the launch measured."""

    def __init__(self, ram_size: int, launched: Iterable[tuple[int, int]]) -> None:
        if ram_size <= 0 or ram_size % LARGE_PAGE:
            raise InputError(f"RAM of {ram_size:#x} bytes is not whole 2 MiB pages")
        self.ram_size = ram_size
        self.state = bytearray(ram_size // PAGE_SIZE)
        for gpa, size in launched:
            if gpa % PAGE_SIZE or size % PAGE_SIZE or gpa + size > ram_size:
                raise InputError(f"launched region {gpa:#x}+{size:#x} is not pages of RAM")
            self.state[gpa // PAGE_SIZE : (gpa + size) // PAGE_SIZE] = bytes([VALIDATED]) * (
                size // PAGE_SIZE
            )
        #: PVALIDATEs that validated: (GPA, size), in order.
        self.validations: list[tuple[int, int]] = []
        self._answer = 0

    def _span(self, gpa: int, size: int) -> slice | None:
        if gpa % size or gpa + size > self.ram_size:
            return None
        return slice(gpa // PAGE_SIZE, (gpa + size) // PAGE_SIZE)

    def change(self, gpa: int, size: int, *, private: bool) -> bool:
        """A page-state change of ``[gpa, gpa + size)``; False (nothing done) outside RAM."""
        span = self._span(gpa, size)
        if span is None:
            return False
        self.state[span] = bytes([PRIVATE if private else SHARED]) * (size // PAGE_SIZE)
        return True

    def pvalidate(self, gpa: int, size: int, *, validate: bool) -> tuple[int, bool]:
        """PVALIDATE of the page at ``gpa`` of ``size``: (EAX, CF)."""
        span = self._span(gpa, size)
        if span is None:
            return PVALIDATE_FAIL_INPUT, False
        states = set(self.state[span])
        if len(states) > 1:
            return PVALIDATE_FAIL_SIZEMISMATCH, False
        (state,) = states
        if state == SHARED:
            return PVALIDATE_FAIL_INPUT, False
        wanted = VALIDATED if validate else PRIVATE
        if state == wanted:
            return 0, True
        self.state[span] = bytes([wanted]) * (size // PAGE_SIZE)
        if validate:
            self.validations.append((gpa, size))
        return 0, False

    def request(self, value: int) -> None:
        """The simulated PVALIDATE: bits 63:12 the GPA, bit 0 the page size, bit 1 validate."""
        size = LARGE_PAGE if value & 1 else PAGE_SIZE
        eax, cf = self.pvalidate(value & ~0xFFF, size, validate=bool(value & 2))
        self._answer = int(cf) << 32 | eax

    def answer(self) -> int:
        """The simulated PVALIDATE's result: bits 31:0 EAX, bit 32 CF."""
        return self._answer

    def pages(self, state: int) -> int:
        """How many 4 KiB pages are in ``state``."""
        return self.state.count(state)
