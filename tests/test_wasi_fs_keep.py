"""The preview-1 file system on a preopened directory: wasmtime (the oracle), nil and kvm.

``tests/wasi_c/fs_ops.c`` calls every file and path function of preview 1 on a directory this
test builds (files, a subdirectory, links inside, out of it, absolute and in a loop) and prints
each answer; it must print the same lines and exit with the same status on wasmtime (the same
directory preopened with wasmtime's own WASI), on the nil backend and in a keep on /dev/kvm
(``keep run --dev --dir HOST::GUEST``). Some answers are also checked against the spec, so an
error shared by all three is caught too: traversal is refused, loops are ELOOP. The keep works on
its own copy: the host's directory is unchanged after the keep's run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from test_wasi_c_keep import KVM_MISSING
from wasi_c.wasi_cc import compile_wasi

from keep.cli import main

SOURCES = Path(__file__).resolve().parent / "wasi_c"
GUEST = "/data"

pytestmark = pytest.mark.xdist_group("wasi_fs_keep")


def make_tree(base: Path) -> Path:
    """The preopened directory, and a file beside it that no path may reach."""
    (base / "outside").write_text("secret\n")
    tree = base / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "hello.txt").write_text("hello world\n")
    (tree / "sub" / "inner.txt").write_text("inner\n")
    for name, target in {
        "link_ok": "hello.txt",
        "link_dir": "sub",
        "link_abs": "/etc/passwd",
        "link_out": "../outside",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "self": "self",
    }.items():
        (tree / name).symlink_to(target)
    return tree


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_wasi(SOURCES / "fs_ops.c", tmp_path_factory.mktemp("fs") / "fs_ops.wasm")


def run_wasmtime(
    wasm: Path, tree: Path, out: Path, dirs: tuple[tuple[Path, str], ...] = ()
) -> tuple[bytes, int]:
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    config = wasmtime.WasiConfig()
    config.argv = ["fs_ops"]
    for host, guest in dirs or ((tree, GUEST),):
        config.preopen_dir(str(host), guest)
    config.stdout_file = str(out)
    store.set_wasi(config)
    start = linker.instantiate(store, wasmtime.Module.from_file(engine, str(wasm)))
    func = start.exports(store)["_start"]
    assert isinstance(func, wasmtime.Func)
    status = 0
    try:
        func(store)
    except wasmtime.ExitTrap as exc:
        status = exc.code
    return out.read_bytes(), status


def run_keep(backend: str, wasm: Path, tree: Path, build: Path, capfd: pytest.CaptureFixture[str]):
    argv = ["run", "--dev", "--backend", backend, "--build-dir", str(build)]
    status = main([*argv, "--dir", f"{tree}::{GUEST}", str(wasm)])
    out, err = capfd.readouterr()
    return out.encode(), status, err


def snapshot(tree: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(tree.rglob("*")):
        rel = str(path.relative_to(tree))
        if path.is_symlink():
            found[rel] = str(path.readlink())
        else:
            found[rel] = path.read_bytes() if path.is_file() else "dir"
    return found


@pytest.fixture(scope="module")
def oracle(program: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    base = tmp_path_factory.mktemp("wasmtime")
    return run_wasmtime(program, make_tree(base), base / "stdout")


@pytest.mark.parametrize("backend", ["nil", "kvm"])
def test_fs_ops_match_wasmtime(
    backend: str,
    program: Path,
    oracle: tuple[bytes, int],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    tree = make_tree(tmp_path)
    before = snapshot(tree)
    out, status, err = run_keep(backend, program, tree, tmp_path / "build", capfd)
    expected, expected_status = oracle
    assert out.decode().splitlines() == expected.decode().splitlines(), err
    assert status == expected_status
    assert snapshot(tree) == before, "the keep changed the host's directory"
    assert "NOT YET VISIBLE" not in err
    assert "its changes are discarded at exit" in err


def test_oracle_answers_as_the_spec_says(oracle: tuple[bytes, int]) -> None:
    """Facts that hold whatever host runs the program (shared mistakes are caught here)."""
    lines = set(oracle[0].decode().splitlines())
    for refused in (
        "../outside",
        "sub/../../outside",
        "/etc/passwd",
        "link_abs (follow)",
        "link_out (follow)",
        "link_out/x",
        "..",
    ):
        assert f"{refused}: errno 76" in lines or f"{refused}: errno 63" in lines, refused
    assert "loop_a (follow): errno 32" in lines
    assert "self (follow): errno 32" in lines
    assert f"prestat 3: errno 0 tag 0 name <{GUEST}>" in lines
    assert "link_ok (follow): errno 0, 12 bytes:hello world\\x0a" in lines
    assert oracle[1] == 0


def make_second(base: Path) -> Path:
    second = base / "second"
    second.mkdir()
    (second / "other.txt").write_text("in the second tree\n")
    return second


@pytest.fixture(scope="module")
def libc_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_wasi(SOURCES / "fs_libc.c", tmp_path_factory.mktemp("fs") / "fs_libc.wasm")


@pytest.mark.parametrize("backend", ["nil", "kvm"])
def test_libc_program_on_root_and_a_second_tree(
    backend: str, libc_program: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The issue's form (``--dir HOST::/``) with a second tree, through wasi-libc's paths."""
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    oracle_base = tmp_path / "wasmtime"
    oracle_base.mkdir()
    dirs = ((make_tree(oracle_base), "/"), (make_second(oracle_base), "/second"))
    expected, expected_status = run_wasmtime(libc_program, dirs[0][0], tmp_path / "out", dirs)
    assert b"open /../etc/passwd: -1 errno" in expected
    tree, second = make_tree(tmp_path), make_second(tmp_path)
    argv = ["run", "--dev", "--backend", backend, "--build-dir", str(tmp_path / "build")]
    argv += ["--dir", f"{tree}::/", "--dir", f"{second}::/second", str(libc_program)]
    status = main(argv)
    out, err = capfd.readouterr()
    assert out.splitlines() == expected.decode().splitlines(), err
    assert status == expected_status == 0


@pytest.mark.parametrize("backend", ["nil", "kvm"])
def test_bad_pointers_are_efault_and_change_nothing(
    backend: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Where wasmtime traps, the keep answers EFAULT (21), the same on both backends."""
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    wasm = compile_wasi(SOURCES / "fs_efault.c", tmp_path / "fs_efault.wasm")
    out, status, err = run_keep(backend, wasm, make_tree(tmp_path), tmp_path / "build", capfd)
    lines = out.decode().splitlines()
    assert status == 0, err
    assert lines[1] == "made.txt exists: errno 44", "a failed path_open created its file"
    assert len(lines) == 16
    assert all(line.endswith(": errno 21") for line in lines[:1] + lines[2:]), lines
