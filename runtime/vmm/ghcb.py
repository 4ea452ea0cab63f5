"""The VMM's half of the GHCB: SNP Guest Request, and why a microkernel stopped before ring 3.

ABI version 4 (``runtime/guest/ukernel/ABI.md``): the microkernel asks for its attestation report
as an SNP guest message, sealed under VMPCK0, through the GHCB (GHCB specification v2, AMD pub.
56421: NAE event SNP Guest Request, SW_EXITCODE 0x8000_0011, SW_EXITINFO1/2 the request and
response pages). On SEV-SNP hardware that is a VMGEXIT that KVM serves; on the simulated platform
the microkernel's platform layer replaces only the VMGEXIT instruction with the doorbell value
``DOORBELL_VMGEXIT``, and ``GhcbServer.serve`` plays KVM's part: it checks the GHCB's format
and every GPA the guest names (both pages must lie in the shared hypercall buffer: the VMM
never touches private memory on the guest's say-so), hands the request page to the firmware's
``guest_request`` and writes the sealed response page back. A refusal by the firmware is not the
VMM's to judge: like KVM it reports it to the guest in SW_EXITINFO2 (the firmware status in
bits 31:0) and keeps the firmware's words for the runner (``failure``); the guest then stops.

Before that, the microkernel speaks the GHCB MSR protocol (GHCB spec v2 §2.3.1): it registers
the GHCB's GPA (request 0x12, answer 0x13 with the registered GFN) and asks for page-state
changes to shared (request 0x14, answer 0x15 with an error code in bits 63:32) of the hypercall
page, the GHCB page and the data buffer. On the simulated platform a 64-bit write at the
doorbell + ``DOORBELL_MSR_OFFSET`` is WRMSR and VMGEXIT, a 64-bit read there RDMSR;
``msr_write``/``msr_read`` play the hypervisor: a registration of any GPA but the plan's GHCB
page is refused (GFN all ones), a page-state change outside the shared pages gets an error, and
``shared_gfns`` records what the guest made shared.

The microkernel's own doorbell writes (its hypercalls, its FAULT report, and ring 3's doorbell
stores that its #VC handler forwards on SEV-SNP) are GHCB MMIO Write requests (SW_EXITCODE
0x8000_0002, SW_EXITINFO1 the GPA, SW_EXITINFO2 the length, the data at SW_SCRATCH in the GHCB's
shared buffer). On SNP hardware KVM turns them into the plain MMIO exit the VMM already serves;
here ``serve`` does what KVM does: it answers SW_EXITINFO1 = SW_EXITINFO2 = 0 and hands the
access to ``runtime.vmm.doorbell.doorbell_access``, the very handler of a plain MMIO exit. It
serves MMIO requests (read or write) for the doorbell's GPA only and refuses any other GPA, a
length other than 1, 2, 4 or 8, and a SW_SCRATCH outside the shared buffer.

Then it makes the heap and stack private: Page State Change NAE events (SW_EXITCODE
0x8000_0010, the descriptor in the GHCB's shared buffer named by SW_SCRATCH), served like KVM's
``snp_begin_psc``: every entry checked (operation private or shared, GFN aligned to its page
size, inside RAM, never a page the VMM shares), the RMP model (``rmp.Rmp``)
updated, the header's cur_entry advanced past end_entry; a bad header or entry stops there with
the error in SW_EXITINFO2 (Linux ``VMGEXIT_PSC_ERROR_*``). PVALIDATE, the guest's own
instruction, the simulated platform replaces with the doorbell + ``DOORBELL_PVALIDATE_OFFSET``
pair that ``pvalidate_write``/``pvalidate_read`` serve from the same RMP.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from runtime.vmm.doorbell import DoorbellHandler, doorbell_access
from runtime.vmm.errors import GuestError
from runtime.vmm.memory import GuestMemory
from runtime.vmm.rmp import Rmp
from toolchain.errors import InputError, KeepError
from toolchain.measure.abi import (
    GHCB_MSR_PSC_REQ,
    GHCB_MSR_PSC_RESP,
    GHCB_MSR_REG_GPA_REQ,
    GHCB_MSR_REG_GPA_RESP,
    GHCB_SHARED_BUFFER_OFFSET,
    PSC_MAX_ENTRY,
    PSC_PRIVATE,
    PSC_SHARED,
    SVM_VMGEXIT_PSC,
)
from toolchain.measure.abi import STOP_REASONS as ABI_STOP_REASONS

GHCB_SIZE = 0x1000
SW_EXIT_CODE = 0x390
SW_EXIT_INFO_1 = 0x398
SW_EXIT_INFO_2 = 0x3A0
SW_SCRATCH = 0x3A8
VALID_BITMAP = 0x3F0
PROTOCOL_VERSION = 0xFFA
USAGE = 0xFFC
GHCB_VERSION = 2
SVM_VMGEXIT_GUEST_REQUEST = 0x8000_0011
SVM_VMGEXIT_MMIO_READ = 0x8000_0001
SVM_VMGEXIT_MMIO_WRITE = 0x8000_0002
SW_SCRATCH = 0x3A8
#: The GHCB's shared buffer, where SW_SCRATCH points for an MMIO request or a page-state change
#: (Linux struct ghcb).
SHARED_BUFFER = GHCB_SHARED_BUFFER_OFFSET
SHARED_BUFFER_SIZE = 0x7F0
#: SW_EXITCODE, SW_EXITINFO1/2: marked valid in every NAE event (GHCB spec v2, table 7).
_EXIT_FIELDS = (
    ("SW_EXITCODE", SW_EXIT_CODE),
    ("SW_EXITINFO1", SW_EXIT_INFO_1),
    ("SW_EXITINFO2", SW_EXIT_INFO_2),
)
#: SW_EXITINFO2 for a request the firmware refused: SEV_RET_INVALID_PARAM (Linux psp-sev.h).
FIRMWARE_REFUSED = 0x16
PAGE_SIZE = 0x1000
#: The registration answer's GFN when the hypervisor refuses (GHCB spec: all ones).
GFN_REFUSED = (1 << 52) - 1
#: The page-state change's error code for a page the VMM does not share (nonzero: refused).
PSC_REFUSED = 1
#: SW_EXITINFO2 of a refused Page State Change NAE event (Linux asm/sev-common.h).
PSC_ERROR_INVALID_HDR = 1 << 32 | 1
PSC_ERROR_INVALID_ENTRY = 1 << 32 | 2
PSC_DESCRIPTOR = GHCB_SHARED_BUFFER_OFFSET  # where in the GHCB the guest puts the descriptor
PSC_GFN_MASK = (1 << 40) - 1
LARGE_PAGE = 0x200000

#: The KEEP_STOP_* reasons of keep_abi.h: EXIT(125, reason, expected, found) before ring 3.
STOP_REASONS = dict(ABI_STOP_REASONS.values())
#: The reasons that are the GHCB MSR protocol's (registration, page-state change), not the report's.
SETUP_REASONS = frozenset(
    ABI_STOP_REASONS[name][0] for name in ("GHCB_REG_INFO", "GHCB_REG_GFN", "PSC_INFO", "PSC_ERROR")
)
#: The reasons of making the heap and stack private (pvalidate.c): EXIT's argument 4 is the GPA.
RAM_REASONS = frozenset(
    ABI_STOP_REASONS[name][0]
    for name in ("PSC_NAE", "PSC_END_ENTRY", "PSC_CUR_ENTRY", "PVALIDATE", "PVALIDATE_UNCHANGED")
)
#: The reasons of the C-bit check against the CPUID page (cbit.c, SNP only).
CPUID_REASONS = frozenset(ABI_STOP_REASONS[name][0] for name in ("CPUID_LEAF", "C_BIT"))

#: The firmware's SNP_GUEST_REQUEST: one sealed request page in, one sealed response page out.
GuestRequest = Callable[[bytes], bytes]


#: The reasons the microkernel may stop for at any time, ring 3 running or not: the host's
#: answer to a doorbell MMIO request, and a #VC it does not handle.
RUNTIME_REASONS = frozenset(
    ABI_STOP_REASONS[name][0]
    for name in (
        "MMIO_EXITINFO1",
        "MMIO_EXITINFO2",
        "VC_EXIT_CODE",
        "VC_RING",
        "VC_INSTRUCTION",
        "VC_GPA",
    )
)
_VC_INSTRUCTION = ABI_STOP_REASONS["VC_INSTRUCTION"][0]


def stop_message(reason: int, expected: int, found: int, gpa: int = 0) -> str:
    """What the microkernel's EXIT(125, reason, expected, found, gpa) says."""
    what = STOP_REASONS.get(reason)
    if what is None:
        return f"the microkernel stopped before ring 3 (reason {reason}, unknown to this VMM)"
    if reason == _VC_INSTRUCTION:
        # expected: the RIP; found: up to 8 bytes there, little-endian (runtime/guest/ukernel/vc.h)
        code = found.to_bytes(8, "little").hex(" ")
        return (
            f"the microkernel stopped the keep: {what}: at RIP {expected:#x}, found the bytes "
            f"{code} (the #VC handler forwards only a `mov $imm32, (%reg)` to the doorbell)"
        )
    if reason in RUNTIME_REASONS:
        return f"the microkernel stopped the keep: {what}: expected {expected:#x}, found {found:#x}"
    if reason in RAM_REASONS:
        return (
            "the microkernel stopped before ring 3, its heap and stack could not be made "
            f"private and validated: {what} at GPA {gpa:#x}: expected {expected:#x}, "
            f"found {found:#x}"
        )
    if reason in CPUID_REASONS:
        return (
            f"the microkernel stopped before ring 3: {what}: expected {expected:#x}, "
            f"found {found:#x}"
        )
    if reason in SETUP_REASONS:
        return (
            f"the microkernel stopped before ring 3, the host refused its GHCB setup: {what}: "
            f"expected {expected:#x}, found {found:#x}"
        )
    return (
        f"the microkernel refused its attestation report: {what}: expected {expected:#x}, "
        f"found {found:#x}"
    )


