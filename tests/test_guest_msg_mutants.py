"""Tests that kill the mutants of ``toolchain.snp.guest_msg`` and ``toolchain.snp.secrets`` the
guest-message suite let survive (tests/MUTATION.md): the message-type numbering against Linux's
enum, and the last sequence numbers a VMPCK may use."""

from __future__ import annotations

import pytest

from toolchain.errors import EvidenceError, InputError
from toolchain.snp.guest_msg import (
    MAX_SEQNO,
    GuestChannel,
    MessageHeader,
    MessageType,
    ReportRequest,
    ReportResponse,
    ReportStatus,
    message_iv,
    open_message,
    seal,
)

KEY = bytes(range(32))
NONCE = bytes(range(64))

# arch/x86/include/asm/sev.h (Linux v6.12): enum msg_type, SNP_MSG_TYPE_INVALID = 0 and the rest
# numbered on from it in this order.
LINUX_ENUM_MSG_TYPE = [
    "INVALID",
    "CPUID_REQ",
    "CPUID_RSP",
    "KEY_REQ",
    "KEY_RSP",
    "REPORT_REQ",
    "REPORT_RSP",
    "EXPORT_REQ",
    "EXPORT_RSP",
    "IMPORT_REQ",
    "IMPORT_RSP",
    "ABSORB_REQ",
    "ABSORB_RSP",
    "VMRK_REQ",
    "VMRK_RSP",
]


def test_message_types_are_linux_enum_msg_type() -> None:
    assert {t.name: t.value for t in MessageType} == {
        name: value for value, name in enumerate(LINUX_ENUM_MSG_TYPE)
    }


def test_report_status_values_are_the_abi_codes() -> None:
    # SNP ABI, MSG_REPORT_RSP STATUS: 0 success, 0x16 invalid parameters, 0x27 invalid key.
    assert [int(s) for s in ReportStatus] == [0x00, 0x16, 0x27]


def _answer(request: bytes) -> bytes:
    header, _body = open_message(KEY, request)
    return seal(
        KEY,
        seqno=header.msg_seqno + 1,
        msg_type=header.msg_type + 1,
        msg_version=header.msg_version,
        vmpck=header.msg_vmpck,
        payload=bytes(32),
    )


def test_the_last_request_a_u32_count_allows_and_the_one_after() -> None:
    # Linux keeps the count in a u32: the last request is 0xFFFFFFFE (its answer 0xFFFFFFFF).
    assert MAX_SEQNO == 0xFFFFFFFF
    channel = GuestChannel(KEY, last_seqno=MAX_SEQNO - 2)
    sealed = channel.seal_request(MessageType.KEY_REQ, bytes(32))
    assert MessageHeader.parse(sealed).msg_seqno == MAX_SEQNO - 1
    channel.open_response(_answer(sealed), expected_size=32)
    assert channel.last_seqno == MAX_SEQNO
    with pytest.raises(EvidenceError, match="no sequence numbers left"):
        channel.seal_request(MessageType.KEY_REQ, bytes(32))
    assert channel.disabled

    spent = GuestChannel(KEY, last_seqno=MAX_SEQNO - 1)
    with pytest.raises(EvidenceError, match="no sequence numbers left"):
        spent.seal_request(MessageType.REPORT_REQ, ReportRequest(NONCE).to_bytes())
    assert spent.disabled


@pytest.mark.parametrize("field", ["msg_seqno", "msg_type", "msg_version", "msg_sz", "msg_vmpck"])
def test_negative_header_fields_are_refused_by_name(field: str) -> None:
    values = {"msg_seqno": 1, "msg_type": 5, "msg_version": 1, "msg_sz": 0, "msg_vmpck": 0}
    values[field] = -1
    with pytest.raises(InputError, match=f"message header {field}=-1 out of range 0\\.\\."):
        MessageHeader(**values)
    with pytest.raises(InputError, match="sequence number=-1"):
        message_iv(-1)


