"""Guest memory by GPA: hostile addresses and lengths are InputErrors, never a crash (fuzzed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.vmm.memory import GuestMemory, RamRange
from toolchain.errors import InputError

RANGES = [RamRange(0x0, 0x3000), RamRange(0x5000, 0x2000)]
EDGES = [0, 0x1000, 0x2FFF, 0x3000, 0x4FFF, 0x5000, 0x6FFF, 0x7000, (1 << 64) - 1, 1 << 63]


@pytest.fixture(scope="module")
def memory() -> Iterator[GuestMemory]:
    with GuestMemory(RANGES) as ram:
        yield ram


def _inside(gpa: int, length: int) -> bool:
    return any(r.gpa <= gpa and gpa + length <= r.end for r in RANGES) and gpa >= 0 <= length


_ADDRESSES = st.one_of(
    st.sampled_from(EDGES), st.integers(-0x10, 0x8000), st.integers(-(1 << 70), 1 << 70)
)
_LENGTHS = st.one_of(
    st.integers(-2, 0x3001), st.sampled_from([0, 1, 0x1000, (1 << 64) - 1, 1 << 40])
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(gpa=_ADDRESSES, length=_LENGTHS, fill=st.integers(0, 255))
def test_fuzz_reads_and_writes(memory: GuestMemory, gpa: int, length: int, fill: int) -> None:
    inside = _inside(gpa, length)
    assert memory.contains(gpa, length) == inside
    if not inside:
        with pytest.raises(InputError):
            memory.read(gpa, length)
        if 0 <= length <= 0x4000:
            with pytest.raises(InputError):
                memory.write(gpa, bytes([fill]) * length)
        return
    data = bytes([fill]) * length
    memory.write(gpa, data)
    assert memory.read(gpa, length) == data


def test_a_write_never_spills_into_the_next_range(memory: GuestMemory) -> None:
    memory.write(0x5000, b"\xaa" * 16)
    with pytest.raises(InputError, match="outside guest RAM"):
        memory.write(0x2FF8, b"\x55" * 16)  # would cross the 0x3000 hole
    assert memory.read(0x5000, 16) == b"\xaa" * 16
    assert memory.size == 0x5000