class GhcbServer:
    """Serves one keep's GHCB exits (SNP Guest Request, Page State Change) and its GHCB MSR and
    simulated PVALIDATE. Create one per keep."""

    def __init__(
        self,
        memory: GuestMemory,
        *,
        ghcb: int,
        shared: tuple[int, int],
        guest_request: GuestRequest,
        hc_page: int | None = None,
        doorbell: int | None = None,
        on_doorbell: DoorbellHandler | None = None,
        rmp: Rmp | None = None,
    ) -> None:
        self.memory = memory
        # The doorbell and its handler (the hypercall server's), for MMIO requests; without
        # them every MMIO request is refused.
        self.doorbell = doorbell
        self.on_doorbell = on_doorbell
        self.mmio_requests = 0
        self.ghcb = ghcb
        self.shared = shared  # [start, end) the guest may name as request/response pages
        self.guest_request = guest_request
        self.failure: str | None = None
        self.requests = 0
        # The pages the guest may make shared: the GHCB, the hypercall page, the data buffer.
        gfns = {ghcb // PAGE_SIZE, *range(shared[0] // PAGE_SIZE, shared[1] // PAGE_SIZE)}
        self.shareable = frozenset(
            gfns | ({hc_page // PAGE_SIZE} if hc_page is not None else set())
        )
        self.shared_gfns: set[int] = set()
        self.registered: int | None = None  # the GHCB's GFN, once registered
        self.msr = 0  # the GHCB MSR as the guest will read it back
        self.rmp = rmp  # page states for PSC and PVALIDATE; None: neither is served
        self.psc_exits = 0

    def msr_write(self, value: int) -> None:
        """WRMSR of the GHCB MSR and VMGEXIT: answer one MSR-protocol request in ``msr``."""
        info, data = value & 0xFFF, value >> 12
        if info == GHCB_MSR_REG_GPA_REQ:
            ok = data == self.ghcb // PAGE_SIZE
            self.registered = data if ok else self.registered
            self.msr = (data if ok else GFN_REFUSED) << 12 | GHCB_MSR_REG_GPA_RESP
        elif info == GHCB_MSR_PSC_REQ:
            gfn, operation = data & ((1 << 40) - 1), value >> 52 & 0xF  # bits 51:12, 55:52
            ok = operation == PSC_SHARED and gfn in self.shareable
            if ok:
                self.shared_gfns.add(gfn)
                if self.rmp is not None:
                    self.rmp.change(gfn * PAGE_SIZE, PAGE_SIZE, private=False)
            self.msr = (0 if ok else PSC_REFUSED) << 32 | GHCB_MSR_PSC_RESP
        else:
            raise GuestError(
                f"GHCB MSR request {info:#x} is not served (registration "
                f"{GHCB_MSR_REG_GPA_REQ:#x} and page-state change {GHCB_MSR_PSC_REQ:#x} are)",
                call="VMGEXIT",
                argument="GHCBInfo",
            )

    def msr_read(self) -> int:
        """RDMSR of the GHCB MSR: the answer to the last request."""
        return self.msr

    def _rmp(self, what: str) -> Rmp:
        if self.rmp is None:
            raise self._fail(what, "not served: this VMM models no RMP for the keep")
        return self.rmp

    def pvalidate_write(self, value: int) -> None:
        """The simulated PVALIDATE (the doorbell + DOORBELL_PVALIDATE_OFFSET, written)."""
        self._rmp("PVALIDATE").request(value)

    def pvalidate_read(self) -> int:
        """Its result: bits 31:0 EAX, bit 32 CF."""
        return self._rmp("PVALIDATE").answer()

    def _fail(self, field: str, message: str) -> GuestError:
        return GuestError(message, call="VMGEXIT", argument=field)

    def _page(self, field: str, gpa: int) -> int:
        start, end = self.shared
        if gpa % PAGE_SIZE or not start <= gpa <= end - PAGE_SIZE:
            raise self._fail(
                field,
                f"page {gpa:#x} is not a page of the shared hypercall buffer "
                f"[{start:#x}, {end:#x})",
            )
        return gpa

    def serve(self) -> int | None:
        """One VMGEXIT: check the GHCB, serve the event (SNP Guest Request, Page State Change, an
        MMIO request for the doorbell). Returns the keep's exit status when the event was a
        doorbell write that ended it (EXIT), else None (resume the guest)."""
        if self.registered is None:
            raise self._fail("GHCB MSR", "the GHCB was used before its GPA was registered")
        ghcb = self.memory.read(self.ghcb, GHCB_SIZE)
        (usage,) = struct.unpack_from("<I", ghcb, USAGE)
        (version,) = struct.unpack_from("<H", ghcb, PROTOCOL_VERSION)
        if usage != 0 or version != GHCB_VERSION:
            raise self._fail(
                "GHCB_USAGE",
                f"GHCB usage {usage} version {version} (expected usage 0, version {GHCB_VERSION})",
            )
        self._require_valid(ghcb, _EXIT_FIELDS)
        code, info1, info2 = struct.unpack_from("<QQQ", ghcb, SW_EXIT_CODE)
        if code in (SVM_VMGEXIT_MMIO_READ, SVM_VMGEXIT_MMIO_WRITE):
            self._require_valid(ghcb, (("SW_SCRATCH", SW_SCRATCH),))
            (scratch,) = struct.unpack_from("<Q", ghcb, SW_SCRATCH)
            return self._mmio(code == SVM_VMGEXIT_MMIO_WRITE, info1, info2, scratch)
        if code == SVM_VMGEXIT_PSC:
            answer = self._psc(
                ghcb, int.from_bytes(ghcb[VALID_BITMAP : VALID_BITMAP + 16], "little")
            )
        elif code == SVM_VMGEXIT_GUEST_REQUEST:
            answer = self._guest_request(info1, info2)
        else:
            raise self._fail(
                "SW_EXITCODE",
                f"exit code {code:#x} is not served (SNP Guest Request "
                f"{SVM_VMGEXIT_GUEST_REQUEST:#x}, Page State Change {SVM_VMGEXIT_PSC:#x}, MMIO "
                f"read {SVM_VMGEXIT_MMIO_READ:#x} and write {SVM_VMGEXIT_MMIO_WRITE:#x} are)",
            )
        self.memory.write(self.ghcb + SW_EXIT_INFO_2, struct.pack("<Q", answer))
        return None

    def _require_valid(self, ghcb: bytes, names: Sequence[tuple[str, int]]) -> None:
        valid = int.from_bytes(ghcb[VALID_BITMAP : VALID_BITMAP + 16], "little")
        for name, offset in names:
            if not valid >> (offset // 8) & 1:
                raise self._fail(name, "not marked valid in the GHCB's valid bitmap")

    def _guest_request(self, info1: int, info2: int) -> int:
        """SNP Guest Request: the request page to the firmware, its answer to the response page."""
        request = self.memory.read(self._page("SW_EXITINFO1", info1), PAGE_SIZE)
        response_gpa = self._page("SW_EXITINFO2", info2)
        self.requests += 1
        try:
            response = self.guest_request(request)
        except KeepError as exc:
            self.failure = exc.message
            return FIRMWARE_REFUSED
        if len(response) != PAGE_SIZE:
            raise InputError(f"the firmware answered with {len(response)} bytes, not a page")
        self.memory.write(response_gpa, response)
        return 0

    def _psc(self, ghcb: bytes, valid: int) -> int:
        """One Page State Change: serve entries cur_entry..end_entry, advance the header."""
        rmp = self._rmp("SW_EXITCODE")
        (scratch,) = struct.unpack_from("<Q", ghcb, SW_SCRATCH)
        if not valid >> (SW_SCRATCH // 8) & 1 or scratch != self.ghcb + PSC_DESCRIPTOR:
            raise self._fail(
                "SW_SCRATCH",
                f"the descriptor at {scratch:#x} is not the GHCB's shared buffer "
                f"({self.ghcb + PSC_DESCRIPTOR:#x}), or not marked valid",
            )
        self.psc_exits += 1
        cur, end, reserved = struct.unpack_from("<HHI", ghcb, PSC_DESCRIPTOR)
        if reserved or end >= PSC_MAX_ENTRY or cur > end:
            return PSC_ERROR_INVALID_HDR
        answer = 0
        for index in range(cur, end + 1):
            (entry,) = struct.unpack_from("<Q", ghcb, PSC_DESCRIPTOR + 8 * (1 + index))
            if not self._psc_entry(rmp, entry):
                cur, answer = index, PSC_ERROR_INVALID_ENTRY
                break
        else:
            cur = end + 1
        self.memory.write(self.ghcb + PSC_DESCRIPTOR, struct.pack("<H", cur))
        return answer

    def _psc_entry(self, rmp: Rmp, entry: int) -> bool:
        """One entry: to private anywhere in RAM but the shared pages, to shared only those."""
        gpa = (entry >> 12 & PSC_GFN_MASK) * PAGE_SIZE
        operation, size = entry >> 52 & 0xF, LARGE_PAGE if entry >> 56 & 1 else PAGE_SIZE
        pages = range(gpa // PAGE_SIZE, (gpa + size) // PAGE_SIZE)
        if entry & 0xFFF or entry >> 57 or operation not in (PSC_PRIVATE, PSC_SHARED):
            return False  # cur_page, reserved bits, unknown operations: never partial here
        if operation == PSC_SHARED and not set(pages) <= self.shareable:
            return False
        if operation == PSC_PRIVATE and not self.shareable.isdisjoint(pages):
            return False
        return rmp.change(gpa, size, private=operation == PSC_PRIVATE)

    def _mmio(self, write: bool, gpa: int, length: int, scratch: int) -> int | None:
        """MMIO Read/Write (SW_EXITINFO1 the GPA, SW_EXITINFO2 the length, the data at
        SW_SCRATCH in the GHCB's shared buffer), as KVM serves it: answered 0/0, then handed to
        the doorbell's handler exactly as a plain MMIO exit is. Only the doorbell is served."""
        if self.doorbell is None or self.on_doorbell is None:
            raise self._fail("SW_EXITINFO1", f"MMIO request for GPA {gpa:#x}: none is served")
        if gpa != self.doorbell:
            raise self._fail(
                "SW_EXITINFO1",
                f"MMIO request for GPA {gpa:#x}: only the doorbell {self.doorbell:#x} is served",
            )
        if length not in (1, 2, 4, 8):
            raise self._fail("SW_EXITINFO2", f"MMIO length {length} (1, 2, 4 or 8 bytes)")
        start = self.ghcb + SHARED_BUFFER
        if not start <= scratch <= start + SHARED_BUFFER_SIZE - length:
            raise self._fail(
                "SW_SCRATCH",
                f"{scratch:#x} is not in the GHCB's shared buffer "
                f"[{start:#x}, {start + SHARED_BUFFER_SIZE:#x})",
            )
        self.memory.write(self.ghcb + SW_EXIT_INFO_1, bytes(16))  # served: SW_EXITINFO1/2 = 0
        value = int.from_bytes(self.memory.read(scratch, length), "little") if write else None
        self.mmio_requests += 1
        return doorbell_access(length, value, self.on_doorbell)
