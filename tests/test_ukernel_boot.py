"""The microkernel boots on this machine's /dev/kvm through the real VMM and the sim firmware.

The ring-3 image is the tiny hand-written one in tests/keep_user/; its first launch argument picks
a forbidden access that the microkernel must report through FAULT (see ukernel_images.ACTIONS).
"""

from __future__ import annotations

import io
import struct
from dataclasses import replace

import pytest
from ukernel_images import (
    ACTIONS,
    LINEAR_GATE_ACTIONS,
    LINEAR_OOB_ACTIONS,
    STACK_GUARD_ACTION,
    STACK_GUARD_LOW_ACTION,
    Images,
    build_images,
)

from runtime.firmware.sim import SimFirmware
from runtime.vmm.keep import KeepResult, run_keep
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.errors import EvidenceError
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import LaunchPlan

KVM_MISSING = kvm_unavailable_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]
GREETING = b"hello from ring 3\n"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("boot")
    return build_images(base / "out", cache_dir=base / "cache")


@pytest.fixture(scope="module")
def plan(images: Images) -> LaunchPlan:
    return build_plan(images.ukernel, images.user)


def _accept(_report: bytes) -> None:
    """The runner's verdict in these tests: accept (the verification path has its own tests)."""


def boot(
    plan: LaunchPlan, action: str = "0", stderr: io.BytesIO | None = None, **options: object
) -> tuple[KeepResult, bytes]:
    out = io.BytesIO()
    result = run_keep(
        plan,
        firmware=SimFirmware(),
        vcpus=options.pop("vcpus", 1),  # type: ignore[arg-type]
        args=[action],
        stdout=out,
        stderr=stderr if stderr is not None else io.BytesIO(),
        on_report=options.pop("on_report", _accept),  # type: ignore[arg-type]
        timeout=20.0,
    )
    return result, out.getvalue()


@pytest.mark.parametrize("vcpus", [1, 2])
def test_boots_to_ring3_and_the_firmware_measures_the_plan(plan: LaunchPlan, vcpus: int) -> None:
    result, output = boot(plan, vcpus=vcpus)
    assert result.error is None, result.error.explain()
    assert result.exit_status == 7
    assert output == GREETING
    # The sim firmware measured the pages read back from guest memory and the VMSAs read back
    # from KVM's real register state: they agree with the plan's own digest.
    assert result.measurement == plan.launch_digest(vcpus)
    assert result.report is not None
    assert result.calls.get("REPORT_DATA") == result.calls.get("ATTEST") == 1
    # Timings are reported, never asserted on (a loaded machine moves them): bench/ measures them.
    assert result.to_attest_ms is not None
    assert 0 < result.to_attest_ms <= result.total_ms


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_ring3_faults_are_reported_with_vector_and_error_code(
    plan: LaunchPlan, action: str
) -> None:
    what, names, error_code = ACTIONS[action]
    result, output = boot(plan, action)
    assert result.exit_status is None, what
    assert result.error is not None, what
    message = result.error.message
    assert "faulted" in message, message
    assert "in ring 3" in message, message
    assert any(name in message for name in names), (what, message)
    if error_code is not None:
        assert f"(error code {error_code:#x})" in message, (what, message)
    assert output == b""


OOB_LINE = b"wasm trap: out of bounds memory access\n"


@pytest.mark.parametrize(
    ("action", "line"),
    [
        (STACK_GUARD_ACTION, b"wasm trap: call stack exhausted\n"),
        (STACK_GUARD_LOW_ACTION, b"wasm trap: call stack exhausted\n"),
        *((action, OOB_LINE) for action in LINEAR_OOB_ACTIONS),
    ],
)
def test_a_ring3_fault_that_is_the_application_s_own_ends_it_as_a_trap(
    plan: LaunchPlan, action: str, line: bytes
) -> None:
    """The microkernel (trusted) turns a fault in the stack guard into what the runtime prints
    for stack exhaustion, and (ABI 4) one in the linear memory's reserved range, its first byte
    (never grown) or the guard's last byte, into what it prints for an access out of bounds.
    Just outside that range the same reads are FAULT reports (ACTIONS "c", "d")."""
    stderr = io.BytesIO()
    result, output = boot(plan, action, stderr=stderr)
    assert result.error is None, result.error.explain()
    assert result.exit_status == 134
    assert stderr.getvalue() == line
    assert output == b""
    assert "FAULT" not in result.calls


@pytest.mark.parametrize(
    ("action", "answers"), list(zip(LINEAR_GATE_ACTIONS, (b"rrr0yyyr0yy\n", b"0r\n"), strict=True))
)
def test_the_linear_gate_maps_heap_ram_and_refuses_what_it_must(
    plan: LaunchPlan, action: str, answers: bytes
) -> None:
    """The grow requests of tests/keep_user/hello.c (linear_answers), in order. "g": an unaligned
    size (refused), 2^64 - 4096 (refused: past 4 GiB; the chunk count would wrap), one chunk
    more than the heap holds (refused), three chunks and five pages
    (mapped: each page is the heap RAM the ABI declares), a smaller size (refused: memory never
    shrinks), four chunks and a page (mapped; the fourth chunk became a large page, the PT moved
    on to the fifth), then a read in the fifth chunk where the PT held the fourth's pages: a trap,
    the PT was cleared. "h": every chunk the heap holds (mapped), a page more (refused), then a
    read at the end: a trap."""
    stderr = io.BytesIO()
    result, output = boot(plan, action, stderr=stderr)
    assert result.error is None, result.error.explain()
    assert output == answers
    assert stderr.getvalue() == OOB_LINE
    assert result.exit_status == 134


def test_a_refused_report_stops_the_keep_before_ring3(plan: LaunchPlan) -> None:
    def refuse(_report: bytes) -> None:
        raise EvidenceError("refused by the test", field="MEASUREMENT", expected="x", found="y")

    result, output = boot(plan, on_report=refuse)
    assert result.exit_status is None
    assert isinstance(result.error, EvidenceError)
    assert output == b""


def test_ring0_faults_are_reported_too(plan: LaunchPlan) -> None:
    """Unmap the user-info page: the microkernel's read of the ring-3 entry faults in ring 0."""
    memory = {gpa: data for gpa, _, data in plan.pages() if data is not None}
    mask = 0x000FFFFFFFFFF000
    pml4e = struct.unpack_from("<Q", memory[plan.boot_vcpu.cr3])[0]
    pdpte = struct.unpack_from("<Q", memory[pml4e & mask])[0]
    pde = struct.unpack_from("<Q", memory[pdpte & mask])[0]
    table = pde & mask
    info = plan.abi.user_info
    regions = []
    for region in plan.regions:
        if region.gpa <= table < region.end and region.data is not None:
            data = bytearray(region.data)
            struct.pack_into("<Q", data, table - region.gpa + (info >> 12) * 8, 0)
            region = replace(region, data=bytes(data))  # noqa: PLW2901
        regions.append(region)
    result, output = boot(replace(plan, regions=tuple(regions)))
    assert result.error is not None
    message = result.error.message
    assert "in ring 0" in message, message
    assert "#PF" in message, message
    # keep_user_info.heap_start, read first (making the heap and stack private, pvalidate.c)
    assert f"CR2 {info + 0x40:#x}" in message, message
    assert output == b""
