"""Linux's KVM SEV-SNP userspace API: ctypes structures, ioctl numbers and constants (x86-64).

Transcribed from Linux 6.12 ``include/uapi/linux/kvm.h``, ``arch/x86/include/uapi/asm/kvm.h``
and ``include/uapi/linux/kvm_para.h``; the semantics follow
``Documentation/virt/kvm/x86/amd-memory-encryption.rst`` and ``arch/x86/kvm/svm/sev.c`` of the
same release. ``tests/test_kvm_snp.py`` checks every structure's size and every field's offset
and size, the ``kvm_run`` exit fields and every ioctl number and constant against
``tests/data/kvm-snp-uapi/offsets-6.12.117.txt`` (what a C program printed when compiled
against Debian's linux-libc-dev 6.12.117-1 headers).

The ``kvm_run`` exit fields (``KvmRunHypercall``, ``KvmRunMemoryFault``), ``KVM_X86_SNP_VM`` and
``KVM_CAP_VM_TYPES`` live in ``runtime.vmm.kvm_abi`` with the rest of ``kvm_run``.

The SNP launch as KVM 6.12 expects it (``runtime.vmm.snp_launch`` drives it):
``KVM_CREATE_VM(KVM_X86_SNP_VM)`` → ``KVM_MEMORY_ENCRYPT_OP(KVM_SEV_INIT2)`` →
``KVM_CREATE_GUEST_MEMFD`` + ``KVM_SET_USER_MEMORY_REGION2`` (private memory) →
``KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)`` for what is launched → ``KVM_SEV_SNP_LAUNCH_START`` →
``KVM_SEV_SNP_LAUNCH_UPDATE`` (repeated until ``len`` is 0) → ``KVM_SEV_SNP_LAUNCH_FINISH`` (KVM
builds and measures every vCPU's VMSA here). Every ``KVM_MEMORY_ENCRYPT_OP`` passes a
``kvm_sev_cmd`` carrying an open ``/dev/sev`` fd.

The ``/dev/sev`` status command (``SEV_ISSUE_CMD``/``SNP_PLATFORM_STATUS``, from
``include/uapi/linux/psp-sev.h``) is not in that offsets file; its layout is checked against the
sizes psp-sev.h gives (``__packed``) by hand.
"""

from __future__ import annotations

import ctypes

from runtime.vmm.kvm_abi import _IOC_READ, _IOC_WRITE, _iow, _iowr


