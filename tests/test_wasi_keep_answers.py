"""The WASI layer's own answers where WASI hosts legitimately differ from wasmtime.

Where wasmtime traps the keep answers: a pointer outside linear memory is EFAULT (21), a value
outside the spec's enums and flag sets EINVAL (28); an unknown clock is EINVAL. No call answers
ENOSYS any more. Run through the hostcheck build (same objects as the keep); the nil backend's
answers are compared with the keep's by tests/test_backend_parity.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from toolchain.image.app import build_app_image

WAT = Path(__file__).resolve().parent / "wat" / "wasi_keep_answers.wat"


def _errno_line(*errnos: int) -> bytes:
    return bytes(65 + e for e in errnos) + b"\n"


def test_bad_values_and_bad_pointers(tmp_path: Path) -> None:
    build_app_image(WAT, tmp_path, hostcheck=True)
    done = subprocess.run(
        ["app.wasm", "arg"],
        executable=tmp_path / "hostcheck.elf",
        env={},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    efault, einval = 21, 28
    assert done.stdout == _errno_line(
        *[einval] * 8, *[efault] * 5, efault, efault, efault, efault, einval, efault
    )


def test_memory_beyond_the_heap_ends_with_a_message(tmp_path: Path) -> None:
    """5000 pages (328 MB) exceed the runtime's heap: a clear fatal error, not a crash."""
    wat = tmp_path / "big.wat"
    wat.write_text('(module (memory (export "memory") 5000) (func (export "_start")))')
    build_app_image(wat, tmp_path, hostcheck=True)
    done = subprocess.run(
        [tmp_path / "hostcheck.elf"], env={}, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 125
    assert done.stderr == b"keep: aborted (out of memory for the module?)\n"
