"""The lint sees every package: no ``extend-exclude`` pattern of ruff hides a source file.

ruff matches an unanchored pattern (``build``) against every path component, so a package
folder of that name vanished from ``ruff check .`` and ``ruff format --check .``; a pattern
starting with ``./`` is anchored to the project root. This applies those rules (the tests'
environment has no ruff; ``ruff check --show-files .`` lists the same files).
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keep", "toolchain", "runtime", "tests", "bench")


def _excluded(relative: Path, pattern: str) -> bool:
    if pattern.startswith("./"):
        anchored = pattern[2:]
        return any(
            fnmatch("/".join(relative.parts[: i + 1]), anchored) for i in range(len(relative.parts))
        )
    return any(fnmatch(part, pattern) for part in relative.parts) or fnmatch(
        relative.as_posix(), pattern
    )


def _patterns() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ruff = config["tool"]["ruff"]
    return [*ruff.get("exclude", []), *ruff.get("extend-exclude", [])]


def test_no_exclude_pattern_hides_a_package_file() -> None:
    patterns = _patterns()
    files = [p.relative_to(ROOT) for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    assert any(f.parts[:2] == ("toolchain", "image") for f in files)
    hidden = [f"{f} ({p})" for f in files for p in patterns if _excluded(f, p)]
    assert not hidden


def test_the_rule_catches_an_unanchored_package_name() -> None:
    """The check itself: ``build`` would hide a package folder named build, ``./build`` not."""
    assert _excluded(Path("toolchain/build/keep_build.py"), "build")
    assert not _excluded(Path("toolchain/build/keep_build.py"), "./build")
    assert _excluded(Path("build/out.py"), "./build")
