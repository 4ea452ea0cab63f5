"""Tests that kill the mutants of ``toolchain.snp.tcb`` its suite let survive (tests/MUTATION.md):
the CPUID family/model ranges of each generation at their edges, an unknown product name, the
reserved bytes of each layout round-tripping, the defaults and the component bounds."""

from __future__ import annotations

import pytest

from toolchain.errors import InputError
from toolchain.snp.tcb import Product, TcbVersion

MILAN, GENOA, TURIN = Product.MILAN, Product.GENOA, Product.TURIN


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [
        # Family 19h: Milan models 00-0Fh, Genoa 10-1Fh and A0-AFh (Bergamo, Siena).
        (0x19, 0x00, MILAN),
        (0x19, 0x0F, MILAN),
        (0x19, 0x10, GENOA),
        (0x19, 0x1F, GENOA),
        (0x19, 0x20, None),
        (0x19, 0x9F, None),
        (0x19, 0xA0, GENOA),
        (0x19, 0xAF, GENOA),
        (0x19, 0xB0, None),
        # Family 1Ah: Turin models 00-1Fh and 90-AFh.
        (0x1A, 0x00, TURIN),
        (0x1A, 0x1F, TURIN),
        (0x1A, 0x20, None),
        (0x1A, 0x8F, None),
        (0x1A, 0x90, TURIN),
        (0x1A, 0xAF, TURIN),
        (0x1A, 0xB0, None),
        (0x18, 0x00, None),
        (0x1B, 0x00, None),
    ],
)
def test_cpuid_ranges_at_their_edges(family: int, model: int, product: Product | None) -> None:
    assert Product.from_cpuid(family, model) is product


def test_an_unknown_product_name_is_input_error() -> None:
    assert Product.from_name(" Milan-B0 ") is MILAN
    for name in ("Naples", "", "Rome-B0"):
        with pytest.raises(InputError, match=r"unknown product .* \(known: milan, genoa, turin\)"):
            Product.from_name(name)


@pytest.mark.parametrize(("turin", "reserved_bytes"), [(False, (2, 3, 4, 5)), (True, (4, 5, 6))])
def test_each_reserved_byte_round_trips(turin: bool, reserved_bytes: tuple[int, ...]) -> None:
    for byte in reserved_bytes:
        value = 0xA5 << (8 * byte)
        tcb = TcbVersion.from_int(value, turin=turin)
        assert tcb.reserved == value
        assert tcb.to_int() == value
        assert all(level == 0 for level in tcb.components().values())


def test_defaults_are_zero_and_components_are_bytes() -> None:
    assert TcbVersion().to_int() == 0
    assert TcbVersion().components() == {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}
    assert TcbVersion(fmc=0).components() == {
        "fmc": 0, "bootloader": 0, "tee": 0, "snp": 0, "microcode": 0,
    }  # fmt: skip
    for name in ("bootloader", "tee", "snp", "microcode", "fmc"):
        assert TcbVersion(**{name: 0xFF}).components()[name] == 0xFF
        for bad in (-1, 0x100):
            with pytest.raises(InputError, match=f"TCB component {name} must be 0..255"):
                TcbVersion(**{name: bad})


@pytest.mark.parametrize("turin", [False, True])
def test_a_tcb_value_is_exactly_64_bits(turin: bool) -> None:
    top = TcbVersion.from_int((1 << 64) - 1, turin=turin)
    assert top.to_bytes() == b"\xff" * 8
    assert TcbVersion.from_bytes(b"\xff" * 8, turin=turin) == top
    for bad in (1 << 64, -1, "1"):
        with pytest.raises(InputError, match="is not a 64-bit value"):
            TcbVersion.from_int(bad, turin=turin)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="a TCB version is 8 bytes, not 9"):
        TcbVersion.from_bytes(bytes(9), turin=turin)
