"""The keep ABI between the VMM and the measured guest, declared once (``ukernel/ABI.md``).

Everything the host (Python) and the guest (C) must agree on lives here: the ABI versions, the
hypercall numbers (one table, ``Hypercall``), the magic values, the hypercall page, the
user-info page and the ``.note.keepstack`` layout as field lists (``CStruct``), the default
layout the microkernel declares, the exit statuses both sides give, and the limits of the TREES
transfer. The C header ``runtime/guest/ukernel/include/keep_abi.h`` is *generated* from this
module (``python -m toolchain.measure.abi --header`` writes it, ``--check`` compares it): the
committed header is exactly ``header_text()``, a test fails when the two drift, ``keep build``
refuses to compile its own tree when they differ, and the generated ``_Static_assert``\\ s make
the C compiler check every field offset and struct size against the little-endian packing
Python reads and writes (``CStruct.struct``).

Adding a hypercall (the procedure for ABI version N + 1): raise ``ABI_VERSION`` and add it to
``ABI_VERSIONS``; add one member to ``Hypercall`` and, since it is new, one entry to
``_SINCE``; regenerate the header; then write the VMM handler (``runtime/vmm/hypercalls.py``),
the guest side, and a changelog entry in ``ABI.md``. ``calls_of(version)`` then serves the call
to keeps of that version only.
"""

from __future__ import annotations

import argparse
import enum
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from toolchain.errors import InputError

#: The ABI version this tree's microkernel and runtime speak.
ABI_VERSION = 5
#: Every version the toolchain lays out and the VMM serves: 1 (releases 0.1.0 and 0.2.0,
#: rebuilt from their commits), 2 (the TREES call and the attested REPORT_DATA for ring 3),
#: 3 (the RESULT call: the ``--dir ...:rw`` trees handed back at the application's exit),
#: 4 (the report asked for as an SNP guest message through the GHCB, on every platform) and
#: 5 (the heap 2 MiB-aligned at both ends, so private RAM is validated in 2 MiB pages only).
ABI_VERSIONS = (1, 2, 3, 4, 5)
#: From this version on the microkernel brings its own report to ATTEST (an SNP guest message)
#: and the GHCB page is mapped on every platform.
GUEST_MESSAGE_VERSION = 4
#: From this version on the heap starts at the first 2 MiB boundary above the runtime image and
#: ends at the last one at or below the stack's guard page (``ukernel/ABI.md``, "Private RAM"):
#: the microkernel then changes and PVALIDATEs its private RAM in 2 MiB pages only (boot time).
ALIGNED_HEAP_VERSION = 5

# ---- the default layout (the microkernel declares it in its note; plans carry it) -------------
PAGE_SIZE = 0x1000
GDT_GPA = 0x1000
TSS_OFFSET = 0x80  # the TSS shares the GDT's page
TSS_GPA = GDT_GPA + TSS_OFFSET
IDT_GPA = 0x2000
SECRETS_GPA = 0x3000
CPUID_GPA = 0x4000
USER_INFO_GPA = 0x5000
#: The GHCB page (version 4 on every platform, before on snp only): shared, never launched.
GHCB_GPA = 0x6000
PAGE_TABLES_GPA = 0x10000
PAGE_TABLES_SIZE = 0xF0000
UKERNEL_BASE = 0x100000
UKERNEL_LIMIT = 0x200000
HC_PAGE_GPA = 0x200000
HC_BUFFER_GPA = 0x201000
HC_BUFFER_SIZE = 0x10000
DOORBELL_GPA = 0x400000
USER_BASE = 0x1000000
RAM_SIZE = 0x10000000
USER_STACK_SIZE = 0x800000

# ---- ending the application --------------------------------------------------------------------
#: Exit status of an application that trapped (as wasmtime's CLI: 128 + SIGABRT).
TRAP_EXIT_STATUS = 134
#: Exit status when the runtime itself cannot go on (bad launch arguments, out of memory).
FATAL_EXIT_STATUS = 125
#: What the microkernel prints on stderr when ring 3 runs into the stack guard.
STACK_EXHAUSTED_MESSAGE = "wasm trap: call stack exhausted\n"
#: What the microkernel prints on stderr when ring 3 faults in the reserved linear-memory range
#: (version 4): the runtime's line for the trap ``out of bounds memory access``.
OOB_MESSAGE = "wasm trap: out of bounds memory access\n"

# ---- wasm linear memory behind the page tables (version 4) ------------------------------------
#: From this version on the wasm linear memory lives at ``LINEAR_BASE`` (ukernel/ABI.md, "Linear
#: memory"): wasm2c's code carries no bounds checks, a ring-3 fault in the reserved range is the
#: trap "out of bounds memory access".
LINEAR_MEMORY_VERSION = 4
#: Where the linear memory starts (PML4 entry 1, beyond every GPA) and what is reserved there:
#: the 4 GiB index space plus wasm2c's 4 GiB guard (an i32 address plus an i32 offset), all
#: not present until grown.
LINEAR_BASE = 0x80_0000_0000
LINEAR_RESERVE = 0x2_0000_0000
#: The most that can ever be mapped (the 32-bit index space), and the granule the backing RAM
#: is taken from the heap in (one 2 MiB page; linear chunk k is the heap's k-th 2 MiB page from
#: the top, so a full chunk is one large page).
LINEAR_MAX = 0x1_0000_0000
LINEAR_CHUNK = 0x20_0000
#: A ring-3 read of this (never mapped) page is the call that maps linear memory up to rdx
#: bytes; ring 0 resumes ring 3 at rsi with rax = 0 (done) or -1 (refused).
LINEAR_GATE = LINEAR_BASE - PAGE_SIZE
#: The tables behind ``LINEAR_BASE``, the last pages of the page-table area: the PDPT (launched,
#: its first four entries point at the PDs), four PDs (launched empty, ring 0 RW) and the one PT
#: (launched empty, ring 0 RW) that maps the not yet complete last chunk with 4 KiB pages.
LINEAR_PDPT_GPA = 0xFA000
LINEAR_PD_GPA = 0xFB000
LINEAR_PD_COUNT = 4
LINEAR_PT_GPA = 0xFF000
#: What the runtime keeps from the heap for itself below the linear memory (the launch argument
#: buffer, block headers, wasm2c's tables): both backends' linear-memory limit leaves it.
RUNTIME_HEAP_RESERVE = 80 * 1024

