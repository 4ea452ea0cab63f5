"""Throw-away TUF repositories for tests that need someone's trust: the trust anchor is a TUF root
(the project's own policy format was removed in 0.3.0), so a test that trusts a key of its own
publishes its envelopes in a repository of its own, made with the same functions as ``keep tuf``
(``toolchain.sign.tuf_repository``), and pins that repository's first root.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from toolchain.sign import tuf_repository as tuf
from toolchain.sign.keys import PrivateKey, generate_private_key
from toolchain.sign.tokens import FileKey
from toolchain.sign.tuf_client import METADATA_DIR, REFERENCES_DIR

#: The release role of a throw-away repository.
ROLE = "release"


def make_repository(
    directory: Path,
    key: PrivateKey,
    files: Mapping[str, bytes],
    *,
    releases: tuple[str, ...] | None = None,
) -> Path:
    """``directory/reference-measurements``: a TUF repository (a fresh root key, 1 of 1, also
    online) whose release role ``release`` (``key`` alone) may sign ``releases`` (default: the
    releases the files are under) and lists ``files`` (target path such as
    ``0.1.0/hello.dsse.json`` -> bytes, written there). Returns the first root, the one a tenant
    pins."""
    references = directory / REFERENCES_DIR
    for path, data in files.items():
        (references / path).parent.mkdir(parents=True, exist_ok=True)
        (references / path).write_bytes(data)
    root = FileKey(generate_private_key(), "throw-away root key")
    release = FileKey(key, ROLE)
    ring = tuf.Keyring((root, release))
    repo = tuf.Repository(references)
    tuf.init(repo, ring, root_keys=[root], root_threshold=1, online_key=root)
    scope = releases or tuple(sorted({PurePosixPath(p).parts[0] for p in files}))
    tuf.add_release_key(repo, ring, release, name=ROLE, releases=list(scope))
    tuf.add_targets(repo, ring, ROLE, sorted(files))
    return references / METADATA_DIR / "1.root.json"
