"""The signed source of a release: ``treeSha256`` (toolchain.release.source) over the trusted
files, byte for byte as documented, and the predicate's optional ``source`` field (schema, round
trip, refusals; old statements without it still parse)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.release.source import (
    TRUSTED_SOURCES,
    differences,
    source_files,
    tree_sha256,
)
from toolchain.sign import ComponentDigest, KeepPredicate, LaunchConfig, SourceDigest
from toolchain.sign.predicate import SCHEMA_FILE
from toolchain.sign.schema_check import load_schema, validate

ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 11, 27, tzinfo=UTC)


def _tree(root: Path) -> Path:
    files = {
        "toolchain/__init__.py": b"x = 1\n",
        "toolchain/z.py": b"z\n",
        "toolchain/a b/é.txt": "é".encode(),  # a space, and a non-ASCII name
        "toolchain/Z.py": b"Z\n",
        "runtime/run.sh": b"#!/bin/sh\n",
        "examples/hello/hello.wat": b"(module)\n",
        "requirements/runtime.txt": b"cffi==2.1.1\n",
        "requirements/tests.txt": b"not trusted\n",
        "README.md": b"not trusted either\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "runtime/run.sh").chmod(0o755)
    return root


def _line(mode: str, data: bytes, path: str) -> bytes:
    return f"{mode} {hashlib.sha256(data).hexdigest()} {path}\n".encode()


def test_tree_digest_is_the_documented_encoding(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    expected = b"".join(
        [  # sorted by the UTF-8 bytes of the path ("Z" < "_" < "a"), never by locale
            _line("100644", b"(module)\n", "examples/hello/hello.wat"),
            _line("100644", b"cffi==2.1.1\n", "requirements/runtime.txt"),
            _line("100755", b"#!/bin/sh\n", "runtime/run.sh"),
            _line("100644", b"Z\n", "toolchain/Z.py"),
            _line("100644", b"x = 1\n", "toolchain/__init__.py"),
            _line("100644", "é".encode(), "toolchain/a b/é.txt"),
            _line("100644", b"z\n", "toolchain/z.py"),
        ]
    )
    assert tree_sha256(root) == hashlib.sha256(expected).hexdigest()
    assert TRUSTED_SOURCES == (
        "keep",
        "runtime",
        "examples",
        "toolchain",
        "requirements/runtime.txt",
    )


def test_tree_digest_ignores_bytecode_and_untrusted_paths_only(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    before = tree_sha256(root)
    (root / "toolchain/__pycache__").mkdir()
    (root / "toolchain/__pycache__/z.cpython-311.pyc").write_bytes(b"\0")
    (root / "toolchain/stale.pyc").write_bytes(b"\0")
    (root / "README.md").write_text("changed")
    (root / "requirements/tests.txt").write_text("changed")
    (root / "toolchain/z.py").chmod(0o640)  # not a mode git records: the same source
    # The built-in trust root decides who may sign, not what is built: a root pinned after a
    # release was signed must not change the source that release signed.
    policy = root / "toolchain/sign/release-trust"
    (policy / "keys").mkdir(parents=True)
    (policy / "root.json").write_text("{}\n")
    (policy / "keys/new.pub.pem").write_text("a key\n")
    assert tree_sha256(root) == before
    (root / "toolchain/sign/trust.py").write_text("but the code that reads it counts\n")
    assert tree_sha256(root) != before
    (root / "toolchain/sign/trust.py").unlink()
    for change in (
        lambda: (root / "toolchain/z.py").write_bytes(b"Z\n"),  # content
        lambda: (root / "toolchain/z.py").chmod(0o750),  # executable
        lambda: (root / "toolchain/new.py").write_bytes(b""),  # a new, empty file
        lambda: (root / "requirements/runtime.txt").write_text("cffi==2.1.2\n"),
    ):
        listing = source_files(root)
        change()
        assert tree_sha256(root) != before
        assert len(differences(listing, source_files(root))) == 1
        before = tree_sha256(root)


def test_tree_digest_refuses_what_it_cannot_cover(tmp_path: Path) -> None:
    root = _tree(tmp_path / "links")
    (root / "toolchain/link.py").symlink_to(root / "toolchain/z.py")
    with pytest.raises(InputError, match=r"toolchain/link.py .* is a symbolic link"):
        tree_sha256(root)
    root = _tree(tmp_path / "directory-link")
    (root / "examples/other").symlink_to(root / "examples/hello")
    with pytest.raises(InputError, match=r"examples/other .* is a symbolic link"):
        tree_sha256(root)
    root = _tree(tmp_path / "newline")
    (root / "toolchain/two\nlines.py").write_bytes(b"")
    with pytest.raises(InputError, match="line feed"):
        tree_sha256(root)
    with pytest.raises(InputError, match="holds none of the trusted sources"):
        tree_sha256(tmp_path / "empty")


def test_this_tree_has_a_digest() -> None:
    files = source_files(ROOT)
    paths = [f.path for f in files]
    assert "toolchain/release/source.py" in paths
    assert "requirements/runtime.txt" in paths
    assert not any("__pycache__" in p or p.startswith("tests/") for p in paths)
    assert len(tree_sha256(ROOT)) == 64


def _predicate(source: SourceDigest | None) -> KeepPredicate:
    return KeepPredicate(
        release="0.3.0",
        configs=[LaunchConfig("turin", 1, 0x30000, "kvm", b"\x11" * 48)],
        components=[ComponentDigest("app.wasm", "a" * 64, "b" * 96)],
        toolchain={"ziglang": "0.15.2"},
        provenance_sha256="d" * 64,
        not_before=AT,
        not_after=AT + timedelta(days=365),
        source=source,
    )


def test_predicate_source_round_trip_and_schema() -> None:
    signed = SourceDigest(tree_sha256="e" * 64, commit="f" * 40)
    document = _predicate(signed).to_json()
    assert document["source"] == {"commit": "f" * 40, "treeSha256": "e" * 64}
    assert KeepPredicate.from_json(document).source == signed
    without_commit = _predicate(SourceDigest("e" * 64)).to_json()
    assert without_commit["source"] == {"treeSha256": "e" * 64}
    old = _predicate(None).to_json()  # as 0.1.0 and 0.2.0 are: no field at all
    assert "source" not in old
    assert KeepPredicate.from_json(old).source is None
    schema = load_schema(SCHEMA_FILE)
    for bad in (
        {"commit": "f" * 40},  # no treeSha256
        {"treeSha256": "E" * 64},
        {"treeSha256": "e" * 64, "commit": "f" * 39},
        {"treeSha256": "e" * 64, "commit": "-" + "f" * 39},
        {"treeSha256": "e" * 64, "extra": 1},
        None,
    ):
        errors = validate({**document, "source": bad}, schema, root="predicate")
        assert errors, bad
        assert any("predicate.source" in e for e in errors), errors
        with pytest.raises(InputError, match="predicate does not match"):
            KeepPredicate.from_json({**document, "source": bad})


def test_source_digest_validates_itself() -> None:
    assert SourceDigest("e" * 64, "f" * 64).commit == "f" * 64  # SHA-256 repositories
    with pytest.raises(InputError, match="treeSha256"):
        SourceDigest("e" * 63)
    with pytest.raises(InputError, match="source commit"):
        SourceDigest("e" * 64, "HEAD")
    with pytest.raises(InputError, match="SourceDigest"):
        _predicate({"treeSha256": "e" * 64})  # type: ignore[arg-type]
