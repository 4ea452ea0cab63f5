"""``Record``: immutable value classes that validate themselves and cost nothing to define.

A frozen dataclass generates its methods with ``exec`` when its module is imported, and
``dataclasses`` imports ``inspect``: for ``VcpuState``'s ~100 fields and the other classes that
``keep measure-guest`` needs, that was a third of the command's whole run. A ``Record`` is a
``NamedTuple`` (its fields declared in a base class) with this class first among its bases::

    class _PointFields(NamedTuple):
        x: int = 0

    class Point(Record, _PointFields):
        __slots__ = ()

        def _validate(self) -> None:
            if self.x < 0:
                raise InputError(...)

Making one — by keywords, positionally, or as a changed copy with ``_replace`` — runs
``_validate``; ``_fields`` names the fields in order, ``_asdict`` maps them to their values.
"""

from __future__ import annotations

from typing import Any, Self


class Record:
    """The validating half of a record class (see the module)."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        made = super().__new__(cls, *args, **kwargs)
        made._validate()
        return made

    def _validate(self) -> None:
        """Raise ``InputError`` naming the first bad field (nothing to check by default)."""

    def _replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like a new record."""
        return type(self)(**{**self._asdict(), **changes})  # type: ignore[attr-defined]
