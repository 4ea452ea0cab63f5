"""JSON parsing that refuses what different parsers read differently.

Duplicate object keys (one parser keeps the first, another the last) and the non-standard
constants NaN/Infinity would let two verifiers see different content under the same signature.
Nesting too deep for Python's decoder is a ``ValueError`` too, never a ``RecursionError``.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        document[key] = value
    return document


class TooDeepError(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def loads(data: bytes | str) -> Any:
    """``json.loads`` that raises ``ValueError`` (a ``JSONDecodeError`` for syntax) on duplicate
    keys, NaN/Infinity and nesting too deep to decode."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError as exc:
        # The decoder recurses once per level: some thousands of brackets exhaust the stack.
        raise TooDeepError("JSON nested too deeply to decode") from exc
