"""The microkernel's doorbell writes as GHCB MMIO-write requests, end to end on /dev/kvm (ABI.md
changelog h): every ring-0 hypercall and FAULT report reaches the VMM as a request for the
doorbell GPA, served by the same handler as ring 3's plain doorbell writes, and a host that
answers a request with anything but SW_EXITINFO1 = SW_EXITINFO2 = 0 stops the keep, naming the
field, the expected and the found value."""

from __future__ import annotations

import io
from typing import ClassVar

import pytest
from ukernel_images import STACK_GUARD_ACTION, Images, build_images

from runtime.firmware.sim import SimFirmware
from runtime.vmm import ghcb as g
from runtime.vmm import keep as keep_module
from runtime.vmm.keep import KeepResult, run_keep
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.measure.abi import GHCB_GPA
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import LaunchPlan

KVM_MISSING = kvm_unavailable_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> LaunchPlan:
    base = tmp_path_factory.mktemp("doorbell")
    images: Images = build_images(base / "out", cache_dir=base / "cache")
    return build_plan(images.ukernel, images.user)


def _server(answer_on: int | None = None, info1: int = 0, info2: int = 0) -> type[g.GhcbServer]:
    """A VMM that serves the doorbell MMIO requests (recording each request's GPA, length and
    value), and answers request number ``answer_on`` with ``info1``/``info2`` instead of 0/0."""

    class Recording(g.GhcbServer):
        seen: ClassVar[list[tuple[int, int, int]]] = []

        def _mmio(self, write: bool, gpa: int, length: int, scratch: int) -> int | None:
            value = int.from_bytes(self.memory.read(scratch, length), "little")
            self.seen.append((gpa, length, value))
            status = super()._mmio(write, gpa, length, scratch)
            if len(self.seen) == answer_on:
                self.memory.write(GHCB_GPA + g.SW_EXIT_INFO_1, info1.to_bytes(8, "little"))
                self.memory.write(GHCB_GPA + g.SW_EXIT_INFO_2, info2.to_bytes(8, "little"))
            return status

    return Recording


def _run(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan, server: type[g.GhcbServer], action: str
) -> tuple[KeepResult, bytes]:
    monkeypatch.setattr(keep_module, "GhcbServer", server)
    stderr = io.BytesIO()
    result = run_keep(
        plan,
        firmware=SimFirmware(),
        args=[action],
        stdout=io.BytesIO(),
        stderr=stderr,
        on_report=lambda _report: None,
        timeout=20.0,
    )
    return result, stderr.getvalue()


def test_ring_0_rings_the_doorbell_through_the_ghcb(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    server = _server()
    result, _ = _run(monkeypatch, plan, server, "0")
    assert result.error is None, result.error.explain()
    assert result.exit_status == 7
    doorbell = plan.abi.doorbell
    # REPORT_DATA and ATTEST from ring 0; ring 3's three calls are plain MMIO exits.
    assert server.seen == [(doorbell, 4, 1), (doorbell, 4, 1)]
    assert result.calls == {"REPORT_DATA": 1, "ATTEST": 1, "LAUNCH_ARGS": 1,
                            "CONSOLE_WRITE": 1, "EXIT": 1}  # fmt: skip
    assert result.measurement == plan.launch_digest(1)


def test_ring_0s_fault_report_goes_through_the_ghcb(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    server = _server()
    result, _ = _run(monkeypatch, plan, server, "1")  # ring 3 writes to the null page
    assert result.error is not None
    assert "#PF" in result.error.message
    assert result.calls.get("FAULT") == 1
    assert len(server.seen) == 3  # REPORT_DATA, ATTEST, FAULT


@pytest.mark.parametrize(
    ("info1", "info2", "field", "found"),
    [
        (2, 0x6, "SW_EXITINFO1", 2),  # an error (GHCB_ERR_INVALID_INPUT in SW_EXITINFO2)
        (1, 0x80000B0D, "SW_EXITINFO1", 1),  # "inject #GP": the keep injects nothing
        (1 << 32, 0, "SW_EXITINFO1", 1 << 32),
        (0, 5, "SW_EXITINFO2", 5),
    ],
)
@pytest.mark.parametrize("request_number", [1, 2])
def test_an_mmio_answer_out_of_protocol_stops_the_keep(
    monkeypatch: pytest.MonkeyPatch,
    plan: LaunchPlan,
    info1: int,
    info2: int,
    field: str,
    found: int,
    request_number: int,
) -> None:
    server = _server(request_number, info1, info2)
    result, _ = _run(monkeypatch, plan, server, "0")
    assert result.exit_status is None
    assert result.error is not None
    message = result.error.message
    assert "the microkernel stopped the keep: " in message
    assert f"{field} of the host's answer to a doorbell MMIO request" in message
    assert message.endswith(f"expected 0x0, found {found:#x}")
    # The stop is the one request after the bad answer: nothing else ran.
    assert len(server.seen) == request_number + 1
    assert result.calls.get("LAUNCH_ARGS") is None


def test_an_mmio_answer_out_of_protocol_stops_the_keep_after_attestation(
    monkeypatch: pytest.MonkeyPatch, plan: LaunchPlan
) -> None:
    """Ring 0's CONSOLE_WRITE of the stack-exhaustion trap line, after attestation, answered
    with an error: the keep does not go on to its EXIT 134, it stops naming the answer."""
    server = _server(3, 2, 0)
    result, stderr = _run(monkeypatch, plan, server, STACK_GUARD_ACTION)
    assert result.attested
    assert result.exit_status is None
    assert result.error is not None
    assert "SW_EXITINFO1 of the host's answer" in result.error.message
    assert result.error.message.endswith("expected 0x0, found 0x2")
    assert b"call stack exhausted" in stderr  # the write itself was served before the answer
