"""Mutation testing of the trusted core: does some test fail when a check is changed?

A small runner of our own (mutmut and cosmic-ray rewrite the whole tree or need a database and a
config per module; this one targets modules by dotted name and runs only the tests that import
them). Each mutant is one AST change spliced into a throw-away copy of ``toolchain/``, run with
``pytest -x`` on the test files that import the mutated module (or its package), with a timeout:

- compare: ``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``in`` <-> ``not in``,
  ``is`` <-> ``is not`` (one operator of a chain at a time)
- boolop: ``and`` <-> ``or``;  not: ``not x`` -> ``x``
- const: an integer ``n`` -> ``n + 1`` and ``n - 1`` (slice bounds and defaults included);
  ``True`` <-> ``False``
- binop: ``+`` <-> ``-``, ``&`` <-> ``|``, ``<<`` <-> ``>>``
- pass: a check's verdict forced to pass (the second argument of ``checks.add(name, ok, ...)``
  replaced by ``True``)
- delete: a call statement, ``raise`` or ``continue``/``break`` replaced by ``pass``

Not mutated: docstrings, string constants and f-strings, the message arguments of checks
(``expected=``, ``found=``, ``detail=``) and errors (``hint=``, the text of a raised error),
annotations, and lines marked ``# pragma: no mutate``. Texts are what a person reads, not what
decides; mutating them would only add equivalent mutants.

A mutant that survives is either killed by a new test or listed, with the reason it cannot change
a verdict, in ``tests/MUTATION.md`` under "Equivalent mutants" by its id (a hash of the module,
function, original and mutated code, so it stays valid when lines move).

Usage: ``python tests/mutation/mutate.py [--jobs N] [--sample N] [TARGET ...]`` where a TARGET is
a dotted module or package (``toolchain.verify``: every module in it). Exit status 0 when every
module reaches ``--min-score`` (default 0: report only), 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "toolchain"
TESTS = ROOT / "tests"
LEDGER = TESTS / "MUTATION.md"

# The trusted core: what decides whether a measurement, report, certificate or signed statement is
# accepted. Targets are packages or modules by dotted name, so a restructure only edits this list.
TRUSTED_CORE = (
    "toolchain.snp.digest",  # launch digest
    "toolchain.measure.plan",  # the launch plan the digest is computed from
    "toolchain.snp.report",  # report parsing
    "toolchain.snp.tcb",
    "toolchain.snp.policy",
    "toolchain.snp.certs",  # certificate chains, CRLs, VCEK extensions
    "toolchain.verify",  # report verification, policy, roots, references
    "toolchain.sign.dsse",  # DSSE envelopes
    "toolchain.sign.strict_json",  # the JSON parser under envelopes and statements
    "toolchain.sign.intoto",  # in-toto statements
    "toolchain.sign.references",  # reference verification and the trust decision
    "toolchain.sign.trust",
    "toolchain.snp.guest_msg",  # the guest-message crypto (keys, AES-GCM, sequence numbers)
    "toolchain.snp.secrets",  # the secrets page the guest-message keys come from
    "toolchain.release.source",  # the signed digest of a release's source
)
NOT_YET: frozenset[str] = frozenset()  # modules listed ahead of being written; skipped till then

_CMP_SWAP: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE,),
    ast.LtE: (ast.Lt,),
    ast.Gt: (ast.GtE,),
    ast.GtE: (ast.Gt,),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
_MESSAGE_KEYWORDS = frozenset({"expected", "found", "detail", "hint"})
_NO_MUTATE = "pragma: no mutate"


@dataclass(frozen=True)
class Mutant:
    """One change: where, what it was, what it becomes, and the whole mutated source."""

    module: str
    function: str
    line: int
    operator: str
    before: str
    after: str
    source: str
    occurrence: int = 0  # the same change made earlier in the same function this many times

    @property
    def id(self) -> str:
        key = f"{self.module}\0{self.function}\0{self.operator}\0{self.before}\0{self.after}"
        key += f"\0{self.occurrence}" if self.occurrence else ""
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    def describe(self) -> str:
        return (
            f"{self.id}  {self.module}:{self.line} ({self.function}) "
            f"{self.operator}: {self.before}  ->  {self.after}"
        )


# ---- finding mutants -----------------------------------------------------------------------------


def _offsets(source: str) -> list[int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


class _Finder(ast.NodeVisitor):
    """Collects (node, replacement, operator) for every mutable node outside texts."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.found: list[tuple[ast.AST, str, str, str]] = []  # node, operator, new code, function
        self.scope: list[str] = []

    # -- scopes and skipped regions --

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        if not isinstance(node, ast.ClassDef):
            for default in (*node.args.defaults, *node.args.kw_defaults):
                if default is not None:
                    self.visit(default)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _function  # noqa: N815

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # f-strings are texts

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):
            return  # docstrings
        if isinstance(node.value, ast.Call):
            self._add(node, "delete", "pass")
        self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        self._add(node, "delete", "pass")  # the raised error's text and arguments are messages

    def visit_Continue(self, node: ast.Continue) -> None:
        self._add(node, "delete", "pass")

    def visit_Break(self, node: ast.Break) -> None:
        self._add(node, "delete", "pass")

    def visit_Assign(self, node: ast.Assign) -> None:
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if "__all__" in names:
            return
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "add"
            and len(node.args) >= 2
            and not isinstance(node.args[1], ast.Constant)
        ):
            forced = copy.copy(node)
            forced.args = [node.args[0], ast.Constant(True), *node.args[2:]]
            self._add(node, "pass", ast.unparse(forced))
        self.visit(func)
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            if kw.arg not in _MESSAGE_KEYWORDS:
                self.visit(kw.value)

    # -- operators --

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            for new in _CMP_SWAP.get(type(op), ()):
                mutated = copy.copy(node)
                mutated.ops = [*node.ops[:i], new(), *node.ops[i + 1 :]]
                self._add(node, "compare", ast.unparse(mutated))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        mutated = copy.copy(node)
        mutated.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, "boolop", ast.unparse(mutated))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._add(node, "not", ast.unparse(node.operand))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        new = _BIN_SWAP.get(type(node.op))
        texts = (ast.JoinedStr,)
        is_text = any(
            isinstance(side, texts)
            or (isinstance(side, ast.Constant) and isinstance(side.value, str))
            for side in (node.left, node.right)
        )
        if new is not None and not is_text:
            mutated = copy.copy(node)
            mutated.op = new()
            self._add(node, "binop", ast.unparse(mutated))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, "const", repr(not value))
        elif isinstance(value, int):
            self._add(node, "const", repr(value + 1))
            self._add(node, "const", repr(value - 1))

    def _add(self, node: ast.AST, operator: str, new: str) -> None:
        line = getattr(node, "lineno", 0)
        if line and _NO_MUTATE in self.lines[line - 1]:
            return
        self.found.append((node, operator, new, ".".join(self.scope) or "<module>"))


