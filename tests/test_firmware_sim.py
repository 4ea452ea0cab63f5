"""The simulated SNP firmware: its chain, the launch state machine, the digest and the reports."""

from __future__ import annotations

import stat
import struct

import pytest
from cryptography import x509

from runtime.firmware import sim
from runtime.firmware.interface import Firmware, PlanOnly, measured_launch
from runtime.firmware.sim import SimFirmware, sim_identity, sim_identity_dir, sim_root_certificate
from runtime.firmware.snp import SnpFirmware
from runtime.vmm import miniguest
from toolchain.errors import EvidenceError, InputError, PlatformError
from toolchain.measure.plan import LaunchPlan
from toolchain.snp.certs import amd_certificate, parse_vcek_extensions
from toolchain.snp.digest import PAGE_SIZE, VMSA_GPA, LaunchDigest, PageType
from toolchain.snp.report import AttestationReport
from toolchain.snp.tcb import Product
from toolchain.snp.vmsa import vmsa_page
from toolchain.verify import Verifier
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.roots import TrustedRoots

NONCE = bytes(range(64))


def _chain() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    chain = sim_identity().chain()
    ark, ask, vcek = (x509.load_der_x509_certificate(c) for c in (chain.ark, chain.ask, chain.vcek))
    return ark, ask, vcek


def _launched(plan: LaunchPlan | None = None, vcpus: int = 1) -> SimFirmware:
    firmware = SimFirmware()
    measured_launch(
        firmware, plan or miniguest.mini_plan(miniguest.hello_guest()), vcpus, PlanOnly()
    )
    return firmware


def test_the_sim_and_the_placeholder_follow_the_protocol() -> None:
    assert isinstance(SimFirmware(), Firmware)
    assert Firmware.__name__ == "Firmware"


