"""Tiny hand-assembled guests for VMM tests and the VMM benchmark (no microkernel needed).

A mini guest uses the keep's default layout (``toolchain.measure.abi``): GDT at 0x1000, page
tables at 0x10000 (2 MiB pages, identity mapped, user accessible), hypercall page at 0x200000,
data buffer at 0x201000, doorbell at 0x400000. Its code is one page of x86-64 machine code
produced by ``Asm`` below, entered directly in 64-bit mode at ring 3 (at 0x1000000) or ring 0
(at 0x100000). ``mini_plan`` returns it as a ``LaunchPlan`` that ``run_keep`` loads like any other.
"""

from __future__ import annotations

import struct

from runtime.firmware.interface import CertificateChain
from runtime.vmm.hypercalls import (  # the call numbers, also for the tests
    ATTEST,
    CLOCK,
    CONSOLE_WRITE,
    EXIT,
    REPORT_DATA,
)
from toolchain.errors import InputError, PlatformError
from toolchain.measure.abi import (  # the layout, also for the tests
    ABI_VERSIONS,
    DOORBELL_GPA,
    GDT_GPA,
    GUEST_POLICY,
    HC_BUFFER_GPA,
    HC_BUFFER_SIZE,
    HC_MAGIC,
    HC_PAGE_GPA,
    OFF_ARGS,
    OFF_CALL,
    OFF_MAGIC,
    OFF_VERSION,
    PAGE_SIZE,
    PAGE_TABLES_GPA,
    SEL_TSS,
    SEL_UCODE,
    SEL_UDATA,
    SEV_FEATURES,
    TSS_GPA,
    UKERNEL_BASE,
    USER_BASE,
    AbiAddresses,
)
from toolchain.measure.plan import LaunchPlan, Region
from toolchain.snp.digest import PageType
from toolchain.snp.report import AttestationReport
from toolchain.snp.vmsa import (
    LONG_MODE_CODE,
    LONG_MODE_DATA,
    TSS64_BUSY,
    Segment,
    VcpuState,
    long_mode_state,
)

PAGE = PAGE_SIZE
RING0_CODE_GPA = UKERNEL_BASE
RING3_CODE_GPA = USER_BASE
RAM_SIZE = 0x4000000  # 64 MiB is plenty for a mini guest
STACK_TOP = 0x2000000
#: The mini guests speak the first ABI version (they make no call a later one added).
MINI_ABI_VERSION = min(ABI_VERSIONS)


