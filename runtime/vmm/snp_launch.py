"""The ``snp`` backend's host side: an SEV-SNP launch through Linux's KVM SNP API, and its exits.

``SnpLaunch`` owns the whole sequence for one keep, in the order KVM 6.12 requires
(``Documentation/virt/kvm/x86/amd-memory-encryption.rst``, ``arch/x86/kvm/svm/sev.c``):

1. ``create()`` — ``KVM_CREATE_VM(KVM_X86_SNP_VM)`` once ``KVM_CAP_VM_TYPES`` offers it, the
   capabilities an SNP launch needs are there and the host's C-bit (``KVM_GET_SUPPORTED_CPUID``
   0x8000001F EBX[5:0], ``runtime.vmm.snp_cpuid``) is the plan's (else refused, naming both);
   the plan's CPUID page is filled with that supported CPUID (measured by its size only);
   ``KVM_SEV_INIT2`` with the plan's SEV_FEATURES
   (minus SNP_ACTIVE, which KVM sets itself; refused if KVM does not support them); the
   ``KVM_HC_MAP_GPA_RANGE`` exit enabled; guest RAM as memslots with a shared mapping *and* a
   guest_memfd behind them (``KVM_CREATE_GUEST_MEMFD``, ``KVM_SET_USER_MEMORY_REGION2``); every
   launched region set PRIVATE (``KVM_SET_MEMORY_ATTRIBUTES``). Everything else stays shared
   until the guest converts it.
2. ``start()`` — ``KVM_SEV_SNP_LAUNCH_START`` with the plan's guest policy.
3. ``update()`` — one ``KVM_SEV_SNP_LAUNCH_UPDATE`` per plan region, repeated until KVM reports
   ``len`` 0 (it may process part of a region per call), retried on EAGAIN/EINTR; a CPUID page
   the firmware rejects (EIO, firmware status INVALID_PARAM) comes back corrected in the source
   buffer: it is read, the differing words are reported, and the launch fails.
4. ``finish()`` — the vCPUs are created and given their initial state (``vcpu_setup``), then
   ``KVM_SEV_SNP_LAUNCH_FINISH`` with the ID block, its authentication page and HOST_DATA (KVM
   builds and measures each vCPU's VMSA here).

Private memory cannot be read back, so the VMM measures what it *hands over*: before every
LAUNCH_UPDATE it reads the source bytes from its own mapping and, for the pages KVM reports done,
extends a ``toolchain.snp.digest.LaunchDigest`` with exactly those bytes. ``expected_digest()``
adds the plan's VMSA pages and is what the firmware's MEASUREMENT must equal; a plan whose
regions do not produce the plan's own digest is refused at once.

The plan must be an ``snp`` plan (``build_plan(..., platform="snp")``): its page tables carry the
C-bit, its VMSA pages are the ones KVM builds from the vCPU registers at LAUNCH_FINISH
(``toolchain.snp.vmsa.kvm_snp_vmsa``, Linux v6.12), and its private/shared split is its regions:
every launched region is set PRIVATE, everything else (the GHCB, the hypercall page and buffer,
heap and stack until the guest converts them) stays shared.

All system calls go through an ``SnpSystem`` (``RealSnpSystem`` here), so that the whole sequence
runs in tests against ``runtime.vmm.fake_kvm_snp`` (a FAKE for tests, never a backend).

``SnpExits`` serves the exits an SNP guest causes, on the vCPU's run loop: KVM_EXIT_HYPERCALL
for ``KVM_HC_MAP_GPA_RANGE`` (the guest's page-state change: shared ↔ private through
``KVM_SET_MEMORY_ATTRIBUTES``) and KVM_EXIT_MEMORY_FAULT. Every argument is the guest's and
bounds-checked: a hostile one ends the keep (``GuestError``), never the VMM.

``keep run --backend snp`` drives it (``runtime.run.backends.SnpBackend``). Not run on SNP
hardware yet: ``tests/hardware/`` is the test that does, where there is an SNP host.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from runtime.vmm import kvm_abi, kvm_snp
from runtime.vmm.errors import GuestError
from runtime.vmm.memory import PAGE_SIZE, GuestMemory, RamRange
from runtime.vmm.snp_cpuid import HostCpu, cpuid_page, host_cpu
from toolchain.errors import InputError, PlatformError
from toolchain.snp.digest import VMSA_GPA, LaunchDigest, PageType

if TYPE_CHECKING:
    from runtime.vmm.vcpu import Vcpu
    from toolchain.measure.plan import LaunchPlan, Region
    from toolchain.snp.vmsa import VcpuState

KVM_DEVICE = "/dev/kvm"
SEV_DEVICE = "/dev/sev"
#: How often one LAUNCH_UPDATE (or a memory-attribute change) is retried on EAGAIN/EINTR.
MAX_RETRIES = 16
#: LAUNCH_UPDATE calls in a row that process nothing before the launch is given up.
MAX_STALLS = 16
#: Capabilities an SNP launch needs besides the VM type: (capability, name).
REQUIRED_CAPS = (
    (kvm_snp.KVM_CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD"),
    (kvm_snp.KVM_CAP_USER_MEMORY2, "KVM_CAP_USER_MEMORY2"),
    (kvm_snp.KVM_CAP_MEMORY_ATTRIBUTES, "KVM_CAP_MEMORY_ATTRIBUTES"),
)
_MAP_GPA_PAGE_SIZES = {
    kvm_snp.KVM_MAP_GPA_RANGE_PAGE_SZ_4K: "4K",
    kvm_snp.KVM_MAP_GPA_RANGE_PAGE_SZ_2M: "2M",
    kvm_snp.KVM_MAP_GPA_RANGE_PAGE_SZ_1G: "1G",
}
_MAP_GPA_KNOWN_BITS = kvm_snp.KVM_MAP_GPA_RANGE_PAGE_SZ_MASK | kvm_snp.KVM_MAP_GPA_RANGE_ENCRYPTED
_U64 = 1 << 64


class SnpSystem(Protocol):
    """The system calls of an SNP launch: open a device, an ioctl, close an fd.

    ``ioctl`` passes a ctypes structure by address (the kernel may write it back) or an integer,
    returns the ioctl's non-negative result and raises ``OSError`` on failure.
    """

    def open(self, path: str) -> int: ...

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure | int) -> int: ...

    def close(self, fd: int) -> None: ...


class RealSnpSystem:
    """The real thing: ``os.open`` and ``fcntl.ioctl``."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure | int) -> int:
        if isinstance(arg, int):
            return int(fcntl.ioctl(fd, request, arg))
        return int(fcntl.ioctl(fd, request, arg, True))

    def close(self, fd: int) -> None:
        os.close(fd)


