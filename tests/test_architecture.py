"""The tiers of docs/ARCHITECTURE.md, enforced: each layer imports only the layers below it.

    4  keep                      the CLI: parses arguments, calls one library function per command
    3  runtime.run               the runner: build-on-demand, boot, attest, run (host, untrusted)
    2  runtime.vmm, .firmware    the VMM and the firmware backends (host, untrusted)
    1b toolchain.image, .release building keeps and releases (needs a compiler when it runs)
    1a toolchain (the rest)      the trusted core: formats, launch plan, digests, signing,
                                 verification: no KVM, no compiler, no runtime

Every import counts, including the lazy ones inside functions (``PLC0415`` allows them for
start-up time; they are still dependencies).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Module prefix → tier. The longest matching prefix wins.
TIERS: dict[str, int] = {
    "toolchain": 1,
    "toolchain.image": 2,
    "toolchain.release": 2,
    "runtime": 3,
    "runtime.vmm": 3,
    "runtime.firmware": 3,
    "runtime.run": 4,
    "keep": 5,
}
TIER_NAMES = {
    1: "trusted core",
    2: "image/release builders",
    3: "VMM and firmware",
    4: "runner",
    5: "CLI",
}


def _tier(module: str) -> int | None:
    matches = [p for p in TIERS if module == p or module.startswith(p + ".")]
    return TIERS[max(matches, key=len)] if matches else None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, lazy ones included."""
    source = path.read_text(encoding="utf-8")
    return _imports_of(source, _module_name(path), is_package=path.name == "__init__.py")


def _imports_of(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                tail = [node.module] if node.module else []
                found.append((node.lineno, ".".join([*base, *tail])))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _python_files() -> list[Path]:
    return sorted(p for top in ("keep", "toolchain", "runtime") for p in (ROOT / top).rglob("*.py"))


def test_every_module_has_a_tier() -> None:
    untiered = [_module_name(p) for p in _python_files() if _tier(_module_name(p)) is None]
    assert untiered == []


def test_no_layer_imports_a_layer_above_it() -> None:
    upward = []
    for path in _python_files():
        mine = _tier(_module_name(path))
        assert mine is not None
        for line, module in _imports(path):
            theirs = _tier(module)
            if theirs is not None and theirs > mine:
                upward.append(
                    f"{path.relative_to(ROOT)}:{line} ({TIER_NAMES[mine]}) imports {module} "
                    f"({TIER_NAMES[theirs]})"
                )
    assert upward == [], "\n".join(upward)


def test_the_check_sees_upward_imports_lazy_and_relative() -> None:
    """The rule above is not vacuous: a lazy import and a relative one are both resolved."""
    source = "from ..run import runner\ndef f():\n    import keep.cli\n"
    found = _imports_of(source, "runtime.vmm.probe", is_package=False)
    assert [(_tier(m), m) for _, m in found] == [(4, "runtime.run"), (5, "keep.cli")]


def test_the_trusted_core_imports_without_the_host_runtime_or_a_compiler() -> None:
    """Every core module imports in a fresh interpreter where ``runtime``, ``keep``, the
    compiler (ziglang) and the wasm tooling cannot be imported at all."""
    core = [
        _module_name(p)
        for p in _python_files()
        if _tier(_module_name(p)) == 1 and not p.name.startswith("__main__")
    ]
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, sys
        BLOCKED = ("runtime", "keep", "ziglang", "wabt", "wasmtime", "elftools")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"the trusted core imported {name}")
                return None

        sys.meta_path.insert(0, Block())
        for name in sys.argv[1:]:
            importlib.import_module(name)
        print(len(sys.argv) - 1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *core],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(core) > 40


@pytest.mark.parametrize("folder", ["runtime/guest/ukernel", "runtime/guest/wasm"])
def test_the_measured_guest_code_holds_no_host_python(folder: str) -> None:
    """The trust boundary is a folder: runtime/guest is measured C, nothing else."""
    python = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py"))
    assert python == []