@pytest.mark.parametrize(
    ("field", "bits"),
    [
        ("msg_seqno", 64),
        ("msg_type", 8),
        ("msg_version", 8),
        ("msg_sz", 16),
        ("msg_vmpck", 8),
        ("algo", 8),
        ("hdr_version", 8),
        ("hdr_sz", 16),
        ("rsvd2", 32),
    ],
)
def test_header_fields_take_exactly_their_width(field: str, bits: int) -> None:
    values: dict[str, int] = {
        "msg_seqno": 1, "msg_type": 5, "msg_version": 1, "msg_sz": 0, "msg_vmpck": 0,
    }  # fmt: skip
    values[field] = (1 << bits) - 1
    widest = MessageHeader(**values)  # type: ignore[arg-type]
    assert MessageHeader.parse(widest.to_bytes()) == widest
    values[field] = 1 << bits
    with pytest.raises(InputError, match=f"message header {field}=.* out of range"):
        MessageHeader(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "size"), [("authtag", 32), ("rsvd1", 8), ("rsvd3", 35)])
def test_header_byte_fields_must_have_their_exact_size(field: str, size: int) -> None:
    # struct would silently pad a short value or cut a long one: the header must refuse both.
    base = {"msg_seqno": 1, "msg_type": 5, "msg_version": 1, "msg_sz": 0, "msg_vmpck": 0}
    for wrong in (bytes(size - 1), bytes(size + 1), bytearray(size), "0" * size):
        with pytest.raises(InputError, match=f"message header {field} must be {size} bytes"):
            MessageHeader(**base, **{field: wrong})  # type: ignore[arg-type]
    assert len(MessageHeader(**base, **{field: bytes(size)}).to_bytes()) == 0x60  # type: ignore[arg-type]


def test_a_report_request_asks_for_vmpl0_and_the_vcek_by_default() -> None:
    # MSG_REPORT_REQ: REPORT_DATA[64], VMPL u32 = 0, KEY_SEL u32 = 0 (either key), 24 reserved.
    assert ReportRequest(NONCE).to_bytes() == NONCE + bytes(32)
    parsed, clean = ReportRequest.parse(NONCE + bytes(32))
    assert (parsed.vmpl, parsed.key_sel, clean) == (0, 0, True)


def test_report_request_and_response_u32_fields_take_their_full_width() -> None:
    # A u32 the peer sent must parse (the checks that follow name it), not crash the parser.
    widest = ReportRequest(NONCE, vmpl=0xFFFFFFFF, key_sel=0xFFFFFFFF)
    parsed, clean = ReportRequest.parse(widest.to_bytes())
    assert (parsed, clean) == (widest, False)  # KEY_SEL bits 31:2 are reserved
    for name in ("vmpl", "key_sel"):
        with pytest.raises(InputError, match="out of range"):
            ReportRequest(NONCE, **{name: 1 << 32})
    response = ReportResponse(status=0xFFFFFFFF, report_size=0xFFFFFFFF)
    assert ReportResponse.parse(response.to_bytes()) == response
    with pytest.raises(InputError, match="STATUS=4294967296 out of range"):
        ReportResponse(status=1 << 32)
    with pytest.raises(InputError, match="REPORT_SIZE=4294967296 out of range"):
        ReportResponse(status=0, report_size=1 << 32)
    with pytest.raises(InputError, match="STATUS=-1 out of range"):
        ReportResponse(status=-1)


def test_channel_refuses_out_of_range_index_and_count() -> None:
    for index in (-1, True, 1 << 8):
        with pytest.raises(InputError, match=r"VMPCK index.* out of range"):
            GuestChannel(KEY, vmpck_index=index)
    for count in (-1, 1 << 32, True):
        with pytest.raises(InputError, match=r"last sequence number=.* out of range"):
            GuestChannel(KEY, last_seqno=count)
    assert GuestChannel(KEY, vmpck_index=3, last_seqno=MAX_SEQNO).last_seqno == MAX_SEQNO


def test_request_report_asks_for_vmpl0_unless_told() -> None:
    asked: list[ReportRequest] = []

    def peer(request: bytes) -> bytes:
        header, body = open_message(KEY, request)
        asked.append(ReportRequest.parse(body)[0])
        return seal(
            KEY,
            seqno=header.msg_seqno + 1,
            msg_type=MessageType.REPORT_RSP,
            msg_version=1,
            vmpck=0,
            payload=ReportResponse(status=0).to_bytes(),
        )

    channel = GuestChannel(KEY)
    channel.request_report(NONCE, peer)
    channel.request_report(NONCE, peer, vmpl=2, key_sel=1)
    assert [(r.report_data, r.vmpl, r.key_sel) for r in asked] == [(NONCE, 0, 0), (NONCE, 2, 1)]
