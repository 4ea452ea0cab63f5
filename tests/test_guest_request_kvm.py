"""The microkernel's SNP guest request end to end on /dev/kvm (ABI 4): the report arrives as a
sealed guest message through the GHCB, and a host that tampers with the request or the response
stops the keep before ring 3 with the field, the expected and the found value."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import ClassVar

import pytest
from ukernel_images import Images, build_images

from runtime.firmware.sim import SimFirmware
from runtime.vmm import keep as keep_module
from runtime.vmm.ghcb import FIRMWARE_REFUSED, GFN_REFUSED, GhcbServer
from runtime.vmm.keep import KeepResult, run_keep
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.measure.abi import GHCB_GPA, GHCB_MSR_PSC_REQ, GHCB_MSR_REG_GPA_REQ, PSC_SHARED
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import LaunchPlan
from toolchain.snp.guest_msg import HEADER_OFFSETS, MessageType, ReportResponse, seal
from toolchain.snp.report import AttestationReport

KVM_MISSING = kvm_unavailable_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]
NONCE = bytes(range(100, 164))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("guest-request")
    return build_images(base / "out", cache_dir=base / "cache")


@pytest.fixture(scope="module")
def plan(images: Images) -> LaunchPlan:
    return build_plan(images.ukernel, images.user)


class HostileFirmware(SimFirmware):
    """The simulated firmware behind a host that rewrites the sealed pages on their way."""

    def __init__(
        self,
        request: Callable[[bytearray], None] = lambda _page: None,
        response: Callable[[SimFirmware, bytearray], None] = lambda _fw, _page: None,
    ) -> None:
        super().__init__()
        self.rewrite_request = request
        self.rewrite_response = response
        self.requests = 0

    def guest_request(self, message: bytes) -> bytes:
        self.requests += 1
        page = bytearray(message)
        self.rewrite_request(page)
        answer = bytearray(super().guest_request(bytes(page)))
        self.rewrite_response(self, answer)
        return bytes(answer)


def run(plan: LaunchPlan, firmware: SimFirmware) -> KeepResult:
    reports: list[bytes] = []
    result = run_keep(
        plan,
        firmware=firmware,
        args=["0"],
        stdout=io.BytesIO(),
        stderr=io.BytesIO(),
        report_data=NONCE,
        on_report=reports.append,
        timeout=20.0,
    )
    if result.error is not None:
        assert not reports, "a keep that stopped must not have handed a report to the runner"
    return result


def stopped(result: KeepResult) -> str:
    assert result.exit_status is None
    assert not result.attested
    assert result.error is not None
    return result.error.message


def test_the_report_arrives_as_a_guest_message(plan: LaunchPlan) -> None:
    firmware = HostileFirmware()
    result = run(plan, firmware)
    assert result.error is None, result.error.explain()
    assert result.exit_status == 7
    assert firmware.requests == 1
    assert result.calls.get("ATTEST") == 1
    # five hypercalls, one (simulated) VMGEXIT, and two exits (WRMSR+VMGEXIT, RDMSR) for each
    # GHCB MSR exchange: the registration and 18 page-state changes; then the heap and stack
    # made private and validated (exactly counted in test_pvalidate_kvm.py)
    assert result.exits.get("MMIO", 0) > 6 + 2 * (1 + 18)
    assert result.report is not None
    report = AttestationReport.parse(result.report)
    assert report.report_data == NONCE  # sealed from the microkernel's private copy
    assert report.measurement == result.measurement == plan.launch_digest(1)


def _flip(offset: int) -> Callable[[SimFirmware, bytearray], None]:
    def rewrite(_firmware: SimFirmware, page: bytearray) -> None:
        page[offset] ^= 0x01

    return rewrite


@pytest.mark.parametrize("offset", [0x00, 0x0F, 0x30, 0x60, 0x60 + 1215])
def test_a_tampered_response_stops_the_keep(plan: LaunchPlan, offset: int) -> None:
    message = stopped(run(plan, HostileFirmware(response=_flip(offset))))
    assert "refused its attestation report" in message
    assert "AUTHTAG" in message if offset != 0x30 else "ALGO" in message


def _resealed(
    seqno: int = 2, vmpck: int = 0, payload: bytes | None = None
) -> Callable[[SimFirmware, bytearray], None]:
    """A response with a valid tag but other contents (what only a key holder could make)."""

    def rewrite(firmware: SimFirmware, page: bytearray) -> None:
        assert firmware._secrets is not None
        body = payload if payload is not None else ReportResponse(0).to_bytes()
        sealed = seal(
            firmware._secrets.key(0),
            seqno=seqno,
            msg_type=MessageType.REPORT_RSP,
            msg_version=1,
            vmpck=vmpck,
            payload=body,
        )
        page[:] = sealed.ljust(len(page), b"\0")

    return rewrite


@pytest.mark.parametrize(
    ("rewrite", "field", "expected", "found"),
    [
        (_resealed(seqno=1), "MSG_SEQNO", 2, 1),  # the request's own number: a replay
        (_resealed(seqno=4), "MSG_SEQNO", 2, 4),  # a skip
        (_resealed(vmpck=1), "MSG_VMPCK", 0, 1),
        (_resealed(payload=ReportResponse(0x16, report_size=0).to_bytes()), "STATUS", 0, 0x16),
    ],
)
def test_a_response_out_of_sequence_or_for_another_key_stops_the_keep(
    plan: LaunchPlan,
    rewrite: Callable[[SimFirmware, bytearray], None],
    field: str,
    expected: int,
    found: int,
) -> None:
    message = stopped(run(plan, HostileFirmware(response=rewrite)))
    assert field in message
    assert f"expected {expected:#x}, found {found:#x}" in message


def test_an_oversized_response_stops_the_keep(plan: LaunchPlan) -> None:
    def oversize(_firmware: SimFirmware, page: bytearray) -> None:
        struct.pack_into("<H", page, HEADER_OFFSETS["msg_sz"], 4000)

    message = stopped(run(plan, HostileFirmware(response=oversize)))
    assert "MSG_SZ: expected 0x4c0, found 0xfa0" in message


def test_a_report_for_other_report_data_stops_the_keep(plan: LaunchPlan) -> None:
    def other_data(firmware: SimFirmware, page: bytearray) -> None:
        report = firmware._signed_report(bytes(64), 0)
        _resealed(payload=ReportResponse(0, report).to_bytes())(firmware, page)

    message = stopped(run(plan, HostileFirmware(response=other_data)))
    assert "REPORT_DATA of the report" in message
    assert f"expected {int.from_bytes(NONCE[:8], 'little'):#x}, found 0x0" in message


@pytest.mark.parametrize(
    ("offset", "refusal"),
    [(0x60, "does not authenticate"), (HEADER_OFFSETS["msg_vmpck"], "names a VMPCK")],
)
def test_a_request_the_firmware_refuses_stops_the_keep(
    plan: LaunchPlan, offset: int, refusal: str
) -> None:
    def tamper(page: bytearray) -> None:
        page[offset] ^= 0x01

    message = stopped(run(plan, HostileFirmware(request=tamper)))
    answer = "SW_EXITINFO2 (the host's answer to the guest request): expected 0x0, found "
    assert answer + f"{FIRMWARE_REFUSED:#x}" in message
    assert "the firmware refused: " in message
    assert refusal in message


def _hostile_ghcb(rewrite: Callable[[int, int], int]) -> type[GhcbServer]:
    """A VMM whose GHCB MSR answers are rewritten: ``rewrite(request, answer) -> answer``."""

    class HostileGhcb(GhcbServer):
        seen: ClassVar[list[int]] = []

        def msr_write(self, value: int) -> None:
            super().msr_write(value)
            self.seen.append(value)
            self.msr = rewrite(value, self.msr)

    return HostileGhcb


def _run_against(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan, rewrite: Callable[[int, int], int]
) -> tuple[KeepResult, list[int]]:
    server = _hostile_ghcb(rewrite)
    monkeypatch.setattr(keep_module, "GhcbServer", server)
    firmware = HostileFirmware()
    result = run(plan, firmware)
    assert firmware.requests == 0, "the guest request went out over a GHCB that was not set up"
    return result, server.seen


def test_the_ghcb_is_registered_and_the_host_pages_made_shared(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    server = _hostile_ghcb(lambda _request, answer: answer)
    monkeypatch.setattr(keep_module, "GhcbServer", server)
    result = run(plan, HostileFirmware())
    assert result.error is None, result.error.explain()
    layout = plan.abi.hypercalls
    buffer = range(layout.buffer, layout.buffer + layout.buffer_size, 0x1000)
    psc = [PSC_SHARED << 52 | gpa | GHCB_MSR_PSC_REQ for gpa in (layout.page, GHCB_GPA, *buffer)]
    assert server.seen == [psc[0], GHCB_GPA | GHCB_MSR_REG_GPA_REQ, *psc[1:]]


@pytest.mark.parametrize(
    ("rewrite", "field", "expected", "found"),
    [
        # a wrong response code to the registration
        (lambda req, ans: ans ^ 0x7 if req & 0xFFF == 0x12 else ans, "GHCBInfo", 0x13, 0x14),
        # the registration answered for another GFN (or refused: all ones)
        (lambda req, ans: ans + 0x1000 if req & 0xFFF == 0x12 else ans, "GFN", 0x6, 0x7),
        (
            lambda req, ans: ans | GFN_REFUSED << 12 if req & 0xFFF == 0x12 else ans,
            "GFN",
            0x6,
            GFN_REFUSED,
        ),
        # a page-state change refused, or answered with another response code
        (lambda req, ans: ans | 5 << 32 if req & 0xFFF == 0x14 else ans, "error code", 0, 5),
        (lambda req, ans: ans ^ 0x1 if req & 0xFFF == 0x14 else ans, "GHCBInfo", 0x15, 0x14),
    ],
)
def test_a_host_that_refuses_the_ghcb_setup_stops_the_keep(
    monkeypatch: pytest.MonkeyPatch,
    plan: LaunchPlan,
    rewrite: Callable[[int, int], int],
    field: str,
    expected: int,
    found: int,
) -> None:
    result, _seen = _run_against(monkeypatch, plan, rewrite)
    message = stopped(result)
    assert "the host refused its GHCB setup" in message
    assert field in message
    assert f"expected {expected:#x}, found {found:#x}" in message
    assert result.calls.get("ATTEST") is None  # before ring 3 and before any report
