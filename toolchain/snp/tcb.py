"""TCB versions (the security patch levels of AMD's firmware) and the CPU generations they follow.

A TCB_VERSION is one 64-bit value whose bytes are split differently per generation (SEV-SNP ABI,
"TCB_VERSION"):

* Milan and Genoa: byte 0 boot loader, 1 TEE, 2-5 reserved, 6 SNP firmware, 7 microcode.
* Turin: byte 0 FMC (first mutable code), 1 boot loader, 2 TEE, 3 SNP firmware, 4-6 reserved,
  7 microcode.

The reserved bytes are kept (as ``reserved``, bits in place) so a value round-trips exactly.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from toolchain.errors import InputError


class Product(enum.Enum):
    """An EPYC generation with SEV-SNP; the value is AMD's key-distribution product name."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @property
    def turin_layout(self) -> bool:
        return self is Product.TURIN

    @classmethod
    def from_name(cls, name: str) -> Product:
        """``milan``, ``Genoa``, ``Milan-B0`` (a VCEK productName: generation, dash, stepping)."""
        return _product_named(name)

    @classmethod
    def from_cpuid(cls, family: int, model: int) -> Product | None:
        """The generation from a v3+ report's CPUID family/model bytes; None when not recognised."""
        if family == 0x19:
            if model <= 0x0F:
                return cls.MILAN
            if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
                return cls.GENOA
        if family == 0x1A and (model <= 0x1F or 0x90 <= model <= 0xAF):
            return cls.TURIN
        return None


@functools.lru_cache(maxsize=64)
def _product_named(name: str) -> Product:
    """``Product.from_name``, once per name: every verification reads its VCEK's productName."""
    base = name.strip().split("-", 1)[0].lower()
    for product in Product:
        if product.value.lower() == base:
            return product
    known = ", ".join(p.value.lower() for p in Product)
    raise InputError(f"unknown product {name!r} (known: {known})")


# byte index of each component in the 64-bit value, per layout
_MILAN_GENOA_BYTES = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
_TURIN_BYTES = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}
_MILAN_GENOA_RESERVED = (2, 3, 4, 5)
_TURIN_RESERVED = (4, 5, 6)


def _mask(byte_indexes: tuple[int, ...]) -> int:
    return sum(0xFF << (8 * i) for i in byte_indexes)


@dataclass(frozen=True, order=False)
class TcbVersion:
    """One TCB_VERSION. ``fmc`` is None for the Milan/Genoa layout and an int for Turin's."""

    bootloader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int | None = None
    reserved: int = 0  # the reserved bytes' bits, in place within the 64-bit value

    def __post_init__(self) -> None:
        for name in ("bootloader", "tee", "snp", "microcode", "fmc"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise InputError(f"TCB component {name} must be 0..255, not {value!r}")
        if not isinstance(self.reserved, int) or self.reserved & ~self._reserved_mask():
            raise InputError(f"TCB reserved bits {self.reserved!r} lie outside the reserved bytes")

    @property
    def turin_layout(self) -> bool:
        return self.fmc is not None

    def _reserved_mask(self) -> int:
        return _mask(_TURIN_RESERVED if self.turin_layout else _MILAN_GENOA_RESERVED)

    @classmethod
    def from_int(cls, value: int, *, turin: bool = False) -> TcbVersion:
        if not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise InputError(f"TCB version {value!r} is not a 64-bit value")
        if cls is not TcbVersion:
            return cls._decode(value, turin)
        # A report carries four TCB values, usually equal, and a verifier sees the same few
        # again and again: each (value, layout) is decoded once (the result is immutable).
        return _decoded(int(value), bool(turin))

    @classmethod
    def _decode(cls, value: int, turin: bool) -> TcbVersion:
        layout = _TURIN_BYTES if turin else _MILAN_GENOA_BYTES
        parts = {name: (value >> (8 * index)) & 0xFF for name, index in layout.items()}
        reserved = value & _mask(_TURIN_RESERVED if turin else _MILAN_GENOA_RESERVED)
        return cls(**parts, reserved=reserved)

    @classmethod
    def from_bytes(cls, data: bytes, *, turin: bool = False) -> TcbVersion:
        if len(data) != 8:
            raise InputError(f"a TCB version is 8 bytes, not {len(data)}")
        return cls.from_int(int.from_bytes(data, "little"), turin=turin)

    def to_int(self) -> int:
        return self._value

    @functools.cached_property
    def _value(self) -> int:
        # Computed once per object: a frozen value, and a verifier compares it on every report.
        layout = _TURIN_BYTES if self.turin_layout else _MILAN_GENOA_BYTES
        value = self.reserved
        for name, index in layout.items():
            value |= int(getattr(self, name)) << (8 * index)
        return value

    def to_bytes(self) -> bytes:
        return self.to_int().to_bytes(8, "little")

    def relayout(self, *, turin: bool) -> TcbVersion:
        """The same 64-bit value read with the other generation's layout."""
        return TcbVersion.from_int(self.to_int(), turin=turin)

    def components(self) -> dict[str, int]:
        """The named security patch levels, in layout order."""
        names = list(_TURIN_BYTES if self.turin_layout else _MILAN_GENOA_BYTES)
        return {name: int(getattr(self, name)) for name in names}

    def lower_components(self, minimum: TcbVersion) -> list[str]:
        """Names of the components below ``minimum``'s (a minimum without FMC ignores FMC)."""
        mine = self.components()
        return [name for name, floor in minimum.components().items() if mine.get(name, 0) < floor]

    def __str__(self) -> str:
        text = " ".join(f"{name}={value}" for name, value in self.components().items())
        if self.reserved:
            text += f" reserved=0x{self.reserved:016x}"
        return text


@functools.lru_cache(maxsize=1024)
def _decoded(value: int, turin: bool) -> TcbVersion:
    return TcbVersion._decode(value, turin)
