"""Reproduce an older release with its own source tree, taken from the clone's git history.

A release is rebuilt from the sources it was made from. When the envelope names a release other
than the version of the source tree at hand, ``keep reproduce`` finds that release's commit in
the git history of the clone holding the envelope, exports the commit's tree (``git archive``)
into a fresh temporary directory and runs *that tree's own* ``keep reproduce`` on it, in a
subprocess with the same interpreter and environment (the pinned toolchain is the installed
one, so ``requirements/runtime.txt`` of the commit is compared with this tree's and a
difference is reported).

Which commit: the one named in ``reference-measurements/<V>/source-commit`` (written by
``make_release``: the commit whose trusted sources were built), else the commit that added
``reference-measurements/<V>/`` (releases made before that file existed; ``make_release``
refuses uncommitted trusted sources, so that commit's tree is what was built). The locator is
not signed and needs not be: the rebuilt digests are compared with the signed ones.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError, PlatformError

#: Beside a release's envelopes: the commit the release was built from (one line, hex).
SOURCE_COMMIT_FILE = "source-commit"
REQUIREMENTS = "requirements/runtime.txt"
_FETCH_HINT = (
    "reproducing an older release needs the repository's history: clone it in full "
    "(git clone URL, not --depth 1) or run `git fetch --unshallow`; or check out the "
    "release's commit yourself and run `keep reproduce --source DIR` with that tree"
)


@dataclass(frozen=True)
class ReleaseSource:
    """Where the sources of an older release come from."""

    version: str
    repository: Path  # the git work tree searched
    commit: str
    how: str  # how the commit was found, for the output


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(repository), *args], capture_output=True, check=False
        )
    except OSError as exc:
        raise PlatformError(
            f"cannot run git ({exc.strerror}): it is needed to reproduce an older release",
            hint=_FETCH_HINT,
        ) from exc


def _toplevel(directory: Path) -> Path | None:
    done = _git(directory, "rev-parse", "--show-toplevel")
    return Path(done.stdout.decode().strip()) if done.returncode == 0 else None


def _is_shallow(repository: Path) -> bool:
    done = _git(repository, "rev-parse", "--is-shallow-repository")
    return done.stdout.decode().strip() == "true"


def find_release_commit(release_dir: Path, version: str) -> ReleaseSource:
    """The commit release ``version`` (published at ``release_dir``) was built from.

    An ``InputError`` (exit 2) says how to get the history when the clone lacks it."""
    release_dir = Path(release_dir).resolve()
    repository = _toplevel(release_dir) if release_dir.is_dir() else None
    if repository is None:
        raise InputError(
            f"release {version} was built from another source tree than this one, and "
            f"{release_dir} is not inside a git clone whose history could provide it",
            hint=_FETCH_HINT,
        )
    shallow = " (this clone is shallow)" if _is_shallow(repository) else ""
    locator = release_dir / SOURCE_COMMIT_FILE
    if locator.is_file():
        commit = locator.read_text(encoding="utf-8").strip()
        how = f"named by {locator.relative_to(repository).as_posix()}"
    elif shallow:
        # The oldest commit of a shallow clone seems to add every file: never believe it.
        raise InputError(
            f"release {version} was built from older sources than this tree, and this clone "
            f"of {repository} is shallow: the commit that added its references is not in it",
            hint=_FETCH_HINT,
        )
    else:
        relative = release_dir.relative_to(repository).as_posix()
        done = _git(repository, "log", "--diff-filter=A", "--format=%H", "--", f"{relative}/")
        added = done.stdout.decode().split()
        if done.returncode != 0 or not added:
            raise InputError(
                f"no commit in the history of {repository} added {relative}/{shallow}: "
                f"cannot find the sources of release {version}",
                hint=_FETCH_HINT,
            )
        commit = added[-1]  # the oldest: the release commit itself
        how = f"the commit that added {relative}/"
    if _git(repository, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise InputError(
            f"the sources of release {version} are commit {commit} ({how}), which is not in "
            f"this clone{shallow}",
            hint=_FETCH_HINT,
        )
    return ReleaseSource(version, repository, commit, how)


def export_tree(source: ReleaseSource, destination: Path) -> Path:
    """``git archive`` of the release's commit, extracted into ``destination``."""
    done = _git(source.repository, "archive", "--format=tar", source.commit)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise PlatformError(f"git archive {source.commit} failed: {message}")
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:") as archive:
        archive.extractall(destination, filter="data")
    return destination


def requirements_note(tree: Path, current_root: Path) -> str:
    """Whether the release's pinned runtime requirements are this environment's."""
    try:
        theirs = (tree / REQUIREMENTS).read_bytes()
    except OSError:
        return f"the release's tree has no {REQUIREMENTS}"
    try:
        ours = (current_root / REQUIREMENTS).read_bytes()
    except OSError:
        return f"this tree has no {REQUIREMENTS} to compare with"
    if theirs == ours:
        return f"{REQUIREMENTS} identical to this tree's: the installed pinned toolchain is theirs"
    return (
        f"{REQUIREMENTS} DIFFERS from this tree's: the rebuild uses the installed toolchain, "
        "not the release's pins (install them to reproduce it exactly)"
    )


def reproduce_in_tree(
    tree: Path, envelope: Path, trust: Path, *, json_output: bool
) -> subprocess.CompletedProcess[str]:
    """Run the exported tree's own ``keep reproduce ENVELOPE --source TREE`` with this
    interpreter; its stdout holds its ✔/✗ lines (or its JSON)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
    argv = [
        sys.executable,
        "-m",
        "toolchain",
        "reproduce",
        str(Path(envelope).resolve()),
        "--trust",
        str(Path(trust).resolve()),
        "--source",
        str(tree),
    ]
    if json_output:
        argv.append("--json")
    try:
        return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PlatformError(f"cannot run {sys.executable}: {exc.strerror}") from exc
