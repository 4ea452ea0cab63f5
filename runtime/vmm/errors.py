"""The VMM's own error: a keep that misbehaved and was stopped (the VMM itself stays healthy)."""

from __future__ import annotations

from toolchain.errors import KeepError


class GuestError(KeepError):
    """The guest broke the rules (bad hypercall argument, fault, flood, timeout): its keep ends.

    ``call`` and ``argument`` name the hypercall and argument at fault where there is one.
    """

    exit_code = 1
    kind = "keep stopped"

    def __init__(
        self,
        message: str,
        *,
        call: str | None = None,
        argument: str | None = None,
        hint: str | None = None,
    ) -> None:
        if call is not None:
            where = call if argument is None else f"{call}({argument})"
            message = f"{where}: {message}"
        super().__init__(message, hint=hint)
        self.call = call
        self.argument = argument


class KeepTimeoutError(GuestError):
    """The keep ran past its time limit. Exit status 124, as ``timeout(1)`` uses."""

    exit_code = 124

    @classmethod
    def after(cls, seconds: float) -> KeepTimeoutError:
        """The one message for a time limit, on every backend."""
        return cls(
            f"the keep ran past its time limit of {seconds:g} s",
            hint="raise --timeout if the application needs longer",
        )
