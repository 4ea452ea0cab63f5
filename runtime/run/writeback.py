"""Write a tree's canonical encoding back into a host directory, safely (``--dir ...:rw``).

The encoding comes from the keep (or the nil backend) at the application's exit: it is what the
application left behind, so it is untrusted input to a writer running with the user's rights.
What this module promises:

* ``write_back(host, encoding)`` makes ``host`` hold exactly the tree the encoding describes
  (``toolchain.measure.trees`` documents the encoding): entries missing from it are removed, new
  ones created, changed files replaced; a file whose contents and mode are unchanged is not
  touched.
* Nothing is written unless the whole encoding is acceptable: it is checked first (the one
  decoder's structural checks, ``toolchain.measure.trees.decode_tree``: the root first, names
  in ascending order, no absolute path, no empty, ``.`` or ``..`` name, no entry before its
  directory) and then for what only a writer needs: no mode above 0o777, a size within
  ``limit``, and no symbolic link whose target is absolute or leaves the tree (``..`` above
  its root). Refusals are ``EvidenceError``
  naming the path and why.
* The writer never follows a symbolic link: every directory is opened relative to its parent's
  descriptor with ``O_DIRECTORY | O_NOFOLLOW``; files are created with ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` under a temporary name and renamed over the old one, so a host file hard-linked
  from outside ``host`` keeps its old contents; a host symbolic link where the tree has a
  directory is removed, not entered.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from toolchain.errors import EvidenceError, InputError
from toolchain.measure.abi import TREE_MAGIC, TREES_MAX_BYTES
from toolchain.measure.trees import (
    FILETYPE_DIRECTORY,
    FILETYPE_REGULAR_FILE,
    FILETYPE_SYMBOLIC_LINK,
    Tree,
    accept_result_blob,
    decode_tree,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP = ".keep-writeback.tmp"


class _Entry:
    """One record: its type, mode, data and (for a directory) its children by name."""

    def __init__(self, kind: int, mode: int, data: bytes) -> None:
        self.kind, self.mode, self.data = kind, mode, data
        self.children: dict[str, _Entry] = {}


def check_encoding(encoding: bytes, *, limit: int = TREES_MAX_BYTES) -> _Entry:
    """The tree an encoding describes, or ``EvidenceError`` naming why a writer refuses it."""

    def fail(why: str) -> EvidenceError:
        return EvidenceError(f"the tree to write back is refused ({why})")

    if len(encoding) > limit:
        raise fail(f"{len(encoding)} bytes, over the limit of {limit}")
    if not encoding.startswith(TREE_MAGIC):
        raise fail("not a canonical tree encoding")
    records = decode_tree(encoding, what="the tree to write back")  # the keep's checks
    root = _Entry(records[0].kind, records[0].mode, b"")
    for record in records:
        try:
            name = record.path.decode("utf-8")
            target = record.data.decode("utf-8") if record.kind == FILETYPE_SYMBOLIC_LINK else ""
        except UnicodeDecodeError:
            raise fail(f"{record.path!r}: a name or link target is not UTF-8") from None
        if record.mode > 0o777:
            raise fail(f"{name!r}: mode {record.mode:#o} is more than permission bits")
        if not record.path:
            continue
        parts = name.split("/")
        if record.kind == FILETYPE_SYMBOLIC_LINK and _leaves_tree(parts, target):
            raise fail(f"{name!r}: link target {target!r} leaves the tree")
        directory = root
        for part in parts[:-1]:
            directory = directory.children[part]
        directory.children[parts[-1]] = _Entry(record.kind, record.mode, record.data)
    return root


def _leaves_tree(parts: list[str], target: str) -> bool:
    """Whether a link's target is absolute or goes ``..`` above the tree's root."""
    if not target or target.startswith("/") or "\0" in target:
        return True
    depth = len(parts) - 1  # the link's directory, counted from the root
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def write_back(host: Path, encoding: bytes, *, limit: int = TREES_MAX_BYTES) -> None:
    """Make ``host`` hold the tree ``encoding`` describes (checked in full before any write)."""
    root = check_encoding(encoding, limit=limit)
    try:
        fd = os.open(host, _DIR_FLAGS)
    except OSError as exc:
        raise InputError(f"--dir {host}: cannot open it to write back: {exc.strerror}") from exc
    try:
        _sync(fd, root)
    except OSError as exc:
        raise InputError(f"--dir {host}: writing back failed: {exc}") from exc
    finally:
        os.close(fd)


def _sync(fd: int, directory: _Entry) -> None:
    """Make the directory open as ``fd`` hold ``directory``'s children, then its mode."""
    for name in os.listdir(fd):
        if name not in directory.children:
            _remove(fd, name)
    temp = _TEMP
    while temp in directory.children:  # the temporary name must be no entry of the tree
        temp += "~"
    for name, entry in directory.children.items():
        _place(fd, name, entry, temp)
    os.fchmod(fd, directory.mode)


