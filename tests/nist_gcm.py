"""NIST CAVS 14.0 AES-GCM records from the pinned ``cryptography-vectors`` test dependency."""

from __future__ import annotations

import re
from collections.abc import Iterator

import cryptography_vectors


def nist_gcm_records(name: str) -> Iterator[dict[str, str]]:
    """The 96-bit-IV, 128-bit-tag records of ``name`` (the only shape SNP messages use).

    Each record maps the file's field names (Key, IV, AAD, PT, CT, Tag, Count) to hex; ``FAIL``
    is ``"FAIL"`` for a decryption record whose tag must not verify, else empty.
    """
    with cryptography_vectors.open_vector_file(f"ciphers/AES/GCM/{name}", "r") as handle:
        text = handle.read()
    for block in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^(\w+) = ?(.*)$", block, re.MULTILINE))
        if "Key" not in fields:
            continue
        fields["FAIL"] = "FAIL" if re.search(r"^FAIL$", block, re.MULTILINE) else ""
        if len(fields["IV"]) == 24 and len(fields["Tag"]) == 32:
            yield fields
