"""The VMM's GHCB server (runtime/vmm/ghcb.py): every GHCB field and GPA the guest supplies is
checked before the firmware sees anything, and the firmware's refusal goes back to the guest."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from runtime.vmm import ghcb as g
from runtime.vmm.errors import GuestError
from runtime.vmm.memory import GuestMemory, RamRange
from toolchain.errors import EvidenceError

GHCB, HC_PAGE, BUFFER, SIZE = 0x6000, 0x200000, 0x201000, 0x10000
REQUEST, RESPONSE = BUFFER + 0x1000, BUFFER + 0x2000


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory([RamRange(0, 0x400000)]) as ram:
        yield ram


def _ghcb(
    memory: GuestMemory,
    *,
    code: int = g.SVM_VMGEXIT_GUEST_REQUEST,
    info1: int = REQUEST,
    info2: int = RESPONSE,
    valid: tuple[int, ...] = (g.SW_EXIT_CODE, g.SW_EXIT_INFO_1, g.SW_EXIT_INFO_2),
    version: int = g.GHCB_VERSION,
    usage: int = 0,
) -> None:
    memory.write(GHCB, bytes(g.GHCB_SIZE))
    memory.write(GHCB + g.SW_EXIT_CODE, struct.pack("<QQQ", code, info1, info2))
    bitmap = sum(1 << (offset // 8) for offset in valid)
    memory.write(GHCB + g.VALID_BITMAP, bitmap.to_bytes(16, "little"))
    memory.write(GHCB + g.PROTOCOL_VERSION, struct.pack("<HI", version, usage))


def _server(memory: GuestMemory, firmware: g.GuestRequest, register: bool = True) -> g.GhcbServer:
    server = g.GhcbServer(
        memory, ghcb=GHCB, shared=(BUFFER, BUFFER + SIZE), guest_request=firmware, hc_page=HC_PAGE
    )
    if register:
        server.msr_write(GHCB | g.GHCB_MSR_REG_GPA_REQ)
    return server


def _exit_info_2(memory: GuestMemory) -> int:
    return int(struct.unpack("<Q", memory.read(GHCB + g.SW_EXIT_INFO_2, 8))[0])


def test_a_guest_request_reaches_the_firmware_and_its_answer_the_guest(
    memory: GuestMemory,
) -> None:
    seen: list[bytes] = []

    def firmware(page: bytes) -> bytes:
        seen.append(page)
        return b"A" * 4096

    memory.write(REQUEST, b"Q" * 4096)
    _ghcb(memory)
    server = _server(memory, firmware)
    assert server.serve() is None
    assert seen == [b"Q" * 4096]
    assert memory.read(RESPONSE, 4096) == b"A" * 4096
    assert _exit_info_2(memory) == 0
    assert (server.requests, server.failure) == (1, None)


def test_a_firmware_refusal_goes_back_to_the_guest(memory: GuestMemory) -> None:
    def firmware(_page: bytes) -> bytes:
        raise EvidenceError("SNP_GUEST_REQUEST refused: a replayed or skipped sequence number")

    memory.write(RESPONSE, b"R" * 4096)
    _ghcb(memory)
    server = _server(memory, firmware)
    server.serve()
    assert _exit_info_2(memory) == g.FIRMWARE_REFUSED
    assert server.failure is not None
    assert "replayed" in server.failure
    assert memory.read(RESPONSE, 4096) == b"R" * 4096  # nothing written


@pytest.mark.parametrize(
    ("fields", "argument"),
    [
        ({"info1": 0x3000}, "SW_EXITINFO1"),  # the secrets page: private, never the VMM's
        ({"info1": REQUEST + 8}, "SW_EXITINFO1"),
        ({"info2": BUFFER + SIZE}, "SW_EXITINFO2"),
        ({"info2": BUFFER + SIZE - 0x800}, "SW_EXITINFO2"),
        ({"info2": GHCB}, "SW_EXITINFO2"),
        ({"code": 0x7B}, "SW_EXITCODE"),  # IOIO: not served
        ({"valid": (g.SW_EXIT_CODE, g.SW_EXIT_INFO_1)}, "SW_EXITINFO2"),
        ({"valid": (g.SW_EXIT_INFO_1, g.SW_EXIT_INFO_2)}, "SW_EXITCODE"),
        ({"version": 1}, "GHCB_USAGE"),
        ({"usage": 1}, "GHCB_USAGE"),
    ],
)
def test_the_guests_ghcb_is_checked_before_the_firmware_sees_it(
    memory: GuestMemory, fields: dict[str, object], argument: str
) -> None:
    def firmware(_page: bytes) -> bytes:
        raise AssertionError("the firmware must not be asked")

    _ghcb(memory, **fields)  # type: ignore[arg-type]
    with pytest.raises(GuestError, match=rf"VMGEXIT\({argument}\)"):
        _server(memory, firmware).serve()


def test_stop_messages_name_the_field() -> None:
    assert g.stop_message(12, 0, 0x1234) == (
        "the microkernel refused its attestation report: AUTHTAG (the response does not "
        "authenticate under VMPCK0): expected 0x0, found 0x1234"
    )
    assert "reason 200, unknown" in g.stop_message(200, 0, 0)


def _msr(server: g.GhcbServer, value: int) -> int:
    server.msr_write(value)
    return server.msr_read()


def test_the_ghcb_msr_registers_only_the_plans_ghcb_page(memory: GuestMemory) -> None:
    server = _server(memory, lambda page: page, register=False)
    assert _msr(server, 0x7000 | g.GHCB_MSR_REG_GPA_REQ) == g.GFN_REFUSED << 12 | 0x13
    assert server.registered is None
    _ghcb(memory)
    with pytest.raises(GuestError, match="before its GPA was registered"):
        server.serve()
    assert _msr(server, GHCB | g.GHCB_MSR_REG_GPA_REQ) == GHCB | 0x13
    assert server.registered == GHCB >> 12


@pytest.mark.parametrize(
    ("gpa", "operation", "error"),
    [
        (GHCB, g.PSC_SHARED, 0),
        (HC_PAGE, g.PSC_SHARED, 0),
        (BUFFER + SIZE - 0x1000, g.PSC_SHARED, 0),
        (BUFFER + SIZE, g.PSC_SHARED, g.PSC_REFUSED),  # the page after the buffer
        (0x5000, g.PSC_SHARED, g.PSC_REFUSED),  # private, launched memory
        (BUFFER, 1, g.PSC_REFUSED),  # "private": not the change the keep asks for
    ],
)
def test_a_page_state_change_is_granted_only_for_the_shared_pages(
    memory: GuestMemory, gpa: int, operation: int, error: int
) -> None:
    server = _server(memory, lambda page: page)
    answer = _msr(server, operation << 52 | gpa | g.GHCB_MSR_PSC_REQ)
    assert answer == error << 32 | 0x15
    assert server.shared_gfns == (set() if error else {gpa >> 12})


def test_an_unknown_ghcb_msr_request_stops_the_guest(memory: GuestMemory) -> None:
    with pytest.raises(GuestError, match="GHCB MSR request 0x4 is not served"):
        _server(memory, lambda page: page).msr_write(0x4)


def test_a_c_bit_stop_is_named_as_the_cpuid_pages_not_the_reports() -> None:
    """Reasons 33 and 34 (cbit.c) stop the keep before ring 3 over the CPUID page's C-bit."""
    from toolchain.measure.abi import STOP_REASONS

    for name, expected, found in (("CPUID_LEAF", 0x8000001F, 3), ("C_BIT", 51, 47)):
        message = g.stop_message(STOP_REASONS[name][0], expected, found)
        assert message.startswith("the microkernel stopped before ring 3: "), message
        assert STOP_REASONS[name][1] in message
        assert f"expected {expected:#x}, found {found:#x}" in message
        assert "attestation report" not in message
