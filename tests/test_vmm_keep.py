"""Real keeps (microkernel + wasm2c runtime + examples/hello) on the VMM and the sim firmware."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from runtime.firmware.interface import PlanOnly, measured_launch
from runtime.firmware.sim import SimFirmware, sim_identity
from runtime.vmm.keep import KeepResult, run_keep
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.errors import EvidenceError
from toolchain.measure.plan import LaunchPlan
from toolchain.snp.digest import PageType
from toolchain.snp.report import AttestationReport
from toolchain.verify import Verifier
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.roots import TrustedRoots

ROOT = Path(__file__).resolve().parent.parent
KVM_MISSING = kvm_unavailable_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]
HELLO_OUTPUT = b"hello from a keep\narg: hello.wasm\narg: first\nenv: LANG=C\n"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> LaunchPlan:
    from toolchain.image.keep_build import build_keep

    out = tmp_path_factory.mktemp("hello-keep")
    return build_keep(ROOT / "examples" / "hello" / "hello.wat", out, vcpu_counts=(1,)).plan


def _verifier(plan: LaunchPlan, nonce: bytes) -> tuple[list[str], Callable[[bytes], None]]:
    """A runner-like callback: the chain to the (explicitly trusted) sim root, nonce, digest."""
    chain = sim_identity().chain()
    ark, ask, vcek = (x509.load_der_x509_certificate(c) for c in (chain.ark, chain.ask, chain.vcek))
    roots = TrustedRoots.amd().with_extra(ark, label="simulated (test)")
    policy = VerificationPolicy(
        report_data=nonce, allowed_measurements=frozenset({plan.launch_digest(1)})
    )
    lines: list[str] = []

    def verify(raw: bytes) -> None:
        checks = Verifier(roots).verify_report(
            AttestationReport.parse(raw), vcek, ask=ask, ark=ark, policy=policy
        )
        lines.extend(check.line() for check in checks.checks)
        if not checks.ok:
            failure = checks.failures[0]
            raise EvidenceError(
                "the keep's report does not verify",
                field=failure.name,
                expected=failure.expected,
                found=failure.found,
            )

    return lines, verify


def _run(plan: LaunchPlan, **options: object) -> tuple[KeepResult, bytes]:
    out = io.BytesIO()
    nonce = b"fresh nonce".ljust(64, b"\0")
    _lines, verify = _verifier(plan, nonce)
    result = run_keep(
        plan,
        firmware=SimFirmware(),
        args=["hello.wasm", "first"],
        env={"LANG": "C"},
        stdout=out,
        stderr=io.BytesIO(),
        report_data=nonce,
        on_report=verify,
        timeout=20.0,
        **options,  # type: ignore[arg-type]
    )
    return result, out.getvalue()


def test_hello_keep_attests_then_runs(plan: LaunchPlan) -> None:
    result, out = _run(plan)
    assert result.error is None, result.error
    assert result.exit_status == 0
    assert out == HELLO_OUTPUT
    assert result.measurement == plan.launch_digest(1)
    assert result.calls["ATTEST"] == 1
    assert result.to_attest_ms < result.to_first_output_ms


def test_kvm_and_nil_launches_measure_the_same(plan: LaunchPlan) -> None:
    result, _ = _run(plan)
    assert measured_launch(SimFirmware(), plan, 1, PlanOnly()) == result.measurement


def test_a_changed_byte_after_signing_is_refused_before_the_app_runs(plan: LaunchPlan) -> None:
    # The references name the good digest; the host loads a keep with one byte changed.
    index = next(i for i, r in enumerate(plan.regions) if r.label.startswith("runtime image"))
    region = plan.regions[index]
    assert region.page_type is PageType.NORMAL
    assert region.data is not None
    changed = replace(region, data=bytes([region.data[0] ^ 0x80]) + region.data[1:])
    tampered = replace(plan, regions=(*plan.regions[:index], changed, *plan.regions[index + 1 :]))
    out = io.BytesIO()
    _, verify = _verifier(plan, bytes(64))
    result = run_keep(
        tampered,
        firmware=SimFirmware(),
        stdout=out,
        stderr=io.BytesIO(),
        on_report=verify,
        timeout=20.0,
    )
    assert isinstance(result.error, EvidenceError)
    assert result.error.field == "measurement"
    assert result.exit_status is None
    assert out.getvalue() == b""


def test_twenty_real_keeps_in_a_row(plan: LaunchPlan) -> None:
    fds = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(20):
        result, out = _run(plan)
        assert result.ok
        assert out == HELLO_OUTPUT
    assert len(list(Path("/proc/self/fd").iterdir())) == fds
