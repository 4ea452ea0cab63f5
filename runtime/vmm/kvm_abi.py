"""The /dev/kvm ABI: ioctl numbers and the ctypes structures they pass (x86-64 only).

Transcribed from Linux ``include/uapi/linux/kvm.h`` and ``arch/x86/include/uapi/asm/kvm.h``;
``tests/test_kvm_abi.py`` checks every structure's size and the key field offsets against the
sizes those headers give, and every ioctl number against the kernel's ``_IOC`` encoding.
"""

from __future__ import annotations

import ctypes

# --- ioctl number encoding (include/uapi/asm-generic/ioctl.h) ---------------------------------
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2

KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (KVMIO << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, struct: type[ctypes.Structure] | int) -> int:
    size = struct if isinstance(struct, int) else ctypes.sizeof(struct)
    return _ioc(_IOC_READ, nr, size)


def _iow(nr: int, struct: type[ctypes.Structure] | int) -> int:
    size = struct if isinstance(struct, int) else ctypes.sizeof(struct)
    return _ioc(_IOC_WRITE, nr, size)


def _iowr(nr: int, struct: type[ctypes.Structure] | int) -> int:
    size = struct if isinstance(struct, int) else ctypes.sizeof(struct)
    return _ioc(_IOC_READ | _IOC_WRITE, nr, size)


