"""Where a rebuilt artifact differs from the release's bytes.

diffoscope's report where diffoscope is installed; otherwise the first differing offset and, for
an ELF file, the section holding it (``toolchain.image.repro``), and for ``launch-plan.json`` the
JSON paths that differ (with the label of a differing region).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: At most this many lines of diffoscope's report and differing JSON paths are shown.
MAX_LINES = 40
MAX_JSON_PATHS = 6


def json_differences(first: Any, second: Any, path: str = "") -> list[str]:
    """The paths (``regions[6].data``) of every leaf that differs between two JSON documents."""
    if isinstance(first, dict) and isinstance(second, dict):
        found: list[str] = []
        for key in sorted(first.keys() | second.keys()):
            where = f"{path}.{key}" if path else str(key)
            if key not in first or key not in second:
                found.append(f"{where} (only in one)")
            else:
                found += json_differences(first[key], second[key], where)
        return found
    if isinstance(first, list) and isinstance(second, list):
        found = []
        for index, (a, b) in enumerate(zip(first, second, strict=False)):
            found += json_differences(a, b, f"{path}[{index}]")
        if len(first) != len(second):
            found.append(f"{path} (length {len(first)} vs {len(second)})")
        return found
    return [] if first == second else [path or "(document)"]


def _plan_detail(published: bytes, rebuilt: bytes) -> str | None:
    try:
        first, second = json.loads(published), json.loads(rebuilt)
    except (ValueError, UnicodeDecodeError):
        return None
    paths = json_differences(first, second)
    if not paths:
        return "the same JSON document, formatted differently"
    regions = first.get("regions") if isinstance(first, dict) else None
    named = []
    for path in paths[:MAX_JSON_PATHS]:
        label = ""
        if path.startswith("regions[") and isinstance(regions, list):
            index = int(path[len("regions[") : path.index("]")])
            if index < len(regions) and isinstance(regions[index], dict):
                label = f" ({regions[index].get('label', '')})"
        named.append(path + label)
    more = f" and {len(paths) - MAX_JSON_PATHS} more" if len(paths) > MAX_JSON_PATHS else ""
    return "differs at " + ", ".join(named) + more


def _diffoscope(published: Path, rebuilt: Path) -> str | None:
    tool = shutil.which("diffoscope")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            [tool, "--no-progress", str(published), str(rebuilt)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.splitlines()
    if not lines:
        return None
    shown = lines[:MAX_LINES]
    if len(lines) > MAX_LINES:
        shown.append(f"… ({len(lines) - MAX_LINES} more lines of diffoscope output)")
    return "diffoscope:\n" + "\n".join(f"      {line}" for line in shown)


def describe(published: Path, rebuilt: Path) -> str:
    """One human-readable description of where ``rebuilt`` differs from ``published``."""
    from toolchain.image.repro import byte_difference

    first, second = published.read_bytes(), rebuilt.read_bytes()
    if first == second:
        return "identical bytes"
    detail = None
    if published.suffix == ".json":
        detail = _plan_detail(first, second)
    if detail is None:
        detail = byte_difference(first, second, published)
    report = _diffoscope(published, rebuilt)
    return detail if report is None else f"{detail}\n{report}"
