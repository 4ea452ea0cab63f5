"""A FAKE of Linux's KVM SEV-SNP API, for tests only — never a backend, never a firmware.

Like go-sev-guest's ``testing`` package, this module exists so that the host side of the
``snp`` backend (``runtime.vmm.snp_launch``) runs end to end where there is no SNP hardware.
``FakeKvmSnp`` implements ``SnpSystem`` at the ioctl boundary: it decodes every structure the
driver passes (following the pointers in ``kvm_sev_cmd.data``, ``kvm_device_attr.addr`` and the
launch-update ``uaddr`` as the kernel would), records each call in ``calls`` in order, refuses
what KVM 6.12 refuses (wrong order, unaligned or unregistered ranges, non-private pages in a
LAUNCH_UPDATE, a page launched twice, unknown flags) with the errno KVM uses, and models the
firmware's launch digest from the bytes it *reads at uaddr* — so a test compares the VMM's own
expected digest against an independent computation of what the firmware would see.

Knobs model the kernel's and firmware's legitimate behaviours the driver must cope with:
``pages_per_update`` (partial progress), ``eagain_updates`` (EAGAIN on those update calls),
``reject_cpuid`` (the firmware's corrected CPUID page written back to the source, EIO with
INVALID_PARAM), ``caps`` (a host without SNP) and ``liar`` (inconsistent progress reports).
Nothing in the product imports this module.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runtime.vmm import kvm_abi, kvm_snp
from runtime.vmm.snp_cpuid import CpuidEntry
from toolchain.errors import InputError
from toolchain.snp.digest import PAGE_SIZE, VMSA_GPA, LaunchDigest, PageType
from toolchain.snp.vmsa import VcpuState, kvm_snp_vmsa

#: What an SNP host's KVM 6.12 answers to KVM_CHECK_EXTENSION.
SNP_HOST_CAPS = {
    kvm_abi.KVM_CAP_VM_TYPES: (1 << kvm_abi.KVM_X86_DEFAULT_VM)
    | (1 << kvm_abi.KVM_X86_SEV_VM)
    | (1 << kvm_abi.KVM_X86_SEV_ES_VM)
    | (1 << kvm_abi.KVM_X86_SNP_VM),
    kvm_snp.KVM_CAP_GUEST_MEMFD: 1,
    kvm_snp.KVM_CAP_USER_MEMORY2: 1,
    kvm_snp.KVM_CAP_MEMORY_ATTRIBUTES: kvm_snp.KVM_MEMORY_ATTRIBUTE_PRIVATE,
    kvm_snp.KVM_CAP_EXIT_HYPERCALL: 1 << kvm_snp.KVM_HC_MAP_GPA_RANGE,
}
#: What this project's development machine (a software KVM, PVM) answers: no SNP, no attributes.
PVM_HOST_CAPS = {
    kvm_abi.KVM_CAP_VM_TYPES: 1 << kvm_abi.KVM_X86_DEFAULT_VM,
    kvm_snp.KVM_CAP_GUEST_MEMFD: 1,
    kvm_snp.KVM_CAP_USER_MEMORY2: 1,
    kvm_snp.KVM_CAP_MEMORY_ATTRIBUTES: 0,
    kvm_snp.KVM_CAP_EXIT_HYPERCALL: 1 << kvm_snp.KVM_HC_MAP_GPA_RANGE,
}
#: What a Genoa host's KVM 6.12 answers to KVM_GET_SUPPORTED_CPUID, in part: the vendor, the
#: signature (family 0x19 model 0x11), XSAVE's 0xD subleaves (index-significant) and the SEV leaf
#: (SEV, SEV-ES, SNP; C-bit 51 in EBX[5:0]).
GENOA_CPUID = (
    CpuidEntry(0x0, 0, 0, 0x10, 0x6874_7541, 0x444D_4163, 0x6974_6E65),
    CpuidEntry(0x1, 0, 0, 0x00A1_0F11, 0x0080_0800, 0xF6F8_3203, 0x178B_FBFF),
    CpuidEntry(0xD, 0, 1, 0x2E7, 0x988, 0x988, 0),
    CpuidEntry(0xD, 1, 1, 0xF, 0x988, 0, 0),
    CpuidEntry(0x8000_0000, 0, 0, 0x8000_0028, 0x6874_7541, 0x444D_4163, 0x6974_6E65),
    CpuidEntry(0x8000_001F, 0, 0, 0x0003_FFFF, 0x4033, 0x1FD, 0x1),
)
#: SEV_FEATURES KVM 6.12 lets an SNP guest have on Genoa (DebugSwap: bit 5).
SUPPORTED_VMSA_FEATURES = 1 << 5
_MBO_POLICY_BIT = 1 << 17
_COMMANDS = {
    kvm_snp.KVM_SEV_INIT2: "KVM_SEV_INIT2",
    kvm_snp.KVM_SEV_SNP_LAUNCH_START: "SNP_LAUNCH_START",
    kvm_snp.KVM_SEV_SNP_LAUNCH_UPDATE: "SNP_LAUNCH_UPDATE",
    kvm_snp.KVM_SEV_SNP_LAUNCH_FINISH: "SNP_LAUNCH_FINISH",
}
_LAUNCH_TYPES = {
    kvm_snp.KVM_SEV_SNP_PAGE_TYPE_NORMAL,
    kvm_snp.KVM_SEV_SNP_PAGE_TYPE_ZERO,
    kvm_snp.KVM_SEV_SNP_PAGE_TYPE_UNMEASURED,
    kvm_snp.KVM_SEV_SNP_PAGE_TYPE_SECRETS,
    kvm_snp.KVM_SEV_SNP_PAGE_TYPE_CPUID,
}


def _fail(code: int, why: str) -> OSError:
    return OSError(code, f"{errno.errorcode[code]}: {why}")


_S = TypeVar("_S", bound=ctypes.Structure)


def _struct(arg: ctypes.Structure | int, kind: type[_S]) -> _S:
    """The argument as the structure this ioctl takes (EFAULT otherwise, as for a bad pointer)."""
    if not isinstance(arg, kind):
        raise _fail(errno.EFAULT, f"expected struct {kind.__name__}, got {type(arg).__name__}")
    return arg


def _int(arg: ctypes.Structure | int) -> int:
    if not isinstance(arg, int):
        raise _fail(errno.EINVAL, f"expected an integer argument, got {type(arg).__name__}")
    return arg


@dataclass
class Call:
    """One recorded ioctl: on which fd kind, which request, the decoded arguments."""

    fd: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Slot:
    gpa: int
    size: int
    uaddr: int
    offset: int


class FakeKvmSnp:
    """A fake /dev/kvm + /dev/sev with one SNP VM (see the module docstring)."""

    def __init__(
        self,
        *,
        caps: dict[int, int] | None = None,
        sev_device: bool = True,
        pages_per_update: int | None = None,
        eagain_updates: Sequence[int] = (),
        reject_cpuid: bytes | None = None,
        liar: bool = False,
        cpuid: Sequence[CpuidEntry] = GENOA_CPUID,
    ) -> None:
        self.caps = dict(SNP_HOST_CAPS if caps is None else caps)
        self.sev_device = sev_device
        self.pages_per_update = pages_per_update
        self.eagain_updates = set(eagain_updates)
        self.reject_cpuid = reject_cpuid
        self.liar = liar
        self.cpuid = tuple(cpuid)
        self.calls: list[Call] = []
        self.open_fds: dict[int, str] = {}
        self._next_fd = 100
        self.vm_type: int | None = None
        self.vmsa_features = 0
        self.policy: int | None = None
        self.gmem_size = 0
        self.slots: dict[int, _Slot] = {}
        self.private: set[int] = set()  # GFNs whose attribute is PRIVATE
        self.launched: dict[int, bytes] = {}  # GFN -> what the firmware put in private memory
        self.digest = LaunchDigest()
        self.update_calls = 0
        self.vcpu_states: list[VcpuState] = []
        self.finished: dict[str, Any] | None = None
        self.hypercall_exits = 0
        self._stage = "none"

    # ---- SnpSystem -----------------------------------------------------------------------------
    def open(self, path: str) -> int:
        kind = {"/dev/kvm": "kvm", "/dev/sev": "sev"}.get(path)
        if kind is None or (kind == "sev" and not self.sev_device):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self.calls.append(Call(kind, "open"))
        return self._new_fd(kind)

    def close(self, fd: int) -> None:
        kind = self.open_fds.pop(fd)  # KeyError: a double close or a foreign fd, a driver bug
        self.calls.append(Call(kind, "close"))

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure | int) -> int:
        kind = self.open_fds.get(fd)
        if kind is None:
            raise _fail(errno.EBADF, f"fd {fd} is not open")
        handler = {
            kvm_abi.KVM_GET_API_VERSION: self._api_version,
            kvm_abi.KVM_CHECK_EXTENSION: self._check_extension,
            kvm_abi.KVM_GET_SUPPORTED_CPUID: self._supported_cpuid,
            kvm_snp.KVM_GET_DEVICE_ATTR: self._device_attr,
            kvm_abi.KVM_CREATE_VM: self._create_vm,
            kvm_snp.KVM_ENABLE_CAP: self._enable_cap,
            kvm_snp.KVM_CREATE_GUEST_MEMFD: self._create_gmem,
            kvm_snp.KVM_SET_USER_MEMORY_REGION2: self._region2,
            kvm_snp.KVM_SET_MEMORY_ATTRIBUTES: self._attributes,
            kvm_snp.KVM_MEMORY_ENCRYPT_OP: self._encrypt_op,
        }.get(request)
        if handler is None:
            raise _fail(errno.ENOTTY, f"ioctl {request:#x} is not faked")
        return handler(kind, arg)

    # ---- for the test's vCPU step --------------------------------------------------------------
    def vcpu_setup(self, vm_fd: int, states: Sequence[VcpuState]) -> list[FakeVcpu]:
        """Stands in for vCPU creation: records the states KVM would build the VMSAs from."""
        if self.open_fds.get(vm_fd) != "vm":
            raise _fail(errno.EBADF, "vCPUs on a fd that is not the VM")
        self.calls.append(Call("vm", "create vcpus", {"count": len(states)}))
        self.vcpu_states = list(states)
        return [FakeVcpu(self) for _ in states]

    # ---- handlers ------------------------------------------------------------------------------
    def _new_fd(self, kind: str) -> int:
        fd, self._next_fd = self._next_fd, self._next_fd + 1
        self.open_fds[fd] = kind
        return fd

    def _record(self, kind: str, name: str, **args: Any) -> None:
        self.calls.append(Call(kind, name, args))

    def _api_version(self, kind: str, arg: ctypes.Structure | int) -> int:
        self._record(kind, "KVM_GET_API_VERSION")
        return kvm_abi.KVM_API_VERSION

    def _check_extension(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _int(arg)
        self._record(kind, "KVM_CHECK_EXTENSION", cap=arg)
        return self.caps.get(arg, 0)

    def _supported_cpuid(self, kind: str, arg: ctypes.Structure | int) -> int:
        """Fills ``struct kvm_cpuid2`` (any capacity); E2BIG when ``nent`` is too small."""
        if isinstance(arg, int) or not hasattr(arg, "entries"):
            raise _fail(errno.EFAULT, "expected struct kvm_cpuid2")
        self._record(kind, "KVM_GET_SUPPORTED_CPUID", nent=arg.nent)
        if kind != "kvm":
            raise _fail(errno.ENOTTY, "KVM_GET_SUPPORTED_CPUID is a /dev/kvm ioctl")
        if arg.nent < len(self.cpuid):
            raise _fail(errno.E2BIG, f"{len(self.cpuid)} entries do not fit in {arg.nent}")
        for slot, entry in zip(arg.entries, self.cpuid, strict=False):
            for name in ("function", "index", "flags", "eax", "ebx", "ecx", "edx"):
                setattr(slot, name, getattr(entry, name))
        arg.nent = len(self.cpuid)
        return 0

    def _device_attr(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _struct(arg, kvm_snp.KvmDeviceAttr)
        self._record(kind, "KVM_GET_DEVICE_ATTR", group=arg.group, attr=arg.attr)
        snp = self.caps.get(kvm_abi.KVM_CAP_VM_TYPES, 0) >> kvm_abi.KVM_X86_SNP_VM & 1
        if kind != "kvm" or not snp or arg.group != kvm_snp.KVM_X86_GRP_SEV or arg.attr != 0:
            raise _fail(errno.ENXIO, "no such device attribute")
        ctypes.c_uint64.from_address(arg.addr).value = SUPPORTED_VMSA_FEATURES
        return 0

    def _create_vm(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _int(arg)
        self._record(kind, "KVM_CREATE_VM", type=arg)
        if kind != "kvm" or not self.caps.get(kvm_abi.KVM_CAP_VM_TYPES, 0) >> arg & 1:
            raise _fail(errno.EINVAL, f"VM type {arg} is not offered")
        if self.vm_type is not None:
            raise _fail(errno.EBUSY, "this fake holds one VM")
        self.vm_type = arg
        return self._new_fd("vm")

    def _enable_cap(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _struct(arg, kvm_snp.KvmEnableCap)
        self._record(kind, "KVM_ENABLE_CAP", cap=arg.cap, args0=arg.args[0])
        if kind != "vm" or arg.flags or arg.args[0] & ~self.caps.get(arg.cap, 0):
            raise _fail(errno.EINVAL, "capability not enabled")
        return 0

    def _create_gmem(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _struct(arg, kvm_snp.KvmCreateGuestMemfd)
        self._record(kind, "KVM_CREATE_GUEST_MEMFD", size=arg.size, flags=arg.flags)
        if kind != "vm" or arg.flags or arg.size <= 0 or arg.size % PAGE_SIZE:
            raise _fail(errno.EINVAL, "bad guest_memfd size or flags")
        self.gmem_size = int(arg.size)
        return self._new_fd("gmem")

    def _region2(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _struct(arg, kvm_snp.KvmUserspaceMemoryRegion2)
        r = arg
        self._record(
            kind,
            "KVM_SET_USER_MEMORY_REGION2",
            slot=r.slot,
            flags=r.flags,
            gpa=r.guest_phys_addr,
            size=r.memory_size,
            offset=r.guest_memfd_offset,
        )
        if (
            kind != "vm"
            or r.flags != kvm_snp.KVM_MEM_GUEST_MEMFD
            or self.open_fds.get(r.guest_memfd) != "gmem"
            or r.guest_memfd_offset + r.memory_size > self.gmem_size
            or (r.guest_phys_addr | r.memory_size | r.userspace_addr) % PAGE_SIZE
            or r.slot in self.slots
        ):
            raise _fail(errno.EINVAL, "bad memslot")
        for slot in self.slots.values():
            end = r.guest_phys_addr + r.memory_size
            if slot.gpa < end and r.guest_phys_addr < slot.gpa + slot.size:
                raise _fail(errno.EEXIST, "memslots overlap")
        self.slots[r.slot] = _Slot(
            r.guest_phys_addr, r.memory_size, r.userspace_addr, r.guest_memfd_offset
        )
        return 0

    def _slot_of(self, gpa: int, size: int) -> _Slot | None:
        for slot in self.slots.values():
            if slot.gpa <= gpa and gpa + size <= slot.gpa + slot.size:
                return slot
        return None

    def _attributes(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _struct(arg, kvm_snp.KvmMemoryAttributes)
        a = arg
        self._record(
            kind, "KVM_SET_MEMORY_ATTRIBUTES", gpa=a.address, size=a.size, attributes=a.attributes
        )
        supported = self.caps.get(kvm_snp.KVM_CAP_MEMORY_ATTRIBUTES, 0)
        if kind != "vm" or not supported:
            raise _fail(errno.ENOTTY, "no memory attributes")
        if (
            a.flags
            or a.attributes & ~supported
            or not a.size
            or (a.address | a.size) % PAGE_SIZE
            or a.address + a.size >= 1 << 64
        ):
            raise _fail(errno.EINVAL, "bad memory attributes")
        gfns = range(a.address // PAGE_SIZE, (a.address + a.size) // PAGE_SIZE)
        if a.attributes:
            self.private.update(gfns)
        else:
            self.private.difference_update(gfns)
        return 0

    def _encrypt_op(self, kind: str, arg: ctypes.Structure | int) -> int:
        arg = _struct(arg, kvm_snp.KvmSevCmd)
        cmd = arg
        name = _COMMANDS.get(cmd.id, f"sev command {cmd.id}")
        if kind != "vm" or self.vm_type != kvm_abi.KVM_X86_SNP_VM:
            self._record(kind, name)
            raise _fail(errno.ENOTTY, "not an SNP VM")
        if self.open_fds.get(cmd.sev_fd) != "sev":
            self._record(kind, name)
            raise _fail(errno.EBADF, "kvm_sev_cmd.sev_fd is not /dev/sev")
        handler = {
            kvm_snp.KVM_SEV_INIT2: self._init2,
            kvm_snp.KVM_SEV_SNP_LAUNCH_START: self._launch_start,
            kvm_snp.KVM_SEV_SNP_LAUNCH_UPDATE: self._launch_update,
            kvm_snp.KVM_SEV_SNP_LAUNCH_FINISH: self._launch_finish,
        }.get(cmd.id)
        if handler is None:
            self._record(kind, name)
            raise _fail(errno.EINVAL, "unknown SEV command")
        return handler(cmd)

    def _stage_is(self, *stages: str) -> None:
        if self._stage not in stages:
            raise _fail(errno.EINVAL, f"out of order after {self._stage}")

    def _init2(self, cmd: kvm_snp.KvmSevCmd) -> int:
        init = kvm_snp.KvmSevInit.from_address(cmd.data)
        self._record(
            "vm",
            "KVM_SEV_INIT2",
            vmsa_features=init.vmsa_features,
            flags=init.flags,
            ghcb_version=init.ghcb_version,
        )
        self._stage_is("none")
        if init.flags or init.vmsa_features & ~SUPPORTED_VMSA_FEATURES or init.ghcb_version < 2:
            raise _fail(errno.EINVAL, "bad INIT2")
        self.vmsa_features = init.vmsa_features | kvm_snp.SVM_SEV_FEAT_SNP_ACTIVE
        self._stage = "init"
        return 0

    def _launch_start(self, cmd: kvm_snp.KvmSevCmd) -> int:
        start = kvm_snp.KvmSevSnpLaunchStart.from_address(cmd.data)
        self._record("vm", "SNP_LAUNCH_START", policy=start.policy, flags=start.flags)
        self._stage_is("init")
        if start.flags or not start.policy & _MBO_POLICY_BIT:
            raise _fail(errno.EINVAL, "bad policy or flags")
        self.policy = int(start.policy)
        self._stage = "started"
        return 0

    def _launch_update(self, cmd: kvm_snp.KvmSevCmd) -> int:
        params = kvm_snp.KvmSevSnpLaunchUpdate.from_address(cmd.data)
        self.update_calls += 1
        self._record(
            "vm",
            "SNP_LAUNCH_UPDATE",
            gfn=params.gfn_start,
            len=params.len,
            type=params.type,
            call=self.update_calls,
        )
        self._stage_is("started")
        if self.update_calls in self.eagain_updates:
            raise _fail(errno.EAGAIN, "try again")
        if params.flags or params.len % PAGE_SIZE or params.type not in _LAUNCH_TYPES:
            raise _fail(errno.EINVAL, "bad launch update")
        first, count = int(params.gfn_start), int(params.len) // PAGE_SIZE
        slot = self._slot_of(first * PAGE_SIZE, count * PAGE_SIZE)
        if slot is None:
            raise _fail(errno.EINVAL, "not a private memslot")
        if self.pages_per_update is not None:
            count = min(count, self.pages_per_update)
        zero = params.type == kvm_snp.KVM_SEV_SNP_PAGE_TYPE_ZERO
        for index in range(count):
            gfn = first + index
            if gfn not in self.private or gfn in self.launched:
                raise _fail(errno.EINVAL, f"GFN {gfn:#x} is not private or already launched")
            source = int(params.uaddr) + index * PAGE_SIZE
            page = bytes(PAGE_SIZE) if zero else ctypes.string_at(source, PAGE_SIZE)
            page_type = PageType(params.type)
            if page_type is PageType.CPUID and self.reject_cpuid is not None:
                # sev_gmem_post_populate(): the corrected page goes back to the source.
                ctypes.memmove(source, self.reject_cpuid, PAGE_SIZE)
                cmd.error = kvm_snp.SEV_RET_INVALID_PARAM
                raise _fail(errno.EIO, "the firmware rejected the CPUID page")
            if page_type is PageType.NORMAL:
                self.digest.update(page_type, gfn * PAGE_SIZE, page)
            else:
                self.digest.update(page_type, gfn * PAGE_SIZE, size=PAGE_SIZE)
            self.launched[gfn] = page
        params.gfn_start = first + count
        params.len -= count * PAGE_SIZE
        if not zero:
            params.uaddr += count * PAGE_SIZE
        if self.liar:
            params.uaddr += PAGE_SIZE
        return 0

    def _launch_finish(self, cmd: kvm_snp.KvmSevCmd) -> int:
        finish = kvm_snp.KvmSevSnpLaunchFinish.from_address(cmd.data)
        id_block = (
            ctypes.string_at(finish.id_block_uaddr, kvm_snp.KVM_SEV_SNP_ID_BLOCK_SIZE)
            if finish.id_block_en
            else None
        )
        id_auth = (
            ctypes.string_at(finish.id_auth_uaddr, kvm_snp.KVM_SEV_SNP_ID_AUTH_SIZE)
            if finish.id_block_en
            else None
        )
        self.finished = {
            "id_block": id_block,
            "id_auth": id_auth,
            "host_data": bytes(finish.host_data),
            "auth_key_en": finish.auth_key_en,
            "vcek_disabled": finish.vcek_disabled,
        }
        self._record("vm", "SNP_LAUNCH_FINISH", **self.finished)
        self._stage_is("started")
        if not self.vcpu_states:
            raise _fail(errno.EINVAL, "no vCPUs to measure")
        # KVM builds each VMSA from the vCPU's registers and its reset FPU (sev_es_sync_vmsa,
        # Linux v6.12) and has the firmware measure it, in vCPU-index order.
        for state in self.vcpu_states:
            try:
                page = kvm_snp_vmsa(state, sev_features=self.vmsa_features)
            except InputError as exc:  # KVM refuses such a vCPU (sev_es_sync_vmsa: -EINVAL)
                raise _fail(errno.EINVAL, exc.message) from None
            self.digest.update(PageType.VMSA, VMSA_GPA, page)
        self._stage = "finished"
        return 0

    @property
    def measurement(self) -> bytes:
        """The launch digest this fake firmware computed (MEASUREMENT after LAUNCH_FINISH)."""
        return self.digest.digest()

    def names(self) -> list[str]:
        """The recorded call names in order (for order checks)."""
        return [call.name for call in self.calls]


class FakeVcpu:
    """What ``FakeKvmSnp.vcpu_setup`` returns: something to close with the VM."""

    def __init__(self, owner: FakeKvmSnp) -> None:
        self.owner = owner
        self.closed = False

    def close(self) -> None:
        self.closed = True
