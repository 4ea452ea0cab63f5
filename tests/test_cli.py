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


def test_check_texts_are_made_when_read() -> None:
    """A check keeps its values; a function is called only when the text is read, and every
    text (line, properties, JSON) is a string, whatever was given."""
    calls: list[str] = []

    def expected() -> str:
        calls.append("expected")
        return "one of [2, 4]"

    checks = Checklist("lazy")
    check = checks.add("n", False, expected=expected, found=3, detail=b"x".hex)
    assert calls == []
    assert check.line() == "✗ n: expected one of [2, 4], found 3 (78)"
    assert calls == ["expected"]
    assert (check.expected, check.found, check.detail) == ("one of [2, 4]", "3", "78")
    assert check.as_dict() == {
        "name": "n",
        "ok": False,
        "expected": "one of [2, 4]",
        "found": "3",
        "detail": "78",
    }
    assert '"found": "3"' in checks.to_json()
