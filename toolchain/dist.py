"""Installed distributions, read from their ``*.dist-info`` directories without
``importlib.metadata``.

``importlib.metadata`` imports ``email``, ``zipfile``, ``csv`` and more: tens of milliseconds of
every ``keep build`` and of the first ``__version__``. What Keepstack needs of a distribution is
small — its version, a file of its metadata (``RECORD``), where its files lie — and is read here
the way ``importlib.metadata`` finds it: the first ``NAME-*.dist-info`` directory on ``sys.path``
whose name normalizes to the same as ``NAME`` (PEP 503: runs of ``-``, ``_``, ``.`` are one
separator, case ignored), files located relative to the directory that holds it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_SEPARATORS = re.compile(r"[-_.]+")
_SUFFIX = ".dist-info"


def _normalized(name: str) -> str:
    return _SEPARATORS.sub("_", name).lower()


class InstalledDist:
    """One installed distribution: its dist-info directory and what is read from it."""

    __slots__ = ("directory", "name", "version")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        headers = _headers(self.read_text("METADATA") or "")
        self.name = headers.get("Name", "")
        self.version = headers.get("Version", "")

    def read_text(self, filename: str) -> str | None:
        """A metadata file's text (None when it is absent or unreadable)."""
        try:
            return (self.directory / filename).read_text(encoding="utf-8")
        except OSError:
            return None

    def locate_file(self, relative: str) -> Path:
        """Where an installed file lies (as ``importlib.metadata``'s ``locate_file``)."""
        return self.directory.parent / relative

    def recorded_paths(self) -> list[str]:
        """The paths ``RECORD`` lists, in its order."""
        record = self.read_text("RECORD") or ""
        return [line.split(",", 1)[0] for line in record.splitlines() if line]


def _headers(text: str) -> dict[str, str]:
    """The first value of each core-metadata header (they end at the first empty line)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, colon, value = line.partition(":")
        if colon and not line[0].isspace():
            found.setdefault(key.strip(), value.strip())
    return found


def find_dist(name: str) -> InstalledDist | None:
    """The installed distribution ``name`` (None when no dist-info on ``sys.path`` names it)."""
    wanted = _normalized(name)
    for entry in sys.path:
        try:
            names = sorted(p.name for p in Path(entry or ".").iterdir())
        except OSError:  # a zip archive, a missing directory
            continue
        for candidate in names:
            if candidate.endswith(_SUFFIX) and (
                _normalized(candidate.removesuffix(_SUFFIX).split("-", 1)[0]) == wanted
            ):
                return InstalledDist(Path(entry or ".", candidate))
    return None
