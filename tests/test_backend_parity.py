"""Same program, same result on every backend: stdout, stderr and exit status of ``keep run``.

Every program in tests/wat/ (and a C program whose stdio buffering once differed) runs under
``keep run --quiet`` on the kvm backend (the reference: the keep itself) and on the nil backend
(wasmtime in-process), with the same arguments and stdin, and both must give the same bytes and
status. Facts about some results are checked too, so an error both backends share is caught:
the memory limit (a module asking for 256 MiB is refused at build the same way; growing stops at
the same page count), line-buffered stdio before a trap, statuses from 126 up, the time limit (124).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from wasi_c.wasi_cc import compile_wasi

from runtime.vmm.platform import kvm_unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
WAT_DIR = ROOT / "tests" / "wat"
KVM_MISSING = kvm_unavailable_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.xdist_group("backend_parity"),  # one worker builds each program once
    pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs /dev/kvm: {KVM_MISSING}"),
]
STDIN = b"12 34\nline two\n" + bytes(range(256))
#: The one line --quiet prints on success; it names the backend, so it differs by design.
VERDICT_PREFIX = "keep: ✔ attested:"


@dataclass(frozen=True)
class Case:
    program: str  # tests/wat/<name>.wat, or tests/wasi_c/<name>.c
    args: tuple[str, ...] = ("first", "sec ond")
    timeout: float = 30.0
    env: tuple[str, ...] = ()  # K=V


CASES = {path.stem: Case(path.name) for path in sorted(WAT_DIR.glob("*.wat"))}
# The limit counts from the VM's creation: the kvm keep's boot (private RAM, the guest message:
# about 0.25 s alone, over 1 s on this shared machine under a parallel test run) must fit in it.
CASES["spin"] = Case("spin.wat", timeout=3.0)
CASES["lines_then_trap_c"] = Case("lines_then_trap.c")
CASES["trap_c_oob"] = Case("trap.c", args=("oob",))
CASES["args_environ_c"] = Case(
    "args_environ.c", args=("one", "ünïcödé", "", "--flag=x"), env=("KEEP=1", "EMPTY=")
)
CASES["stdin_read_c"] = Case("stdin_read.c")
CASES["printf_format_c"] = Case("printf_format.c")
CASES["stdio_poll_c"] = Case("stdio_poll.c")


FACT_CASES = (
    "lines_then_trap_c",
    "memory_too_big",
    "memory_grow_limit",
    "exit_status_high",
    "spin",
    "exit_code",
)


@dataclass(frozen=True)
class Result:
    status: int
    stdout: bytes
    stderr: str


def _app(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if case.program.endswith(".c"):
        out = tmp_path_factory.mktemp("wasi") / case.program.replace(".c", ".wasm")
        return compile_wasi(ROOT / "tests" / "wasi_c" / case.program, out)
    return WAT_DIR / case.program


def _run(app: Path, build_dir: Path, backend: str, case: Case) -> Result:
    argv = [
        sys.executable,
        "-c",
        "import sys; from keep.cli import main; sys.exit(main())",
        "run",
        "--dev",
        "--quiet",
        "--backend",
        backend,
        "--build-dir",
        str(build_dir),
        "--timeout",
        str(case.timeout),
        *(f"--env={pair}" for pair in case.env),
        str(app),
        "--",
        *case.args,
    ]
    done = subprocess.run(argv, input=STDIN, capture_output=True, timeout=120, check=False)
    lines = done.stderr.decode(errors="replace").splitlines()
    # The runner's own lines name the backend, so they differ by design: --quiet's verdict line,
    # and on a failure after attestation (the time limit) the full output, up to "=> VALID".
    # (the verdict line may carry caveats: "=> VALID (revocation not checked: …)")
    verdicts = [i for i, line in enumerate(lines) if line.startswith("  => VALID")]
    if verdicts:
        lines = lines[verdicts[0] + 1 :]
    app_lines = [line for line in lines if not line.startswith(VERDICT_PREFIX)]
    return Result(done.returncode, done.stdout, "\n".join(app_lines))


Results = Callable[[str], dict[str, Result]]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """case → backend → result; each program is built once and run once on each backend."""
    done: dict[str, dict[str, Result]] = {}

    def outcome(name: str) -> dict[str, Result]:
        if name not in done:
            case = CASES[name]
            app = _app(case, tmp_path_factory)
            build_dir = tmp_path_factory.mktemp(f"keep-{name}")
            done[name] = {b: _run(app, build_dir, b, case) for b in ("kvm", "nil")}
        return done[name]

    return outcome


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_program_same_result_on_both_backends(name: str, results: Results) -> None:
    kvm, nil = results(name)["kvm"], results(name)["nil"]
    assert nil.status == kvm.status, (kvm.stderr, nil.stderr)
    assert nil.stdout == kvm.stdout
    assert nil.stderr == kvm.stderr


@pytest.mark.parametrize("backend", ["kvm", "nil"])
def test_the_facts_both_backends_share(results: Results, backend: str) -> None:
    got = {name: results(name)[backend] for name in FACT_CASES}
    assert got["lines_then_trap_c"].stdout == b"one\ntwo\nthree\n"
    assert got["lines_then_trap_c"].status == 134
    assert got["memory_too_big"].status == 2  # refused at build, before either backend runs
    assert "the application asks for 4096 pages (256 MiB)" in got["memory_too_big"].stderr
    pages = int(got["memory_grow_limit"].stdout)
    assert 3000 < pages < 4096  # most of the keep's 256 MiB, never all of it
    assert got["memory_grow_limit"].status == pages % 256
    assert got["exit_status_high"].status == 200
    assert got["spin"].status == 124
    assert "time limit of 3 s" in got["spin"].stderr
    assert got["exit_code"].status == 42
