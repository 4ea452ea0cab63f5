"""Seeds for the atheris targets: real samples from tests/data, patched by the fuzzer's bytes.

Random bytes rarely form a DER certificate or CRL; patching a real one reaches the deep parsers.
"""

from __future__ import annotations

from pathlib import Path

SNP = Path(__file__).resolve().parents[1] / "data" / "vectors" / "snp-reports"


def seed(name: str) -> bytes:
    return (SNP / name).read_bytes()


def patched(base: bytes, patch: bytes) -> bytes:
    """``base`` patched by (2-byte position, value) triples from ``patch``; ``patch`` if no base."""
    if not base:
        return patch
    blob = bytearray(base)
    for i in range(0, len(patch) - 2, 3):
        blob[(patch[i] << 8 | patch[i + 1]) % len(blob)] = patch[i + 2]
    return bytes(blob)