def find_mutants(module: str, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    finder = _Finder(source)
    finder.visit(tree)
    starts = _offsets(source)
    mutants = []
    seen: dict[tuple[str, ...], int] = {}
    for node, operator, new, function in finder.found:
        begin = starts[node.lineno - 1] + _char_col(source, starts, node.lineno, node.col_offset)
        end_line, end_col = node.end_lineno or node.lineno, node.end_col_offset or 0
        end = starts[end_line - 1] + _char_col(source, starts, end_line, end_col)
        before = source[begin:end]
        wrapped = new if isinstance(node, ast.stmt) else f"({new})"
        mutated = source[:begin] + wrapped + source[end:]
        try:
            compile(mutated, module, "exec")
        except SyntaxError:
            continue
        before = _one_line(before)
        count = seen[function, operator, before, new] = (
            seen.get((function, operator, before, new), -1) + 1
        )
        mutants.append(Mutant(module, function, node.lineno, operator, before, new, mutated, count))
    return mutants


def _char_col(source: str, starts: list[int], line: int, byte_col: int) -> int:
    # AST columns count UTF-8 bytes; the source string counts characters.
    text = source[starts[line - 1] : starts[line]]
    return len(text.encode()[:byte_col].decode(errors="ignore"))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---- targets and their tests ---------------------------------------------------------------------


def module_path(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _imports(path: Path) -> set[str]:
    """Dotted names a file imports (``from a.b import c`` gives a.b and a.b.c), lazy ones too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def importers(module: str) -> list[str]:
    """The package's modules that import ``module`` (a check may be reached only through them)."""
    found = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if name != module and module in _imports(path):
            found.append(name)
    return found


def expand(targets: list[str]) -> list[str]:
    """Dotted targets to module names: a package means each of its modules."""
    modules: list[str] = []
    for target in targets:
        package_dir = ROOT.joinpath(*target.split("."))
        if package_dir.is_dir():
            for path in sorted(package_dir.rglob("*.py")):
                rel = path.relative_to(ROOT).with_suffix("")
                parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
                modules.append(".".join(parts))
        elif module_path(target).is_file():
            modules.append(target)
        elif target in NOT_YET:
            print(f"  (skipped {target}: not written yet)")
        else:
            # A moved module must not drop out of the trusted core unnoticed: update the list.
            raise SystemExit(f"no module or package {target} (moved? update TRUSTED_CORE)")
    return modules


def tests_for(module: str) -> list[Path]:
    """Test files that import ``module``, or a module that imports it, or a re-exporting package."""
    chosen: set[Path] = set()
    for name in (module, *importers(module)):
        chosen.update(_direct_tests(name))
    return sorted(chosen)


def _direct_tests(module: str) -> list[Path]:
    parent, _, name = module.rpartition(".")
    if parent == "keep.cli":  # a subcommand: the tests that run it by name
        table = (ROOT / "keep" / "cli" / "__init__.py").read_text(encoding="utf-8")
        commands = re.findall(rf'"([\w-]+)": \("{re.escape(name)}",', table)
        patterns_cli = [rf'"{re.escape(c)}"' for c in commands]
        return [
            p
            for p in sorted(TESTS.glob("test_*.py"))
            if any(re.search(q, p.read_text(encoding="utf-8")) for q in patterns_cli)
        ]
    patterns = [
        rf"\b{re.escape(module)}\b",
        rf"from {re.escape(parent)} import [^\n]*\b{re.escape(name)}\b",
    ]
    init = ROOT.joinpath(*parent.split(".")) / "__init__.py"
    if init.is_file() and re.search(rf"from \S*{re.escape(name)} import", init.read_text()):
        patterns.append(rf"from {re.escape(parent)} import")
    chosen = []
    for path in sorted(TESTS.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        if any(re.search(p, text) for p in patterns):
            chosen.append(path)
    return chosen


def equivalents() -> dict[str, str]:
    """Ids listed in tests/MUTATION.md as equivalent, with their reason."""
    listed: dict[str, str] = {}
    if not LEDGER.is_file():
        return listed
    section = LEDGER.read_text(encoding="utf-8").split("## Equivalent mutants", 1)[-1]
    for match in re.finditer(r"^[-*] `([0-9a-f]{10})`[^\n]*?: ([^\n]*)$", section, re.MULTILINE):
        listed[match.group(1)] = match.group(2)
    return listed


# ---- running -------------------------------------------------------------------------------------


class Workspace:
    """A throw-away copy of the package; one mutant at a time is written into it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="keepstack-mutant-"))
        shutil.copytree(
            ROOT / PACKAGE, self.dir / PACKAGE, ignore=shutil.ignore_patterns("__pycache__")
        )
        # The rest of the checkout by link: some code finds its sources next to the package.
        for entry in ROOT.iterdir():
            if entry.name not in {PACKAGE, ".git", ".nox"}:
                (self.dir / entry.name).symlink_to(entry)

    def run(self, mutant: Mutant | None, tests: list[Path], timeout: float, marks: str) -> str:
        target = self.dir / module_path(mutant.module).relative_to(ROOT) if mutant else None
        original = target.read_text(encoding="utf-8") if target else ""
        if target and mutant:
            target.write_text(mutant.source, encoding="utf-8")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.dir), str(TESTS)]),  # for subprocesses too
            "PYTHONDONTWRITEBYTECODE": "1",  # a stale .pyc could hide the mutant
            "PYTHONHASHSEED": "0",
        }
        # The copy goes first on sys.path (ahead of the editable install and the checkout); the
        # tests run from the checkout, as they expect.
        boot = f"import sys; sys.path.insert(0, {str(self.dir)!r}); import pytest; "
        boot += "sys.exit(pytest.main(sys.argv[1:]))"
        cmd = [sys.executable, "-c", boot, "-x", "-q", "-p", "no:cacheprovider"]
        cmd += ["-m", marks, "--no-header", "-o", "addopts=", *map(str, tests)]
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, timeout=timeout, check=False
            )
            verdict = "survived" if done.returncode == 0 else "killed"
            if done.returncode not in {0, 1}:
                verdict = "killed" if mutant else f"error {done.returncode}"
            if mutant is None and done.returncode != 0:
                verdict = "baseline failed:\n" + done.stdout.decode(errors="replace")[-3000:]
        except subprocess.TimeoutExpired:
            verdict = "killed"  # a mutant that hangs is caught (by the timeout)
        finally:
            if target:
                target.write_text(original, encoding="utf-8")
        return verdict

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Result:
    module: str
    total: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: tuple[Mutant, ...] = ()

    @property
    def score(self) -> float:
        return 100.0 * (self.killed + self.equivalent) / self.total if self.total else 100.0


def _mutants_of(module: str, sample: int | None, seed: int) -> list[Mutant]:
    mutants = find_mutants(module, module_path(module).read_text(encoding="utf-8"))
    if sample is not None and len(mutants) > sample:
        mutants = sorted(random.Random(f"{seed}:{module}").sample(mutants, sample), key=_order)
    return mutants


def _order(m: Mutant) -> tuple[int, str]:
    return m.line, m.id


def mutate_module(module: str, args: argparse.Namespace, pool: list[Workspace]) -> Result:
    tests = [ROOT / t for t in args.tests] if args.tests else tests_for(module)
    tests = [t for t in tests if not any(t.match(p) for p in args.skip_tests)]
    result = Result(module)
    if not tests:
        print(f"{module}: no test file imports it; every mutant counts as surviving")
    mutants = _mutants_of(module, args.sample, args.seed)
    if args.only:
        mutants = [m for m in mutants if m.id in args.only]
    result.total = len(mutants)
    listed = equivalents()
    names = ", ".join(t.name for t in tests)
    start = time.monotonic()
    baseline = pool[0].run(None, tests, args.timeout_floor * 10, args.marks) if tests else ""
    base_seconds = time.monotonic() - start
    if baseline.startswith(("baseline failed", "error")):
        raise SystemExit(f"{module}: the tests fail without a mutant ({names}):\n{baseline}")
    timeout = max(args.timeout_floor, 4 * base_seconds)
    print(f"{module}: {len(mutants)} mutants, tests {names} ({base_seconds:.1f}s each)", flush=True)

    def one(index: int, mutant: Mutant) -> tuple[Mutant, str]:
        if not tests:
            return mutant, "survived"
        return mutant, pool[index % len(pool)].run(mutant, tests, timeout, args.marks)

    survivors = []
    with ThreadPoolExecutor(max_workers=len(pool)) as executor:
        batches = _batches(list(enumerate(mutants)), len(pool))
        done = 0
        for batch in batches:
            for mutant, verdict in executor.map(lambda pair: one(*pair), batch):
                done += 1
                if done % 25 == 0:
                    print(f"  {done}/{len(mutants)} run, {len(survivors)} survived", flush=True)
                if verdict == "killed":
                    result.killed += 1
                elif mutant.id in listed:
                    result.equivalent += 1
                else:
                    survivors.append(mutant)
                    print(f"  survived {mutant.describe()}", flush=True)
    result.survivors = tuple(survivors)
    return result


def _batches(items: list[tuple[int, Mutant]], size: int) -> Iterator[list[tuple[int, Mutant]]]:
    # One mutant per workspace at a time: workspace i only ever runs indices i, i+size, ...
    for i in range(0, len(items), size):
        yield items[i : i + size]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="dotted modules or packages (default: core)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="mutants run at once")
    parser.add_argument("--sample", type=int, help="at most this many mutants per module")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--only", nargs="+", default=[], help="run only these mutant ids")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("--tests", nargs="+", default=[], help="test files (default: chosen)")
    parser.add_argument(
        "--skip-tests", nargs="+", default=[], help="leave out chosen test files (glob patterns)"
    )
    parser.add_argument("--timeout-floor", type=float, default=30.0, help="seconds per mutant")
    parser.add_argument("--marks", default="not kvm and not slow", help="pytest -m expression")
    parser.add_argument("--min-score", type=float, default=0.0, help="fail below this percent")
    args = parser.parse_args(argv)
    modules = expand(args.targets or list(TRUSTED_CORE))
    if args.list:
        for module in modules:
            for mutant in _mutants_of(module, args.sample, args.seed):
                print(mutant.describe())
        return 0
    pool = [Workspace() for _ in range(max(1, args.jobs))]
    try:
        results = [mutate_module(module, args, pool) for module in modules]
    finally:
        for workspace in pool:
            workspace.close()
    _report(results)
    return 0 if all(r.score >= args.min_score for r in results) else 1


def _report(results: list[Result]) -> None:
    print("\n| module | mutants | killed | equivalent | survived | score |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.module} | {r.total} | {r.killed} | {r.equivalent} | {len(r.survivors)} "
            f"| {r.score:.0f}% |"
        )
    survivors = [m for r in results for m in r.survivors]
    if survivors:
        print(f"\n{len(survivors)} surviving mutants (kill them, or list them in {LEDGER.name}):")
        for mutant in survivors:
            print(f"  {mutant.describe()}")


if __name__ == "__main__":
    raise SystemExit(main())
