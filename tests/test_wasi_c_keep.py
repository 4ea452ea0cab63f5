"""Real WASI programs (C, wasi-libc) in a real keep against wasmtime.

Every program in tests/wasi_c/ is compiled to wasm32-wasi with the pinned ``zig cc``
(``wasi_c/wasi_cc.py``), built into a keep (microkernel + wasm2c runtime), booted on /dev/kvm with
the simulated firmware, and must give the same stdout and exit status as the pinned wasmtime on
the same module; a trap must name the same trap. Some outputs are also checked against
independent references (hashlib, Python's own formatting), so an error shared by both runtimes
is caught too.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wasmtime
from test_wasi_differential import TRAP_STATUS, Outcome, run_wasmtime_module
from wasi_c.wasi_cc import compile_wasi

from toolchain.image.keep_build import build_keep
from toolchain.measure.plan import LaunchPlan

try:
    from runtime.vmm.platform import kvm_unavailable_reason

    KVM_MISSING = kvm_unavailable_reason()
except ImportError as exc:  # the VMM is not in this tree
    KVM_MISSING = f"runtime.vmm is unavailable ({exc})"

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.xdist_group("wasi_c_keep"),  # one worker builds every program once
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs a working /dev/kvm: {KVM_MISSING}"),
]

SOURCES = Path(__file__).resolve().parent / "wasi_c"
STDIN_TEXT = "first line ünïcödé\n".encode() + bytes(range(256)) * 300 + b"\nlast line, no newline"


@dataclass(frozen=True)
class Case:
    program: str  # tests/wasi_c/<program>.c
    argv: tuple[str, ...] = ("app",)
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    trap: str | None = None  # the trap it must end with (the keep's name for it)


CASES = {
    "printf": Case("printf_format"),
    "malloc-churn": Case("malloc_churn"),
    "args-environ": Case(
        "args_environ",
        argv=("args_environ.wasm", "one", "two words", "ünïcödé", "", "--flag=x"),
        env={"KEEP": "1", "EMPTY": "", "PATHISH": "/a:/b=c"},
    ),
    "args-none": Case("args_environ", argv=("only",)),
    "clock": Case("clock"),
    "random": Case("random"),
    "stdin": Case("stdin_read", stdin=STDIN_TEXT),
    "stdin-empty": Case("stdin_read"),
    "exit-0-return": Case("exit_code", argv=("x", "0", "return")),
    "exit-3-return": Case("exit_code", argv=("x", "3", "return")),
    "exit-42-exit": Case("exit_code", argv=("x", "42", "exit")),
    "exit-125-exit": Case("exit_code", argv=("x", "125", "exit")),
    "exit-1-_Exit": Case("exit_code", argv=("x", "1", "_Exit")),
    "trap-abort": Case("trap", argv=("x", "abort"), trap="unreachable"),
    "trap-oob": Case("trap", argv=("x", "oob"), trap="out of bounds memory access"),
    "trap-divzero": Case("trap", argv=("x", "divzero"), trap="integer divide by zero"),
    "sha256": Case("sha256"),
    "fp-math": Case("fp_math"),
    "stdio-poll": Case("stdio_poll", stdin=b"ready\n"),
}
PROGRAMS = sorted({case.program for case in CASES.values()})


@dataclass(frozen=True)
class Built:
    wasm: Path
    module: wasmtime.Module
    plan: LaunchPlan
    keep_dir: Path


ENGINE = wasmtime.Engine()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """program → its module and keep, each compiled and built once (both steps are cached)."""
    base = tmp_path_factory.mktemp("wasi_c")
    programs: dict[str, Built] = {}
    for name in PROGRAMS:
        wasm = compile_wasi(SOURCES / f"{name}.c", base / f"{name}.wasm")
        keep_dir = base / f"keep-{name}"
        programs[name] = Built(
            wasm,
            wasmtime.Module(ENGINE, wasm.read_bytes()),
            build_keep(wasm, keep_dir, vcpu_counts=(1,)).plan,
            keep_dir,
        )
    return programs


def run_wasmtime(case: Case, module: wasmtime.Module, tmp_path: Path) -> Outcome:
    return run_wasmtime_module(ENGINE, module, case, tmp_path)


def run_in_keep(case: Case, plan: LaunchPlan) -> tuple[Outcome, bytes]:
    from runtime.firmware.sim import SimFirmware
    from runtime.vmm.keep import run_keep

    stdout, stderr = io.BytesIO(), io.BytesIO()
    result = run_keep(
        plan,
        firmware=SimFirmware(),
        args=list(case.argv),
        env=case.env,
        stdin=io.BytesIO(case.stdin),
        stdout=stdout,
        stderr=stderr,
        on_report=lambda report: None,  # accept: the runner's verification is tested below
        timeout=60,
    )
    assert result.error is None, (result.error, stderr.getvalue())
    assert result.exit_status is not None
    trap = None
    prefix = b"wasm trap: "
    if stderr.getvalue().startswith(prefix):
        trap = stderr.getvalue()[len(prefix) :].decode().strip()
    return Outcome(stdout.getvalue(), result.exit_status, trap), stderr.getvalue()


@pytest.fixture(scope="module")
def outcomes(built: dict[str, Built], tmp_path_factory: pytest.TempPathFactory):
    """case → (wasmtime's outcome, the keep's outcome, the keep's stderr), each run once."""
    runs: dict[str, tuple[Outcome, Outcome, bytes]] = {}
    for name, case in CASES.items():
        program = built[case.program]
        reference = run_wasmtime(case, program.module, tmp_path_factory.mktemp(name))
        ours, stderr = run_in_keep(case, program.plan)
        runs[name] = (reference, ours, stderr)
    return runs


@pytest.mark.parametrize("name", sorted(CASES))
def test_keep_matches_wasmtime(name: str, outcomes: dict[str, tuple[Outcome, Outcome, bytes]]):
    case = CASES[name]
    reference, ours, stderr = outcomes[name]
    assert reference.trap == case.trap, "the case's expectation disagrees with wasmtime"
    assert ours.trap == case.trap, stderr
    assert ours.stdout == reference.stdout
    assert ours.status == reference.status
    if case.trap is not None:
        assert ours.status == TRAP_STATUS
        assert stderr == f"wasm trap: {case.trap}\n".encode()


def keep_stdout(outcomes: dict[str, tuple[Outcome, Outcome, bytes]], name: str) -> str:
    return outcomes[name][1].stdout.decode()


def test_sha256_against_hashlib(outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    pattern = bytes((i * 131 + (i >> 8)) & 0xFF for i in range(1 << 20))
    two = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    expected = [
        (hashlib.sha256(b"").hexdigest(), "empty"),
        (hashlib.sha256(b"abc").hexdigest(), "abc"),
        (hashlib.sha256(two).hexdigest(), "two-block"),
        (hashlib.sha256(b"a" * 1_000_000).hexdigest(), "million-a"),
        (hashlib.sha256(pattern).hexdigest(), "pattern-1MiB"),
    ]
    assert keep_stdout(outcomes, "sha256") == "".join(f"{h} {n}\n" for h, n in expected)


def test_printf_against_python(outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    lines = keep_stdout(outcomes, "printf").splitlines()
    assert lines[0] == "hello from C in a keep"
    assert lines[1] == f"[{42:d}] [{42:5d}] [{42:<5d}] [{42:05d}] [{42:+d}] [{42: d}]"
    assert lines[3] == f"[{-(2**63)}] [{2**64 - 1}] [123456789abcdef] [-1]"
    assert lines[6] == "0 | 0.000000 | 0.000e+00 | 0 | 0x0p+0 |       0.0000 | 0.00E+00    |"
    pi = lines[10].split(" | ")
    assert pi[:4] == [f"{3.141592653589793:.17g}", "3.141593", "3.142e+00", "3.14159"]
    assert pi[4] == (3.141592653589793).hex()
    assert "snprintf wrote 22: snprintf-0000.286-beef" in lines
    assert "truncated to 7 of 16: truncat" in lines
    assert lines[-3:] == ["fputs line", "puts line", "abcde"]


def test_args_and_environ(outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    assert keep_stdout(outcomes, "args-environ") == (
        "argc=6\nargv[0]=<args_environ.wasm>\nargv[1]=<one>\nargv[2]=<two words>\n"
        "argv[3]=<ünïcödé>\nargv[4]=<>\nargv[5]=<--flag=x>\n"
        "env <KEEP=1>\nenv <EMPTY=>\nenv <PATHISH=/a:/b=c>\n"
        "getenv(KEEP)=1\ngetenv(MISSING)=(null)\n"
    )


@pytest.mark.parametrize("name", ["clock", "random"])
def test_facts_hold(name: str, outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    """The clock and random programs print facts; in the keep every one of them must hold."""
    for line in keep_stdout(outcomes, name).splitlines():
        fact, _, verdict = line.rpartition(": ")
        assert verdict in {"yes", "0 times"}, line
        assert fact


def test_stdin_read_to_eof(outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    fnv = 0xCBF29CE484222325
    for byte in STDIN_TEXT:
        fnv = ((fnv ^ byte) * 0x100000001B3) % 2**64
    lines = STDIN_TEXT.count(b"\n")
    assert keep_stdout(outcomes, "stdin") == (
        f"bytes={len(STDIN_TEXT)} lines={lines} fnv1a={fnv:016x} eof=1 error=0\n"
        "first line: <first line ünïcödé>\n"
    )
    assert keep_stdout(outcomes, "stdin-empty").startswith("bytes=0 lines=0 ")


def test_exit_flushes_and_runs_atexit(outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    assert keep_stdout(outcomes, "exit-42-exit") == "leaving with 42 by exit [atexit ran]"
    assert keep_stdout(outcomes, "exit-3-return") == "leaving with 3 by return [atexit ran]"
    assert keep_stdout(outcomes, "exit-1-_Exit") == "leaving with 1 by _Exit"
    assert [outcomes[n][1].status for n in ("exit-0-return", "exit-125-exit")] == [0, 125]


def test_runner_with_development_reference(
    built: dict[str, Built], capfd: pytest.CaptureFixture[str]
) -> None:
    """The whole ``keep run --dev`` path: attestation verified, then the C program runs."""
    from runtime.run.runner import RunOptions, run_app

    program = built["sha256"]
    log = io.StringIO()
    outcome = run_app(
        RunOptions(app=program.wasm, backend="kvm", dev=True, build_dir=program.keep_dir, log=log)
    )
    assert outcome.exit_status == 0
    assert outcome.backend == "kvm"
    assert outcome.checklist is not None
    assert outcome.checklist.ok, log.getvalue()
    out = capfd.readouterr().out
    assert out.splitlines()[1].startswith(hashlib.sha256(b"abc").hexdigest())


def test_keep_run_forwards_stdin_on_kvm(built: dict[str, Built]) -> None:
    """``keep run`` (kvm backend) hands its own stdin to the application."""
    program = built["stdin_read"]
    argv = [sys.executable, "-m", "keep", "run", "--dev", "--backend", "kvm"]
    done = subprocess.run(
        [*argv, "--build-dir", str(program.keep_dir), str(program.wasm)],
        input=b"hello\nworld\n",
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"bytes=12 lines=2" in done.stdout
    assert b"first line: <hello>" in done.stdout


@pytest.mark.parametrize(("status", "expected"), [(42, 42), (256, 255), (300, 255)])
def test_exit_status_beyond_255_never_becomes_success(
    built: dict[str, Built], status: int, expected: int, capfd: pytest.CaptureFixture[str]
) -> None:
    from runtime.run.runner import RunOptions, run_app

    program = built["exit_code"]
    log = io.StringIO()
    outcome = run_app(
        RunOptions(
            app=program.wasm,
            args=[str(status), "exit"],
            backend="kvm",
            dev=True,
            build_dir=program.keep_dir,
            log=log,
        )
    )
    capfd.readouterr()
    assert outcome.exit_status == expected
    if status > 255:
        assert f"exit status {status} does not fit" in log.getvalue()


def test_sleep_poll_and_stdio_calls(outcomes: dict[str, tuple[Outcome, Outcome, bytes]]) -> None:
    """Facts independent of wasmtime: sleeps wait, stdio is ready, errnos are the spec's."""
    lines = keep_stdout(outcomes, "stdio-poll").splitlines()
    for fact in (
        "slept at least 20 ms: 1",
        "realtime reached the deadline: 1",
        "waited at least 15 ms: 1",
        "poll(stdout, stderr, stdin): 3 errno 0",
        "sched_yield: 0 errno 0",
        "lseek(stdout): -1 errno 70",  # ESPIPE
        "shutdown(stdout): -1 errno 57",  # ENOTSOCK
        "shutdown(9): -1 errno 8",  # EBADF
        "read(closed stdin): -1 errno 8",
    ):
        assert fact in lines
