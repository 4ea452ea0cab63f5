"""The host half of ``--dir``: spec parsing, the canonical tree encoding, its digest and bound.

The expected encoding is written out byte by byte from the documented format
(``toolchain/measure/trees.py``), not produced by the code under test.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.measure.trees import (
    TREE_MAGIC,
    TREES_MAX_BYTES,
    DirSpec,
    bind_report_data,
    encode_tree,
    read_tree,
    read_trees,
)


def _record(filetype: int, mode: int, path: bytes, data: bytes) -> bytes:
    return (
        struct.pack("<BHI", filetype, mode, len(path)) + path + struct.pack("<Q", len(data)) + data
    )


def _small_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "b.txt").write_bytes(b"bee\n")
    (root / "a.txt").write_bytes(b"hello")
    (root / "link").symlink_to("sub/b.txt")
    root.chmod(0o700)
    (root / "sub").chmod(0o750)
    (root / "sub" / "b.txt").chmod(0o600)
    (root / "a.txt").chmod(0o640)
    return root


def test_spec_syntax_is_wasmtimes() -> None:
    assert DirSpec.parse("data::/") == DirSpec(Path("data"), "/")
    assert DirSpec.parse("/srv/in::input") == DirSpec(Path("/srv/in"), "input")
    assert DirSpec.parse("./here") == DirSpec(Path("./here"), "./here")  # its own name
    for bad in ("", "::/", "data::"):
        with pytest.raises(InputError, match="--dir"):
            DirSpec.parse(bad)


def test_encoding_is_the_documented_bytes(tmp_path: Path) -> None:
    root = _small_tree(tmp_path / "t")
    link_mode = os.lstat(root / "link").st_mode & 0o777
    expected = TREE_MAGIC + b"".join(
        (
            _record(3, 0o700, b"", b""),
            _record(4, 0o640, b"a.txt", b"hello"),
            _record(7, link_mode, b"link", b"sub/b.txt"),
            _record(3, 0o750, b"sub", b""),
            _record(4, 0o600, b"sub/b.txt", b"bee\n"),
        )
    )
    tree = read_tree(DirSpec(root, "/"))
    assert tree.encoding == expected
    assert tree.digest == hashlib.sha512(expected).digest()


def test_same_tree_same_digest_wherever_and_whenever(tmp_path: Path) -> None:
    one = _small_tree(tmp_path / "one")
    two = _small_tree(tmp_path / "elsewhere" / "two")
    os.utime(two / "a.txt", (1, 1))  # timestamps are not part of the encoding
    assert encode_tree(DirSpec(one, "/")) == encode_tree(DirSpec(two, "/x"))


@pytest.mark.parametrize("change", ["content", "mode", "name", "link", "new-empty-dir"])
def test_every_encoded_property_changes_the_digest(tmp_path: Path, change: str) -> None:
    root = _small_tree(tmp_path / "t")
    before = read_tree(DirSpec(root, "/")).digest
    if change == "content":
        (root / "a.txt").write_bytes(b"hellO")
    elif change == "mode":
        (root / "a.txt").chmod(0o600)
    elif change == "name":
        (root / "a.txt").rename(root / "A.txt")
    elif change == "link":
        (root / "link").unlink()
        (root / "link").symlink_to("sub/c.txt")
    else:
        (root / "empty").mkdir()
    assert read_tree(DirSpec(root, "/")).digest != before


def test_links_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not copy")
    root = tmp_path / "t"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    encoding = encode_tree(DirSpec(root, "/"))
    assert b"do not copy" not in encoding
    assert str(outside).encode() in encoding  # the target, as written


def test_what_is_not_a_file_directory_or_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(InputError, match="pipe is neither a directory, a regular file nor"):
        read_tree(DirSpec(root, "/"))


def test_host_path_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InputError, match="not a directory"):
        read_tree(DirSpec(tmp_path / "file", "/"))
    with pytest.raises(InputError, match="cannot read it"):
        read_tree(DirSpec(tmp_path / "missing", "/"))


def test_names_must_be_utf8(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / os.fsdecode(b"bad\xff")).write_bytes(b"")
    with pytest.raises(InputError, match="not UTF-8"):
        read_tree(DirSpec(root, "/"))


def test_an_oversized_tree_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "big").write_bytes(b"\0" * 5000)
    with pytest.raises(InputError) as refused:
        read_tree(DirSpec(root, "/"), limit=4096)
    message = refused.value.message
    assert "over the limit of 4096 bytes" in message
    assert f"TREES_MAX_BYTES = {TREES_MAX_BYTES}" in message


def test_the_limit_counts_all_trees_of_a_run(tmp_path: Path) -> None:
    specs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"x" * 3000)
        specs.append(DirSpec(tmp_path / name, f"/{name}"))
    assert len(read_trees(specs[:1], limit=4096)) == 1
    with pytest.raises(InputError, match=f"--dir {tmp_path / 'b'}"):
        read_trees(specs, limit=4096)


def test_report_data_binds_the_nonce_and_every_digest_in_order() -> None:
    nonce, one, two = bytes(range(64)), b"\x01" * 64, b"\x02" * 64
    assert bind_report_data(nonce, []) == nonce
    assert bind_report_data(nonce, [one, two]) == hashlib.sha512(nonce + one + two).digest()
    assert bind_report_data(nonce, [two, one]) != bind_report_data(nonce, [one, two])
