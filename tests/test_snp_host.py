"""The ``snp`` backend's last host-side gaps (issue 13 §4): the operator's VCEK, the runner's
witness on SNP, application processors, the C-bit and the CPUID page.

No SNP host here and no network: the VCEK path runs on real AMD reports and VCEKs from
``tests/data`` (``tests/data/SOURCES.md``), the launch on the FAKE KVM SNP system
(``runtime.vmm.fake_kvm_snp``) at the ioctl boundary, and the witness with the fake standing in
for KVM and the simulated PSP's key standing in for the AMD-SP's.
"""

from __future__ import annotations

import struct
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from test_snp_backend import _launch
from testdata import SNP_REPORTS

from runtime.firmware.interface import CertificateChain
from runtime.firmware.sim import SimFirmware
from runtime.firmware.snp import VCEK_ENV, VCEK_MISSING, SnpFirmware, load_vcek
from runtime.run.attest import LiveAttestation, fresh_nonce
from runtime.run.backends import BACKENDS, Launch, SnpBackend, snp_plan
from runtime.run.runner import (
    RunOptions,
    _Log,
    _require_attested,
    _vcek,
    development_references,
)
from runtime.vmm.fake_kvm_snp import GENOA_CPUID, FakeKvmSnp
from runtime.vmm.platform import PlatformFacts, platform_checklist
from runtime.vmm.snp_cpuid import SNP_CPUID_COUNT_MAX, CpuidEntry, HostCpu, cpuid_page
from runtime.vmm.snp_launch import SnpLaunch
from toolchain.errors import EvidenceError, InputError, PlatformError
from toolchain.image.keep_build import KeepBuild, build_keep
from toolchain.sign.references import verify_envelope
from toolchain.snp import certs
from toolchain.snp.digest import PAGE_SIZE, PageType
from toolchain.snp.report import AttestationReport
from toolchain.snp.tcb import Product
from toolchain.verify import VerificationPolicy, Verifier

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
#: (report, the chip's VCEK as AMD's KDS served it, the generation)
REAL = {
    "genoa": ("microsoft-tee-av/genoa_attestation_report.bin", "microsoft-tee-av/genoa_vcek.pem"),
    "turin": ("microsoft-tee-av/turin_attestation_report.bin", "microsoft-tee-av/turin_vcek.pem"),
    "milan": ("enarx-steward/report.bin", "enarx-steward/vcek.der"),
}
#: The checks that bind the VCEK to the report and to AMD's pinned chain.
BINDING = ("report.signature", "report.chip-id", "report.reported-tcb", "vcek.signed-by-ask")


@pytest.fixture(scope="module")
def hello_build(tmp_path_factory: pytest.TempPathFactory) -> KeepBuild:
    return build_keep(HELLO, tmp_path_factory.mktemp("hello"), vcpu_counts=(1,))


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a test touched the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _report(name: str) -> bytes:
    return (SNP_REPORTS / REAL[name][0]).read_bytes()


def _snp_attestation(
    build: KeepBuild, firmware: SnpFirmware, nonce: bytes, vcpus: int = 1
) -> LiveAttestation:
    envelope, trust = development_references(build, "snp", vcpus)
    checks, references = verify_envelope(envelope, trust)
    assert references is not None, checks.render()
    return LiveAttestation(
        nonce=nonce,
        firmware=firmware,
        references=references,
        reference_checks=checks,
        verifier=Verifier.amd(),
        policy=VerificationPolicy(),
        backend="snp",
        vcpus=vcpus,
    )


# ---- 1. the operator's VCEK, AMD's pinned ASK and ARK --------------------------------------------


