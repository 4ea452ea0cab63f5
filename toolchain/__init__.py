"""Keepstack toolchain: SNP formats, launch digests, hermetic builds, signing, verification.

``__version__`` is looked up on first use, in the installed distribution's own metadata
(``toolchain.dist``: its dist-info's ``METADATA``, the file ``importlib.metadata`` reads, read
without importing it, which costs tens of milliseconds that ``keep build`` and
``keep measure-guest`` must not pay). A source tree that was never installed is ``0+unknown``.
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from toolchain.dist import find_dist

    dist = find_dist("keepstack")
    found = dist.version if dist is not None and dist.version else "0+unknown"
    globals()["__version__"] = found
    return found
