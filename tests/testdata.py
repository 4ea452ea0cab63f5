"""Where the tests' data lives: ``tests/data/``, inside the repository.

Every file there is listed in ``tests/data/SOURCES.md`` with its origin, license and SHA-256; no
test reads anything outside the clone. The two firmware images over 1 MiB are stored
xz-compressed; ``digest_fixtures()`` unpacks them once per process into a temporary directory and
checks each against the size and SHA-256 that ``vectors.json`` states, so a damaged fixture fails
loudly instead of changing what a vector means.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import lzma
import shutil
import tempfile
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
AMD_CERTS = DATA / "amd-certs"
SNP_REPORTS = DATA / "vectors" / "snp-reports"
SNP_DIGEST = DATA / "vectors" / "snp-digest"
DIGEST_VECTORS = SNP_DIGEST / "vectors.json"
KVM_SNP_OFFSETS = DATA / "kvm-snp-uapi" / "offsets-6.12.117.txt"


@cache
def digest_vectors() -> dict:
    return json.loads(DIGEST_VECTORS.read_text(encoding="utf-8"))


@cache
def digest_fixtures() -> Path:
    """The launch-digest fixtures as plain files (``vectors.json`` names them by file name)."""
    out = Path(tempfile.mkdtemp(prefix="keepstack-digest-fixtures-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    stored = SNP_DIGEST / "fixtures"
    for name, facts in sorted(digest_vectors()["fixtures"].items()):
        plain, packed = stored / name, stored / f"{name}.xz"
        data = plain.read_bytes() if plain.is_file() else lzma.decompress(packed.read_bytes())
        if len(data) != facts["size"] or hashlib.sha256(data).hexdigest() != facts["sha256"]:
            raise AssertionError(f"test fixture {name} does not match vectors.json's SHA-256")
        (out / name).write_bytes(data)
    return out
