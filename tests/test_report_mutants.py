"""Report-parsing rules that mutation testing found unpinned (tests/MUTATION.md).

Every test starts from a real report or message in tests/data and edits one field or byte.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.snp.report import (
    REPORT_SIZE,
    AttestationReport,
    KeyInfo,
    PlatformInfo,
    load_report,
)
from toolchain.snp.tcb import Product

SNP = Path("vectors") / "snp-reports"
MSG_RSP = "lit-sev-snp-utils/snp_report_msg_resp.bin"


@pytest.fixture(scope="module")
def reports(data_dir: Path) -> Path:
    return data_dir / SNP


def _milan(reports: Path) -> AttestationReport:
    return AttestationReport.parse((reports / "trustee/test-report.bin").read_bytes())


def test_key_info_reserved_bits_are_an_anomaly(reports: Path) -> None:
    report = _milan(reports)
    for bit in (5, 31):
        edited = dataclasses.replace(report, key_info=KeyInfo(report.key_info.value | 1 << bit))
        assert edited.anomalies() == [f"KEY_INFO reserved bits 0x{1 << bit:x}"]
    for bit in (0, 1):  # AUTHOR_KEY_EN, MASK_CHIP_ID: defined, not reserved
        edited = dataclasses.replace(report, key_info=KeyInfo(report.key_info.value | 1 << bit))
        assert edited.anomalies() == []


def test_signing_key_reserved_values_are_an_anomaly(reports: Path) -> None:
    report = _milan(reports)
    for value, expected in ((0, []), (1, []), (7, []), (2, ["SIGNING_KEY reserved value 2"])):
        edited = dataclasses.replace(report, key_info=KeyInfo(value << 2))
        assert edited.anomalies() == expected, value


def test_platform_info_unknown_bits_are_an_anomaly(reports: Path) -> None:
    report = _milan(reports)
    assert report.anomalies() == []
    for bit in (8, 63):
        edited = dataclasses.replace(
            report, platform_info=PlatformInfo(report.platform_info.value | 1 << bit)
        )
        assert edited.anomalies() == [f"PLATFORM_INFO unknown bits 0x{1 << bit:x}"]
    known = dataclasses.replace(report, platform_info=PlatformInfo(0xFF))  # bits 0-7 are named
    assert known.anomalies() == []


def test_cpuid_bytes_are_reserved_before_v3_only(reports: Path) -> None:
    report = _milan(reports)  # v2
    assert report.version == 2
    for field in ("cpuid_fam_id", "cpuid_mod_id", "cpuid_step"):
        edited = dataclasses.replace(report, **{field: 0x19})
        assert edited.anomalies() == [f"{field} (reserved in v2) is not zero"]
        assert dataclasses.replace(edited, version=3).anomalies() == []
    genoa = AttestationReport.parse(
        (reports / "microsoft-tee-av/genoa_attestation_report.bin").read_bytes()
    )
    assert (genoa.version, genoa.anomalies()) == (3, [])
    assert genoa.cpuid_product is Product.GENOA
    assert dataclasses.replace(genoa, version=2).cpuid_product is None


def test_mitigation_vectors_are_reserved_before_v5_only(reports: Path) -> None:
    turin = AttestationReport.parse(
        (reports / "microsoft-tee-av/turin_attestation_report.bin").read_bytes()
    )
    report = dataclasses.replace(turin, launch_mit_vector=1, current_mit_vector=2)
    assert report.anomalies() == []  # v5
    older = dataclasses.replace(report, version=4).anomalies()
    assert older == [
        "launch_mit_vector (reserved in v4) is not zero",
        "current_mit_vector (reserved in v4) is not zero",
    ]


def test_signature_bits_above_384_are_an_anomaly(reports: Path) -> None:
    report = _milan(reports)
    high = report.with_signature(report.signature_r | 1 << 384, report.signature_s)
    assert high.anomalies() == ["signature_r has bits set above the 48-byte P-384 value"]
    top = report.with_signature(report.signature_r, report.signature_s | 1 << 383)
    assert top.anomalies() == []


def test_msg_report_rsp_needs_status_zero_size_and_clear_reserved(reports: Path) -> None:
    data = (reports / MSG_RSP).read_bytes()
    assert load_report(data)[1] == "MSG_REPORT_RSP at 0x20"
    status, size = struct.unpack_from("<II", data, 0)
    assert (status, size) == (0, REPORT_SIZE)
    edits = {
        "status 0x16 (firmware error)": struct.pack("<I", 0x16) + data[4:],
        "size one byte short": data[:4] + struct.pack("<I", REPORT_SIZE - 1) + data[8:],
        "reserved byte set": data[:0x1F] + b"\x01" + data[0x20:],
    }
    for edited in edits.values():
        with pytest.raises(InputError, match="not an SEV-SNP attestation report"):
            load_report(edited)
    # one byte short of header + report is not a MSG_REPORT_RSP either
    with pytest.raises(InputError):
        load_report(data[: 0x20 + REPORT_SIZE - 1])
    exact = data[: 0x20 + REPORT_SIZE]
    assert load_report(exact)[1] == "MSG_REPORT_RSP at 0x20"


def test_offset_bounds(reports: Path) -> None:
    raw = (reports / "trustee/test-report.bin").read_bytes()
    padded = b"\xaa" * 5 + raw
    assert load_report(padded, offset=5)[0].to_bytes() == raw
    assert load_report(raw, offset=0)[0].to_bytes() == raw
    for offset in (-1, 6):
        with pytest.raises(InputError, match="offset"):
            load_report(padded, offset=offset)


def test_platform_info_and_key_info_bits_by_the_abi() -> None:
    """PLATFORM_INFO and KEY_INFO bit positions, as the SEV-SNP ABI's report defines them."""
    names = [
        "smt_enabled",
        "tsme_enabled",
        "ecc_enabled",
        "rapl_disabled",
        "ciphertext_hiding_enabled",
        "alias_check_complete",
        "iommu_write_safe",
        "tio_enabled",
    ]
    for bit, name in enumerate(names):
        flags = PlatformInfo(1 << bit).flags()
        assert [n for n, on in flags.items() if on] == [name]
        assert PlatformInfo(1 << bit).has(name)
    with pytest.raises(InputError, match="unknown platform flag"):
        PlatformInfo(0).has("smt")
    assert (KeyInfo(1).author_key_en, KeyInfo(1).mask_chip_id) == (True, False)
    assert (KeyInfo(2).author_key_en, KeyInfo(2).mask_chip_id) == (False, True)
    assert [KeyInfo(v << 2).signing_key_name for v in (0, 1, 7, 3)] == [
        "VCEK",
        "VLEK",
        "none",
        "reserved (3)",
    ]
    assert KeyInfo(0b11100).signing_key == 7


