"""toolchain.image.app: application → ring-3 image; input errors; image layout; the libc shim."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from toolchain.errors import InputError
from toolchain.image import app as app_build
from toolchain.image.cache import BuildCache
from toolchain.image.compile import RING3, compile_c, link
from toolchain.image.wasm_info import read_module_info

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"


def _wat(tmp_path: Path, text: str, name: str = "app.wat") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def hello_image(tmp_path_factory: pytest.TempPathFactory) -> app_build.AppImage:
    return app_build.build_app_image(HELLO, tmp_path_factory.mktemp("hello"))


def test_image_digests_match_files(hello_image: app_build.AppImage) -> None:
    import hashlib

    for artifact in hello_image.artifacts():
        data = artifact.path.read_bytes()
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        assert artifact.sha384 == hashlib.sha384(data).hexdigest()
    assert hello_image.wasm.path.read_bytes().startswith(b"\0asm")
    assert b"w2c_app_0x5Fstart" in hello_image.c_source.path.read_bytes()


def test_image_is_a_static_ring3_elf_at_the_user_base(hello_image: app_build.AppImage) -> None:
    with hello_image.elf.path.open("rb") as stream:
        elf = ELFFile(stream)
        assert elf["e_type"] == "ET_EXEC"
        assert elf["e_machine"] == "EM_X86_64"
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        kinds = {s["p_type"] for s in elf.iter_segments()}
        sections = {s.name for s in elf.iter_sections()}
        symbols = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()}
        entry = elf["e_entry"]
    assert kinds == {"PT_LOAD"}  # no interpreter, no dynamic section, no TLS
    assert all(s["p_vaddr"] >= app_build.USER_IMAGE_BASE for s in loads)
    assert all(s["p_vaddr"] % 4096 == 0 for s in loads), "segments must not share pages"
    flags = [s["p_flags"] for s in loads]
    assert flags == [5, 4, 6]  # R+X text, R rodata, R+W data/bss: nothing writable and executable
    text = loads[0]
    assert text["p_vaddr"] <= entry < text["p_vaddr"] + text["p_memsz"]
    assert ".comment" not in sections
    assert not any(n.startswith((".note", ".eh_frame", ".tdata", ".tbss")) for n in sections)
    assert {"keep_hc_call", "keep_runtime_main", "keep_wasm_trap"} <= symbols
    assert "sys6" not in symbols  # the hostcheck shim never enters a keep image


def test_rebuild_is_identical(hello_image: app_build.AppImage, tmp_path: Path) -> None:
    again = app_build.build_app_image(HELLO, tmp_path, cache=BuildCache(enabled=False))
    assert again.elf.sha256 == hello_image.elf.sha256
    assert again.c_source.sha256 == hello_image.c_source.sha256


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('(module (func (export "_start") (i32.add)))', r"invalid WebAssembly module: .*type"),
        ('(module (func $x (export "_start")', r"invalid WebAssembly text"),
        (
            '(module (import "env" "f" (func)) (func (export "_start")))',
            r"import env\.f: the keep provides only wasi_snapshot_preview1",
        ),
        (
            (
                '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32)))'
                ' (memory (export "memory") 1) (func (export "_start")))'
            ),
            r"fd_write has type \(i32\) -> \(\), WASI defines",
        ),
        (
            (
                '(module (import "wasi_snapshot_preview1" "no_such_call" (func))'
                ' (func (export "_start")))'
            ),
            r"not a wasi_snapshot_preview1 function",
        ),
        ('(module (func (export "main")))', r"exports no _start function"),
        ('(module (func (export "_start") (param i32)))', r"_start has type \(i32\) -> \(\)"),
        (
            (
                '(module (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))'
                ' (func (export "_start")))'
            ),
            r"exports no memory named 'memory'",
        ),
        (
            '(module (memory (export "memory") 1) (memory 1) (func (export "_start")))',
            r"declares 2 memories; a keep gives a module one linear memory",
        ),
    ],
)
def test_unusable_modules_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        app_build.build_app_image(_wat(tmp_path, text), tmp_path / "out")
    assert "\n" not in caught.value.message


def test_binary_garbage_and_missing_files_are_input_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.wasm"
    garbage.write_bytes(b"\0asm\x01\0\0\0\x01\xff")
    with pytest.raises(InputError, match="invalid WebAssembly module"):
        app_build.build_app_image(garbage, tmp_path / "out")
    with pytest.raises(InputError, match="cannot read"):
        app_build.build_app_image(tmp_path / "missing.wasm", tmp_path / "out")
    binary = tmp_path / "bin.wat"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="neither a WebAssembly binary nor UTF-8"):
        app_build.build_app_image(binary, tmp_path / "out")


def test_python_wasi_table_matches_the_c_header() -> None:
    header = (ROOT / "runtime" / "guest" / "wasm" / "keep_wasi.h").read_text()
    declared: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for ret, name, args in re.findall(r"^WASI_FN\((\w+), (\w+), ([^;]*)\);$", header, re.MULTILINE):
        params = tuple({"I32": "i32", "I64": "i64"}[a.strip()] for a in args.split(","))
        declared[name] = (params, () if ret == "void" else ("i32",))
    for _ret, name in re.findall(r"^WASI_FN0\((\w+), (\w+)\);$", header, re.MULTILINE):
        declared[name] = ((), ("i32",))
    table = {n: (t.params, t.results) for n, t in app_build.WASI_SIGNATURES.items()}
    assert declared == table
    assert len(table) == 46


def test_an_app_importing_all_of_wasi_compiles(tmp_path: Path) -> None:
    """The C compiler checks every wasm2c import prototype against keep_wasi.h."""
    imports = (
        "".join(
            f'(import "wasi_snapshot_preview1" "{name}" (func (param {" ".join(t.params)})'
            f" (result {' '.join(t.results)})))\n"
            for name, t in sorted(app_build.WASI_SIGNATURES.items())
        )
        .replace("(param )", "")
        .replace(" (result )", "")
    )
    wat = f'(module {imports} (memory (export "memory") 1) (func (export "_start")))'
    image = app_build.build_app_image(_wat(tmp_path, wat), tmp_path / "out")
    info = read_module_info(image.wasm.path.read_bytes())
    assert len(info.imports) == 46


def _hostcheck_harness(tmp_path: Path, name: str) -> Path:
    """tests/c/NAME.c linked with the runtime objects as a Linux (hostcheck) executable."""
    runtime = app_build._compile_runtime(tmp_path / "obj", BuildCache())
    harness = compile_c(
        ROOT / "tests" / "c" / f"{name}.c",
        tmp_path / "obj" / f"{name}.o",
        flags=app_build.WASM2C_FLAGS,
        include_dirs=app_build._include_dirs(),
        target=RING3,
    )
    names = (*app_build.WASM2C_RUNTIME_SOURCES, *app_build.RUNTIME_SOURCES)
    return link(
        [harness, *(runtime[n] for n in names), runtime[app_build.HOSTCHECK_PLATFORM]],
        tmp_path / f"{name}.elf",
        linker_script=app_build.LINKER_SCRIPT,
    )


def test_allocator_stress(tmp_path: Path) -> None:
    exe = _hostcheck_harness(tmp_path, "alloc_stress")
    done = subprocess.run([exe], capture_output=True, timeout=120, check=False)
    assert (done.returncode, done.stdout) == (0, b"ok\n"), done.stderr


def test_hostcheck_sigsegv_outside_the_stack_guard_is_not_a_trap(tmp_path: Path) -> None:
    """Only a fault in the guard page below hostcheck's stack is "call stack exhausted" (the
    trap-stack differential cases show that side); any other SIGSEGV stays a SIGSEGV."""
    exe = _hostcheck_harness(tmp_path, "segv_outside_guard")
    done = subprocess.run([exe], capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGSEGV, (done.returncode, done.stderr)
    assert done.stderr == b""


def test_hostcheck_linear_memory_grows_in_place_and_traps_past_its_end(tmp_path: Path) -> None:
    """keep_linear.c (the same object in the keep): one reservation, mprotect only right after
    the end, never over what malloc handed out or past the heap, zeroed; then the fault one byte
    past the end is "out of bounds memory access" (hostcheck's SIGSEGV handler)."""
    exe = _hostcheck_harness(tmp_path, "linear_grow")
    done = subprocess.run([exe], capture_output=True, timeout=60, check=False)
    assert done.stdout == b"0rr00r0rr0\n", done.stderr
    assert (done.returncode, done.stderr) == (134, b"wasm trap: out of bounds memory access\n")


def test_big_modules_are_split_into_several_c_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app_build.c_file_count(1) == 1
    assert app_build.c_file_count(app_build.WASM_BYTES_PER_C_FILE + 1) == 2
    assert app_build.c_file_count(1 << 30) == app_build.MAX_C_FILES
    monkeypatch.setattr(app_build, "WASM_BYTES_PER_C_FILE", 64)  # fib.wasm: a few hundred bytes
    image = app_build.build_app_image(
        ROOT / "examples" / "cpu" / "fib.wat", tmp_path, hostcheck=True
    )
    count = app_build.c_file_count(image.wasm.path.stat().st_size)
    assert count > 1
    assert [a.path.name for a in image.c_sources] == [f"app_{i}.c" for i in range(count)]
    assert len(image.objects) == count
    done = subprocess.run(
        [tmp_path / "hostcheck.elf"], capture_output=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, b"fib(32) = 2178309\n")
    monkeypatch.undo()  # the same module again, unsplit, into the same directory
    again = app_build.build_app_image(ROOT / "examples" / "cpu" / "fib.wat", tmp_path)
    assert [a.path.name for a in again.c_sources] == ["app.c"]
    assert sorted(p.name for p in tmp_path.glob("app*.[ch]")) == ["app.c", "app.h"]
    assert sorted(p.name for p in (tmp_path / "obj").glob("app*.o")) == ["app.o"]


def test_module_info_reads_imports_exports_and_rejects_garbage() -> None:
    import wasmtime

    wasm = bytes(
        wasmtime.wat2wasm(
            '(module (import "wasi_snapshot_preview1" "fd_close" (func (param i32) (result i32)))'
            ' (import "m" "t" (table 1 funcref)) (import "m" "g" (global i64))'
            ' (memory (export "memory") 1 2) (func $s (export "_start"))'
            ' (func (export "add") (param i64 f64) (result f32) (f32.const 1)))'
        )
    )
    info = read_module_info(wasm)
    assert [(i.module, i.name, i.kind) for i in info.imports] == [
        ("wasi_snapshot_preview1", "fd_close", "func"),
        ("m", "t", "table"),
        ("m", "g", "global"),
    ]
    add = info.export("add")
    assert add is not None
    assert str(add.type) == "(i64, f64) -> (f32)"
    assert info.export("memory") is not None
    for bad in (b"", b"\0asm\x02\0\0\0", wasm[:20], b"\0asm\x01\0\0\0\x07\x05\x01\x01x\0\x09"):
        with pytest.raises(InputError):
            read_module_info(bad)


def test_image_has_no_sse41_rounding_or_ssse3_encodings(tmp_path: Path) -> None:
    """Ring 3 may use SSE2 only (baseline x86-64). ROUNDSD/ROUNDSS and every SSSE3/SSE4 opcode
    are encoded 66 0F 3A xx or 66 0F 38 xx: those byte sequences must not occur in the text of
    an image whose program uses floor/ceil/trunc/nearest/sqrt on f32 and f64."""
    image = app_build.build_app_image(ROOT / "tests" / "wat" / "math.wat", tmp_path)
    with image.elf.path.open("rb") as stream:
        text = ELFFile(stream).get_section_by_name(".text").data()
    assert b"\x66\x0f\x3a" not in text
    assert b"\x66\x0f\x38" not in text
    assert b"\xf2\x0f\x51" in text  # SQRTSD (SSE2) is there: the scan sees real code
