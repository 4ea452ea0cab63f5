"""The per-user state directory (development keys, the simulated AMD root, build cache)."""

from __future__ import annotations

import os
from pathlib import Path

from toolchain.errors import PlatformError


def state_dir(*parts: str) -> Path:
    """``$KEEPSTACK_STATE_DIR`` or ``$XDG_STATE_HOME/keepstack`` (default ``~/.local/state``).

    Created with mode 0700: it holds private keys.
    """
    base = os.environ.get("KEEPSTACK_STATE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        root = Path(xdg) / "keepstack"
    path = root.joinpath(*parts)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PlatformError(f"cannot create state directory {path}: {exc.strerror}") from exc
    return path


def cache_dir(*parts: str) -> Path:
    """``$KEEPSTACK_CACHE_DIR`` or ``$XDG_CACHE_HOME/keepstack``: rebuildable data only."""
    base = os.environ.get("KEEPSTACK_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "keepstack"
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlatformError(f"cannot create cache directory {path}: {exc.strerror}") from exc
    return path
