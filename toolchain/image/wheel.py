"""The keepstack Python package (toolchain + runtime sources + VMM) as a reproducible wheel.

Written directly (no build backend, no network): the files under ``toolchain/`` and ``runtime/``
(minus caches), metadata from ``pyproject.toml``, entries sorted, every timestamp 1980-01-01,
fixed permissions, stored uncompressed (so the bytes do not depend on the zlib version). The
same source tree gives the same wheel bytes on any machine; its digest goes into provenance.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError, PlatformError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("keep", "toolchain", "runtime")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo", ".so", ".o", ".elf", ".tmp"}


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str
    sha384: str


def package_files(root: Path) -> list[tuple[str, Path]]:
    """(name in the wheel, path) of every file of the packages, sorted (a recorded build's inputs).

    ``os.walk`` rather than ``Path.rglob`` (several times faster: ``keep run`` lists the tree on
    every run). Links to directories are not followed; links to files are taken as files.
    """
    files: list[tuple[str, Path]] = []
    for package in PACKAGES:
        base = root / package
        if not base.is_dir():
            raise PlatformError(f"package directory {base} is missing")
        for directory, subdirs, names in os.walk(base):
            subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS and not d.startswith(".")]
            relative = Path(directory).relative_to(root).as_posix()
            for name in names:
                if name.startswith(".") or name.endswith("~"):
                    continue
                if Path(name).suffix in _SKIP_SUFFIXES:
                    continue
                path = Path(directory, name)
                if path.is_file():
                    files.append((f"{relative}/{name}", path))
    return sorted(files)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _metadata(project: dict[str, object]) -> tuple[str, str, str, str]:
    """(name, version, METADATA text, entry_points.txt text) from [project]."""
    try:
        name = str(project["name"])
        version = str(project["version"])
    except KeyError as exc:
        raise InputError(f"pyproject.toml [project] lacks {exc.args[0]!r}") from None
    lines = ["Metadata-Version: 2.3", f"Name: {name}", f"Version: {version}"]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    if "license" in project and isinstance(project["license"], str):
        lines.append(f"License: {project['license']}")
    lines.extend(f"Classifier: {c}" for c in _strings(project.get("classifiers")))
    lines.extend(f"Requires-Dist: {r}" for r in _strings(project.get("dependencies")))
    scripts = project.get("scripts")
    entry_points = ""
    if isinstance(scripts, dict) and scripts:
        entry_points = "[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in sorted(scripts.items())
        )
    return name, version, "\n".join(lines) + "\n", entry_points


def _installed_metadata() -> tuple[str, str, str, str]:
    from importlib import metadata

    try:
        dist = metadata.distribution("keepstack")
    except metadata.PackageNotFoundError:
        raise PlatformError("neither pyproject.toml nor an installed keepstack found") from None
    text = dist.read_text("METADATA") or ""
    return dist.name, dist.version, text, dist.read_text("entry_points.txt") or ""


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def wheel_bytes(root: Path = ROOT) -> tuple[str, bytes]:
    """(file name, bytes) of the wheel of the source tree at ``root``."""
    import io
    import tomllib
    import zipfile

    if (root / "pyproject.toml").is_file():
        try:
            pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PlatformError(f"cannot read {root / 'pyproject.toml'}: {exc}") from exc
        name, version, metadata, entry_points = _metadata(pyproject.get("project", {}))
    else:  # an installed package: its own metadata, verbatim
        name, version, metadata, entry_points = _installed_metadata()
    dist = name.replace("-", "_")
    dist_info = f"{dist}-{version}.dist-info"
    entries: list[tuple[str, bytes, int]] = [
        (arcname, path.read_bytes(), 0o644) for arcname, path in package_files(root)
    ]
    entries.append((f"{dist_info}/METADATA", metadata.encode(), 0o644))
    wheel_text = "Wheel-Version: 1.0\nGenerator: keepstack\nRoot-Is-Purelib: true\n"
    entries.append((f"{dist_info}/WHEEL", (wheel_text + "Tag: py3-none-any\n").encode(), 0o644))
    if entry_points:
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode(), 0o644))
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d, _ in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode(), 0o644))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for arcname, data, mode in entries:
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_EPOCH)
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3  # unix, whatever the host
            archive.writestr(info, data)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()


def build_wheel(out_dir: Path, root: Path = ROOT) -> Wheel:
    """Write the wheel into ``out_dir``; returns its path and digests."""
    filename, data = wheel_bytes(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    if not path.is_file() or path.read_bytes() != data:  # unchanged files are not rewritten
        path.write_bytes(data)
    return Wheel(path, hashlib.sha256(data).hexdigest(), hashlib.sha384(data).hexdigest())
