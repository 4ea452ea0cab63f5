"""SEV-SNP hardware smoke test: the example keep on a real AMD SEV-SNP host, end to end.

On an SNP host this test

1. builds ``examples/hello/hello.wat`` into a keep and lays out its ``snp`` plan (the host's
   C-bit in the page tables, KVM's VMSAs: ``toolchain.measure.keep.snp_plan_of``);
2. launches it with ``runtime.vmm.snp_launch.SnpLaunch`` on the real KVM SNP API
   (``KVM_X86_SNP_VM``, ``KVM_SEV_INIT2``, guest_memfd, the CPUID page from the host's supported
   CPUID, ``KVM_SEV_SNP_LAUNCH_*``) and checks that the digest of the bytes the VMM handed to
   LAUNCH_UPDATE (plus the plan's VMSAs) equals the plan's launch digest;
3. runs it the way a user does — ``keep run --dev --backend snp --vcek $KEEPSTACK_SNP_VCEK
   --evidence FILE`` — where the keep obtains its report from the AMD-SP as an SNP guest message,
   hands it over with ATTEST, and the runner verifies it against the VCEK and AMD's pinned ARK
   (never the simulated root: ``--dev`` only signs a development reference for this build);
4. checks the evidence: the report's MEASUREMENT is the plan's ``snp`` digest, REPORT_DATA the
   run's nonce, and the report verifies once more with ``Verifier.amd()`` and the VCEK.

Everywhere else it SKIPS, saying what the host lacks (``keep platform`` shows the same facts).
How to run it: ``tests/hardware/README.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtime.vmm.platform import probe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello" / "hello.wat"
VCEK_VARIABLE = "KEEPSTACK_SNP_VCEK"


def _why_not_snp() -> str | None:
    missing = probe(timing=False).snp_missing()
    if not missing:
        return None
    return "NOT AN SEV-SNP HOST — the SNP hardware smoke test did NOT run; missing: " + "; ".join(
        missing
    )


SKIP_REASON = _why_not_snp()
pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]


def test_snp_keep_launches_attests_and_verifies_against_amd(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from keep.cli import main
    from runtime.run.backends import snp_plan
    from runtime.vmm.snp_launch import SnpLaunch
    from toolchain.image.keep_build import build_keep
    from toolchain.snp import certs
    from toolchain.snp.report import AttestationReport
    from toolchain.verify import Verifier
    from toolchain.verify.policy import VerificationPolicy

    vcek_path = os.environ.get(VCEK_VARIABLE)
    assert vcek_path, f"set {VCEK_VARIABLE} to this chip's VCEK (tests/hardware/README.md)"

    # 1-2. build, lay out, launch on the real KVM SNP API (nothing runs: the launch only)
    build = build_keep(EXAMPLE, tmp_path / "build", vcpu_counts=(1,))
    plan = snp_plan(build)
    with SnpLaunch(plan) as launch:
        assert launch.launch() == plan.launch_digest(1), "the VMM handed over other bytes"

    # 3. the run a user does
    evidence = tmp_path / "evidence.json"
    status = main(
        [
            "run",
            "--dev",
            "--backend",
            "snp",
            "--vcek",
            vcek_path,
            "--evidence",
            str(evidence),
            "--build-dir",
            str(tmp_path / "build"),
            str(EXAMPLE),
        ]
    )
    out, err = capfd.readouterr()
    assert status == 0, err
    assert "hello" in out

    # 4. the evidence, checked once more against AMD's roots only
    document = json.loads(evidence.read_text())
    assert document["backend"] == "snp"
    assert not document["simulated_root"]
    report = AttestationReport.parse(bytes.fromhex(document["report"]))
    assert report.measurement == plan.launch_digest(1)
    vcek = certs.load_certificate(document["vcek"].encode())
    checks = Verifier.amd().verify_report(
        report,
        vcek,
        policy=VerificationPolicy(report_data=report.report_data),
    )
    assert checks.ok, checks.render()
