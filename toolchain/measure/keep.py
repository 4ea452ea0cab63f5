"""Lay a keep out: microkernel ELF + ring-3 runtime image ELF (+ vCPU count) → ``LaunchPlan``.

The microkernel declares the layout in its ``.note.keepstack`` note (``struct keep_layout``,
``toolchain.measure.abi.KEEP_LAYOUT``, the source of ``keep_abi.h``); this module reads it and
builds, as measured pages:

* the GDT + TSS page, the IDT page (256 interrupt gates on IST1, pointing at the microkernel's
  vector stubs), the user-info page (``struct keep_user_info``), the SECRETS and CPUID pages;
* the page tables: an identity map of exactly what is used — ring-0 pages for the microkernel,
  ring-3 pages only for the runtime image, its heap and stack, the shared hypercall page and
  buffer and the doorbell; NX on everything not executable; 2 MiB pages where a whole aligned
  2 MiB has one permission;
* both ELFs' PT_LOAD segments page by page (NORMAL; ZERO for pages wholly past ``p_filesz``);
* the vCPU states: the boot CPU at the microkernel's entry in long mode, APs parked.

Guest memory (RAM) is the microkernel note's ``ram_size`` (256 MiB) unless ``build_plan`` is
given ``memory``: from ``GUEST_MEMORY_MIN`` to ``GUEST_MEMORY_MAX`` in whole 2 MiB pages. It
moves the stack and the top of the heap, so it changes the page tables, the user-info page and
therefore the launch digest: a keep's memory size is part of its measurement.

The platform (``build_plan(platform=...)``) is ``simulated`` (backends kvm and nil; the layout
above, byte for byte as before ``snp`` existed) or ``snp``: every private mapping and every table
pointer carries the C-bit (``c_bit``, CPUID 0x8000001F EBX[5:0], ``DEFAULT_C_BIT`` 51 on Milan,
Genoa and Turin), the GHCB page (``GHCB_PAGE``, ring 0) and the hypercall page, buffer and
doorbell are mapped with it clear and never launched, and the plan's VMSAs are KVM's
(``LaunchPlan.vmsa_pages``). One code path lays out both; ``snp_plan_of`` lays out a built keep's
``snp`` twin from its ELFs, checked against its simulated plan.
See ``runtime/guest/ukernel/ABI.md``.

ELF input is validated strictly: anything malformed, overlapping or misaligned is an
``InputError`` naming the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import InputError
from toolchain.measure.abi import (
    ABI_VERSIONS,
    ALIGNED_HEAP_VERSION,
    GHCB_GPA,
    GUEST_MESSAGE_VERSION,
    KEEP_LAYOUT,
    LAYOUT_ADDRESS_FIELDS,
    LAYOUT_PAGE_FIELDS,
    LINEAR_CHUNK,
    LINEAR_MAX,
    LINEAR_MEMORY_VERSION,
    LINEAR_PD_COUNT,
    LINEAR_PD_GPA,
    LINEAR_PDPT_GPA,
    LINEAR_PT_GPA,
    NOTE_NAME,
    NOTE_TYPE_LAYOUT,
    RUNTIME_HEAP_RESERVE,
    SEL_KCODE,
    SEL_KDATA,
    SEL_TSS,
    TSS_OFFSET,
    VECTOR_STUB_SIZE,
    AbiAddresses,
    KeepLayout,
)
from toolchain.measure.plan import PLATFORM_SIMULATED, PLATFORM_SNP, LaunchPlan, Region
from toolchain.snp.digest import PAGE_SIZE, PageType
from toolchain.snp.vmsa import (
    CR4_MCE,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SVME,
    TSS64_BUSY,
    Segment,
    VcpuState,
    long_mode_state,
)

LARGE_PAGE = 0x200000
#: The guest memory a keep may be built with (``build_plan(memory=...)``).
GUEST_MEMORY_MIN = 64 << 20
GUEST_MEMORY_MAX = 4 << 30
WASM_PAGE = 65536
# RUNTIME_HEAP_RESERVE (toolchain.measure.abi): what the keep's runtime takes from its heap
# besides the linear memory: the 64 KiB launch argument buffer (LAUNCH_ARGS_MAX,
# runtime/guest/wasm/wasi.c), block headers, the argument table and wasm2c's tables. Measured
# (ABI 1 to 3, linear memory inside the heap): in a keep with a 243,228,672-byte heap (3711.4
# pages) a module growing page by page reaches 3710 pages; heap minus this reserve gives the same.

# The GDT (selectors: toolchain.measure.abi): null, kernel code, kernel data, user code, user
# data, TSS.
_GDT_ENTRIES = (
    0,
    0x00AF9B000000FFFF,  # ring-0 64-bit code, accessed
    0x00CF93000000FFFF,  # ring-0 data, accessed
    0x00AFFB000000FFFF,  # ring-3 64-bit code, accessed
    0x00CFF3000000FFFF,  # ring-3 data, accessed
)
GDT_LIMIT = (len(_GDT_ENTRIES) + 2) * 8 - 1  # + the 16-byte TSS descriptor
TSS_LIMIT = 0x67

# Page-table entry bits.
PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
PTE_NX = 1 << 63

# ELF constants (the gABI's names).
PF_X, PF_W, PF_R = 1, 2, 4


@dataclass(frozen=True)
class Access:
    """How a page is mapped: writable, executable, reachable from ring 3, shared with the host.

    ``shared`` pages (the hypercall page and buffer, the doorbell, the GHCB) never carry the
    C-bit; every other mapping carries it on ``snp`` (``c_mask``), and nothing does on the
    simulated platform (``c_mask`` 0), whose entries are therefore unchanged.
    """

    write: bool
    execute: bool
    user: bool
    shared: bool = False

    def pte_bits(self, c_mask: int = 0) -> int:
        bits = PTE_P | PTE_A
        if self.write:
            bits |= PTE_RW | PTE_D
        if self.user:
            bits |= PTE_US
        if not self.execute:
            bits |= PTE_NX
        if not self.shared:
            bits |= c_mask
        return bits


KERNEL_RO = Access(write=False, execute=False, user=False)
KERNEL_RW = Access(write=True, execute=False, user=False)
USER_RO = Access(write=False, execute=False, user=True)
USER_RW = Access(write=True, execute=False, user=True)
SHARED_USER_RW = Access(write=True, execute=False, user=True, shared=True)
SHARED_KERNEL_RW = Access(write=True, execute=False, user=False, shared=True)

#: The platforms a plan is laid out for: today's simulated firmware (backends kvm and nil) and
#: AMD SEV-SNP through Linux's KVM SNP API (backend snp).
PLATFORMS = (PLATFORM_SIMULATED, PLATFORM_SNP)
#: The file ``keep build`` writes the microkernel built for ``snp`` to (its platform layer
#: executes VMGEXIT; ``ukernel.elf`` is the simulated platform's): every ``snp`` plan is laid out
#: from it, beside ``ukernel.elf`` and ``runtime.elf``.
SNP_UKERNEL_ELF = "ukernel-snp.elf"
#: The C-bit position (CPUID 0x8000001F EBX[5:0]) on Milan, Genoa and Turin.
DEFAULT_C_BIT = 51
#: The C-bit lies in a page-table entry's address field (bits 12..51) and above every address
#: the keep maps (one PML4 entry: below 2^39).
C_BIT_RANGE = range(39, 52)
#: The GHCB page on ``snp`` (ring 0 RW, NX, C-bit clear, never launched);
#: runtime/guest/ukernel/ABI.md.
GHCB_PAGE = GHCB_GPA


@dataclass(frozen=True)
class Segment64:
    """One validated PT_LOAD segment."""

    index: int
    vaddr: int
    memsz: int
    data: bytes  # p_filesz bytes from the file
    flags: int

    @property
    def first_page(self) -> int:
        return self.vaddr - self.vaddr % PAGE_SIZE

    @property
    def end_page(self) -> int:
        return -(-(self.vaddr + self.memsz) // PAGE_SIZE) * PAGE_SIZE


@dataclass(frozen=True)
class ElfImage:
    """A validated static x86-64 executable: entry point, PT_LOAD segments and notes."""

    name: str
    entry: int
    segments: tuple[Segment64, ...]
    notes: tuple[tuple[bytes, int, bytes], ...]  # (name, type, descriptor)
    sha256: str

    @property
    def start(self) -> int:
        return self.segments[0].first_page

    @property
    def end(self) -> int:
        return max(s.end_page for s in self.segments)


def _read_bytes(source: Path | bytes, what: str) -> bytes:
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} {source}: {exc.strerror}") from None


# The ELF64 header after e_ident up to e_phnum, and a program header (System V gABI;
# little-endian, as checked).
_ELF_HEADER = struct.Struct("<HHIQQQIHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_PH_FIELDS = (
    *("p_type", "p_flags", "p_offset", "p_vaddr"),
    *("p_paddr", "p_filesz", "p_memsz", "p_align"),
)
# The names pyelftools gives (errors name them); other values are shown as numbers.
_E_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_E_MACHINES = {3: "EM_386", 0x28: "EM_ARM", 0x3E: "EM_X86_64", 0xB7: "EM_AARCH64", 0xF3: "EM_RISCV"}
_P_TYPES = {1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 4: "PT_NOTE"}


def _elf_headers(data: bytes, what: str) -> tuple[int, bool, dict[str, Any], list[dict[str, Any]]]:
    """The ELF class (32/64), whether little-endian, the header and the program headers, read
    with ``struct`` (only what ``load_elf`` uses: a keep's build need not import pyelftools)."""
    if len(data) < 16 or data[:4] != b"\x7fELF":
        raise InputError(f"the {what} is not a valid ELF file: no ELF magic")
    elfclass = {1: 32, 2: 64}.get(data[4], 0)
    little_endian = data[5] == 1
    if elfclass != 64 or not little_endian:
        return elfclass, little_endian, {}, []
    if len(data) < 0x40:  # the whole ELF64 header
        raise InputError(f"the {what} is not a valid ELF file: truncated ELF header")
    fields = _ELF_HEADER.unpack_from(data, 16)
    e_type, e_machine, _version, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum = fields
    header: dict[str, Any] = {
        "e_type": _E_TYPES.get(e_type, e_type),
        "e_machine": _E_MACHINES.get(e_machine, e_machine),
        "e_entry": entry,
    }
    if phnum and phentsize != _PROGRAM_HEADER.size:
        raise InputError(f"the {what} is not a valid ELF file: e_phentsize {phentsize}")
    if phoff + phnum * _PROGRAM_HEADER.size > len(data):
        raise InputError(f"the {what} is not a valid ELF file: program headers past the end")
    headers = []
    for index in range(phnum):
        values = _PROGRAM_HEADER.unpack_from(data, phoff + index * _PROGRAM_HEADER.size)
        ph: dict[str, Any] = dict(zip(_PH_FIELDS, values, strict=True))
        ph["p_type"] = _P_TYPES.get(values[0], values[0])
        headers.append(ph)
    return elfclass, little_endian, header, headers


def load_elf(source: Path | bytes, what: str) -> ElfImage:
    """Parse and validate a static x86-64 ELF executable (``what`` names it in errors)."""
    data = _read_bytes(source, what)
    elfclass, little_endian, header, headers = _elf_headers(data, what)
    if elfclass != 64 or not little_endian:
        raise InputError(f"the {what} is not a little-endian 64-bit ELF")
    if header["e_machine"] != "EM_X86_64":
        raise InputError(f"the {what} is for {header['e_machine']}, not x86-64")
    if header["e_type"] != "ET_EXEC":
        raise InputError(f"the {what} is {header['e_type']}, not a static executable (ET_EXEC)")

    segments: list[Segment64] = []
    notes: list[tuple[bytes, int, bytes]] = []
    for index, ph in enumerate(headers):
        kind = ph["p_type"]
        if kind in {"PT_DYNAMIC", "PT_INTERP"}:
            raise InputError(f"the {what} has {kind}: it must be statically linked")
        offset, filesz = ph["p_offset"], ph["p_filesz"]
        if kind in {"PT_LOAD", "PT_NOTE"} and (offset + filesz > len(data) or offset < 0):
            raise InputError(
                f"the {what}'s segment {index} ({kind}) reaches past the end of the file "
                f"(offset {offset:#x} + {filesz:#x} > {len(data):#x})"
            )
        if kind == "PT_NOTE":
            notes.extend(_parse_notes(data[offset : offset + filesz], what))
            continue
        if kind != "PT_LOAD":
            continue
        vaddr, memsz, align = ph["p_vaddr"], ph["p_memsz"], ph["p_align"]
        if memsz == 0:
            continue
        if filesz > memsz:
            raise InputError(f"the {what}'s PT_LOAD {index} has p_filesz > p_memsz")
        if ph["p_paddr"] != vaddr:
            raise InputError(
                f"the {what}'s PT_LOAD {index} has p_paddr {ph['p_paddr']:#x} != "
                f"p_vaddr {vaddr:#x} (the keep is identity mapped)"
            )
        if align < PAGE_SIZE or align & (align - 1) or vaddr % align != offset % align:
            raise InputError(
                f"the {what}'s PT_LOAD {index} is misaligned (p_align {align:#x}, "
                f"p_vaddr {vaddr:#x}, p_offset {offset:#x}): need page alignment"
            )
        if ph["p_flags"] & PF_W and ph["p_flags"] & PF_X:
            raise InputError(f"the {what}'s PT_LOAD {index} is both writable and executable")
        if vaddr + memsz > 1 << 47:
            raise InputError(f"the {what}'s PT_LOAD {index} lies beyond the 47-bit address space")
        segments.append(
            Segment64(index, vaddr, memsz, data[offset : offset + filesz], ph["p_flags"])
        )
    if not segments:
        raise InputError(f"the {what} has no loadable segment")
    segments.sort(key=lambda s: s.vaddr)
    for before, after in itertools.pairwise(segments):
        if after.first_page < before.end_page:
            raise InputError(
                f"the {what}'s PT_LOAD {before.index} and {after.index} overlap or share a page "
                f"({before.vaddr:#x}+{before.memsz:#x} and {after.vaddr:#x})"
            )
    entry = header["e_entry"]
    if not any(s.flags & PF_X and s.vaddr <= entry < s.vaddr + s.memsz for s in segments):
        raise InputError(f"the {what}'s entry point {entry:#x} is not in an executable segment")
    return ElfImage(what, entry, tuple(segments), tuple(notes), hashlib.sha256(data).hexdigest())


def _parse_notes(blob: bytes, what: str) -> list[tuple[bytes, int, bytes]]:
    notes = []
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, kind = struct.unpack_from("<III", blob, pos)
        name_start = pos + 12
        desc_start = name_start + (-(-namesz // 4) * 4)
        desc_end = desc_start + descsz
        if desc_end > len(blob):
            raise InputError(f"the {what} has a truncated note")
        notes.append((blob[name_start : name_start + namesz], kind, blob[desc_start:desc_end]))
        pos = desc_start + (-(-descsz // 4) * 4)
    return notes


def read_layout(ukernel: ElfImage) -> KeepLayout:
    """The microkernel's ``.note.keepstack`` layout declaration."""
    found = [desc for name, kind, desc in ukernel.notes if name == NOTE_NAME]
    layouts = [
        desc for name, kind, desc in ukernel.notes if name == NOTE_NAME and kind == NOTE_TYPE_LAYOUT
    ]
    if not found or len(layouts) != 1:
        raise InputError(
            f"the {ukernel.name} has no (or more than one) Keepstack layout note",
            hint="build it with toolchain.image.ukernel (runtime/guest/ukernel/note.c)",
        )
    desc = layouts[0]
    if len(desc) < 8:
        raise InputError("the Keepstack layout note is truncated")
    version, size = struct.unpack_from("<II", desc)
    if version not in ABI_VERSIONS:
        raise InputError(
            f"the microkernel declares ABI version {version}; this reads {list(ABI_VERSIONS)}"
        )
    if size != KEEP_LAYOUT.size or len(desc) != KEEP_LAYOUT.size:
        raise InputError(
            f"the Keepstack layout note is {len(desc)} bytes (declares {size}); "
            f"ABI {version} has {KEEP_LAYOUT.size}"
        )
    values = dict(zip(KEEP_LAYOUT.names, KEEP_LAYOUT.struct.unpack(desc), strict=True))
    del values["size"]
    layout = KeepLayout(**values)
    _check_layout(layout)
    return layout


def _check_layout(layout: KeepLayout) -> None:
    for name in LAYOUT_PAGE_FIELDS:
        value = getattr(layout, name)
        if value % PAGE_SIZE or (name.endswith("size") and value == 0):
            raise InputError(f"the layout note's {name} ({value:#x}) is not page-aligned")
    if layout.tss != layout.gdt + TSS_OFFSET:
        raise InputError(f"the layout note puts the TSS at {layout.tss:#x}, not GDT + 0x80")
    if layout.ram_size > 1 << 39:
        raise InputError(f"RAM size {layout.ram_size:#x} exceeds the 512 GiB one PML4 entry maps")
    for name in LAYOUT_ADDRESS_FIELDS:
        if getattr(layout, name) >= layout.ram_size:
            raise InputError(f"the layout note's {name} lies beyond the end of RAM")
    if layout.user_stack_size >= layout.ram_size:
        raise InputError("the layout note's user stack is larger than RAM")
    if layout.vector_stubs % VECTOR_STUB_SIZE:
        raise InputError("the layout note's vector stubs are not 16-byte aligned")


class _PageMap:
    """Launched pages by GPA, refusing any page claimed twice."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[PageType, bytes | None, str]] = {}

    def add(self, gpa: int, page_type: PageType, data: bytes | None, label: str) -> None:
        if gpa in self.pages:
            raise InputError(
                f"{label} overlaps {self.pages[gpa][2]} at {gpa:#x}",
                hint="the runtime image must not overlap the microkernel's fixed layout",
            )
        self.pages[gpa] = (page_type, data, label)


class _Mappings:
    """Identity mappings by page, refusing any page mapped twice."""

    def __init__(self) -> None:
        self.pages: dict[int, Access] = {}
        self.ranges: list[tuple[int, int, Access]] = []  # large uniform ranges (heap, stack)

    def add(self, gpa: int, access: Access, what: str) -> None:
        if gpa in self.pages or any(s <= gpa < e for s, e, _ in self.ranges):
            raise InputError(f"{what} at {gpa:#x} is mapped twice")
        self.pages[gpa] = access

    def add_range(self, start: int, end: int, access: Access, what: str) -> None:
        if any(start <= gpa < end for gpa in self.pages) or any(
            s < end and start < e for s, e, _ in self.ranges
        ):
            raise InputError(f"{what} [{start:#x}, {end:#x}) overlaps another mapping")
        self.ranges.append((start, end, access))

    def lookup(self, gpa: int) -> Access | None:
        if gpa in self.pages:
            return self.pages[gpa]
        for start, end, access in self.ranges:
            if start <= gpa < end:
                return access
        return None

    def uniform_large(self, base: int) -> Access | None:
        """The access of the 2 MiB at ``base`` if one range maps it all, else None."""
        for start, end, access in self.ranges:
            if start <= base and base + LARGE_PAGE <= end:
                return access
        return None

    def touched_chunks(self) -> list[int]:
        chunks = {gpa - gpa % LARGE_PAGE for gpa in self.pages}
        for start, end, _ in self.ranges:
            chunks.update(range(start - start % LARGE_PAGE, end, LARGE_PAGE))
        return sorted(chunks)


def _place_segments(
    image: ElfImage, pages: _PageMap, mappings: _Mappings, *, user: bool, label: str
) -> None:
    for seg in image.segments:
        access = Access(write=bool(seg.flags & PF_W), execute=bool(seg.flags & PF_X), user=user)
        file_end = seg.vaddr + len(seg.data)
        for gpa in range(seg.first_page, seg.end_page, PAGE_SIZE):
            what = f"{label} PT_LOAD {seg.index}"
            if gpa >= file_end:
                pages.add(gpa, PageType.ZERO, None, what)
            else:
                page = bytearray(PAGE_SIZE)
                lo = max(gpa, seg.vaddr)
                hi = min(gpa + PAGE_SIZE, file_end)
                page[lo - gpa : hi - gpa] = seg.data[lo - seg.vaddr : hi - seg.vaddr]
                pages.add(gpa, PageType.NORMAL, bytes(page), what)
            mappings.add(gpa, access, what)


def _gdt_page(layout: KeepLayout) -> bytes:
    page = bytearray(PAGE_SIZE)
    for index, entry in enumerate(_GDT_ENTRIES):
        struct.pack_into("<Q", page, index * 8, entry)
    base = layout.tss
    low = (
        TSS_LIMIT
        | (base & 0xFFFFFF) << 16
        | (0x80 | 0x0B) << 40  # present, 64-bit TSS (busy: TR is loaded at entry)
        | ((base >> 24) & 0xFF) << 56
    )
    struct.pack_into("<QQ", page, len(_GDT_ENTRIES) * 8, low, base >> 32)
    # TSS: RSP0 and IST1 both the fault stack; no I/O bitmap (offset past the limit).
    tss = bytearray(TSS_LIMIT + 1)
    struct.pack_into("<Q", tss, 0x04, layout.fault_stack_top)
    struct.pack_into("<Q", tss, 0x24, layout.fault_stack_top)
    struct.pack_into("<H", tss, 0x66, TSS_LIMIT + 1)
    page[TSS_OFFSET : TSS_OFFSET + len(tss)] = tss
    return bytes(page)


def _idt_page(layout: KeepLayout) -> bytes:
    page = bytearray(PAGE_SIZE)
    for vector in range(256):
        handler = layout.vector_stubs + vector * VECTOR_STUB_SIZE
        struct.pack_into(
            "<HHBBHII",
            page,
            vector * 16,
            handler & 0xFFFF,
            SEL_KCODE,
            1,  # IST1: every fault lands on the known-good fault stack
            0x8E,  # present, DPL 0 (int N from ring 3 is #GP), 64-bit interrupt gate
            (handler >> 16) & 0xFFFF,
            handler >> 32,
            0,
        )
    return bytes(page)


def _page_tables(
    layout: KeepLayout, mappings: _Mappings, c_mask: int = 0
) -> list[tuple[int, bytes]]:
    """Identity-map ``mappings`` with PML4 → PDPT → PDs → PTs placed from ``page_tables`` on;
    from ABI version 4 on, PML4 entry 1 leads to the linear memory's tables (``_linear_tables``).

    ``c_mask`` (the C-bit, on ``snp``) goes into every private leaf and into every table
    pointer: the tables themselves are launched, hence private (as Linux sets _PAGE_ENC at
    every level).
    """
    chunks = mappings.touched_chunks()
    gigs = sorted({c - c % (1 << 30) for c in chunks})
    small = [c for c in chunks if mappings.uniform_large(c) is None]
    base = layout.page_tables
    pml4_gpa, pdpt_gpa = base, base + PAGE_SIZE
    pd_gpa = {g: base + (2 + i) * PAGE_SIZE for i, g in enumerate(gigs)}
    pt_gpa = {c: base + (2 + len(gigs) + i) * PAGE_SIZE for i, c in enumerate(small)}
    total = 2 + len(gigs) + len(small)
    linear = layout.abi_version >= LINEAR_MEMORY_VERSION
    budget = (LINEAR_PDPT_GPA - base if linear else layout.page_tables_size) // PAGE_SIZE
    if total > budget:
        raise InputError(f"the page tables need {total} pages but the layout reserves {budget}")
    upper = PTE_P | PTE_RW | PTE_US | PTE_A | c_mask  # leaves decide the permissions
    pml4 = bytearray(PAGE_SIZE)
    struct.pack_into("<Q", pml4, 0, pdpt_gpa | upper)
    linear_tables = _linear_tables(layout, upper) if linear else []
    if linear:
        struct.pack_into("<Q", pml4, 8, LINEAR_PDPT_GPA | upper)
    pdpt = bytearray(PAGE_SIZE)
    for gig, gpa in pd_gpa.items():
        struct.pack_into("<Q", pdpt, (gig >> 30) * 8, gpa | upper)
    tables: list[tuple[int, bytes]] = [(pml4_gpa, bytes(pml4)), (pdpt_gpa, bytes(pdpt))]
    pds: dict[int, bytearray] = {g: bytearray(PAGE_SIZE) for g in gigs}
    for chunk in chunks:
        pd = pds[chunk - chunk % (1 << 30)]
        slot = ((chunk >> 21) & 0x1FF) * 8
        large = mappings.uniform_large(chunk)
        if large is not None:
            struct.pack_into("<Q", pd, slot, chunk | large.pte_bits(c_mask) | PTE_PS)
        else:
            struct.pack_into("<Q", pd, slot, pt_gpa[chunk] | upper)
    tables += [(pd_gpa[g], bytes(pds[g])) for g in gigs]
    for chunk in small:
        pt = bytearray(PAGE_SIZE)
        for index in range(512):
            gpa = chunk + index * PAGE_SIZE
            access = mappings.lookup(gpa)
            if access is not None:
                struct.pack_into("<Q", pt, index * 8, gpa | access.pte_bits(c_mask))
        tables.append((pt_gpa[chunk], bytes(pt)))
    return tables + linear_tables


def _linear_tables(layout: KeepLayout, upper: int) -> list[tuple[int, bytes]]:
    """The tables behind PML4 entry 1 (``LINEAR_BASE``, ABI.md "Linear memory"): a PDPT whose
    first ``LINEAR_PD_COUNT`` entries (the 4 GiB that can ever be mapped) point at empty PDs,
    and the empty PT for a last, incomplete chunk. Everything in the reserved range is not
    present until the microkernel maps it on a grow; the rest of the 8 GiB (the guard) never is.
    They fill the last pages of the page-table area."""
    if layout.page_tables + layout.page_tables_size != LINEAR_PT_GPA + PAGE_SIZE:
        raise InputError(
            f"the page-table area [{layout.page_tables:#x}, "
            f"{layout.page_tables + layout.page_tables_size:#x}) does not end with the linear "
            f"memory's tables at [{LINEAR_PDPT_GPA:#x}, {LINEAR_PT_GPA + PAGE_SIZE:#x})"
        )
    pdpt = bytearray(PAGE_SIZE)
    for index in range(LINEAR_PD_COUNT):
        struct.pack_into("<Q", pdpt, index * 8, (LINEAR_PD_GPA + index * PAGE_SIZE) | upper)
    empty = bytes(PAGE_SIZE)
    pds = [(LINEAR_PD_GPA + index * PAGE_SIZE, empty) for index in range(LINEAR_PD_COUNT)]
    return [(LINEAR_PDPT_GPA, bytes(pdpt)), *pds, (LINEAR_PT_GPA, empty)]


def _map_linear_tables(mappings: _Mappings) -> None:
    """The tables ring 0 writes on a grow (the PDs and the PT), ring 0 RW at their GPA, and the
    PDPT ring 0 reads the C-bit from, read-only (runtime/guest/ukernel/linear.c)."""
    mappings.add(LINEAR_PDPT_GPA, KERNEL_RO, "linear memory PDPT")
    for gpa in range(LINEAR_PD_GPA, LINEAR_PT_GPA + PAGE_SIZE, PAGE_SIZE):
        mappings.add(gpa, KERNEL_RW, "linear memory tables")


def _merge_regions(pages: _PageMap) -> tuple[Region, ...]:
    """Consecutive pages of one type and one label become one region, in GPA order."""
    regions: list[Region] = []
    run: list[tuple[int, PageType, bytes | None, str]] = []

    def flush() -> None:
        if not run:
            return
        first_gpa, page_type, _, label = run[0]
        data = None
        if page_type is PageType.NORMAL:
            data = b"".join(d for _, _, d, _ in run if d is not None)
        regions.append(Region(first_gpa, page_type, len(run) * PAGE_SIZE, data, label))
        run.clear()

    for gpa in sorted(pages.pages):
        page_type, data, label = pages.pages[gpa]
        if run and not (
            run[-1][0] + PAGE_SIZE == gpa and run[-1][1] is page_type and run[-1][3] == label
        ):
            flush()
        run.append((gpa, page_type, data, label))
    flush()
    return tuple(regions)


def _long_mode_vcpu(layout: KeepLayout, *, rip: int, rsp: int) -> VcpuState:
    """Ring 0, 64-bit, paging on with the measured tables, GDT/IDT/TR loaded (ABI.md)."""
    return long_mode_state(
        rip=rip,
        rsp=rsp,
        cr3=layout.page_tables,
        gdt_base=layout.gdt,
        gdt_limit=GDT_LIMIT,
        idt_base=layout.idt,
        idt_limit=256 * 16 - 1,
        tr=Segment(SEL_TSS, TSS64_BUSY, TSS_LIMIT, layout.tss),
        code_selector=SEL_KCODE,
        data_selector=SEL_KDATA,
        cr4=CR4_PAE | CR4_MCE | CR4_OSFXSR | CR4_OSXMMEXCPT,
        efer=EFER_SVME | EFER_NXE | EFER_LMA | EFER_LME,  # no SCE: syscall faults
    )


def check_c_bit(c_bit: int) -> None:
    """Refuse a C-bit position outside ``C_BIT_RANGE``."""
    if not isinstance(c_bit, int) or isinstance(c_bit, bool) or c_bit not in C_BIT_RANGE:
        raise InputError(
            f"C-bit position {c_bit!r}: expected {C_BIT_RANGE.start}..{C_BIT_RANGE.stop - 1} "
            f"(CPUID 0x8000001F EBX[5:0]; {DEFAULT_C_BIT} on Milan, Genoa and Turin)"
        )


def check_guest_memory(memory: int) -> None:
    """Refuse a memory size outside [GUEST_MEMORY_MIN, GUEST_MEMORY_MAX] or not 2 MiB-whole."""
    if not GUEST_MEMORY_MIN <= memory <= GUEST_MEMORY_MAX or memory % LARGE_PAGE:
        raise InputError(
            f"guest memory of {memory} bytes: a keep takes {GUEST_MEMORY_MIN >> 20} MiB to "
            f"{GUEST_MEMORY_MAX >> 20} MiB in whole 2 MiB pages",
        )


def parse_memory_size(text: str) -> int:
    """``268435456``, ``512M``/``512MiB``, ``1G``/``1GiB`` → bytes (checked by the caller)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in units else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise InputError(f"memory size {text!r} is not a number of bytes, K, M or G (e.g. 512M)")
    return int(number) * units[unit]


def build_plan(
    ukernel: Path | bytes,
    runtime: Path | bytes,
    *,
    vcpu_count: int = 1,
    memory: int | None = None,
    platform: str = PLATFORM_SIMULATED,
    c_bit: int = DEFAULT_C_BIT,
) -> LaunchPlan:
    """The LaunchPlan of a keep: the microkernel ELF and the ring-3 runtime image ELF.

    ``memory`` is the guest RAM in bytes (default: the microkernel note's ``ram_size``).
    ``platform`` is ``simulated`` (backends kvm and nil) or ``snp``; on ``snp`` every private
    mapping carries the C-bit at position ``c_bit`` (ignored on ``simulated``), the GHCB page is
    mapped shared, and the VMSAs are the ones KVM builds (``LaunchPlan``).
    """
    if platform not in PLATFORMS:
        raise InputError(f"unknown platform {platform!r}: one of {', '.join(PLATFORMS)}")
    snp = platform == PLATFORM_SNP
    if snp:
        check_c_bit(c_bit)
    kernel = load_elf(ukernel, "microkernel ELF")
    user = load_elf(runtime, "runtime image ELF")
    layout = read_layout(kernel)
    if memory is not None:
        check_guest_memory(memory)
        layout = dataclasses.replace(layout, ram_size=memory)
        _check_layout(layout)
    abi = _abi_addresses(layout, kernel, user)

    pages = _PageMap()
    mappings = _Mappings()
    _place_segments(kernel, pages, mappings, user=False, label="microkernel")
    _place_segments(user, pages, mappings, user=True, label="runtime image")
    # Version 4 microkernels check the C-bit (cbit.c); older ones had the field reserved, zero.
    declared_c_bit = c_bit if snp and layout.abi_version >= GUEST_MESSAGE_VERSION else 0
    _place_fixed_pages(layout, abi, pages, mappings, declared_c_bit)
    _map_shared_pages(layout, pages, mappings, snp=snp)
    mappings.add_range(abi.heap_start, abi.heap_end, USER_RW, "heap")
    mappings.add_range(abi.stack_bottom, abi.stack_top, USER_RW, "stack")
    if layout.abi_version >= LINEAR_MEMORY_VERSION:
        _map_linear_tables(mappings)

    for gpa, table in _page_tables(layout, mappings, 1 << c_bit if snp else 0):
        pages.add(gpa, PageType.NORMAL, table, "page tables")
    if any(g >= layout.ram_size for g in pages.pages):
        raise InputError("a launched page lies beyond the end of RAM")

    return LaunchPlan(
        regions=_merge_regions(pages),
        boot_vcpu=_long_mode_vcpu(layout, rip=kernel.entry, rsp=layout.boot_stack_top),
        ap_vcpu=_long_mode_vcpu(layout, rip=layout.ap_entry, rsp=0),
        vcpu_count=vcpu_count,
        guest_policy=layout.guest_policy,
        sev_features=layout.sev_features,
        ram_size=layout.ram_size,
        abi=abi,
        inputs={"ukernel_sha256": kernel.sha256, "runtime_sha256": user.sha256},
        platform=platform,
        c_bit=c_bit if snp else None,
    )


def _abi_addresses(layout: KeepLayout, kernel: ElfImage, user: ElfImage) -> AbiAddresses:
    """Where everything is: the layout's addresses, the runtime image, and the heap and stack
    it leaves (refused when the ELFs do not fit)."""
    if kernel.end > layout.hc_page or kernel.start < layout.page_tables + layout.page_tables_size:
        raise InputError(
            f"the microkernel [{kernel.start:#x}, {kernel.end:#x}) does not fit between the page "
            f"tables and the hypercall page"
        )
    if user.start < layout.user_base:
        raise InputError(
            f"the runtime image starts at {user.start:#x}, below the user base "
            f"{layout.user_base:#x}",
            hint="link it at 0x1000000 or above (see runtime/guest/ukernel/ABI.md)",
        )
    stack_top = layout.ram_size
    stack_bottom = stack_top - layout.user_stack_size
    heap_start, heap_end = _heap_of(layout.abi_version, user.end, stack_bottom)
    if heap_end <= heap_start:
        raise InputError(
            f"the runtime image ends at {user.end:#x}: no room for a heap below the stack "
            f"({stack_bottom:#x}) in {layout.ram_size:#x} bytes of RAM"
        )
    return AbiAddresses.from_layout(
        layout,  # its abi_version is the microkernel's own: a release rebuilds to its own bytes
        user_entry=user.entry,
        image_start=user.start,
        image_end=user.end,
        heap_start=heap_start,
        heap_end=heap_end,
        stack_top=stack_top,
        stack_bottom=stack_bottom,
    )


def _heap_of(abi_version: int, image_end: int, stack_bottom: int) -> tuple[int, int]:
    """[heap_start, heap_end) between the runtime image's end and the stack's bottom.

    Before ``ALIGNED_HEAP_VERSION`` the heap fills the gap up to one unmapped guard page below
    the stack (kept byte for byte: released keeps rebuild with it). From it on both ends are
    2 MiB boundaries, so the microkernel validates the heap in 2 MiB pages only: the gap
    [image_end, heap_start) stays unmapped, and the guard [heap_end, stack_bottom) grows to at
    least one page, 2 MiB for a 2 MiB-aligned stack (still the "call stack exhausted" trap)."""
    guard = stack_bottom - PAGE_SIZE  # one unmapped guard page below the stack
    if abi_version < ALIGNED_HEAP_VERSION:
        return image_end, guard
    return -(-image_end // LARGE_PAGE) * LARGE_PAGE, guard // LARGE_PAGE * LARGE_PAGE


def _place_fixed_pages(
    layout: KeepLayout, abi: AbiAddresses, pages: _PageMap, mappings: _Mappings, c_bit: int
) -> None:
    """The GDT, IDT, SECRETS and CPUID pages and the user info page (with the tables' C-bit, 0
    without: the microkernel checks it against the CPUID page), launched and mapped."""
    user_info = abi.user_info_page(layout.ram_size, c_bit)
    fixed: Iterable[tuple[int, PageType, bytes | None, str, Access]] = (
        (layout.gdt, PageType.NORMAL, _gdt_page(layout), "GDT and TSS", KERNEL_RW),
        (layout.idt, PageType.NORMAL, _idt_page(layout), "IDT", KERNEL_RO),
        (layout.secrets_page, PageType.SECRETS, None, "secrets page", KERNEL_RO),
        (layout.cpuid_page, PageType.CPUID, None, "CPUID page", KERNEL_RO),
        (
            layout.user_info,
            PageType.NORMAL,
            user_info.ljust(PAGE_SIZE, b"\0"),
            "user info",
            USER_RO,
        ),
    )
    for gpa, page_type, data, label, access in fixed:
        pages.add(gpa, page_type, data, label)
        mappings.add(gpa, access, label)


def _map_shared_pages(
    layout: KeepLayout, pages: _PageMap, mappings: _Mappings, *, snp: bool
) -> None:
    """The pages shared with the VMM (hypercall page and buffer, doorbell; on snp the GHCB):
    mapped, never launched — a launched page there is refused."""
    for gpa in range(layout.hc_page, layout.hc_page + PAGE_SIZE, PAGE_SIZE):
        mappings.add(gpa, SHARED_USER_RW, "hypercall page")
    for gpa in range(layout.hc_buffer, layout.hc_buffer + layout.hc_buffer_size, PAGE_SIZE):
        mappings.add(gpa, SHARED_USER_RW, "hypercall buffer")
    mappings.add(layout.doorbell, SHARED_USER_RW, "doorbell")
    shared = [("hypercall page", layout.hc_page), ("doorbell", layout.doorbell)]
    if snp or layout.abi_version >= GUEST_MESSAGE_VERSION:
        # The GHCB: the guest's half of every VMGEXIT, so shared and never launched. Ring 0 only.
        # Older microkernels never touch it, and their simulated plans stay byte for byte.
        mappings.add(GHCB_PAGE, SHARED_KERNEL_RW, "GHCB page")
        shared.append(("GHCB page", GHCB_PAGE))
    for what, gpa in shared:
        if gpa in pages.pages:
            raise InputError(f"{pages.pages[gpa][2]} overlaps the {what} at {gpa:#x}")
    if any(layout.hc_buffer <= g < layout.hc_buffer + layout.hc_buffer_size for g in pages.pages):
        raise InputError("a launched page overlaps the hypercall buffer")


def snp_plan_of(
    plan: LaunchPlan,
    ukernel: Path | bytes,
    runtime: Path | bytes,
    snp_ukernel: Path | bytes,
    *,
    c_bit: int = DEFAULT_C_BIT,
) -> LaunchPlan:
    """The ``snp`` plan of the keep whose simulated ``plan`` is given: ``snp_ukernel`` (the
    microkernel built for ``snp``, ``SNP_UKERNEL_ELF``) and the plan's runtime, laid out.

    ``ukernel`` and ``runtime`` must be the plan's own: laid out for the simulated platform with
    the plan's memory they must give the plan's launch digest, or this is an ``InputError``
    naming both digests (an snp digest of other ELFs would be signed beside the wrong kvm/nil
    ones). ``snp_ukernel`` must declare the same layout as ``ukernel``: the two builds differ
    only in the platform layer (``runtime/guest/ukernel/platform.c``).
    """
    if plan.platform != PLATFORM_SIMULATED:
        raise InputError(f"the plan is laid out for {plan.platform}, not the simulated platform")
    count = plan.vcpu_count
    twin = build_plan(ukernel, runtime, vcpu_count=count, memory=plan.ram_size)
    if twin != plan:
        raise InputError(
            "the microkernel and runtime ELFs are not the launch plan's: laid out they give "
            f"launch digest {twin.launch_digest(count).hex()} and guest policy "
            f"{twin.guest_policy:#x}, the plan {plan.launch_digest(count).hex()} and "
            f"{plan.guest_policy:#x}"
        )
    simulated = read_layout(load_elf(ukernel, "microkernel ELF"))
    for_snp = read_layout(load_elf(snp_ukernel, "snp microkernel ELF"))
    differing = [
        f.name
        for f in dataclasses.fields(simulated)
        if getattr(simulated, f.name) != getattr(for_snp, f.name)
    ]
    if differing:
        name = differing[0]
        raise InputError(
            f"the snp microkernel is not the twin of the plan's: its layout note declares {name} "
            f"{getattr(for_snp, name)!r}, the plan's microkernel {getattr(simulated, name)!r}"
        )
    return build_plan(
        snp_ukernel,
        runtime,
        vcpu_count=count,
        memory=plan.ram_size,
        platform=PLATFORM_SNP,
        c_bit=c_bit,
    )


def linear_memory_limit(abi: AbiAddresses) -> int:
    """The most linear memory (bytes, whole pages) the keep's runtime can give a module: what
    both backends enforce at run time and ``keep build`` checks the module against.

    From ABI version 4 on the linear memory is backed by whole 2 MiB pages taken from the top of
    the heap (``LINEAR_CHUNK``, below the 2 MiB boundary under ``heap_end``), above at least
    ``RUNTIME_HEAP_RESERVE`` for the runtime (``runtime/guest/wasm/libc.c``, the same formula);
    before, it was one block inside the heap."""
    if abi.abi_version < LINEAR_MEMORY_VERSION:
        heap_size = abi.heap_end - abi.heap_start
        return max(0, (heap_size - RUNTIME_HEAP_RESERVE) // WASM_PAGE * WASM_PAGE)
    top = abi.heap_end - abi.heap_end % LINEAR_CHUNK
    room = top - abi.heap_start - RUNTIME_HEAP_RESERVE
    return min(LINEAR_MAX, max(0, room // LINEAR_CHUNK * LINEAR_CHUNK))