class Asm:
    """Just enough x86-64 encoding for hypercalls, loops and faults (rbx = hypercall page)."""

    def __init__(self) -> None:
        self.code = bytearray()

    def here(self) -> int:
        return len(self.code)

    def mov_rbx(self, value: int) -> Asm:
        self.code += b"\x48\xbb" + struct.pack("<Q", value)
        return self

    def mov_rax(self, value: int) -> Asm:
        self.code += b"\x48\xb8" + struct.pack("<Q", value)
        return self

    def mov_rcx(self, value: int) -> Asm:
        self.code += b"\x48\xb9" + struct.pack("<Q", value)
        return self

    def store32(self, offset: int, value: int) -> Asm:
        """mov dword [rbx + offset], value"""
        self.code += b"\xc7\x83" + struct.pack("<iI", offset, value & 0xFFFFFFFF)
        return self

    def store16(self, offset: int, value: int) -> Asm:
        """mov word [rbx + offset], value"""
        self.code += b"\x66\xc7\x83" + struct.pack("<iH", offset, value & 0xFFFF)
        return self

    def store64(self, offset: int, value: int) -> Asm:
        """mov rax, value; mov [rbx + offset], rax"""
        return self.mov_rax(value).store_rax(offset)

    def store_rax(self, offset: int) -> Asm:
        """mov [rbx + offset], rax"""
        self.code += b"\x48\x89\x83" + struct.pack("<i", offset)
        return self

    def load_rax(self, offset: int) -> Asm:
        """mov rax, [rbx + offset]"""
        self.code += b"\x48\x8b\x83" + struct.pack("<i", offset)
        return self

    def store_rax_at(self, address: int) -> Asm:
        """mov rcx, address; mov [rcx], rax (a write through an arbitrary pointer)"""
        self.mov_rcx(address)
        self.code += b"\x48\x89\x01"
        return self

    def ring_doorbell(self, doorbell: int = DOORBELL_GPA) -> Asm:
        """mov rcx, doorbell; mov dword [rcx], 1"""
        self.mov_rcx(doorbell)
        self.code += b"\xc7\x01" + struct.pack("<I", 1)
        return self

    def hypercall(self, call: int, *args: int, doorbell: int = DOORBELL_GPA) -> Asm:
        self.mov_rbx(HC_PAGE_GPA)
        self.store32(OFF_MAGIC, HC_MAGIC).store16(OFF_VERSION, MINI_ABI_VERSION)
        self.store32(OFF_CALL, call)
        for index, value in enumerate(args):
            self.store64(OFF_ARGS + 8 * index, value)
        return self.ring_doorbell(doorbell)

    def put_buffer(self, offset: int, data: bytes) -> Asm:
        """Write ``data`` into the hypercall buffer at ``offset``, eight bytes at a time."""
        self.mov_rbx(HC_BUFFER_GPA)
        padded = data + bytes(-len(data) % 8)
        for index in range(0, len(padded), 8):
            self.store64(offset + index, int.from_bytes(padded[index : index + 8], "little"))
        return self

    def jmp(self, target: int) -> Asm:
        """jmp rel32 to code offset ``target``"""
        self.code += b"\xe9" + struct.pack("<i", target - (len(self.code) + 5))
        return self

    def count_down(self, iterations: int) -> Asm:
        """mov rcx, iterations; 1: dec rcx; jnz 1b (two instructions per iteration)"""
        self.mov_rcx(iterations)
        self.code += b"\x48\xff\xc9\x75\xfb"
        return self

    def hlt(self) -> Asm:
        self.code += b"\xf4"
        return self

    def out_port(self, port: int) -> Asm:
        """mov dx, port; out dx, al"""
        self.code += b"\x66\xba" + struct.pack("<H", port) + b"\xee"
        return self

    def build(self) -> bytes:
        """The code, padded to whole pages."""
        if len(self.code) > PAGE * 4:
            raise InputError("mini guest code is limited to 16 KiB")
        return bytes(self.code) + bytes(-len(self.code) % PAGE)


def _gdt_page() -> bytes:
    page = bytearray(PAGE)
    descriptors = [
        0,
        0x00AF9A000000FFFF,  # 0x08 ring-0 code, 64-bit
        0x00CF92000000FFFF,  # 0x10 ring-0 data
        0x00AFFA000000FFFF,  # 0x18 ring-3 code, 64-bit
        0x00CFF2000000FFFF,  # 0x20 ring-3 data
    ]
    for index, descriptor in enumerate(descriptors):
        struct.pack_into("<Q", page, index * 8, descriptor)
    # 0x28: 64-bit TSS descriptor (busy), base TSS_GPA, limit 0x67
    low = 0x67 | (TSS_GPA & 0xFFFFFF) << 16 | 0x8B << 40 | ((TSS_GPA >> 24) & 0xFF) << 56
    struct.pack_into("<QQ", page, 0x28, low, TSS_GPA >> 32)
    struct.pack_into("<Q", page, TSS_GPA - GDT_GPA + 4, STACK_TOP)  # TSS.RSP0
    return bytes(page)


