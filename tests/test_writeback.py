"""The write-back writer (``runtime/run/writeback.py``): a tree's encoding into a host directory.

Hostile encodings are written out byte by byte from the documented format; every refusal must
leave the host directory (and anything outside it) exactly as it was.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from runtime.run.writeback import write_back
from toolchain.errors import EvidenceError
from toolchain.measure.trees import TREE_MAGIC, DirSpec, encode_tree

D, F, L = 3, 4, 7


def _record(kind: int, mode: int, path: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<BHI", kind, mode, len(path)) + path + struct.pack("<Q", len(data)) + data


def _tree(*records: bytes) -> bytes:
    return TREE_MAGIC + _record(D, 0o755, b"") + b"".join(records)


def _snapshot(root: Path) -> bytes:
    return encode_tree(DirSpec(root, "/"))


def _populate(root: Path) -> None:
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "same.txt").write_bytes(b"same\n")
    (root / "keep" / "same.txt").chmod(0o644)
    (root / "change.txt").write_bytes(b"old")
    (root / "gone.txt").write_bytes(b"bye")
    (root / "gonedir" / "deep").mkdir(parents=True)
    (root / "gonedir" / "deep" / "x").write_bytes(b"x")
    (root / "was-a-file").write_bytes(b"file")
    (root / "link").symlink_to("keep/same.txt")


def test_the_host_ends_up_holding_exactly_the_tree(tmp_path: Path) -> None:
    wanted = tmp_path / "wanted"
    _populate(wanted)
    (wanted / "change.txt").write_bytes(b"new contents")
    (wanted / "change.txt").chmod(0o600)
    (wanted / "gone.txt").unlink()
    (wanted / "gonedir" / "deep" / "x").unlink()
    (wanted / "gonedir" / "deep").rmdir()
    (wanted / "gonedir").rmdir()
    (wanted / "was-a-file").unlink()
    (wanted / "was-a-file").mkdir()
    (wanted / "was-a-file" / "inner").write_bytes(b"inner")
    (wanted / "created").mkdir(mode=0o750)
    (wanted / "created" / "new.bin").write_bytes(bytes(range(256)))
    (wanted / "link").unlink()
    (wanted / "link").symlink_to("created/new.bin")
    host = tmp_path / "host"
    _populate(host)
    same = host / "keep" / "same.txt"
    inode = same.stat().st_ino

    write_back(host, _snapshot(wanted))

    assert _snapshot(host) == _snapshot(wanted)
    assert same.stat().st_ino == inode  # an unchanged file is not rewritten
    assert not list(host.rglob(".keep-writeback.tmp*"))


def test_a_tree_entry_named_like_the_temporary_file_survives(tmp_path: Path) -> None:
    wanted = tmp_path / "wanted"
    wanted.mkdir()
    (wanted / ".keep-writeback.tmp").write_bytes(b"mine")
    (wanted / "z").write_bytes(b"zed")
    host = tmp_path / "host"
    host.mkdir()
    write_back(host, _snapshot(wanted))
    assert _snapshot(host) == _snapshot(wanted)


HOSTILE = [
    (_tree(_record(F, 0o644, b"..", b"x")), r"a name"),
    (_tree(_record(D, 0o755, b"a"), _record(F, 0o644, b"a/..", b"x")), r"a name"),
    (_tree(_record(F, 0o644, b"/etc/x", b"x")), r"an absolute path"),
    (_tree(_record(F, 0o644, b"a/b", b"x")), r"an entry before its directory"),
    (_tree(_record(F, 0o644, b"b"), _record(F, 0o644, b"a")), r"a name"),
    (_tree(_record(L, 0o777, b"out", b"/etc/passwd")), r"'out': link target '/etc/passwd'"),
    (_tree(_record(L, 0o777, b"up", b"../outside")), r"'up': link target '../outside'"),
    (
        _tree(_record(D, 0o755, b"a"), _record(L, 0o777, b"a/up", b"x/../../../outside")),
        r"'a/up': link target 'x/../../../outside' leaves the tree",
    ),
    (_tree(_record(F, 0o4755, b"suid", b"x")), r"'suid': mode 0o4755"),
    (_tree(_record(F, 0o644, b"\xff", b"x")), r"not UTF-8"),
    (b"KEEPTREE2\0" + _record(D, 0o755, b""), r"not a canonical tree encoding"),
]


@pytest.mark.parametrize(("encoding", "reason"), HOSTILE)
def test_a_hostile_encoding_is_refused_and_nothing_changes(
    tmp_path: Path, encoding: bytes, reason: str
) -> None:
    host = tmp_path / "host"
    _populate(host)
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    before = _snapshot(host)
    with pytest.raises(EvidenceError, match=reason):
        write_back(host, encoding)
    assert _snapshot(host) == before
    assert outside.read_bytes() == b"untouched"


def test_an_inward_link_is_kept(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    encoding = _tree(
        _record(D, 0o755, b"a"), _record(L, 0o777, b"a/ok", b"../b"), _record(F, 0o644, b"b", b"")
    )
    write_back(host, encoding)
    assert (host / "a" / "ok").readlink() == Path("../b")


def test_the_size_is_bounded(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    encoding = _tree(_record(F, 0o644, b"big", b"x" * 1000))
    with pytest.raises(EvidenceError, match=r"over the limit of 100"):
        write_back(host, encoding, limit=100)
    assert list(host.iterdir()) == []


def test_a_host_symlink_is_never_followed_out(tmp_path: Path) -> None:
    """Host links where the tree has a directory or a file: replaced, never written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"untouched")
    host = tmp_path / "host"
    host.mkdir()
    (host / "sub").symlink_to(outside)
    (host / "victim").symlink_to(outside / "victim")
    encoding = _tree(
        _record(D, 0o755, b"sub"),
        _record(F, 0o644, b"sub/victim", b"pwned"),
        _record(F, 0o644, b"victim", b"pwned"),
    )
    write_back(host, encoding)
    assert (outside / "victim").read_bytes() == b"untouched"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert not (host / "sub").is_symlink()
    assert not (host / "victim").is_symlink()
    assert (host / "sub" / "victim").read_bytes() == b"pwned"


def test_a_file_hard_linked_from_outside_keeps_its_contents(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    host = tmp_path / "host"
    host.mkdir()
    os.link(outside, host / "shared")
    write_back(host, _tree(_record(F, 0o644, b"shared", b"changed")))
    assert outside.read_bytes() == b"untouched"
    assert (host / "shared").read_bytes() == b"changed"


def test_the_root_must_be_a_real_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "host").symlink_to(outside)
    with pytest.raises(Exception, match=r"cannot open it to write back"):
        write_back(tmp_path / "host", _tree(_record(F, 0o644, b"x", b"x")))
    assert list(outside.iterdir()) == []
