"""Check lists: the ✔/✗ lines every verifying command prints, and their JSON form.

A ``Check`` names one property, what was expected and what was found. Commands collect them in a
``Checklist`` so that the text output, the JSON output and the exit status come from one place.
A *caveat* is what a VALID verdict did not cover (e.g. revocation not checked): it is printed on
the verdict line itself, so it cannot be lost among the checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OK_MARK = "✔"
FAIL_MARK = "✗"
SKIP_MARK = "-"


@dataclass(frozen=True)
class Check:
    """One verified property."""

    name: str
    ok: bool | None  # None: not applicable / skipped (always said, never silent)
    expected: str = ""
    found: str = ""
    detail: str = ""

    def line(self) -> str:
        mark = SKIP_MARK if self.ok is None else (OK_MARK if self.ok else FAIL_MARK)
        text = f"{mark} {self.name}"
        if self.ok is False:
            text += f": expected {self.expected}, found {self.found}"
        elif self.found and self.ok:
            text += f": {self.found}"
        if self.detail:
            text += f" ({self.detail})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "expected": self.expected,
            "found": self.found,
            "detail": self.detail,
        }


@dataclass
class Checklist:
    """An ordered list of checks; it passes only if no check failed and at least one passed."""

    title: str
    checks: list[Check] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        ok: bool | None,
        *,
        expected: object = "",
        found: object = "",
        detail: str = "",
    ) -> Check:
        check = Check(name, ok, str(expected), str(found), detail)
        self.checks.append(check)
        return check

    def caveat(self, text: str) -> None:
        """Something the verdict did not cover, said on the verdict line."""
        if text not in self.caveats:
            self.caveats.append(text)

    def extend(self, other: Checklist) -> None:
        self.checks.extend(other.checks)
        for text in other.caveats:
            self.caveat(text)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def ok(self) -> bool:
        # Fail closed: an empty list, or one with only skipped checks, proves nothing.
        return not self.failures and any(c.ok for c in self.checks)

    def render(self, *, verdict: bool = True) -> str:
        """The title, a line per check and (unless ``verdict`` is False) VALID or INVALID, with
        the caveats."""
        lines = [self.title, *(f"  {c.line()}" for c in self.checks)]
        if verdict:
            caveats = f" ({'; '.join(self.caveats)})" if self.caveats else ""
            lines.append(f"  => {'VALID' if self.ok else 'INVALID'}{caveats}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "ok": self.ok,
            "caveats": list(self.caveats),
            "checks": [c.as_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)