# ---- segment selectors and launch settings -----------------------------------------------------
SEL_KCODE, SEL_KDATA, SEL_UCODE, SEL_UDATA, SEL_TSS = 0x08, 0x10, 0x1B, 0x23, 0x28
#: SNP guest policy: bit 16 reserved-must-be-one, bit 17 SMT allowed; debug and migration off.
GUEST_POLICY = 0x30000
#: VMSA SEV_FEATURES: bit 0 SNPActive only.
SEV_FEATURES = 0x1

# ---- hypercalls ---------------------------------------------------------------------------------
HC_MAGIC = 0x3143484B  # "KHC1" little-endian
DOORBELL_RING = 1
#: Version 4, simulated platform: the doorbell value that replaces VMGEXIT (runtime/vmm/ghcb.py).
DOORBELL_VMGEXIT = 2
#: Version 4, simulated platform: a 64-bit write at the doorbell GPA + this offset replaces
#: WRMSR of the GHCB MSR and VMGEXIT; a 64-bit read there replaces RDMSR (runtime/vmm/ghcb.py).
DOORBELL_MSR_OFFSET = 8
#: The GHCB MSR protocol (GHCB spec v2 §2.3.1; Linux asm/sev-common.h): GHCBInfo in bits 11:0.
GHCB_MSR = 0xC001_0130
GHCB_MSR_REG_GPA_REQ = 0x12  # bits 63:12 the GHCB's GFN
GHCB_MSR_REG_GPA_RESP = 0x13  # bits 63:12 the registered GFN (all ones: refused)
GHCB_MSR_PSC_REQ = 0x14  # bits 51:12 the GFN, bits 55:52 the operation
GHCB_MSR_PSC_RESP = 0x15  # bits 63:32 the error code (0: done)
PSC_SHARED = 2
#: The MSR protocol's termination request (reason set 0, code 0): the snp microkernel's only way
#: to stop before its GHCB is registered (runtime/guest/ukernel/platform.c).
GHCB_MSR_TERM_REQ = 0x100
#: Version 4, simulated platform: a 64-bit write at the doorbell GPA + this offset replaces
#: PVALIDATE (bits 63:12 the page's GPA = rAX, bit 0 the page size = ECX (1: 2 MiB), bit 1
#: validate = EDX); a 64-bit read there is its result: bits 31:0 EAX, bit 32 rFLAGS.CF
#: (runtime/vmm/rmp.py models the RMP's validated bit).
DOORBELL_PVALIDATE_OFFSET = 0x10
#: The Page State Change NAE event (GHCB spec v2 §4.1.6; Linux asm/sev-common.h, asm/sev.h):
#: SW_SCRATCH the descriptor's GPA (the GHCB's shared buffer), a u16 cur_entry, u16 end_entry
#: (inclusive), u32 reserved header, then up to 253 entries: bits 11:0 cur_page, 51:12 the
#: GFN, 55:52 the operation, bit 56 the page size (1: 2 MiB).
SVM_VMGEXIT_PSC = 0x8000_0010
GHCB_SHARED_BUFFER_OFFSET = 0x800
PSC_MAX_ENTRY = 253
PSC_PRIVATE = 1
#: PVALIDATE's return codes in EAX (AMD APM vol. 3; Linux asm/sev.h); CF=1 with EAX 0: the RMP
#: entry already had the state asked for.
PVALIDATE_FAIL_INPUT = 1
PVALIDATE_FAIL_SIZEMISMATCH = 6
#: The SNP CPUID page (Linux asm/sev.h struct snp_cpuid_table): u32 count, 12 bytes reserved,
#: then up to 64 functions of 0x30 bytes (u32 eax_in, ecx_in, u64 xcr0_in, xss_in, u32 eax, ebx,
#: ecx, edx, u64 reserved); the C-bit is function 0x8000001F's EBX[5:0].
CPUID_LEAF_SEV = 0x8000_001F
CPUID_COUNT_MAX = 64


class Hypercall(enum.IntEnum):
    """The call numbers: THE table (the header's ``KEEP_HC_*``, the VMM's handlers)."""

    CONSOLE_WRITE = 1
    STDIN_READ = 2
    EXIT = 3
    FAULT = 4
    LAUNCH_ARGS = 5
    REPORT_DATA = 6
    ATTEST = 7
    CLOCK = 8
    TREES = 9
    #: Args: offset, length, position, total (``runtime/vmm/hypercalls.py``, issue 14).
    RESULT = 10


#: The version that introduced a call (absent: version 1).
_SINCE: Mapping[Hypercall, int] = {Hypercall.TREES: 2, Hypercall.RESULT: 3}


