"""The ctypes mirror of the KVM ABI against the sizes and numbers the kernel headers give."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.vmm import kvm_abi

# sizeof() on x86-64, from include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h
# (Documentation/virt/kvm/api.rst describes the same structures).
DOCUMENTED_SIZES = {
    kvm_abi.KvmRegs: 144,
    kvm_abi.KvmSregs: 312,
    kvm_abi.KvmSegment: 24,
    kvm_abi.KvmDtable: 16,
    kvm_abi.KvmUserspaceMemoryRegion: 32,
    kvm_abi.KvmRun: 2352,
    kvm_abi.KvmRunExit: 256,
    kvm_abi.KvmRunMmio: 24,
    kvm_abi.KvmRunIo: 16,
    kvm_abi.KvmRunFailEntry: 16,
    kvm_abi.KvmRunInternal: 136,
    kvm_abi.KvmCpuidEntry2: 40,
    kvm_abi.KvmCpuid2Header: 8,
    kvm_abi.KvmFpu: 416,
    kvm_abi.KvmXcrs: 392,
    kvm_abi.KvmXsave: 4096,
    kvm_abi.KvmDebugregs: 128,
    kvm_abi.KvmMsrsHeader: 8,
    kvm_abi.KvmMsrEntry: 16,
}

# (struct, field, offset) for the fields the VMM reads after an exit.
DOCUMENTED_OFFSETS = [
    (kvm_abi.KvmRun, "immediate_exit", 1),
    (kvm_abi.KvmRun, "exit_reason", 8),
    (kvm_abi.KvmRun, "exit", 32),
    (kvm_abi.KvmRun, "kvm_valid_regs", 288),
    (kvm_abi.KvmRun, "s", 304),
    (kvm_abi.KvmRunMmio, "len", 16),
    (kvm_abi.KvmRunMmio, "is_write", 20),
    (kvm_abi.KvmRunIo, "data_offset", 8),
    (kvm_abi.KvmSregs, "gdt", 192),
    (kvm_abi.KvmSregs, "cr0", 224),
    (kvm_abi.KvmSregs, "efer", 264),
    (kvm_abi.KvmSregs, "interrupt_bitmap", 280),
    (kvm_abi.KvmRegs, "rip", 128),
    (kvm_abi.KvmFpu, "mxcsr", 408),
]

# ioctl request numbers as the kernel's _IO/_IOR/_IOW/_IOWR macros encode them.
DOCUMENTED_IOCTLS = {
    "KVM_GET_API_VERSION": 0xAE00,
    "KVM_CREATE_VM": 0xAE01,
    "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04,
    "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
    "KVM_CREATE_VCPU": 0xAE41,
    "KVM_SET_USER_MEMORY_REGION": 0x4020AE46,
    "KVM_SET_TSS_ADDR": 0xAE47,
    "KVM_RUN": 0xAE80,
    "KVM_GET_REGS": 0x8090AE81,
    "KVM_SET_REGS": 0x4090AE82,
    "KVM_GET_SREGS": 0x8138AE83,
    "KVM_SET_SREGS": 0x4138AE84,
    "KVM_GET_MSRS": 0xC008AE88,
    "KVM_SET_MSRS": 0x4008AE89,
    "KVM_GET_FPU": 0x81A0AE8C,
    "KVM_SET_CPUID2": 0x4008AE90,
    "KVM_GET_DEBUGREGS": 0x8080AEA1,
    "KVM_GET_XSAVE": 0x9000AEA4,
    "KVM_GET_XCRS": 0x8188AEA6,
}


@pytest.mark.parametrize(
    ("struct", "size"), DOCUMENTED_SIZES.items(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_structure_size(struct: type[ctypes.Structure], size: int) -> None:
    assert ctypes.sizeof(struct) == size


@pytest.mark.parametrize(("struct", "name", "offset"), DOCUMENTED_OFFSETS)
def test_field_offset(struct: type[ctypes.Structure], name: str, offset: int) -> None:
    assert getattr(struct, name).offset == offset


@pytest.mark.parametrize(("name", "number"), DOCUMENTED_IOCTLS.items())
def test_ioctl_number(name: str, number: int) -> None:
    assert getattr(kvm_abi, name) == number


def test_variable_length_structures() -> None:
    assert ctypes.sizeof(kvm_abi.kvm_cpuid2(3)) == 8 + 3 * 40
    assert ctypes.sizeof(kvm_abi.kvm_msrs(2)) == 8 + 2 * 16


def test_exit_reason_names() -> None:
    assert kvm_abi.EXIT_REASON_NAMES[kvm_abi.KVM_EXIT_MMIO] == "MMIO"
    assert kvm_abi.EXIT_REASON_NAMES[8] == "SHUTDOWN"
    assert kvm_abi.EXIT_REASON_NAMES[17] == "INTERNAL_ERROR"


_C_PROBE = """
#include <linux/kvm.h>
#include <stdio.h>
#include <stddef.h>
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu %zu\\n", sizeof(struct kvm_run), sizeof(struct kvm_sregs),
         sizeof(struct kvm_regs), sizeof(struct kvm_fpu), sizeof(struct kvm_xcrs),
         offsetof(struct kvm_run, mmio), offsetof(struct kvm_run, kvm_valid_regs));
  printf("%lu %lu %lu\\n", (unsigned long)KVM_GET_SREGS, (unsigned long)KVM_RUN,
         (unsigned long)KVM_SET_USER_MEMORY_REGION);
  return 0;
}
"""


def test_against_installed_kernel_headers(tmp_path: Path) -> None:
    """Where a C compiler and the kernel's uapi headers exist, compare with them directly."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not Path("/usr/include/linux/kvm.h").is_file():
        pytest.skip("no C compiler or /usr/include/linux/kvm.h: the documented values above apply")
    source = tmp_path / "probe.c"
    source.write_text(_C_PROBE)
    binary = tmp_path / "probe"
    subprocess.run([compiler, str(source), "-o", str(binary)], check=True, capture_output=True)
    lines = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    sizes, numbers = (list(map(int, line.split())) for line in lines.splitlines())
    assert sizes == [
        ctypes.sizeof(kvm_abi.KvmRun),
        ctypes.sizeof(kvm_abi.KvmSregs),
        ctypes.sizeof(kvm_abi.KvmRegs),
        ctypes.sizeof(kvm_abi.KvmFpu),
        ctypes.sizeof(kvm_abi.KvmXcrs),
        kvm_abi.KvmRun.exit.offset,
        kvm_abi.KvmRun.kvm_valid_regs.offset,
    ]
    assert numbers == [kvm_abi.KVM_GET_SREGS, kvm_abi.KVM_RUN, kvm_abi.KVM_SET_USER_MEMORY_REGION]