# --- arch/x86/include/uapi/asm/kvm.h: the SEV command wrapper and its payloads ----------------
class KvmSevCmd(ctypes.Structure):
    """struct kvm_sev_cmd (24 bytes): the argument of KVM_MEMORY_ENCRYPT_OP.

    ``data`` is the user address of the command's own structure; ``error`` receives the
    firmware's status code; ``sev_fd`` is an open ``/dev/sev``.
    """

    _fields_ = [
        ("id", ctypes.c_uint32),
        ("pad0", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
        ("error", ctypes.c_uint32),
        ("sev_fd", ctypes.c_uint32),
    ]


class KvmSevInit(ctypes.Structure):
    """struct kvm_sev_init (48 bytes): KVM_SEV_INIT2."""

    _fields_ = [
        ("vmsa_features", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("ghcb_version", ctypes.c_uint16),
        ("pad1", ctypes.c_uint16),
        ("pad2", ctypes.c_uint32 * 8),
    ]


class KvmSevSnpLaunchStart(ctypes.Structure):
    """struct kvm_sev_snp_launch_start (64 bytes)."""

    _fields_ = [
        ("policy", ctypes.c_uint64),
        ("gosvw", ctypes.c_uint8 * 16),
        ("flags", ctypes.c_uint16),
        ("pad0", ctypes.c_uint8 * 6),
        ("pad1", ctypes.c_uint64 * 4),
    ]


class KvmSevSnpLaunchUpdate(ctypes.Structure):
    """struct kvm_sev_snp_launch_update (64 bytes).

    KVM writes ``gfn_start``, ``uaddr`` and ``len`` back advanced past what it processed; the
    caller repeats the command until ``len`` is 0.
    """

    _fields_ = [
        ("gfn_start", ctypes.c_uint64),
        ("uaddr", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("type", ctypes.c_uint8),
        ("pad0", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("pad1", ctypes.c_uint32),
        ("pad2", ctypes.c_uint64 * 4),
    ]


class KvmSevSnpLaunchFinish(ctypes.Structure):
    """struct kvm_sev_snp_launch_finish (88 bytes); ``host_data`` sits unaligned at 19."""

    _fields_ = [
        ("id_block_uaddr", ctypes.c_uint64),
        ("id_auth_uaddr", ctypes.c_uint64),
        ("id_block_en", ctypes.c_uint8),
        ("auth_key_en", ctypes.c_uint8),
        ("vcek_disabled", ctypes.c_uint8),
        ("host_data", ctypes.c_uint8 * 32),
        ("pad0", ctypes.c_uint8 * 3),
        ("flags", ctypes.c_uint16),
        ("pad1", ctypes.c_uint64 * 4),
    ]


# --- include/uapi/linux/kvm.h: private memory --------------------------------------------------
class KvmCreateGuestMemfd(ctypes.Structure):
    """struct kvm_create_guest_memfd (64 bytes): returns a guest_memfd of ``size`` bytes."""

    _fields_ = [
        ("size", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 6),
    ]


class KvmUserspaceMemoryRegion2(ctypes.Structure):
    """struct kvm_userspace_memory_region2 (160 bytes): a memslot with a guest_memfd behind it.

    ``userspace_addr`` backs the slot's shared pages, ``guest_memfd`` at ``guest_memfd_offset``
    its private ones (with ``KVM_MEM_GUEST_MEMFD`` in ``flags``).
    """

    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
        ("guest_memfd_offset", ctypes.c_uint64),
        ("guest_memfd", ctypes.c_uint32),
        ("pad1", ctypes.c_uint32),
        ("pad2", ctypes.c_uint64 * 14),
    ]


class KvmMemoryAttributes(ctypes.Structure):
    """struct kvm_memory_attributes (32 bytes): set ``attributes`` on ``[address, +size)``."""

    _fields_ = [
        ("address", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("attributes", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class KvmEnableCap(ctypes.Structure):
    """struct kvm_enable_cap (104 bytes)."""

    _fields_ = [
        ("cap", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("args", ctypes.c_uint64 * 4),
        ("pad", ctypes.c_uint8 * 64),
    ]


class KvmDeviceAttr(ctypes.Structure):
    """struct kvm_device_attr (24 bytes); ``addr`` is where KVM writes the attribute's value."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("group", ctypes.c_uint32),
        ("attr", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
    ]


# --- constants -----------------------------------------------------------------------------
# enum sev_cmd_id (arch/x86/include/uapi/asm/kvm.h)
KVM_SEV_INIT2 = 22
KVM_SEV_SNP_LAUNCH_START = 100
KVM_SEV_SNP_LAUNCH_UPDATE = 101
KVM_SEV_SNP_LAUNCH_FINISH = 102

# KVM_SEV_SNP_PAGE_TYPE_* (the firmware's PAGE_TYPE values; VMSA pages are KVM's own business)
KVM_SEV_SNP_PAGE_TYPE_NORMAL = 1
KVM_SEV_SNP_PAGE_TYPE_ZERO = 3
KVM_SEV_SNP_PAGE_TYPE_UNMEASURED = 4
KVM_SEV_SNP_PAGE_TYPE_SECRETS = 5
KVM_SEV_SNP_PAGE_TYPE_CPUID = 6
#: Sizes KVM copies for LAUNCH_FINISH's ID block and ID authentication structure.
KVM_SEV_SNP_ID_BLOCK_SIZE = 96
KVM_SEV_SNP_ID_AUTH_SIZE = 4096
#: The GHCB protocol version an SNP guest speaks (KVM's minimum for SNP).
SNP_GHCB_VERSION = 2

# capabilities
KVM_CAP_EXIT_HYPERCALL = 201
#: kvm_run.system_event.type when an SEV-ES/SNP guest asks for termination through the GHCB MSR
#: protocol (request 0x100); data[0] is the GHCB MSR's value (Linux include/uapi/linux/kvm.h,
#: arch/x86/kvm/svm/sev.c, v6.12).
KVM_SYSTEM_EVENT_SEV_TERM = 6
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234

# KVM_SET_USER_MEMORY_REGION2 flags, memory attributes, memory-fault flags
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3

# include/uapi/linux/kvm_para.h: the hypercall KVM forwards for an SNP page-state change
KVM_HC_MAP_GPA_RANGE = 12
KVM_MAP_GPA_RANGE_PAGE_SZ_4K = 0
KVM_MAP_GPA_RANGE_PAGE_SZ_2M = 1
KVM_MAP_GPA_RANGE_PAGE_SZ_1G = 2
KVM_MAP_GPA_RANGE_PAGE_SZ_MASK = 0xF
KVM_MAP_GPA_RANGE_DECRYPTED = 0
KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4

# KVM_GET_DEVICE_ATTR on /dev/kvm: the VMSA SEV_FEATURES this KVM lets a guest have
KVM_X86_GRP_SEV = 1
KVM_X86_SEV_VMSA_FEATURES = 0
#: SEV_FEATURES bit 0: SNP active. KVM sets it itself for an SNP VM (not passed to INIT2).
SVM_SEV_FEAT_SNP_ACTIVE = 1 << 0

# --- ioctls ----------------------------------------------------------------------------------
KVM_ENABLE_CAP = _iow(0xA3, KvmEnableCap)  # on a VM fd
KVM_MEMORY_ENCRYPT_OP = _iowr(0xBA, 8)  # on a VM fd; the argument is declared unsigned long
KVM_SET_USER_MEMORY_REGION2 = _iow(0x49, KvmUserspaceMemoryRegion2)
KVM_SET_MEMORY_ATTRIBUTES = _iow(0xD2, KvmMemoryAttributes)
KVM_CREATE_GUEST_MEMFD = _iowr(0xD4, KvmCreateGuestMemfd)
KVM_GET_DEVICE_ATTR = _iow(0xE2, KvmDeviceAttr)  # on /dev/kvm for the SEV group


# --- include/uapi/linux/psp-sev.h: the platform status on /dev/sev ----------------------------
class SevIssueCmd(ctypes.Structure):
    """struct sev_issue_cmd (16 bytes, ``__packed``): the argument of SEV_ISSUE_CMD on /dev/sev."""

    _pack_ = 1
    _fields_ = [
        ("cmd", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
        ("error", ctypes.c_uint32),
    ]


class SevUserDataSnpStatus(ctypes.Structure):
    """struct sev_user_data_snp_status (32 bytes, ``__packed``): SNP_PLATFORM_STATUS."""

    _pack_ = 1
    _fields_ = [
        ("api_major", ctypes.c_uint8),
        ("api_minor", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("is_rmp_initialized", ctypes.c_uint8),  # bit 0; bits 7:1 reserved
        ("build_id", ctypes.c_uint32),
        ("feature_bits", ctypes.c_uint32),  # mask_chip_id, mask_chip_key, vlek_en, ...
        ("guest_count", ctypes.c_uint32),
        ("current_tcb_version", ctypes.c_uint64),
        ("reported_tcb_version", ctypes.c_uint64),
    ]


SEV_IOC_TYPE = ord("S")
SNP_PLATFORM_STATUS = 9  # enum sev_cmd: ..., SEV_GET_ID2 = 8, SNP_PLATFORM_STATUS = 9
SEV_ISSUE_CMD = (
    ((_IOC_READ | _IOC_WRITE) << 30) | (ctypes.sizeof(SevIssueCmd) << 16) | (SEV_IOC_TYPE << 8)
)

#: Firmware status codes (enum sev_ret_code) the launch driver names in its errors.
SEV_RET_NAMES = {
    0x00: "SUCCESS",
    0x01: "INVALID_PLATFORM_STATE",
    0x02: "INVALID_GUEST_STATE",
    0x03: "INVALID_CONFIG",
    0x04: "INVALID_LEN",
    0x07: "POLICY_FAILURE",
    0x09: "INVALID_ADDRESS",
    0x0B: "BAD_MEASUREMENT",
    0x10: "INVALID_GUEST",
    0x11: "INVALID_COMMAND",
    0x15: "UNSUPPORTED",
    0x16: "INVALID_PARAM",
    0x17: "RESOURCE_LIMIT",
    0x18: "SECURE_DATA_INVALID",
}
SEV_RET_INVALID_PARAM = 0x16


def sev_error_name(code: int) -> str:
    """``0x16 (INVALID_PARAM)``: a firmware status for an error message."""
    return f"{code:#x} ({SEV_RET_NAMES.get(code, 'unknown')})"
