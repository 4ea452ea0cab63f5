"""The microkernel's AES-256-GCM (runtime/guest/ukernel/aes_gcm.c) against NIST and against
``cryptography``: the ring-0 object itself, compiled with the microkernel's flags, linked into a
libc-free host harness (tests/c/gcm_harness.c) that answers one request per line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nist_gcm import nist_gcm_records
from ring0_harness import ask, build_harness
from ring0_harness import hexfield as _hex


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_harness("gcm_harness.c", ["aes_gcm.c"], tmp_path_factory.mktemp("gcm"))


def test_seal_matches_nist_encrypt_vectors(harness: Path) -> None:
    records = list(nist_gcm_records("gcmEncryptExtIV256.rsp"))
    answers = ask(harness, [f"E {r['Key']} {r['IV']} {_hex(bytes.fromhex(r['AAD']))} "
                             f"{_hex(bytes.fromhex(r['PT']))}" for r in records])  # fmt: skip
    for record, answer in zip(records, answers, strict=True):
        assert answer.split(" ") == [record["CT"], record["Tag"]], record["Count"]
    assert len(records) == 375


def test_open_matches_nist_decrypt_vectors(harness: Path) -> None:
    records = list(nist_gcm_records("gcmDecrypt256.rsp"))
    requests = [
        f"D {r['Key']} {r['IV']} {_hex(bytes.fromhex(r['AAD']))} "
        f"{_hex(bytes.fromhex(r['CT']))} {r['Tag']}"
        for r in records
    ]
    answers = ask(harness, requests)
    failed = 0
    for record, answer in zip(records, answers, strict=True):
        if record["FAIL"]:
            # Refused, and not one byte of plaintext written (FAIL-WROTE would say otherwise).
            assert answer == "FAIL", record["Count"]
            failed += 1
        else:
            assert answer == record["PT"], record["Count"]
    assert (len(records) - failed, failed) == (184, 191)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 96, 255, 1216, 4000])
def test_seal_and_open_long_messages(harness: Path, length: int) -> None:
    key, iv, aad = os.urandom(32), os.urandom(12), os.urandom(48)
    plaintext = os.urandom(length)
    sealed = AESGCM(key).encrypt(iv, plaintext, aad)
    ciphertext, tag = sealed[:-16], sealed[-16:]
    flipped = bytearray(ciphertext or tag)
    flipped[len(flipped) // 2] ^= 1
    bad = (bytes(flipped), tag) if ciphertext else (ciphertext, bytes(flipped))
    seal_answer, open_answer, tampered = ask(
        harness,
        [
            f"E {key.hex()} {iv.hex()} {aad.hex()} {_hex(plaintext)}",
            f"D {key.hex()} {iv.hex()} {aad.hex()} {_hex(ciphertext)} {tag.hex()}",
            f"D {key.hex()} {iv.hex()} {aad.hex()} {_hex(bad[0])} {bad[1].hex()}",
        ],
    )
    assert seal_answer.split(" ") == [ciphertext.hex(), tag.hex()]
    assert open_answer == plaintext.hex()
    assert tampered == "FAIL"
