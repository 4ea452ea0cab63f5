"""The ``snp`` backend in the runner: its launch at the ioctl boundary, refusals, references.

The launch runs against the FAKE KVM SNP system (``runtime.vmm.fake_kvm_snp``, for tests only);
on this host (no SNP) ``keep run --backend snp`` must fail with exit 3 and ``keep platform``'s
reasons, never fall back to another backend.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.firmware.snp import GUEST_PATH_ONLY, VCEK_MISSING, SnpFirmware
from runtime.run.backends import BACKENDS, Launch, SnpBackend, choose_backend, snp_plan
from runtime.run.runner import development_references
from runtime.vmm import kvm_snp
from runtime.vmm.fake_kvm_snp import FakeKvmSnp
from runtime.vmm.platform import probe
from runtime.vmm.snp_launch import SnpLaunch
from toolchain.errors import PlatformError
from toolchain.image.keep_build import KeepBuild, build_keep
from toolchain.measure.reference import GENERATIONS
from toolchain.sign.references import verify_envelope
from toolchain.snp.digest import PageType

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
SNP_MISSING = probe(timing=False).snp_missing()


@pytest.fixture(scope="module")
def hello_build(tmp_path_factory: pytest.TempPathFactory) -> KeepBuild:
    return build_keep(HELLO, tmp_path_factory.mktemp("hello"), vcpu_counts=(1,))


def _launch(build: KeepBuild, vcpus: int) -> Launch:
    return Launch(
        build=build,
        vcpus=vcpus,
        firmware=SnpFirmware(),
        argv=["hello"],
        env=[],
        timeout=5.0,
        verified=lambda report: True,
        report_data=bytes(64),
        trees=b"",
    )


class _Loop:
    """Stands in for the vCPUs' run loop (the fake's vCPUs cannot run): records what it got."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, vm: SnpLaunch, launch: Launch) -> int | None:
        self.seen.append((vm.step, vm.vcpu_count, len(vm.vcpus)))
        return 7


