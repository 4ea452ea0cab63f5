"""The microkernel build: deterministic, ring-0 clean (no SSE), and declaring its layout."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from ukernel_images import Images, build_images

from toolchain.errors import InputError
from toolchain.image.cache import BuildCache
from toolchain.image.compile import RING0, RING3, build_env
from toolchain.image.tools import zig
from toolchain.image.ukernel import INCLUDE_DIR, SOURCE_DIR, UKERNEL_FLAGS, ukernel_sources
from toolchain.measure.keep import VECTOR_STUB_SIZE, load_elf, read_layout

# Every macro of keep_abi.h that the layout note must agree with (name in header → note field).
NOTE_FIELDS = {
    "KEEP_GUEST_POLICY": "guest_policy",
    "KEEP_SEV_FEATURES": "sev_features",
    "KEEP_RAM_SIZE": "ram_size",
    "KEEP_GDT_GPA": "gdt",
    "KEEP_TSS_GPA": "tss",
    "KEEP_IDT_GPA": "idt",
    "KEEP_SECRETS_GPA": "secrets_page",
    "KEEP_CPUID_GPA": "cpuid_page",
    "KEEP_USER_INFO_GPA": "user_info",
    "KEEP_PAGE_TABLES_GPA": "page_tables",
    "KEEP_PAGE_TABLES_SIZE": "page_tables_size",
    "KEEP_HC_PAGE_GPA": "hc_page",
    "KEEP_HC_BUFFER_GPA": "hc_buffer",
    "KEEP_HC_BUFFER_SIZE": "hc_buffer_size",
    "KEEP_DOORBELL_GPA": "doorbell",
    "KEEP_USER_BASE": "user_base",
    "KEEP_USER_STACK_SIZE": "user_stack_size",
}
SSE_REGISTER = re.compile(r"%(x|y|z)mm\d+|%mm\d")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("ukernel")
    return build_images(base / "out", cache_dir=base / "cache")


def header_macros() -> dict[str, int]:
    text = (INCLUDE_DIR / "keep_abi.h").read_text(encoding="utf-8")
    return {
        name: int(value, 0)
        for name, value in re.findall(r"#define (KEEP_\w+) (0x[0-9A-Fa-f]+|\d+)\b", text)
    }


def test_build_is_deterministic_across_directories(images: Images, tmp_path: Path) -> None:
    # A second build in another directory with a cold cache: the same bytes.
    again = build_images(tmp_path / "out", cache_dir=tmp_path / "cache")
    assert again.ukernel.read_bytes() == images.ukernel.read_bytes()


def test_elf_has_no_comment_eh_frame_or_build_id(images: Images) -> None:
    from elftools.elf.elffile import ELFFile

    with images.ukernel.open("rb") as stream:
        names = {s.name for s in ELFFile(stream).iter_sections()}
    assert ".note.keepstack" in names
    assert not names & {".comment", ".eh_frame", ".eh_frame_hdr", ".note.gnu.build-id"}


def test_layout_note_matches_the_header(images: Images) -> None:
    kernel = load_elf(images.ukernel, "microkernel")
    layout = read_layout(kernel)
    macros = header_macros()
    for macro, field in NOTE_FIELDS.items():
        assert getattr(layout, field) == macros[macro], field
    assert layout.abi_version == macros["KEEP_ABI_VERSION"]
    # Addresses the linker filled in: inside the microkernel's own segments.
    text = next(s for s in kernel.segments if s.flags & 1)
    assert text.vaddr <= layout.ap_entry < text.vaddr + text.memsz
    assert text.vaddr <= layout.vector_stubs
    assert layout.vector_stubs + 256 * VECTOR_STUB_SIZE <= text.vaddr + text.memsz
    data = next(s for s in kernel.segments if s.flags & 2)
    for top in (layout.boot_stack_top, layout.fault_stack_top):
        assert data.vaddr < top <= data.vaddr + data.memsz
        assert top % 16 == 0
    assert layout.boot_stack_top != layout.fault_stack_top


def test_vector_stubs_are_evenly_spaced_and_push_error_codes(images: Images) -> None:
    """Each stub pushes the vector (after a zero error code where the CPU pushes none)."""
    kernel = load_elf(images.ukernel, "microkernel")
    layout = read_layout(kernel)
    text = next(s for s in kernel.segments if s.flags & 1)
    with_error_code = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}
    for vector in range(256):
        at = layout.vector_stubs + vector * VECTOR_STUB_SIZE - text.vaddr
        code = text.data[at : at + VECTOR_STUB_SIZE]
        if vector not in with_error_code:
            assert code[:2] == b"\x6a\x00", vector  # push $0
            code = code[2:]
        if vector < 0x80:
            assert code[:2] == bytes([0x6A, vector]), vector  # push $vector (imm8)
        else:
            assert code[:5] == b"\x68" + struct.pack("<I", vector), vector  # push imm32


def _ring0_assembly(source: Path, scratch: Path) -> str:
    output = scratch / f"{source.name}.s"
    argv = [
        str(zig().path),
        "cc",
        *RING0.compiler_flags(),
        *UKERNEL_FLAGS,
        f"-I{INCLUDE_DIR}",
        f"-I{SOURCE_DIR}",
        "-S",
        "-o",
        str(output),
        str(source),
    ]
    subprocess.run(argv, env=build_env(), capture_output=True, check=True)
    return output.read_text(encoding="utf-8")


def test_ring0_code_uses_no_sse_registers(tmp_path: Path) -> None:
    """PVM's ring-0 emulator dies on SSE: neither the compiler nor our asm may use it."""
    for source in ukernel_sources():
        if source.suffix == ".S":
            text = source.read_text(encoding="utf-8")
        else:
            text = _ring0_assembly(source, tmp_path)
            assert "\t.text" in text or ".section" in text, "no assembly produced"
        found = SSE_REGISTER.findall(text)
        assert not found, f"{source.name} uses SSE/MMX registers: {found[:5]}"
    # The check itself can fail: the same C compiled for ring 3 may use SSE for a struct copy.
    probe = tmp_path / "probe.c"
    probe.write_text(
        "struct s { long a[8]; };\nvoid copy(struct s *d, const struct s *x) { *d = *x; }\n",
        encoding="utf-8",
    )
    ring3 = subprocess.run(
        [str(zig().path), "cc", *RING3.compiler_flags(), "-S", "-o", "-", str(probe)],
        env=build_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    ring3_text = ring3.stdout or (tmp_path / "-").read_text(encoding="utf-8")
    assert SSE_REGISTER.findall(ring3_text), "the SSE probe found nothing even in ring-3 code"
    assert not SSE_REGISTER.findall(_ring0_assembly(probe, tmp_path))


def test_disassembly_has_no_sse(images: Images) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed; the assembly-level check above still ran")
    out = subprocess.run(
        [objdump, "-d", str(images.ukernel)], capture_output=True, text=True, check=True
    ).stdout
    assert "iretq" in out
    assert not SSE_REGISTER.findall(out)


def test_ring0_path_to_ring3_is_short(images: Images) -> None:
    """Statically: _start → keep_main → two hypercalls → keep_enter_user is ~80 instructions.

    Besides these, the boot path runs keep_attest: the SNP guest message (AES-256-GCM over
    1.3 KB, a few hundred thousand emulated instructions, ABI.md "Ring-0 costs")."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed (needed to count instructions)")
    out = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(images.ukernel)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: dict[str, int] = {}
    current = None
    for line in out.splitlines():
        if match := re.match(r"^[0-9a-f]+ <(\w+)>:", line):
            current = match.group(1)
            counts[current] = 0
        elif current and re.match(r"^\s+[0-9a-f]+:\s+\w", line) and "int3" not in line:
            counts[current] += 1
    path = counts["keep_main"] + 2 * counts["keep_hypercall"] + counts["keep_enter_user"]
    assert path < 100, counts  # 82 today: ~55 µs of emulated ring 0 on PVM
    assert "keep_attest" in counts


def _disassembly(elf: Path, function: str) -> str:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed (needed to read the platform layer)")
    out = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", f"--disassemble={function}", str(elf)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"<{function}>:" in out
    return out


def _symbol_sizes(elf: Path) -> dict[str, int]:
    """Function and object symbol → size, from the ELF's symbol table."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with elf.open("rb") as stream:
        table = ELFFile(stream).get_section_by_name(".symtab")
        assert isinstance(table, SymbolTableSection)
        return {
            sym.name: sym["st_size"]
            for sym in table.iter_symbols()
            if sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT")
        }


def test_the_platform_layer_is_chosen_at_build_time(images: Images, tmp_path: Path) -> None:
    """Only the platform layer's functions differ: the snp build (``ukernel-snp.elf``, what
    the snp digests are laid out from) executes WRMSR (GHCB MSR), VMGEXIT (and RDMSR for the
    GHCB MSR protocol) and PVALIDATE, the simulated build (``ukernel.elf``, backends kvm and
    nil) rings the doorbell with the value 2, or writes and reads the MSR value at the
    doorbell + 8 and the PVALIDATE request and result at the doorbell + 0x10."""
    from toolchain.image.ukernel import build_ukernel
    from toolchain.measure.keep import SNP_UKERNEL_ELF

    snp = build_ukernel(tmp_path / "snp", platform="snp", cache=BuildCache(tmp_path / "cache"))
    assert snp.name == SNP_UKERNEL_ELF
    assert snp.read_bytes() != images.ukernel.read_bytes()
    # Same functions and objects, of the same sizes, but for the platform layer's functions.
    on_snp_symbols, simulated_symbols = _symbol_sizes(snp), _symbol_sizes(images.ukernel)
    assert on_snp_symbols.keys() == simulated_symbols.keys()
    differing = {n for n in simulated_symbols if on_snp_symbols[n] != simulated_symbols[n]}
    platform_layer = {
        "keep_platform_vmgexit",
        "keep_platform_ghcb_msr",
        "keep_platform_early_doorbell",
        "keep_platform_pvalidate",
        "keep_platform_cpuid_table",
    }
    assert differing <= platform_layer
    assert platform_layer - {"keep_platform_cpuid_table"} <= differing
    on_snp = _disassembly(snp, "keep_platform_vmgexit")
    assert "wrmsr" in on_snp
    assert "$0xc0010130" in on_snp
    assert "\tvmgexit" in on_snp  # f3 0f 01 d9 (rep; vmmcall)
    assert b"\xf3\x0f\x01\xd9" in snp.read_bytes()
    simulated = _disassembly(images.ukernel, "keep_platform_vmgexit")
    assert "\tvmgexit" not in simulated
    assert "wrmsr" not in simulated
    assert "$0x2,0x400000" in simulated
    assert b"\xf3\x0f\x01\xd9" not in images.ukernel.read_bytes()
    on_snp, simulated = (
        _disassembly(elf, "keep_platform_ghcb_msr") for elf in (snp, images.ukernel)
    )
    for instruction in ("wrmsr", "rdmsr", "\tvmgexit"):
        assert instruction in on_snp
        assert instruction not in simulated
    assert "mov    %rdi,0x400008" in simulated  # WRMSR+VMGEXIT: a 64-bit write at doorbell + 8
    assert "mov    0x400008,%rax" in simulated  # RDMSR: a 64-bit read there
    # Before the GHCB is registered (a stop only): the termination request, or the plain store.
    on_snp, simulated = (
        _disassembly(elf, "keep_platform_early_doorbell") for elf in (snp, images.ukernel)
    )
    assert "$0x100" in on_snp
    assert "call" in on_snp
    assert "$0x1,0x400000" in simulated
    on_snp, simulated = (
        _disassembly(elf, "keep_platform_pvalidate") for elf in (snp, images.ukernel)
    )
    assert "\tpvalidate" in on_snp  # f2 0f 01 ff, then setb for CF
    assert "\tsetb" in on_snp
    assert "\tpvalidate" not in simulated
    assert ",0x400010" in simulated  # PVALIDATE: a 64-bit write at doorbell + 0x10
    assert "0x400010,%rax" in simulated  # its result: a 64-bit read there
    assert b"\xf2\x0f\x01\xff" not in images.ukernel.read_bytes()
    with pytest.raises(InputError, match="unknown platform"):
        build_ukernel(tmp_path / "x", platform="tdx")
