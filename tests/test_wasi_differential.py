"""Differential tests: the keep's runtime (as the Linux "hostcheck" executable) against wasmtime.

Every program in tests/wat/ and examples/ is built with ``build_app_image(..., hostcheck=True)``:
the same wasm2c output, wasm2c runtime, WASI layer and libc shim objects as the keep image, linked
with the raw-syscall platform file instead of the hypercall client. Each run must give the same
stdout and exit status as wasmtime; a trap must print the trap's name and exit non-zero (134).
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from runtime.run.nil import TRAP_EXIT_STATUS, trap_names
from toolchain.image.app import build_app_image

ROOT = Path(__file__).resolve().parent.parent
WAT_DIR = ROOT / "tests" / "wat"
TRAP_STATUS = TRAP_EXIT_STATUS
# wasmtime's trap codes → the names the keep's runtime prints (runtime/guest/wasm/glue.c).
TRAP_NAMES = trap_names()


@dataclass(frozen=True)
class Case:
    program: Path
    argv: tuple[str, ...] = ("app.wasm",)
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    trap: str | None = None  # expected trap name, when the program must trap


@dataclass(frozen=True)
class Outcome:
    stdout: bytes
    status: int
    trap: str | None


CASES = {
    "hello": Case(ROOT / "examples/hello/hello.wat"),
    "hello-args-env": Case(
        ROOT / "examples/hello/hello.wat",
        argv=("hello.wasm", "one", "two words", "ünïcödé", ""),
        env={"KEEP": "1", "EMPTY": "", "PATHISH": "/a:/b=c"},
    ),
    "fib": Case(ROOT / "examples/cpu/fib.wat"),
    "exit-code": Case(WAT_DIR / "exit_code.wat"),
    "echo-stdin": Case(WAT_DIR / "echo_stdin.wat", stdin=b"line one\nline two\n" * 50 + b"end"),
    "echo-empty-stdin": Case(WAT_DIR / "echo_stdin.wat"),
    "wasi-errnos": Case(WAT_DIR / "wasi_errnos.wat", argv=("x", "y")),
    "wasi-preview1-stdio": Case(WAT_DIR / "wasi_preview1_stdio.wat", stdin=b"some input\n"),
    "math": Case(WAT_DIR / "math.wat"),
    "memory-grow": Case(WAT_DIR / "memory_grow.wat", trap="out of bounds memory access"),
    "trap-div-zero": Case(WAT_DIR / "trap_div_zero.wat", trap="integer divide by zero"),
    "trap-int-overflow": Case(WAT_DIR / "trap_int_overflow.wat", trap="integer overflow"),
    "trap-unreachable": Case(WAT_DIR / "trap_unreachable.wat", trap="unreachable"),
    "trap-oob": Case(WAT_DIR / "trap_oob.wat", trap="out of bounds memory access"),
    "trap-oob-grown": Case(WAT_DIR / "trap_oob_grown.wat", trap="out of bounds memory access"),
    "trap-oob-chunk": Case(WAT_DIR / "trap_oob_chunk.wat", trap="out of bounds memory access"),
    "trap-oob-guard": Case(WAT_DIR / "trap_oob_guard.wat", trap="out of bounds memory access"),
    "trap-oob-empty": Case(WAT_DIR / "trap_oob_empty.wat", trap="out of bounds memory access"),
    "trap-stack": Case(WAT_DIR / "trap_stack.wat", trap="call stack exhausted"),
    "trap-stack-big-frames": Case(
        WAT_DIR / "trap_stack_big_frames.wat", trap="call stack exhausted"
    ),
    "trap-conversion": Case(WAT_DIR / "trap_conversion.wat", trap="invalid conversion to integer"),
    "trap-indirect": Case(WAT_DIR / "trap_indirect.wat", trap="indirect call"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """program → hostcheck executable, each program built once."""
    base = tmp_path_factory.mktemp("hostcheck")
    executables: dict[Path, Path] = {}
    for case in CASES.values():
        if case.program not in executables:
            out = base / case.program.stem
            build_app_image(case.program, out, hostcheck=True)
            executables[case.program] = out / "hostcheck.elf"
    return executables


def run_wasmtime(case: Case, tmp_path: Path) -> Outcome:
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wasmtime.wat2wasm(case.program.read_text()))
    return run_wasmtime_module(engine, module, case, tmp_path)


def run_wasmtime_module(
    engine: wasmtime.Engine, module: wasmtime.Module, case: Any, tmp_path: Path
) -> Outcome:
    """Run ``module`` under wasmtime with ``case``'s argv, env and stdin (shared by the tests)."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    config = wasmtime.WasiConfig()
    config.argv = list(case.argv)
    config.env = list(case.env.items())
    stdin, stdout = tmp_path / "stdin", tmp_path / "stdout"
    stdin.write_bytes(case.stdin)
    config.stdin_file = str(stdin)
    config.stdout_file = str(stdout)
    config.stderr_file = str(tmp_path / "stderr")
    store.set_wasi(config)
    start = linker.instantiate(store, module).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    status, trap = 0, None
    try:
        start(store)
    except wasmtime.ExitTrap as exc:
        status = exc.code
    except wasmtime.Trap as exc:
        status, trap = TRAP_STATUS, TRAP_NAMES.get(exc.trap_code, f"unmapped: {exc}")
    return Outcome(stdout.read_bytes(), status, trap)


