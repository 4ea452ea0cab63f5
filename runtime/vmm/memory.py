"""Guest physical memory: anonymous mmap'd RAM in KVM memslots, read and written by GPA.

Every access is bounds-checked against the RAM ranges: a GPA or length the guest (or a plan) made
up is an ``InputError`` naming the range, never an IndexError, a short read or a segfault. Holes
between ranges (the MMIO doorbell) have no memory behind them, so a guest access there exits to
the VMM.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
from dataclasses import dataclass

from runtime.vmm import kvm_abi
from toolchain.errors import InputError, PlatformError

PAGE_SIZE = 4096


@dataclass(frozen=True)
class RamRange:
    """One contiguous block of guest RAM: ``[gpa, gpa + size)``, page aligned."""

    gpa: int
    size: int

    @property
    def end(self) -> int:
        return self.gpa + self.size


def ram_ranges(ram_size: int, holes: tuple[tuple[int, int], ...] = ()) -> list[RamRange]:
    """``[0, ram_size)`` minus the ``(gpa, size)`` holes (e.g. the doorbell page)."""
    if ram_size <= 0 or ram_size % PAGE_SIZE:
        raise InputError(f"guest RAM size {ram_size:#x} is not a positive multiple of 4 KiB")
    ranges: list[RamRange] = []
    start = 0
    for hole_gpa, hole_size in sorted(holes):
        if hole_gpa % PAGE_SIZE or hole_size <= 0 or hole_size % PAGE_SIZE or hole_gpa < start:
            raise InputError(f"memory hole {hole_gpa:#x}+{hole_size:#x} is unaligned or overlaps")
        if hole_gpa >= ram_size:
            break
        if hole_gpa > start:
            ranges.append(RamRange(start, hole_gpa - start))
        start = hole_gpa + hole_size
    if start < ram_size:
        ranges.append(RamRange(start, ram_size - start))
    return ranges


class _Slot:
    def __init__(self, ram: RamRange) -> None:
        self.range = ram
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        try:
            self.map = mmap.mmap(-1, ram.size, flags=flags)
        except OSError as exc:
            raise PlatformError(f"cannot map {ram.size:#x} bytes of guest RAM: {exc}") from exc
        # Huge pages where the host allows them: every first touch of a 4 KiB page costs
        # ~25 us on a software KVM, so a guest that zeroes a 16 MiB stack would wait ~100 ms.
        with contextlib.suppress(AttributeError, OSError):
            self.map.madvise(mmap.MADV_HUGEPAGE)
        # The address KVM needs; the temporary ctypes view is dropped at once so that close()
        # is not refused for an exported buffer.
        view = (ctypes.c_char * ram.size).from_buffer(self.map)
        self.address = ctypes.addressof(view)
        del view


class GuestMemory:
    """Guest RAM made of page-aligned ranges; registered with a VM when ``vm_fd`` is given."""

    def __init__(self, ranges: list[RamRange], *, vm_fd: int | None = None) -> None:
        if not ranges:
            raise InputError("guest memory needs at least one RAM range")
        self._slots: list[_Slot] = []
        try:
            self._set_up(ranges, vm_fd)
        except BaseException:
            self.close()
            raise

    def _set_up(self, ranges: list[RamRange], vm_fd: int | None) -> None:
        previous_end = -1
        for ram in sorted(ranges, key=lambda r: r.gpa):
            if ram.gpa % PAGE_SIZE or ram.size <= 0 or ram.size % PAGE_SIZE:
                raise InputError(f"RAM range {ram.gpa:#x}+{ram.size:#x} is not page aligned")
            if ram.gpa < previous_end:
                raise InputError(f"RAM range at {ram.gpa:#x} overlaps the one before it")
            previous_end = ram.end
            self._slots.append(_Slot(ram))
        if vm_fd is None:
            return
        for number, slot in enumerate(self._slots):
            region = kvm_abi.KvmUserspaceMemoryRegion(
                slot=number,
                flags=0,
                guest_phys_addr=slot.range.gpa,
                memory_size=slot.range.size,
                userspace_addr=slot.address,
            )
            try:
                fcntl.ioctl(vm_fd, kvm_abi.KVM_SET_USER_MEMORY_REGION, region)
            except OSError as exc:
                raise PlatformError(
                    f"KVM_SET_USER_MEMORY_REGION {slot.range.gpa:#x}: {exc}"
                ) from exc

    @property
    def ranges(self) -> list[RamRange]:
        return [slot.range for slot in self._slots]

    @property
    def size(self) -> int:
        return sum(slot.range.size for slot in self._slots)

    def _locate(self, gpa: int, length: int) -> tuple[_Slot, int]:
        if not self._slots:
            raise InputError("guest memory is closed")
        if gpa < 0 or length < 0:
            raise InputError(f"negative guest address or length: {gpa:#x}+{length:#x}")
        for slot in self._slots:
            if slot.range.gpa <= gpa < slot.range.end or (length == 0 and gpa == slot.range.end):
                if gpa + length > slot.range.end:
                    break
                return slot, gpa - slot.range.gpa
        raise InputError(
            f"guest access {gpa:#x}+{length:#x} is outside guest RAM "
            f"({', '.join(f'{r.gpa:#x}-{r.end:#x}' for r in self.ranges)})"
        )

    def contains(self, gpa: int, length: int) -> bool:
        """Whether ``[gpa, gpa + length)`` lies inside one RAM range."""
        try:
            self._locate(gpa, length)
        except InputError:
            return False
        return True

    def host_address(self, gpa: int, length: int) -> int:
        """The VMM's own address of ``[gpa, gpa + length)`` (inside one range), for the kernel."""
        slot, offset = self._locate(gpa, length)
        return slot.address + offset

    def read(self, gpa: int, length: int) -> bytes:
        slot, offset = self._locate(gpa, length)
        return slot.map[offset : offset + length]

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        slot, offset = self._locate(gpa, len(data))
        slot.map[offset : offset + len(data)] = data

    def read_u64(self, gpa: int) -> int:
        return int.from_bytes(self.read(gpa, 8), "little")

    def close(self) -> None:
        """Unmap everything (call after the VM fd is closed). Idempotent."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.map.close()

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
