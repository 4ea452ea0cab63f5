"""Shared fixtures. ``../shared/`` (test data beside the clone) is read by tests only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"test data directory {SHARED} is missing (expected beside the clone)")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep tests away from the user's real state and cache directories.

    Session-scoped, so it is in force before any module-scoped fixture builds something (a
    function-scoped one would come too late for them, and they would use the real cache).
    """
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEPSTACK_STATE_DIR", str(base / "state"))
        patch.setenv("KEEPSTACK_CACHE_DIR", str(base / "cache"))
        yield
