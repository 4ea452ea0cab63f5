"""Shared fixtures. Test data lives in ``tests/data/`` (``testdata.py``), inside the clone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testdata import DATA


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


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
