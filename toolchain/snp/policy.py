"""The SEV-SNP guest policy: the 64-bit value the guest owner fixes at launch (GUEST_POLICY).

It is part of what the firmware signs, so a report tells which protections the guest was launched
with (debugging, migration agent, SMT, single socket, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.errors import InputError

# bit -> name of the one-bit flags (the ABI version occupies bits 0-15)
POLICY_FLAGS: dict[int, str] = {
    16: "smt",
    17: "reserved_must_be_one",
    18: "migrate_ma",
    19: "debug",
    20: "single_socket",
    21: "cxl_allow",
    22: "mem_aes_256_xts",
    23: "rapl_dis",
    24: "ciphertext_hiding",
    25: "page_swap_disable",
}
_KNOWN_MASK = 0xFFFF | sum(1 << bit for bit in POLICY_FLAGS)
_MUST_BE_ONE = 1 << 17


@dataclass(frozen=True)
class GuestPolicy:
    """A decoded GUEST_POLICY; ``value`` is the exact 64-bit field."""

    value: int = _MUST_BE_ONE

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 0 <= self.value < 1 << 64:
            raise InputError(f"guest policy {self.value!r} is not a 64-bit value")

    @classmethod
    def build(
        cls,
        *,
        abi_major: int = 0,
        abi_minor: int = 0,
        smt: bool = True,
        migrate_ma: bool = False,
        debug: bool = False,
        single_socket: bool = False,
        cxl_allow: bool = False,
        mem_aes_256_xts: bool = False,
        rapl_dis: bool = False,
        ciphertext_hiding: bool = False,
        page_swap_disable: bool = False,
    ) -> GuestPolicy:
        if not (0 <= abi_major <= 0xFF and 0 <= abi_minor <= 0xFF):
            raise InputError(f"ABI version {abi_major}.{abi_minor} out of range")
        flags = {
            "smt": smt,
            "reserved_must_be_one": True,
            "migrate_ma": migrate_ma,
            "debug": debug,
            "single_socket": single_socket,
            "cxl_allow": cxl_allow,
            "mem_aes_256_xts": mem_aes_256_xts,
            "rapl_dis": rapl_dis,
            "ciphertext_hiding": ciphertext_hiding,
            "page_swap_disable": page_swap_disable,
        }
        value = abi_minor | abi_major << 8
        for bit, name in POLICY_FLAGS.items():
            if flags[name]:
                value |= 1 << bit
        return cls(value)

    def _bit(self, bit: int) -> bool:
        return bool(self.value >> bit & 1)

    @property
    def abi_minor(self) -> int:
        return self.value & 0xFF

    @property
    def abi_major(self) -> int:
        return self.value >> 8 & 0xFF

    @property
    def smt(self) -> bool:
        return self._bit(16)

    @property
    def migrate_ma(self) -> bool:
        return self._bit(18)

    @property
    def debug(self) -> bool:
        return self._bit(19)

    @property
    def single_socket(self) -> bool:
        return self._bit(20)

    @property
    def cxl_allow(self) -> bool:
        return self._bit(21)

    @property
    def mem_aes_256_xts(self) -> bool:
        return self._bit(22)

    @property
    def rapl_dis(self) -> bool:
        return self._bit(23)

    @property
    def ciphertext_hiding(self) -> bool:
        return self._bit(24)

    @property
    def page_swap_disable(self) -> bool:
        return self._bit(25)

    def flags(self) -> dict[str, bool]:
        return {name: self._bit(bit) for bit, name in POLICY_FLAGS.items()}

    def anomalies(self) -> list[str]:
        """Bits that break the ABI's rules: bit 17 must be one, bits 26-63 must be zero."""
        found = []
        if not self.value & _MUST_BE_ONE:
            found.append("guest policy bit 17 (reserved, must be one) is zero")
        unknown = self.value & ~_KNOWN_MASK
        if unknown:
            found.append(f"guest policy reserved bits set: 0x{unknown:016x}")
        return found

    def __str__(self) -> str:
        on = [
            name for name, set_ in self.flags().items() if set_ and name != "reserved_must_be_one"
        ]
        return f"0x{self.value:x} (ABI {self.abi_major}.{self.abi_minor}; {', '.join(on) or '-'})"