def since(call: Hypercall) -> int:
    """The first ABI version that has ``call``."""
    return _SINCE.get(call, 1)


def calls_of(version: int) -> frozenset[Hypercall]:
    """The calls a keep of ABI ``version`` may make."""
    return frozenset(call for call in Hypercall if since(call) <= version)


CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
REPORT_DATA_SIZE = 64
REPORT_SIZE = 0x4A0
#: Where the microkernel puts things in the data buffer during boot.
BOOT_REPORT_DATA_OFFSET = 0x0
BOOT_REPORT_OFFSET = 0x100
#: Version 4: the SNP guest request's request and response pages in the data buffer.
BOOT_GUEST_REQ_OFFSET = 0x1000
BOOT_GUEST_RSP_OFFSET = 0x2000
#: Version 4: EXIT(ATTEST_FAILED, reason, expected, found) when the microkernel stops before
#: ring 3; the reasons (``KEEP_STOP_*``) and what each names (runtime/vmm/ghcb.py says them).
ATTEST_FAILED_EXIT_STATUS = 125
STOP_REASONS: Mapping[str, tuple[int, str]] = {
    "GHCB": (1, "SW_EXITINFO2 (the host's answer to the guest request)"),
    "VMPCK": (2, "VMPCK (the key in the secrets page)"),
    "SEQNO_EXHAUSTED": (3, "MSG_SEQNO (the sequence numbers are used up)"),
    "ALGO": (4, "ALGO"),
    "HDR_VERSION": (5, "HDR_VERSION"),
    "HDR_SZ": (6, "HDR_SZ"),
    "MSG_TYPE": (7, "MSG_TYPE"),
    "MSG_VERSION": (8, "MSG_VERSION"),
    "MSG_VMPCK": (9, "MSG_VMPCK"),
    "MSG_SEQNO": (10, "MSG_SEQNO (a replayed or skipped response)"),
    "MSG_SZ": (11, "MSG_SZ"),
    "AUTHTAG": (12, "AUTHTAG (the response does not authenticate under VMPCK0)"),
    "STATUS": (13, "STATUS of MSG_REPORT_RSP"),
    "REPORT_SIZE": (14, "REPORT_SIZE of MSG_REPORT_RSP"),
    "DISABLED": (15, "the guest channel (disabled by an earlier failure)"),
    "REPORT_DATA": (16, "REPORT_DATA of the report (first 8 bytes, little-endian)"),
    "VMPL": (17, "VMPL of the report"),
    "GHCB_REG_INFO": (18, "GHCBInfo of the host's answer to the GHCB registration"),
    "GHCB_REG_GFN": (19, "GFN of the host's answer to the GHCB registration"),
    "PSC_INFO": (20, "GHCBInfo of the host's answer to a page-state change"),
    "PSC_ERROR": (21, "error code of the host's answer to a page-state change to shared"),
    "MMIO_EXITINFO1": (22, "SW_EXITINFO1 of the host's answer to a doorbell MMIO request"),
    "MMIO_EXITINFO2": (23, "SW_EXITINFO2 of the host's answer to a doorbell MMIO request"),
    "VC_EXIT_CODE": (24, "the #VC's exit code (only NPF on the doorbell, 0x400, is handled)"),
    "VC_RING": (25, "the ring of the #VC (only ring 3's doorbell writes are handled)"),
    "VC_INSTRUCTION": (26, "the instruction at the #VC's RIP (not a doorbell store)"),
    "VC_GPA": (27, "the GPA the #VC's store writes (only the doorbell is handled)"),
    "PSC_NAE": (28, "SW_EXITINFO2 of the host's answer to a page-state change to private"),
    "PSC_END_ENTRY": (29, "end_entry and reserved of the page-state change header"),
    "PSC_CUR_ENTRY": (30, "cur_entry of the page-state change header (no progress)"),
    "PVALIDATE": (31, "the return code (EAX) of PVALIDATE"),
    "PVALIDATE_UNCHANGED": (32, "rFLAGS.CF of PVALIDATE (1: the page was validated already)"),
    "CPUID_LEAF": (33, "function 0x8000001F of the CPUID page (found: the count, none matched)"),
    "C_BIT": (34, "C-bit of the CPUID page (0x8000001F EBX[5:0]; expected: the page tables')"),
}

# ---- the note and the user-info page -------------------------------------------------------------
NOTE_NAME = b"Keepstack\0"
NOTE_TYPE_LAYOUT = 1
VECTOR_STUB_SIZE = 16
USER_INFO_MAGIC = 0x3149554B  # "KUI1"

# ---- the TREES call's transfer blob (runtime/guest/wasm/keep_trees.c checks it) ------------------
TREE_MAGIC = b"KEEPTREE1\0"
TRANSFER_MAGIC = b"KTREES2\0"
#: A tree's flags in the transfer blob: bit 0, hand it back at exit (``--dir ...:rw``).
TREE_FLAG_RW = 1
#: What follows the tree digests in the REPORT_DATA binding when a tree is ``:rw`` (then one
#: byte per tree, 1 for ``:rw``): ``toolchain.measure.trees.bind_report_data``.
RW_BINDING_TAG = b"KEEPRW1\0"
#: The RESULT call's blob (``toolchain.measure.trees.result_blob``): its magic and its bound,
#: the encodings of the ``:rw`` trees bounded like what came in, plus 1 MiB for headers.
RESULT_MAGIC = b"KRESULT\0"
RESULT_MAX_BYTES = (32 << 20) + (1 << 20)
#: The most trees one run may preopen.
TREES_MAX_COUNT = 64
#: The most one run may preopen, summed over the encodings of its trees (32 MiB): the keep
#: holds every tree in its heap next to the application's linear memory.
TREES_MAX_BYTES = 32 << 20
#: The largest file the keep's file system holds (keep_fs.c; the nil backend's nil_fs.py).
FS_FILE_MAX = 1 << 30


