"""The VMM's RMP model (runtime/vmm/rmp.py) and its Page State Change NAE event
(runtime/vmm/ghcb.py): PVALIDATE answers as the instruction does, and every descriptor entry the
guest supplies is checked before a page changes state."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from test_ghcb import BUFFER, GHCB, HC_PAGE, SIZE, _exit_info_2, _ghcb

from runtime.vmm import ghcb as g
from runtime.vmm.errors import GuestError
from runtime.vmm.memory import GuestMemory, RamRange
from runtime.vmm.rmp import LARGE_PAGE, PAGE_SIZE, PRIVATE, SHARED, VALIDATED, Rmp
from toolchain.errors import InputError
from toolchain.measure.abi import (
    PSC_MAX_ENTRY,
    PSC_PRIVATE,
    PSC_SHARED,
    PVALIDATE_FAIL_INPUT,
    PVALIDATE_FAIL_SIZEMISMATCH,
)

RAM = 0x800000  # four 2 MiB pages
LAUNCHED = (0x1000, 0x3000)  # three pages


@pytest.fixture
def rmp() -> Rmp:
    return Rmp(RAM, [LAUNCHED])


def test_launched_pages_are_validated_and_the_rest_shared(rmp: Rmp) -> None:
    assert rmp.pages(VALIDATED) == 3
    assert rmp.pages(SHARED) == RAM // PAGE_SIZE - 3
    assert rmp.pvalidate(0x2000, PAGE_SIZE, validate=True) == (0, True)  # validated already
    assert rmp.pvalidate(0x4000, PAGE_SIZE, validate=True) == (PVALIDATE_FAIL_INPUT, False)
    assert rmp.validations == []


def test_pvalidate_after_a_change_to_private(rmp: Rmp) -> None:
    assert rmp.change(0x400000, LARGE_PAGE, private=True)
    assert rmp.pages(PRIVATE) == LARGE_PAGE // PAGE_SIZE
    assert rmp.pvalidate(0x400000, LARGE_PAGE, validate=True) == (0, False)
    assert rmp.pvalidate(0x400000, LARGE_PAGE, validate=True) == (0, True)  # a replay
    assert rmp.pvalidate(0x401000, PAGE_SIZE, validate=True) == (0, True)
    assert rmp.validations == [(0x400000, LARGE_PAGE)]
    assert rmp.pvalidate(0x401000, PAGE_SIZE, validate=False) == (0, False)  # rescinded
    # now mixed: a 2 MiB PVALIDATE does not fit the RMP's entries
    assert rmp.pvalidate(0x400000, LARGE_PAGE, validate=True) == (
        PVALIDATE_FAIL_SIZEMISMATCH,
        False,
    )
    assert rmp.pvalidate(0x401000, PAGE_SIZE, validate=True) == (0, False)
    # a change to private clears the validated bit again, as RMPUPDATE does
    assert rmp.change(0x401000, PAGE_SIZE, private=True)
    assert rmp.pvalidate(0x401000, PAGE_SIZE, validate=True) == (0, False)


@pytest.mark.parametrize(
    ("gpa", "size"),
    [
        (RAM, PAGE_SIZE),
        (0x201000, LARGE_PAGE),
        (0x600000 + PAGE_SIZE, LARGE_PAGE),
        (0x800, PAGE_SIZE),
    ],
)
def test_pvalidate_outside_ram_or_misaligned_fails_with_input(
    rmp: Rmp, gpa: int, size: int
) -> None:
    assert not rmp.change(gpa, size, private=True)
    assert rmp.pvalidate(gpa, size, validate=True) == (PVALIDATE_FAIL_INPUT, False)


def test_the_simulated_instruction_packs_eax_and_cf(rmp: Rmp) -> None:
    rmp.change(0x200000, LARGE_PAGE, private=True)
    rmp.request(0x200000 | 1 | 2)
    assert rmp.answer() == 0
    rmp.request(0x200000 | 1 | 2)
    assert rmp.answer() == 1 << 32
    rmp.request(0x600000 | 2)
    assert rmp.answer() == PVALIDATE_FAIL_INPUT


def test_an_rmp_of_partial_pages_is_refused() -> None:
    with pytest.raises(InputError, match="2 MiB"):
        Rmp(RAM + PAGE_SIZE, [])
    with pytest.raises(InputError, match="launched region"):
        Rmp(RAM, [(0x1800, PAGE_SIZE)])


# ---- the Page State Change NAE event -------------------------------------------------------------
@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory([RamRange(0, RAM)]) as ram:
        yield ram


def _server(memory: GuestMemory, rmp: Rmp | None) -> g.GhcbServer:
    server = g.GhcbServer(
        memory,
        ghcb=GHCB,
        shared=(BUFFER, BUFFER + SIZE),
        guest_request=lambda _page: b"",
        hc_page=HC_PAGE,
        rmp=rmp,
    )
    server.msr_write(GHCB | g.GHCB_MSR_REG_GPA_REQ)
    return server


def entry(gpa: int, operation: int = PSC_PRIVATE, large: bool = False, extra: int = 0) -> int:
    return gpa | operation << 52 | int(large) << 56 | extra


def _psc(
    memory: GuestMemory,
    entries: list[int],
    *,
    cur: int = 0,
    end: int | None = None,
    reserved: int = 0,
    scratch: int = GHCB + g.PSC_DESCRIPTOR,
    scratch_valid: bool = True,
) -> None:
    valid = (g.SW_EXIT_CODE, g.SW_EXIT_INFO_1, g.SW_EXIT_INFO_2) + (
        (g.SW_SCRATCH,) if scratch_valid else ()
    )
    _ghcb(memory, code=g.SVM_VMGEXIT_PSC, info1=0, info2=0, valid=valid)
    memory.write(GHCB + g.SW_SCRATCH, struct.pack("<Q", scratch))
    last = len(entries) - 1 if end is None else end
    header = struct.pack("<HHI", cur, last, reserved)
    memory.write(GHCB + g.PSC_DESCRIPTOR, header + b"".join(struct.pack("<Q", e) for e in entries))


def _header(memory: GuestMemory) -> tuple[int, int, int]:
    return struct.unpack("<HHI", memory.read(GHCB + g.PSC_DESCRIPTOR, 8))


def test_a_page_state_change_is_served_and_the_header_advanced(
    memory: GuestMemory, rmp: Rmp
) -> None:
    server = _server(memory, rmp)
    _psc(memory, [entry(0x400000, large=True), entry(0x7FF000), entry(0x201000, PSC_SHARED)])
    server.serve()
    assert _exit_info_2(memory) == 0
    assert _header(memory) == (3, 2, 0)
    assert rmp.pages(PRIVATE) == LARGE_PAGE // PAGE_SIZE + 1
    assert rmp.state[0x201000 // PAGE_SIZE] == SHARED
    assert server.psc_exits == 1
    # from cur_entry on: a host that was interrupted goes on where it stopped
    _psc(memory, [entry(0x300000), entry(0x301000)], cur=1)
    server.serve()
    assert (_header(memory)[0], rmp.state[0x300000 // PAGE_SIZE]) == (2, SHARED)
    assert rmp.state[0x301000 // PAGE_SIZE] == PRIVATE


@pytest.mark.parametrize(
    ("bad", "index"),
    [
        (entry(0x401000, large=True), 1),  # a 2 MiB entry that is not 2 MiB aligned
        (entry(RAM), 1),  # outside RAM
        (entry(0x400000, operation=3), 1),  # an unknown operation
        (entry(0x400000, extra=5), 1),  # cur_page: never partial here
        (entry(0x400000, extra=1 << 57), 1),  # reserved bits
        (entry(HC_PAGE), 1),  # the VMM's shared pages stay shared
        (entry(0x200000, large=True), 1),  # (a 2 MiB page that covers them)
        (entry(0x400000, PSC_SHARED), 1),  # only the VMM's shared pages may become shared
    ],
)
def test_a_bad_entry_stops_the_change_there(
    memory: GuestMemory, rmp: Rmp, bad: int, index: int
) -> None:
    server = _server(memory, rmp)
    _psc(memory, [entry(0x300000), bad, entry(0x302000)])
    server.serve()
    assert _exit_info_2(memory) == g.PSC_ERROR_INVALID_ENTRY
    assert _header(memory)[0] == index
    assert rmp.state[0x300000 // PAGE_SIZE] == PRIVATE  # the entries before it were served
    assert rmp.state[0x302000 // PAGE_SIZE] == SHARED  # and none after


@pytest.mark.parametrize(("cur", "end", "reserved"), [(0, 1, 1), (0, PSC_MAX_ENTRY, 0), (2, 1, 0)])
def test_a_bad_header_is_refused(
    memory: GuestMemory, rmp: Rmp, cur: int, end: int, reserved: int
) -> None:
    server = _server(memory, rmp)
    _psc(memory, [entry(0x300000), entry(0x301000)], cur=cur, end=end, reserved=reserved)
    server.serve()
    assert _exit_info_2(memory) == g.PSC_ERROR_INVALID_HDR
    assert rmp.pages(PRIVATE) == 0


@pytest.mark.parametrize(
    ("scratch", "valid"), [(GHCB + 0x10, True), (GHCB + g.PSC_DESCRIPTOR, False)]
)
def test_the_descriptor_must_be_the_ghcbs_shared_buffer(
    memory: GuestMemory, rmp: Rmp, scratch: int, valid: bool
) -> None:
    server = _server(memory, rmp)
    _psc(memory, [entry(0x300000)], scratch=scratch, scratch_valid=valid)
    with pytest.raises(GuestError, match="SW_SCRATCH"):
        server.serve()
    assert rmp.pages(PRIVATE) == 0


def test_without_an_rmp_neither_psc_nor_pvalidate_is_served(memory: GuestMemory) -> None:
    server = _server(memory, None)
    _psc(memory, [entry(0x300000)])
    with pytest.raises(GuestError, match="models no RMP"):
        server.serve()
    with pytest.raises(GuestError, match="models no RMP"):
        server.pvalidate_write(0x300000 | 2)


def test_a_page_made_shared_by_the_msr_protocol_is_shared_in_the_rmp(
    memory: GuestMemory,
) -> None:
    rmp = Rmp(RAM, [(BUFFER, PAGE_SIZE)])  # as if the plan had launched it
    server = _server(memory, rmp)
    server.msr_write(PSC_SHARED << 52 | BUFFER | g.GHCB_MSR_PSC_REQ)
    assert server.msr_read() == g.GHCB_MSR_PSC_RESP
    assert rmp.state[BUFFER // PAGE_SIZE] == SHARED
    server.pvalidate_write(BUFFER | 2)
    assert server.pvalidate_read() == PVALIDATE_FAIL_INPUT
