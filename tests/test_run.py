"""keep run / keep demo: the main job, and every way it must refuse before the application runs."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from keep.cli import main
from runtime.firmware.interface import PlanOnly, measured_launch
from runtime.firmware.sim import SimFirmware
from runtime.run.attest import LiveAttestation, fresh_nonce
from runtime.run.runner import _roots, development_references
from runtime.vmm.keep import run_keep
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.errors import EvidenceError
from toolchain.image.keep_build import KeepBuild, build_keep
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import PLAN_FILE, LaunchPlan, Region
from toolchain.sign import dev_key, generate_private_key
from toolchain.sign.references import verify_envelope
from toolchain.snp.digest import PageType
from toolchain.verify import VerificationPolicy, Verifier

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
KVM_MISSING = kvm_unavailable_reason()
needs_kvm = pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs /dev/kvm: {KVM_MISSING}")


@pytest.fixture(scope="module")
def hello_build(tmp_path_factory: pytest.TempPathFactory) -> KeepBuild:
    return build_keep(HELLO, tmp_path_factory.mktemp("hello"), vcpu_counts=(1,))


@pytest.fixture(scope="module")
def hello_plan(hello_build: KeepBuild) -> LaunchPlan:
    return hello_build.plan


def _attestation(build: KeepBuild, firmware: SimFirmware) -> LiveAttestation:
    """A verifier for a development reference signed over the build's plan (not as tampered)."""
    envelope, trust = development_references(build, "kvm", 1)
    checks, references = verify_envelope(envelope, trust)
    assert references is not None, checks.render()
    return LiveAttestation(
        nonce=fresh_nonce(),
        firmware=firmware,
        references=references,
        reference_checks=checks,
        verifier=Verifier(_roots(True, firmware)),
        policy=VerificationPolicy(),
        backend="kvm",
        vcpus=1,
    )


def _boot(plan: LaunchPlan, attestation: LiveAttestation, firmware: SimFirmware):
    stdout, stderr = io.BytesIO(), io.BytesIO()
    result = run_keep(
        plan,
        firmware=firmware,
        args=["hello", "x"],
        stdout=stdout,
        stderr=stderr,
        on_report=attestation,
        report_data=attestation.nonce,
        timeout=20,
    )
    return result, stdout.getvalue()


def _reference_file(tmp_path: Path, build: KeepBuild, backend: str) -> Path:
    """A development reference for the build's plan, written where ``--references`` reads it."""
    envelope, _ = development_references(build, backend, 1)
    reference = tmp_path / "ref.json"
    reference.write_bytes(envelope)
    return reference


# -- the main job -------------------------------------------------------------------------------


