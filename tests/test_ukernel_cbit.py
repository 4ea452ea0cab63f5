"""The microkernel's C-bit check (runtime/guest/ukernel/cbit.c) in a host harness
(tests/c/cbit_harness.c): the C-bit the measured user-info page declares (the page tables')
must be CPUID 0x8000001F EBX[5:0] of the CPUID page, laid out as the VMM fills it
(runtime/vmm/snp_cpuid.py); else the keep stops with the reason, the expected and found value."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from ring0_harness import ask, build_harness

from runtime.vmm.snp_cpuid import CpuidEntry, HostCpu, cpuid_page
from toolchain.measure.abi import (
    ATTEST_FAILED_EXIT_STATUS,
    CPUID_COUNT_MAX,
    CPUID_LEAF_SEV,
    STOP_REASONS,
)

CPUID_LEAF, C_BIT = STOP_REASONS["CPUID_LEAF"][0], STOP_REASONS["C_BIT"][0]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_harness("cbit_harness.c", ["cbit.c"], tmp_path_factory.mktemp("cbit"))


def page(sev_ebx: int | None, *, before: int = 3) -> bytes:
    """A CPUID page with ``before`` other functions, then 0x8000001F (if ``sev_ebx`` is given)."""
    entries = [CpuidEntry(i, 0, 0, i, 0, 0, 0) for i in range(before)]  # leaves 0, 1, ...
    if sev_ebx is not None:
        entries.append(CpuidEntry(CPUID_LEAF_SEV, 0, 0, 0x1B, sev_ebx, 0x1FD, 0))
    return cpuid_page(HostCpu(tuple(entries)))


def check(harness: Path, table: bytes, c_bit: int) -> str:
    (answer,) = ask(harness, [f"K {table.rstrip(bytes(1)).hex() or '-'} {c_bit:016x}"])
    return answer


def stop(reason: int, expected: int, found: int) -> str:
    words = (ATTEST_FAILED_EXIT_STATUS, reason, expected, found)
    return "STOP " + " ".join(f"{word:016x}" for word in words)


@pytest.mark.parametrize("before", [0, 3, CPUID_COUNT_MAX - 1])
def test_the_cpus_c_bit_is_the_tables(harness: Path, before: int) -> None:
    # EBX[11:6] (the physical address reduction) and above are not the C-bit
    assert check(harness, page(0x3EF3 & ~0x3F | 51, before=before), 51) == "OK"


@pytest.mark.parametrize(("ebx", "c_bit"), [(47, 51), (51, 47), (0, 51), (51 | 0x40, 52)])
def test_another_c_bit_stops_the_keep(harness: Path, ebx: int, c_bit: int) -> None:
    assert check(harness, page(ebx), c_bit) == stop(C_BIT, c_bit, ebx & 0x3F)


def test_a_cpuid_page_without_the_function_stops_the_keep(harness: Path) -> None:
    assert check(harness, page(None), 51) == stop(CPUID_LEAF, CPUID_LEAF_SEV, 3)
    assert check(harness, b"", 51) == stop(CPUID_LEAF, CPUID_LEAF_SEV, 0)  # an empty page


def test_a_count_past_the_page_stops_the_keep(harness: Path) -> None:
    table = bytearray(page(51, before=0))
    struct.pack_into("<I", table, 0, CPUID_COUNT_MAX + 1)  # the function is there, but...
    assert check(harness, bytes(table), 51) == stop(CPUID_LEAF, CPUID_LEAF_SEV, CPUID_COUNT_MAX + 1)
