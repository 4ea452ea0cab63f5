"""No Python function in ``toolchain/`` or ``runtime/`` is longer than 80 lines (issue 12).

A function is measured from its ``def`` line to its last line, docstring and comments included;
a method or a nested function is measured on its own (and counts in its parent's length too).
A function this long does more than one thing: split it by concern, as ``verify_envelope``,
``build_app_image`` and ``run_wasi`` were. The CLI (``keep/``) is outside the count: its
``configure`` functions are lists of argparse options, and each command is one call into
these packages.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("toolchain", "runtime", "keep")
LIMIT = 80


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function and method in ``source``, by qualified name (``Class.method``,
    ``outer.inner``)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    assert child.end_lineno is not None
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


@functools.cache
def _all_lengths() -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            for name, lines in function_lengths(path.read_text(encoding="utf-8")).items():
                found[(module, name)] = lines
    return found


def test_the_measure_counts_def_to_last_line_for_functions_methods_and_nested_ones() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT - 1))
    source = (
        f"def fits():\n{body}\n"
        f"async def too_long():\n{body}    return 0\n\n"
        "class Keep:\n"
        f"    def method(self):\n{body.replace('    ', '        ')}\n"
        "def outer():\n    def inner():\n        pass\n    return inner\n"
    )
    lengths = function_lengths(source)
    assert lengths == {
        "fits": LIMIT,
        "too_long": LIMIT + 1,
        "Keep.method": LIMIT,
        "outer": 4,
        "outer.inner": 2,
    }


def test_no_function_in_the_core_the_runtime_or_the_cli_is_longer_than_80_lines() -> None:
    lengths = _all_lengths()
    assert len(lengths) > 500  # the packages were found (a wrong root would pass vacuously)
    too_long = sorted(
        f"{module}:{name} has {lines} lines"
        for (module, name), lines in lengths.items()
        if lines > LIMIT
    )
    assert not too_long, f"split these by concern (at most {LIMIT} lines each): {too_long}"