# ---- structures ---------------------------------------------------------------------------------
_CTYPES = {"uint16_t": "H", "uint32_t": "I", "int32_t": "i", "uint64_t": "Q"}


@dataclass(frozen=True)
class Field:
    """One member of a C struct: ``ctype name[count]; /* comment */``."""

    name: str
    ctype: str
    comment: str = ""
    count: int = 1

    def __post_init__(self) -> None:
        if self.ctype not in _CTYPES:
            raise InputError(f"field {self.name}: C type {self.ctype!r} is not one of {_CTYPES}")
        if self.count < 1:
            raise InputError(f"field {self.name}: count {self.count} < 1")


@dataclass(frozen=True)
class CStruct:
    """A little-endian structure shared by C and Python, in declaration order."""

    tag: str
    fields: tuple[Field, ...]
    comment: str = ""
    _struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise InputError(f"struct {self.tag} names a field twice")
        packing = "<" + "".join(f"{f.count}{_CTYPES[f.ctype]}" for f in self.fields)
        object.__setattr__(self, "_struct", struct.Struct(packing))

    @property
    def struct(self) -> struct.Struct:
        """The packing Python uses (little-endian, no padding)."""
        return self._struct

    @property
    def size(self) -> int:
        return self._struct.size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def offset(self, name: str) -> int:
        """The byte offset of field ``name`` in the packed structure."""
        at = 0
        for item in self.fields:
            if item.name == name:
                return at
            at += struct.calcsize("<" + _CTYPES[item.ctype]) * item.count
        raise KeyError(f"struct {self.tag} has no field {name!r}")

    def pack(self, values: Mapping[str, int | Sequence[int]]) -> bytes:
        """The structure with ``values`` by field name (every field, nothing else; an array
        field takes a sequence of its length)."""
        if set(values) != set(self.names):
            raise InputError(
                f"struct {self.tag}: fields {sorted(set(self.names) ^ set(values))} "
                "missing or unknown"
            )
        flat: list[int] = []
        for item in self.fields:
            value = values[item.name]
            items = [value] if isinstance(value, int) else list(value)
            if len(items) != item.count:
                raise InputError(f"struct {self.tag}: {item.name} takes {item.count} values")
            flat += items
        return self._struct.pack(*flat)


def _u64(name: str, comment: str = "") -> Field:
    return Field(name, "uint64_t", comment)


HC_PAGE = CStruct(
    "keep_hc_page",
    (
        Field("magic", "uint32_t", "KEEP_HC_MAGIC"),
        Field("version", "uint16_t", "KEEP_ABI_VERSION"),
        Field("reserved", "uint16_t"),
        Field("call", "uint32_t"),
        Field("status", "int32_t", "written by the VMM: 0 ok, negative errno"),
        Field("arg", "uint64_t", count=6),
        Field("ret", "uint64_t", count=2),
    ),
)
#: The hypercall page's ``KEEP_HC_OFF_*`` offsets (define suffix → field).
HC_OFFSETS = {
    "MAGIC": "magic",
    "VERSION": "version",
    "CALL": "call",
    "STATUS": "status",
    "ARGS": "arg",
    "RET": "ret",
}
OFF_MAGIC, OFF_VERSION, OFF_CALL, OFF_STATUS, OFF_ARGS, OFF_RET = (
    HC_PAGE.offset(name) for name in HC_OFFSETS.values()
)

USER_INFO = CStruct(
    "keep_user_info",
    (
        Field("magic", "uint32_t", "KEEP_USER_INFO_MAGIC"),
        Field("abi_version", "uint16_t"),
        Field("c_bit", "uint16_t", "version 4, snp: the C-bit the page tables carry (0: none)"),
        _u64("hc_page"),
        _u64("hc_buffer"),
        _u64("hc_buffer_size"),
        _u64("doorbell"),
        _u64("entry", "the runtime image's ELF entry point"),
        _u64("image_start", "lowest page of the runtime image"),
        _u64("image_end", "first byte after the image's last page"),
        _u64("heap_start", "private RAM, contents undefined: zero what you use"),
        _u64("heap_end"),
        _u64("stack_top", "initial rsp (16-byte aligned); the stack grows down to stack_bottom"),
        _u64("stack_bottom", "the page below is unmapped (guard)"),
        _u64("ram_size"),
    ),
    "Read-only block ring 3 finds at KEEP_USER_INFO_GPA; its address is also in rdi at entry.",
)

#: The note's GPAs and sizes that are whole pages (``toolchain.measure.keep`` checks them), in
#: declaration order: the TSS (GDT + 0x80) sits between ``gdt`` and ``idt``.
LAYOUT_PAGE_FIELDS = (
    "ram_size",
    "gdt",
    "idt",
    "secrets_page",
    "cpuid_page",
    "user_info",
    "page_tables",
    "page_tables_size",
    "hc_page",
    "hc_buffer",
    "hc_buffer_size",
    "doorbell",
    "user_base",
    "user_stack_size",
)
#: The note's addresses, all inside RAM (``toolchain.measure.keep`` checks them): the page
#: ones, then those the linker fills in.
LAYOUT_ADDRESS_FIELDS = (
    *(name for name in LAYOUT_PAGE_FIELDS if not name.endswith("size")),
    "boot_stack_top",
    "fault_stack_top",
    "ap_entry",
    "vector_stubs",
)

