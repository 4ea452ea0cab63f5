"""One virtual machine on /dev/kvm: the device, the VM fd, its memory and its vCPUs.

``Vm`` owns every file descriptor and mapping it creates and releases all of them in
``close()`` (also on any error half-way through creation), so that a host can boot keeps in a
loop without leaking.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import time
from collections.abc import Callable
from typing import Any

from runtime.vmm import kvm_abi
from runtime.vmm.memory import GuestMemory, RamRange
from runtime.vmm.vcpu import Vcpu, raw_ioctl
from toolchain.errors import PlatformError

KVM_DEVICE = "/dev/kvm"


def open_kvm(path: str = KVM_DEVICE) -> int:
    """Open /dev/kvm and check its API version; ``PlatformError`` explains what is wrong."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PlatformError(
            f"{path} does not exist: this host offers no KVM",
            hint="load the kvm module (kvm_intel / kvm_amd), or use --backend nil (no isolation)",
        ) from None
    except PermissionError:
        raise PlatformError(
            f"no permission to open {path}",
            hint="add your user to the 'kvm' group, or use --backend nil (no isolation)",
        ) from None
    except OSError as exc:
        raise PlatformError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        version = fcntl.ioctl(fd, kvm_abi.KVM_GET_API_VERSION)
    except OSError as exc:
        os.close(fd)
        raise PlatformError(
            f"{path} is not a KVM device: KVM_GET_API_VERSION failed: {exc}"
        ) from exc
    if version != kvm_abi.KVM_API_VERSION:
        os.close(fd)
        raise PlatformError(f"{path} speaks KVM API {version}, expected {kvm_abi.KVM_API_VERSION}")
    return fd


def check_extension(fd: int, capability: int) -> int:
    """KVM_CHECK_EXTENSION on /dev/kvm or a VM fd (0 where unsupported)."""
    try:
        return int(fcntl.ioctl(fd, kvm_abi.KVM_CHECK_EXTENSION, capability))
    except OSError:
        return 0


def supported_cpuid(
    kvm_fd: int, ioctl: Callable[[int, int, Any], object] = fcntl.ioctl
) -> ctypes.Structure | None:
    """KVM_GET_SUPPORTED_CPUID, or None where KVM will not say (vCPUs keep its defaults).

    ``ioctl`` is ``fcntl.ioctl`` unless a caller goes through its own system (the SNP launch)."""
    count = 256
    while count <= 4096:
        cpuid = kvm_abi.kvm_cpuid2(count)()
        cpuid.nent = count
        try:
            ioctl(kvm_fd, kvm_abi.KVM_GET_SUPPORTED_CPUID, cpuid)
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                count *= 2
                continue
            return None  # the vCPU then keeps KVM's default CPUID
        return cpuid
    return None


class Vm:
    """A VM with RAM made of ``ranges`` and ``vcpu_count`` vCPUs (created in order)."""

    def __init__(self, ranges: list[RamRange], *, vcpu_count: int = 1) -> None:
        self.kvm_fd = -1
        self.vm_fd = -1
        self.memory: GuestMemory | None = None
        self.vcpus: list[Vcpu] = []
        #: time.perf_counter() right after KVM_CREATE_VM returned (for boot-time figures).
        self.created_at = 0.0
        try:
            self._set_up(ranges, vcpu_count)
        except BaseException:
            self.close()
            raise

    def _set_up(self, ranges: list[RamRange], vcpu_count: int) -> None:
        self.kvm_fd = open_kvm()
        self.vm_fd = self._create_vm()
        self.created_at = time.perf_counter()
        # Intel VMX needs three pages for real-mode emulation; put them out of the way.
        if check_extension(self.kvm_fd, kvm_abi.KVM_CAP_SET_TSS_ADDR) and (
            raw_ioctl(self.vm_fd, kvm_abi.KVM_SET_TSS_ADDR, 0xFFFBD000) < 0
        ):
            raise PlatformError(f"KVM_SET_TSS_ADDR failed: {os.strerror(ctypes.get_errno())}")
        self.memory = GuestMemory(ranges, vm_fd=self.vm_fd)
        mmap_size = int(fcntl.ioctl(self.kvm_fd, kvm_abi.KVM_GET_VCPU_MMAP_SIZE))
        if mmap_size < ctypes.sizeof(kvm_abi.KvmRun):
            raise PlatformError(f"KVM_GET_VCPU_MMAP_SIZE {mmap_size} is too small")
        cpuid = self._supported_cpuid()
        for index in range(vcpu_count):
            self.vcpus.append(Vcpu(self.vm_fd, index, mmap_size, cpuid))

    def _create_vm(self) -> int:
        for _attempt in range(20):
            try:
                return int(fcntl.ioctl(self.kvm_fd, kvm_abi.KVM_CREATE_VM, 0))
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise PlatformError(f"KVM_CREATE_VM failed: {exc.strerror}") from exc
        raise PlatformError("KVM_CREATE_VM kept being interrupted")

    def _supported_cpuid(self) -> ctypes.Structure | None:
        return supported_cpuid(self.kvm_fd)

    @property
    def ram(self) -> GuestMemory:
        if self.memory is None:
            raise PlatformError("the VM is closed")
        return self.memory

    def close(self) -> None:
        """Release vCPUs, the VM, /dev/kvm and guest RAM, in that order. Idempotent."""
        vcpus, self.vcpus = self.vcpus, []
        for vcpu in vcpus:
            vcpu.close()
        for name in ("vm_fd", "kvm_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
        if self.memory is not None:
            self.memory.close()
            self.memory = None

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