def _place(fd: int, name: str, entry: _Entry, temp: str) -> None:
    try:
        found: os.stat_result | None = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        found = None
    if entry.kind == FILETYPE_DIRECTORY:
        if found is not None and not stat.S_ISDIR(found.st_mode):
            _remove(fd, name)
            found = None
        if found is None:
            os.mkdir(name, 0o700, dir_fd=fd)
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            _sync(child, entry)
        finally:
            os.close(child)
    elif entry.kind == FILETYPE_REGULAR_FILE:
        if found is not None and _same_file(fd, name, found, entry):
            return
        _write_file(fd, name, entry, temp)
    elif entry.kind == FILETYPE_SYMBOLIC_LINK:
        if (
            found is not None
            and stat.S_ISLNK(found.st_mode)
            and os.fsencode(os.readlink(name, dir_fd=fd)) == entry.data
        ):
            return
        if found is not None:
            _remove(fd, name)
        os.symlink(entry.data.decode(), name, dir_fd=fd)


def _same_file(fd: int, name: str, found: os.stat_result, entry: _Entry) -> bool:
    if not stat.S_ISREG(found.st_mode) or stat.S_IMODE(found.st_mode) != entry.mode:
        return False
    if found.st_size != len(entry.data):
        return False
    handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        with os.fdopen(handle, "rb") as stream:
            return stream.read(len(entry.data) + 1) == entry.data
    except OSError:
        return False


def _write_file(fd: int, name: str, entry: _Entry, temp: str) -> None:
    """A new inode under a temporary name, renamed over ``name``: never writes through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(FileNotFoundError):  # left by an interrupted write-back
        os.unlink(temp, dir_fd=fd)
    handle = os.open(temp, flags, 0o600, dir_fd=fd)
    with os.fdopen(handle, "wb") as stream:
        stream.write(entry.data)
        os.fchmod(stream.fileno(), entry.mode)
    found = _lstat(fd, name)
    if found is not None and stat.S_ISDIR(found.st_mode):
        _remove(fd, name)
    os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)


def _lstat(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return None


def _remove(fd: int, name: str) -> None:
    """Remove ``name`` from ``fd``: a directory with all it holds, links never followed."""
    found = _lstat(fd, name)
    if found is None:
        return
    if not stat.S_ISDIR(found.st_mode):
        os.unlink(name, dir_fd=fd)
        return
    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    try:
        os.fchmod(child, 0o700)  # a read-only directory's entries could not go
        for inner in os.listdir(child):  # noqa: PTH208 - a descriptor: no path is followed
            _remove(child, inner)
    finally:
        os.close(child)
    os.rmdir(name, dir_fd=fd)


def changes(before: bytes, after: bytes) -> dict[str, list[str]]:
    """What differs between two encodings of a tree: paths created, changed and removed."""
    old = {r.path: r for r in decode_tree(before)}
    new = {r.path: r for r in decode_tree(after, what="the tree to write back")}
    return {
        "created": _shown(new.keys() - old.keys()),
        "changed": _shown(p for p in new.keys() & old.keys() if new[p] != old[p]),
        "removed": _shown(old.keys() - new.keys()),
    }


def _shown(paths: Iterable[bytes]) -> list[str]:
    return sorted(path.decode("utf-8", "replace") or "." for path in paths)


def apply_result(trees: Sequence[Tree], result: bytes, say: Callable[[str], None]) -> None:
    """Write the keep's result into the ``:rw`` trees' host directories (all checked first)."""
    handed = accept_result_blob(result, [tree.spec.rw for tree in trees])
    for encoding in handed.values():
        check_encoding(encoding)  # every tree, before the first write
    for index, encoding in handed.items():
        host = trees[index].spec.host
        found = changes(trees[index].encoding, encoding)
        count = sum(len(paths) for paths in found.values())
        if not count:
            say(f"keep: --dir {host}:rw: the application changed nothing; nothing written")
            continue
        files = "file" if count == 1 else "files"
        say(f"⚠ writing back {count} {files} to {host}: the host sees them")
        write_back(host, encoding)
        for what, paths in found.items():
            if paths:
                say(f"keep: {what} in {host}: {', '.join(paths)}")
