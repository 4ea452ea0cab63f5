"""The host's CPUID as an SEV-SNP launch needs it: the C-bit, the CPU generation, the CPUID page.

Everything comes from ``KVM_GET_SUPPORTED_CPUID`` on /dev/kvm (through an ``SnpSystem``, so the
fake KVM answers in tests), which is also the CPUID the VMM gives every vCPU
(``snp_launch.real_vcpu_setup``):

* the C-bit position is Fn8000_001F EBX[5:0]; KVM 6.12 passes those bits through from the host
  when it supports SEV (``arch/x86/kvm/cpuid.c``, ``case 0x8000001F``: it clears only EBX[31:6])
  and reports the leaf as zeros otherwise — then the host has no C-bit to give;
* the generation (Milan, Genoa, Turin) is Fn0000_0001 EAX's family and model
  (``toolchain.snp.tcb.Product.from_cpuid``), which picks AMD's chain for the VCEK;
* ``cpuid_page`` lays the entries out as the SNP CPUID page the firmware checks at LAUNCH_UPDATE
  (SNP ABI spec #56860, CPUID page; Linux 6.12 ``struct snp_cpuid_table`` in
  ``arch/x86/include/asm/sev.h``): a count, then up to 64 functions of 48 bytes (EAX_IN, ECX_IN,
  XCR0_IN, XSS_IN, EAX, EBX, ECX, EDX, reserved), filled as QEMU 9's ``sev_snp_cpuid_info_fill``
  does: ECX_IN only for an index-significant leaf, and leaf 0xD subleaves 0 and 1 stated for
  XCR0 = 1 (x87 only) with EBX 0x240, the size of that XSAVE area.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.vmm import kvm_abi
from toolchain.errors import PlatformError
from toolchain.snp.cpu import decode_signature
from toolchain.snp.digest import PAGE_SIZE
from toolchain.snp.tcb import Product

if TYPE_CHECKING:
    from runtime.vmm.snp_launch import SnpSystem

#: Linux's SNP_CPUID_COUNT_MAX: the functions one CPUID page holds.
SNP_CPUID_COUNT_MAX = 64
_TABLE_HEADER = struct.Struct("<IIQ")  # count, reserved, reserved
_FUNCTION = struct.Struct("<IIQQIIIIQ")  # 48 bytes
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # (sic, Linux's spelling)
#: XSAVE area size for XCR0 = 1 (legacy region + header), what QEMU states for 0xD.0/0xD.1.
XSAVE_X87_SIZE = 0x240
LEAF_SEV = 0x8000_001F


@dataclass(frozen=True)
class CpuidEntry:
    """One ``kvm_cpuid_entry2``: the leaf, subleaf, flags and the four registers."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


@dataclass(frozen=True)
class HostCpu:
    """What the host's supported CPUID says an SNP launch needs."""

    entries: tuple[CpuidEntry, ...]

    def leaf(self, function: int, index: int = 0) -> CpuidEntry | None:
        return next((e for e in self.entries if e.function == function and e.index == index), None)

    @property
    def c_bit(self) -> int | None:
        """CPUID 0x8000001F EBX[5:0]; None where the host reports no SEV (the leaf is zero)."""
        sev = self.leaf(LEAF_SEV)
        bit = sev.ebx & 0x3F if sev is not None else 0
        return bit or None

    @property
    def signature(self) -> int | None:
        basic = self.leaf(1)
        return basic.eax if basic is not None else None

    @property
    def product(self) -> Product | None:
        """Milan, Genoa or Turin from the family and model; None for any other CPU."""
        if self.signature is None:
            return None
        family, model, _ = decode_signature(self.signature)
        return Product.from_cpuid(family, model)

    def describe(self) -> str:
        if self.signature is None:
            return "no CPUID leaf 1"
        family, model, stepping = decode_signature(self.signature)
        c_bit = self.c_bit
        return (
            f"family {family:#x} model {model:#x} stepping {stepping} "
            f"({self.product.value if self.product else 'not an SEV-SNP EPYC'}), "
            f"C-bit {c_bit if c_bit is not None else 'none (CPUID 0x8000001F EBX[5:0] is 0)'}"
        )


def host_cpu(system: SnpSystem, kvm_fd: int) -> HostCpu:
    """KVM_GET_SUPPORTED_CPUID on ``kvm_fd`` (an open /dev/kvm) through ``system``."""
    from runtime.vmm.vm import supported_cpuid

    cpuid = supported_cpuid(kvm_fd, system.ioctl)
    if cpuid is None:
        raise PlatformError("KVM_GET_SUPPORTED_CPUID failed: the host's CPUID is unknown")
    raw: list[kvm_abi.KvmCpuidEntry2] = list(cpuid.entries[: cpuid.nent])
    return HostCpu(
        tuple(CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in raw)
    )


def cpuid_page(host: HostCpu) -> bytes:
    """The SNP CPUID page of the host's supported CPUID (see the module); one 4 KiB page."""
    if len(host.entries) > SNP_CPUID_COUNT_MAX:
        raise PlatformError(
            f"the host's supported CPUID has {len(host.entries)} entries; an SNP CPUID page "
            f"holds {SNP_CPUID_COUNT_MAX}"
        )
    page = bytearray(_TABLE_HEADER.pack(len(host.entries), 0, 0))
    for entry in host.entries:
        ecx_in = entry.index if entry.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX else 0
        ebx, xcr0_in = entry.ebx, 0
        if entry.function == 0xD and ecx_in in (0, 1):
            # The guest computes the sizes of the other XSAVE areas from the subleaves itself.
            ebx, xcr0_in = XSAVE_X87_SIZE, 1
        page += _FUNCTION.pack(
            entry.function, ecx_in, xcr0_in, 0, entry.eax, ebx, entry.ecx, entry.edx, 0
        )
    return bytes(page.ljust(PAGE_SIZE, b"\0"))