@pytest.mark.parametrize("name", list(REAL))
def test_the_operators_vcek_and_the_pinned_chain_verify_a_real_report(
    name: str, hello_build: KeepBuild
) -> None:
    """The runner's verification of a real AMD report with the VCEK file: signature, chip ID and
    reported TCB against the VCEK, the VCEK against AMD's pinned ASK of the host's generation.
    (MEASUREMENT and REPORT_DATA are those of someone else's guest: those checks must fail.)"""
    product = Product.from_name(name)
    firmware = SnpFirmware(load_vcek(SNP_REPORTS / REAL[name][1], product))
    report = AttestationReport.parse(_report(name))
    chain = firmware.certificate_chain(report)
    assert not chain.simulated
    assert chain.ark == certs.amd_certificate(product, "ark").public_bytes(Encoding.DER)
    assert chain.ask == certs.amd_certificate(product, "ask").public_bytes(Encoding.DER)
    attestation = _snp_attestation(hello_build, firmware, report.report_data)
    with pytest.raises(EvidenceError):
        attestation(_report(name))
    assert attestation.checklist is not None
    checks = {check.name: check.ok for check in attestation.checklist.checks}
    assert all(checks[binding] for binding in BINDING), attestation.checklist.render()
    assert checks["ask.signed-by-ark"]
    assert checks["product"]
    assert attestation.chain == chain


def test_a_vcek_of_another_chip_fails_the_reports_chip_and_tcb_checks(
    hello_build: KeepBuild,
) -> None:
    """Another Milan chip's VCEK (genuine, AMD-signed) for the enarx report: the verifier's
    chip-ID and reported-TCB checks refuse it (the runner reuses them)."""
    firmware = SnpFirmware(load_vcek(SNP_REPORTS / "trustee" / "test-vcek.der", Product.MILAN))
    report = AttestationReport.parse(_report("milan"))
    attestation = _snp_attestation(hello_build, firmware, report.report_data)
    with pytest.raises(EvidenceError):
        attestation(_report("milan"))
    assert attestation.checklist is not None
    failed = {check.name for check in attestation.checklist.failures}
    assert "report.chip-id" in failed
    assert "report.signature" in failed
    assert not attestation.accepted


def test_a_vcek_of_another_generation_is_refused_naming_both() -> None:
    with pytest.raises(PlatformError) as info:
        load_vcek(SNP_REPORTS / REAL["genoa"][1], Product.MILAN)
    assert "is a VCEK for Genoa" in info.value.message
    assert "this host is Milan" in info.value.message


def test_a_vcek_not_signed_by_amds_pinned_ask_is_refused(tmp_path: Path) -> None:
    simulated = tmp_path / "sim-vcek.der"
    simulated.write_bytes(SimFirmware().certificate_chain().vcek)
    named = certs.parse_vcek_extensions(certs.load_certificate(simulated.read_bytes()))
    product = Product.from_name(named.product_name or "milan")
    with pytest.raises(PlatformError, match=f"not signed by AMD's pinned {product.value} ASK"):
        load_vcek(simulated, product)


def test_a_file_with_an_intermediate_that_is_not_the_pinned_one_is_refused(
    tmp_path: Path,
) -> None:
    """AMD's own, revoked Genoa ASK beside the VCEK: the chain is the package's, not the file's."""
    bundle = tmp_path / "vcek-and-ask.pem"
    bundle.write_bytes(
        (SNP_REPORTS / REAL["genoa"][1]).read_bytes()
        + (SNP_REPORTS / "enarx-steward" / "genoa_ask_REVOKED_serial_0x20001.pem").read_bytes()
    )
    with pytest.raises(PlatformError, match="carries a intermediate that is not AMD's pinned"):
        load_vcek(bundle, Product.GENOA)


def test_without_a_vcek_the_report_names_its_kds_url_and_is_never_fetched(
    hello_build: KeepBuild,
) -> None:
    report = AttestationReport.parse(_report("genoa"))
    tcb = report.reported_tcb
    url = (
        f"https://kdsintf.amd.com/vcek/v1/Genoa/{report.chip_id.hex()}?blSPL={tcb.bootloader:02d}"
        f"&teeSPL={tcb.tee:02d}&snpSPL={tcb.snp:02d}&ucodeSPL={tcb.microcode:02d}"
    )
    firmware = SnpFirmware(product=Product.GENOA)
    attestation = _snp_attestation(hello_build, firmware, report.report_data)
    with pytest.raises(PlatformError) as info:
        attestation(_report("genoa"))
    assert info.value.message == VCEK_MISSING
    assert f"({url})" in (info.value.hint or "")
    assert "snphost fetch vcek der DIR" in (info.value.hint or "")
    assert attestation.error is info.value
    assert not attestation.accepted
    # The runner ends the run with it (exit 3, the hint printed), not with a bare verdict.
    with pytest.raises(PlatformError) as ended:
        _require_attested(attestation, None, info.value, _Log(RunOptions(app=HELLO)))
    assert ended.value is info.value