def test_the_backend_launches_the_snp_twin_plan_with_the_launch_vcpus(
    hello_build: KeepBuild,
) -> None:
    fake, loop = FakeKvmSnp(), _Loop()
    backend = SnpBackend(system=fake, vcpu_setup=fake.vcpu_setup, run_vcpus=loop)
    ended = backend.run(_launch(hello_build, 2))
    plan = snp_plan(hello_build)
    assert plan.platform == "snp"
    names = fake.names()
    order = ["KVM_CREATE_VM", "KVM_SEV_INIT2", "SNP_LAUNCH_START", "SNP_LAUNCH_UPDATE"]
    assert [names.index(name) for name in order] == sorted(names.index(name) for name in order)
    assert [name for name in names if name != "close"][-1] == "SNP_LAUNCH_FINISH"
    # Every region of the plan, handed over whole with its page type, in plan order.
    updates = [c.args for c in fake.calls if c.name == "SNP_LAUNCH_UPDATE"]
    assert [(u["gfn"], u["len"], PageType(u["type"])) for u in updates] == [
        (r.gpa // 4096, r.size, r.page_type) for r in plan.regions
    ]
    # Two vCPUs measured (KVM's VMSAs), the loop ran after LAUNCH_FINISH with both.
    assert len(fake.vcpu_states) == 2
    assert loop.seen == [("finished", 2, 2)]
    assert ended.exit_status == 7
    assert ended.measurement == fake.measurement == plan.launch_digest(2)
    assert ended.measurement != hello_build.plan.launch_digest(2)  # not the simulated digest
    assert fake.open_fds == {}


class _HostileFake(FakeKvmSnp):
    """Changes one byte of the VMM's source buffer at ``gpa`` once the launch has started."""

    def __init__(self, gpa: int) -> None:
        super().__init__()
        self.gpa = gpa

    def _launch_start(self, cmd: kvm_snp.KvmSevCmd) -> int:
        result = super()._launch_start(cmd)
        slot = next(s for s in self.slots.values() if s.gpa <= self.gpa < s.gpa + s.size)
        ctypes.memmove(slot.uaddr + self.gpa - slot.gpa, b"\xa5", 1)
        return result


def test_a_launch_that_does_not_measure_as_the_snp_plan_is_refused(
    hello_build: KeepBuild,
) -> None:
    launched = next(r for r in snp_plan(hello_build).regions if r.page_type is PageType.NORMAL)
    fake, loop = _HostileFake(launched.gpa + 0x10), _Loop()
    backend = SnpBackend(system=fake, vcpu_setup=fake.vcpu_setup, run_vcpus=loop)
    with pytest.raises(PlatformError, match="do not measure as the plan does") as info:
        backend.run(_launch(hello_build, 1))
    assert f"expected {snp_plan(hello_build).launch_digest(1).hex()}, found " in (
        info.value.message
    )
    assert loop.seen == []  # no vCPU ran
    assert "SNP_LAUNCH_FINISH" not in fake.names()
    assert fake.open_fds == {}


def test_unavailable_is_keep_platforms_reasons_verbatim() -> None:
    reason = SnpBackend().unavailable()
    assert reason == ("; ".join(SNP_MISSING) if SNP_MISSING else None)


def test_an_explicit_snp_never_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    monkeypatch.setattr(SnpBackend, "unavailable", lambda self: "no /dev/sev")
    with pytest.raises(PlatformError, match="the snp backend cannot run here: no /dev/sev"):
        choose_backend("snp", said.append)
    assert said == []
    assert choose_backend(None, said.append).name != "snp"  # never a default


@pytest.mark.skipif(not SNP_MISSING, reason="this host has SEV-SNP")
def test_keep_run_backend_snp_here_exits_3_with_the_reasons() -> None:
    keep = Path(sys.executable).parent / "keep"
    done = subprocess.run(
        [str(keep), "run", "--dev", "--backend", "snp", str(HELLO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "the snp backend cannot run here: " + "; ".join(SNP_MISSING) in done.stderr
    assert "falling back" not in done.stderr + done.stdout
    assert "hello" not in done.stdout


def test_keep_run_help_lists_snp() -> None:
    assert list(BACKENDS) == ["kvm", "nil", "snp"]
    keep = Path(sys.executable).parent / "keep"
    done = subprocess.run(
        [str(keep), "run", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "{kvm,nil,snp}" in done.stdout


def test_a_dev_reference_for_snp_carries_the_snp_digests(hello_build: KeepBuild) -> None:
    envelope, trust = development_references(hello_build, "snp", 1)
    checks, references = verify_envelope(envelope, trust)
    assert references is not None, checks.render()
    configs = references.predicate.configs
    snp = hello_build.snp_launch_digests()
    assert {(c.backend, c.cpu_generation, c.vcpus) for c in configs} == {
        ("snp", generation, 1) for generation in GENERATIONS
    }
    for config in configs:
        assert config.launch_digest == snp[config.cpu_generation][1]
        assert config.launch_digest == snp_plan(hello_build).launch_digest(1)
        assert config.launch_digest != hello_build.plan.launch_digest(1)
    # The other backends' development references keep the simulated digest.
    envelope, trust = development_references(hello_build, "kvm", 1)
    _, kvm = verify_envelope(envelope, trust)
    assert kvm is not None
    assert [c.launch_digest for c in kvm.predicate.configs] == [hello_build.plan.launch_digest(1)]


def test_the_real_firmware_answers_nothing_the_verifier_could_trust() -> None:
    firmware = SnpFirmware()
    with pytest.raises(PlatformError) as info:
        firmware.certificate_chain()
    assert info.value.message == VCEK_MISSING
    with pytest.raises(PlatformError) as info:
        firmware.guest_request_report(bytes(64), 0)
    assert info.value.message == GUEST_PATH_ONLY
    with pytest.raises(PlatformError, match="KVM issues the launch commands"):
        firmware.launch_start(0x30000)
    assert firmware.measurement == b""  # only the signed report holds it


def _snp_backend_that_launches_nothing(monkeypatch: pytest.MonkeyPatch) -> list[Launch]:
    """The snp backend as if on an SNP host, whose keep never hands over a report: the launches
    it is asked for are recorded."""
    from runtime.run.backends import Ended

    launched: list[Launch] = []

    def run(self: SnpBackend, launch: Launch) -> Ended:
        launched.append(launch)
        return Ended(0, b"")

    monkeypatch.setattr(SnpBackend, "unavailable", lambda self: None)
    monkeypatch.setattr(SnpBackend, "firmware", lambda self, vcek=None: SnpFirmware())
    monkeypatch.setattr(SnpBackend, "run", run)
    return launched


def test_on_an_snp_host_the_run_never_trusts_the_simulated_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even with ``--dev`` the snp firmware's chain is never simulated: no root is added, and a
    keep that never handed over a report fails the run."""
    from keep.cli import main
    from runtime.run.runner import _roots
    from toolchain.verify import TrustedRoots

    assert _roots(True, SnpFirmware()) == TrustedRoots.amd()
    launched = _snp_backend_that_launches_nothing(monkeypatch)
    assert main(["run", "--dev", "--backend", "snp", str(HELLO)]) == 1
    err = capsys.readouterr().err
    assert "trusting the simulated AMD root" not in err  # never for snp
    assert "✗ attestation.requested: expected the keep hands over its attestation report" in err
    assert len(launched) == 1


def test_a_real_chain_is_checked_against_amds_roots_only_even_with_dev(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a (non-simulated) chain, --dev adds no root and says it trusts none; the keep that
    never attested fails the run."""
    from dataclasses import replace

    from keep.cli import main
    from runtime.firmware.sim import SimFirmware
    from runtime.run.runner import _roots
    from toolchain.verify import TrustedRoots

    chain = replace(SimFirmware().certificate_chain(), simulated=False)
    monkeypatch.setattr(SnpFirmware, "certificate_chain", lambda self, report=None: chain)
    assert _roots(True, SnpFirmware()) == TrustedRoots.amd()
    launched = _snp_backend_that_launches_nothing(monkeypatch)
    assert main(["run", "--dev", "--backend", "snp", str(HELLO)]) == 1
    err = capsys.readouterr().err
    assert "trusting the simulated AMD root" not in err
    assert len(launched) == 1
    assert isinstance(launched[0].firmware.inner, SnpFirmware)  # type: ignore[attr-defined]
