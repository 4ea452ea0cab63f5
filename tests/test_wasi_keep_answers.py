"""The WASI layer's own answers where WASI hosts legitimately differ from wasmtime.

Unsupported calls return ENOSYS (52) and never crash; pointers outside linear memory are EFAULT
(21); an unknown clock is EINVAL (28). Run through the hostcheck build (same objects as the keep).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from toolchain.build.app import build_app_image

WAT = Path(__file__).resolve().parent / "wat" / "wasi_enosys.wat"


def _errno_line(*errnos: int) -> bytes:
    return bytes(65 + e for e in errnos) + b"\n"


def test_unsupported_calls_and_bad_pointers(tmp_path: Path) -> None:
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
    enosys, efault, einval = 52, 21, 28
    assert done.stdout == _errno_line(*[enosys] * 6, efault, efault, efault, efault, einval, efault)


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
