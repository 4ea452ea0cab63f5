"""The attestation report format: parsing every real sample, exact round trips, field decoding."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keep.cli import main
from toolchain.errors import InputError, KeepError
from toolchain.snp.policy import GuestPolicy
from toolchain.snp.report import (
    REPORT_SIZE,
    AttestationReport,
    KeyInfo,
    PlatformInfo,
    TcbVersion,
    load_report,
)
from toolchain.snp.tcb import Product

RAW_SAMPLES = [
    "enarx-steward/report.bin",
    "go-sev-guest/attestation.bin",
    "lit-sev-snp-utils/guest_report.bin",
    "microsoft-tee-av/genoa_attestation_report.bin",
    "microsoft-tee-av/turin_attestation_report.bin",
    "trustee/test-report.bin",
    "trustee/test-vlek-report.bin",
]


@pytest.fixture(scope="module")
def reports(data_dir: Path) -> Path:
    return data_dir / "vectors" / "snp-reports"


@pytest.mark.parametrize("name", RAW_SAMPLES)
def test_every_raw_sample_round_trips(reports: Path, name: str) -> None:
    data = (reports / name).read_bytes()
    report = AttestationReport.parse(data)
    assert report.to_bytes() == data
    assert report.signed_bytes() == data[:0x2A0]
    assert AttestationReport.parse(report.to_bytes()) == report
    assert_constructible(report, data)


def assert_constructible(report: AttestationReport, data: bytes) -> None:
    """``parse`` skips ``__init__``: what it builds must pass the constructor's validation and
    rebuild the same bytes from its fields alone (``replace`` runs ``__post_init__``)."""
    rebuilt = dataclasses.replace(report)
    assert rebuilt == report
    assert rebuilt._raw is None
    assert rebuilt.to_bytes() == data


def test_turin_v5_fields(reports: Path) -> None:
    report = AttestationReport.parse(
        (reports / "microsoft-tee-av/turin_attestation_report.bin").read_bytes()
    )
    assert report.version == 5
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (0x1A, 0x02, 1)
    assert report.cpuid_product is Product.TURIN
    assert report.turin_layout
    # README: TCB fmc1 bl1 tee1 snp4 uc81; mitigation vectors 0x3f; platform_info 0x65
    assert report.reported_tcb == TcbVersion(bootloader=1, tee=1, snp=4, microcode=81, fmc=1)
    assert report.launch_mit_vector == 0x3F
    assert report.current_mit_vector == 0x3F
    assert report.platform_info.value == 0x65
    assert report.platform_info.flags()["iommu_write_safe"]
    assert len(report.chip_id_meaningful()) == 8
    assert not any(report.chip_id[8:])
    assert report.anomalies() == []


def test_milan_v2_fields(reports: Path) -> None:
    report = AttestationReport.parse((reports / "go-sev-guest/attestation.bin").read_bytes())
    assert report.version == 2
    assert report.policy.value == 0xB0000
    assert report.policy.debug
    assert report.policy.smt
    assert not report.policy.migrate_ma
    assert report.report_data[:5] == bytes([1, 2, 3, 4, 5])
    assert not any(report.report_data[5:])
    assert report.reported_tcb == TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    assert (report.current_major, report.current_minor, report.current_build) == (1, 49, 3)
    assert report.cpuid_product is None  # v2 reports carry no CPUID
    assert report.key_info.signing_key_name == "VCEK"


def test_enarx_author_key_and_abi(reports: Path) -> None:
    report = AttestationReport.parse((reports / "enarx-steward/report.bin").read_bytes())
    assert report.policy.value == 0x30133
    assert (report.policy.abi_major, report.policy.abi_minor) == (1, 51)
    assert report.key_info.author_key_en
    assert any(report.id_key_digest)
    assert any(report.author_key_digest)
    assert report.guest_svn == 1


def test_vlek_report_key_info(reports: Path) -> None:
    report = AttestationReport.parse((reports / "trustee/test-vlek-report.bin").read_bytes())
    assert report.version == 3
    assert report.key_info.signing_key_name == "VLEK"
    assert report.vmpl == 1
    assert not any(report.chip_id)


def test_trustee_current_tcb_newer_than_reported(reports: Path) -> None:
    report = AttestationReport.parse((reports / "trustee/test-report.bin").read_bytes())
    assert report.current_tcb.microcode == 0xCE
    assert report.reported_tcb.microcode == 0x73
    assert report.guest_svn == 4


def test_hex_base64_and_offset_forms(reports: Path) -> None:
    raw = (reports / "trustee/test-report.bin").read_bytes()
    from_hex, how = load_report(raw.hex().upper().encode() + b"\n")
    assert (from_hex.to_bytes(), how) == (raw, "hex")
    from_b64, how = load_report(base64.b64encode(raw) + b"\n")
    assert (from_b64.to_bytes(), how) == (raw, "base64")
    embedded, how = load_report(b"\xaa" * 17 + raw + b"\xbb" * 3, offset=17)
    assert embedded.to_bytes() == raw
    with pytest.raises(InputError, match="offset"):
        load_report(raw, offset=1)


def test_virtee_hex_sample(reports: Path) -> None:
    report, how = load_report((reports / "virtee-sev/report_milan.hex").read_bytes())
    assert how == "hex"
    assert report.version == 2
    assert report.policy.value == 0x30000
    assert (report.current_major, report.current_minor, report.current_build) == (1, 52, 4)


def test_msg_report_rsp_is_recognised(reports: Path) -> None:
    data = (reports / "lit-sev-snp-utils/snp_report_msg_resp.bin").read_bytes()
    report, how = load_report(data)
    assert how == "MSG_REPORT_RSP at 0x20"
    assert report.to_bytes() == data[0x20 : 0x20 + REPORT_SIZE]
    # README: this report differs from guest_report.bin
    other = (reports / "lit-sev-snp-utils/guest_report.bin").read_bytes()
    assert report.to_bytes() != other


def test_truncated_and_padded_reports_are_unusable(reports: Path) -> None:
    corrupt = (reports / "lit-sev-snp-utils/guest_report_corrupt.bin").read_bytes()
    with pytest.raises(InputError, match="793 bytes"):
        load_report(corrupt)
    with pytest.raises(InputError, match="793"):
        AttestationReport.parse(corrupt)
    bad_sig = (reports / "lit-sev-snp-utils/guest_report_bad_sig.bin").read_bytes()
    with pytest.raises(InputError, match="1185 bytes"):
        load_report(bad_sig)
    # read at offset 0 it is a report that differs from guest_report.bin inside the signed part
    report, _ = load_report(bad_sig, offset=0)
    good = AttestationReport.parse((reports / "lit-sev-snp-utils/guest_report.bin").read_bytes())
    differing = [
        i for i, (a, b) in enumerate(zip(report.to_bytes(), good.to_bytes(), strict=True)) if a != b
    ]
    assert differing
    assert all(i < 0x2A0 for i in differing)


def test_constructed_report_round_trips_and_signs() -> None:
    tcb = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    report = AttestationReport(
        version=3,
        policy=GuestPolicy.build(abi_major=1, abi_minor=55, smt=False),
        reported_tcb=tcb,
        current_tcb=tcb,
        measurement=bytes(range(48)),
        chip_id=b"\x42" * 64,
        cpuid_fam_id=0x19,
        cpuid_mod_id=0x11,
        key_info=KeyInfo(0),
        platform_info=PlatformInfo(0b11),
    )
    data = report.to_bytes()
    assert len(data) == REPORT_SIZE
    assert AttestationReport.parse(data) == report
    signed = report.with_signature(12345, 67890)
    assert signed.signed_bytes() == report.signed_bytes()
    assert int.from_bytes(signed.to_bytes()[0x2A0:0x2E8], "little") == 12345
    assert int.from_bytes(signed.to_bytes()[0x2E8:0x330], "little") == 67890
    assert report.policy.abi_major == 1
    assert not report.policy.smt
    assert report.cpuid_product is Product.GENOA


def test_turin_tcb_layout_round_trip() -> None:
    tcb = TcbVersion(bootloader=1, tee=2, snp=3, microcode=4, fmc=5)
    assert tcb.to_bytes() == bytes([5, 1, 2, 3, 0, 0, 0, 4])
    assert TcbVersion.from_bytes(tcb.to_bytes(), turin=True) == tcb
    milan = TcbVersion(bootloader=1, tee=2, snp=3, microcode=4)
    assert milan.to_bytes() == bytes([1, 2, 0, 0, 0, 0, 3, 4])
    reserved = TcbVersion.from_bytes(bytes([1, 2, 9, 0, 0, 0, 3, 4]))
    assert reserved.reserved == 9 << 16
    assert reserved.to_bytes() == bytes([1, 2, 9, 0, 0, 0, 3, 4])
    assert milan.lower_components(TcbVersion(bootloader=2, tee=2, snp=3, microcode=4)) == [
        "bootloader"
    ]
    with pytest.raises(InputError):
        TcbVersion(bootloader=256)
    with pytest.raises(InputError):
        TcbVersion(reserved=1)  # byte 0 is not reserved


def test_tcb_fields_share_one_layout() -> None:
    turin = TcbVersion(fmc=1)
    with pytest.raises(InputError, match="layout"):
        AttestationReport(reported_tcb=turin)
    report = AttestationReport(
        version=5,
        cpuid_fam_id=0x1A,
        current_tcb=turin,
        reported_tcb=turin,
        committed_tcb=turin,
        launch_tcb=turin,
    )
    assert AttestationReport.parse(report.to_bytes()) == report


def test_invalid_field_values_are_input_errors() -> None:
    with pytest.raises(InputError):
        AttestationReport(measurement=b"short")
    with pytest.raises(InputError):
        AttestationReport(vmpl=1 << 32)
    with pytest.raises(InputError):
        GuestPolicy(1 << 64)


def test_anomalies_name_reserved_bits(reports: Path) -> None:
    report = AttestationReport.parse((reports / "trustee/test-report.bin").read_bytes())
    assert report.anomalies() == []
    odd = dataclasses.replace(
        report,
        policy=GuestPolicy(report.policy.value | 1 << 40),
        reserved_330=b"\x01" + bytes(REPORT_SIZE - 0x331),
        launch_mit_vector=1,
    )
    found = " | ".join(odd.anomalies())
    assert "guest policy reserved bits" in found
    assert "reserved_330" in found
    assert "launch_mit_vector" in found  # reserved before v5
    no_bit17 = dataclasses.replace(report, policy=GuestPolicy(report.policy.value & ~(1 << 17)))
    assert "bit 17" in " ".join(no_bit17.anomalies())


def test_report_show_table_and_json(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = reports / "microsoft-tee-av/turin_attestation_report.bin"
    assert main(["report", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NOT verified" in out
    assert ".fmc" in out
    assert "59790fb1c39f35c1" in out
    assert main(["report", "show", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fields"]["reported_tcb"]["value"]["fmc"] == 1
    assert doc["fields"]["version"]["value"] == 5
    assert doc["cpuid_product"] == "Turin"
    assert doc["verified"] is False


def test_report_show_unusable_input(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = reports / "lit-sev-snp-utils/guest_report_corrupt.bin"
    assert main(["report", "show", str(path)]) == 2
    assert "793 bytes" in capsys.readouterr().err
    assert main(["report", "show", "/nonexistent/report.bin"]) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_fuzz_parse_any_report_sized_bytes(data: bytes) -> None:
    report = AttestationReport.parse(data)
    assert report.to_bytes() == data
    assert_constructible(report, data)
    report.anomalies()
    json.dumps(report.fields())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.one_of(st.none(), st.integers(-5, 3000)))
def test_fuzz_load_report_raises_only_keep_errors(data: bytes, offset: int | None) -> None:
    with contextlib.suppress(KeepError):
        load_report(data, offset=offset)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF \n=+/", max_size=2500))
def test_fuzz_load_report_text_forms(text: str) -> None:
    with contextlib.suppress(KeepError):
        load_report(text.encode())
