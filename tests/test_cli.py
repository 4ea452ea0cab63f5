from __future__ import annotations

import subprocess
import sys

import pytest

from keep.cli import main
from toolchain.checks import Checklist
from toolchain.errors import EvidenceError, InputError, PlatformError


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "keep" in out


def test_unknown_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "keep", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("keepstack ")


def test_error_families_have_distinct_exit_codes() -> None:
    assert {EvidenceError.exit_code, InputError.exit_code, PlatformError.exit_code} == {1, 2, 3}
    err = EvidenceError("digest mismatch", field="MEASUREMENT", expected="aa", found="bb")
    assert "MEASUREMENT: expected aa, found bb" in err.explain()


def test_checklist_fails_closed() -> None:
    empty = Checklist("nothing")
    assert not empty.ok
    skipped = Checklist("skipped only")
    skipped.add("x", None, detail="not applicable")
    assert not skipped.ok
    mixed = Checklist("mixed")
    mixed.add("a", True, found="1")
    mixed.add("b", False, expected="1", found="2")
    assert not mixed.ok
    assert "✗ b: expected 1, found 2" in mixed.render()
    good = Checklist("good")
    good.add("a", True)
    assert good.ok
