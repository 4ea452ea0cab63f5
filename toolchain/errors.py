"""The project's exceptions: one base class that knows how to explain itself to a user.

Two families, as the CLI's exit codes tell them apart:

* ``EvidenceError`` — the evidence is bad (a report, signature, certificate or digest does not
  check out). The input was usable; the answer is "no". Exit status 1.
* ``InputError`` — the input cannot be used at all (truncated file, malformed ELF, unknown CPU
  model, bad option value). Exit status 2.
* ``PlatformError`` — this machine or environment is broken or lacks something (no /dev/kvm,
  missing compiler, unwritable state directory). Exit status 3.

Nothing else may escape a public API on bad input: parsers turn every failure into one of these.
"""

from __future__ import annotations


class KeepError(Exception):
    """Base class of every error Keepstack raises on purpose."""

    exit_code = 2
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def explain(self) -> str:
        """One line (plus an optional hint line) suitable for a terminal."""
        text = f"{self.kind}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(KeepError):
    """The input is unusable: malformed, truncated, out of range, or of the wrong kind."""

    exit_code = 2
    kind = "unusable input"


class EvidenceError(KeepError):
    """The evidence was readable but does not prove what it claims."""

    exit_code = 1
    kind = "verification failed"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        expected: object = None,
        found: object = None,
        hint: str | None = None,
    ) -> None:
        if field is not None:
            message = f"{message} [{field}: expected {expected!s}, found {found!s}]"
        super().__init__(message, hint=hint)
        self.field = field
        self.expected = expected
        self.found = found


class PlatformError(KeepError):
    """The environment cannot do what was asked (missing device, tool, permission)."""

    exit_code = 3
    kind = "platform error"
