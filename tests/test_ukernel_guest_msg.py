"""The microkernel's guest-message channel (runtime/guest/ukernel/snp_msg.c) against the Python
model of the firmware's end (toolchain/snp/guest_msg.py): the ring-0 objects in a host harness
(tests/c/guest_msg_harness.c), fed responses that a hostile host could produce."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from ring0_harness import ask, build_harness

from toolchain.measure.abi import STOP_REASONS
from toolchain.snp.guest_msg import (
    HEADER_OFFSETS,
    REPORT_MSG_VERSION,
    MessageType,
    ReportRequest,
    ReportResponse,
    open_message,
    seal,
)
from toolchain.snp.report import REPORT_SIZE
from toolchain.snp.secrets import SecretsPage

# KEEP_STOP_* of keep_abi.h, declared in toolchain.measure.abi.
VMPCK, SEQNO_EXHAUSTED, MSG_TYPE, MSG_VMPCK, MSG_SEQNO, MSG_SZ = (
    STOP_REASONS[name][0]
    for name in ("VMPCK", "SEQNO_EXHAUSTED", "MSG_TYPE", "MSG_VMPCK", "MSG_SEQNO", "MSG_SZ")
)
AUTHTAG, STATUS, REPORT_SIZE_REASON, DISABLED = (
    STOP_REASONS[name][0] for name in ("AUTHTAG", "STATUS", "REPORT_SIZE", "DISABLED")
)
REPORT_DATA = bytes(range(64))
REPORT = os.urandom(REPORT_SIZE)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_harness(
        "guest_msg_harness.c", ["aes_gcm.c", "snp_msg.c"], tmp_path_factory.mktemp("msg")
    )


@pytest.fixture
def secrets() -> SecretsPage:
    return SecretsPage.fresh(0x00A10F11)


def response(
    secrets: SecretsPage,
    *,
    seqno: int = 2,
    vmpck: int = 0,
    key_index: int = 0,
    msg_type: int = MessageType.REPORT_RSP,
    payload: bytes | None = None,
) -> bytes:
    """A response as the firmware seals it (for the request with sequence number 1)."""
    body = payload if payload is not None else ReportResponse(0, REPORT).to_bytes()
    return seal(
        secrets.key(key_index),
        seqno=seqno,
        msg_type=msg_type,
        msg_version=REPORT_MSG_VERSION,
        vmpck=vmpck,
        payload=body,
    )


def exchange(harness: Path, secrets: SecretsPage, *responses: bytes, index: int = 0) -> list[str]:
    lines = [f"I {secrets.to_bytes().hex()} {index:02x}", f"S {REPORT_DATA.hex()}"]
    return ask(harness, lines + [f"R {r.hex()}" for r in responses])


def error(reason: int, expected: int, found: int) -> str:
    return f"ERR {reason:016x} {expected:016x} {found:016x} WIPED"


def test_request_is_what_the_firmware_opens(harness: Path, secrets: SecretsPage) -> None:
    init, request = exchange(harness, secrets)
    assert init == "OK"
    header, payload = open_message(secrets.key(0), bytes.fromhex(request))
    assert (header.msg_seqno, header.msg_type, header.msg_version, header.msg_vmpck) == (
        1,
        MessageType.REPORT_REQ,
        1,
        0,
    )
    assert payload == ReportRequest(REPORT_DATA).to_bytes()  # VMPL 0, KEY_SEL 0, reserved 0
    # Byte for byte what the Python model seals for the same key and sequence number.
    assert bytes.fromhex(request) == seal(
        secrets.key(0), seqno=1, msg_type=5, msg_version=1, vmpck=0, payload=payload
    )


def test_good_response_gives_the_report(harness: Path, secrets: SecretsPage) -> None:
    _, _, answer = exchange(harness, secrets, response(secrets))
    assert answer == f"OK {REPORT.hex()}"


def test_sequence_numbers_continue_from_the_secrets_page_and_never_repeat(
    harness: Path, secrets: SecretsPage
) -> None:
    page = dataclasses.replace(secrets, msg_seqno=(41, 0, 0, 0))
    answers = ask(
        harness,
        [
            f"I {page.to_bytes().hex()} 00",
            f"S {REPORT_DATA.hex()}",
            f"R {response(page, seqno=43).hex()}",
            f"S {REPORT_DATA.hex()}",
        ],
    )
    first, second = (open_message(page.key(0), bytes.fromhex(a))[0] for a in answers[1::2])
    assert answers[2].startswith("OK ")
    assert (first.msg_seqno, second.msg_seqno) == (42, 44)


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("replayed sequence number", lambda s: response(s, seqno=1), (MSG_SEQNO, 2, 1)),
        ("skipped sequence number", lambda s: response(s, seqno=4), (MSG_SEQNO, 2, 4)),
        ("another VMPCK in the header", lambda s: response(s, vmpck=1), (MSG_VMPCK, 0, 1)),
        ("a request, not a response", lambda s: response(s, msg_type=5), (MSG_TYPE, 6, 5)),
        (
            "bad STATUS",
            lambda s: response(s, payload=ReportResponse(0x16, report_size=0).to_bytes()),
            (STATUS, 0, 0x16),
        ),
        (
            "bad REPORT_SIZE",
            lambda s: response(s, payload=ReportResponse(0, REPORT, report_size=0x400).to_bytes()),
            (REPORT_SIZE_REASON, 0x4A0, 0x400),
        ),
        ("short payload", lambda s: response(s, payload=bytes(100)), (MSG_SZ, 1216, 100)),
    ],
)
def test_bad_response_stops_and_wipes_the_key(
    harness: Path,
    secrets: SecretsPage,
    name: str,
    make: object,
    expected: tuple[int, int, int],
) -> None:
    bad = make(secrets)  # type: ignore[operator]
    _, _, answer, retry = exchange(harness, secrets, bad, response(secrets))
    assert answer == error(*expected), name
    # The key is gone: not even the good response is opened after a failure.
    assert retry == error(DISABLED, 1, 0)


def test_tampered_tag_ciphertext_or_key(harness: Path, secrets: SecretsPage) -> None:
    good = response(secrets)
    for at in (0, 15, 0x60, len(good) - 1):  # tag, ciphertext
        tampered = bytearray(good)
        tampered[at] ^= 0x01
        answer = exchange(harness, secrets, bytes(tampered))[2]
        assert answer.startswith(f"ERR {AUTHTAG:016x} "), at
        assert answer.endswith(" WIPED"), at
    other_key = response(secrets, key_index=1)  # sealed under VMPCK1, header says VMPCK0
    assert exchange(harness, secrets, other_key)[2].startswith(f"ERR {AUTHTAG:016x} ")


def test_oversized_message_is_refused_before_the_tag(harness: Path, secrets: SecretsPage) -> None:
    oversized = bytearray(response(secrets))
    at = HEADER_OFFSETS["msg_sz"]
    oversized[at : at + 2] = (4000).to_bytes(2, "little")
    assert exchange(harness, secrets, bytes(oversized))[2] == error(MSG_SZ, 1216, 4000)


def test_vmpck_index_and_disabled_keys(harness: Path, secrets: SecretsPage) -> None:
    assert exchange(harness, secrets, index=4)[0] == error(VMPCK, 3, 4)
    vmpck = list(secrets.vmpck)
    vmpck[1] = bytes(32)
    disabled = dataclasses.replace(secrets, vmpck=tuple(vmpck))
    init, seal_answer = exchange(harness, disabled, index=1)
    assert init == error(VMPCK, 1, 0)
    assert seal_answer == error(DISABLED, 1, 0)


def test_sequence_numbers_run_out_before_they_wrap(harness: Path, secrets: SecretsPage) -> None:
    page = dataclasses.replace(secrets, msg_seqno=(0xFFFF_FFFE, 0, 0, 0))
    assert exchange(harness, page)[1] == error(SEQNO_EXHAUSTED, 0xFFFF_FFFF, 0xFFFF_FFFE)
