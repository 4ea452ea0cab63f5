"""A vCPU and its run loop: one handler per KVM exit reason.

The loop runs the vCPU in the calling thread. It ends when the doorbell handler returns an exit
status (the guest called EXIT), or raises ``GuestError`` for everything a guest must not do:
touching memory that does not exist, port I/O, halting, triple faults, entry failures, emulation
failures, and any exit reason this VMM does not know. A watchdog thread kicks the vCPU out of
``KVM_RUN`` with a signal when the keep runs past its time limit.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from runtime.vmm import kvm_abi
from runtime.vmm.doorbell import DoorbellHandler, doorbell_access
from runtime.vmm.errors import GuestError, KeepTimeoutError
from toolchain.errors import InputError, PlatformError
from toolchain.measure.abi import DOORBELL_MSR_OFFSET, DOORBELL_PVALIDATE_OFFSET
from toolchain.snp.vmsa import Segment, VcpuState

#: The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing).
KICK_SIGNAL = signal.SIGRTMIN + 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc.ioctl.restype = ctypes.c_int


_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value


def raw_ioctl(fd: int, request: int, arg: int) -> int:
    """ioctl with a full-width integer argument, releasing the GIL; -1 and errno on failure."""
    return int(_libc.ioctl(fd, request, arg))


class GhcbMsr(Protocol):
    """The GHCB MSR as the simulated platform reaches it (runtime/vmm/ghcb.py GhcbServer)."""

    def msr_write(self, value: int) -> None: ...
    def msr_read(self) -> int: ...
    def pvalidate_write(self, value: int) -> None: ...
    def pvalidate_read(self) -> int: ...


_INTERNAL_SUBERRORS = {
    kvm_abi.KVM_INTERNAL_ERROR_EMULATION: "instruction emulation failed",
    kvm_abi.KVM_INTERNAL_ERROR_SIMUL_EX: "simultaneous exceptions",
    kvm_abi.KVM_INTERNAL_ERROR_DELIVERY_EV: "exit while delivering an event",
    kvm_abi.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected hardware exit reason",
}


def _kick_handler(_signum: int, _frame: object) -> None:
    """Nothing to do: the signal only has to interrupt KVM_RUN."""


def install_kick_signal() -> None:
    """Install the no-op handler for ``KICK_SIGNAL`` (must run once in the main thread)."""
    current = signal.getsignal(KICK_SIGNAL)
    if current not in (signal.SIG_DFL, signal.SIG_IGN, None):
        return
    if threading.current_thread() is not threading.main_thread():
        raise PlatformError(
            "the keep watchdog needs its signal handler: run the first keep from the main "
            "thread, or call runtime.vmm.vcpu.install_kick_signal() there first"
        )
    signal.signal(KICK_SIGNAL, _kick_handler)


class _WatchdogService:
    """One daemon thread for every keep's deadline (starting a thread per keep costs ms).

    Firing and disarming happen under one lock, so once ``disarm`` returns the keep's run page
    is never touched again (the VMM unmaps it next).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: set[Watchdog] = set()
        self._thread: threading.Thread | None = None

    def arm(self, dog: Watchdog) -> None:
        with self._cond:
            self._armed.add(dog)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="keep-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def disarm(self, dog: Watchdog) -> None:
        with self._cond:
            self._armed.discard(dog)

    def _serve(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for dog in [d for d in self._armed if d.deadline <= now]:
                    self._armed.discard(dog)
                    dog.fire()
                next_deadline = min((d.deadline for d in self._armed), default=None)
                self._cond.wait(None if next_deadline is None else max(next_deadline - now, 0))


_SERVICE = _WatchdogService()


class Watchdog:
    """Ends ``KVM_RUN`` once ``timeout`` seconds have passed (``fired`` tells the loop why)."""

    def __init__(self, timeout: float, run: kvm_abi.KvmRun) -> None:
        install_kick_signal()
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.fired = False
        self._run = run
        self._thread_id = threading.get_ident()
        _SERVICE.arm(self)

    def fire(self) -> None:
        """Called by the watchdog thread, under its lock, at the deadline."""
        self.fired = True
        self._run.immediate_exit = 1  # covers a kick that lands outside KVM_RUN
        signal.pthread_kill(self._thread_id, KICK_SIGNAL)

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.deadline

    def stop(self) -> None:
        _SERVICE.disarm(self)


class Vcpu:
    """One vCPU fd and its mmap'd ``kvm_run`` page."""

    def __init__(
        self, vm_fd: int, index: int, mmap_size: int, cpuid: ctypes.Structure | None
    ) -> None:
        self.index = index
        self.fd = -1
        self._map_address: int | None = None
        self._run: kvm_abi.KvmRun | None = None
        self._handlers: dict[int, Callable[[kvm_abi.KvmRun], int | None]] = {
            kvm_abi.KVM_EXIT_IO: self._on_io,
            kvm_abi.KVM_EXIT_HLT: self._on_hlt,
            kvm_abi.KVM_EXIT_SHUTDOWN: self._on_shutdown,
            kvm_abi.KVM_EXIT_FAIL_ENTRY: self._on_fail_entry,
            kvm_abi.KVM_EXIT_INTERNAL_ERROR: self._on_internal_error,
            # A signal or a pending interrupt window: nothing to do but re-enter.
            kvm_abi.KVM_EXIT_INTR: _resume,
            kvm_abi.KVM_EXIT_IRQ_WINDOW_OPEN: _resume,
        }
        #: Counters for figures: exits by reason name.
        self.exit_counts: dict[str, int] = {}
        try:
            self.fd = int(fcntl.ioctl(vm_fd, kvm_abi.KVM_CREATE_VCPU, index))
        except OSError as exc:
            raise PlatformError(f"KVM_CREATE_VCPU {index} failed: {exc.strerror}") from exc
        self._map_size = mmap_size
        address = _libc.mmap(
            None, mmap_size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, self.fd, 0
        )
        if address in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            self.close()
            raise PlatformError(f"cannot map the run page of vCPU {index}: {os.strerror(err)}")
        self._map_address = address
        # A view by address (not from_buffer): nothing outside can pin the mapping open.
        self._run = kvm_abi.KvmRun.from_address(address)
        if cpuid is not None:
            try:
                fcntl.ioctl(self.fd, kvm_abi.KVM_SET_CPUID2, cpuid)
            except OSError as exc:
                self.close()
                raise PlatformError(f"KVM_SET_CPUID2 on vCPU {index} failed: {exc}") from exc

    @property
    def run_struct(self) -> kvm_abi.KvmRun:
        if self._run is None:
            raise PlatformError("the vCPU is closed")
        return self._run

    # --- registers -----------------------------------------------------------------------------
    def _get(self, request: int, struct: ctypes.Structure) -> None:
        try:
            fcntl.ioctl(self.fd, request, struct)
        except OSError as exc:
            raise PlatformError(f"vCPU {self.index}: ioctl {request:#x} failed: {exc}") from exc

    def get_regs(self) -> kvm_abi.KvmRegs:
        regs = kvm_abi.KvmRegs()
        self._get(kvm_abi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: kvm_abi.KvmRegs) -> None:
        self._get(kvm_abi.KVM_SET_REGS, regs)

    def get_sregs(self) -> kvm_abi.KvmSregs:
        sregs = kvm_abi.KvmSregs()
        self._get(kvm_abi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: kvm_abi.KvmSregs) -> None:
        self._get(kvm_abi.KVM_SET_SREGS, sregs)

    def get_fpu(self) -> kvm_abi.KvmFpu:
        fpu = kvm_abi.KvmFpu()
        self._get(kvm_abi.KVM_GET_FPU, fpu)
        return fpu

    def set_fpu(self, fpu: kvm_abi.KvmFpu) -> None:
        self._get(kvm_abi.KVM_SET_FPU, fpu)

    def get_xsave(self) -> kvm_abi.KvmXsave:
        xsave = kvm_abi.KvmXsave()
        self._get(kvm_abi.KVM_GET_XSAVE, xsave)
        return xsave

    def set_xsave(self, xsave: kvm_abi.KvmXsave) -> None:
        self._get(kvm_abi.KVM_SET_XSAVE, xsave)

    def get_debugregs(self) -> kvm_abi.KvmDebugregs | None:
        debug = kvm_abi.KvmDebugregs()
        try:
            fcntl.ioctl(self.fd, kvm_abi.KVM_GET_DEBUGREGS, debug)
        except OSError:
            return None
        return debug

    def set_debugregs(self, debug: kvm_abi.KvmDebugregs) -> None:
        self._get(kvm_abi.KVM_SET_DEBUGREGS, debug)

    def get_xcr0(self) -> int | None:
        """XCR0, or None where KVM does not expose XCRs."""
        xcrs = kvm_abi.KvmXcrs()
        try:
            fcntl.ioctl(self.fd, kvm_abi.KVM_GET_XCRS, xcrs)
        except OSError:
            return None
        for entry in xcrs.xcrs[: xcrs.nr_xcrs]:
            if entry.xcr == 0:
                return int(entry.value)
        return None

    def set_xcr0(self, value: int) -> None:
        xcrs = kvm_abi.KvmXcrs()
        xcrs.nr_xcrs = 1
        xcrs.xcrs[0].xcr = 0
        xcrs.xcrs[0].value = value
        self._get(kvm_abi.KVM_SET_XCRS, xcrs)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        msrs = kvm_abi.kvm_msrs(len(indices))()
        msrs.nmsrs = len(indices)
        for slot, index in enumerate(indices):
            msrs.entries[slot].index = index
        try:
            got = fcntl.ioctl(self.fd, kvm_abi.KVM_GET_MSRS, msrs)
        except OSError as exc:
            raise PlatformError(f"vCPU {self.index}: KVM_GET_MSRS failed: {exc}") from exc
        return {int(msrs.entries[i].index): int(msrs.entries[i].data) for i in range(got)}

    def set_msrs(self, values: dict[int, int]) -> None:
        msrs = kvm_abi.kvm_msrs(len(values))()
        msrs.nmsrs = len(values)
        for slot, (index, data) in enumerate(values.items()):
            msrs.entries[slot].index = index
            msrs.entries[slot].data = data
        try:
            done = fcntl.ioctl(self.fd, kvm_abi.KVM_SET_MSRS, msrs)
        except OSError as exc:
            raise PlatformError(f"vCPU {self.index}: KVM_SET_MSRS failed: {exc}") from exc
        if done != len(values):
            bad = list(values)[done]
            raise PlatformError(f"vCPU {self.index}: KVM refused MSR {bad:#x}")

    # --- the run loop ----------------------------------------------------------------------------
    def serve(self, reason: int, handler: Callable[[kvm_abi.KvmRun], int | None]) -> None:
        """Serve exit ``reason`` with ``handler`` too (the SNP backend adds its exits this way)."""
        self._handlers[reason] = handler

    def run(
        self,
        *,
        doorbell_gpa: int,
        on_doorbell: DoorbellHandler,
        watchdog: Watchdog,
        on_vmgexit: DoorbellHandler | None = None,
        ghcb_msr: GhcbMsr | None = None,
    ) -> int:
        """Run until the guest exits (returns its status) or misbehaves (raises GuestError).

        ``on_vmgexit`` serves the doorbell value 2, what the simulated platform's microkernel
        writes instead of VMGEXIT (ABI version 4); without it that value is refused. ``ghcb_msr``
        serves the 64-bit accesses at the doorbell + ``DOORBELL_MSR_OFFSET`` that replace
        WRMSR+VMGEXIT and RDMSR of the GHCB MSR; without it they are refused."""
        run = self.run_struct
        counts = self.exit_counts
        while True:
            if watchdog.expired():
                raise _timeout(watchdog)
            if raw_ioctl(self.fd, kvm_abi.KVM_RUN, 0) < 0:
                err = ctypes.get_errno()
                if err in (errno.EINTR, errno.EAGAIN):
                    run.immediate_exit = 0
                    counts["EINTR"] = counts.get("EINTR", 0) + 1
                    continue
                raise PlatformError(f"KVM_RUN failed: {os.strerror(err)}")
            status = self.handle_exit(
                run,
                doorbell_gpa=doorbell_gpa,
                on_doorbell=on_doorbell,
                on_vmgexit=on_vmgexit,
                ghcb_msr=ghcb_msr,
            )
            if status is not None:
                return status

    def handle_exit(
        self,
        run: kvm_abi.KvmRun,
        *,
        doorbell_gpa: int,
        on_doorbell: DoorbellHandler,
        on_vmgexit: DoorbellHandler | None = None,
        ghcb_msr: GhcbMsr | None = None,
    ) -> int | None:
        """Serve one exit: None to resume the guest, its exit status, or GuestError."""
        reason = int(run.exit_reason)
        name = kvm_abi.EXIT_REASON_NAMES.get(reason, str(reason))
        self.exit_counts[name] = self.exit_counts.get(name, 0) + 1
        if reason == kvm_abi.KVM_EXIT_MMIO:
            mmio = run.mmio
            if ghcb_msr is not None and mmio.phys_addr == doorbell_gpa + DOORBELL_MSR_OFFSET:
                _on_ghcb_msr(mmio, ghcb_msr.msr_write, ghcb_msr.msr_read)
                return None
            if ghcb_msr is not None and mmio.phys_addr == doorbell_gpa + DOORBELL_PVALIDATE_OFFSET:
                _on_ghcb_msr(mmio, ghcb_msr.pvalidate_write, ghcb_msr.pvalidate_read)
                return None
            return self._on_mmio(run, doorbell_gpa, on_doorbell, on_vmgexit)
        handler = self._handlers.get(reason)
        if handler is None:
            raise GuestError(
                f"vCPU {self.index} stopped with exit reason {reason} ({name}), "
                "which this VMM does not serve"
            )
        return handler(run)

    def _rip(self) -> str:
        try:
            regs = self.get_regs()
        except PlatformError:
            return "unknown"
        return f"{regs.rip:#x}"

    def _on_mmio(
        self,
        run: kvm_abi.KvmRun,
        doorbell_gpa: int,
        on_doorbell: DoorbellHandler,
        on_vmgexit: DoorbellHandler | None,
    ) -> int | None:
        mmio = run.mmio
        gpa, length = int(mmio.phys_addr), int(mmio.len)
        if gpa == doorbell_gpa:
            value = int.from_bytes(bytes(mmio.data[: min(length, 8)]), "little")
            return doorbell_access(
                length, value if mmio.is_write else None, on_doorbell, on_vmgexit
            )
        access = "write to" if mmio.is_write else "read from"
        raise GuestError(
            f"{access} GPA {gpa:#x} ({length} bytes), where there is no memory, "
            f"at RIP {self._rip()}",
            hint="a bad pointer in the guest, or an access outside the keep's RAM",
        )

    def _on_io(self, run: kvm_abi.KvmRun) -> int | None:
        io = run.io
        direction = "out to" if io.direction == kvm_abi.KVM_EXIT_IO_OUT else "in from"
        raise GuestError(
            f"port I/O ({direction} port {io.port:#x}, {io.size} bytes) at RIP {self._rip()}: "
            "the hypercall ABI uses the MMIO doorbell only"
        )

    def _on_hlt(self, _run: kvm_abi.KvmRun) -> int | None:
        raise GuestError(f"the guest halted at RIP {self._rip()} without calling EXIT")

    def _on_shutdown(self, _run: kvm_abi.KvmRun) -> int | None:
        raise GuestError(
            f"the guest triple-faulted (shutdown) at RIP {self._rip()}",
            hint="a fault the microkernel could not handle, e.g. a bad page table or IDT",
        )

    def _on_fail_entry(self, run: kvm_abi.KvmRun) -> int | None:
        reason = int(run.fail_entry.hardware_entry_failure_reason)
        raise GuestError(
            f"KVM could not enter the guest (hardware entry failure reason {reason:#x}, "
            f"cpu {run.fail_entry.cpu})",
            hint="the initial vCPU state in the launch plan is not a valid x86 state",
        )

    def _on_internal_error(self, run: kvm_abi.KvmRun) -> int | None:
        internal = run.internal
        what = _INTERNAL_SUBERRORS.get(internal.suberror, f"suberror {internal.suberror}")
        data = " ".join(f"{internal.data[i]:#x}" for i in range(min(internal.ndata, 16)))
        raise GuestError(
            f"KVM internal error: {what} at RIP {self._rip()}" + (f" [{data}]" if data else ""),
            hint="on a software KVM (PVM) this includes SSE instructions in ring 0",
        )

    def close(self) -> None:
        """Unmap the run page and close the vCPU fd. Idempotent."""
        self._run = None
        if self._map_address is not None:
            _libc.munmap(self._map_address, self._map_size)
            self._map_address = None
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _resume(_run: kvm_abi.KvmRun) -> int | None:
    return None


def _timeout(watchdog: Watchdog) -> KeepTimeoutError:
    return KeepTimeoutError.after(watchdog.timeout)


# --- architectural state, as the VMSA holds it ---------------------------------------------------
SEGMENT_NAMES = {  # VcpuState field -> kvm_sregs field
    "es": "es", "cs": "cs", "ss": "ss", "ds": "ds", "fs": "fs", "gs": "gs",
    "ldtr": "ldt", "tr": "tr",
}  # fmt: skip
GPR_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
#: VcpuState field -> MSR index, for the MSRs the VMSA carries and KVM exposes.
STATE_MSRS = {
    "g_pat": 0x277,
    "star": 0xC0000081,
    "lstar": 0xC0000082,
    "cstar": 0xC0000083,
    "sfmask": 0xC0000084,
    "kernel_gs_base": 0xC0000102,
    "sysenter_cs": 0x174,
    "sysenter_esp": 0x175,
    "sysenter_eip": 0x176,
}
EFER_SVME = 0x1000


def _segment_from_kvm(seg: kvm_abi.KvmSegment) -> Segment:
    # The VMCB/VMSA attribute bits, whether or not KVM calls the segment "unusable".
    attrib = (
        (seg.type & 0xF)
        | (seg.s & 1) << 4
        | (seg.dpl & 3) << 5
        | (seg.present & 1) << 7
        | (seg.avl & 1) << 8
        | (seg.l & 1) << 9
        | (seg.db & 1) << 10
        | (seg.g & 1) << 11
    )
    return Segment(int(seg.selector), attrib, int(seg.limit), int(seg.base))


def _segment_to_kvm(state: Segment, seg: kvm_abi.KvmSegment) -> None:
    attrib = state.attrib
    seg.selector = state.selector
    seg.base = state.base
    seg.limit = state.limit
    seg.type = attrib & 0xF
    seg.s = (attrib >> 4) & 1
    seg.dpl = (attrib >> 5) & 3
    seg.present = (attrib >> 7) & 1
    seg.avl = (attrib >> 8) & 1
    seg.l = (attrib >> 9) & 1
    seg.db = (attrib >> 10) & 1
    seg.g = (attrib >> 11) & 1
    seg.unusable = 0 if seg.present else 1


def _xsave_field(raw: bytes | bytearray, offset: int, size: int) -> int:
    return int.from_bytes(raw[offset : offset + size], "little")


def _fp_registers(xsave: bytes) -> dict[str, bytes]:
    """The VMSA's FPU register files from an XSAVE image, in their shortest form (the VMSA
    zero-pads them, so trailing zero bytes carry nothing)."""
    st = b"".join(
        xsave[kvm_abi.XSAVE_ST_OFFSET + 16 * i : kvm_abi.XSAVE_ST_OFFSET + 16 * i + 10]
        for i in range(8)
    )
    xmm = xsave[kvm_abi.XSAVE_XMM_OFFSET : kvm_abi.XSAVE_XMM_OFFSET + 256]
    xstate_bv = _xsave_field(xsave, kvm_abi.XSAVE_HEADER_OFFSET, 8)
    ymm = b""
    if xstate_bv & kvm_abi.XSTATE_AVX:
        ymm = xsave[kvm_abi.XSAVE_YMM_HI_OFFSET : kvm_abi.XSAVE_YMM_HI_OFFSET + 256]
    return {
        "fpreg_x87": st.rstrip(b"\0"),
        "fpreg_xmm": xmm.rstrip(b"\0"),
        "fpreg_ymm": ymm.rstrip(b"\0"),
    }


def _put_fp_registers(raw: bytearray, state: VcpuState) -> None:
    x87 = state.fpreg_x87.ljust(80, b"\0")
    for i in range(8):
        start = kvm_abi.XSAVE_ST_OFFSET + 16 * i
        raw[start : start + 10] = x87[10 * i : 10 * i + 10]
    raw[kvm_abi.XSAVE_XMM_OFFSET : kvm_abi.XSAVE_XMM_OFFSET + 256] = state.fpreg_xmm.ljust(
        256, b"\0"
    )
    raw[kvm_abi.XSAVE_YMM_HI_OFFSET : kvm_abi.XSAVE_YMM_HI_OFFSET + 256] = state.fpreg_ymm.ljust(
        256, b"\0"
    )
    # The legacy area (x87 and SSE) is loaded only for the components marked in XSTATE_BV.
    xstate_bv = _xsave_field(raw, kvm_abi.XSAVE_HEADER_OFFSET, 8)
    xstate_bv |= kvm_abi.XSTATE_X87 | kvm_abi.XSTATE_SSE
    if any(state.fpreg_ymm):
        xstate_bv |= kvm_abi.XSTATE_AVX
    raw[kvm_abi.XSAVE_HEADER_OFFSET : kvm_abi.XSAVE_HEADER_OFFSET + 8] = xstate_bv.to_bytes(
        8, "little"
    )


def read_vcpu_state(vcpu: Vcpu) -> VcpuState:
    """The vCPU's real state read back from KVM, in VMSA terms (what the firmware measures).

    EFER gains SVME as on AMD hardware, where KVM runs every guest with it set and copies it
    into the VMSA; CPL is SS.DPL, as the VMCB keeps it.
    """
    regs = vcpu.get_regs()
    sregs = vcpu.get_sregs()
    # x87/SSE control state from the XSAVE image: KVM_GET_FPU reports MXCSR as 0 on some hosts.
    xsave = bytes(vcpu.get_xsave())
    msrs = vcpu.get_msrs(list(STATE_MSRS.values()))
    xcr0 = vcpu.get_xcr0()
    values: dict[str, object] = {name: int(getattr(regs, name)) for name in GPR_NAMES}
    values.update(
        {name: _segment_from_kvm(getattr(sregs, kvm)) for name, kvm in SEGMENT_NAMES.items()}
    )
    values.update(
        rip=int(regs.rip),
        rflags=int(regs.rflags),
        gdtr=Segment(0, 0, int(sregs.gdt.limit), int(sregs.gdt.base)),
        idtr=Segment(0, 0, int(sregs.idt.limit), int(sregs.idt.base)),
        cr0=int(sregs.cr0),
        cr2=int(sregs.cr2),
        cr3=int(sregs.cr3),
        cr4=int(sregs.cr4),
        efer=int(sregs.efer) | EFER_SVME,
        cpl=int(sregs.ss.dpl),
        xcr0=1 if xcr0 is None else xcr0,
        x87_fcw=_xsave_field(xsave, kvm_abi.XSAVE_FCW_OFFSET, 2),
        x87_fsw=_xsave_field(xsave, kvm_abi.XSAVE_FSW_OFFSET, 2),
        x87_fop=_xsave_field(xsave, kvm_abi.XSAVE_FOP_OFFSET, 2),
        mxcsr=_xsave_field(xsave, kvm_abi.XSAVE_MXCSR_OFFSET, 4),
        **_fp_registers(xsave),
    )
    for name, index in STATE_MSRS.items():
        if index in msrs:
            values[name] = msrs[index]
    debug = vcpu.get_debugregs()
    if debug is not None:
        values.update(
            dr0=int(debug.db[0]),
            dr1=int(debug.db[1]),
            dr2=int(debug.db[2]),
            dr3=int(debug.db[3]),
            dr6=int(debug.dr6),
            dr7=int(debug.dr7),
        )
    try:
        return VcpuState(**values)
    except InputError as exc:
        raise PlatformError(f"KVM reported a vCPU state the VMSA cannot hold: {exc}") from exc


def write_vcpu_state(vcpu: Vcpu, state: VcpuState) -> None:
    """Load the plan's initial state into the vCPU. KVM refusing it is a ``PlatformError``.

    EFER goes in without SVME (KVM manages that bit itself).
    """
    sregs = vcpu.get_sregs()
    for name, kvm in SEGMENT_NAMES.items():
        _segment_to_kvm(getattr(state, name), getattr(sregs, kvm))
    sregs.gdt.base, sregs.gdt.limit = state.gdtr.base, state.gdtr.limit
    sregs.idt.base, sregs.idt.limit = state.idtr.base, state.idtr.limit
    sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4 = state.cr0, state.cr2, state.cr3, state.cr4
    sregs.efer = state.efer & ~EFER_SVME
    vcpu.set_sregs(sregs)
    regs = kvm_abi.KvmRegs()
    for name in GPR_NAMES:
        setattr(regs, name, getattr(state, name))
    regs.rip, regs.rflags = state.rip, state.rflags
    vcpu.set_regs(regs)
    raw = bytearray(vcpu.get_xsave())
    for offset, size, value in (
        (kvm_abi.XSAVE_FCW_OFFSET, 2, state.x87_fcw),
        (kvm_abi.XSAVE_FSW_OFFSET, 2, state.x87_fsw),
        (kvm_abi.XSAVE_FOP_OFFSET, 2, state.x87_fop),
        (kvm_abi.XSAVE_MXCSR_OFFSET, 4, state.mxcsr),
    ):
        raw[offset : offset + size] = value.to_bytes(size, "little")
    _put_fp_registers(raw, state)
    vcpu.set_xsave(kvm_abi.KvmXsave.from_buffer_copy(raw))
    if vcpu.get_xcr0() is not None:
        vcpu.set_xcr0(state.xcr0)
    vcpu.set_msrs({index: getattr(state, name) for name, index in STATE_MSRS.items()})
    debug = vcpu.get_debugregs()
    if debug is not None:
        for slot in range(4):
            debug.db[slot] = getattr(state, f"dr{slot}")
        debug.dr6, debug.dr7 = state.dr6, state.dr7
        vcpu.set_debugregs(debug)


def _on_ghcb_msr(
    mmio: kvm_abi.KvmRunMmio, write: Callable[[int], None], read: Callable[[], int]
) -> None:
    """A 64-bit write is WRMSR+VMGEXIT (or PVALIDATE), a 64-bit read RDMSR (or PVALIDATE's
    result; KVM completes the read from ``data``)."""
    if int(mmio.len) != 8:
        raise GuestError(
            f"GHCB MSR or PVALIDATE port accessed with {int(mmio.len)} bytes (the ABI uses 8)"
        )
    if mmio.is_write:
        write(int.from_bytes(bytes(mmio.data), "little"))
    else:
        mmio.data[:] = list(read().to_bytes(8, "little"))
