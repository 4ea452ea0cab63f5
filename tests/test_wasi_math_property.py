"""Property test of the libc shim's rounding and sqrt (no SSE4.1) against wasmtime.

Random bit patterns, weighted towards the hard cases (|x| < 1, the 2^23 and 2^52 boundaries,
halfway values, zeros, infinities), go through wasm2c's floor/ceil/trunc/nearest/sqrt in the
hostcheck build and through wasmtime; every result must agree bit for bit (NaN results only up
to their payload, which WebAssembly leaves open).
"""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import pytest
from test_wasi_differential import Case, run_wasmtime

from toolchain.image.app import build_app_image

WAT = Path(__file__).resolve().parent / "wat" / "math_stdin.wat"


def _values(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    values: list[bytes] = []
    specials = [0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, float("inf"), -float("inf"), 2.0**52, 2.0**23]
    values += [struct.pack("<d", v) for v in specials]
    while len(values) < count:
        kind = rng.randrange(4)
        if kind == 0:  # any bit pattern
            values.append(rng.getrandbits(64).to_bytes(8, "little"))
        elif kind == 1:  # f64 with an exponent near the integer boundary
            exponent = rng.choice([1023 + e for e in range(-3, 55)])
            bits = rng.getrandbits(1) << 63 | exponent << 52 | rng.getrandbits(52)
            values.append(bits.to_bytes(8, "little"))
        elif kind == 2:  # f32 (low half) near its boundary
            exponent = rng.choice([127 + e for e in range(-3, 26)])
            bits = rng.getrandbits(1) << 31 | exponent << 23 | rng.getrandbits(23)
            values.append(bits.to_bytes(4, "little") + rng.getrandbits(32).to_bytes(4, "little"))
        else:  # exact halves: k + 0.5
            half = rng.randrange(-(2**53), 2**53) + 0.5
            values.append(struct.pack("<d", half))
    return values


def _normalise(output: bytes) -> list[str]:
    lines = output.decode().split()
    normal = []
    for i, line in enumerate(lines):
        bits = int(line, 16)
        exponent_bits, fraction_bits = (11, 52) if i % 10 < 5 else (8, 23)
        all_ones = (1 << exponent_bits) - 1
        fraction = bits & ((1 << fraction_bits) - 1)
        is_nan = (bits >> fraction_bits) & all_ones == all_ones and fraction != 0
        normal.append("nan" if is_nan else line)
    return normal


@pytest.mark.parametrize("seed", [1, 2])
def test_rounding_and_sqrt_match_wasmtime(seed: int, tmp_path: Path) -> None:
    values = _values(1500, seed)
    stdin = b"".join(values)
    case = Case(WAT, stdin=stdin)
    reference = run_wasmtime(case, tmp_path)
    build_app_image(WAT, tmp_path / "build", hostcheck=True)
    done = subprocess.run(
        [tmp_path / "build" / "hostcheck.elf"],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ours, theirs = _normalise(done.stdout), _normalise(reference.stdout)
    assert len(theirs) == 10 * len(values)
    mismatches = [
        (values[i // 10].hex(), i % 10, a, b)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if a != b
    ]
    assert mismatches == []