def test_the_chain_is_kept_private_and_reused() -> None:
    directory = sim_identity_dir()
    first = sim_identity()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("ark.key", "ask.key", "vcek.key", "chip_id"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    sim._cached.clear()
    again = sim_identity()
    assert again.ark == first.ark
    assert again.chip_id == first.chip_id
    assert sim_root_certificate() == first.ark


def test_the_chain_looks_like_amds() -> None:
    ark, ask, vcek = _chain()
    assert ark.subject == ark.issuer
    assert ask.issuer == ark.subject
    assert vcek.issuer == ask.subject
    for cert in (ark, ask):
        assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS
    extensions = parse_vcek_extensions(vcek)
    assert extensions.product_name == "Genoa"
    assert extensions.hwid == sim_identity().chip_id
    assert extensions.tcb(turin=False) == sim.SIM_TCB
    # Never confusable with AMD's real root.
    assert ark.subject != amd_certificate(Product.GENOA, "ark").subject
    assert "NOT AMD" in ark.subject.rfc4514_string()


def test_report_verifies_only_when_the_sim_root_is_trusted() -> None:
    firmware = _launched()
    report = AttestationReport.parse(firmware.guest_request_report(NONCE, 0))
    ark, ask, vcek = _chain()
    policy = VerificationPolicy(
        report_data=NONCE, allowed_measurements=frozenset({firmware.measurement}), strict=True
    )
    trusted = TrustedRoots.amd().with_extra(ark, label="simulated (test)")
    checks = Verifier(trusted).verify_report(report, vcek, ask=ask, ark=ark, policy=policy)
    assert checks.ok, [c.line() for c in checks.failures]
    untrusted = Verifier.amd().verify_report(report, vcek, ask=ask, ark=ark, policy=policy)
    assert not untrusted.ok
    assert report.version == 3
    assert report.vmpl == 0
    assert report.policy.value == miniguest.GUEST_POLICY


def test_report_fields() -> None:
    firmware = _launched()
    first = AttestationReport.parse(firmware.guest_request_report(NONCE, 2))
    second = AttestationReport.parse(firmware.guest_request_report(bytes(64), 0))
    assert first.vmpl == 2
    assert first.report_id == second.report_id  # one guest context, one REPORT_ID
    assert first.chip_id == sim_identity().chip_id
    assert (first.cpuid_fam_id, first.cpuid_mod_id) == (0x19, 0x11)
    assert first.signature_r != second.signature_r
    assert _launched().guest_request_report(NONCE, 0)[0x140:0x160] != first.report_id


def test_a_launch_of_the_plan_matches_the_plans_own_digest() -> None:
    plan = miniguest.mini_plan(miniguest.hello_guest())
    assert _launched(plan, vcpus=2).measurement == plan.launch_digest(2)
    assert _launched(plan, vcpus=2).measurement != plan.launch_digest(1)


def test_digest_is_the_page_by_page_chain() -> None:
    firmware = SimFirmware()
    firmware.launch_start(0x30000)
    page = bytes(range(256)) * 16
    assert firmware.launch_update(PageType.NORMAL, 0x1000, page) == page
    assert firmware.launch_update(PageType.ZERO, 0x2000, b"\xff" * PAGE_SIZE) == bytes(PAGE_SIZE)
    secrets_page = firmware.launch_update(PageType.SECRETS, 0x3000, bytes(PAGE_SIZE))
    assert struct.unpack_from("<I", secrets_page)[0] == 3
    assert any(secrets_page[0x20:0xA0])
    cpuid = b"\x01" * PAGE_SIZE
    assert firmware.launch_update(PageType.CPUID, 0x4000, cpuid) == cpuid
    state = miniguest.entry_state(ring=0, rip=0x100000)
    firmware.launch_vmsa(state)
    firmware.launch_finish()
    expected = LaunchDigest()
    expected.update(PageType.NORMAL, 0x1000, page)
    expected.update(PageType.ZERO, 0x2000, size=PAGE_SIZE)
    expected.update(PageType.SECRETS, 0x3000, size=PAGE_SIZE)
    expected.update(PageType.CPUID, 0x4000, size=PAGE_SIZE)
    expected.update(PageType.VMSA, VMSA_GPA, vmsa_page(state, sev_features=1))
    assert firmware.measurement == expected.digest()


def test_launch_commands_out_of_order_are_refused() -> None:
    firmware = SimFirmware()
    with pytest.raises(InputError, match="LAUNCH_UPDATE is not allowed"):
        firmware.launch_update(PageType.NORMAL, 0, bytes(PAGE_SIZE))
    with pytest.raises(InputError, match="MSG_REPORT_REQ"):
        firmware.guest_request_report(NONCE, 0)
    firmware.launch_start(0x30000)
    with pytest.raises(InputError, match="LAUNCH_FINISH"):
        firmware.launch_finish()
    firmware.launch_update(PageType.NORMAL, 0x2000, bytes(PAGE_SIZE))
    with pytest.raises(InputError, match="already launched or is out of order"):
        firmware.launch_update(PageType.NORMAL, 0x2000, bytes(PAGE_SIZE))
    with pytest.raises(InputError, match="VMSA"):
        firmware.launch_update(PageType.VMSA, 0x3000, bytes(PAGE_SIZE))
    with pytest.raises(InputError, match="whole pages"):
        firmware.launch_update(PageType.NORMAL, 0x3000, bytes(100))
    firmware.launch_vmsa(miniguest.entry_state(ring=0, rip=0))
    with pytest.raises(InputError, match="LAUNCH_UPDATE is not allowed"):
        firmware.launch_update(PageType.NORMAL, 0x9000, bytes(PAGE_SIZE))
    firmware.launch_finish()
    with pytest.raises(InputError, match="LAUNCH_START"):
        firmware.launch_start(0x30000)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: f.launch_start(0), "bit 17"),
        (lambda f: f.launch_start(1 << 64), "64-bit"),
        (lambda f: f.launch_start(0x30000, sev_features=0), "SNPActive"),
    ],
)
def test_bad_launch_start(call: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        call(SimFirmware())  # type: ignore[operator]


def test_bad_report_requests() -> None:
    firmware = _launched()
    with pytest.raises(InputError, match="64 bytes"):
        firmware.guest_request_report(b"short", 0)
    with pytest.raises(InputError, match="VMPL"):
        firmware.guest_request_report(NONCE, 4)


def _id_block(digest: bytes, policy: int = miniguest.GUEST_POLICY) -> bytes:
    return struct.pack("<48s16s16sIIQ", digest, b"F" * 16, b"I" * 16, 1, 5, policy)


def test_id_block_is_checked_and_reported() -> None:
    plan = miniguest.mini_plan(miniguest.hello_guest())
    firmware = SimFirmware()
    measured_launch(
        firmware,
        plan,
        1,
        PlanOnly(),
        id_block=_id_block(plan.launch_digest(1)),
        host_data=b"H" * 32,
    )
    report = AttestationReport.parse(firmware.guest_request_report(NONCE, 0))
    assert (report.family_id, report.image_id, report.guest_svn) == (b"F" * 16, b"I" * 16, 5)
    assert report.host_data == b"H" * 32
    with pytest.raises(EvidenceError, match=r"ID_BLOCK\.LD"):
        measured_launch(SimFirmware(), plan, 1, PlanOnly(), id_block=_id_block(bytes(48)))
    id_block = _id_block(plan.launch_digest(1), 0x30001)
    with pytest.raises(EvidenceError, match=r"ID_BLOCK\.POLICY"):
        measured_launch(SimFirmware(), plan, 1, PlanOnly(), id_block=id_block)
    with pytest.raises(InputError, match="96 bytes"):
        measured_launch(SimFirmware(), plan, 1, PlanOnly(), id_block=b"short")
    with pytest.raises(InputError, match="HOST_DATA"):
        measured_launch(SimFirmware(), plan, 1, PlanOnly(), host_data=b"short")


def test_a_damaged_state_directory_is_a_platform_error() -> None:
    directory = sim_identity_dir()
    original = (directory / "vcek.key").read_bytes()
    try:
        (directory / "vcek.key").write_bytes(b"garbage")
        sim._cached.clear()
        with pytest.raises(PlatformError, match="damaged"):
            sim_identity()
    finally:
        (directory / "vcek.key").write_bytes(original)
        sim._cached.clear()


def test_the_real_psp_is_a_marked_placeholder() -> None:
    with pytest.raises(PlatformError, match="not implemented"):
        SnpFirmware()
