"""The nil backend's file system model (``runtime.run.nil_fs``, ``keep_fs.c``'s twin) alone.

The encoding it builds from was attested, not its shape: a malformed one is refused with the
keep's reason. Path resolution never leaves its directory and bounds link chains; inode numbers
are the same for the same trees (tests/test_wasi_fs_keep.py compares whole programs).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from runtime.run.nil_fs import (
    ELOOP,
    ENOENT,
    ENOTDIR,
    EPERM,
    MAX_LINKS,
    FsError,
    Tree,
    walk,
)
from toolchain.errors import EvidenceError
from toolchain.measure.trees import TREE_MAGIC, DirSpec, encode_tree


def record(kind: int, path: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<BHI", kind, 0o644, len(path)) + path + struct.pack("<Q", len(data)) + data


ROOT = record(3, b"")


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        (TREE_MAGIC, "no root"),
        (TREE_MAGIC + record(4, b"", b"x"), "it does not start with its root"),
        (TREE_MAGIC + ROOT + record(4, b"a/b"), "an entry before its directory"),
        (TREE_MAGIC + ROOT + record(4, b"f") + record(4, b"f/x"), "an entry before its directory"),
        (TREE_MAGIC + ROOT + record(4, b"a") + record(4, b"a"), "a name"),
        (TREE_MAGIC + ROOT + record(4, b".."), "a name"),
        (TREE_MAGIC + ROOT + record(2, b"dev"), "an entry's type"),
        (TREE_MAGIC + ROOT + record(3, b"d", b"data"), "an entry's type"),
        (TREE_MAGIC + ROOT + record(4, b"f", b"abc")[:-1], "a record runs past its end"),
    ],
)
def test_a_malformed_tree_is_refused(encoding: bytes, reason: str) -> None:
    with pytest.raises(EvidenceError, match=rf"a preopened tree is malformed \({reason}\)"):
        Tree().build(encoding, 1)


def chain(length: int) -> bytes:
    """Links l0 -> l1 -> ... -> l{length-1} -> file."""
    records = [ROOT, record(4, b"file", b"end")]
    for i in range(length):
        target = b"file" if i == length - 1 else b"l%d" % (i + 1)
        records.append(record(7, b"l%d" % i, target))
    head, *rest = records
    return TREE_MAGIC + head + b"".join(sorted(rest, key=lambda r: r[7 : 7 + r[3]]))


def test_link_chains_are_bounded() -> None:
    root = Tree().build(chain(MAX_LINKS), 1)
    found = walk(root, b"l0", follow=True)
    assert found.node is not None
    assert bytes(found.node.data) == b"end"
    longer = Tree().build(chain(MAX_LINKS + 1), 1)
    with pytest.raises(FsError) as error:
        walk(longer, b"l0", follow=True)
    assert error.value.errno == ELOOP


def test_paths_never_leave_their_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("x")
    (tmp_path / "up").symlink_to("sub/../..")
    (tmp_path / "abs").symlink_to("/etc")
    root = Tree().build(encode_tree(DirSpec.parse(str(tmp_path))), 1)
    sub = root.entries[b"sub"]
    assert walk(sub, b"f", follow=False).node is sub.entries[b"f"]
    for base, path in [(root, b".."), (root, b"sub/../.."), (sub, b"../sub"), (root, b"/etc")]:
        with pytest.raises(FsError) as error:
            walk(base, path, follow=False)
        assert error.value.errno == EPERM, path
    for path in (b"up/x", b"abs/passwd"):
        with pytest.raises(FsError) as error:
            walk(root, path, follow=False)
        assert error.value.errno == EPERM, path
    for path, errno in [(b"sub/f/", ENOTDIR), (b"nope/x", ENOENT), (b"", ENOENT)]:
        with pytest.raises(FsError) as error:
            walk(root, path, follow=False)
        assert error.value.errno == errno, path


def test_inode_numbers_are_stable(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_text("2")
    encoding = encode_tree(DirSpec.parse(str(tmp_path)))

    def inodes() -> list[int]:
        root = Tree().build(encoding, 1)
        return [root.ino, root.entries[b"a"].ino, root.entries[b"d"].entries[b"b"].ino]

    assert inodes() == inodes() == [1, 2, 4]