KEEP_LAYOUT = CStruct(
    "keep_layout",
    (
        Field("abi_version", "uint32_t"),
        Field("size", "uint32_t", "sizeof(struct keep_layout)"),
        _u64("guest_policy"),
        _u64("sev_features"),
        *(_u64(name) for name in LAYOUT_PAGE_FIELDS[:2]),
        _u64("tss"),
        *(_u64(name) for name in LAYOUT_PAGE_FIELDS[2:]),
        _u64("boot_stack_top", "initial rsp of the boot vCPU"),
        _u64("fault_stack_top", "TSS.RSP0 and IST1: where faults land"),
        _u64("ap_entry", "where application processors park"),
        _u64("vector_stubs", "IDT entry i = vector_stubs + i * KEEP_VECTOR_STUB_SIZE"),
    ),
    "Descriptor of the `.note.keepstack` note (type KEEP_NOTE_TYPE_LAYOUT): everything the\n"
    "toolchain needs to lay the keep out, declared once, in the microkernel ELF.",
)


@dataclass(frozen=True)
class KeepLayout:
    """The ``.note.keepstack`` declaration of a microkernel ELF (``KEEP_LAYOUT`` less ``size``)."""

    abi_version: int
    guest_policy: int
    sev_features: int
    ram_size: int
    gdt: int
    tss: int
    idt: int
    secrets_page: int
    cpuid_page: int
    user_info: int
    page_tables: int
    page_tables_size: int
    hc_page: int
    hc_buffer: int
    hc_buffer_size: int
    doorbell: int
    user_base: int
    user_stack_size: int
    boot_stack_top: int
    fault_stack_top: int
    ap_entry: int
    vector_stubs: int

    def __post_init__(self) -> None:
        # The dataclass is the note's field list, by name: a field added to one and not the
        # other is caught on the first note read, not as a silently ignored value.
        mine = tuple(f.name for f in fields(self))
        if mine != tuple(n for n in KEEP_LAYOUT.names if n != "size"):
            raise InputError(f"KeepLayout {mine} is not struct keep_layout {KEEP_LAYOUT.names}")


@dataclass(frozen=True)
class HypercallLayout:
    """Where the hypercall page and data buffer are (from the LaunchPlan, never the guest)."""

    page: int
    buffer: int
    buffer_size: int


@dataclass(frozen=True)
class AbiAddresses:
    """The hypercall ABI as one keep declares it: what ``LaunchPlan.abi`` carries.

    The fields shared with the note (``KeepLayout``) and with the user-info page
    (``USER_INFO``, where ``entry`` is ``user_entry``) are taken from them by name
    (``from_layout``); the plan's JSON names them so (``"abi"``).
    """

    abi_version: int
    hc_page: int
    hc_buffer: int
    hc_buffer_size: int
    doorbell: int
    user_info: int
    secrets_page: int
    cpuid_page: int
    page_tables: int
    user_entry: int
    image_start: int
    image_end: int
    heap_start: int
    heap_end: int
    stack_top: int
    stack_bottom: int

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"ABI address {item.name} must be a non-negative integer")

    @classmethod
    def from_layout(cls, layout: KeepLayout, **image: int) -> AbiAddresses:
        """The note's fields by name, plus the runtime image's (``user_entry``, ``image_*``,
        ``heap_*``, ``stack_*``)."""
        shared = {f.name for f in fields(cls)} & {f.name for f in fields(layout)}
        return cls(**{name: getattr(layout, name) for name in shared}, **image)

    @property
    def hypercalls(self) -> HypercallLayout:
        """The hypercall page and buffer the VMM serves."""
        return HypercallLayout(self.hc_page, self.hc_buffer, self.hc_buffer_size)

    def user_info_page(self, ram_size: int, c_bit: int = 0) -> bytes:
        """``struct keep_user_info`` (``USER_INFO``) for this keep, as measured at ``user_info``;
        ``c_bit`` the position the snp plan's page tables carry (0 on simulated: the bytes of
        every earlier plan, where the field was reserved and zero)."""
        values = {name: getattr(self, name) for name in USER_INFO.names if hasattr(self, name)}
        values.update(
            magic=USER_INFO_MAGIC,
            c_bit=c_bit,
            entry=self.user_entry,
            ram_size=ram_size,
        )
        return USER_INFO.pack(values)


# ---- the C header -------------------------------------------------------------------------------
#: Where the generated header lives in a source tree.
HEADER_PATH = Path("runtime") / "guest" / "ukernel" / "include" / "keep_abi.h"
_WIDTH = 96


@dataclass(frozen=True)
class Define:
    """``#define KEEP_<name> <value>``: a hex or decimal number, or a C string from ``str`` or
    (NUL-terminated) ``bytes``."""

    name: str
    value: int | str | bytes
    comment: str = ""
    decimal: bool = False
    suffix: str = ""  # a C integer suffix ("u"), where the C type matters

    def render(self) -> str:
        if isinstance(self.value, bytes):
            if not self.value.endswith(b"\0"):
                raise InputError(f"KEEP_{self.name}: a C string constant ends with its NUL")
            text = self.value[:-1].decode("ascii")
            value = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif isinstance(self.value, str):
            escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            value = f'"{escaped}"'
        else:
            number = str(self.value) if self.decimal else f"{self.value:#X}".replace("0X", "0x")
            value = number + self.suffix
        line = f"#define KEEP_{self.name} {value}"
        return f"{line} /* {self.comment} */" if self.comment else line