# --- structures (arch/x86/include/uapi/asm/kvm.h) ---------------------------------------------
class KvmRegs(ctypes.Structure):
    """struct kvm_regs (144 bytes)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
            "rip", "rflags",
        )
    ]  # fmt: skip


class KvmSegment(ctypes.Structure):
    """struct kvm_segment (24 bytes)."""

    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    ]


class KvmDtable(ctypes.Structure):
    """struct kvm_dtable (16 bytes)."""

    _fields_ = [
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint16),
        ("padding", ctypes.c_uint16 * 3),
    ]


KVM_NR_INTERRUPTS = 256


class KvmSregs(ctypes.Structure):
    """struct kvm_sregs (312 bytes)."""

    _fields_ = [
        ("cs", KvmSegment),
        ("ds", KvmSegment),
        ("es", KvmSegment),
        ("fs", KvmSegment),
        ("gs", KvmSegment),
        ("ss", KvmSegment),
        ("tr", KvmSegment),
        ("ldt", KvmSegment),
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        ("cr0", ctypes.c_uint64),
        ("cr2", ctypes.c_uint64),
        ("cr3", ctypes.c_uint64),
        ("cr4", ctypes.c_uint64),
        ("cr8", ctypes.c_uint64),
        ("efer", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("interrupt_bitmap", ctypes.c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class KvmFpu(ctypes.Structure):
    """struct kvm_fpu (416 bytes)."""

    _fields_ = [
        ("fpr", (ctypes.c_uint8 * 16) * 8),
        ("fcw", ctypes.c_uint16),
        ("fsw", ctypes.c_uint16),
        ("ftwx", ctypes.c_uint8),
        ("pad1", ctypes.c_uint8),
        ("last_opcode", ctypes.c_uint16),
        ("last_ip", ctypes.c_uint64),
        ("last_dp", ctypes.c_uint64),
        ("xmm", (ctypes.c_uint8 * 16) * 16),
        ("mxcsr", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]


class KvmXcr(ctypes.Structure):
    """struct kvm_xcr (16 bytes)."""

    _fields_ = [
        ("xcr", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("value", ctypes.c_uint64),
    ]


KVM_MAX_XCRS = 16


class KvmXcrs(ctypes.Structure):
    """struct kvm_xcrs (392 bytes)."""

    _fields_ = [
        ("nr_xcrs", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("xcrs", KvmXcr * KVM_MAX_XCRS),
        ("padding", ctypes.c_uint64 * 16),
    ]


class KvmXsave(ctypes.Structure):
    """struct kvm_xsave (4096 bytes): the legacy FXSAVE area, then the XSAVE header and state."""

    _fields_ = [("region", ctypes.c_uint32 * 1024)]


#: Byte offsets inside kvm_xsave (standard, non-compacted format, Intel SDM vol. 1, 13.4).
XSAVE_FCW_OFFSET = 0
XSAVE_FSW_OFFSET = 2
XSAVE_FOP_OFFSET = 6
XSAVE_MXCSR_OFFSET = 24
XSAVE_ST_OFFSET = 32  # ST0-7 / MM0-7, 16 bytes apart, 10 bytes used
XSAVE_XMM_OFFSET = 160  # XMM0-15, 16 bytes each
XSAVE_HEADER_OFFSET = 512  # XSTATE_BV (u64) first
XSAVE_YMM_HI_OFFSET = 576  # upper 128 bits of YMM0-15 (state component 2)
XSTATE_X87 = 1 << 0
XSTATE_SSE = 1 << 1
XSTATE_AVX = 1 << 2


class KvmDebugregs(ctypes.Structure):
    """struct kvm_debugregs (128 bytes)."""

    _fields_ = [
        ("db", ctypes.c_uint64 * 4),
        ("dr6", ctypes.c_uint64),
        ("dr7", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 9),
    ]


class KvmMsrEntry(ctypes.Structure):
    """struct kvm_msr_entry (16 bytes)."""

    _fields_ = [
        ("index", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
    ]


class KvmMsrsHeader(ctypes.Structure):
    """struct kvm_msrs without its flexible ``entries[]`` (8 bytes)."""

    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def kvm_msrs(count: int) -> type[ctypes.Structure]:
    """struct kvm_msrs with room for ``count`` entries."""

    class KvmMsrs(ctypes.Structure):
        _fields_ = [
            ("nmsrs", ctypes.c_uint32),
            ("pad", ctypes.c_uint32),
            ("entries", KvmMsrEntry * count),
        ]

    return KvmMsrs


class KvmCpuidEntry2(ctypes.Structure):
    """struct kvm_cpuid_entry2 (40 bytes)."""

    _fields_ = [
        ("function", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("eax", ctypes.c_uint32),
        ("ebx", ctypes.c_uint32),
        ("ecx", ctypes.c_uint32),
        ("edx", ctypes.c_uint32),
        ("padding", ctypes.c_uint32 * 3),
    ]


class KvmCpuid2Header(ctypes.Structure):
    """struct kvm_cpuid2 without its flexible ``entries[]`` (8 bytes)."""

    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


def kvm_cpuid2(count: int) -> type[ctypes.Structure]:
    """struct kvm_cpuid2 with room for ``count`` entries."""

    class KvmCpuid2(ctypes.Structure):
        _fields_ = [
            ("nent", ctypes.c_uint32),
            ("padding", ctypes.c_uint32),
            ("entries", KvmCpuidEntry2 * count),
        ]

    return KvmCpuid2


# --- include/uapi/linux/kvm.h ------------------------------------------------------------------
class KvmUserspaceMemoryRegion(ctypes.Structure):
    """struct kvm_userspace_memory_region (32 bytes)."""

    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    ]


class KvmRunHw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", ctypes.c_uint64)]


class KvmRunFailEntry(ctypes.Structure):
    """``kvm_run.fail_entry`` (16 bytes)."""

    _fields_ = [
        ("hardware_entry_failure_reason", ctypes.c_uint64),
        ("cpu", ctypes.c_uint32),
    ]


class KvmRunEx(ctypes.Structure):
    _fields_ = [("exception", ctypes.c_uint32), ("error_code", ctypes.c_uint32)]


class KvmRunIo(ctypes.Structure):
    """``kvm_run.io`` (16 bytes); the data lives at ``data_offset`` bytes into the run page."""

    _fields_ = [
        ("direction", ctypes.c_uint8),
        ("size", ctypes.c_uint8),
        ("port", ctypes.c_uint16),
        ("count", ctypes.c_uint32),
        ("data_offset", ctypes.c_uint64),
    ]


class KvmRunMmio(ctypes.Structure):
    """``kvm_run.mmio`` (24 bytes)."""

    _fields_ = [
        ("phys_addr", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * 8),
        ("len", ctypes.c_uint32),
        ("is_write", ctypes.c_uint8),
    ]


class KvmRunInternal(ctypes.Structure):
    """``kvm_run.internal`` (136 bytes)."""

    _fields_ = [
        ("suberror", ctypes.c_uint32),
        ("ndata", ctypes.c_uint32),
        ("data", ctypes.c_uint64 * 16),
    ]


class KvmRunSystemEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("ndata", ctypes.c_uint32),
        ("data", ctypes.c_uint64 * 16),
    ]


class KvmRunHypercall(ctypes.Structure):
    """``kvm_run.hypercall`` (72 bytes): KVM_EXIT_HYPERCALL, e.g. KVM_HC_MAP_GPA_RANGE.

    The last member is a union of ``__u32 longmode`` (old) and ``__u64 flags``; the VMM writes
    its answer to ``ret``.
    """

    _fields_ = [
        ("nr", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
        ("ret", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class KvmRunMemoryFault(ctypes.Structure):
    """``kvm_run.memory_fault`` (24 bytes): KVM_EXIT_MEMORY_FAULT."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("gpa", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
    ]


