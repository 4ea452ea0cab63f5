"""Decode a keep's layout from its LaunchPlan and check it against the ELFs, page by page."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ukernel_images import Images, build_images

from toolchain.errors import InputError
from toolchain.measure.abi import (
    ALIGNED_HEAP_VERSION,
    LINEAR_BASE,
    LINEAR_PD_COUNT,
    LINEAR_PD_GPA,
    LINEAR_PDPT_GPA,
    LINEAR_PT_GPA,
    LINEAR_RESERVE,
)
from toolchain.measure.keep import (
    GDT_LIMIT,
    GHCB_PAGE,
    build_plan,
    linear_memory_limit,
    load_elf,
    read_layout,
)
from toolchain.measure.plan import LaunchPlan
from toolchain.snp.digest import PageType

PAGE = 4096
PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD = 1


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("layout")
    return build_images(base / "out", cache_dir=base / "cache")


@pytest.fixture(scope="module")
def plan(images: Images) -> LaunchPlan:
    return build_plan(images.ukernel, images.user)


# ---- an independent reading of the ELFs and the page tables ---------------------------------


@dataclass(frozen=True)
class Phdr:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


def phdrs(elf: bytes) -> list[Phdr]:
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return [Phdr(i, *PHDR.unpack_from(elf, phoff + i * phentsize)) for i in range(phnum)]


def set_phdr(elf: bytes, index: int, **changes: int) -> bytes:
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    (phentsize,) = struct.unpack_from("<H", elf, 0x36)
    ph = phdrs(elf)[index]
    values = {**ph.__dict__, **changes}
    out = bytearray(elf)
    PHDR.pack_into(
        out,
        phoff + index * phentsize,
        *(
            values[k]
            for k in ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
        ),
    )
    return bytes(out)


def loads(elf: bytes) -> list[Phdr]:
    return [p for p in phdrs(elf) if p.type == PT_LOAD and p.memsz]


@dataclass(frozen=True)
class Mapping:
    write: bool
    user: bool
    execute: bool


def walk_all(plan: LaunchPlan) -> dict[int, Mapping]:
    """Every 4 KiB page the page tables map: VA → effective permissions (checks identity)."""
    memory = {gpa: data for gpa, kind, data in plan.pages() if data is not None}

    def entries(table: int) -> list[int]:
        return list(struct.unpack("<512Q", memory[table]))

    mapped: dict[int, Mapping] = {}
    address_mask = 0x000FFFFFFFFFF000

    def leaf(va: int, entry: int, size: int, chain: list[int]) -> None:
        phys = entry & address_mask & ~(size - 1)
        assert phys == va, f"not identity mapped: {va:#x} -> {phys:#x}"
        all_entries = [*chain, entry]
        perms = Mapping(
            write=all(e & 2 for e in all_entries),
            user=all(e & 4 for e in all_entries),
            execute=not any(e >> 63 for e in all_entries),
        )
        for page in range(va, va + size, PAGE):
            mapped[page] = perms

    cr3 = plan.boot_vcpu.cr3
    for i4, e4 in enumerate(entries(cr3)):
        if not e4 & 1:
            continue
        for i3, e3 in enumerate(entries(e4 & address_mask)):
            if not e3 & 1:
                continue
            assert not e3 & 0x80, "no 1 GiB pages expected"
            for i2, e2 in enumerate(entries(e3 & address_mask)):
                if not e2 & 1:
                    continue
                va2 = (i4 << 39) | (i3 << 30) | (i2 << 21)
                if e2 & 0x80:
                    leaf(va2, e2, 1 << 21, [e4, e3])
                    continue
                for i1, e1 in enumerate(entries(e2 & address_mask)):
                    if e1 & 1:
                        leaf(va2 | (i1 << 12), e1, PAGE, [e4, e3, e2])
    return mapped


def pages_of(ph: Phdr) -> range:
    return range(ph.vaddr - ph.vaddr % PAGE, -(-(ph.vaddr + ph.memsz) // PAGE) * PAGE, PAGE)


# ---- the checks -----------------------------------------------------------------------------


def test_every_page_is_covered_exactly_once_with_the_declared_type(
    plan: LaunchPlan, images: Images
) -> None:
    launched = [(gpa, kind) for gpa, kind, _ in plan.pages()]
    gpas = [gpa for gpa, _ in launched]
    assert len(gpas) == len(set(gpas)), "a page is launched twice"
    assert gpas == sorted(gpas), "pages are launched in GPA order"
    by_gpa = dict(launched)
    contents = {gpa: data for gpa, _, data in plan.pages()}

    expected: dict[int, PageType] = {}
    for path in (images.ukernel, images.user):
        elf = path.read_bytes()
        for ph in loads(elf):
            file_end = ph.vaddr + ph.filesz
            for page in pages_of(ph):
                assert page not in expected
                expected[page] = PageType.ZERO if page >= file_end else PageType.NORMAL
                if page < file_end:  # the page holds exactly the file's bytes, zero elsewhere
                    want = bytearray(PAGE)
                    lo, hi = max(page, ph.vaddr), min(page + PAGE, file_end)
                    want[lo - page : hi - page] = elf[
                        ph.offset + lo - ph.vaddr : ph.offset + hi - ph.vaddr
                    ]
                    assert contents[page] == bytes(want), hex(page)
    layout = read_layout(load_elf(images.ukernel, "k"))
    expected[layout.gdt] = PageType.NORMAL
    expected[layout.idt] = PageType.NORMAL
    expected[layout.user_info] = PageType.NORMAL
    expected[layout.secrets_page] = PageType.SECRETS
    expected[layout.cpuid_page] = PageType.CPUID
    tables = [
        g for g in by_gpa if layout.page_tables <= g < layout.page_tables + layout.page_tables_size
    ]
    identity = [g for g in tables if g < LINEAR_PDPT_GPA]
    assert identity
    first = layout.page_tables
    assert identity == list(range(first, first + len(identity) * PAGE, PAGE))
    # ABI 4: the linear memory's PDPT, PDs and PT fill the end of the area
    assert tables[len(identity) :] == list(range(LINEAR_PDPT_GPA, LINEAR_PT_GPA + PAGE, PAGE))
    for gpa in tables:
        expected[gpa] = PageType.NORMAL
    assert by_gpa == expected
    counts = plan.page_counts(1)
    assert counts["SECRETS"] == counts["CPUID"] == 1
    assert counts["ZERO"] >= 2  # the microkernel's stacks and the test image's .bss
    assert counts["VMSA"] == 1


def test_page_table_permissions(plan: LaunchPlan, images: Images) -> None:
    mapped = walk_all(plan)
    abi = plan.abi
    layout = read_layout(load_elf(images.ukernel, "k"))
    kernel_ro, kernel_rw = Mapping(False, False, False), Mapping(True, False, False)
    user_ro, user_rw = Mapping(False, True, False), Mapping(True, True, False)
    expected: dict[int, Mapping] = {
        layout.gdt: kernel_rw,
        layout.idt: kernel_ro,
        layout.secrets_page: kernel_ro,
        layout.cpuid_page: kernel_ro,
        layout.user_info: user_ro,
        abi.hc_page: user_rw,
        abi.doorbell: user_rw,
        GHCB_PAGE: kernel_rw,  # ABI 4: the microkernel's guest requests go through the GHCB
        LINEAR_PDPT_GPA: kernel_ro,  # ABI 4: ring 0 reads the C-bit from it, writes the PDs, PT
        **dict.fromkeys(range(LINEAR_PD_GPA, LINEAR_PT_GPA + PAGE, PAGE), kernel_rw),
    }
    for gpa in range(abi.hc_buffer, abi.hc_buffer + abi.hc_buffer_size, PAGE):
        expected[gpa] = user_rw
    for path, user in ((images.ukernel, False), (images.user, True)):
        for ph in loads(path.read_bytes()):
            perms = Mapping(write=bool(ph.flags & 2), user=user, execute=bool(ph.flags & 1))
            for page in pages_of(ph):
                expected[page] = perms
    for gpa in range(abi.heap_start, abi.heap_end, PAGE):
        expected[gpa] = user_rw
    for gpa in range(abi.stack_bottom, abi.stack_top, PAGE):
        expected[gpa] = user_rw
    # Exactly these pages are mapped: no page tables, no null page, no guard page, nothing else.
    assert mapped.keys() == expected.keys()
    wrong = {hex(va): (mapped[va], want) for va, want in expected.items() if mapped[va] != want}
    assert not wrong, list(wrong.items())[:5]
    assert abi.stack_bottom - PAGE not in mapped  # guard
    assert 0 not in mapped
    assert abi.page_tables not in mapped
    executable = [va for va, m in mapped.items() if m.execute]
    assert all(expected[va].execute for va in executable)


def test_the_heap_is_2mib_aligned_from_abi_5_and_as_before_until_abi_4(
    plan: LaunchPlan, images: Images
) -> None:
    """ABI 5 (issue 15): the heap runs from the first 2 MiB boundary above the runtime image to
    the last one at or below the stack's guard page, so the microkernel validates it in 2 MiB
    pages only; the gap below it and the guard (now 2 MiB) are unmapped (test_page_tables).
    A microkernel declaring ABI 4 keeps its layout byte for byte: the heap from the image's end
    to one guard page below the stack (release 0.3.0 reproduces with it)."""
    large = 0x200000
    abi = plan.abi
    assert abi.abi_version == ALIGNED_HEAP_VERSION == 5
    assert abi.heap_start == -(-abi.image_end // large) * large
    assert abi.image_end < abi.heap_start  # this image leaves a gap (hello.c's action "i")
    assert abi.heap_end % large == 0
    assert abi.stack_bottom - abi.heap_end == large  # the guard (hello.c's actions "8", "j")
    kernel = _patch_note(images.ukernel.read_bytes(), 0, 4)
    old = build_plan(kernel, images.user).abi
    assert old.abi_version == 4
    assert (old.heap_start, old.heap_end) == (abi.image_end, abi.stack_bottom - PAGE)
    assert linear_memory_limit(abi) <= linear_memory_limit(old)


def test_the_linear_memory_range_is_reserved_not_present(plan: LaunchPlan) -> None:
    """PML4 entry 1 leads to the 4 GiB that can be mapped (empty PDs, the empty PT); the rest of
    the 8 GiB (wasm2c's guard) has no tables at all. Nothing there is mapped at launch."""
    memory = {gpa: data for gpa, _, data in plan.pages() if data is not None}
    pml4 = struct.unpack("<512Q", memory[plan.boot_vcpu.cr3])
    assert LINEAR_BASE == 1 << 39
    assert pml4[1] & ~0xFFF == LINEAR_PDPT_GPA
    assert pml4[1] & 1
    assert not any(e & 1 for e in pml4[2:])
    pdpt = struct.unpack("<512Q", memory[LINEAR_PDPT_GPA])
    pds = [LINEAR_PD_GPA + i * PAGE for i in range(LINEAR_PD_COUNT)]
    assert [e & ~0xFFF for e in pdpt[:LINEAR_PD_COUNT]] == pds
    assert all(e & 0x7 == 0x7 for e in pdpt[:LINEAR_PD_COUNT])  # ring 3 RW: the leaves decide
    assert not any(pdpt[LINEAR_PD_COUNT:])  # the guard: no PD behind it
    assert LINEAR_RESERVE == 2 * LINEAR_PD_COUNT << 30
    for gpa in (*pds, LINEAR_PT_GPA):
        assert memory[gpa] == bytes(PAGE)
    assert not [va for va in walk_all(plan) if va >= LINEAR_BASE]


def test_gdt_tss_idt_and_user_info(plan: LaunchPlan, images: Images) -> None:
    layout = read_layout(load_elf(images.ukernel, "k"))
    memory = {gpa: data for gpa, _, data in plan.pages() if data is not None}
    gdt = memory[layout.gdt]
    descriptors = struct.unpack_from("<5Q", gdt)
    assert descriptors[0] == 0
    for selector, dpl, code in (
        (0x08, 0, True),
        (0x10, 0, False),
        (0x18, 3, True),
        (0x20, 3, False),
    ):
        access = (descriptors[selector // 8] >> 40) & 0xFF
        flags = (descriptors[selector // 8] >> 52) & 0xF
        assert access & 0x80
        assert (access >> 5) & 3 == dpl
        assert bool(access & 8) == code
        if code:
            assert flags & 0x2, "64-bit code segment (L=1)"
    low, high = struct.unpack_from("<QQ", gdt, 0x28)
    tss_base = ((low >> 16) & 0xFFFFFF) | ((low >> 56) & 0xFF) << 24 | (high << 32)
    assert tss_base == layout.tss
    assert (low >> 40) & 0x8F == 0x8B
    (rsp0,) = struct.unpack_from("<Q", gdt, layout.tss - layout.gdt + 4)
    (ist1,) = struct.unpack_from("<Q", gdt, layout.tss - layout.gdt + 0x24)
    assert rsp0 == ist1 == layout.fault_stack_top
    idt = memory[layout.idt]
    for vector in range(256):
        lo16, selector, ist, kind, mid16, hi32, _ = struct.unpack_from("<HHBBHII", idt, vector * 16)
        assert lo16 | mid16 << 16 | hi32 << 32 == layout.vector_stubs + 16 * vector
        assert (selector, ist, kind) == (0x08, 1, 0x8E)
    info = struct.unpack_from("<IHH12Q", memory[layout.user_info])
    kernel = load_elf(images.ukernel, "k")
    user = load_elf(images.user, "u")
    abi = plan.abi
    assert info == (
        0x3149554B, abi.abi_version, 0, abi.hc_page, abi.hc_buffer, abi.hc_buffer_size,
        abi.doorbell,
        user.entry, user.start, user.end, abi.heap_start, abi.heap_end, abi.stack_top,
        abi.stack_bottom, plan.ram_size,
    )  # fmt: skip
    boot, ap = plan.boot_vcpu, plan.ap_vcpu
    assert (boot.rip, boot.rsp, boot.cr3) == (
        kernel.entry,
        layout.boot_stack_top,
        layout.page_tables,
    )
    assert (ap.rip, ap.cr3) == (layout.ap_entry, layout.page_tables)
    assert (boot.gdtr.base, boot.gdtr.limit) == (layout.gdt, GDT_LIMIT)
    assert (boot.idtr.base, boot.idtr.limit) == (layout.idt, 0xFFF)
    assert (boot.tr.selector, boot.tr.base) == (0x28, layout.tss)
    assert boot.cs.selector == 0x08
    assert boot.ss.selector == 0x10
    assert boot.efer & 0x800
    assert not boot.efer & 0x1
    assert plan.guest_policy == layout.guest_policy == 0x30000


def test_plan_is_deterministic(images: Images, plan: LaunchPlan) -> None:
    again = build_plan(images.ukernel.read_bytes(), images.user.read_bytes())
    assert again.to_json() == plan.to_json()


def _loaded_offsets(elf: bytes) -> list[int]:
    offsets = []
    for ph in loads(elf):
        if ph.filesz:
            offsets += [ph.offset, ph.offset + ph.filesz // 2, ph.offset + ph.filesz - 1]
    return offsets


@pytest.mark.parametrize("which", ["ukernel", "user"])
def test_a_changed_loaded_byte_changes_the_digest(
    images: Images, plan: LaunchPlan, which: str
) -> None:
    kernel, user = images.ukernel.read_bytes(), images.user.read_bytes()
    target = kernel if which == "ukernel" else user
    for offset in _loaded_offsets(target):
        changed = bytearray(target)
        changed[offset] ^= 0x01
        args = (bytes(changed), user) if which == "ukernel" else (kernel, bytes(changed))
        try:
            other = build_plan(*args)
        except InputError:
            continue  # e.g. a flipped bit in the layout note: refused, which is also safe
        assert other.launch_digest(1) != plan.launch_digest(1), f"{which} offset {offset:#x}"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_changed_loaded_byte_changes_the_digest(images: Images, data: st.DataObject) -> None:
    kernel, user = images.ukernel.read_bytes(), images.user.read_bytes()
    base = build_plan(kernel, user).launch_digest(1)
    which = data.draw(st.sampled_from(["ukernel", "user"]))
    target = bytearray(kernel if which == "ukernel" else user)
    ph = data.draw(st.sampled_from([p for p in loads(bytes(target)) if p.filesz]))
    offset = ph.offset + data.draw(st.integers(0, ph.filesz - 1))
    target[offset] ^= data.draw(st.integers(1, 255))
    args = (bytes(target), user) if which == "ukernel" else (kernel, bytes(target))
    try:
        changed = build_plan(*args).launch_digest(1)
    except InputError:
        return
    assert changed != base


# ---- malformed input ------------------------------------------------------------------------


def _malformed(kernel: bytes, user: bytes) -> dict[str, tuple[bytes, bytes]]:
    k_loads, u_loads = loads(kernel), loads(user)
    u0, u1 = u_loads[0], u_loads[1]
    k_text = k_loads[0]
    return {
        "empty": (b"", user),
        "truncated": (kernel[:100], user),
        "not an ELF": (b"\x7fELG" + kernel[4:], user),
        "32-bit": (kernel[:4] + b"\x01" + kernel[5:], user),
        "wrong machine": (kernel[:0x12] + struct.pack("<H", 0xB7) + kernel[0x14:], user),
        "shared object": (kernel, user[:0x10] + struct.pack("<H", 3) + user[0x12:]),
        "segment past EOF": (kernel, set_phdr(user, u0.index, filesz=len(user) + PAGE)),
        "filesz > memsz": (
            kernel,
            set_phdr(user, u0.index, memsz=u0.filesz - 1 or 0, filesz=u0.filesz or 1),
        ),
        "misaligned vaddr": (
            kernel,
            set_phdr(user, u1.index, vaddr=u1.vaddr + 8, paddr=u1.paddr + 8),
        ),
        "small p_align": (kernel, set_phdr(user, u1.index, align=16)),
        "paddr != vaddr": (kernel, set_phdr(user, u1.index, paddr=u1.paddr + PAGE)),
        "overlapping segments": (kernel, set_phdr(user, u1.index, vaddr=u0.vaddr, paddr=u0.vaddr)),
        "writable and executable": (kernel, set_phdr(user, u0.index, flags=7)),
        "entry not executable": (kernel, _set_entry(user, u1.vaddr)),
        "no layout note": (user, user),
        "runtime below user base": (kernel, kernel),
        "runtime too large for RAM": (kernel, set_phdr(user, u_loads[-1].index, memsz=0x10000000)),
        "microkernel outside its window": (
            _set_entry(set_phdr(kernel, k_text.index, vaddr=0x300000, paddr=0x300000), 0x300000),
            user,
        ),
        "ABI version mismatch": (_patch_note(kernel, 0, 99), user),
        "note size mismatch": (_patch_note(kernel, 4, 8), user),
        "interp": (kernel, set_phdr(user, u1.index, type=3)),
    }


def _set_entry(elf: bytes, entry: int) -> bytes:
    return elf[:0x18] + struct.pack("<Q", entry) + elf[0x20:]


def _patch_note(kernel: bytes, desc_offset: int, value: int) -> bytes:
    at = kernel.index(b"Keepstack\0") + 12 + desc_offset
    return kernel[:at] + struct.pack("<I", value) + kernel[at + 4 :]


def test_struct_elf_reader_reads_what_pyelftools_reads(images: Images) -> None:
    """load_elf reads headers with ``struct`` (the build does not import pyelftools): every field
    it uses equals pyelftools' reading, for both images and for malformed variants."""
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    from toolchain.measure.keep import _elf_headers

    kernel, user = images.ukernel.read_bytes(), images.user.read_bytes()
    variants = [kernel, user, *(k for k, _ in _malformed(kernel, user).values())]
    variants += [u for _, u in _malformed(kernel, user).values()]
    compared = 0
    for data in variants:
        try:
            elf = ELFFile(io.BytesIO(data))
            theirs = [elf.get_segment(i).header for i in range(elf.num_segments())]
        except (ELFError, struct.error, ValueError):
            with pytest.raises(InputError):
                _elf_headers(data, "x")
            continue
        elfclass, little_endian, header, ours = _elf_headers(data, "x")
        assert (elfclass, little_endian) == (elf.elfclass, elf.little_endian)
        if elfclass != 64 or not little_endian:
            continue
        for key in ("e_type", "e_machine", "e_entry"):
            assert header[key] == elf.header[key], key
        assert len(ours) == len(theirs)
        named = ("PT_LOAD", "PT_DYNAMIC", "PT_INTERP", "PT_NOTE")  # the types load_elf uses
        for mine, their in zip(ours, theirs, strict=True):
            if mine["p_type"] not in named:  # another type, kept as its number
                assert their["p_type"] not in named, their["p_type"]
                mine = {**mine, "p_type": their["p_type"]}  # noqa: PLW2901
            assert mine == {key: their[key] for key in mine}
        compared += 1
    assert compared >= 10


def test_malformed_elf_is_input_error_naming_the_problem(images: Images) -> None:
    kernel, user = images.ukernel.read_bytes(), images.user.read_bytes()
    assert len(loads(user)) >= 3, "the test image should have text, rodata and data segments"
    for name, (k, u) in _malformed(kernel, user).items():
        with pytest.raises(InputError) as caught:
            build_plan(k, u)
        assert caught.value.message, name


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_corrupted_headers_never_escape_as_other_exceptions(
    images: Images, data: st.DataObject
) -> None:
    kernel, user = images.ukernel.read_bytes(), bytearray(images.user.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        offset = data.draw(st.integers(0, 0x40 + 56 * 4 - 1))  # ELF header and program headers
        user[offset] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InputError):
        build_plan(kernel, bytes(user))


def test_a_changed_microkernel_source_changes_the_digest(
    images: Images, plan: LaunchPlan, tmp_path: Path
) -> None:
    """One byte in a trusted source (the attestation-failure status in keep_abi.h) → another
    digest."""
    from toolchain.image.ukernel import SOURCE_DIR, build_ukernel

    sources = tmp_path / "ukernel"
    shutil.copytree(SOURCE_DIR, sources)
    header = sources / "include" / "keep_abi.h"
    text = header.read_text(encoding="utf-8")
    assert "#define KEEP_EXIT_ATTEST_FAILED 125" in text
    header.write_text(text.replace("ATTEST_FAILED 125", "ATTEST_FAILED 126"), encoding="utf-8")
    cache = tmp_path / "cache"
    old = os.environ.get("KEEPSTACK_CACHE_DIR")
    os.environ["KEEPSTACK_CACHE_DIR"] = str(cache)
    try:
        changed = build_ukernel(tmp_path / "out", source_dir=sources)
    finally:
        if old is not None:
            os.environ["KEEPSTACK_CACHE_DIR"] = old
    assert changed.read_bytes() != images.ukernel.read_bytes()
    assert build_plan(changed, images.user).launch_digest(1) != plan.launch_digest(1)