@needs_kvm
def test_demo_runs_end_to_end(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "hello from a keep" in out
    assert "=> VALID" in out
    assert "✔ measurement" in out
    assert (tmp_path / "reference.dsse.json").is_file()
    # The checklist is printed before the application's first line: it ran only once verified.
    assert out.index("=> VALID") < out.index("hello from a keep")


@needs_kvm
def test_run_kvm_streams_output_and_exit_status(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    status = main(["run", "--dev", "--build-dir", str(tmp_path), str(HELLO), "one", "two"])
    captured = capfd.readouterr()
    assert status == 0
    assert "arg: one\narg: two\n" in captured.out
    assert "backend kvm" in captured.err
    assert "simulated" in captured.err


def test_run_nil_says_no_isolation(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["run", "--dev", "--backend", "nil", "--build-dir", str(tmp_path), str(HELLO), "n"]
    )
    captured = capfd.readouterr()
    assert status == 0
    assert "arg: n" in captured.out
    assert "NO isolation" in captured.err
    assert "=> VALID" in captured.err


def test_run_without_references_or_dev_is_refused(tmp_path: Path, capfd) -> None:
    status = main(["run", "--backend", "nil", "--build-dir", str(tmp_path), str(HELLO)])
    captured = capfd.readouterr()
    assert status == 2
    assert "no reference measurements" in captured.err
    assert "hello from a keep" not in captured.out


def _run_with_dev_reference_without_dev(tmp_path: Path, build: KeepBuild, *extra: str) -> int:
    """`keep run` on nil with a development reference and its key, but without --dev: the
    simulated root is then untrusted."""
    reference = _reference_file(tmp_path, build, "nil")
    _, key_path = dev_key()
    argv = ["run", *extra, "--backend", "nil", "--build-dir", str(build.out_dir)]
    argv += ["--references", str(reference), "--trusted-key", f"{key_path}.pub", str(HELLO)]
    return main(argv)


def test_sim_root_is_not_trusted_without_dev(
    tmp_path: Path, hello_build: KeepBuild, hello_plan: LaunchPlan, capfd
) -> None:
    status = _run_with_dev_reference_without_dev(tmp_path, hello_build)
    captured = capfd.readouterr()
    assert status == 1
    assert "✗ ark.trusted" in captured.err
    assert "hello from a keep" not in captured.out


# -- refusals before the application runs --------------------------------------------------------


@needs_kvm
def test_changed_app_after_signing_is_refused(
    tmp_path: Path, hello_build: KeepBuild, hello_plan: LaunchPlan, capfd
) -> None:
    reference = _reference_file(tmp_path, hello_build, "kvm")
    changed = tmp_path / "hello.wat"
    changed.write_text(HELLO.read_text().replace("hello from a keep", "hello from a kEEp"))
    _, key_path = dev_key()
    status = main(
        [
            "run",
            "--dev",
            "--references",
            str(reference),
            "--trusted-key",
            f"{key_path}.pub",
            "--build-dir",
            str(tmp_path / "build"),
            str(changed),
        ]
    )
    captured = capfd.readouterr()
    assert status == 1
    assert "✗ measurement" in captured.err
    assert "kEEp" not in captured.out


def _tampered_region(plan: LaunchPlan, label_part: str) -> LaunchPlan:
    regions = list(plan.regions)
    for index, region in enumerate(regions):
        if label_part in region.label and region.page_type is PageType.NORMAL:
            assert region.data is not None
            data = bytearray(region.data)
            # The page padding after the segment: measured, never executed, so that only the
            # measurement can refuse it (a changed instruction may stop the keep earlier, e.g.
            # a flipped bit in the microkernel's GHASH makes it refuse its own report's tag).
            assert data[-1] == 0, f"{region.label} has no padding to change"
            data[-1] ^= 0x01
            regions[index] = Region(
                region.gpa, region.page_type, region.size, bytes(data), region.label
            )
            return replace(plan, regions=tuple(regions))
    raise AssertionError(
        f"no NORMAL region labelled {label_part!r} in {[r.label for r in regions]}"
    )


@needs_kvm
@pytest.mark.parametrize("component", ["microkernel", "runtime image"])
def test_changed_byte_in_a_trusted_component_is_refused(
    hello_build: KeepBuild, hello_plan: LaunchPlan, component: str
) -> None:
    tampered = _tampered_region(hello_plan, component)
    firmware = SimFirmware()
    attestation = _attestation(hello_build, firmware)
    result, stdout = _boot(tampered, attestation, firmware)
    assert isinstance(result.error, EvidenceError)
    assert result.error.field == "measurement"
    assert result.exit_status is None
    assert stdout == b""  # the application never ran


@needs_kvm
def test_changed_byte_in_the_microkernel_elf_is_refused(
    tmp_path: Path, hello_build: KeepBuild, hello_plan: LaunchPlan
) -> None:
    elf = bytearray(hello_build.artifacts["ukernel.elf"].read_bytes())
    plan = build_plan(hello_build.artifacts["ukernel.elf"], hello_build.artifacts["runtime.elf"])
    text = next(r for r in plan.regions if "microkernel" in r.label and r.data)
    assert text.data is not None
    # Flip a byte of the first loaded microkernel segment inside the ELF file itself.
    offset = bytes(elf).find(text.data[64:96])
    assert offset > 0
    elf[offset] ^= 0x80
    tampered = build_plan(bytes(elf), hello_build.artifacts["runtime.elf"])
    assert tampered.launch_digest(1) != hello_plan.launch_digest(1)
    firmware = SimFirmware()
    result, stdout = _boot(tampered, _attestation(hello_build, firmware), firmware)
    assert isinstance(result.error, EvidenceError)
    assert stdout == b""


@needs_kvm
def test_untrusted_reference_key_is_refused(
    tmp_path: Path, hello_build: KeepBuild, hello_plan: LaunchPlan, capfd
) -> None:
    reference = _reference_file(tmp_path, hello_build, "kvm")
    other = generate_private_key("ecdsa-p384")
    from toolchain.sign import write_key_pair

    pub = write_key_pair(tmp_path / "other.pem", other)
    status = main(
        [
            "run",
            "--dev",
            "--references",
            str(reference),
            "--trusted-key",
            str(pub),
            "--build-dir",
            str(hello_build.out_dir),
            str(HELLO),
        ]
    )
    captured = capfd.readouterr()
    assert status == 1
    assert "do not verify" in captured.err
    assert "hello from a keep" not in captured.out


class _ReplayingFirmware(SimFirmware):
    """A firmware that answers every report request with a report it recorded earlier (sealed
    correctly: only the report inside is stale)."""

    def __init__(self, recorded: bytes) -> None:
        super().__init__()
        self.recorded = recorded

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        return self.recorded

    def guest_request(self, message: bytes) -> bytes:
        from toolchain.snp.guest_msg import ReportResponse, open_message, seal

        assert self._secrets is not None
        header, _payload = open_message(self._secrets.key(0), message)
        sealed = seal(
            self._secrets.key(0),
            seqno=header.msg_seqno + 1,
            msg_type=6,
            msg_version=1,
            vmpck=0,
            payload=ReportResponse(0, self.recorded).to_bytes(),
        )
        return sealed.ljust(4096, b"\0")


def _recorded_report(hello_build: KeepBuild, hello_plan: LaunchPlan) -> bytes:
    first = SimFirmware()
    attestation = _attestation(hello_build, first)
    result, stdout = _boot(hello_plan, attestation, first)
    assert result.ok, result.error
    assert b"hello from a keep" in stdout
    assert attestation.report is not None
    return attestation.report


@needs_kvm
def test_replayed_report_with_an_old_nonce_is_refused(
    hello_build: KeepBuild, hello_plan: LaunchPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that swaps the report in the shared buffer just before ATTEST reads it: the
    runner's own REPORT_DATA check refuses it."""
    from runtime.vmm.hypercalls import HypercallServer

    recorded = _recorded_report(hello_build, hello_plan)
    attest = HypercallServer._attest

    def swapping(self: HypercallServer, args: tuple[int, ...]) -> int:
        self.memory.write(self.layout.buffer + args[2], recorded)
        return attest(self, args)

    monkeypatch.setattr(HypercallServer, "_attest", swapping)
    firmware = SimFirmware()
    result, stdout = _boot(hello_plan, _attestation(hello_build, firmware), firmware)
    assert isinstance(result.error, EvidenceError)
    assert result.error.field == "report-data"
    assert stdout == b""


@needs_kvm
def test_a_stale_report_in_a_fresh_guest_message_stops_the_keep(
    hello_build: KeepBuild, hello_plan: LaunchPlan
) -> None:
    """The microkernel checks REPORT_DATA itself before the report leaves private memory."""
    replaying = _ReplayingFirmware(_recorded_report(hello_build, hello_plan))
    second = _attestation(hello_build, replaying)
    result, stdout = _boot(hello_plan, second, replaying)
    assert result.error is not None
    assert "REPORT_DATA of the report" in result.error.message
    assert second.report is None  # it never reached the runner
    assert stdout == b""


def test_evidence_rechecks_with_verify_report(tmp_path: Path, capfd) -> None:
    evidence = tmp_path / "evidence.json"
    status = main(
        [
            "run",
            "--dev",
            "--backend",
            "nil",
            "--build-dir",
            str(tmp_path / "build"),
            "--evidence",
            str(evidence),
            str(HELLO),
        ]
    )
    assert status == 0
    capfd.readouterr()
    document = json.loads(evidence.read_text())
    (tmp_path / "report.bin").write_bytes(bytes.fromhex(document["report"]))
    (tmp_path / "vcek.pem").write_text(document["vcek"])
    (tmp_path / "chain.pem").write_text(document["ask"] + document["ark"])
    (tmp_path / "ark.pem").write_text(document["ark"])
    argv = [
        "verify-report",
        str(tmp_path / "report.bin"),
        "--vcek",
        str(tmp_path / "vcek.pem"),
        "--ask-chain",
        str(tmp_path / "chain.pem"),
        "--report-data",
        document["nonce"],
    ]
    # Without explicitly trusting the simulated root, the evidence does not verify ...
    assert main(argv) == 1
    assert "✗ ark.trusted" in capfd.readouterr().out
    # ... and with it, it does.
    assert main([*argv, "--extra-root", str(tmp_path / "ark.pem")]) == 0


def test_a_second_report_request_in_one_run_is_refused(
    hello_build: KeepBuild, hello_plan: LaunchPlan
) -> None:
    firmware = SimFirmware()
    attestation = _attestation(hello_build, firmware)
    measured_launch(firmware, hello_plan, 1, PlanOnly())
    report = firmware.guest_request_report(attestation.nonce, 0)
    assert attestation(report)
    with pytest.raises(EvidenceError):
        attestation(report)


def test_unsigned_reference_content_change_is_refused(
    hello_build: KeepBuild, hello_plan: LaunchPlan
) -> None:
    envelope, trust = development_references(hello_build, "nil", 1)
    document = json.loads(envelope)
    document["payloadType"] = "application/json"
    checks, references = verify_envelope(json.dumps(document).encode(), trust)
    assert references is None
    assert checks.failures
    assert any(c.name == "payload type" for c in checks.failures)


@pytest.mark.parametrize(
    ("program", "trap"),
    [("trap_div_zero.wat", "integer divide by zero"), ("trap_stack.wat", "call stack exhausted")],
)
@pytest.mark.parametrize("backend", ["nil", "kvm"])
def test_traps_look_the_same_on_both_backends(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], program: str, trap: str, backend: str
) -> None:
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    app = ROOT / "tests" / "wat" / program
    status = main(["run", "--dev", "--backend", backend, "--build-dir", str(tmp_path), str(app)])
    captured = capfd.readouterr()
    assert status == 134
    assert f"wasm trap: {trap}" in captured.err


def test_options_may_follow_the_application_arguments(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(HELLO), "a", "--backend", "nil", "--dev", "--build-dir", str(tmp_path)]
    assert main([*argv, "--", "-x"]) == 0
    out = capfd.readouterr().out
    assert "arg: a\narg: -x\n" in out


def test_non_positive_timeout_is_unusable_input(tmp_path: Path, capfd) -> None:
    status = main(["run", "--dev", "--backend", "nil", "--timeout", "0", str(HELLO)])
    assert status == 2
    assert "--timeout must be a positive" in capfd.readouterr().err


# -- a keep that does not attest fails the run, whatever it asks for (issue 10, finding 2) ------

#: Edits of runtime/guest/ukernel/boot.c, compiled in the test's own tree only (the measured sources
#: are never touched): each is a microkernel that skips or abuses one step of attestation.
#: variant → (a line inserted first in keep_main, how many times the attestation block stays)
HOSTILE_BOOTS = {
    # exits 0 at once: the finding's reproduction
    "exit-before-attest": ("    keep_exit(0);\n", 1),
    # writes to the console before asking for a report
    "console-before-attest": ("    keep_hypercall(KEEP_HC_CONSOLE_WRITE, 1, 0, 1);\n", 1),
    # enters ring 3 without attesting: the application prints, then exits 0
    "skip-attest": ("", 0),
    # attests twice (a second report in one run)
    "second-attest": ("", 2),
    # crashes (#UD in ring 0) before attesting
    "crash-before-attest": ("    __builtin_trap();\n", 1),
}
MISSING_STEP = {
    "exit-before-attest": "attestation.requested",
    "console-before-attest": "attestation.requested",
    "skip-attest": "attestation.requested",
    "second-attest": "attestation.once",
    "crash-before-attest": "attestation.requested",
}


def hostile_build(tmp_path: Path, build: KeepBuild, variant: str) -> KeepBuild:
    """``build`` with a microkernel compiled from an edited copy of boot.c (and its new plan)."""
    import shutil

    from toolchain.image.ukernel import SOURCE_DIR, build_ukernel

    first, copies = HOSTILE_BOOTS[variant]
    sources = tmp_path / "ukernel-src"
    shutil.copytree(SOURCE_DIR, sources)
    boot = sources / "boot.c"
    text = boot.read_text()
    # The attestation block: REPORT_DATA and ATTEST, or exit (runtime/guest/ukernel/boot.c).
    start = text.index("    if (keep_hypercall(KEEP_HC_REPORT_DATA")
    end = text.index("    }\n", start) + len("    }\n")
    text = text[:start] + text[start:end] * copies + text[end:]
    marker = "    const struct keep_user_info *info"
    text = text.replace(marker, first + marker)
    boot.write_text(text)
    out = tmp_path / "hostile"
    out.mkdir()
    for name, path in build.artifacts.items():
        shutil.copyfile(path, out / name)
    shutil.copyfile(build.provenance, out / build.provenance.name)
    ukernel = build_ukernel(tmp_path / "ukernel-build", source_dir=sources)
    shutil.copyfile(ukernel, out / "ukernel.elf")
    plan = build_plan(out / "ukernel.elf", out / "runtime.elf")
    (out / PLAN_FILE).write_text(plan.to_json())
    artifacts = {name: out / name for name in build.artifacts}
    return KeepBuild(
        out_dir=out,
        artifacts=artifacts,
        plan=plan,
        launch_digests={1: plan.launch_digest(1)},
        provenance=out / build.provenance.name,
    )


@needs_kvm
@pytest.mark.parametrize("variant", sorted(HOSTILE_BOOTS))
def test_a_keep_that_does_not_attest_fails_the_run(
    tmp_path: Path,
    hello_build: KeepBuild,
    variant: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    hostile = hostile_build(tmp_path, hello_build, variant)
    # The runner signs a development reference for exactly this microkernel, so the launch
    # digest matches: only the missing (or doubled) attestation step can fail the run.
    monkeypatch.setattr("runtime.run.runner.build_for_run", lambda *_args: hostile)
    status = main(["run", "--dev", "--backend", "kvm", str(HELLO)])
    captured = capfd.readouterr()
    assert status == 1, captured.err
    assert f"✗ {MISSING_STEP[variant]}: expected" in captured.err
    if variant == "second-attest":
        assert "✔ attestation.verified" in captured.err
    else:
        assert "hello from a keep" not in captured.out
        assert "=> VALID" not in captured.err


class _SilentFirmware(SimFirmware):
    """A firmware that cannot produce the keep's report (a broken or hostile PSP path)."""

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        from toolchain.errors import PlatformError

        raise PlatformError("MSG_REPORT_REQ failed: no report for this guest")

    def guest_request(self, message: bytes) -> bytes:
        return self.guest_request_report(bytes(64), 0)


@pytest.mark.parametrize("backend", ["nil", "kvm"])
def test_a_report_that_was_not_produced_fails_the_run(
    tmp_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    monkeypatch.setattr("runtime.firmware.sim.SimFirmware", _SilentFirmware)
    argv = ["run", "--dev", "--backend", backend, "--build-dir", str(tmp_path), str(HELLO)]
    status = main(argv)
    captured = capfd.readouterr()
    assert status == 1, captured.err
    assert "✔ attestation.requested" in captured.err
    assert "✗ attestation.produced: expected" in captured.err
    assert "MSG_REPORT_REQ failed" in captured.err
    assert "hello from a keep" not in captured.out


def test_the_verdict_names_the_first_missing_step(
    hello_build: KeepBuild, hello_plan: LaunchPlan
) -> None:
    firmware = SimFirmware()
    attestation = _attestation(hello_build, firmware)
    verdict = attestation.verdict("the keep ended with exit status 0")
    assert not verdict.ok
    assert [(c.name, c.ok) for c in verdict.checks] == [
        ("attestation.requested", False),
        ("attestation.produced", None),
        ("attestation.verified", None),
        ("attestation.once", None),
    ]
    assert "exit status 0" in verdict.checks[0].found
    measured_launch(firmware, hello_plan, 1, PlanOnly())
    assert attestation(attestation.witness.guest_request_report(attestation.nonce, 0))
    assert attestation.verdict("done").ok
    with pytest.raises(EvidenceError) as info:
        attestation(attestation.witness.guest_request_report(attestation.nonce, 0))
    assert info.value.field == "attestation.once"
    assert [c.name for c in attestation.verdict("done").failures] == ["attestation.once"]


@needs_kvm
def test_the_runner_does_not_take_the_vmms_word_for_attestation(
    tmp_path: Path,
    hello_build: KeepBuild,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A VMM that honours EXIT before attestation (as it once did) still cannot pass status 0."""
    from runtime.vmm import keep

    class Lenient(keep.HypercallServer):
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, **{**options, "require_attestation": False})

    hostile = hostile_build(tmp_path, hello_build, "exit-before-attest")
    monkeypatch.setattr("runtime.run.runner.build_for_run", lambda *_args: hostile)
    monkeypatch.setattr(keep, "HypercallServer", Lenient)
    status = main(["run", "--dev", "--backend", "kvm", str(HELLO)])
    captured = capfd.readouterr()
    assert status == 1, captured.err
    assert "✗ attestation.requested: expected" in captured.err
    assert "found no request: the keep ended with exit status 0" in captured.err


# -- issue 11, section 5: running ------------------------------------------------------------


def test_run_accepts_a_build_directory(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["build", str(HELLO), "--out", str(out), "--vcpus", "1"]) == 0
    capfd.readouterr()
    status = main(["run", "--dev", "--backend", "nil", "-q", str(out), "x"])
    captured = capfd.readouterr()
    assert status == 0, captured.err
    assert "hello from a keep" in captured.out
    assert "arg: x" in captured.out


@pytest.mark.parametrize("tampered", ["runtime.elf", "ukernel.elf", "ukernel-snp.elf", PLAN_FILE])
def test_a_build_directory_that_differs_from_a_fresh_build_is_refused(
    tmp_path: Path, hello_build: KeepBuild, tampered: str, capfd: pytest.CaptureFixture[str]
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(hello_build.out_dir, out)
    target = out / tampered
    if tampered == PLAN_FILE:
        # An unmeasured field (the heap's end) steers the keep's memory, so it is compared too.
        document = json.loads(target.read_text())
        document["abi"]["heap_end"] -= 0x1000
        target.write_text(json.dumps(document))
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(data)
    status = main(["run", "--dev", "--backend", "nil", str(out)])
    captured = capfd.readouterr()
    assert status == 1
    assert f"[{tampered}: expected" in captured.err
    assert "a fresh build" in captured.err
    assert "hello from a keep" not in captured.out


def test_a_directory_that_is_not_a_build_is_unusable_input(
    tmp_path: Path, hello_build: KeepBuild, capfd
) -> None:
    status = main(["run", "--dev", "--backend", "nil", str(tmp_path)])
    assert status == 2
    assert "not a keep build (it has no app.wasm)" in capfd.readouterr().err
    # Building into the directory being checked would overwrite what it is compared with.
    out = str(hello_build.out_dir)
    assert main(["run", "--dev", "--backend", "nil", "--build-dir", out, out]) == 2
    assert "is the build directory being run" in capfd.readouterr().err


def test_quiet_prints_one_verdict_line_on_success(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--dev", "--quiet", "--backend", "nil", "--build-dir", str(tmp_path)]
    assert main([*argv, str(HELLO)]) == 0
    err = capfd.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("keep: ✔ attested: ")
    assert "backend nil (NO isolation)" in err
    assert "simulated AMD root trusted by --dev" in err


def test_quiet_prints_everything_on_failure(
    tmp_path: Path, hello_build: KeepBuild, hello_plan: LaunchPlan, capfd
) -> None:
    status = _run_with_dev_reference_without_dev(tmp_path, hello_build, "--quiet")
    err = capfd.readouterr().err
    assert status == 1
    assert "NO isolation" in err  # the security statement, held back, comes out
    assert "✗ ark.trusted" in err
    assert "✔ measurement" in err  # the whole checklist
    assert "keep: ✔ attested" not in err


def test_without_dev_the_simulated_root_says_what_dev_means(
    tmp_path: Path, hello_build: KeepBuild, hello_plan: LaunchPlan, capfd
) -> None:
    reference = _reference_file(tmp_path, hello_build, "nil")
    _, key_path = dev_key()
    argv = ["run", "--backend", "nil", "--build-dir", str(hello_build.out_dir), str(HELLO)]
    status = main([*argv, "--references", str(reference), "--trusted-key", f"{key_path}.pub"])
    err = capfd.readouterr().err
    assert status == 1
    assert "hint: this machine has only the simulated SNP firmware" in err
    assert "pass --dev to trust that root (development only: it is NOT a hardware root" in err
    assert main(argv) == 2  # no references at all: the hint says what --dev would do
    err = capfd.readouterr().err
    assert "--dev (development only: sign a reference for this build" in err
    assert "trust the simulated AMD root, which is NOT a hardware root of trust" in err


@pytest.mark.parametrize("backend", ["nil", "kvm"])
def test_a_timeout_has_its_own_exit_status(
    tmp_path: Path, backend: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    spin = ROOT / "tests" / "wat" / "spin.wat"
    # Long enough for the attestation (ring 0 seals and opens a guest message: ~0.3 s on PVM).
    argv = ["run", "--dev", "-q", "--backend", backend, "--timeout", "2"]
    status = main([*argv, "--build-dir", str(tmp_path), str(spin)])
    err = capfd.readouterr().err
    assert status == 124
    assert "the keep ran past its time limit of 2 s" in err


def test_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    from keep.cli.run import EXIT_CODES

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code, _meaning in EXIT_CODES:
        assert f"\n  {code} " in out
    assert {code for code, _ in EXIT_CODES} >= {"1", "2", "3", "124", "125", "134"}


def test_witnessed_firmware_counts_sealed_guest_requests_too():
    """SNP guest messages reach the firmware through the same witness as plain report requests:
    a refused one counts as requested, never as produced."""
    from runtime.run.attest import WitnessedFirmware
    from toolchain.errors import EvidenceError

    class Inner:
        name = "fake"  # a test double: answers the first message, refuses the second
        simulated = True
        sees_report_requests = True

        def __init__(self) -> None:
            self.calls = 0

        def guest_request(self, message: bytes) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise EvidenceError("replayed sequence number")
            return b"sealed:" + message

    witness = WitnessedFirmware(Inner())  # type: ignore[arg-type]
    assert witness.guest_request(b"m1") == b"sealed:m1"
    assert (witness.requested, witness.produced, witness.failure) == (1, 1, None)
    with pytest.raises(EvidenceError):
        witness.guest_request(b"m1")
    assert (witness.requested, witness.produced) == (2, 1)
    assert witness.failure == "the firmware failed: replayed sequence number"
