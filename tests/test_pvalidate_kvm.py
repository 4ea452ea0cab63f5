"""The microkernel makes the heap and stack private and validated before ring 3, on /dev/kvm
(ABI 4, ``runtime/guest/ukernel/pvalidate.c``): page-state change through the GHCB, then
PVALIDATE, 2 MiB where aligned (from ABI 5 on the heap is 2 MiB-aligned at both ends, so every
piece is 2 MiB). A host whose page-state change fails, does not advance, or
leaves a page validated already (replayed or remapped) or not private stops the keep before
ring 3 with the reason, the GPA, the expected and the found value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import pytest
from test_guest_request_kvm import HostileFirmware, images, plan, run, stopped

from runtime.vmm import keep as keep_module
from runtime.vmm.ghcb import PSC_DESCRIPTOR, PSC_ERROR_INVALID_ENTRY, GhcbServer
from runtime.vmm.keep import KeepResult
from runtime.vmm.rmp import LARGE_PAGE, PAGE_SIZE, SHARED, VALIDATED, Rmp
from toolchain.measure.abi import PSC_MAX_ENTRY, PVALIDATE_FAIL_SIZEMISMATCH
from toolchain.measure.plan import LaunchPlan

__all__ = ["images", "plan"]  # the fixtures, shared with the guest-request tests

#: MMIO exits of a keep before this change: five hypercalls, one VMGEXIT (the guest request),
#: and two exits for each of the 19 GHCB MSR exchanges.
BASE_EXITS = 6 + 2 * (1 + 18)


def pieces(start: int, end: int) -> list[tuple[int, int]]:
    """The (GPA, size) the guest changes and validates: 2 MiB where aligned, else 4 KiB."""
    out, gpa = [], start
    while gpa < end:
        size = LARGE_PAGE if gpa % LARGE_PAGE == 0 and end - gpa >= LARGE_PAGE else PAGE_SIZE
        out.append((gpa, size))
        gpa += size
    return out


def _page_up(gpa: int) -> int:
    return -(-gpa // PAGE_SIZE) * PAGE_SIZE


def ram_pieces(plan: LaunchPlan) -> list[tuple[int, int]]:
    abi = plan.abi
    return pieces(abi.heap_start, abi.heap_end) + pieces(abi.stack_bottom, abi.stack_top)


class Recorder(GhcbServer):
    """The honest VMM, remembered so a test can look at its RMP afterwards."""

    last: ClassVar[GhcbServer | None] = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        Recorder.last = self


def run_with(
    monkeypatch: pytest.MonkeyPatch,
    plan: LaunchPlan,
    server: type[GhcbServer] = Recorder,
    rmp: type[Rmp] = Rmp,
) -> tuple[KeepResult, GhcbServer]:
    Recorder.last = None
    monkeypatch.setattr(keep_module, "GhcbServer", server)
    monkeypatch.setattr(keep_module, "Rmp", rmp)
    firmware = HostileFirmware()
    result = run(plan, firmware)
    assert Recorder.last is not None
    if result.error is not None:
        assert firmware.requests == 0, "the report was asked for before the RAM was validated"
    return result, Recorder.last


def test_the_heap_and_stack_are_made_private_and_validated(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    result, server = run_with(monkeypatch, plan)
    assert result.error is None, result.error.explain()
    assert result.exit_status == 7
    expected = ram_pieces(plan)
    # ABI 5: 2 MiB pages only (the 256 MiB keep: 114 of the heap, 4 of the stack), one exit
    # for the page-state change and two for each PVALIDATE; ABI 4 took 1017 + 118 pieces.
    assert {size for _gpa, size in expected} == {LARGE_PAGE}
    assert len(expected) == (plan.abi.heap_end - plan.abi.heap_start) // LARGE_PAGE + 4 == 118
    rmp = server.rmp
    assert rmp is not None
    assert rmp.validations == expected  # exactly the heap and stack, in order, 2 MiB where aligned
    abi = plan.abi
    ram_pages = (abi.heap_end - abi.heap_start + abi.stack_top - abi.stack_bottom) // PAGE_SIZE
    launched = sum(region.pages for region in plan.regions)
    assert rmp.pages(VALIDATED) == launched + ram_pages
    # The stack guard and the gap between the image and the heap stay unvalidated.
    unvalidated = [*range(abi.heap_end, abi.stack_bottom, PAGE_SIZE)]
    unvalidated += range(_page_up(abi.image_end), abi.heap_start, PAGE_SIZE)
    assert len(unvalidated) >= LARGE_PAGE // PAGE_SIZE
    assert all(rmp.state[gpa // PAGE_SIZE] == SHARED for gpa in unvalidated)
    assert server.psc_exits == math.ceil(len(expected) / PSC_MAX_ENTRY)
    assert result.exits.get("MMIO") == BASE_EXITS + server.psc_exits + 2 * len(expected)


def _psc_answer(
    rewrite: Callable[[GhcbServer, bytes, int], int | None],
) -> type[GhcbServer]:
    """A host whose page-state change is ``rewrite(server, ghcb, valid)``; None: the honest one."""

    class Hostile(Recorder):
        def _psc(self, ghcb: bytes, valid: int) -> int:
            answer = rewrite(self, ghcb, valid)
            return super()._psc(ghcb, valid) if answer is None else answer

    return Hostile


def _end_entry_moved(server: GhcbServer, ghcb: bytes, valid: int) -> int:
    answer = GhcbServer._psc(server, ghcb, valid)
    server.memory.write(server.ghcb + PSC_DESCRIPTOR + 2, (7).to_bytes(2, "little"))
    return answer


def _first_only(server: GhcbServer, ghcb: bytes, valid: int) -> int | None:
    """A slow but honest host: at most 100 entries per exit."""
    cur = int.from_bytes(ghcb[PSC_DESCRIPTOR : PSC_DESCRIPTOR + 2], "little")
    end = int.from_bytes(ghcb[PSC_DESCRIPTOR + 2 : PSC_DESCRIPTOR + 4], "little")
    if end - cur < 100:
        return None
    limited = bytearray(ghcb)
    limited[PSC_DESCRIPTOR + 2 : PSC_DESCRIPTOR + 4] = (cur + 99).to_bytes(2, "little")
    answer = GhcbServer._psc(server, bytes(limited), valid)
    server.memory.write(server.ghcb + PSC_DESCRIPTOR + 2, end.to_bytes(2, "little"))
    return answer


def test_a_host_that_serves_page_state_changes_in_parts_is_followed(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    result, server = run_with(monkeypatch, plan, _psc_answer(_first_only))
    assert result.error is None, result.error.explain()
    assert server.rmp is not None
    assert server.rmp.validations == ram_pieces(plan)
    count = len(ram_pieces(plan))
    batches = [min(PSC_MAX_ENTRY, count - i) for i in range(0, count, PSC_MAX_ENTRY)]
    assert server.psc_exits == sum(math.ceil(batch / 100) for batch in batches)


@pytest.mark.parametrize(
    ("rewrite", "field", "expected", "found"),
    [
        (lambda _s, _g, _v: PSC_ERROR_INVALID_ENTRY, "SW_EXITINFO2", 0, PSC_ERROR_INVALID_ENTRY),
        (lambda _s, _g, _v: 0, "cur_entry", 1, 0),  # answered, but nothing done
        (_end_entry_moved, "end_entry", None, 7),  # None: the first batch's last entry
    ],
)
def test_a_page_state_change_the_host_did_not_serve_stops_the_keep(
    monkeypatch: pytest.MonkeyPatch,
    plan: LaunchPlan,
    rewrite: Callable[[GhcbServer, bytes, int], int | None],
    field: str,
    expected: int | None,
    found: int,
) -> None:
    if expected is None:
        expected = min(PSC_MAX_ENTRY, len(ram_pieces(plan))) - 1
    result, _server = run_with(monkeypatch, plan, _psc_answer(rewrite))
    message = stopped(result)
    assert "could not be made private and validated" in message
    assert field in message
    assert "page-state change" in message
    assert f"at GPA {plan.abi.heap_start:#x}: expected {expected:#x}, found {found:#x}" in message
    assert result.calls.get("ATTEST") is None


def _rmp_where(page: int, state: int) -> type[Rmp]:
    """A host that keeps ``page`` in ``state`` whatever the guest asks for."""

    class Hostile(Rmp):
        def change(self, gpa: int, size: int, *, private: bool) -> bool:
            done = super().change(gpa, size, private=private)
            self.state[page // PAGE_SIZE] = state
            return done

    return Hostile


def _stack_chunk(plan: LaunchPlan) -> int:
    return plan.abi.stack_bottom  # 2 MiB aligned: the stack is validated 2 MiB at a time


@pytest.mark.parametrize(
    ("where", "state", "field", "found"),
    [
        # validated already: the last page of the heap, a page inside a 2 MiB piece of the
        # stack (both mixed: FAIL_SIZEMISMATCH, then page by page)
        (lambda p: p.abi.heap_end - PAGE_SIZE, VALIDATED, "rFLAGS.CF", 1),
        (lambda p: _stack_chunk(p) + 0x5000, VALIDATED, "rFLAGS.CF", 1),
        # never made private: PVALIDATE fails with FAIL_INPUT
        (lambda p: p.abi.heap_start, SHARED, "return code (EAX)", 1),
        (lambda p: _stack_chunk(p) + 0x1000, SHARED, "return code (EAX)", 1),
    ],
)
def test_a_page_validated_already_or_not_private_stops_the_keep(
    monkeypatch: pytest.MonkeyPatch,
    plan: LaunchPlan,
    where: Callable[[LaunchPlan], int],
    state: int,
    field: str,
    found: int,
) -> None:
    page = where(plan)
    result, _server = run_with(monkeypatch, plan, rmp=_rmp_where(page, state))
    message = stopped(result)
    assert "could not be made private and validated" in message
    assert f"{field} of PVALIDATE" in message
    assert f"at GPA {page:#x}: expected 0x0, found {found:#x}" in message
    assert result.calls.get("ATTEST") is None


def test_a_whole_2mib_page_validated_already_stops_the_keep(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    chunk = _stack_chunk(plan)

    class Replayed(Rmp):
        def change(self, gpa: int, size: int, *, private: bool) -> bool:
            done = super().change(gpa, size, private=private)
            self.state[chunk // PAGE_SIZE : (chunk + LARGE_PAGE) // PAGE_SIZE] = bytes(
                [VALIDATED]
            ) * (LARGE_PAGE // PAGE_SIZE)
            return done

    message = stopped(run_with(monkeypatch, plan, rmp=Replayed)[0])
    reason = "rFLAGS.CF of PVALIDATE (1: the page was validated already)"
    assert f"{reason} at GPA {chunk:#x}: expected 0x0, found 0x1" in message


def test_a_2mib_size_mismatch_falls_back_to_4kib_pages(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    chunk = _stack_chunk(plan)

    class Split(Rmp):
        """The host backs one 2 MiB piece with 4 KiB RMP entries."""

        def pvalidate(self, gpa: int, size: int, *, validate: bool) -> tuple[int, bool]:
            if gpa == chunk and size == LARGE_PAGE:
                return PVALIDATE_FAIL_SIZEMISMATCH, False
            return super().pvalidate(gpa, size, validate=validate)

    result, server = run_with(monkeypatch, plan, rmp=Split)
    assert result.error is None, result.error.explain()
    assert server.rmp is not None
    fallback = [(chunk + offset, PAGE_SIZE) for offset in range(0, LARGE_PAGE, PAGE_SIZE)]
    expected = [
        item
        for piece in ram_pieces(plan)
        for item in (fallback if piece == (chunk, LARGE_PAGE) else [piece])
    ]
    assert server.rmp.validations == expected
    assert len(fallback) == LARGE_PAGE // PAGE_SIZE
