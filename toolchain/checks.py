"""Check lists: the ✔/✗ lines every verifying command prints, and their JSON form.

A ``Check`` names one property, what was expected and what was found. Commands collect them in a
``Checklist`` so that the text output, the JSON output and the exit status come from one place.
A *caveat* is what a VALID verdict did not cover (e.g. revocation not checked): it is printed on
the verdict line itself, so it cannot be lost among the checks.

Texts are formatted when they are read, not when a check is added: ``expected``, ``found`` and
``detail`` take a string, any value (its ``str()``) or a ``Callable[[], str]`` (called), kept as
given and turned into text only by ``line``, ``as_dict`` or the properties. A verification adds
about thirty checks and most are never printed (``keep run``, a service), so a passing check
costs no formatting. The values must not change after ``add``: every caller passes immutable
ones (frozen reports, policies, certificate facts) or closures over them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

OK_MARK = "✔"
FAIL_MARK = "✗"
SKIP_MARK = "-"


def text(value: object) -> str:
    """A check's text from what was given: a callable is called, anything else is ``str()``."""
    if value.__class__ is str:
        return value
    return value() if callable(value) else str(value)


class Check(NamedTuple):
    """One verified property. Immutable; a tuple, not a frozen dataclass, because it is made
    thirty times per verified report (a tuple is made in a third of the time).

    ``expected_value``, ``found_value`` and ``detail_value`` are what ``Checklist.add`` was
    given; ``expected``, ``found`` and ``detail`` are their text (see the module).
    """

    name: str
    ok: bool | None  # None: not applicable / skipped (always said, never silent)
    expected_value: object = ""
    found_value: object = ""
    detail_value: object = ""

    @property
    def expected(self) -> str:
        return text(self.expected_value)

    @property
    def found(self) -> str:
        return text(self.found_value)

    @property
    def detail(self) -> str:
        return text(self.detail_value)

    def line(self) -> str:
        mark = SKIP_MARK if self.ok is None else (OK_MARK if self.ok else FAIL_MARK)
        line = f"{mark} {self.name}"
        found = self.found
        if self.ok is False:
            line += f": expected {self.expected}, found {found}"
        elif found and self.ok:
            line += f": {found}"
        detail = self.detail
        if detail:
            line += f" ({detail})"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "expected": self.expected,
            "found": self.found,
            "detail": self.detail,
        }


_new_check = tuple.__new__

#: What ``Checklist.add`` takes for a text: a string, a value (its ``str()``), or a function that
#: formats it when the check is read.
Text = object | Callable[[], str]


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
        expected: Text = "",
        found: Text = "",
        detail: Text = "",
    ) -> Check:
        # tuple.__new__ directly: NamedTuple's own __new__ is a Python function around it.
        check = _new_check(Check, (name, ok, expected, found, detail))
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
