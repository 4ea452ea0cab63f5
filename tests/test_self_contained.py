"""The clone is self-contained: tests read only ``tests/data/``, and every file there is listed
in ``tests/data/SOURCES.md`` with its SHA-256 (a user cloning the repository has nothing beside it).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from testdata import DATA

ROOT = Path(__file__).resolve().parent.parent
_ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| `(?P<sha256>[0-9a-f]{64})` \|$", re.MULTILINE)
# Built from pieces so that this file does not match itself.
_OUTSIDE = re.compile(r"\.\./" + "shared" + r"|parent ?/ ?[\"']" + "shared" + r"[\"']")


def test_every_data_file_is_listed_with_its_sha256():
    rows = {m["path"]: m["sha256"] for m in _ROW.finditer((DATA / "SOURCES.md").read_text())}
    files = {
        p.relative_to(DATA).as_posix(): p
        for p in DATA.rglob("*")
        if p.is_file() and p.name != "SOURCES.md"
    }
    assert sorted(rows) == sorted(files), "tests/data and SOURCES.md list different files"
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rows[name], name


def test_no_code_reads_outside_the_clone():
    sources = [
        p
        for top in ("keep", "toolchain", "runtime", "tests", "bench", ".ci")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and (p.suffix in {".py", ".sh", ".toml", ".c", ".h"} or top == ".ci")
    ]
    sources += [ROOT / "noxfile.py", ROOT / "pyproject.toml", ROOT / "noxw"]
    offenders = [
        p.relative_to(ROOT).as_posix()
        for p in sources
        if _OUTSIDE.search(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []
