"""The VMM's half of the doorbell as a GHCB MMIO request (runtime/vmm/ghcb.py, ABI.md changelog
h): served for the doorbell's GPA only, with the guest's length and SW_SCRATCH checked, answered
as KVM answers (SW_EXITINFO1 = SW_EXITINFO2 = 0), and handed to the very handler a plain MMIO
exit at the doorbell reaches (runtime/vmm/doorbell.py)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from runtime.vmm import ghcb as g
from runtime.vmm.doorbell import doorbell_access
from runtime.vmm.errors import GuestError
from runtime.vmm.memory import GuestMemory, RamRange
from toolchain.measure.abi import DOORBELL_GPA, DOORBELL_MSR_OFFSET, DOORBELL_VMGEXIT, STOP_REASONS

GHCB, HC_PAGE, BUFFER, SIZE = 0x6000, 0x200000, 0x201000, 0x10000
SCRATCH = GHCB + g.SHARED_BUFFER
MMIO_VALID = (g.SW_EXIT_CODE, g.SW_EXIT_INFO_1, g.SW_EXIT_INFO_2, g.SW_SCRATCH)


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory([RamRange(0, 0x400000)]) as ram:
        yield ram


class Doorbell:
    """The hypercall server's stand-in: counts the rings, answers with ``status``."""

    def __init__(self, status: int | None = None) -> None:
        self.rings = 0
        self.status = status

    def __call__(self) -> int | None:
        self.rings += 1
        return self.status


