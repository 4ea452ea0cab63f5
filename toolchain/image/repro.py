"""Reproducibility check: build the same keep twice in different environments, compare bytes.

``python -m toolchain.image.repro APP [APP ...]`` (the ``nox -s repro`` session) runs
``keep build`` twice per application, in separate temporary directories, with different TZ,
LC_ALL, umask, HOME (and so different build caches: both builds start cold) and with
SOURCE_DATE_EPOCH set in one and unset in the other. Every file of both output directories is
compared byte for byte; a difference is reported with the file, the first differing offset and,
for ELF files, the section it falls in (and diffoscope's report when diffoscope is installed).
Exit status 0 when everything is identical, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS: tuple[dict[str, object], ...] = (
    {"TZ": "UTC", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0", "umask": 0o022},
    {"TZ": "Pacific/Kiritimati", "LC_ALL": "C.UTF-8", "SOURCE_DATE_EPOCH": None, "umask": 0o077},
)


@dataclass(frozen=True)
class Difference:
    path: str
    detail: str


def _env(base: Path, settings: dict[str, object]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEEPSTACK_", "XDG_", "ZIG_")) and k != "SOURCE_DATE_EPOCH"
    }
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "TZ": str(settings["TZ"]), "LC_ALL": str(settings["LC_ALL"])})
    if settings["SOURCE_DATE_EPOCH"] is not None:
        env["SOURCE_DATE_EPOCH"] = str(settings["SOURCE_DATE_EPOCH"])
    return env


def build_once(app: Path, base: Path, settings: dict[str, object]) -> Path:
    """``keep build`` of ``app`` under ``base`` with the given environment; returns DIR."""
    out = base / "out"
    umask = int(str(settings["umask"]))
    subprocess.run(
        [sys.executable, "-m", "keep", "build", str(app.resolve()), "--out", str(out)],
        env=_env(base, settings),
        cwd=base,
        umask=umask,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def _where(path: Path, offset: int) -> str:
    """For an ELF file, the section holding ``offset``."""
    try:
        from elftools.elf.elffile import ELFFile

        with path.open("rb") as stream:
            elf = ELFFile(stream)
            for section in elf.iter_sections():
                start = section["sh_offset"]
                if start <= offset < start + section["sh_size"]:
                    return f" (in section {section.name}, offset {offset - start:#x} into it)"
            if offset < elf["e_ehsize"]:
                return " (in the ELF header)"
    except Exception:  # noqa: BLE001 - not an ELF: no section to name
        return ""
    return ""


def compare(first: Path, second: Path) -> list[Difference]:
    """Every difference between two output directories (missing files included)."""
    a, b = _files(first), _files(second)
    differences = [Difference(n, "only in the first build") for n in sorted(a.keys() - b.keys())]
    differences += [Difference(n, "only in the second build") for n in sorted(b.keys() - a.keys())]
    for name in sorted(a.keys() & b.keys()):
        x, y = a[name].read_bytes(), b[name].read_bytes()
        if x != y:
            differences.append(Difference(name, byte_difference(x, y, a[name])))
    return differences


def byte_difference(x: bytes, y: bytes, path: Path) -> str:
    """Where ``x`` and ``y`` (two versions of ``path``) first differ: the offset and, for an ELF
    file, the section holding it."""
    offset = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), None)
    if offset is None:
        return f"sizes differ ({len(x)} vs {len(y)} bytes), one is a prefix of the other"
    return (
        f"first difference at byte {offset:#x}{_where(path, offset)}: "
        f"{x[offset : offset + 8].hex()} vs {y[offset : offset + 8].hex()}"
    )


def main(argv: list[str] | None = None) -> int:
    apps = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not apps:
        print("usage: python -m toolchain.image.repro APP.wasm|APP.wat ...", file=sys.stderr)
        return 2
    failed = False
    for app in apps:
        with tempfile.TemporaryDirectory(prefix="keep-repro-a-") as dir_a, \
                tempfile.TemporaryDirectory(prefix="keep-repro-b-") as dir_b:  # fmt: skip
            first = build_once(app, Path(dir_a), ENVIRONMENTS[0])
            second = build_once(app, Path(dir_b), ENVIRONMENTS[1])
            differences = compare(first, second)
            count = len(_files(first))
            if not differences:
                print(f"✔ {app}: {count} files identical in both builds")
                continue
            failed = True
            print(f"✗ {app}: {len(differences)} of {count} files differ")
            for difference in differences:
                print(f"    {difference.path}: {difference.detail}")
            diffoscope = shutil.which("diffoscope")
            if diffoscope is not None:
                for difference in differences:
                    x, y = first / difference.path, second / difference.path
                    if x.is_file() and y.is_file():
                        subprocess.run([diffoscope, str(x), str(y)], check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