def _dec(name: str, value: int, comment: str = "") -> Define:
    return Define(name, value, comment, decimal=True)


#: The header's ``#define``\ s, section by section (a ``str`` is a comment line).
_SECTIONS: tuple[tuple[str, Sequence[Define | str]], ...] = (
    ("version", [_dec("ABI_VERSION", ABI_VERSION)]),
    (
        "guest physical layout (identity mapped: VA = GPA)",
        [
            Define("PAGE_SIZE", PAGE_SIZE),
            Define("GDT_GPA", GDT_GPA, "GDT (0x000) and TSS (0x080); ring 0 only"),
            Define("TSS_GPA", TSS_GPA),
            Define("IDT_GPA", IDT_GPA, "256 gates; ring 0 only"),
            Define("SECRETS_GPA", SECRETS_GPA, "SNP secrets page; ring 0 only"),
            Define("CPUID_GPA", CPUID_GPA, "SNP CPUID page; ring 0 only"),
            Define("USER_INFO_GPA", USER_INFO_GPA, "struct keep_user_info; ring 3 read-only"),
            Define("GHCB_GPA", GHCB_GPA, "GHCB (version 4): shared, never launched; ring 0 only"),
            Define(
                "PAGE_TABLES_GPA", PAGE_TABLES_GPA, "PML4 first, then PDPT, PDs, PTs; not mapped"
            ),
            Define("PAGE_TABLES_SIZE", PAGE_TABLES_SIZE),
            Define("UKERNEL_BASE", UKERNEL_BASE, "microkernel ELF is linked here"),
            Define("UKERNEL_LIMIT", UKERNEL_LIMIT),
            Define("HC_PAGE_GPA", HC_PAGE_GPA, "hypercall page, shared with the VMM"),
            Define("HC_BUFFER_GPA", HC_BUFFER_GPA, "hypercall data buffer, shared with the VMM"),
            Define("HC_BUFFER_SIZE", HC_BUFFER_SIZE),
            Define("DOORBELL_GPA", DOORBELL_GPA, "MMIO: a 32-bit write of 1 exits to the VMM"),
            Define("USER_BASE", USER_BASE, "ring-3 runtime image is linked at or above this"),
            Define(
                "RAM_SIZE", RAM_SIZE, "256 MiB of guest RAM unless the keep is built with --memory"
            ),
            Define(
                "USER_STACK_SIZE", USER_STACK_SIZE, "ring-3 stack at the top of RAM, guard below"
            ),
        ],
    ),
    (
        "ending the application",
        [
            "Exit status of an application that trapped (as wasmtime's CLI: 128 + SIGABRT).",
            _dec("TRAP_EXIT_STATUS", TRAP_EXIT_STATUS),
            "Exit status when the runtime cannot go on (bad launch arguments, out of memory).",
            _dec("FATAL_EXIT_STATUS", FATAL_EXIT_STATUS),
            (
                "What the microkernel prints on stderr when ring 3 faults in the stack guard\n"
                "([keep_user_info.heap_end, stack_bottom)): the runtime's trap line for stack "
                "exhaustion."
            ),
            Define("STACK_EXHAUSTED_MESSAGE", STACK_EXHAUSTED_MESSAGE),
        ],
    ),
    (
        "segment selectors (GDT built by the toolchain)",
        [
            Define("SEL_KCODE", SEL_KCODE),
            Define("SEL_KDATA", SEL_KDATA),
            Define("SEL_UCODE", SEL_UCODE, "0x18 | RPL 3"),
            Define("SEL_UDATA", SEL_UDATA, "0x20 | RPL 3"),
            Define("SEL_TSS", SEL_TSS),
        ],
    ),
    (
        "launch settings",
        [
            "SNP guest policy: bit 16 must be one, bit 17 SMT allowed; debug, migration off.",
            Define("GUEST_POLICY", GUEST_POLICY),
            "VMSA SEV_FEATURES: bit 0 SNPActive only.",
            Define("SEV_FEATURES", SEV_FEATURES),
        ],
    ),
    (
        "hypercall page",
        [
            Define("HC_MAGIC", HC_MAGIC, '"KHC1" little-endian'),
            *(
                Define(f"HC_OFF_{suffix}", HC_PAGE.offset(name))
                for suffix, name in HC_OFFSETS.items()
            ),
            _dec("DOORBELL_RING", DOORBELL_RING),
            "Version 4, simulated platform only: what replaces VMGEXIT (the VMM serves the GHCB).",
            _dec("DOORBELL_VMGEXIT", DOORBELL_VMGEXIT),
            "Version 4, simulated only: a 64-bit write here is WRMSR+VMGEXIT, a read RDMSR.",
            Define("DOORBELL_MSR_OFFSET", DOORBELL_MSR_OFFSET),
            "Version 4: the GHCB MSR protocol (GHCBInfo in bits 11:0).",
            Define("GHCB_MSR", GHCB_MSR, suffix="u"),
            Define("GHCB_MSR_REG_GPA_REQ", GHCB_MSR_REG_GPA_REQ),
            Define("GHCB_MSR_REG_GPA_RESP", GHCB_MSR_REG_GPA_RESP),
            Define("GHCB_MSR_PSC_REQ", GHCB_MSR_PSC_REQ),
            Define("GHCB_MSR_PSC_RESP", GHCB_MSR_PSC_RESP),
            _dec("PSC_SHARED", PSC_SHARED),
            Define("GHCB_MSR_TERM_REQ", GHCB_MSR_TERM_REQ),
            "call numbers (Hypercall); FAULT's arguments: vector, error code, CR2, RIP, CS, RSP",
            *(
                _dec(
                    f"HC_{call.name}", call, f"ABI version {since(call)}" if since(call) > 1 else ""
                )
                for call in Hypercall
            ),
            _dec("CLOCK_REALTIME", CLOCK_REALTIME),
            _dec("CLOCK_MONOTONIC", CLOCK_MONOTONIC),
            _dec("REPORT_DATA_SIZE", REPORT_DATA_SIZE),
            Define("REPORT_SIZE", REPORT_SIZE),
            "Where the microkernel puts things in the data buffer during boot.",
            Define("BOOT_REPORT_DATA_OFFSET", BOOT_REPORT_DATA_OFFSET),
            Define("BOOT_REPORT_OFFSET", BOOT_REPORT_OFFSET),
            "Version 4: the SNP guest request's request and response pages (page-aligned GPAs).",
            Define("BOOT_GUEST_REQ_OFFSET", BOOT_GUEST_REQ_OFFSET),
            Define("BOOT_GUEST_RSP_OFFSET", BOOT_GUEST_RSP_OFFSET),
            "Version 4: heap and stack made private and validated (pvalidate.c, ABI.md).",
            Define("DOORBELL_PVALIDATE_OFFSET", DOORBELL_PVALIDATE_OFFSET),
            Define("SVM_VMGEXIT_PSC", SVM_VMGEXIT_PSC, suffix="u"),
            Define("GHCB_SHARED_BUFFER_OFFSET", GHCB_SHARED_BUFFER_OFFSET),
            _dec("PSC_MAX_ENTRY", PSC_MAX_ENTRY),
            _dec("PSC_PRIVATE", PSC_PRIVATE),
            _dec("PVALIDATE_FAIL_INPUT", PVALIDATE_FAIL_INPUT),
            _dec("PVALIDATE_FAIL_SIZEMISMATCH", PVALIDATE_FAIL_SIZEMISMATCH),
            "Version 4, snp: the C-bit checked against the CPUID page (cbit.c, ABI.md).",
            Define("CPUID_LEAF_SEV", CPUID_LEAF_SEV, suffix="u"),
            _dec("CPUID_COUNT_MAX", CPUID_COUNT_MAX),
        ],
    ),
    (
        "version 4: why the microkernel stopped before ring 3",
        [
            "EXIT arguments when attestation fails: this status, reason, expected, found.",
            _dec("EXIT_ATTEST_FAILED", ATTEST_FAILED_EXIT_STATUS),
            *(_dec(f"STOP_{name}", number) for name, (number, _what) in STOP_REASONS.items()),
        ],
    ),
    (
        ".note.keepstack and the user-info page",
        [
            Define("NOTE_NAME", NOTE_NAME, "namesz 10 with the NUL, padded to 12"),
            _dec("NOTE_TYPE_LAYOUT", NOTE_TYPE_LAYOUT),
            "IDT entry stubs: 256 of them, this many bytes apart, from keep_layout.vector_stubs",
            _dec("VECTOR_STUB_SIZE", VECTOR_STUB_SIZE),
            Define("USER_INFO_MAGIC", USER_INFO_MAGIC, '"KUI1"'),
        ],
    ),
    (
        "the TREES call's transfer blob (runtime/guest/wasm/keep_trees.c)",
        [
            Define("TRANSFER_MAGIC", TRANSFER_MAGIC, "8 bytes with its NUL"),
            Define("TREE_MAGIC", TREE_MAGIC, "10 bytes with its NUL"),
            _dec("TREES_MAX_COUNT", TREES_MAX_COUNT, "the most trees one run may preopen"),
            Define(
                "TREES_MAX_BYTES", TREES_MAX_BYTES, "summed over the tree encodings", suffix="u"
            ),
            Define("FS_FILE_MAX", FS_FILE_MAX, "the largest file in the keep", suffix="ull"),
            Define("TREE_FLAG_RW", TREE_FLAG_RW, "a tree's flags: hand it back", suffix="u"),
            Define("RW_BINDING_TAG", RW_BINDING_TAG, "8 bytes with its NUL"),
        ],
    ),
    (
        "the RESULT call's blob (runtime/guest/wasm/keep_fs.c, fs_hand_back)",
        [
            Define("RESULT_MAGIC", RESULT_MAGIC, "8 bytes with its NUL"),
            Define("RESULT_MAX", RESULT_MAX_BYTES, "33 MiB", suffix="ull"),
        ],
    ),
    (
        "version 4: wasm linear memory behind the page tables (runtime/guest/ukernel/linear.c)",
        [
            "The reserved range (not present until grown) and the most that can be mapped (no",
            "suffixes: entry.S includes these too).",
            Define("LINEAR_BASE", LINEAR_BASE),
            Define("LINEAR_RESERVE", LINEAR_RESERVE),
            Define("LINEAR_MAX", LINEAR_MAX),
            Define("LINEAR_CHUNK", LINEAR_CHUNK, "chunk k: the heap's k-th 2 MiB from the top"),
            "A ring-3 read here asks ring 0 to map up to rdx bytes; resumes at rsi, rax = 0 or -1.",
            Define("LINEAR_GATE", LINEAR_GATE),
            Define("LINEAR_PDPT_GPA", LINEAR_PDPT_GPA),
            Define("LINEAR_PD_GPA", LINEAR_PD_GPA, "LINEAR_PD_COUNT pages, ring 0 RW"),
            _dec("LINEAR_PD_COUNT", LINEAR_PD_COUNT),
            Define("LINEAR_PT_GPA", LINEAR_PT_GPA, "ring 0 RW: the last, incomplete chunk"),
            _dec("RUNTIME_HEAP_RESERVE", RUNTIME_HEAP_RESERVE, "kept below the linear memory"),
            "What the microkernel prints on stderr for a ring-3 fault in the reserved range.",
            Define("OOB_MESSAGE", OOB_MESSAGE),
        ],
    ),
)


