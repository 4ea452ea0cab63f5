"""SNP guest messages: the AES-256-GCM channel between a guest and the AMD-SP, keyed by a VMPCK.

Layout and rules as Linux v6.12 implements them (``struct snp_guest_msg_hdr`` in
``arch/x86/include/asm/sev.h``; ``enc_payload``/``verify_and_dec_payload`` in
``drivers/virt/coco/sev-guest/sev-guest.c``) and the SNP ABI specification ("SNP_GUEST_REQUEST",
"MSG_REPORT_REQ"/"MSG_REPORT_RSP"). A message is one page: a 0x60-byte header, then the
ciphertext of ``msg_sz`` bytes.

======  ====  ===========================================================================
offset  size  header field
======  ====  ===========================================================================
0x00    32    AUTHTAG (the 16-byte GCM tag, then 16 zero bytes)
0x20    8     MSG_SEQNO (u64; the GCM IV is this number little-endian, zero-padded to 12)
0x28    8     reserved
0x30    1     ALGO (1: AES-256-GCM)                 -- the AAD is bytes 0x30..0x5F --
0x31    1     HDR_VERSION (1)
0x32    2     HDR_SZ (0x60)
0x34    1     MSG_TYPE (5 MSG_REPORT_REQ, 6 MSG_REPORT_RSP, ...)
0x35    1     MSG_VERSION
0x36    2     MSG_SZ (plaintext bytes)
0x38    4     reserved
0x3C    1     MSG_VMPCK (which VMPCK encrypted it)
0x3D    35    reserved
======  ====  ===========================================================================

Sequence numbers are per VMPCK and never repeat (a repeated IV under one GCM key reveals the
key stream and allows forgeries): the guest sends request N, the firmware answers with N+1,
the next request is N+2 (Linux keeps the count in the secrets page's OS area and steps it by 2).

``GuestChannel`` is the guest's end. It seals requests with strictly increasing sequence
numbers and checks every response (header, sequence, type, version, size, tag, then the
payload's status and size) before anything in it is used; on *any* failure it wipes its key
and refuses all further use, as Linux's sev-guest driver disables the VMPCK. The firmware's end
(``runtime.firmware.sim``) uses ``seal``/``open_message`` from here too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from toolchain.errors import EvidenceError, InputError, KeepError
from toolchain.snp.report import REPORT_SIZE
from toolchain.snp.secrets import VMPCK_COUNT, VMPCK_SIZE, SecretsPage

HEADER_SIZE = 0x60
MESSAGE_PAGE_SIZE = 4096
AUTHTAG_FIELD_SIZE = 32
AUTHTAG_SIZE = 16
AAD_OFFSET = 0x30
IV_SIZE = 12
HDR_VERSION = 1
AEAD_AES_256_GCM = 1
#: The largest plaintext a one-page message carries (Linux: sz + authsize <= payload area).
MAX_MSG_SIZE = MESSAGE_PAGE_SIZE - HEADER_SIZE - AUTHTAG_SIZE
#: Linux keeps the sequence number in a u32 of the secrets page and stops before it wraps.
MAX_SEQNO = 0xFFFFFFFF

REPORT_REQ_SIZE = 96
REPORT_RSP_SIZE = 0x20 + REPORT_SIZE  # 1216
REPORT_MSG_VERSION = 1


class MessageType(IntEnum):
    """SNP ABI message types (Linux ``enum msg_type``)."""

    INVALID = 0
    CPUID_REQ = 1
    CPUID_RSP = 2
    KEY_REQ = 3
    KEY_RSP = 4
    REPORT_REQ = 5
    REPORT_RSP = 6
    EXPORT_REQ = 7
    EXPORT_RSP = 8
    IMPORT_REQ = 9
    IMPORT_RSP = 10
    ABSORB_REQ = 11
    ABSORB_RSP = 12
    VMRK_REQ = 13
    VMRK_RSP = 14


class ReportStatus(IntEnum):
    """MSG_REPORT_RSP STATUS values (SNP ABI)."""

    SUCCESS = 0x00
    INVALID_PARAMETERS = 0x16
    INVALID_KEY_SELECTION = 0x27


# authtag, seqno, rsvd1, algo, hdr_version, hdr_sz, type, version, msg_sz, rsvd2, vmpck, rsvd3
_HEADER = struct.Struct("<32sQ8sBBHBBHIB35s")
#: Offset of every header field (for tests against Linux's struct and for dump tools).
HEADER_OFFSETS: dict[str, int] = {
    "authtag": 0x00,
    "msg_seqno": 0x20,
    "rsvd1": 0x28,
    "algo": 0x30,
    "hdr_version": 0x31,
    "hdr_sz": 0x32,
    "msg_type": 0x34,
    "msg_version": 0x35,
    "msg_sz": 0x36,
    "rsvd2": 0x38,
    "msg_vmpck": 0x3C,
    "rsvd3": 0x3D,
}


def _check_int(name: str, value: object, bits: int, *, low: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < 1 << bits:
        raise InputError(f"{name}={value!r} out of range {low}..{(1 << bits) - 1:#x}")


@dataclass(frozen=True)
class MessageHeader:
    """The 0x60-byte ``snp_guest_msg_hdr``."""

    msg_seqno: int
    msg_type: int
    msg_version: int
    msg_sz: int
    msg_vmpck: int
    authtag: bytes = bytes(AUTHTAG_FIELD_SIZE)
    algo: int = AEAD_AES_256_GCM
    hdr_version: int = HDR_VERSION
    hdr_sz: int = HEADER_SIZE
    rsvd1: bytes = bytes(8)
    rsvd2: int = 0
    rsvd3: bytes = bytes(35)

    def __post_init__(self) -> None:
        for name, bits in (
            ("msg_seqno", 64),
            ("msg_type", 8),
            ("msg_version", 8),
            ("msg_sz", 16),
            ("msg_vmpck", 8),
            ("algo", 8),
            ("hdr_version", 8),
            ("hdr_sz", 16),
            ("rsvd2", 32),
        ):
            _check_int(f"message header {name}", getattr(self, name), bits)
        for name, size in (("authtag", AUTHTAG_FIELD_SIZE), ("rsvd1", 8), ("rsvd3", 35)):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise InputError(f"message header {name} must be {size} bytes")

    @classmethod
    def parse(cls, data: bytes) -> MessageHeader:
        """The header at the start of ``data`` (at least 0x60 bytes)."""
        if len(data) < HEADER_SIZE:
            raise InputError(
                f"an SNP guest message header is {HEADER_SIZE:#x} bytes, this message has "
                f"{len(data)}"
            )
        (tag, seqno, rsvd1, algo, hdr_version, hdr_sz, msg_type, msg_version, msg_sz, rsvd2,
         vmpck, rsvd3) = _HEADER.unpack_from(bytes(data[:HEADER_SIZE]))  # fmt: skip
        return cls(
            msg_seqno=seqno,
            msg_type=msg_type,
            msg_version=msg_version,
            msg_sz=msg_sz,
            msg_vmpck=vmpck,
            authtag=tag,
            algo=algo,
            hdr_version=hdr_version,
            hdr_sz=hdr_sz,
            rsvd1=rsvd1,
            rsvd2=rsvd2,
            rsvd3=rsvd3,
        )

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            self.authtag,
            self.msg_seqno,
            self.rsvd1,
            self.algo,
            self.hdr_version,
            self.hdr_sz,
            self.msg_type,
            self.msg_version,
            self.msg_sz,
            self.rsvd2,
            self.msg_vmpck,
            self.rsvd3,
        )

    def aad(self) -> bytes:
        """The additional authenticated data: header bytes 0x30..0x5F."""
        return self.to_bytes()[AAD_OFFSET:]


def message_iv(seqno: int) -> bytes:
    """The GCM IV of a message: its sequence number, little-endian, in 12 bytes."""
    _check_int("message sequence number", seqno, 64)
    return seqno.to_bytes(8, "little") + bytes(IV_SIZE - 8)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != VMPCK_SIZE:
        raise InputError(f"a VMPCK is {VMPCK_SIZE} bytes (AES-256)")


def gcm_seal(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM with a 96-bit IV and a 128-bit tag: (ciphertext, tag)."""
    _check_key(key)
    if len(iv) != IV_SIZE:
        raise InputError(f"a guest-message IV is {IV_SIZE} bytes, not {len(iv)}")
    sealed = AESGCM(bytes(key)).encrypt(bytes(iv), bytes(plaintext), bytes(aad))
    return sealed[:-AUTHTAG_SIZE], sealed[-AUTHTAG_SIZE:]


