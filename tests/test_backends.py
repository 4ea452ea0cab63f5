"""The backend type: one registry, one launch sequence, and a runner that trusts no backend.

The backends here that are not ``BACKENDS``' own are FAKES for tests: they stand where a new
backend (the real snp one) would join, to show that the runner takes any registered backend
without change — and still refuses a keep whose launch does not measure as signed.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runtime.firmware.interface import Firmware, PlanOnly, measured_launch
from runtime.run import RunOptions, backends, run_app
from runtime.run.backends import BACKENDS, Ended, Launch, NilBackend, choose_backend
from toolchain.errors import EvidenceError, InputError, PlatformError

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"


class Unavailable(NilBackend):
    """A FAKE backend that cannot run on this host."""

    name = "kvm"

    def unavailable(self) -> str | None:
        return "no /dev/kvm in this test"


class Recording(NilBackend):
    """A FAKE backend: the nil backend, recording what the runner hands it."""

    def __init__(self) -> None:
        self.launches: list[Launch] = []

    def run(self, launch: Launch) -> Ended:
        self.launches.append(launch)
        return super().run(launch)


class OneMoreVcpu(NilBackend):
    """A FAKE, dishonest backend: it launches one vCPU more than it was asked for."""

    def run(self, launch: Launch) -> Ended:
        plan = launch.build.plan
        measurement = measured_launch(launch.firmware, plan, launch.vcpus + 1, PlanOnly())
        launch.verified(launch.firmware.guest_request_report(launch.report_data, 0))
        return Ended(0, measurement)


def test_backends_are_chosen_by_name_from_one_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(BACKENDS) == {"kvm", "nil", "snp"}
    with pytest.raises(InputError, match=r"unknown backend 'sev' \(known: kvm, nil, snp\)"):
        choose_backend("sev", print)
    monkeypatch.setitem(BACKENDS, "kvm", Unavailable())
    with pytest.raises(PlatformError, match="the kvm backend cannot run here: no /dev/kvm"):
        choose_backend("kvm", print)
    said: list[str] = []
    assert choose_backend(None, said.append) is BACKENDS["nil"]
    fallback = "keep: the kvm backend cannot run here (no /dev/kvm in this test); falling back"
    assert said == [f"{fallback} to the nil backend"]
    assert choose_backend("nil", said.append) is BACKENDS["nil"]


def test_every_backend_attests_with_a_firmware_that_declares_its_measurement() -> None:
    from runtime.run.backends import SnpBackend
    from runtime.vmm.fake_kvm_snp import FakeKvmSnp

    for name, backend in BACKENDS.items():
        # snp's firmware is for the host's CPU generation: the fake answers as a Genoa host.
        firmware = (SnpBackend(system=FakeKvmSnp()) if name == "snp" else backend).firmware()
        assert isinstance(firmware, Firmware)
        assert firmware.measurement == firmware.measurement  # declared, no getattr needed
        assert backend.name in backend.statement(firmware)


def _options(tmp_path: Path, vcpus: int) -> RunOptions:
    return RunOptions(
        app=HELLO,
        backend="nil",
        dev=True,
        vcpus=vcpus,
        build_dir=tmp_path / "build",
        log=io.StringIO(),
    )


def test_the_runner_hands_a_registered_backend_the_parsed_plan_and_the_vcpu_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    recording = Recording()
    monkeypatch.setitem(backends.BACKENDS, "nil", recording)
    outcome = run_app(_options(tmp_path, vcpus=2))
    assert outcome.exit_status == 0
    assert "hello from a keep" in capfd.readouterr().out
    (launch,) = recording.launches
    assert launch.vcpus == 2
    # The plan the build carries, measured with the launch's vCPU count.
    assert outcome.measurement == launch.build.plan.launch_digest(2)
    assert outcome.measurement != launch.build.plan.launch_digest(1)


def test_a_backend_that_launches_another_keep_is_refused_before_the_app_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(backends.BACKENDS, "nil", OneMoreVcpu())
    options = _options(tmp_path, vcpus=1)
    with pytest.raises(EvidenceError) as caught:
        run_app(options)
    assert caught.value.field == "measurement"
    assert "hello from a keep" not in capfd.readouterr().out