class Closeable(Protocol):
    def close(self) -> None: ...


#: Creates the VM's vCPUs and gives them their initial state (before LAUNCH_FINISH, which
#: measures them); returns what must be closed with the VM (the real one: ``Vcpu`` objects).
VcpuSetup = Callable[[int, Sequence["VcpuState"]], Sequence[Closeable]]


class CpuidRejectedError(PlatformError):
    """The firmware refused the CPUID page; ``corrected`` is the page it wrote back."""

    def __init__(self, message: str, *, corrected: bytes, handed: bytes) -> None:
        super().__init__(
            message,
            hint="give the keep CPUID values this host's firmware accepts "
            "(KVM_GET_SUPPORTED_CPUID filtered by the SNP CPUID policy)",
        )
        self.corrected = corrected
        self.handed = handed


@dataclass
class LaunchFigures:
    """What the launch did, for figures and tests."""

    update_calls: int = 0
    retries: int = 0
    pages: dict[str, int] = field(default_factory=dict)


def _errno_text(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def describe_cpuid_difference(handed: bytes, corrected: bytes) -> str:
    """The 32-bit words of the CPUID page the firmware changed: ``+0x24: 0x1 -> 0x0, ...``."""
    changes = []
    for offset in range(0, min(len(handed), len(corrected)) - 3, 4):
        old = int.from_bytes(handed[offset : offset + 4], "little")
        new = int.from_bytes(corrected[offset : offset + 4], "little")
        if old != new:
            changes.append(f"+{offset:#x}: {old:#x} -> {new:#x}")
    if not changes:
        return "no word differs (the firmware refused the page without correcting it)"
    more = f" (and {len(changes) - 8} more)" if len(changes) > 8 else ""
    return ", ".join(changes[:8]) + more


class SnpLaunch:
    """One SNP keep's VM, from ``KVM_CREATE_VM`` to ``LAUNCH_FINISH``; ``close()`` frees it all."""

    def __init__(
        self,
        plan: LaunchPlan,
        *,
        vcpus: int = 1,
        system: SnpSystem | None = None,
        vcpu_setup: VcpuSetup | None = None,
        kvm_path: str = KVM_DEVICE,
        sev_path: str = SEV_DEVICE,
    ) -> None:
        self.plan = plan
        #: The launch's vCPU count (an argument of the launch, not of the plan).
        self.vcpu_count = len(plan.vcpu_states(vcpus))
        self.system: SnpSystem = system if system is not None else RealSnpSystem()
        self._vcpu_setup = vcpu_setup if vcpu_setup is not None else real_vcpu_setup
        self.kvm_path = kvm_path
        self.sev_path = sev_path
        self.kvm_fd = self.vm_fd = self.sev_fd = self.gmem_fd = -1
        self.memory: GuestMemory | None = None
        #: The host's supported CPUID (read at ``create``): C-bit, generation, CPUID page.
        self.host: HostCpu | None = None
        self.vcpus: list[Closeable] = []
        self._last_firmware_error = 0
        #: The launch digest of the bytes handed to LAUNCH_UPDATE so far (VMSAs not included).
        self.measured = LaunchDigest()
        self.figures = LaunchFigures()
        self.step = "new"
        self._check_plan()

    # ---- the plan's promises -----------------------------------------------------------------
    def _check_plan(self) -> None:
        if self.plan.platform != "snp":
            # Another platform's plan has no C-bit in its tables and the simulated VMSAs: its
            # digest is not what the firmware would report.
            raise InputError(
                f"the plan is laid out for the {self.plan.platform} platform, not snp",
                hint="lay it out with build_plan(..., platform='snp') (snp_plan_of)",
            )
        features = self.plan.sev_features
        if not features & kvm_snp.SVM_SEV_FEAT_SNP_ACTIVE:
            raise InputError(
                f"the plan's SEV_FEATURES {features:#x} lack SNP_ACTIVE (bit 0): "
                "it is not a plan for an SNP launch"
            )

    def _expect(self, step: str, then: str) -> None:
        if self.step != step:
            raise InputError(f"SNP launch out of order: {then} after {self.step!r}, not {step!r}")
        self.step = then

    # ---- the sequence ------------------------------------------------------------------------
    def launch(
        self,
        *,
        id_block: bytes | None = None,
        id_auth: bytes | None = None,
        host_data: bytes = bytes(32),
    ) -> bytes:
        """The whole launch; returns ``expected_digest()`` (what MEASUREMENT must be).

        On any failure every fd and mapping is released before the error propagates.
        """
        try:
            self.create()
            self.start()
            self.update()
            self.finish(id_block=id_block, id_auth=id_auth, host_data=host_data)
        except BaseException:
            self.close()
            raise
        return self.expected_digest()

    def create(self) -> None:
        """The SNP VM, INIT2, the hypercall exit, private memory, launched regions PRIVATE."""
        self._expect("new", "created")
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        self.kvm_fd = self._open(self.kvm_path)
        version = self._ioctl(self.kvm_fd, kvm_abi.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        if version != kvm_abi.KVM_API_VERSION:
            raise PlatformError(f"{self.kvm_path} speaks KVM API {version}, expected 12")
        missing = snp_missing_capabilities(self.system, self.kvm_fd)
        if missing:
            raise PlatformError(
                "this KVM cannot launch an SNP guest: " + "; ".join(missing),
                hint="an AMD EPYC host with SEV-SNP enabled in the BIOS, Linux >= 6.11 with "
                "kvm_amd.sev_snp=1, and /dev/sev (keep platform says what this host lacks)",
            )
        self._check_vmsa_features()
        host = self.host = self._check_host_cpu()
        self.vm_fd = self._ioctl(
            self.kvm_fd, kvm_abi.KVM_CREATE_VM, kvm_abi.KVM_X86_SNP_VM, "KVM_CREATE_VM(SNP)"
        )
        self.sev_fd = self._open(self.sev_path)
        init = kvm_snp.KvmSevInit(
            vmsa_features=self.plan.sev_features & ~kvm_snp.SVM_SEV_FEAT_SNP_ACTIVE,
            flags=0,
            ghcb_version=kvm_snp.SNP_GHCB_VERSION,
        )
        self._sev_command(kvm_snp.KVM_SEV_INIT2, init, "KVM_SEV_INIT2")
        cap = kvm_snp.KvmEnableCap(cap=kvm_snp.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << kvm_snp.KVM_HC_MAP_GPA_RANGE
        self._ioctl(self.vm_fd, kvm_snp.KVM_ENABLE_CAP, cap, "KVM_ENABLE_CAP(EXIT_HYPERCALL)")
        ranges = [RamRange(gpa, size) for gpa, size in self.plan.memory_ranges()]
        self.memory = GuestMemory(ranges)
        self.gmem_fd = register_private_memory(self.system, self.vm_fd, self.memory)
        for region in self.plan.regions:
            if region.data is not None:
                self.memory.write(region.gpa, region.data)
            elif region.page_type is PageType.CPUID:
                # Measured by its size only: the host's CPUID, which the firmware checks, is
                # what the guest reads its C-bit and features from.
                self.memory.write(region.gpa, cpuid_page(host))
        for region in self.plan.regions:
            try:
                set_memory_attributes(
                    self.system, self.vm_fd, region.gpa, region.size, private=True
                )
            except OSError as exc:
                raise PlatformError(
                    f"KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) {region.label or ''} at "
                    f"{region.gpa:#x}+{region.size:#x} failed: {_errno_text(exc)}"
                ) from exc

    def _check_host_cpu(self) -> HostCpu:
        """The host's supported CPUID; its C-bit must be the one the plan's tables carry."""
        host = host_cpu(self.system, self.kvm_fd)
        if host.c_bit != self.plan.c_bit:
            # Private pages would be mapped with the wrong bit: the keep could not run, and its
            # digest is not the one a reference for this host's C-bit lists.
            raise PlatformError(
                f"the plan is laid out for C-bit {self.plan.c_bit}, but this host's C-bit "
                f"(CPUID 0x8000001F EBX[5:0]) is {host.c_bit}",
                hint=f"lay the snp plan out with c_bit={host.c_bit} (host: {host.describe()})",
            )
        return host

    def _check_vmsa_features(self) -> None:
        supported = ctypes.c_uint64()
        attr = kvm_snp.KvmDeviceAttr(
            group=kvm_snp.KVM_X86_GRP_SEV,
            attr=kvm_snp.KVM_X86_SEV_VMSA_FEATURES,
            addr=ctypes.addressof(supported),
        )
        self._ioctl(self.kvm_fd, kvm_snp.KVM_GET_DEVICE_ATTR, attr, "SEV VMSA features")
        wanted = self.plan.sev_features & ~kvm_snp.SVM_SEV_FEAT_SNP_ACTIVE
        extra = wanted & ~supported.value
        if extra:
            raise PlatformError(
                f"the plan's SEV_FEATURES {self.plan.sev_features:#x} need bits {extra:#x} "
                f"that this KVM does not offer (supported: {supported.value:#x})"
            )

    def start(self) -> None:
        """KVM_SEV_SNP_LAUNCH_START with the plan's guest policy."""
        self._expect("created", "started")
        start = kvm_snp.KvmSevSnpLaunchStart(policy=self.plan.guest_policy)
        self._sev_command(kvm_snp.KVM_SEV_SNP_LAUNCH_START, start, "SNP_LAUNCH_START")

    def update(self) -> None:
        """One LAUNCH_UPDATE per plan region, each measured from the bytes handed over."""
        self._expect("started", "updated")
        for region in self.plan.regions:
            self._launch_update(region)
        planned, found = self.plan.launch_digest(self.vcpu_count), self.expected_digest()
        if found != planned:
            # The bytes handed over are not the plan's: no signed reference would match.
            raise PlatformError(
                "the launched regions do not measure as the plan does: "
                f"expected {planned.hex()}, found {found.hex()}"
            )

    def _launch_update(self, region: Region) -> None:
        ram = self._ram()
        params = kvm_snp.KvmSevSnpLaunchUpdate(
            gfn_start=region.gpa // PAGE_SIZE,
            uaddr=ram.host_address(region.gpa, region.size),
            len=region.size,
            type=int(region.page_type),
        )
        # What the kernel copies from, read once (nothing writes the buffer during the loop);
        # each part is measured once KVM says it is done. ZERO pages have no source.
        zero = region.page_type is PageType.ZERO
        source = memoryview(b"" if zero else ram.read(region.gpa, region.size))
        retries = stalls = 0
        what = f"SNP_LAUNCH_UPDATE {region.page_type.name} {region.label or ''} at {region.gpa:#x}"
        while params.len:
            gfn, uaddr, length = int(params.gfn_start), int(params.uaddr), int(params.len)
            gpa = gfn * PAGE_SIZE
            handed = source[gpa - region.gpa :]
            self.figures.update_calls += 1
            try:
                self._sev_command(kvm_snp.KVM_SEV_SNP_LAUNCH_UPDATE, params, what, raw=True)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR) and retries < MAX_RETRIES:
                    retries += 1
                    self.figures.retries += 1
                    params.gfn_start, params.uaddr, params.len = gfn, uaddr, length
                    continue
                raise self._update_failed(
                    exc, region, gpa, bytes(handed[:PAGE_SIZE]), what
                ) from exc
            done = _progress(params, (gfn, uaddr, length), region.page_type, what)
            if done == 0:
                stalls += 1
                if stalls >= MAX_STALLS:
                    raise PlatformError(f"{what}: KVM processed nothing {stalls} times in a row")
                continue
            stalls = 0
            if region.page_type is PageType.NORMAL:
                self.measured.update(region.page_type, gpa, handed[:done])
            else:
                self.measured.update(region.page_type, gpa, size=done)
            name = region.page_type.name
            self.figures.pages[name] = self.figures.pages.get(name, 0) + done // PAGE_SIZE

    def _update_failed(
        self, exc: OSError, region: Region, gpa: int, handed: bytes, what: str
    ) -> PlatformError:
        error = self._last_firmware_error
        if (
            exc.errno == errno.EIO
            and region.page_type is PageType.CPUID
            and error == kvm_snp.SEV_RET_INVALID_PARAM
        ):
            # sev_gmem_post_populate() copied the firmware's corrected page back to the source
            # buffer. KVM fails on the first bad page; a CPUID region is one page.
            corrected = self._ram().read(gpa, PAGE_SIZE)
            return CpuidRejectedError(
                f"{what}: the firmware rejected the CPUID page (status "
                f"{kvm_snp.sev_error_name(error)}); it corrected: "
                + describe_cpuid_difference(handed, corrected),
                corrected=corrected,
                handed=handed,
            )
        return PlatformError(
            f"{what} failed: {_errno_text(exc)}, firmware status {kvm_snp.sev_error_name(error)}"
        )

    def finish(
        self,
        *,
        id_block: bytes | None = None,
        id_auth: bytes | None = None,
        host_data: bytes = bytes(32),
    ) -> None:
        """Create and set up the vCPUs, then KVM_SEV_SNP_LAUNCH_FINISH."""
        if len(host_data) != 32:
            raise InputError(f"HOST_DATA must be 32 bytes, got {len(host_data)}")
        if (id_block is None) != (id_auth is None):
            raise InputError("an ID block needs its ID authentication structure, and back")
        if id_block is not None and len(id_block) != kvm_snp.KVM_SEV_SNP_ID_BLOCK_SIZE:
            raise InputError(f"the ID block must be 96 bytes, got {len(id_block)}")
        if id_auth is not None and len(id_auth) != kvm_snp.KVM_SEV_SNP_ID_AUTH_SIZE:
            raise InputError(
                f"the ID authentication structure must be 4096 bytes, got {len(id_auth)}"
            )
        self._expect("updated", "finished")
        self.vcpus = list(self._vcpu_setup(self.vm_fd, self.plan.vcpu_states(self.vcpu_count)))
        block = ctypes.create_string_buffer(id_block or b"", kvm_snp.KVM_SEV_SNP_ID_BLOCK_SIZE)
        auth = ctypes.create_string_buffer(id_auth or b"", kvm_snp.KVM_SEV_SNP_ID_AUTH_SIZE)
        finish = kvm_snp.KvmSevSnpLaunchFinish(
            id_block_uaddr=ctypes.addressof(block) if id_block is not None else 0,
            id_auth_uaddr=ctypes.addressof(auth) if id_auth is not None else 0,
            id_block_en=1 if id_block is not None else 0,
            auth_key_en=0,
        )
        ctypes.memmove(finish.host_data, host_data, 32)
        self._sev_command(kvm_snp.KVM_SEV_SNP_LAUNCH_FINISH, finish, "SNP_LAUNCH_FINISH")

    def expected_digest(self) -> bytes:
        """MEASUREMENT as it must be: the measured regions, then the plan's VMSA pages."""
        digest = self.measured.copy()
        for page in self.plan.vmsa_pages(self.vcpu_count):
            digest.update(PageType.VMSA, VMSA_GPA, page)
        return digest.digest()

    def exits(self) -> SnpExits:
        """The handlers for this VM's SNP exits (install them on each vCPU)."""
        return SnpExits(self.system, self.vm_fd, self._ram().ranges)

    # ---- plumbing ----------------------------------------------------------------------------
    def _ram(self) -> GuestMemory:
        if self.memory is None:
            raise InputError("the SNP VM is not created (or already closed)")
        return self.memory

    def _open(self, path: str) -> int:
        try:
            return self.system.open(path)
        except FileNotFoundError:
            raise PlatformError(
                f"{path} does not exist: this host cannot launch SNP guests"
            ) from None
        except PermissionError:
            raise PlatformError(f"no permission to open {path}") from None
        except OSError as exc:
            raise PlatformError(f"cannot open {path}: {_errno_text(exc)}") from exc

    def _ioctl(self, fd: int, request: int, arg: ctypes.Structure | int, what: str) -> int:
        try:
            return self.system.ioctl(fd, request, arg)
        except OSError as exc:
            raise PlatformError(f"{what} failed: {_errno_text(exc)}") from exc

    def _sev_command(
        self, command: int, payload: ctypes.Structure, what: str, *, raw: bool = False
    ) -> None:
        """KVM_MEMORY_ENCRYPT_OP; ``raw`` lets the OSError through (LAUNCH_UPDATE decides)."""
        cmd = kvm_snp.KvmSevCmd(
            id=command, data=ctypes.addressof(payload), error=0, sev_fd=self.sev_fd
        )
        try:
            self.system.ioctl(self.vm_fd, kvm_snp.KVM_MEMORY_ENCRYPT_OP, cmd)
        except OSError as exc:
            self._last_firmware_error = int(cmd.error)
            if raw:
                raise
            raise PlatformError(
                f"{what} failed: {_errno_text(exc)}, "
                f"firmware status {kvm_snp.sev_error_name(int(cmd.error))}"
            ) from exc
        self._last_firmware_error = 0

    def close(self) -> None:
        """vCPUs, guest_memfd, /dev/sev, the VM, /dev/kvm, then the RAM. Idempotent."""
        vcpus, self.vcpus = self.vcpus, []
        for vcpu in vcpus:
            vcpu.close()
        for name in ("gmem_fd", "sev_fd", "vm_fd", "kvm_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                self.system.close(fd)
        if self.memory is not None:
            self.memory.close()
            self.memory = None

    def __enter__(self) -> SnpLaunch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _progress(
    params: kvm_snp.KvmSevSnpLaunchUpdate,
    before: tuple[int, int, int],
    page_type: PageType,
    what: str,
) -> int:
    """Bytes KVM processed; it advances gfn_start, uaddr (not for ZERO) and len together."""
    gfn, uaddr, length = before
    done = length - int(params.len)
    expected_uaddr = uaddr if page_type is PageType.ZERO else uaddr + done
    if (
        done < 0
        or done % PAGE_SIZE
        or int(params.gfn_start) != gfn + done // PAGE_SIZE
        or int(params.uaddr) != expected_uaddr
    ):
        raise PlatformError(
            f"{what}: KVM reported inconsistent progress: len {length:#x} -> "
            f"{int(params.len):#x}, gfn {gfn:#x} -> {int(params.gfn_start):#x}, "
            f"uaddr {uaddr:#x} -> {int(params.uaddr):#x}"
        )
    return done


# ---- pieces that also work on a VM that is not SNP -------------------------------------------
def snp_missing_capabilities(system: SnpSystem, kvm_fd: int) -> list[str]:
    """What this KVM lacks for an SNP launch, one phrase each (empty: nothing)."""

    def check(cap: int) -> int:
        try:
            return system.ioctl(kvm_fd, kvm_abi.KVM_CHECK_EXTENSION, cap)
        except OSError:
            return 0

    missing = []
    types = check(kvm_abi.KVM_CAP_VM_TYPES)
    if not types >> kvm_abi.KVM_X86_SNP_VM & 1:
        missing.append(f"KVM_CAP_VM_TYPES {types:#x} lacks KVM_X86_SNP_VM (bit 4)")
    missing += [f"no {name}" for cap, name in REQUIRED_CAPS if not check(cap)]
    exits = check(kvm_snp.KVM_CAP_EXIT_HYPERCALL)
    if not exits >> kvm_snp.KVM_HC_MAP_GPA_RANGE & 1:
        missing.append(f"KVM_CAP_EXIT_HYPERCALL {exits:#x} lacks KVM_HC_MAP_GPA_RANGE")
    return missing


def register_private_memory(system: SnpSystem, vm_fd: int, memory: GuestMemory) -> int:
    """One guest_memfd for all of ``memory``, one memslot per range; returns the guest_memfd.

    Each slot's shared pages are the VMM's mapping, its private pages the guest_memfd at the
    range's offset (ranges packed in GPA order).
    """
    create = kvm_snp.KvmCreateGuestMemfd(size=memory.size, flags=0)
    try:
        gmem = system.ioctl(vm_fd, kvm_snp.KVM_CREATE_GUEST_MEMFD, create)
    except OSError as exc:
        raise PlatformError(f"KVM_CREATE_GUEST_MEMFD failed: {_errno_text(exc)}") from exc
    try:
        offset = 0
        for slot, ram in enumerate(memory.ranges):
            region = kvm_snp.KvmUserspaceMemoryRegion2(
                slot=slot,
                flags=kvm_snp.KVM_MEM_GUEST_MEMFD,
                guest_phys_addr=ram.gpa,
                memory_size=ram.size,
                userspace_addr=memory.host_address(ram.gpa, ram.size),
                guest_memfd_offset=offset,
                guest_memfd=gmem,
            )
            try:
                system.ioctl(vm_fd, kvm_snp.KVM_SET_USER_MEMORY_REGION2, region)
            except OSError as exc:
                raise PlatformError(
                    f"KVM_SET_USER_MEMORY_REGION2 slot {slot} at {ram.gpa:#x}: {_errno_text(exc)}"
                ) from exc
            offset += ram.size
    except BaseException:
        system.close(gmem)
        raise
    return gmem


def set_memory_attributes(
    system: SnpSystem, vm_fd: int, gpa: int, size: int, *, private: bool
) -> None:
    """KVM_SET_MEMORY_ATTRIBUTES on ``[gpa, gpa + size)``, retried on EAGAIN/EINTR.

    KVM may process part of the range and write the rest back (``address``/``size``); the call
    is repeated until ``size`` is 0. Raises ``OSError`` for the caller to classify.
    """
    attributes = kvm_snp.KvmMemoryAttributes(
        address=gpa,
        size=size,
        attributes=kvm_snp.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0,
        flags=0,
    )
    retries = 0
    while attributes.size:
        try:
            system.ioctl(vm_fd, kvm_snp.KVM_SET_MEMORY_ATTRIBUTES, attributes)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR) and retries < MAX_RETRIES:
                retries += 1
                continue
            raise
        else:
            # KVM 6.12 only writes the struct back on failure; a success covered it all.
            return


# ---- the run loop's SNP exits ----------------------------------------------------------------
class SnpExits:
    """Handlers for KVM_EXIT_HYPERCALL (MAP_GPA_RANGE), KVM_EXIT_MEMORY_FAULT and the guest's
    termination request (KVM_EXIT_SYSTEM_EVENT).

    ``ranges`` is the guest RAM with a guest_memfd behind it: the only GPAs a page-state change
    may name. Counters: ``to_private`` / ``to_shared`` pages converted.
    """

    def __init__(self, system: SnpSystem, vm_fd: int, ranges: Sequence[RamRange]) -> None:
        self.system = system
        self.vm_fd = vm_fd
        self.ranges = tuple(ranges)
        self.to_private = 0
        self.to_shared = 0

    def install(self, vcpu: Vcpu) -> None:
        """Serve both exits on ``vcpu``."""
        vcpu.serve(kvm_abi.KVM_EXIT_HYPERCALL, self.on_hypercall)
        vcpu.serve(kvm_abi.KVM_EXIT_MEMORY_FAULT, self.on_memory_fault)
        vcpu.serve(kvm_abi.KVM_EXIT_SYSTEM_EVENT, self.on_system_event)

    def _inside(self, gpa: int, size: int) -> bool:
        return any(r.gpa <= gpa and gpa + size <= r.end for r in self.ranges)

    def _where(self) -> str:
        return ", ".join(f"{r.gpa:#x}-{r.end:#x}" for r in self.ranges)

    def on_hypercall(self, run: kvm_abi.KvmRun) -> int | None:
        call = run.hypercall
        number = int(call.nr)
        if number != kvm_snp.KVM_HC_MAP_GPA_RANGE:
            raise GuestError(
                f"hypercall {number} (only KVM_HC_MAP_GPA_RANGE, 12, is served)",
                call="KVM_EXIT_HYPERCALL",
            )
        gpa, pages, attrs = int(call.args[0]), int(call.args[1]), int(call.args[2])
        name = "MAP_GPA_RANGE"
        if attrs & ~_MAP_GPA_KNOWN_BITS:
            raise GuestError(f"unknown attribute bits {attrs:#x}", call=name, argument="attrs")
        if attrs & kvm_snp.KVM_MAP_GPA_RANGE_PAGE_SZ_MASK not in _MAP_GPA_PAGE_SIZES:
            raise GuestError(
                f"page size {attrs & 0xF} is not 4K/2M/1G", call=name, argument="attrs"
            )
        if gpa % PAGE_SIZE:
            raise GuestError(f"GPA {gpa:#x} is not 4 KiB aligned", call=name, argument="gpa")
        if pages <= 0 or pages * PAGE_SIZE + gpa >= _U64:
            raise GuestError(f"{pages} pages at {gpa:#x}", call=name, argument="npages")
        size = pages * PAGE_SIZE
        if not self._inside(gpa, size):
            raise GuestError(
                f"{gpa:#x}+{size:#x} is not inside the keep's private-capable RAM "
                f"({self._where()})",
                call=name,
                argument="gpa",
            )
        private = bool(attrs & kvm_snp.KVM_MAP_GPA_RANGE_ENCRYPTED)
        try:
            set_memory_attributes(self.system, self.vm_fd, gpa, size, private=private)
        except OSError as exc:
            # Past the bounds checks a refusal is the host's; the keep cannot go on either way.
            raise GuestError(
                f"the host could not make {gpa:#x}+{size:#x} "
                f"{'private' if private else 'shared'}: {_errno_text(exc)}",
                call=name,
            ) from exc
        if private:
            self.to_private += pages
        else:
            self.to_shared += pages
        call.ret = 0
        return None

    def on_memory_fault(self, run: kvm_abi.KvmRun) -> int | None:
        """The guest touched a page in the other state than it asked for: end the keep.

        A keep converts pages explicitly (page-state change, served above) before it uses them;
        an implicit conversion (what QEMU does here) would hide a guest bug, or let the host
        pick the page's state, so this VMM never converts on a fault.
        """
        fault = run.memory_fault
        flags, gpa, size = int(fault.flags), int(fault.gpa), int(fault.size)
        wanted = "private" if flags & kvm_snp.KVM_MEMORY_EXIT_FLAG_PRIVATE else "shared"
        other = flags & ~kvm_snp.KVM_MEMORY_EXIT_FLAG_PRIVATE
        where = "inside" if self._inside(gpa, max(size, 1)) else "outside"
        raise GuestError(
            f"the keep accessed {gpa:#x}+{size:#x} ({where} its RAM) as {wanted} memory while "
            f"the page is {'shared' if wanted == 'private' else 'private'}"
            + (f" (unknown fault flags {other:#x})" if other else ""),
            call="KVM_EXIT_MEMORY_FAULT",
            hint="the keep must convert pages (page-state change) before using them",
        )

    def on_system_event(self, run: kvm_abi.KvmRun) -> int | None:
        """A system event ends the keep. The one an SNP keep causes itself is the GHCB MSR
        protocol's termination request: the microkernel's only way to stop before its GHCB is
        registered, so its reason never reaches the host (runtime/guest/ukernel/platform.c)."""
        event = run.system_event
        kind = int(event.type)
        if kind == kvm_snp.KVM_SYSTEM_EVENT_SEV_TERM:
            msr = int(event.data[0]) if int(event.ndata) else 0
            raise GuestError(
                "the keep stopped itself before its GHCB was registered (GHCB MSR termination "
                f"request {msr:#x}: reason set {msr >> 12 & 0xF}, code {msr >> 16 & 0xFF}); "
                "the microkernel sends no reason this early",
                call="KVM_EXIT_SYSTEM_EVENT",
            )
        raise GuestError(
            f"system event {kind} (only the SEV termination request, "
            f"{kvm_snp.KVM_SYSTEM_EVENT_SEV_TERM}, is expected of a keep)",
            call="KVM_EXIT_SYSTEM_EVENT",
        )


def real_vcpu_setup(vm_fd: int, states: Sequence[VcpuState]) -> list[Closeable]:
    """Create the vCPUs on the real VM and give each its initial state (boot CPU first).

    Each gets KVM's supported CPUID (the CPUID page the firmware checks must agree with it).
    """
    from runtime.vmm.vcpu import Vcpu, write_vcpu_state
    from runtime.vmm.vm import open_kvm, supported_cpuid

    kvm_fd = open_kvm()
    try:
        mmap_size = int(fcntl.ioctl(kvm_fd, kvm_abi.KVM_GET_VCPU_MMAP_SIZE))
        cpuid = supported_cpuid(kvm_fd)
    finally:
        os.close(kvm_fd)
    vcpus: list[Closeable] = []
    try:
        for index, state in enumerate(states):
            vcpu = Vcpu(vm_fd, index, mmap_size, cpuid)
            vcpus.append(vcpu)
            write_vcpu_state(vcpu, state)
    except BaseException:
        for done in vcpus:
            done.close()
        raise
    return vcpus