def _page_tables(ram_size: int) -> bytes:
    tables = bytearray(3 * PAGE)
    flags = 0x7  # present, writable, user
    struct.pack_into("<Q", tables, 0, (PAGE_TABLES_GPA + PAGE) | flags)
    struct.pack_into("<Q", tables, PAGE, (PAGE_TABLES_GPA + 2 * PAGE) | flags)
    for index in range(ram_size // 0x200000):
        struct.pack_into("<Q", tables, 2 * PAGE + 8 * index, index * 0x200000 | flags | 0x80)
    return bytes(tables)


def entry_state(*, ring: int, rip: int) -> VcpuState:
    """64-bit paging at ``ring`` (0 or 3), interrupts off, the mini guest's GDT, TSS and CR3."""
    state = long_mode_state(
        rip=rip,
        rsp=STACK_TOP,
        cr3=PAGE_TABLES_GPA,
        gdt_base=GDT_GPA,
        gdt_limit=0x37,
        tr=Segment(SEL_TSS, TSS64_BUSY, 0x67, TSS_GPA),
    )
    if ring == 0:
        return state
    code = Segment(SEL_UCODE, LONG_MODE_CODE | 3 << 5, 0xFFFFFFFF, 0)
    data = Segment(SEL_UDATA, LONG_MODE_DATA | 3 << 5, 0xFFFFFFFF, 0)
    return state._replace(cs=code, ss=data, ds=data, es=data, fs=data, gs=data, cpl=3)


def mini_plan(code: bytes | Asm, *, ring: int = 3, vcpu_count: int = 1) -> LaunchPlan:
    """A launch plan for ``code``, entered at ring 3 (default) or ring 0."""
    body = code.build() if isinstance(code, Asm) else code + bytes(-len(code) % PAGE)
    entry = RING3_CODE_GPA if ring == 3 else RING0_CODE_GPA
    regions = (
        Region(GDT_GPA, PageType.NORMAL, PAGE, _gdt_page(), "GDT and TSS"),
        Region(PAGE_TABLES_GPA, PageType.NORMAL, 3 * PAGE, _page_tables(RAM_SIZE), "page tables"),
        Region(entry, PageType.NORMAL, len(body), body, f"ring-{ring} code"),
    )
    abi = AbiAddresses(
        abi_version=MINI_ABI_VERSION,
        hc_page=HC_PAGE_GPA,
        hc_buffer=HC_BUFFER_GPA,
        hc_buffer_size=HC_BUFFER_SIZE,
        doorbell=DOORBELL_GPA,
        user_info=0,
        secrets_page=0,
        cpuid_page=0,
        page_tables=PAGE_TABLES_GPA,
        user_entry=entry,
        image_start=entry,
        image_end=entry + len(body),
        heap_start=STACK_TOP,
        heap_end=RAM_SIZE,
        stack_top=STACK_TOP,
        stack_bottom=STACK_TOP - 0x100000,
    )
    state = entry_state(ring=ring, rip=entry)
    return LaunchPlan(
        regions=regions,
        boot_vcpu=state,
        ap_vcpu=state,
        vcpu_count=vcpu_count,
        guest_policy=GUEST_POLICY,
        sev_features=SEV_FEATURES,
        ram_size=RAM_SIZE,
        abi=abi,
        inputs={"mini guest": f"ring {ring}, {len(body)} bytes of code"},
    )


def hello_guest(message: bytes = b"hello from ring 3\n", status: int = 0) -> Asm:
    """Writes ``message`` to stdout, then exits with ``status``."""
    asm = Asm().put_buffer(0, message)
    asm.hypercall(CONSOLE_WRITE, 1, 0, len(message))
    return asm.hypercall(EXIT, status)


def attesting_guest(message: bytes = b"attested\n", status: int = 0) -> Asm:
    """The microkernel's boot flow in miniature: REPORT_DATA, ATTEST, then print and exit."""
    asm = Asm().hypercall(REPORT_DATA, 0).hypercall(ATTEST, 0, 0, 0x100)
    asm.put_buffer(0x1000, message).hypercall(CONSOLE_WRITE, 1, 0x1000, len(message))
    return asm.hypercall(EXIT, status)


def hypercall_loop(count: int) -> Asm:
    """CLOCK hypercall ``count`` times (r12 counts down), then EXIT 0: round-trip timing."""
    asm = Asm()
    asm.code += b"\x49\xbc" + struct.pack("<Q", count)  # mov r12, count
    top = asm.here()
    asm.hypercall(CLOCK, 1)
    asm.code += b"\x49\xff\xcc"  # dec r12
    asm.code += b"\x0f\x85" + struct.pack("<i", top - (len(asm.code) + 6))  # jnz top
    return asm.hypercall(EXIT, 0)


def counting_guest(iterations: int) -> Asm:
    """Counts ``iterations`` down in a two-instruction loop, then exits 0 (for timing rings)."""
    return Asm().count_down(iterations).hypercall(EXIT, 0)


class NullFirmware:
    """A firmware for guests that never attest: measures nothing, signs nothing."""

    name = "none"
    simulated = False
    sees_report_requests = True
    #: It measures nothing: no launch digest.
    measurement = b""

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        """Nothing to start."""

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        return data

    def launch_vmsa(self, state: VcpuState) -> None:
        """Nothing to measure."""

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        """Nothing to seal."""

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        raise PlatformError("this test firmware cannot sign reports")

    def guest_request(self, message: bytes) -> bytes:
        raise PlatformError("this test firmware answers no guest messages")

    def certificate_chain(self, report: AttestationReport | None = None) -> CertificateChain:
        raise PlatformError("this test firmware has no certificates")