# (name, offset, size) as the ABI's ATTESTATION_REPORT lays them out, written out independently.
ABI_INTEGERS = [
    ("version", 0x000, 4),
    ("guest_svn", 0x004, 4),
    ("vmpl", 0x030, 4),
    ("signature_algo", 0x034, 4),
    ("cpuid_fam_id", 0x188, 1),
    ("cpuid_mod_id", 0x189, 1),
    ("cpuid_step", 0x18A, 1),
    ("current_build", 0x1E8, 1),
    ("current_minor", 0x1E9, 1),
    ("current_major", 0x1EA, 1),
    ("committed_build", 0x1EC, 1),
    ("committed_minor", 0x1ED, 1),
    ("committed_major", 0x1EE, 1),
    ("launch_mit_vector", 0x1F8, 8),
    ("current_mit_vector", 0x200, 8),
]
ABI_WRAPPED = [
    ("policy", 0x008, 8),
    ("platform_info", 0x040, 8),
    ("key_info", 0x048, 4),
]
ABI_TCBS = [("current_tcb", 0x038), ("reported_tcb", 0x180), ("committed_tcb", 0x1E0)]
ABI_BYTES = [
    ("family_id", 0x010, 16),
    ("image_id", 0x020, 16),
    ("report_data", 0x050, 64),
    ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32),
    ("id_key_digest", 0x0E0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
    ("chip_id", 0x1A0, 64),
]


@pytest.mark.parametrize("seed", range(4))
def test_every_field_is_read_at_its_abi_offset(seed: int) -> None:
    """Every byte distinct from its neighbours (random), so a shifted or widened field shows."""
    data = random.Random(seed).randbytes(REPORT_SIZE)
    report = AttestationReport.parse(data)
    for name, offset, size in ABI_INTEGERS:
        assert getattr(report, name) == int.from_bytes(data[offset : offset + size], "little"), name
    for name, offset, size in ABI_WRAPPED:
        value = getattr(report, name).value
        assert value == int.from_bytes(data[offset : offset + size], "little"), name
    for name, offset in ABI_TCBS:
        assert getattr(report, name).to_int() == int.from_bytes(data[offset : offset + 8], "little")
    for name, offset, size in ABI_BYTES:
        assert getattr(report, name) == data[offset : offset + size], name
    assert report.signature_r == int.from_bytes(data[0x2A0 : 0x2A0 + 72], "little")
    assert report.signature_s == int.from_bytes(data[0x2E8 : 0x2E8 + 72], "little")


def test_a_report_built_from_defaults_is_v3_ecdsa_policy_bit_17_and_otherwise_zero() -> None:
    expected = bytearray(REPORT_SIZE)
    expected[0] = 3  # version
    expected[0x0A] = 0x02  # POLICY bit 17, reserved, must be one
    expected[0x34] = 1  # SIGNATURE_ALGO: ECDSA P-384 with SHA-384
    assert AttestationReport().to_bytes() == bytes(expected)


def test_turins_tcb_layout_needs_v3_cpuid_family_1ah(reports: Path) -> None:
    data = bytearray((reports / "microsoft-tee-av/turin_attestation_report.bin").read_bytes())
    assert data[0x188] == 0x1A
    for version, turin in ((2, False), (3, True), (5, True)):
        data[0:4] = version.to_bytes(4, "little")
        assert AttestationReport.parse(bytes(data)).turin_layout is turin, version
    data[0x188] = 0x19  # Genoa's family with v5: not Turin's layout
    assert AttestationReport.parse(bytes(data)).turin_layout is False
