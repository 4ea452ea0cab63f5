"""Automation for Keepstack. Every session installs exactly the hash-locked requirements it needs.

Run through ./noxw (which installs the pinned nox itself): ./noxw -s tests
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
REQ = ROOT / "requirements"
PYTHON = "3.11"


def _install(session: nox.Session, lock: str) -> None:
    session.install("--require-hashes", "-r", str(REQ / f"{lock}.txt"))
    # The project itself, without re-resolving dependencies (they are hash-locked above).
    session.install("--no-deps", "-e", ".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite (KVM tests run where /dev/kvm works and say why they skip elsewhere)."""
    _install(session, "tests")
    args = session.posargs or ["-n", "2", "--dist", "loadgroup"]
    session.run("pytest", *args)


@nox.session(venv_backend="none")
def installed(session: nox.Session) -> None:
    """The README's install steps in a fresh virtual environment (never reused): the hash-locked
    runtime requirements, then this package (not editable); then, from a directory outside the
    source tree, `keep --version` and `keep run --dev` of the hello example must print its line."""
    import shutil
    import sys
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="keepstack-installed-"))
    try:
        venv = scratch / "venv"
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
        pip, keep = str(venv / "bin" / "pip"), str(venv / "bin" / "keep")
        session.run(
            pip, "install", "-q", "--require-hashes", "-r", str(REQ / "runtime.txt"), external=True
        )
        session.run(pip, "install", "-q", "--no-deps", str(ROOT), external=True)
        app = scratch / "app" / "hello.wat"
        app.parent.mkdir()
        shutil.copyfile(ROOT / "examples" / "hello" / "hello.wat", app)
        session.chdir(app.parent)
        # A new user: empty state and cache directories (development key, simulated root, builds).
        fresh = {
            "KEEPSTACK_STATE_DIR": str(scratch / "state"),
            "KEEPSTACK_CACHE_DIR": str(scratch / "cache"),
        }
        session.run(keep, "--version", external=True, env=fresh)
        output = session.run(
            keep, "run", "--dev", "--quiet", "hello.wat", external=True, silent=True, env=fresh
        )
        if "hello from a keep" not in str(output):
            session.error(f"the installed keep did not run the example: {output!r}")
        session.log("installed package runs a keep outside the source tree")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (broad rule set) and mypy --strict on keep/, toolchain/ and runtime/."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation testing of the trusted core (slow, not in the default run): -- [MODULE|PACKAGE ...]
    [--jobs N] [--sample N]. Prints each module's score and the survivors (tests/MUTATION.md)."""
    _install(session, "tests")
    session.run("python", "tests/mutation/mutate.py", *session.posargs, env={"PYTHONHASHSEED": "0"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against peers in the same run; prints ratios (no timing asserts anywhere)."""
    _install(session, "tests")
    # Byte-compile the project as pip does when it installs a wheel: the editable install does
    # not, and under PYTHONDONTWRITEBYTECODE every fresh `keep` process would compile its
    # sources again (a third of `keep measure-guest`), which no installed copy ever does.
    packages = [str(ROOT / name) for name in ("keep", "toolchain", "runtime")]
    session.run("python", "-m", "compileall", "-q", *packages)
    benches = sorted((ROOT / "bench").glob("bench_*.py"))
    selected = [b for b in benches if not session.posargs or b.stem in session.posargs]
    for bench_file in selected:
        session.run("python", str(bench_file), env={"PYTHONHASHSEED": "0"})


@nox.session(python=PYTHON)
def repro(session: nox.Session) -> None:
    """Build every example twice (different dirs, TZ, LC_ALL, umask, HOME, SOURCE_DATE_EPOCH set
    vs unset, cold caches) and compare every artifact byte for byte; names what differs, where."""
    _install(session, "runtime")
    apps = session.posargs or sorted(str(p) for p in (ROOT / "examples").glob("*/*.wat"))
    session.run("python", "-m", "toolchain.image.repro", *apps)


@nox.session(python=PYTHON)
def release(session: nox.Session) -> None:
    """Publish this version's signed references: -- --key PATH (or $KEEPSTACK_RELEASE_KEY), a
    release key outside the repository. Writes reference-measurements/<version>/."""
    _install(session, "runtime")
    session.run("python", "-m", "toolchain.release", *session.posargs)


@nox.session(python=PYTHON)
def reproduce(session: nox.Session) -> None:
    """Rebuild a signed release from this tree and compare every digest: -- --version V."""
    _install(session, "runtime")
    session.run("keep", "reproduce", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job, end to end."""
    _install(session, "runtime")
    session.run("keep", "demo", *session.posargs, env={"PYTHONUNBUFFERED": "1"})


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing (atheris) of the parsers; pass -- TARGET [ARGS] to pick one."""
    _install(session, "tests")
    session.install("atheris==3.0.0")  # the package index has no 3.1.0
    targets = sorted((ROOT / "tests" / "fuzz").glob("fuzz_*.py"))
    runs = os.environ.get("KEEP_FUZZ_RUNS", "20000")
    for target in targets:
        if session.posargs and target.stem not in session.posargs:
            continue
        session.run("python", str(target), f"-runs={runs}")
