"""Tests that kill the mutants of ``toolchain.snp.guest_msg`` and ``toolchain.snp.secrets`` the
guest-message suite let survive (tests/MUTATION.md): the message-type numbering against Linux's
enum, and the last sequence numbers a VMPCK may use."""

from __future__ import annotations

from dataclasses import replace

import pytest

from toolchain.errors import EvidenceError, InputError
from toolchain.snp import secrets
from toolchain.snp.guest_msg import (
    MAX_SEQNO,
    GuestChannel,
    MessageHeader,
    MessageType,
    ReportRequest,
    ReportResponse,
    ReportStatus,
    gcm_open,
    gcm_seal,
    message_iv,
    open_message,
    seal,
)
from toolchain.snp.secrets import SecretsPage

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


# ---- the secrets page ----------------------------------------------------------------------------


def _every_field_set() -> SecretsPage:
    """A page where every field holds a distinct, full-width value."""
    return SecretsPage(
        version=0xFFFFFFFF,
        fms=0xFFFFFFFE,
        vmpck=(b"\x11" * 32, b"\x22" * 32, b"\x33" * 32, b"\x44" * 32),
        imien=True,
        gosvw=bytes(range(1, 17)),
        msg_seqno=(0xFFFFFFFF, 2, 3, 4),
        ap_jump_table_pa=(1 << 64) - 1,
        guest_usage=bytes(range(32, 64)),
        vmsa_tweak_bitmap=bytes(range(64, 128)),
        svsm_base=(1 << 64) - 2,
        svsm_size=(1 << 64) - 3,
        svsm_caa=(1 << 64) - 4,
        svsm_max_version=0xFFFFFFFF,
        svsm_guest_vmpl=0xFF,
    )


def test_every_secrets_field_lands_at_its_offset_and_round_trips() -> None:
    page = _every_field_set()
    raw = page.to_bytes()
    u32 = lambda at: int.from_bytes(raw[at : at + 4], "little")  # noqa: E731
    u64 = lambda at: int.from_bytes(raw[at : at + 8], "little")  # noqa: E731
    offsets = secrets.FIELD_OFFSETS
    assert (u32(offsets["version"]), u32(offsets["imien"]), u32(offsets["fms"])) == (
        0xFFFFFFFF,
        1,
        0xFFFFFFFE,
    )
    assert raw[offsets["gosvw"] : offsets["gosvw"] + 16] == page.gosvw
    for n in range(4):
        assert raw[offsets[f"vmpck{n}"] : offsets[f"vmpck{n}"] + 32] == page.vmpck[n]
        assert page.key(n) == page.vmpck[n]
        assert u32(offsets[f"msg_seqno_{n}"]) == page.msg_seqno[n]
    assert u64(offsets["ap_jump_table_pa"]) == page.ap_jump_table_pa
    assert raw[offsets["guest_usage"] : offsets["guest_usage"] + 32] == page.guest_usage
    assert raw[0x100:0x140] == page.vmsa_tweak_bitmap
    assert [u64(offsets[f"svsm_{n}"]) for n in ("base", "size", "caa")] == [
        page.svsm_base,
        page.svsm_size,
        page.svsm_caa,
    ]
    assert u32(offsets["svsm_max_version"]) == 0xFFFFFFFF
    assert raw[offsets["svsm_guest_vmpl"]] == 0xFF
    assert SecretsPage.parse(raw) == page
    assert SecretsPage.parse(bytearray(raw)) == page


@pytest.mark.parametrize(
    ("field", "bits"),
    [
        ("version", 32),
        ("fms", 32),
        ("ap_jump_table_pa", 64),
        ("svsm_base", 64),
        ("svsm_size", 64),
        ("svsm_caa", 64),
        ("svsm_max_version", 32),
        ("svsm_guest_vmpl", 8),
    ],
)
def test_secrets_integer_fields_take_exactly_their_width(field: str, bits: int) -> None:
    for bad in (1 << bits, -1, True):
        with pytest.raises(InputError, match=f"secrets page {field}=.* does not fit in {bits}"):
            replace(_every_field_set(), **{field: bad})


