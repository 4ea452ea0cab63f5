"""The simulated firmware's guest interface: the secrets page it writes and SNP_GUEST_REQUEST
with VMPCK0-sealed messages, driven by the same guest channel a keep uses."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from runtime.firmware.interface import Firmware, PlanOnly, measured_launch
from runtime.firmware.sim import SimFirmware, sim_identity
from runtime.firmware.snp import SnpFirmware
from runtime.vmm import miniguest
from toolchain.errors import EvidenceError, InputError, PlatformError
from toolchain.snp.cpu import cpu_signature
from toolchain.snp.digest import PAGE_SIZE, VMSA_GPA, LaunchDigest, PageType
from toolchain.snp.guest_msg import (
    MAX_MSG_SIZE,
    MESSAGE_PAGE_SIZE,
    GuestChannel,
    MessageHeader,
    MessageType,
    ReportRequest,
    ReportResponse,
    ReportStatus,
    open_message,
    seal,
)
from toolchain.snp.report import AttestationReport
from toolchain.snp.secrets import SecretsPage
from toolchain.snp.vmsa import vmsa_page

NONCE = bytes(range(64))
CODE = bytes(range(256)) * 16
SECRETS_GPA = 0x3000


def _launch() -> tuple[SimFirmware, SecretsPage]:
    """A launch with one code page, a secrets page and one vCPU; returns its secrets page."""
    firmware = SimFirmware()
    firmware.launch_start(0x30000)
    firmware.launch_update(PageType.NORMAL, 0x1000, CODE)
    page = SecretsPage.parse(firmware.launch_update(PageType.SECRETS, SECRETS_GPA, bytes(4096)))
    firmware.launch_vmsa(miniguest.entry_state(ring=0, rip=0x1000))
    firmware.launch_finish()
    return firmware, page


def _request(page: SecretsPage, *, seqno: int = 1, vmpck: int = 0, **fields: int) -> bytes:
    payload = ReportRequest(NONCE, fields.get("vmpl", 0), fields.get("key_sel", 0)).to_bytes()
    return seal(
        page.key(vmpck),
        seqno=seqno,
        msg_type=fields.get("msg_type", MessageType.REPORT_REQ),
        msg_version=1,
        vmpck=vmpck,
        payload=payload,
    )


def test_the_protocol_declares_guest_request_and_the_placeholder_refuses_it() -> None:
    assert isinstance(SimFirmware(), Firmware)
    assert "guest_request" in dir(Firmware)
    with pytest.raises(PlatformError, match="not implemented"):
        SnpFirmware.guest_request(object.__new__(SnpFirmware), bytes(MESSAGE_PAGE_SIZE))
    with pytest.raises(PlatformError, match="no guest messages"):
        miniguest.NullFirmware().guest_request(bytes(MESSAGE_PAGE_SIZE))


def test_the_secrets_page_is_the_firmwares() -> None:
    _firmware, page = _launch()
    assert page.version == 3
    # FMS is the chip's CPUID Fn0000_0001_EAX: Genoa (family 19h, model 11h, stepping 1)
    # is 0x00A10F11 (base family 0xF plus extended family 0xA), not 0x00A10911.
    assert page.fms == cpu_signature(0x19, 0x11, 0x01) == 0x00A10F11
    assert len(set(page.vmpck)) == 4
    assert bytes(32) not in page.vmpck
    assert page.msg_seqno == (0, 0, 0, 0)
    assert page.guest_usage == bytes(32)
    _other, again = _launch()
    assert not set(page.vmpck) & set(again.vmpck)  # fresh keys per launch
    fresh = SimFirmware()
    fresh.launch_start(0x30000)
    fresh.launch_update(PageType.SECRETS, 0x1000, bytes(PAGE_SIZE))
    with pytest.raises(InputError, match="exactly one SECRETS"):
        fresh.launch_update(PageType.SECRETS, 0x2000, bytes(PAGE_SIZE))


def test_a_report_over_the_guest_channel() -> None:
    firmware, page = _launch()
    channel = GuestChannel.from_secrets(page)
    report = AttestationReport.parse(channel.request_report(NONCE, firmware.guest_request))
    assert report.report_data == NONCE
    # MEASUREMENT is the digest of what was loaded, computed independently here.
    expected = LaunchDigest()
    expected.update(PageType.NORMAL, 0x1000, CODE)
    expected.update(PageType.SECRETS, SECRETS_GPA, size=PAGE_SIZE)
    expected.update(
        PageType.VMSA,
        VMSA_GPA,
        vmsa_page(miniguest.entry_state(ring=0, rip=0x1000), sev_features=1),
    )
    assert report.measurement == expected.digest() == firmware.measurement
    vcek_key = sim_identity().vcek.public_key()
    assert isinstance(vcek_key, ec.EllipticCurvePublicKey)
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    vcek_key.verify(signature, report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    # The next request goes on (sequence 3/4) and the plain-text path still works beside it.
    assert AttestationReport.parse(channel.request_report(bytes(64), firmware.guest_request))
    assert channel.last_seqno == 4
    assert AttestationReport.parse(firmware.guest_request_report(NONCE, 0)).measurement == (
        expected.digest()
    )


def test_the_response_is_sealed_with_vmpck0_and_answers_the_request() -> None:
    firmware, page = _launch()
    answer = firmware.guest_request(_request(page, seqno=1))
    assert len(answer) == MESSAGE_PAGE_SIZE
    header, payload = open_message(page.key(0), answer)
    assert (header.msg_seqno, header.msg_type, header.msg_version) == (2, 6, 1)
    assert (header.msg_vmpck, header.msg_sz) == (0, 1216)
    response = ReportResponse.parse(payload)
    assert response.status == 0
    assert response.report_size == 0x4A0
    with pytest.raises(EvidenceError, match="AUTHTAG"):
        open_message(page.key(1), answer)


def _assert_vmpck0_stopped(firmware: SimFirmware, page: SecretsPage, seqno: int) -> None:
    with pytest.raises(EvidenceError, match="stopped answering"):
        firmware.guest_request(_request(page, seqno=seqno))


def test_a_replayed_request_is_refused_and_stops_vmpck0() -> None:
    firmware, page = _launch()
    first = _request(page, seqno=1)
    firmware.guest_request(first)
    with pytest.raises(EvidenceError, match="MSG_SEQNO: expected 3, found 1"):
        firmware.guest_request(first)
    _assert_vmpck0_stopped(firmware, page, 3)


def test_a_skipped_sequence_number_is_refused_and_stops_vmpck0() -> None:
    firmware, page = _launch()
    with pytest.raises(EvidenceError, match="MSG_SEQNO: expected 1, found 3"):
        firmware.guest_request(_request(page, seqno=3))
    _assert_vmpck0_stopped(firmware, page, 1)


@pytest.mark.parametrize("offset", [0x00, 0x20, 0x34, 0x50, 0x60, 0xBF])
def test_a_tampered_request_is_refused_and_stops_vmpck0(offset: int) -> None:
    firmware, page = _launch()
    message = bytearray(_request(page))
    message[offset] ^= 0x04
    with pytest.raises(EvidenceError):
        firmware.guest_request(bytes(message))
    _assert_vmpck0_stopped(firmware, page, 1)


def test_a_request_under_another_vmpck_is_refused_without_stopping_vmpck0() -> None:
    firmware, page = _launch()
    with pytest.raises(EvidenceError, match="MSG_VMPCK: expected 0, found 1"):
        firmware.guest_request(_request(page, vmpck=1))
    # VMPCK1's key with index 0 claimed: does not authenticate under VMPCK0.
    forged = bytearray(_request(page, vmpck=1))
    forged[0x3C] = 0
    with pytest.raises(EvidenceError, match="AUTHTAG"):
        firmware.guest_request(bytes(forged))
    _assert_vmpck0_stopped(firmware, page, 1)


def test_the_wrong_index_alone_leaves_vmpck0_answering() -> None:
    firmware, page = _launch()
    with pytest.raises(EvidenceError, match="MSG_VMPCK"):
        firmware.guest_request(_request(page, vmpck=2))
    assert firmware.guest_request(_request(page, seqno=1))


def test_oversized_and_truncated_requests() -> None:
    firmware, page = _launch()
    with pytest.raises(InputError, match="not one page"):
        firmware.guest_request(_request(page) + bytes(MESSAGE_PAGE_SIZE))
    message = bytearray(_request(page))
    struct.pack_into("<H", message, 0x36, MAX_MSG_SIZE + 1)
    with pytest.raises(EvidenceError, match="MSG_SZ"):
        firmware.guest_request(bytes(message))
    _assert_vmpck0_stopped(firmware, page, 1)
    firmware, page = _launch()
    with pytest.raises(InputError, match="0x60 bytes"):
        firmware.guest_request(_request(page)[:0x50])
    _assert_vmpck0_stopped(firmware, page, 1)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"vmpl": 4}, ReportStatus.INVALID_PARAMETERS),
        ({"key_sel": 2}, ReportStatus.INVALID_KEY_SELECTION),
        ({"key_sel": 4}, ReportStatus.INVALID_PARAMETERS),
    ],
)
def test_bad_report_parameters_get_a_sealed_status(fields: dict[str, int], status: int) -> None:
    firmware, page = _launch()
    _header, payload = open_message(page.key(0), firmware.guest_request(_request(page, **fields)))
    response = ReportResponse.parse(payload)
    assert (response.status, response.report_size, response.report) == (status, 0, bytes(0x4A0))
    # The guest channel refuses such an answer (and disables its key).
    channel = GuestChannel.from_secrets(page)
    channel._last_seqno = 2
    with pytest.raises(EvidenceError, match=f"STATUS: expected 0x0, found {status:#x}"):
        channel.request_report(
            NONCE,
            firmware.guest_request,
            vmpl=fields.get("vmpl", 0),
            key_sel=fields.get("key_sel", 0),
        )
    assert channel.disabled


def test_unserved_message_types_are_refused_but_the_sequence_moves_on() -> None:
    firmware, page = _launch()
    with pytest.raises(InputError, match="type 3"):
        firmware.guest_request(_request(page, msg_type=MessageType.KEY_REQ))
    assert firmware.guest_request(_request(page, seqno=3))


def test_guest_request_needs_a_finished_launch_with_a_secrets_page() -> None:
    firmware = SimFirmware()
    with pytest.raises(InputError, match="SNP_GUEST_REQUEST is not allowed"):
        firmware.guest_request(bytes(MESSAGE_PAGE_SIZE))
    plan = miniguest.mini_plan(miniguest.hello_guest())
    measured_launch(firmware, plan, 1, PlanOnly())
    assert not any(r.page_type is PageType.SECRETS for r in plan.regions)
    with pytest.raises(InputError, match="no SECRETS page"):
        firmware.guest_request(bytes(MESSAGE_PAGE_SIZE))


def test_message_header_of_a_response_round_trips() -> None:
    _firmware, page = _launch()
    header = MessageHeader.parse(_request(page))
    assert header.msg_type == MessageType.REPORT_REQ
    assert header.msg_sz == 96