def _comment(text: str, indent: str = "") -> list[str]:
    lines = text.split("\n")
    if len(lines) == 1:
        return [f"{indent}/* {text} */"]
    middle = [f"{indent} * {line}".rstrip() for line in lines[1:-1]]
    return [f"{indent}/* {lines[0]}", *middle, f"{indent} * {lines[-1]} */"]


_ASSERT_MACROS = (
    "/* The compiler checks each structure against the packing Python uses (abi.py CStruct). */",
    "#define KEEP_ABI_OFFSET(s, f, at) \\",
    '    _Static_assert(__builtin_offsetof(struct s, f) == (at), "abi.py: " #s "." #f " at " #at)',
    "#define KEEP_ABI_SIZE(s, n) \\",
    '    _Static_assert(sizeof(struct s) == (n), "abi.py: struct " #s " is " #n " bytes")',
)


def _struct_lines(decl: CStruct) -> list[str]:
    lines = _comment(decl.comment) if decl.comment else []
    lines.append(f"struct {decl.tag} {{")
    for item in decl.fields:
        array = f"[{item.count}]" if item.count > 1 else ""
        member = f"    {item.ctype} {item.name}{array};"
        lines.append(f"{member} /* {item.comment} */" if item.comment else member)
    lines.append("};")
    # The compiler checks its layout against the packing Python uses: no padding, no drift.
    for item in decl.fields:
        at = decl.offset(item.name)
        lines.append(f"KEEP_ABI_OFFSET({decl.tag}, {item.name}, {at});")
    lines.append(f"KEEP_ABI_SIZE({decl.tag}, {decl.size});")
    return lines


