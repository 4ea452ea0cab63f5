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

GHCB, BUFFER, SIZE = 0x6000, 0x201000, 0x10000
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


def _server(memory: GuestMemory, firmware: g.GuestRequest) -> g.GhcbServer:
    return g.GhcbServer(memory, ghcb=GHCB, shared=(BUFFER, BUFFER + SIZE), guest_request=firmware)


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
