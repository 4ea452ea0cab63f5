"""Keepstack toolchain: SNP formats, launch digests, hermetic builds, signing, verification.

``__version__`` is looked up on first use (``importlib.metadata`` alone costs tens of
milliseconds, which commands like ``keep measure-guest`` must not pay at start-up).
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("keepstack")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
