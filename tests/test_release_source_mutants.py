"""Tests that kill the mutants of ``toolchain.release.source`` its suite let survive
(tests/MUTATION.md): a listing entry checks each of its three fields on its own, a file name
that is not UTF-8 is refused before it could reach the digest, and a source that vanishes
between listing and reading (or a trusted directory that cannot be listed) is unusable input,
not a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.release import source
from toolchain.release.source import SourceFile, tree_sha256

SHA = "ab" * 32


def test_a_listing_entry_checks_each_field_on_its_own() -> None:
    assert SourceFile("toolchain/x.py", "100644", SHA).line() == (
        f"100644 {SHA} toolchain/x.py\n".encode()
    )
    assert SourceFile("runtime/run.sh", "100755", SHA).mode == "100755"
    for path in ("", "/etc/passwd", "a\nb"):
        with pytest.raises(InputError, match="cannot be encoded in treeSha256"):
            SourceFile(path, "100644", SHA)
    for mode in ("100600", "120000", ""):
        with pytest.raises(InputError, match=f"mode {mode!r} is not a file mode"):
            SourceFile("toolchain/x.py", mode, SHA)
    for digest in ("ab" * 31, "ab" * 33, "AB" * 32, "g" + "a" * 63):
        with pytest.raises(InputError, match="sha256 must be 64 lowercase hex digits"):
            SourceFile("toolchain/x.py", "100644", digest)


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "toolchain").mkdir()
    (tmp_path / "toolchain/ok.py").write_bytes(b"")
    assert len(tree_sha256(tmp_path)) == 64
    Path(os.fsdecode(os.fsencode(tmp_path) + b"/toolchain/\xff.py")).write_bytes(b"")
    with pytest.raises(InputError, match="is not valid UTF-8: it has no treeSha256"):
        tree_sha256(tmp_path)


def test_a_vanished_source_or_unlistable_directory_is_input_error(tmp_path: Path) -> None:
    # The race the walk cannot exclude: a file or directory removed after it was listed.
    with pytest.raises(InputError, match=r"cannot read trusted source toolchain/gone\.py"):
        source._file(tmp_path, tmp_path / "toolchain/gone.py")
    with pytest.raises(InputError, match=r"cannot list trusted source .*toolchain"):
        source._walk(tmp_path, tmp_path / "toolchain")
