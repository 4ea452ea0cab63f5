"""A content-addressed build cache keyed by the hash of every input.

A step (one compile, one wasm2c run, one link) is identified by a *key*: the SHA-256 of its tool
identities, flags and primary input bytes. Inputs discovered only while running the step (headers
from a compiler depfile) are recorded in the entry with their own digests and re-checked on every
lookup, so editing a header invalidates exactly the objects that include it ("direct mode").

Layout under ``cache_dir("build")``::

    entries/<key[:2]>/<key>.json   manifest: outputs (name -> sha256) and dependencies
    blobs/<sha[:2]>/<sha>          output bytes, by SHA-256

Writes are atomic (temporary file + rename), so concurrent builds never see half an entry.
Every hit re-hashes each output it returns against the entry's digest (cheap next to a compile):
a blob changed in the cache (damaged, or altered by anyone who can write the cache) is a miss, said
on stderr, and the step runs again; ``keep run`` never boots bytes the entry does not name. The
bytes hashed are the bytes restored (one read), so a blob changed in between cannot slip through.
(Whoever can write the cache can still write a *consistent* false entry; the cache is per user.)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from toolchain.state import cache_dir

CACHE_FORMAT = "keepstack-build-cache-1"


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's contents."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def step_key(*parts: str | bytes) -> str:
    """The key of a build step: SHA-256 over length-prefixed parts (no ambiguity in joins)."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheHit:
    """The outputs of a cached step, by name: their bytes, just checked against the entry."""

    outputs: dict[str, bytes]

    def restore(self, name: str, destination: Path, *, mode: int = 0o644) -> None:
        """Write output ``name`` to ``destination`` (atomically; never a link into the cache)."""
        _install(self.outputs[name], destination, mode)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BuildCache:
    """The cache. ``root`` defaults to the per-user cache directory; disabled caches miss always."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = root if root is not None else cache_dir("build")
        self.enabled = enabled and os.environ.get("KEEPSTACK_NO_BUILD_CACHE", "") in ("", "0")

    def _entry_path(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.json"

    def _blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    def lookup(self, key: str, *, base: Path | None = None) -> CacheHit | None:
        """The entry for ``key`` if every recorded dependency still has its recorded digest.

        Dependencies recorded relative (``@/name``) are resolved against ``base``.
        """
        if not self.enabled:
            return None
        try:
            manifest = json.loads(self._entry_path(key).read_text(encoding="utf-8"))
            deps: dict[str, str] = manifest["deps"]
            outputs: dict[str, str] = manifest["outputs"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        for recorded, sha in deps.items():
            path = self._resolve(recorded, base)
            try:
                if path is None or sha256_file(path) != sha:
                    return None
            except OSError:
                return None
        found: dict[str, bytes] = {}
        for name, sha in outputs.items():
            blob = self._blob_path(sha)
            try:
                data = blob.read_bytes()
            except OSError:
                return None
            if hashlib.sha256(data).hexdigest() != sha:
                print(
                    f"keep: build cache: output {name!r} ({blob}) does not match its SHA-256 "
                    f"(damaged or altered): rebuilding step {key[:16]}",
                    file=sys.stderr,
                )
                blob.unlink(missing_ok=True)
                return None
            found[name] = data
        return CacheHit(found)

    @staticmethod
    def _resolve(recorded: str, base: Path | None) -> Path | None:
        if recorded.startswith("@/"):
            return None if base is None else base / recorded[2:]
        return Path(recorded)

    def store(
        self,
        key: str,
        outputs: Mapping[str, Path],
        *,
        deps: Iterable[Path] = (),
        base: Path | None = None,
    ) -> None:
        """Record ``outputs`` (name → file) for ``key``, with the digests of ``deps``."""
        if not self.enabled:
            return
        dep_digests: dict[str, str] = {}
        for dep in sorted(set(deps)):
            name = str(dep)
            if base is not None and dep.is_relative_to(base):
                name = "@/" + dep.relative_to(base).as_posix()
            dep_digests[name] = sha256_file(dep)
        out_digests: dict[str, str] = {}
        for name, path in sorted(outputs.items()):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            blob = self._blob_path(sha)
            if not blob.is_file() or sha256_file(blob) != sha:  # a damaged blob is replaced
                _atomic_write(blob, data)
            out_digests[name] = sha
        manifest = {"format": CACHE_FORMAT, "deps": dep_digests, "outputs": out_digests}
        _atomic_write(self._entry_path(key), json.dumps(manifest, sort_keys=True).encode())


def restore(source: Path, destination: Path, *, mode: int = 0o644) -> None:
    """Copy a freshly built file to ``destination`` (atomically)."""
    _install(source.read_bytes(), destination, mode)


def _install(data: bytes, destination: Path, mode: int) -> None:
    if _holds(destination, data, mode):
        return  # an unchanged file is not rewritten (a hit used to rename every output anew)
    _atomic_write(destination, data)
    destination.chmod(mode)


def _holds(destination: Path, data: bytes, mode: int) -> bool:
    """Whether ``destination`` is already a regular file (not a link) of ``mode`` and ``data``."""
    import stat

    try:
        st = destination.lstat()
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
            return False
        if st.st_size != len(data):
            return False
        return destination.read_bytes() == data
    except OSError:
        return False