def run_hostcheck(case: Case, executable: Path) -> tuple[Outcome, bytes]:
    done = subprocess.run(
        list(case.argv),
        executable=executable,
        env=case.env,
        input=case.stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    trap = None
    prefix = b"wasm trap: "
    if done.stderr.startswith(prefix):
        trap = done.stderr[len(prefix) :].decode().strip()
    return Outcome(done.stdout, done.returncode, trap), done.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostcheck_matches_wasmtime(name: str, built: dict[Path, Path], tmp_path: Path) -> None:
    case = CASES[name]
    reference = run_wasmtime(case, tmp_path)
    ours, stderr = run_hostcheck(case, built[case.program])
    assert reference.trap == case.trap, "the case's expectation disagrees with wasmtime"
    assert ours.trap == case.trap, stderr
    assert ours.stdout == reference.stdout
    assert ours.status == reference.status
    if case.trap is not None:
        assert ours.status != 0


_WASMTIME_ON_A_TERMINAL = """
import sys, wasmtime
engine = wasmtime.Engine()
linker = wasmtime.Linker(engine)
linker.define_wasi()
store = wasmtime.Store(engine)
config = wasmtime.WasiConfig()
config.inherit_stdin(); config.inherit_stdout(); config.inherit_stderr()
store.set_wasi(config)
module = wasmtime.Module(engine, wasmtime.wat2wasm(open(sys.argv[1]).read()))
linker.instantiate(store, module).exports(store)["_start"](store)
"""


def test_stdio_answers_as_wasmtime_on_a_terminal(tmp_path: Path) -> None:
    """isatty-style queries: the keep's stdio is what wasmtime reports for a terminal.

    (With files or pipes as stdio wasmtime says "unknown" file type; the keep's console is a
    stream whatever the host's stdio is, and a libc must line-buffer it.)
    """
    program = WAT_DIR / "stdio_stat.wat"
    build_app_image(program, tmp_path, hostcheck=True)
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WASMTIME_ON_A_TERMINAL, str(program)],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            timeout=60,
            check=True,
        )
        os.close(terminal)
        terminal = -1
        output = b""
        while chunk := _read_or_eof(controller):
            output += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert done.returncode == 0
    reference = output.replace(b"\r\n", b"\n")
    ours, stderr = run_hostcheck(Case(program), tmp_path / "hostcheck.elf")
    assert ours.stdout == reference, stderr
    # fdstat: a character device (02), no flags, wasmtime's rights (base and inheriting):
    # fd_read for stdin, fd_write for stdout and stderr; filestat: the file type, all else 0.
    lines = ours.stdout.decode().split("\n")
    filestat = "0" * 32 + " 02 " + "0" * 80 + " "
    assert lines[:3] == [
        "00 02 0000 02000000000000000200000000000000 " + filestat,
        "00 02 0000 40000000000000004000000000000000 " + filestat,
        "00 02 0000 40000000000000004000000000000000 " + filestat,
    ]


def _read_or_eof(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the terminal's other end is closed
        return b""


def test_expected_outputs(built: dict[Path, Path], tmp_path: Path) -> None:
    """Independent of wasmtime: the examples print what their sources say."""
    hello, _ = run_hostcheck(CASES["hello-args-env"], built[CASES["hello"].program])
    assert hello.stdout.decode() == (
        "hello from a keep\narg: hello.wasm\narg: one\narg: two words\narg: ünïcödé\narg: \n"
        "env: KEEP=1\nenv: EMPTY=\nenv: PATHISH=/a:/b=c\n"
    )
    fib, _ = run_hostcheck(CASES["fib"], built[CASES["fib"].program])
    assert fib.stdout == b"fib(32) = 2178309\n"
    errnos, _ = run_hostcheck(CASES["wasi-errnos"], built[CASES["wasi-errnos"].program])
    # EBADF x3, ok, EBADF x2, ok (random), ok x3 (clocks), ok (args), then two booleans (1, 1).
    assert errnos.stdout == b"IIIAIIAAAAABB\n"
    stdio, _ = run_hostcheck(
        CASES["wasi-preview1-stdio"], built[CASES["wasi-preview1-stdio"].program]
    )
    lines = stdio.stdout.decode().splitlines()
    # stdin, stdout, stderr: sockets calls ENOTSOCK (57); descriptors 3 and 1000: EBADF (8)
    assert [line for line in lines if line.startswith("k:")] == ["k:" + "57 " * 8] * 3 + [
        "k:" + "08 " * 8
    ] * 2
    assert "r:58 58 58 00 " in lines  # proc_raise ENOTSUP, sched_yield succeeds
    exit_code, stderr = run_hostcheck(CASES["exit-code"], built[CASES["exit-code"].program])
    assert (exit_code.status, exit_code.stdout, stderr) == (
        42,
        b"exiting with 42\n",
        b"exiting with 42\n",
    )
