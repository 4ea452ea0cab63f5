"""Which source tree a release is rebuilt from, and how a tree other than the running code builds.

``keep reproduce`` rebuilds a signed release from one source tree (``release_tree``):

1. ``--source DIR``: that directory;
2. ``--source-commit SHA``: that commit, exported (``git archive``) from the git clone holding
   the envelope into a fresh temporary directory;
3. else the commit the statement signs (predicate ``source.commit``), exported the same way;
4. else, for a release of the running code's own version, that code's source tree: the tree
   beside the package (an editable install), else the current directory when it is a Keepstack
   source tree of that version;
5. else nothing: a release signed without its source (0.1.0, 0.2.0) of another version is
   rebuilt only from a commit or directory the user names. The unsigned note
   ``reference-measurements/<V>/source-commit`` (written by release 0.2.0) is quoted in the
   hint and never used.

Whatever the tree, it never decides the verdict. When the statement signs its source, the
running code compares the tree's ``treeSha256`` with the signed one before anything from the
tree runs (``toolchain.release.reproduce``). The tree then only *builds*: by the running code
when the release is the running code's version, else by the tree's own ``python -m keep build``
(``python -m toolchain build`` before 0.3.0) in a subprocess (``build_in_tree``; the build code
of an older release is the code that made it) writing into a directory that the running code
hashes and compares with the signed statement. Its exit status and output never yield ✔. The
pinned toolchain is the installed one, so ``requirements/runtime.txt`` of the tree is compared
with this tree's and a difference is reported.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError, PlatformError

#: The unsigned note beside release 0.2.0's envelopes (one commit, hex): only ever quoted.
SOURCE_COMMIT_FILE = "source-commit"
REQUIREMENTS = "requirements/runtime.txt"
#: A commit name git cannot mistake for an option: hex, or a ref (``v0.1.0``, ``main~2``).
_COMMIT_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._/~^-]{0,254}")
_FETCH_HINT = (
    "an older release's commit comes from the repository's history: clone it in full "
    "(git clone URL, not --depth 1) or run `git fetch --unshallow`; or check out the "
    "release's commit yourself and run `keep reproduce --source DIR` with that tree"
)


@dataclass(frozen=True)
class SourceTree:
    """The tree a release is rebuilt from, and how it was chosen (said in the output)."""

    root: Path
    how: str
    own_code: bool  # built by the tree's own code in a subprocess, else by the running code

    def __post_init__(self) -> None:
        if not self.how:
            raise InputError("a source tree must say where it came from")


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(repository), *args], capture_output=True, check=False
        )
    except OSError as exc:
        raise PlatformError(
            f"cannot run git ({exc.strerror}): it is needed to export a release's commit",
            hint=_FETCH_HINT,
        ) from exc


def _toplevel(directory: Path) -> Path | None:
    done = _git(directory, "rev-parse", "--show-toplevel")
    return Path(done.stdout.decode().strip()) if done.returncode == 0 else None


def _is_shallow(repository: Path) -> bool:
    done = _git(repository, "rev-parse", "--is-shallow-repository")
    return done.stdout.decode().strip() == "true"


def clone_of(directory: Path, why: str) -> Path:
    """The git work tree holding ``directory``; an ``InputError`` (exit 2) saying ``why`` one
    is needed and how to get one otherwise."""
    directory = Path(directory).resolve()
    repository = _toplevel(directory) if directory.is_dir() else None
    if repository is None:
        raise InputError(f"{why}, and {directory} is not inside a git clone", hint=_FETCH_HINT)
    return repository


def resolve_commit(repository: Path, name: str, what: str) -> str:
    """The full id of commit ``name`` in ``repository``; an ``InputError`` when it is absent."""
    if not _COMMIT_NAME.fullmatch(name):
        raise InputError(f"{what} {name!r} is not a commit name (hex digits or a ref)")
    done = _git(repository, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if done.returncode != 0:
        shallow = " (this clone is shallow)" if _is_shallow(repository) else ""
        raise InputError(
            f"{what} {name} is not a commit in this clone of {repository}{shallow}",
            hint=_FETCH_HINT,
        )
    return done.stdout.decode().strip()


def export_tree(repository: Path, commit: str, destination: Path) -> Path:
    """``git archive`` of ``commit``, extracted into ``destination``; nothing of it runs."""
    done = _git(repository, "archive", "--format=tar", commit)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise PlatformError(f"git archive {commit} failed: {message}")
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:") as archive:
        archive.extractall(destination, filter="data")
    return destination


def unsigned_note(release_dir: Path) -> str:
    """The hint for a release signed without its source: what to name, and what the unsigned
    note beside the envelopes (if any) suggests."""
    note = Path(release_dir) / SOURCE_COMMIT_FILE
    try:
        suggested = note.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        suggested = ""
    advice = "name the commit you trust with --source-commit SHA, or a checkout with --source DIR"
    if _COMMIT_NAME.fullmatch(suggested):
        advice += (
            f"; the UNSIGNED note {note} suggests {suggested[:12]}: check that commit yourself "
            "(its build code runs) before naming it"
        )
    return advice


def _guest_sources(directory: Path) -> Path | None:
    """The microkernel sources of a tree: ``runtime/guest/ukernel`` since 0.3.0,
    ``runtime/ukernel`` in 0.1.0 and 0.2.0."""
    for candidate in ("runtime/guest/ukernel", "runtime/ukernel"):
        if (directory / candidate).is_dir():
            return directory / candidate
    return None


def _build_command(tree: Path) -> list[str]:
    """How to run a tree's own ``keep``: ``python -m keep`` since 0.3.0 (the CLI has its own
    package), ``python -m toolchain`` in 0.1.0 and 0.2.0."""
    package = "keep" if (tree / "keep" / "__main__.py").is_file() else "toolchain"
    return [sys.executable, "-m", package]


def _source_tree_version(directory: Path) -> str | None:
    """The version of the Keepstack source tree at ``directory``, None when it is not one."""
    try:
        project = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))
        name, version = project["project"]["name"], project["project"]["version"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return None
    if name != "keepstack" or _guest_sources(directory) is None:
        return None
    return str(version) if (directory / "examples").is_dir() else None


def running_tree(running_root: Path, running_version: str) -> SourceTree:
    """The running code's own source tree: beside the package, else the current directory
    when it is a Keepstack source tree of the same version."""
    if (running_root / "examples").is_dir() and _guest_sources(running_root) is not None:
        return SourceTree(running_root, f"this tree {running_root} (the running code's)", False)
    here = Path.cwd()
    found = _source_tree_version(here)
    if found == running_version:
        return SourceTree(here, f"the current directory {here} (version {found})", False)
    why = "is not a Keepstack source tree" if found is None else f"holds version {found}"
    raise InputError(
        f"no source tree to rebuild from: the installed package ({running_root}) has no "
        f"examples/ and runtime/, and the current directory {here} {why}",
        hint=f"run keep reproduce in a checkout of release {running_version}, or pass "
        "--source DIR (a checkout) or --source-commit SHA (in a clone)",
    )


def release_tree(
    *,
    release: str,
    signed_commit: str | None,
    envelope: Path,
    running_root: Path,
    running_version: str,
    source: Path | None,
    source_commit: str | None,
    scratch: Path,
) -> SourceTree:
    """The tree to rebuild release ``release`` (of ``envelope``) from; see the module docstring
    for the order. An exported commit goes to ``scratch/<commit>`` (reused when present)."""
    own_code = release != running_version
    if source is not None and source_commit is not None:
        raise InputError("give --source DIR or --source-commit SHA, not both")
    if source is not None:
        return SourceTree(Path(source).resolve(), f"--source {source}", own_code)
    if source_commit is not None:
        name, how = source_commit, "named by --source-commit"
    elif signed_commit is not None:
        name, how = signed_commit, "signed in the statement"
    elif not own_code:
        return running_tree(running_root, running_version)
    else:
        raise InputError(
            f"release {release} was signed without its source, and it is not this code's "
            f"version {running_version}: nothing says which commit it was built from",
            hint=unsigned_note(envelope.parent),
        )
    repository = clone_of(envelope.parent, f"the sources of release {release} are commit {name}")
    commit = resolve_commit(repository, name, f"the source commit of release {release}")
    destination = scratch / commit
    if not destination.is_dir():
        export_tree(repository, commit, destination)
    return SourceTree(
        destination, f"commit {commit[:12]} ({how}), exported to {destination}", own_code
    )


def requirements_note(tree: Path, current_root: Path) -> str:
    """Whether the tree's pinned runtime requirements are this environment's."""
    try:
        theirs = (tree / REQUIREMENTS).read_bytes()
    except OSError:
        return f"the tree has no {REQUIREMENTS}"
    try:
        ours = (current_root / REQUIREMENTS).read_bytes()
    except OSError:
        return f"this installation has no {REQUIREMENTS} to compare with"
    if theirs == ours:
        return f"{REQUIREMENTS} identical to this tree's: the installed pinned toolchain is theirs"
    return (
        f"{REQUIREMENTS} DIFFERS from this tree's: the rebuild uses the installed toolchain, "
        "not the release's pins (install them to reproduce it exactly)"
    )


def build_in_tree(
    tree: Path, app: Path, out_dir: Path, vcpu_counts: Sequence[int], cache_dir: Path
) -> subprocess.CompletedProcess[str]:
    """Run the tree's own ``keep build APP --out OUT_DIR`` (``python -m keep build``, or
    ``python -m toolchain build`` in trees before 0.3.0, with
    ``PYTHONPATH=tree``, this interpreter, a fresh build cache, no bytecode written into the
    tree). Only the files in ``out_dir`` count, and only once the running code has hashed them."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["KEEPSTACK_CACHE_DIR"] = str(cache_dir)
    argv = [*_build_command(tree), "build", str(app), "--out", str(out_dir)]
    for count in vcpu_counts:
        argv += ["--vcpus", str(count)]
    try:
        return subprocess.run(
            argv,
            cwd=tree,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise PlatformError(f"cannot run {sys.executable}: {exc.strerror}") from exc
