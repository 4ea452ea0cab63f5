"""Shared fixtures. ``../shared/`` (test data beside the clone) is read by tests only."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"test data directory {SHARED} is missing (expected beside the clone)")
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep tests away from the user's real state and cache directories."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("KEEPSTACK_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("KEEPSTACK_CACHE_DIR", str(base / "cache"))