def gcm_open(key: bytes, iv: bytes, aad: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """The plaintext, or ``EvidenceError`` (field AUTHTAG) when the tag does not verify."""
    _check_key(key)
    if len(iv) != IV_SIZE or len(tag) != AUTHTAG_SIZE:
        raise InputError(f"a guest-message IV is {IV_SIZE} bytes and its tag {AUTHTAG_SIZE}")
    try:
        return AESGCM(bytes(key)).decrypt(bytes(iv), bytes(ciphertext) + bytes(tag), bytes(aad))
    except InvalidTag:
        raise EvidenceError(
            "the SNP guest message does not authenticate under the VMPCK "
            "(tampered, or sealed with another key or sequence number)",
            field="AUTHTAG",
            expected="a valid AES-256-GCM tag",
            found=bytes(tag).hex(),
        ) from None


def seal(
    key: bytes,
    *,
    seqno: int,
    msg_type: int,
    msg_version: int,
    vmpck: int,
    payload: bytes,
) -> bytes:
    """One message: header then AES-256-GCM ciphertext of ``payload`` (not padded to a page)."""
    _check_key(key)
    _check_int("message sequence number", seqno, 64, low=1)  # Linux refuses 0 (-ENOSR)
    if len(payload) > MAX_MSG_SIZE:
        raise InputError(
            f"an SNP guest message carries at most {MAX_MSG_SIZE} bytes, not {len(payload)}"
        )
    header = MessageHeader(
        msg_seqno=seqno,
        msg_type=msg_type,
        msg_version=msg_version,
        msg_sz=len(payload),
        msg_vmpck=vmpck,
    )
    ciphertext, tag = gcm_seal(key, message_iv(seqno), header.aad(), payload)
    header = MessageHeader(
        msg_seqno=seqno,
        msg_type=msg_type,
        msg_version=msg_version,
        msg_sz=len(payload),
        msg_vmpck=vmpck,
        authtag=tag + bytes(AUTHTAG_FIELD_SIZE - AUTHTAG_SIZE),
    )
    return header.to_bytes() + ciphertext


def open_message(key: bytes, message: bytes) -> tuple[MessageHeader, bytes]:
    """Authenticate and decrypt one message. Checks the header's format fields first.

    The caller checks sequence, type, version and VMPCK index against what it expects; this
    only establishes that the header and payload are what the key's holder sealed.
    """
    _check_key(key)
    header = MessageHeader.parse(message)
    for name, expected, found in (
        ("ALGO", AEAD_AES_256_GCM, header.algo),
        ("HDR_VERSION", HDR_VERSION, header.hdr_version),
        ("HDR_SZ", HEADER_SIZE, header.hdr_sz),
    ):
        if found != expected:
            raise EvidenceError(
                "the SNP guest message header is not one this code knows",
                field=name,
                expected=expected,
                found=found,
            )
    if header.msg_sz > MAX_MSG_SIZE:
        raise EvidenceError(
            "the SNP guest message claims more than one page carries",
            field="MSG_SZ",
            expected=f"<= {MAX_MSG_SIZE}",
            found=header.msg_sz,
        )
    end = HEADER_SIZE + header.msg_sz
    if len(message) < end:
        raise EvidenceError(
            "the SNP guest message is shorter than its header says",
            field="MSG_SZ",
            expected=f"<= {len(message) - HEADER_SIZE}",
            found=header.msg_sz,
        )
    plaintext = gcm_open(
        key,
        message_iv(header.msg_seqno),
        header.aad(),
        message[HEADER_SIZE:end],
        header.authtag[:AUTHTAG_SIZE],
    )
    return header, plaintext


# ---- MSG_REPORT_REQ / MSG_REPORT_RSP -------------------------------------------------------------


@dataclass(frozen=True)
class ReportRequest:
    """MSG_REPORT_REQ (96 bytes): REPORT_DATA[64], VMPL u32, KEY_SEL u32 (bits 1:0), reserved."""

    report_data: bytes
    vmpl: int = 0
    key_sel: int = 0

    _LAYOUT = struct.Struct("<64sII24s")

    def __post_init__(self) -> None:
        if not isinstance(self.report_data, bytes) or len(self.report_data) != 64:
            raise InputError("REPORT_DATA must be 64 bytes")
        _check_int("VMPL", self.vmpl, 32)
        _check_int("KEY_SEL", self.key_sel, 32)

    def to_bytes(self) -> bytes:
        return self._LAYOUT.pack(self.report_data, self.vmpl, self.key_sel, bytes(24))

    @classmethod
    def parse(cls, data: bytes) -> tuple[ReportRequest, bool]:
        """The request and whether its reserved bits are all zero (the firmware's check)."""
        if len(data) != REPORT_REQ_SIZE:
            raise InputError(f"MSG_REPORT_REQ is {REPORT_REQ_SIZE} bytes, not {len(data)}")
        report_data, vmpl, key_sel, reserved = cls._LAYOUT.unpack(bytes(data))
        clean = not any(reserved) and not key_sel & ~0x3
        return cls(report_data, vmpl, key_sel), clean


@dataclass(frozen=True)
class ReportResponse:
    """MSG_REPORT_RSP (1216 bytes): STATUS u32, REPORT_SIZE u32, 24 reserved, REPORT[0x4A0]."""

    status: int
    report: bytes = bytes(REPORT_SIZE)
    report_size: int = REPORT_SIZE

    _LAYOUT = struct.Struct(f"<II24s{REPORT_SIZE}s")

    def __post_init__(self) -> None:
        _check_int("STATUS", self.status, 32)
        _check_int("REPORT_SIZE", self.report_size, 32)
        if not isinstance(self.report, bytes) or len(self.report) != REPORT_SIZE:
            raise InputError(f"a report field is {REPORT_SIZE} bytes")

    def to_bytes(self) -> bytes:
        return self._LAYOUT.pack(self.status, self.report_size, bytes(24), self.report)

    @classmethod
    def parse(cls, data: bytes) -> ReportResponse:
        if len(data) != REPORT_RSP_SIZE:
            raise EvidenceError(
                "MSG_REPORT_RSP has the wrong size",
                field="MSG_SZ",
                expected=REPORT_RSP_SIZE,
                found=len(data),
            )
        status, size, _reserved, report = cls._LAYOUT.unpack(bytes(data))
        return cls(status=status, report=report, report_size=size)


# ---- the guest's end -----------------------------------------------------------------------------

#: What carries a sealed request to the firmware and brings back its sealed response.
Transport = Callable[[bytes], bytes]


class GuestChannel:
    """A guest's channel to the firmware on one VMPCK. Any failure disables it for good."""

    def __init__(self, vmpck: bytes, *, vmpck_index: int = 0, last_seqno: int = 0) -> None:
        _check_key(vmpck)
        _check_int("VMPCK index", vmpck_index, 8)
        if vmpck_index >= VMPCK_COUNT:
            raise InputError(f"VMPCK index {vmpck_index} out of range 0..{VMPCK_COUNT - 1}")
        _check_int("last sequence number", last_seqno, 32)
        if not any(vmpck):
            # Linux treats an all-zero VMPCK as disabled (snp_is_vmpck_empty).
            raise InputError(f"VMPCK{vmpck_index} is all zero (disabled)")
        self._key: bytearray | None = bytearray(vmpck)
        self.vmpck_index = vmpck_index
        self._last_seqno = last_seqno
        self._pending: MessageHeader | None = None
        self.failure: str | None = None

    @classmethod
    def from_secrets(cls, page: SecretsPage, vmpck_index: int = 0) -> GuestChannel:
        """The channel on VMPCK``vmpck_index`` of a secrets page, continuing its OS-area count."""
        return cls(
            page.key(vmpck_index),
            vmpck_index=vmpck_index,
            last_seqno=page.msg_seqno[vmpck_index],
        )

    @property
    def disabled(self) -> bool:
        return self._key is None

    @property
    def last_seqno(self) -> int:
        """The last sequence number used (request or response); the next request is one more."""
        return self._last_seqno

    def _disable(self, reason: str) -> None:
        # Zero the only mutable copy (Python cannot promise more; the C guest wipes its page).
        if self._key is not None:
            self._key[:] = bytes(len(self._key))
        self._key = None
        self._pending = None
        self.failure = reason

    def _live_key(self) -> bytes:
        if self._key is None:
            raise EvidenceError(
                f"VMPCK{self.vmpck_index} was disabled after a failed guest message "
                f"({self.failure}); the keep must stop"
            )
        return bytes(self._key)

    def seal_request(self, msg_type: MessageType, payload: bytes, msg_version: int = 1) -> bytes:
        """The sealed request page; its sequence number is used up whatever happens next."""
        key = self._live_key()
        if self._pending is not None:
            self._disable("a second request while one was unanswered")
            raise EvidenceError(
                "a guest request is still unanswered; sending another would reuse its "
                f"sequence number: VMPCK{self.vmpck_index} disabled"
            )
        if self._last_seqno + 2 > MAX_SEQNO:
            self._disable("sequence numbers exhausted")
            raise EvidenceError(f"VMPCK{self.vmpck_index} has no sequence numbers left")
        seqno = self._last_seqno + 1
        message = seal(
            key,
            seqno=seqno,
            msg_type=msg_type,
            msg_version=msg_version,
            vmpck=self.vmpck_index,
            payload=payload,
        )
        self._last_seqno = seqno  # burnt now: a lost response must not let it be reused
        self._pending = MessageHeader.parse(message)
        return message + bytes(MESSAGE_PAGE_SIZE - len(message))

    def open_response(self, message: bytes, *, expected_size: int) -> bytes:
        """The plaintext of the answer to the pending request, after every check passed."""
        key = self._live_key()
        request = self._pending
        if request is None:
            self._disable("a response with no request")
            raise EvidenceError("a guest-message response arrived with no request pending")
        try:
            payload = self._check_response(key, request, message, expected_size)
        except KeepError as exc:
            self._disable(exc.message)
            raise
        self._pending = None
        self._last_seqno = request.msg_seqno + 1
        return payload

    def _check_response(
        self, key: bytes, request: MessageHeader, message: bytes, expected_size: int
    ) -> bytes:
        header = MessageHeader.parse(message)  # InputError if truncated
        for name, expected, found in (
            ("MSG_SEQNO", request.msg_seqno + 1, header.msg_seqno),
            ("MSG_TYPE", request.msg_type + 1, header.msg_type),
            ("MSG_VERSION", request.msg_version, header.msg_version),
            ("MSG_VMPCK", self.vmpck_index, header.msg_vmpck),
            ("MSG_SZ", expected_size, header.msg_sz),
        ):
            if found != expected:
                raise EvidenceError(
                    "the SNP guest message response is not the answer to our request",
                    field=name,
                    expected=expected,
                    found=found,
                )
        _header, payload = open_message(key, message)
        return payload

    def request_report(
        self,
        report_data: bytes,
        transport: Transport,
        *,
        vmpl: int = 0,
        key_sel: int = 0,
    ) -> bytes:
        """MSG_REPORT_REQ through ``transport``; the raw 0x4A0-byte report once all checks pass."""
        request = ReportRequest(bytes(report_data), vmpl, key_sel)
        sealed = self.seal_request(MessageType.REPORT_REQ, request.to_bytes(), REPORT_MSG_VERSION)
        try:
            answer = transport(sealed)
        except KeepError as exc:
            self._disable(f"the request failed: {exc.message}")
            raise
        payload = self.open_response(answer, expected_size=REPORT_RSP_SIZE)
        response = ReportResponse.parse(payload)
        for name, expected, found in (
            ("STATUS", ReportStatus.SUCCESS, response.status),
            ("REPORT_SIZE", REPORT_SIZE, response.report_size),
        ):
            if found != expected:
                self._disable(f"MSG_REPORT_RSP {name} {found:#x}")
                raise EvidenceError(
                    "the firmware did not return a report",
                    field=f"MSG_REPORT_RSP.{name}",
                    expected=f"{expected:#x}",
                    found=f"{found:#x}",
                )
        return response.report
