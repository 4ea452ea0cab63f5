"""SNP guest messages and the secrets page: layouts against Linux's structs, the AES-256-GCM
primitive against NIST's vectors, and the guest channel's checks against a hostile peer."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nist_gcm import nist_gcm_records

from toolchain.errors import EvidenceError, InputError
from toolchain.snp import guest_msg, secrets
from toolchain.snp.guest_msg import (
    HEADER_OFFSETS,
    HEADER_SIZE,
    MAX_MSG_SIZE,
    MESSAGE_PAGE_SIZE,
    REPORT_REQ_SIZE,
    REPORT_RSP_SIZE,
    GuestChannel,
    MessageHeader,
    MessageType,
    ReportRequest,
    ReportResponse,
    gcm_open,
    gcm_seal,
    message_iv,
    open_message,
    seal,
)
from toolchain.snp.report import REPORT_SIZE
from toolchain.snp.secrets import SecretsPage

KEY = bytes(range(32))
NONCE = bytes(range(64))


def _offsets(members: list[tuple[str, int]]) -> tuple[dict[str, int], int]:
    """Offsets of a __packed C struct from its members (name, size), in declaration order."""
    offsets, at = {}, 0
    for name, size in members:
        offsets[name] = at
        at += size
    return offsets, at


# ---- layouts, transcribed from Linux v6.12 -------------------------------------------------------

# arch/x86/include/asm/sev.h: struct snp_guest_msg_hdr (__packed)
LINUX_SNP_GUEST_MSG_HDR = [
    ("authtag", 32),  # u8 authtag[MAX_AUTHTAG_LEN]
    ("msg_seqno", 8),  # u64
    ("rsvd1", 8),  # u8 rsvd1[8]
    ("algo", 1),
    ("hdr_version", 1),
    ("hdr_sz", 2),
    ("msg_type", 1),
    ("msg_version", 1),
    ("msg_sz", 2),
    ("rsvd2", 4),
    ("msg_vmpck", 1),
    ("rsvd3", 35),
]
# include/uapi/linux/sev-guest.h: struct snp_report_req
LINUX_SNP_REPORT_REQ = [("user_data", 64), ("vmpl", 4), ("rsvd", 28)]
# arch/x86/include/asm/sev.h: struct secrets_os_area and struct snp_secrets_page
LINUX_SECRETS_OS_AREA = [
    ("msg_seqno_0", 4),
    ("msg_seqno_1", 4),
    ("msg_seqno_2", 4),
    ("msg_seqno_3", 4),
    ("ap_jump_table_pa", 8),
    ("rsvd", 40),
    ("guest_usage", 32),
]
LINUX_SNP_SECRETS_PAGE = [
    ("version", 4),
    ("imien", 4),  # u32 imien : 1, rsvd1 : 31
    ("fms", 4),
    ("rsvd2", 4),
    ("gosvw", 16),
    ("vmpck0", 32),
    ("vmpck1", 32),
    ("vmpck2", 32),
    ("vmpck3", 32),
    ("os_area", 96),
    ("vmsa_tweak_bitmap", 64),
    ("svsm_base", 8),
    ("svsm_size", 8),
    ("svsm_caa", 8),
    ("svsm_max_version", 4),
    ("svsm_guest_vmpl", 1),
    ("rsvd3", 3),
    ("rsvd4", 3744),
]


def test_header_layout_is_linux_snp_guest_msg_hdr() -> None:
    offsets, size = _offsets(LINUX_SNP_GUEST_MSG_HDR)
    assert size == HEADER_SIZE == 0x60
    assert offsets == HEADER_OFFSETS
    # The AAD is everything from ALGO on: 48 bytes (Linux AAD_LEN).
    assert offsets["algo"] == guest_msg.AAD_OFFSET
    assert HEADER_SIZE - offsets["algo"] == 48
    header = MessageHeader(
        msg_seqno=0x1122334455667788,
        msg_type=5,
        msg_version=1,
        msg_sz=96,
        msg_vmpck=2,
        authtag=bytes(range(32)),
    )
    raw = header.to_bytes()
    assert raw[:32] == bytes(range(32))
    assert raw[0x20:0x28] == bytes.fromhex("8877665544332211")
    assert raw[0x30:0x38] == bytes([1, 1, 0x60, 0, 5, 1, 96, 0])
    assert raw[0x3C] == 2
    assert MessageHeader.parse(raw) == header


def test_report_request_and_response_layouts() -> None:
    offsets, size = _offsets(LINUX_SNP_REPORT_REQ)
    assert size == REPORT_REQ_SIZE == 96
    raw = ReportRequest(NONCE, vmpl=3, key_sel=1).to_bytes()
    assert raw[: offsets["vmpl"]] == NONCE
    assert raw[offsets["vmpl"] : offsets["vmpl"] + 4] == b"\x03\0\0\0"
    assert raw[0x44:0x48] == b"\x01\0\0\0"  # KEY_SEL (SNP ABI; inside Linux's rsvd)
    # MSG_REPORT_RSP: STATUS, REPORT_SIZE, 24 reserved, the 0x4A0-byte report.
    assert REPORT_RSP_SIZE == 1216 == 0x20 + REPORT_SIZE
    # Linux: msg_sz + authsize (16) <= the 4000-byte payload area of the one-page message.
    assert MAX_MSG_SIZE == 4000 - 16
    response = ReportResponse(status=0, report=b"\xab" * REPORT_SIZE).to_bytes()
    assert struct.unpack_from("<II", response) == (0, REPORT_SIZE)
    assert response[8:0x20] == bytes(24)
    assert response[0x20:] == b"\xab" * REPORT_SIZE


def test_secrets_page_layout_is_linux_snp_secrets_page() -> None:
    offsets, size = _offsets(LINUX_SNP_SECRETS_PAGE)
    area, area_size = _offsets(LINUX_SECRETS_OS_AREA)
    assert size == secrets.SECRETS_PAGE_SIZE
    assert area_size == secrets.OS_AREA_SIZE
    flat = {**offsets, **{k: offsets["os_area"] + v for k, v in area.items() if k != "rsvd"}}
    for name, offset in secrets.FIELD_OFFSETS.items():
        assert flat[name] == offset, name
    assert [offsets[f"vmpck{n}"] for n in range(4)] == [0x20, 0x40, 0x60, 0x80]


def test_secrets_page_round_trip_and_reserved_bytes() -> None:
    page = SecretsPage(
        version=3,
        fms=0x00A10F11,
        vmpck=(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32),
        imien=True,
        gosvw=b"\x05" * 16,
        msg_seqno=(7, 0, 0, 9),
        svsm_guest_vmpl=2,
    )
    raw = page.to_bytes()
    assert raw[:12] == bytes.fromhex("0300000001000000110fa100")
    assert raw[0x20:0x40] == b"\x01" * 32
    assert raw[0x80:0xA0] == b"\x04" * 32
    assert raw[0xA0:0xA4] == b"\x07\0\0\0"
    assert raw[0xAC:0xB0] == b"\x09\0\0\0"
    assert raw[0x15C] == 2
    assert SecretsPage.parse(raw) == page
    assert "01010101" not in repr(page)  # keys never printed
    for offset in (0x00C, 0x0B8, 0x15D, 0xFFF):
        bad = bytearray(raw)
        bad[offset] = 1
        with pytest.raises(InputError, match="reserved"):
            SecretsPage.parse(bytes(bad))
    with pytest.raises(InputError, match="reserved bits"):
        SecretsPage.parse(raw[:4] + b"\x03\0\0\0" + raw[8:])
    with pytest.raises(InputError, match="4096 bytes"):
        SecretsPage.parse(raw[:-1])


def test_fresh_secrets_pages_have_distinct_random_keys() -> None:
    first, second = SecretsPage.fresh(0x00A10F11), SecretsPage.fresh(0x00A10F11)
    keys = set(first.vmpck) | set(second.vmpck)
    assert len(keys) == 8
    assert bytes(32) not in keys
    assert first.version == 3
    assert first.msg_seqno == (0, 0, 0, 0)


# ---- AES-256-GCM against NIST CAVS 14.0 ----------------------------------------------------------


def test_gcm_seal_matches_nist_encrypt_vectors() -> None:
    count = 0
    for v in nist_gcm_records("gcmEncryptExtIV256.rsp"):
        key, iv, aad = (bytes.fromhex(v[k]) for k in ("Key", "IV", "AAD"))
        ciphertext, tag = gcm_seal(key, iv, aad, bytes.fromhex(v["PT"]))
        assert (ciphertext.hex(), tag.hex()) == (v["CT"], v["Tag"]), v["Count"]
        count += 1
    assert count == 375  # 25 PT/AAD length groups x 15 vectors at IVlen 96, Taglen 128


def test_gcm_open_matches_nist_decrypt_vectors() -> None:
    passed = failed = 0
    for v in nist_gcm_records("gcmDecrypt256.rsp"):
        key, iv, aad, ct, tag = (bytes.fromhex(v[k]) for k in ("Key", "IV", "AAD", "CT", "Tag"))
        if v["FAIL"]:
            with pytest.raises(EvidenceError, match="AUTHTAG"):
                gcm_open(key, iv, aad, ct, tag)
            failed += 1
        else:
            assert gcm_open(key, iv, aad, ct, tag).hex() == v["PT"], v["Count"]
            passed += 1
    assert (passed, failed) == (184, 191)  # every IVlen 96, Taglen 128 record


def test_message_crypto_is_iv_from_seqno_and_aad_from_header() -> None:
    """An independent AESGCM decrypt with IV = seqno LE (12 bytes), AAD = header 0x30..0x5F."""
    assert message_iv(0x0102) == b"\x02\x01" + bytes(10)
    message = seal(KEY, seqno=0x0102, msg_type=5, msg_version=1, vmpck=0, payload=b"hello")
    tag = message[:16]
    assert message[16:32] == bytes(16)
    plain = AESGCM(KEY).decrypt(message_iv(0x0102), message[HEADER_SIZE:] + tag, message[0x30:0x60])
    assert plain == b"hello"
    assert open_message(KEY, message)[1] == b"hello"


@pytest.mark.parametrize("offset", [0x00, 0x0F, 0x20, 0x31, 0x3D, 0x5F, HEADER_SIZE])
def test_any_flipped_authenticated_byte_is_refused(offset: int) -> None:
    message = bytearray(seal(KEY, seqno=1, msg_type=5, msg_version=1, vmpck=0, payload=b"x" * 8))
    message[offset] ^= 0x01
    with pytest.raises(EvidenceError):
        open_message(KEY, bytes(message))


def test_oversized_and_truncated_messages() -> None:
    with pytest.raises(InputError, match="at most 3984"):
        seal(KEY, seqno=1, msg_type=5, msg_version=1, vmpck=0, payload=bytes(MAX_MSG_SIZE + 1))
    with pytest.raises(InputError, match="0x60 bytes"):
        open_message(KEY, bytes(HEADER_SIZE - 1))
    message = bytearray(seal(KEY, seqno=1, msg_type=5, msg_version=1, vmpck=0, payload=b"abc"))
    struct.pack_into("<H", message, 0x36, MAX_MSG_SIZE + 1)
    with pytest.raises(EvidenceError, match="MSG_SZ"):
        open_message(KEY, bytes(message) + bytes(MESSAGE_PAGE_SIZE))
    struct.pack_into("<H", message, 0x36, 100)
    with pytest.raises(EvidenceError, match="shorter than its header"):
        open_message(KEY, bytes(message))
    with pytest.raises(InputError, match="sequence number"):
        seal(KEY, seqno=0, msg_type=5, msg_version=1, vmpck=0, payload=b"")


# ---- the guest's channel against a scripted peer -------------------------------------------------


def _answer(
    request: bytes,
    *,
    key: bytes = KEY,
    seqno_delta: int = 1,
    msg_type: int = MessageType.REPORT_RSP,
    version: int = 1,
    vmpck: int = 0,
    status: int = 0,
    report_size: int = REPORT_SIZE,
    payload: bytes | None = None,
) -> bytes:
    header, body = open_message(KEY, request)
    report = NONCE + body[:64] + bytes(REPORT_SIZE - 128)  # recognisable bytes
    if payload is None:
        payload = ReportResponse(status=status, report=report, report_size=report_size).to_bytes()
    return seal(
        key,
        seqno=header.msg_seqno + seqno_delta,
        msg_type=msg_type,
        msg_version=version,
        vmpck=vmpck,
        payload=payload,
    )


def test_channel_round_trip_steps_sequence_numbers_by_two() -> None:
    channel = GuestChannel(KEY)
    seen: list[int] = []

    def peer(request: bytes) -> bytes:
        assert len(request) == MESSAGE_PAGE_SIZE
        seen.append(MessageHeader.parse(request).msg_seqno)
        return _answer(request)

    report = channel.request_report(NONCE, peer)
    assert report[:64] == NONCE
    assert report[64:128] == NONCE
    channel.request_report(NONCE, peer)
    assert seen == [1, 3]
    assert channel.last_seqno == 4
    assert not channel.disabled


def test_channel_continues_the_secrets_page_count() -> None:
    page = SecretsPage(version=3, fms=0, vmpck=(KEY, KEY, KEY, KEY), msg_seqno=(10, 0, 0, 0))
    channel = GuestChannel.from_secrets(page)
    sealed = channel.seal_request(MessageType.REPORT_REQ, ReportRequest(NONCE).to_bytes())
    assert MessageHeader.parse(sealed).msg_seqno == 11


def _failing(channel: GuestChannel, answer: object, match: str) -> None:
    key_buffer = channel._key  # the only mutable copy of the key
    with pytest.raises((EvidenceError, InputError), match=match):
        channel.request_report(NONCE, answer)  # type: ignore[arg-type]
    assert channel.disabled
    assert key_buffer == bytearray(32)  # wiped, not merely dropped
    # Nothing more goes out on this key, not even a well-formed request.
    with pytest.raises(EvidenceError, match="disabled"):
        channel.request_report(NONCE, _answer)


def _tampered_tag(request: bytes) -> bytes:
    answer = bytearray(_answer(request))
    answer[3] ^= 0x80
    return bytes(answer)


def _tampered_ciphertext(request: bytes) -> bytes:
    answer = bytearray(_answer(request))
    answer[HEADER_SIZE + 100] ^= 0x01
    return bytes(answer)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (_tampered_tag, "AUTHTAG"),
        (_tampered_ciphertext, "AUTHTAG"),
        (lambda r: _answer(r, key=b"\x55" * 32), "AUTHTAG"),
        (lambda r: _answer(r, seqno_delta=0), "MSG_SEQNO: expected 2, found 1"),
        (lambda r: _answer(r, seqno_delta=3), "MSG_SEQNO: expected 2, found 4"),
        (lambda r: _answer(r, msg_type=MessageType.KEY_RSP), "MSG_TYPE: expected 6, found 4"),
        (lambda r: _answer(r, version=2), "MSG_VERSION: expected 1, found 2"),
        (lambda r: _answer(r, vmpck=1), "MSG_VMPCK: expected 0, found 1"),
        (lambda r: _answer(r, payload=bytes(REPORT_RSP_SIZE + 16)), "MSG_SZ: expected 1216"),
        (lambda r: _answer(r, status=0x16), "STATUS: expected 0x0, found 0x16"),
        (lambda r: _answer(r, report_size=0x4A1), "REPORT_SIZE"),
        (lambda r: _answer(r)[: HEADER_SIZE - 1], "0x60 bytes"),
        (lambda r: _answer(r)[:-1], "shorter than its header"),
        (lambda r: b"", "0x60 bytes"),
    ],
    ids=[
        "tampered-tag",
        "tampered-ciphertext",
        "other-key",
        "replayed-seqno",
        "skipped-seqno",
        "wrong-type",
        "wrong-version",
        "wrong-vmpck-index",
        "oversized",
        "bad-status",
        "bad-report-size",
        "truncated-header",
        "truncated-payload",
        "empty",
    ],
)
def test_channel_refuses_and_wipes_the_key(answer: object, match: str) -> None:
    _failing(GuestChannel(KEY), answer, match)


def test_replaying_an_earlier_genuine_response_is_refused() -> None:
    channel = GuestChannel(KEY)
    first: list[bytes] = []

    def record(request: bytes) -> bytes:
        first.append(_answer(request))
        return first[0]

    channel.request_report(NONCE, record)
    _failing(channel, lambda _request: first[0], "MSG_SEQNO: expected 4, found 2")


def test_a_second_request_before_the_answer_disables_the_key() -> None:
    channel = GuestChannel(KEY)
    payload = ReportRequest(NONCE).to_bytes()
    channel.seal_request(MessageType.REPORT_REQ, payload)
    with pytest.raises(EvidenceError, match="unanswered"):
        channel.seal_request(MessageType.REPORT_REQ, payload)
    assert channel.disabled


def test_a_failed_transport_burns_the_sequence_number_and_the_key() -> None:
    channel = GuestChannel(KEY)

    def broken(_request: bytes) -> bytes:
        raise InputError("the host dropped the request")

    _failing(channel, broken, "dropped")


def test_channel_refuses_bad_keys_and_indices() -> None:
    with pytest.raises(InputError, match="all zero"):
        GuestChannel(bytes(32))
    with pytest.raises(InputError, match="32 bytes"):
        GuestChannel(KEY[:16])
    with pytest.raises(InputError, match="out of range"):
        GuestChannel(KEY, vmpck_index=4)
    with pytest.raises(InputError, match="REPORT_DATA"):
        GuestChannel(KEY).request_report(b"short", _answer)
