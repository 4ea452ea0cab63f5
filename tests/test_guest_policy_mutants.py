"""Tests that kill the mutants of ``toolchain.snp.policy`` its suite let survive
(tests/MUTATION.md): every GUEST_POLICY flag at its ABI bit, read the same way by the property,
``flags()`` and ``build``; the ABI version bytes; the 64-bit bound; the ABI's anomalies. The real
reports in tests/data decode to what their policy bits say."""

from __future__ import annotations

import pytest
from testdata import DATA

from toolchain.errors import InputError
from toolchain.snp.policy import POLICY_FLAGS, GuestPolicy
from toolchain.snp.report import AttestationReport

# SEV-SNP ABI specification, GUEST_POLICY: bits 15:8 ABI major, 7:0 ABI minor, then one bit each.
ABI_BITS = {
    "smt": 16,
    "reserved_must_be_one": 17,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}


def test_every_flag_is_at_its_abi_bit() -> None:
    assert {name: bit for bit, name in POLICY_FLAGS.items()} == ABI_BITS


@pytest.mark.parametrize("name", [n for n in ABI_BITS if n != "reserved_must_be_one"])
def test_each_flag_alone_is_read_by_property_flags_and_build(name: str) -> None:
    alone = GuestPolicy((1 << 17) | (1 << ABI_BITS[name]))
    assert getattr(alone, name) is True
    assert alone.flags() == {n: n in (name, "reserved_must_be_one") for n in ABI_BITS}
    for other in ABI_BITS:
        if other not in (name, "reserved_must_be_one"):
            assert getattr(alone, other) is False, other
    off = {n: False for n in ABI_BITS if n != "reserved_must_be_one"}
    assert GuestPolicy.build(**{**off, name: True}) == alone
    assert alone.anomalies() == []


def test_abi_version_bytes_and_bounds() -> None:
    built = GuestPolicy.build(abi_major=0xFF, abi_minor=0xFE, smt=False)
    assert built.value == (1 << 17) | 0xFFFE
    assert (built.abi_major, built.abi_minor) == (0xFF, 0xFE)
    assert GuestPolicy.build(abi_major=0, abi_minor=0).value == (1 << 17) | (1 << 16)
    assert GuestPolicy.build(abi_major=0xFE, abi_minor=0xFF, smt=False).value == (1 << 17) | 0xFEFF
    for major, minor in ((0x100, 0), (0, 0x100), (-1, 0), (0, -1)):
        with pytest.raises(InputError, match=r"ABI version .* out of range"):
            GuestPolicy.build(abi_major=major, abi_minor=minor)
    assert GuestPolicy().value == 1 << 17
    assert GuestPolicy((1 << 64) - 1).value == (1 << 64) - 1
    for bad in (1 << 64, -1, "0x30000"):
        with pytest.raises(InputError, match="is not a 64-bit value"):
            GuestPolicy(bad)  # type: ignore[arg-type]


def test_anomalies_are_bit_17_clear_and_bits_26_to_63() -> None:
    assert GuestPolicy((1 << 17) | 0x3FFFFFF).anomalies() == []
    assert GuestPolicy(0).anomalies() == ["guest policy bit 17 (reserved, must be one) is zero"]
    assert GuestPolicy((1 << 17) | (1 << 26)).anomalies() == [
        "guest policy reserved bits set: 0x0000000004000000"
    ]
    assert GuestPolicy((1 << 17) | (1 << 63)).anomalies() == [
        "guest policy reserved bits set: 0x8000000000000000"
    ]


def test_real_reports_decode_their_policy() -> None:
    report = AttestationReport.parse(
        (DATA / "vectors/snp-reports/enarx-steward/report.bin").read_bytes()
    )
    policy = report.policy
    assert policy.flags() == {name: bool(policy.value >> bit & 1) for name, bit in ABI_BITS.items()}
    assert policy.debug is bool(policy.value >> 19 & 1)
    assert str(policy).startswith(f"0x{policy.value:x} (ABI {policy.value >> 8 & 0xFF}.")


def test_build_defaults_are_smt_allowed_and_nothing_else() -> None:
    # The defaults: ABI 0.0, SMT allowed, bit 17 set, every other flag clear.
    assert GuestPolicy.build() == GuestPolicy(0x30000)
    assert GuestPolicy.build(smt=False) == GuestPolicy(0x20000)


def test_the_policy_text_names_only_the_flags_set() -> None:
    assert str(GuestPolicy(0x30000)) == "0x30000 (ABI 0.0; smt)"
    assert str(GuestPolicy(0x20000)) == "0x20000 (ABI 0.0; -)"
    assert str(GuestPolicy(0x80000 | 0x20000 | 0x0102)) == "0xa0102 (ABI 1.2; debug)"