def test_the_vcek_option_is_for_snp_only_and_the_variable_is_its_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = tmp_path / "vcek.der"
    monkeypatch.setenv(VCEK_ENV, str(tmp_path / "from-env.der"))
    assert _vcek(RunOptions(app=HELLO, vcek=given), "snp") == given
    assert _vcek(RunOptions(app=HELLO), "snp") == tmp_path / "from-env.der"
    assert _vcek(RunOptions(app=HELLO), "kvm") is None
    with pytest.raises(InputError, match="--vcek is for --backend snp, not kvm"):
        _vcek(RunOptions(app=HELLO, vcek=given), "kvm")
    monkeypatch.delenv(VCEK_ENV)
    assert _vcek(RunOptions(app=HELLO), "snp") is None


def test_the_backend_picks_the_chain_by_the_hosts_generation(tmp_path: Path) -> None:
    backend = SnpBackend(system=FakeKvmSnp())  # the fake answers as a Genoa host
    firmware = backend.firmware(SNP_REPORTS / REAL["genoa"][1])
    assert isinstance(firmware, SnpFirmware)
    assert firmware.product is Product.GENOA
    with pytest.raises(PlatformError, match="this host is Genoa"):
        backend.firmware(SNP_REPORTS / REAL["milan"][1])
    intel = [replace(e, eax=0x000A_06A1) if e.function == 1 else e for e in GENOA_CPUID]
    with pytest.raises(PlatformError, match="not an SEV-SNP EPYC"):
        SnpBackend(system=FakeKvmSnp(cpuid=intel)).firmware(None)


# ---- 2. the witness on SNP: the reports the keep hands over --------------------------------------


class _SimChainSnp(SnpFirmware):
    """The snp firmware's witness rules (the runner sees no request) with the simulated chain,
    so that a report signed by the simulated PSP's key can stand in for the AMD-SP's."""

    simulated = True

    def certificate_chain(self, report: AttestationReport | None = None) -> CertificateChain:
        return SimFirmware().certificate_chain()


class _Keep:
    """Plays the microkernel on the fake: hands ``count`` reports over with ATTEST, each signed
    (simulated key) over the digest the fake's firmware computed and the run's REPORT_DATA."""

    def __init__(self, fake: FakeKvmSnp, count: int) -> None:
        self.fake, self.count = fake, count
        self.psp = SimFirmware()

    def __call__(self, vm: SnpLaunch, launch: Launch) -> int | None:
        fake = self.fake

        class _Psp(SimFirmware):
            @property
            def measurement(self) -> bytes:
                return fake.measurement

        psp = _Psp()
        psp._policy = vm.plan.guest_policy  # as LAUNCH_START gave it to the firmware
        for _ in range(self.count):
            launch.verified(psp._signed_report(launch.report_data, 0))
        return 0


def _run_snp(monkeypatch: pytest.MonkeyPatch, count: int) -> int:
    from keep.cli import main

    fake = FakeKvmSnp()
    backend = SnpBackend(system=fake, vcpu_setup=fake.vcpu_setup, run_vcpus=_Keep(fake, count))
    monkeypatch.setattr(SnpBackend, "unavailable", lambda self: None)
    monkeypatch.setattr(SnpBackend, "firmware", lambda self, vcek=None: _SimChainSnp())
    monkeypatch.setitem(BACKENDS, "snp", backend)
    return main(["run", "--dev", "--backend", "snp", str(HELLO)])