def _request(
    memory: GuestMemory,
    *,
    code: int = g.SVM_VMGEXIT_MMIO_WRITE,
    gpa: int = DOORBELL_GPA,
    length: int = 4,
    value: int = 1,
    scratch: int = SCRATCH,
    valid: tuple[int, ...] = MMIO_VALID,
) -> None:
    """The GHCB as the microkernel's doorbell.c fills it, with the host's last answer left in."""
    memory.write(GHCB, bytes(g.GHCB_SIZE))
    memory.write(GHCB + g.SW_EXIT_CODE, struct.pack("<QQQQ", code, gpa, length, scratch))
    bitmap = sum(1 << (offset // 8) for offset in valid)
    memory.write(GHCB + g.VALID_BITMAP, bitmap.to_bytes(16, "little"))
    memory.write(GHCB + g.PROTOCOL_VERSION, struct.pack("<HI", g.GHCB_VERSION, 0))
    if GHCB <= scratch < GHCB + g.GHCB_SIZE - 8:
        memory.write(scratch, value.to_bytes(8, "little"))


def _server(memory: GuestMemory, doorbell: Doorbell | None) -> g.GhcbServer:
    server = g.GhcbServer(
        memory,
        ghcb=GHCB,
        shared=(BUFFER, BUFFER + SIZE),
        guest_request=lambda _page: pytest.fail("no guest request here"),
        hc_page=HC_PAGE,
        doorbell=DOORBELL_GPA if doorbell is not None else None,
        on_doorbell=doorbell,
    )
    server.msr_write(GHCB | g.GHCB_MSR_REG_GPA_REQ)
    return server


def test_a_doorbell_write_request_reaches_the_doorbells_handler(memory: GuestMemory) -> None:
    doorbell = Doorbell()
    _request(memory)
    server = _server(memory, doorbell)
    assert server.serve() is None
    assert (doorbell.rings, server.mmio_requests) == (1, 1)
    # The request's GPA and length are overwritten with the answer "served", as KVM does.
    assert memory.read(GHCB + g.SW_EXIT_INFO_1, 16) == bytes(16)


def test_the_exit_status_of_a_doorbell_write_comes_back(memory: GuestMemory) -> None:
    """EXIT through a GHCB request ends the keep with its status, as through a plain write."""
    _request(memory)
    assert _server(memory, Doorbell(status=7)).serve() == 7


@pytest.mark.parametrize(
    "gpa",
    [
        DOORBELL_GPA + DOORBELL_MSR_OFFSET,  # the simulated GHCB MSR: never through a request
        DOORBELL_GPA + 4,
        DOORBELL_GPA - 0x1000,
        HC_PAGE,
        0xFEE0_0000,  # the local APIC
        0,
    ],
)
def test_an_mmio_request_for_any_gpa_but_the_doorbell_is_refused(
    memory: GuestMemory, gpa: int
) -> None:
    doorbell = Doorbell()
    for code in (g.SVM_VMGEXIT_MMIO_WRITE, g.SVM_VMGEXIT_MMIO_READ):
        _request(memory, code=code, gpa=gpa)
        with pytest.raises(GuestError, match=rf"VMGEXIT\(SW_EXITINFO1\).*GPA {gpa:#x}"):
            _server(memory, doorbell).serve()
    assert doorbell.rings == 0


def test_without_a_doorbell_no_mmio_request_is_served(memory: GuestMemory) -> None:
    _request(memory)
    with pytest.raises(GuestError, match="none is served"):
        _server(memory, None).serve()


@pytest.mark.parametrize(
    ("fields", "argument", "message"),
    [
        ({"length": 3}, "SW_EXITINFO2", "MMIO length 3"),
        ({"length": 16}, "SW_EXITINFO2", "MMIO length 16"),
        ({"scratch": BUFFER}, "SW_SCRATCH", "not in the GHCB's shared buffer"),
        ({"scratch": SCRATCH - 8}, "SW_SCRATCH", "not in the GHCB's shared buffer"),
        ({"scratch": SCRATCH + g.SHARED_BUFFER_SIZE - 2}, "SW_SCRATCH", "not in the GHCB"),
        ({"valid": MMIO_VALID[:3]}, "SW_SCRATCH", "not marked valid"),
        ({"valid": MMIO_VALID[1:]}, "SW_EXITCODE", "not marked valid"),
    ],
)
def test_the_length_and_scratch_of_an_mmio_request_are_checked(
    memory: GuestMemory, fields: dict[str, object], argument: str, message: str
) -> None:
    doorbell = Doorbell()
    _request(memory, **fields)  # type: ignore[arg-type]
    with pytest.raises(GuestError, match=rf"VMGEXIT\({argument}\).*{message}"):
        _server(memory, doorbell).serve()
    assert doorbell.rings == 0


@pytest.mark.parametrize(
    ("length", "value"),
    [(4, 2), (4, 0), (8, 1), (2, 1)],
)
def test_a_request_gets_the_plain_doorbells_answer(
    memory: GuestMemory, length: int, value: int
) -> None:
    """Whatever a plain MMIO write of these bytes gets, the GHCB request gets: the same error,
    and no VMGEXIT stand-in (value 2) inside a VMGEXIT."""
    doorbell = Doorbell()
    with pytest.raises(GuestError) as plain:
        doorbell_access(length, value, doorbell)
    _request(memory, length=length, value=value)
    with pytest.raises(GuestError) as requested:
        _server(memory, doorbell).serve()
    assert requested.value.message == plain.value.message
    assert "doorbell written with" in plain.value.message
    assert doorbell.rings == 0


def test_a_doorbell_read_is_refused_either_way(memory: GuestMemory) -> None:
    doorbell = Doorbell()
    with pytest.raises(GuestError, match="only ever writes it") as plain:
        doorbell_access(4, None, doorbell)
    _request(memory, code=g.SVM_VMGEXIT_MMIO_READ)
    with pytest.raises(GuestError) as requested:
        _server(memory, doorbell).serve()
    assert requested.value.message == plain.value.message
    assert doorbell.rings == 0


def test_the_vmgexit_stand_in_is_served_only_on_a_plain_write() -> None:
    vmgexit, doorbell = Doorbell(status=None), Doorbell()
    assert doorbell_access(4, DOORBELL_VMGEXIT, doorbell, vmgexit) is None
    assert (vmgexit.rings, doorbell.rings) == (1, 0)
    with pytest.raises(GuestError, match="doorbell written with 4 bytes of value 0x2"):
        doorbell_access(4, DOORBELL_VMGEXIT, doorbell)


@pytest.mark.parametrize(
    ("name", "expected", "found", "says"),
    [
        ("MMIO_EXITINFO1", 0, 2, "SW_EXITINFO1 of the host's answer to a doorbell MMIO request"),
        ("MMIO_EXITINFO2", 0, 5, "SW_EXITINFO2 of the host's answer"),
        ("VC_EXIT_CODE", 0x400, 0x72, "exit code"),
        ("VC_RING", 3, 0x8, "ring of the #VC"),
        ("VC_GPA", DOORBELL_GPA, 0x400008, "GPA the #VC's store writes"),
    ],
)
def test_a_stop_by_the_microkernel_names_the_field(
    name: str, expected: int, found: int, says: str
) -> None:
    message = g.stop_message(STOP_REASONS[name][0], expected, found)
    assert message.startswith("the microkernel stopped the keep: ")
    assert says in message
    assert message.endswith(f"expected {expected:#x}, found {found:#x}")


def test_an_instruction_the_vc_handler_refuses_is_named_by_rip_and_bytes() -> None:
    reason = STOP_REASONS["VC_INSTRUCTION"][0]
    message = g.stop_message(reason, 0x1001D8A, int.from_bytes(bytes.fromhex("89 08 90"), "little"))
    assert "at RIP 0x1001d8a, found the bytes 89 08 90 00 00 00 00 00" in message