def test_secrets_sequence_numbers_and_byte_fields_are_checked() -> None:
    page = _every_field_set()
    for index in range(4):
        for bad in (1 << 32, -1):
            seqnos = list(page.msg_seqno)
            seqnos[index] = bad
            with pytest.raises(InputError, match=f"msg_seqno_{index}=.* does not fit in 32"):
                replace(page, msg_seqno=tuple(seqnos))
        keys = list(page.vmpck)
        keys[index] = bytes(31)
        with pytest.raises(InputError, match=f"secrets page vmpck{index} must be 32 bytes"):
            replace(page, vmpck=tuple(keys))
    for field, size in (("gosvw", 16), ("guest_usage", 32), ("vmsa_tweak_bitmap", 64)):
        for bad in (bytes(size - 1), bytes(size + 1), bytearray(size)):
            with pytest.raises(InputError, match=f"secrets page {field} must be {size} bytes"):
                replace(page, **{field: bad})
    with pytest.raises(InputError, match="holds 4 VMPCKs"):
        replace(page, vmpck=page.vmpck[:3])
    with pytest.raises(InputError, match="holds 4 message sequence numbers"):
        replace(page, msg_seqno=(0, 0, 0))
    with pytest.raises(InputError, match="imien must be a bool"):
        replace(page, imien=1)
    for index in (-1, 4, True):
        with pytest.raises(InputError, match=r"VMPCK index .* out of range 0..3"):
            page.key(index)


def test_every_reserved_secrets_byte_is_checked_and_only_those() -> None:
    raw = _every_field_set().to_bytes()  # every field set: its bytes next to reserved ones
    for first, last in ((0x00C, 0x00F), (0x0B8, 0x0DF), (0x15D, 0xFFF)):
        for offset in (first, last):
            bad = bytearray(raw)
            bad[offset] = 0x80
            with pytest.raises(
                InputError, match=f"reserved bytes {first:#x}..{last:#x} are not zero"
            ):
                SecretsPage.parse(bytes(bad))
    for word in (0x2, 0x80000000):
        bad = bytearray(raw)
        bad[4:8] = (1 | word).to_bytes(4, "little")
        with pytest.raises(InputError, match="reserved bits set"):
            SecretsPage.parse(bytes(bad))
    for size in (4095, 4097):
        with pytest.raises(InputError, match=f"a secrets page is 4096 bytes, not {size}"):
            SecretsPage.parse(bytes(size))
    with pytest.raises(InputError, match="not str"):
        SecretsPage.parse("page")  # type: ignore[arg-type]


def test_a_fresh_page_is_what_the_firmware_writes() -> None:
    page = SecretsPage.fresh(0x00A10F11)
    assert (page.version, page.fms, page.imien) == (secrets.SECRETS_VERSION, 0x00A10F11, False)
    assert secrets.SECRETS_VERSION == 3
    assert all(len(key) == 32 for key in page.vmpck)
    assert SecretsPage.fresh(0, version=2).version == 2


def test_imien_clear_parses_as_clear() -> None:
    page = replace(_every_field_set(), imien=False)
    raw = page.to_bytes()
    assert raw[4:8] == bytes(4)
    assert SecretsPage.parse(raw).imien is False
    assert SecretsPage.parse(raw) == page


def test_gcm_open_checks_iv_and_tag_sizes_each() -> None:
    ciphertext, tag = gcm_seal(KEY, bytes(12), b"aad", b"payload")
    assert gcm_open(KEY, bytes(12), b"aad", ciphertext, tag) == b"payload"
    for iv, bad_tag in ((bytes(12), tag[:15]), (bytes(12), tag + b"\0"), (bytes(11), tag)):
        with pytest.raises(InputError, match="IV is 12 bytes and its tag 16"):
            gcm_open(KEY, iv, b"aad", ciphertext, bad_tag)


def test_a_report_response_of_the_wrong_size_is_named() -> None:
    good = ReportResponse(status=0).to_bytes()
    assert ReportResponse.parse(good) == ReportResponse(status=0)
    for data in (good[:-1], good + b"\0", b""):
        with pytest.raises(EvidenceError, match="MSG_REPORT_RSP has the wrong size"):
            ReportResponse.parse(data)


def test_a_request_is_message_version_1_unless_told() -> None:
    channel = GuestChannel(KEY)
    sealed = channel.seal_request(MessageType.KEY_REQ, bytes(32))
    assert MessageHeader.parse(sealed).msg_version == 1
    channel.open_response(_answer(sealed), expected_size=32)
    assert MessageHeader.parse(channel.seal_request(MessageType.KEY_REQ, b"", 2)).msg_version == 2


def test_a_response_with_no_request_disables_the_key() -> None:
    channel = GuestChannel(KEY)
    stray = seal(KEY, seqno=2, msg_type=6, msg_version=1, vmpck=0, payload=bytes(32))
    with pytest.raises(EvidenceError, match="no request pending"):
        channel.open_response(stray, expected_size=32)
    assert channel.disabled
    with pytest.raises(EvidenceError, match="disabled"):
        channel.seal_request(MessageType.KEY_REQ, bytes(32))