def test_one_report_handed_over_and_verified_is_what_the_runner_witnesses_on_snp(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    assert _run_snp(monkeypatch, 1) == 0
    err = capfd.readouterr().err
    assert "✔ report.signature" in err


@pytest.mark.parametrize("count", [0, 2])
def test_a_keep_that_hands_over_zero_or_two_reports_fails_the_run(
    count: int, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    assert _run_snp(monkeypatch, count) == 1
    err = capfd.readouterr().err
    if count == 0:
        assert "witnessed: the reports the keep handed over (ATTEST)" in err
        assert (
            "✗ attestation.requested: expected the keep hands over its attestation report "
            "(ATTEST) before it runs anything, found no report handed over" in err
        )
    else:
        assert "attestation.once" in err
        assert "request number 2" in err


def test_on_snp_produced_means_signed_under_the_amd_chain(hello_build: KeepBuild) -> None:
    """The runner cannot count what KVM served: a handed-over report counts as produced only when
    its signature verified under the chain; a forged one is requested but not produced."""
    firmware = _SimChainSnp(product=Product.GENOA)
    nonce = fresh_nonce()
    attestation = _snp_attestation(hello_build, firmware, nonce)
    attestation.verifier = Verifier(
        Verifier.amd().roots.with_extra(
            certs.load_certificate(firmware.certificate_chain().ark), label="simulated"
        )
    )
    psp = SimFirmware()
    forged = bytearray(psp._signed_report(nonce, 0))
    forged[0x90] ^= 1  # MEASUREMENT, after the signature was made
    with pytest.raises(EvidenceError):
        attestation(bytes(forged))
    requested, produced, why = attestation.witnessed
    assert (requested, produced) == (1, 0)
    assert why is not None
    assert why.startswith("report.signature")
    verdict = attestation.verdict("the keep ended")
    assert [(c.name, c.ok) for c in verdict.checks][:2] == [
        ("attestation.requested", True),
        ("attestation.produced", False),
    ]
    assert "witnessed: the reports the keep handed over" in verdict.title


def test_on_the_simulated_platform_the_witness_still_counts_requests(
    hello_build: KeepBuild,
) -> None:
    """A report handed to the verifier that the firmware never produced is not witnessed there."""
    firmware = SimFirmware()
    attestation = _snp_attestation(hello_build, firmware, fresh_nonce())
    attestation.calls = 1
    assert attestation.witnessed == (0, 0, None)
    assert "witnessed: the report requests the runner's firmware served" in (
        attestation.verdict("x").title
    )


# ---- 3. application processors -------------------------------------------------------------------


class _Loop:
    def __init__(self) -> None:
        self.vcpus = 0

    def __call__(self, vm: SnpLaunch, launch: Launch) -> int | None:
        self.vcpus = len(vm.vcpus)
        return 0


@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_vcpus_n_launches_n_vmsas_in_order_and_gives_the_plans_digest_for_n(
    vcpus: int, hello_build: KeepBuild
) -> None:
    fake, loop = FakeKvmSnp(), _Loop()
    backend = SnpBackend(system=fake, vcpu_setup=fake.vcpu_setup, run_vcpus=loop)
    ended = backend.run(_launch(hello_build, vcpus))
    plan = snp_plan(hello_build)
    # Every vCPU created (KVM builds each VMSA at LAUNCH_FINISH), boot CPU first, APs parked.
    assert fake.vcpu_states == list(plan.vcpu_states(vcpus))
    assert fake.vcpu_states[1:] == [plan.ap_vcpu] * (vcpus - 1)
    names = [c.name for c in fake.calls if c.name != "close"]
    creates = [c for c in fake.calls if c.name == "create vcpus"]
    assert [c.args["count"] for c in creates] == [vcpus]
    last_update = max(i for i, name in enumerate(names) if name == "SNP_LAUNCH_UPDATE")
    assert last_update < names.index("create vcpus") < names.index("SNP_LAUNCH_FINISH")
    assert names[-1] == "SNP_LAUNCH_FINISH"
    assert loop.vcpus == vcpus
    assert ended.measurement == fake.measurement == plan.launch_digest(vcpus)
    envelope, trust = development_references(hello_build, "snp", vcpus)
    _, references = verify_envelope(envelope, trust)
    assert references is not None
    assert {c.launch_digest for c in references.predicate.configs} == {plan.launch_digest(vcpus)}
    assert {c.vcpus for c in references.predicate.configs} == {vcpus}
    if vcpus > 1:
        assert plan.launch_digest(vcpus) != plan.launch_digest(1)


# ---- 4. the C-bit and the CPUID page -------------------------------------------------------------


def _with_c_bit(c_bit: int) -> list[CpuidEntry]:
    return [
        replace(e, ebx=(e.ebx & ~0x3F) | c_bit) if e.function == 0x8000_001F else e
        for e in GENOA_CPUID
    ]


@pytest.mark.parametrize(("c_bit", "found"), [(47, "47"), (0, "None")])
def test_a_plan_for_another_c_bit_is_refused_naming_both(
    c_bit: int, found: str, hello_build: KeepBuild
) -> None:
    fake = FakeKvmSnp(cpuid=_with_c_bit(c_bit))
    with pytest.raises(PlatformError) as info:
        SnpLaunch(snp_plan(hello_build), system=fake, vcpu_setup=fake.vcpu_setup).launch()
    assert info.value.message == (
        "the plan is laid out for C-bit 51, but this host's C-bit (CPUID 0x8000001F EBX[5:0]) "
        f"is {found}"
    )
    assert "KVM_CREATE_VM" not in fake.names()
    assert fake.open_fds == {}


def test_the_cpuid_page_is_the_hosts_supported_cpuid_and_leaves_the_digest_alone(
    hello_build: KeepBuild,
) -> None:
    fake = FakeKvmSnp()
    plan = snp_plan(hello_build)
    with SnpLaunch(plan, system=fake, vcpu_setup=fake.vcpu_setup) as launch:
        assert launch.launch() == plan.launch_digest(1) == fake.measurement
    page_region = next(r for r in plan.regions if r.page_type is PageType.CPUID)
    page = fake.launched[page_region.gpa // PAGE_SIZE]
    assert page == cpuid_page(HostCpu(GENOA_CPUID))
    count = struct.unpack_from("<I", page)[0]
    assert count == len(GENOA_CPUID)
    functions = [struct.unpack_from("<IIQQIIIIQ", page, 16 + 48 * i) for i in range(count)]
    by_leaf = {(f[0], f[1]): f for f in functions}
    assert by_leaf[(0x8000_001F, 0)][5] & 0x3F == 51  # the guest reads its C-bit here
    # 0xD subleaves 0 and 1: index-significant, stated for XCR0 = 1 with the x87 area's size.
    assert by_leaf[(0xD, 0)][2:6] == (1, 0, 0x2E7, 0x240)
    assert by_leaf[(0xD, 1)][2:6] == (1, 0, 0xF, 0x240)
    assert page[16 + 48 * count :] == bytes(PAGE_SIZE - 16 - 48 * count)


def test_the_cpuid_page_layout_by_hand() -> None:
    """struct snp_cpuid_table (Linux 6.12 arch/x86/include/asm/sev.h), one entry written out."""
    entry = CpuidEntry(0x7, 0, 1, 0x11, 0x22, 0x33, 0x44)
    page = cpuid_page(HostCpu((entry,)))
    assert page[:16] == bytes.fromhex("01000000000000000000000000000000")
    assert page[16:64] == bytes.fromhex(
        "07000000" "00000000" "0000000000000000" "0000000000000000"
        "11000000" "22000000" "33000000" "44000000" "0000000000000000"
    )  # fmt: skip
    too_many = HostCpu(tuple(replace(entry, index=i) for i in range(SNP_CPUID_COUNT_MAX + 1)))
    with pytest.raises(PlatformError, match="65 entries; an SNP CPUID page holds 64"):
        cpuid_page(too_many)


def test_keep_platform_prints_the_c_bit() -> None:
    facts = PlatformFacts(c_bit=51, host_cpu=HostCpu(GENOA_CPUID).describe())
    text = platform_checklist(facts).render(verdict=False)
    assert "✔ sev-snp C-bit: 51 (CPUID 0x8000001F EBX[5:0])" in text
    assert "family 0x19 model 0x11 stepping 1 (Genoa), C-bit 51" in text
    unknown = platform_checklist(PlatformFacts()).render(verdict=False)
    assert "- sev-snp C-bit" in unknown
