"""The runtime image inside a real keep (microkernel + VMM on /dev/kvm, simulated firmware).

The same programs as the hostcheck differential tests, run in ring 3 of a keep through the
hypercall client: stdout and the exit status must equal wasmtime's; a trap must report its name
on stderr and end the keep with a non-zero status.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_wasi_differential import CASES, run_wasmtime

from toolchain.image.keep_build import build_keep
from toolchain.measure.plan import LaunchPlan

try:
    from runtime.vmm.platform import kvm_unavailable_reason

    KVM_MISSING = kvm_unavailable_reason()
except ImportError as exc:  # the VMM is not in this tree
    KVM_MISSING = f"runtime.vmm is unavailable ({exc})"

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]

IN_KEEP = (
    "hello-args-env",
    "fib",
    "exit-code",
    "echo-stdin",
    "wasi-errnos",
    "math",
    "trap-div-zero",
    "trap-oob",
    "trap-stack",
    "trap-stack-big-frames",
    "memory-grow",
)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, LaunchPlan]:
    built: dict[Path, LaunchPlan] = {}
    for name in IN_KEEP:
        program = CASES[name].program
        if program not in built:
            out = tmp_path_factory.mktemp(program.stem)
            built[program] = build_keep(program, out, vcpu_counts=(1,)).plan
    return built


@pytest.mark.parametrize("name", IN_KEEP)
def test_keep_matches_wasmtime(name: str, plans: dict[Path, LaunchPlan], tmp_path: Path) -> None:
    from runtime.firmware.sim import SimFirmware
    from runtime.vmm.keep import run_keep

    case = CASES[name]
    reference = run_wasmtime(case, tmp_path)
    stdout, stderr = io.BytesIO(), io.BytesIO()
    result = run_keep(
        plans[case.program],
        firmware=SimFirmware(),
        args=list(case.argv),
        env=case.env,
        stdin=io.BytesIO(case.stdin),
        stdout=stdout,
        stderr=stderr,
        on_report=lambda report: None,  # accept: attestation is tested elsewhere
        timeout=60,
    )
    assert result.error is None, (result.error, stderr.getvalue())
    assert stdout.getvalue() == reference.stdout
    assert result.exit_status == reference.status
    if case.trap is not None:
        assert stderr.getvalue() == f"wasm trap: {case.trap}\n".encode()
        assert result.exit_status != 0