class KvmRunExit(ctypes.Union):
    """The exit-reason union of ``struct kvm_run`` (256 bytes, padded)."""

    _fields_ = [
        ("hw", KvmRunHw),
        ("fail_entry", KvmRunFailEntry),
        ("ex", KvmRunEx),
        ("io", KvmRunIo),
        ("mmio", KvmRunMmio),
        ("internal", KvmRunInternal),
        ("system_event", KvmRunSystemEvent),
        ("hypercall", KvmRunHypercall),
        ("memory_fault", KvmRunMemoryFault),
        ("padding", ctypes.c_char * 256),
    ]


SYNC_REGS_SIZE_BYTES = 2048


class KvmRun(ctypes.Structure):
    """struct kvm_run (2352 bytes on x86-64; the mmap'd area is larger, see GET_VCPU_MMAP_SIZE)."""

    _anonymous_ = ("exit",)
    _fields_ = [
        ("request_interrupt_window", ctypes.c_uint8),
        ("immediate_exit", ctypes.c_uint8),
        ("padding1", ctypes.c_uint8 * 6),
        ("exit_reason", ctypes.c_uint32),
        ("ready_for_interrupt_injection", ctypes.c_uint8),
        ("if_flag", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("cr8", ctypes.c_uint64),
        ("apic_base", ctypes.c_uint64),
        ("exit", KvmRunExit),
        ("kvm_valid_regs", ctypes.c_uint64),
        ("kvm_dirty_regs", ctypes.c_uint64),
        ("s", ctypes.c_char * SYNC_REGS_SIZE_BYTES),
    ]


# --- exit reasons ------------------------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_MEMORY_FAULT = 39

EXIT_REASON_NAMES: dict[int, str] = {
    value: name.removeprefix("KVM_EXIT_")
    for name, value in dict(globals()).items()
    if name.startswith("KVM_EXIT_") and isinstance(value, int)
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4

# --- capabilities (KVM_CHECK_EXTENSION) --------------------------------------------------------
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SYNC_MMU = 16
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_VM_TYPES = 235

# KVM_CAP_VM_TYPES bits (arch/x86/include/uapi/asm/kvm.h)
KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4

KVM_API_VERSION = 12

# --- ioctls ------------------------------------------------------------------------------------
# on /dev/kvm
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, KvmCpuid2Header)
# on a VM fd
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, KvmUserspaceMemoryRegion)
KVM_SET_TSS_ADDR = _io(0x47)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, 8)
# on a vCPU fd
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, KvmRegs)
KVM_SET_REGS = _iow(0x82, KvmRegs)
KVM_GET_SREGS = _ior(0x83, KvmSregs)
KVM_SET_SREGS = _iow(0x84, KvmSregs)
KVM_GET_MSRS = _iowr(0x88, KvmMsrsHeader)
KVM_SET_MSRS = _iow(0x89, KvmMsrsHeader)
KVM_GET_FPU = _ior(0x8C, KvmFpu)
KVM_SET_FPU = _iow(0x8D, KvmFpu)
KVM_SET_CPUID2 = _iow(0x90, KvmCpuid2Header)
KVM_GET_DEBUGREGS = _ior(0xA1, KvmDebugregs)
KVM_SET_DEBUGREGS = _iow(0xA2, KvmDebugregs)
KVM_GET_XSAVE = _ior(0xA4, KvmXsave)
KVM_SET_XSAVE = _iow(0xA5, KvmXsave)
KVM_GET_XCRS = _ior(0xA6, KvmXcrs)
KVM_SET_XCRS = _iow(0xA7, KvmXcrs)
