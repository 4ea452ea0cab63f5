"""The microkernel's #VC handler (runtime/guest/ukernel/vc.c, vector 29; ABI.md changelog h).

On SEV-SNP ring 3's doorbell store raises #VC; the handler decodes it and forwards the write
through the GHCB. This machine's KVM raises no #VC, so the handler is tested here as ring-0
objects in a host harness (tests/c/vc_harness.c): hostile #VCs (another exit code, from ring 0,
another instruction, another GPA) stop the keep naming the field, the expected and the found
value; and every doorbell store of a built runtime is one the decoder accepts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ring0_harness import ask, build_harness

from toolchain.image.app import build_app_image
from toolchain.image.cache import BuildCache
from toolchain.measure.abi import ATTEST_FAILED_EXIT_STATUS, DOORBELL_GPA, STOP_REASONS

ROOT = Path(__file__).resolve().parents[1]
EXIT_CODE, RING, INSTRUCTION, GPA = (
    STOP_REASONS[name][0] for name in ("VC_EXIT_CODE", "VC_RING", "VC_INSTRUCTION", "VC_GPA")
)
NPF, USER_CS, KERNEL_CS = 0x400, 0x1B, 0x08
#: x86 register numbers (ModRM.rm, with REX.B for 8-15) by objdump's names.
_NAMES = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15"
REGISTERS = {name: number for number, name in enumerate(_NAMES.split())}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_harness("vc_harness.c", ["vc.c"], tmp_path_factory.mktemp("vc"))


def _hex(value: int, size: int = 8) -> str:
    return value.to_bytes(size, "big").hex()


def decode(harness: Path, insn: str, reg: int = 0, value: int = DOORBELL_GPA) -> str:
    return ask(harness, [f"D {insn.replace(' ', '')} {reg:02x} {_hex(value)}"])[0]


def handle(
    harness: Path,
    insn: str,
    *,
    reg: int = 0,
    value: int = DOORBELL_GPA,
    code: int = NPF,
    cs: int = USER_CS,
    at: int = 0x100,
) -> list[int]:
    fields = (_hex(value), _hex(code), _hex(cs), _hex(at, 2))
    line = f"H {insn.replace(' ', '')} {reg:02x} " + " ".join(fields)
    verdict, *words = ask(harness, [line])[0].split(" ")
    return [{"FWD": 0, "STOP": 1}[verdict], *(int(word, 16) for word in words)]


def _ok(gpa: int, value: int, size: int, length: int) -> str:
    return "OK " + " ".join(_hex(x) for x in (gpa, value, size, length))


@pytest.mark.parametrize(
    ("insn", "reg", "value", "size", "length"),
    [
        ("c7 00 01 00 00 00", 0, 1, 4, 6),  # movl $1, (%rax): keep_hc.c's store
        ("c7 01 01 00 00 00", 1, 1, 4, 6),  # movl $1, (%rcx): the same, inlined elsewhere
        ("c7 07 02 00 00 00", 7, 2, 4, 6),  # (%rdi); the value is the VMM's to judge
        ("41 c7 00 01 00 00 00", 8, 1, 4, 7),  # (%r8): REX.B
        ("49 c7 07 01 00 00 00", 15, 1, 8, 7),  # movq $1, (%r15): REX.W and REX.B
        ("48 c7 03 ff ff ff ff", 3, (1 << 64) - 1, 8, 7),  # movq sign-extends imm32
    ],
)
def test_the_doorbell_store_is_decoded(
    harness: Path, insn: str, reg: int, value: int, size: int, length: int
) -> None:
    assert decode(harness, insn, reg) == _ok(DOORBELL_GPA, value, size, length)


@pytest.mark.parametrize(
    "insn",
    [
        "89 08",  # mov %ecx, (%rax): a register store
        "48 89 08",
        "c7 40 08 01 00 00 00",  # movl $1, 8(%rax): a displacement
        "c7 80 00 01 00 00 01 00 00 00",  # disp32
        "c7 04 24 01 00 00 00",  # (%rsp): a SIB byte
        "c7 05 00 00 00 00 01 00 00 00",  # RIP-relative
        "c7 c0 01 00 00 00",  # movl $1, %eax: no memory operand
        "c7 08 01 00 00 00",  # ModRM.reg 1: not a mov
        "4c c7 00 01 00 00 00",  # REX.R
        "42 c7 00 01 00 00 00",  # REX.X
        "66 c7 00 01 00",  # a 16-bit store
        "c6 00 01",  # a byte store
        "f3 c7 00 01 00 00 00",  # a prefix
        "8b 00",  # a load
        "0f 0b",  # ud2
    ],
)
def test_any_other_instruction_is_refused(harness: Path, insn: str) -> None:
    assert decode(harness, insn) == f"ERR {_hex(INSTRUCTION)}"


def test_a_doorbell_store_is_forwarded_and_rip_advanced(harness: Path) -> None:
    assert handle(harness, "c7 01 01 00 00 00", reg=1) == [0, 1, 4, 6]
    assert handle(harness, "49 c7 07 05 00 00 00", reg=15) == [0, 5, 8, 7]


@pytest.mark.parametrize("code", [0x72, 0x7B, 0x7C, 0x81, 0x401, 0x0])  # CPUID, IOIO, MSR, …
def test_a_vc_for_another_exit_code_stops_the_keep(harness: Path, code: int) -> None:
    stop = handle(harness, "c7 00 01 00 00 00", code=code)
    assert stop == [1, ATTEST_FAILED_EXIT_STATUS, EXIT_CODE, NPF, code]


def test_a_vc_from_ring_0_stops_the_keep(harness: Path) -> None:
    stop = handle(harness, "c7 00 01 00 00 00", cs=KERNEL_CS)
    assert stop == [1, ATTEST_FAILED_EXIT_STATUS, RING, 3, KERNEL_CS]


@pytest.mark.parametrize(
    "address",
    [DOORBELL_GPA + 8, DOORBELL_GPA + 4, DOORBELL_GPA - 4, 0x200000, 0xFEE00000, 0],
)
def test_a_store_to_another_gpa_stops_the_keep(harness: Path, address: int) -> None:
    stop = handle(harness, "c7 00 01 00 00 00", value=address)
    assert stop == [1, ATTEST_FAILED_EXIT_STATUS, GPA, DOORBELL_GPA, address]


def test_another_instruction_stops_the_keep_naming_rip_and_bytes(harness: Path) -> None:
    status, exit_status, reason, rip, found = handle(harness, "89 08 90 90 90 90 90 90 90 90")
    assert (status, exit_status, reason) == (1, ATTEST_FAILED_EXIT_STATUS, INSTRUCTION)
    assert rip % 0x1000 == 0x100  # where the harness placed it
    assert found.to_bytes(8, "little") == bytes.fromhex("8908909090909090")


def test_the_bytes_named_stop_at_the_end_of_rips_page(harness: Path) -> None:
    """The next page may be unmapped: the stop reads only what lies in RIP's own page."""
    *_, rip, found = handle(harness, "89 08 90", at=0xFFD)
    assert rip % 0x1000 == 0xFFD
    assert found.to_bytes(8, "little") == bytes.fromhex("8908900000000000")


