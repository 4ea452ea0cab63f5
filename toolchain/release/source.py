"""The trusted source of a release and its digest, ``treeSha256``: defined here, once.

A release statement signs the source it was built from (predicate field ``source``:
``{"commit": ..., "treeSha256": ...}``, written by ``make_release``). ``keep reproduce``
recomputes ``treeSha256`` over the tree it is about to rebuild, with the running code, and
compares it with the signed one *before* anything from that tree runs. The commit only says
where to find the tree; the digest decides (so nothing rests on git's SHA-1).

Which files count (``TRUSTED_SOURCES``): every file under ``keep/``, ``runtime/``,
``examples/`` and ``toolchain/``, and ``requirements/runtime.txt`` — exactly the paths
``nox -s release`` refuses
to have uncommitted — except the built-in trust root (``toolchain/sign/release-trust/``,
``EXCLUDED``): it says who may sign releases, not what is built, and it may change (a newly
pinned TUF root) after the release it belongs to was signed. Python's bytecode caches
(``__pycache__/`` directories and ``*.pyc``, ``*.pyo`` files) are left out: running the code
writes them, git ignores them and no build reads them. A trusted path that is absent contributes
nothing. A symbolic link, or any other file that is not a regular file or directory, under a
trusted path is refused (``InputError``): the digest covers file contents only, and a link could
point anywhere.

Encoding (``treeSha256``, version 1). Each file contributes one line::

    MODE SP SHA256 SP PATH LF

* ``MODE``: ``100755`` when the owner may execute the file, else ``100644`` (git's two file
  modes; the other permission bits follow the umask and are not part of the source);
* ``SHA256``: the file's SHA-256, 64 lowercase hex digits;
* ``PATH``: its path relative to the tree root, components joined by ``/``, in UTF-8 (a path
  that is not valid UTF-8 or that holds a line feed is refused).

Lines are sorted by the UTF-8 bytes of ``PATH``; ``treeSha256`` is the SHA-256 of their
concatenation, as 64 lowercase hex digits. A tree with no trusted file is refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError
from toolchain.sign.trust import BUILTIN_SOURCE_DIR

#: What a release builds from: what it refuses to have uncommitted, and what treeSha256 covers.
TRUSTED_SOURCES = ("keep", "runtime", "examples", "toolchain", "requirements/runtime.txt")
#: Under a trusted path but not a build input: the built-in trust policy (who may sign).
EXCLUDED = (BUILTIN_SOURCE_DIR.as_posix(),)
#: Python's bytecode caches: written by running the code, never part of the source.
_CACHE_DIR = "__pycache__"
_CACHE_SUFFIXES = (".pyc", ".pyo")
_EXECUTABLE = "100755"
_REGULAR = "100644"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One trusted source file: its ``/``-separated path, git-style mode and SHA-256."""

    path: str
    mode: str
    sha256: str

    def __post_init__(self) -> None:
        if not self.path or "\n" in self.path or self.path.startswith("/"):
            raise InputError(f"source path {self.path!r} cannot be encoded in treeSha256")
        if self.mode not in (_EXECUTABLE, _REGULAR):
            raise InputError(f"source file {self.path}: mode {self.mode!r} is not a file mode")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise InputError(f"source file {self.path}: sha256 must be 64 lowercase hex digits")

    def line(self) -> bytes:
        return f"{self.mode} {self.sha256} {self.path}\n".encode()


def _relative(root: Path, path: Path) -> str:
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"source path {relative!r} under {root} is not valid UTF-8: it has no treeSha256"
        ) from None
    if "\n" in relative:
        raise InputError(f"source path {relative!r} under {root} holds a line feed")
    return relative


def _file(root: Path, path: Path) -> SourceFile:
    relative = _relative(root, path)
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise InputError(
                f"trusted source {relative} under {root} is {kind}",
                hint="the source digest covers regular files only",
            )
        hasher = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                hasher.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read trusted source {relative} under {root}: {exc}") from exc
    mode = _EXECUTABLE if info.st_mode & stat.S_IXUSR else _REGULAR
    return SourceFile(relative, mode, hasher.hexdigest())


def _walk(root: Path, top: Path) -> list[SourceFile]:
    found: list[SourceFile] = []

    def refuse(error: OSError) -> None:
        raise InputError(f"cannot list trusted source {error.filename}: {error.strerror}")

    for directory, subdirectories, names in os.walk(top, onerror=refuse):
        here = Path(directory)
        for name in subdirectories:
            if (here / name).is_symlink():  # os.walk would list it and never descend
                _file(root, here / name)  # raises: a symbolic link
        subdirectories[:] = [
            d
            for d in subdirectories
            if d != _CACHE_DIR and (here / d).relative_to(root).as_posix() not in EXCLUDED
        ]
        found.extend(_file(root, here / n) for n in names if not n.endswith(_CACHE_SUFFIXES))
    return found


def source_files(root: Path) -> tuple[SourceFile, ...]:
    """Every trusted source file of the tree at ``root``, sorted as ``treeSha256`` hashes them."""
    root = Path(root)
    found: list[SourceFile] = []
    for top in TRUSTED_SOURCES:
        path = root / top
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            found.append(_file(root, path))
        elif path.is_dir():
            found.extend(_walk(root, path))
    if not found:
        raise InputError(
            f"{root} holds none of the trusted sources ({', '.join(TRUSTED_SOURCES)})",
            hint="a Keepstack source tree has runtime/, examples/ and toolchain/",
        )
    return tuple(sorted(found, key=lambda f: f.path.encode()))


def encode(files: tuple[SourceFile, ...]) -> bytes:
    """The bytes ``treeSha256`` hashes (lines sorted by path)."""
    return b"".join(f.line() for f in sorted(files, key=lambda f: f.path.encode()))


def digest(files: tuple[SourceFile, ...]) -> str:
    """``treeSha256`` of a listing: the SHA-256 of ``encode(files)``, lowercase hex."""
    return hashlib.sha256(encode(files)).hexdigest()


def tree_sha256(root: Path) -> str:
    """``treeSha256`` of the tree at ``root``: see this module's docstring for the encoding."""
    return digest(source_files(root))


def differences(first: tuple[SourceFile, ...], second: tuple[SourceFile, ...]) -> list[str]:
    """The paths whose presence, mode or content differs between two listings, sorted."""
    ours = {f.path: f for f in first}
    theirs = {f.path: f for f in second}
    return sorted(p for p in ours.keys() | theirs.keys() if ours.get(p) != theirs.get(p))