def header_text(structs: Sequence[CStruct] = (HC_PAGE, USER_INFO, KEEP_LAYOUT)) -> str:
    """``keep_abi.h``, byte for byte: the constants and structures of this module."""
    intro = (
        f"Keep hypercall ABI and launch layout, version {ABI_VERSION} (see "
        "runtime/guest/ukernel/ABI.md).\n"
        "\n"
        "GENERATED from toolchain/measure/abi.py by `python -m toolchain.measure.abi --header`:\n"
        "edit that module, then regenerate; keep build refuses a tree where the two differ.\n"
        "\n"
        "Shared by the microkernel (ring 0) and the in-guest runtime (ring 3). The layout\n"
        "values are also declared in the microkernel ELF's `.note.keepstack` note (struct\n"
        "keep_layout below), which toolchain/measure/keep.py reads to build the LaunchPlan;\n"
        "the VMM takes them from the plan. Usable from C and from assembly (the structs are\n"
        "hidden from the assembler)."
    )
    lines = [*_comment(intro), "#ifndef KEEP_ABI_H", "#define KEEP_ABI_H"]
    for title, entries in _SECTIONS:
        lines += ["", f"/* ---- {title} ".ljust(_WIDTH - 3, "-") + " */"]
        for entry in entries:
            lines += _comment(entry) if isinstance(entry, str) else [entry.render()]
    lines += ["", "#ifndef __ASSEMBLER__", "#include <stdint.h>", "", *_ASSERT_MACROS]
    for decl in structs:
        lines += ["", *_struct_lines(decl)]
    lines += ["#endif", "", "#endif", ""]
    return "\n".join(lines)


def header_difference(found: str, expected: str | None = None) -> str | None:
    """None if ``found`` is the generated header, else the first differing line, named."""
    expected = header_text() if expected is None else expected
    if found == expected:
        return None
    want, have = expected.split("\n"), found.split("\n")
    for number, (line_want, line_have) in enumerate(zip(want, have, strict=False), start=1):
        if line_want != line_have:
            return f"line {number}: expected {line_want!r}, found {line_have!r}"
    return f"expected {len(want)} lines, found {len(have)}"


def check_header(path: Path) -> None:
    """Refuse a ``keep_abi.h`` that is not what this module generates (``InputError``)."""
    try:
        found = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the ABI header {path}: {exc}") from None
    difference = header_difference(found)
    if difference is not None:
        raise InputError(
            f"{path} is not the header toolchain/measure/abi.py generates ({difference})",
            hint="edit toolchain/measure/abi.py, then run python -m toolchain.measure.abi --header",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``--header [PATH]`` writes the header (default: this tree's); ``--check [PATH]`` compares."""
    parser = argparse.ArgumentParser(prog="python -m toolchain.measure.abi", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--header", action="store_true", help="write keep_abi.h")
    action.add_argument("--check", action="store_true", help="exit 1 if keep_abi.h differs")
    parser.add_argument("path", nargs="?", type=Path, help=f"default: <tree>/{HEADER_PATH}")
    options = parser.parse_args(argv)
    path = options.path or Path(__file__).resolve().parents[2] / HEADER_PATH
    if options.header:
        path.write_bytes(header_text().encode())
        return 0
    try:
        check_header(path)
    except InputError as exc:
        print(f"✗ {exc}", file=sys.stderr)
        return 1
    print(f"✔ {path} is the generated header")
    return 0


if __name__ == "__main__":
    sys.exit(main())