# ---- the instruction forms a built runtime uses ---------------------------------------------
_LOAD = re.compile(r"mov\s+0x[0-9a-f]+\(%rip\),%(\w+)\s+# [0-9a-f]+ <hc_doorbell>")
_LINE = re.compile(r"^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)$")


def _doorbell_stores(disassembly: str) -> list[tuple[str, str, str]]:
    """(register, bytes, text) of the first store through each register loaded from
    ``hc_doorbell``: the doorbell writes (keep_hc.c's ``*hc_doorbell = ...``, wherever inlined)."""
    stores, loaded = [], None
    for line in disassembly.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        raw, text = match.group(2).strip(), match.group(3)
        load = _LOAD.search(text)
        if load is not None:
            loaded = load.group(1)
        elif loaded is not None and text.endswith(f"(%{loaded})") and text.startswith("mov"):
            stores.append((loaded, raw, text))
            loaded = None
    return stores


def test_every_doorbell_store_of_a_built_runtime_is_one_the_decoder_accepts(
    harness: Path, tmp_path: Path
) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed (needed to find the doorbell stores)")
    image = build_app_image(
        ROOT / "examples" / "hello" / "hello.wat", tmp_path / "app", cache=BuildCache(tmp_path)
    )
    disassembly = subprocess.run(
        [objdump, "-d", str(image.elf.path)], capture_output=True, text=True, check=True
    ).stdout
    stores = _doorbell_stores(disassembly)
    assert len(stores) >= 2, "no doorbell store found: has keep_hc.c's doorbell write changed?"
    for register, raw, text in stores:
        length = len(raw.split())
        verdict = decode(harness, raw, REGISTERS[register])
        assert verdict == _ok(DOORBELL_GPA, 1, 4, length), f"{text} ({raw}): {verdict}"


# ---- the entry path (entry.S) ---------------------------------------------------------------
def _function(objdump: str, elf: Path, name: str) -> list[str]:
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    body = text.split(f"<{name}>:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split("\t", 1)[1].strip() for line in body.splitlines() if "\t" in line]


def _address(objdump: str, elf: Path, name: str) -> str:
    text = subprocess.run([objdump, "-t", str(elf)], capture_output=True, text=True, check=True)
    (line,) = [line for line in text.stdout.splitlines() if line.endswith(f" {name}")]
    return f"{int(line.split()[0], 16):x}"


def test_vector_29_enters_the_handler_with_struct_keep_vc_frame(tmp_path: Path) -> None:
    """Stub 29 (the IDT's #VC gate) jumps to keep_vc_entry, every other stub to keep_fault;
    keep_vc_entry saves gpr[i] = register i, restores them, drops vector and error code, iretq."""
    from toolchain.image.ukernel import build_ukernel

    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed (needed to read the entry path)")
    elf = build_ukernel(tmp_path, cache=BuildCache(tmp_path / "cache"))
    stubs = _function(objdump, elf, "keep_vector_stubs")
    jumps = [line for line in stubs if line.startswith("jmp")]
    assert len(jumps) == 256
    assert [n for n, line in enumerate(jumps) if "<keep_vc_entry>" in line] == [29]
    # keep_fault follows the stubs: objdump names its address keep_vector_stubs_end
    others = {line.split()[1] for n, line in enumerate(jumps) if n != 29}
    assert others == {_address(objdump, elf, "keep_fault")}
    entry = _function(objdump, elf, "keep_vc_entry")
    order = [*reversed(list(REGISTERS)[8:]), "rdi", "rsi", "rbp", None, "rbx", "rdx", "rcx", "rax"]
    pushes = [line.split()[-1] for line in entry if line.startswith("push")]
    assert pushes == [f"%{r}" if r else "$0x0" for r in order]
    pops = [line.split()[-1] for line in entry if line.startswith("pop")]
    assert pops == [f"%{r}" for r in reversed(order) if r]
    assert entry[-2:] == ["add    $0x10,%rsp", "iretq"]
    assert not any("xmm" in line for line in entry)
