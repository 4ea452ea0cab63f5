"""``keep build``: application → every artifact of a keep, reproducibly, into one directory.

``DIR`` receives (and nothing in it varies between builds of the same sources):

* ``app.wasm`` — the validated application module (assembled from ``.wat`` if needed);
* ``ukernel.elf`` — the microkernel (``toolchain.image.ukernel``);
* ``runtime.elf`` — the ring-3 runtime image: wasm2c app + wasm2c runtime + WASI + libc shim;
* ``launch-plan.json`` — the LaunchPlan (every launched page, the vCPU state, the launch digest);
* ``keepstack-<version>-py3-none-any.whl`` — this package, built reproducibly;
* ``provenance.json`` — SLSA provenance v1 over all of the above;
* ``work/`` — intermediate files (generated C, objects), kept for inspection.

A finished build is recorded complete (``toolchain.image.record``: every input's digest → every
output's digest), so ``keep run`` recognises it unchanged without running this pipeline. Files
whose bytes did not change are not rewritten.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputError

if TYPE_CHECKING:
    from toolchain.image.cache import BuildCache
    from toolchain.measure.plan import LaunchPlan

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VCPU_COUNTS = (1, 2, 4)

#: Called after each step with (step name, seconds it took).
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class KeepBuild:
    """Where everything went, and the launch digests (vCPU count → 48 bytes)."""

    out_dir: Path
    artifacts: dict[str, Path]  # file name → path, the top-level outputs
    launch_digests: dict[int, bytes]
    provenance: Path
    #: output file name → SHA-256 (hex), hashed when the build was made or recognised complete
    output_digests: Mapping[str, str] = field(default_factory=dict)

    def snp_launch_digests(self) -> dict[str, dict[int, bytes]]:
        """generation → vCPU count → the ``snp`` launch digest, laid out from this build's plan
        and ELFs (``toolchain.measure.reference.snp_launch_digests``)."""
        from toolchain.measure.plan import PLAN_FILE
        from toolchain.measure.reference import GENERATIONS, snp_launch_digests

        return snp_launch_digests(
            self.artifacts[PLAN_FILE],
            self.artifacts["ukernel.elf"],
            self.artifacts["runtime.elf"],
            vcpu_counts=self.launch_digests,
            generations=GENERATIONS,
        )


def _copy_if_changed(source: Path, destination: Path) -> Path:
    data = source.read_bytes()
    try:
        if destination.read_bytes() == data:
            return destination
    except OSError:
        pass
    tmp = destination.with_name(f".{destination.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(destination)
    return destination


def build_keep(
    app: Path,
    out_dir: Path,
    *,
    vcpu_counts: Sequence[int] = DEFAULT_VCPU_COUNTS,
    progress: Progress | None = None,
    source_root: Path | None = None,
    cache: BuildCache | None = None,
    opt: str = "O2",
    memory: int | None = None,
) -> KeepBuild:
    """Build every artifact of the keep for ``app`` (``.wasm``/``.wat``) into ``out_dir``.

    ``memory`` is the guest RAM in bytes (default: the microkernel's 256 MiB); it is part of the
    launch plan and the measurement, and an application whose initial linear memory does not
    fit the heap it leaves is refused here, before anything runs.

    ``source_root`` is the source tree to build (its ``runtime/`` and ``pyproject.toml``;
    default: the tree beside this package), so a release can be rebuilt from any checkout;
    ``cache`` defaults to the per-user build cache; ``opt`` is the optimisation level of the
    application's generated C (``toolchain.image.app``: ``O1``, ``O2`` or ``Os``).
    """
    # Imported here, not above: ``keep run`` takes ``KeepBuild`` from this module on every run
    # and builds nothing when its build is recorded complete.
    from concurrent.futures import ThreadPoolExecutor

    from toolchain import __version__
    from toolchain.image import record, tools
    from toolchain.image.app import WASM2C_FLAGS, build_app_image, runtime_dir
    from toolchain.image.cache import BuildCache
    from toolchain.image.compile import CPU, describe_flags
    from toolchain.image.provenance import (
        PROVENANCE_FILE,
        Resource,
        provenance_statement,
        source_resources,
        write_provenance,
    )
    from toolchain.image.ukernel import build_ukernel
    from toolchain.image.wheel import build_wheel
    from toolchain.measure.abi import HEADER_PATH, check_header
    from toolchain.measure.keep import DEFAULT_C_BIT, build_plan, snp_plan_of
    from toolchain.measure.plan import PLAN_FILE

    app = Path(app)
    if not app.is_file():
        raise InputError(f"application {app} does not exist")
    if not vcpu_counts:
        raise InputError("at least one vCPU count is needed")
    root = ROOT if source_root is None else Path(source_root).resolve()
    ukernel_dir = root / "runtime" / "guest" / "ukernel"
    if not ukernel_dir.is_dir():
        raise InputError(f"{root} is not a Keepstack source tree (no runtime/guest/ukernel/)")
    if root == ROOT:
        # This tree's guest is served by this tree's VMM: its C header must be the one the
        # Python ABI generates (another tree, rebuilt by ``keep reproduce``, has its own).
        check_header(root / HEADER_PATH)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"

    def step(name: str, started: float) -> None:
        if progress is not None:
            progress(name, time.perf_counter() - started)

    # The inputs as they are before anything is read: a file changed during the build is then
    # a changed input next time, never recorded as what these outputs were built from.
    build_cache = cache if cache is not None else BuildCache()
    recorded_inputs = record.current_inputs(app, root) if build_cache.enabled else None

    started = time.perf_counter()
    versions = tools.toolchain_versions()
    step("toolchain", started)

    # The microkernel does not depend on the application: it builds while the runtime image
    # does (their compiles share compile.jobs() process slots).
    def timed_ukernel() -> tuple[Path, float]:
        begun = time.perf_counter()
        built = build_ukernel(work / "ukernel", source_dir=ukernel_dir, cache=cache)
        return built, begun

    with ThreadPoolExecutor(max_workers=1) as pool:
        ukernel_future = pool.submit(timed_ukernel)
        started = time.perf_counter()
        image = build_app_image(app, work / "app", cache=cache, source_root=root, opt=opt)
        runtime_elf = _copy_if_changed(image.elf.path, out_dir / "runtime.elf")
        app_wasm = _copy_if_changed(image.wasm.path, out_dir / "app.wasm")
        step("runtime image", started)
        built_ukernel, started = ukernel_future.result()
    ukernel_elf = _copy_if_changed(built_ukernel, out_dir / "ukernel.elf")
    step("microkernel", started)

    started = time.perf_counter()
    plan = build_plan(ukernel_elf, runtime_elf, vcpu_count=min(vcpu_counts), memory=memory)
    check_app_memory(app_wasm.read_bytes(), plan)
    plan_path = out_dir / PLAN_FILE
    plan_text = plan.to_json().encode()
    if not plan_path.is_file() or plan_path.read_bytes() != plan_text:
        plan_path.write_bytes(plan_text)
    digests = plan.launch_digests(vcpu_counts)
    snp_digests = snp_plan_of(plan, ukernel_elf, runtime_elf).launch_digests(vcpu_counts)
    step("launch plan", started)

    started = time.perf_counter()
    wheel = build_wheel(out_dir, root)
    step("wheel", started)

    started = time.perf_counter()
    artifacts = {p.name: p for p in (app_wasm, ukernel_elf, runtime_elf, plan_path, wheel.path)}
    runtime_info = tools.wasm2c_runtime()
    inputs = [
        Resource.of_file(f"application/{app.name}", app),
        *source_resources(root, runtime_dir(root), (".c", ".h", ".ld")),
        *source_resources(root, ukernel_dir, (".c", ".S", ".h", ".ld")),
        *[
            Resource.of_file(f"wasm2c-runtime/{name}", runtime_info.directory / name, sha384=False)
            for name in tools.WASM2C_RUNTIME_FILES
        ],
        Resource("tool/zig", {"sha256": tools.zig().sha256}),
        Resource("tool/wasm2c", {"sha256": tools.wasm2c().sha256}),
    ]
    statement = provenance_statement(
        outputs=[Resource.of_file(name, path) for name, path in artifacts.items()],
        inputs=inputs,
        external_parameters={
            "application": app.name,
            "vcpu_counts": sorted(set(vcpu_counts)),
            **({"memory": plan.ram_size} if memory is not None else {}),
        },
        internal_parameters={
            "toolchain": versions,
            "cpu": CPU,
            "target_flags": {k: list(v) for k, v in describe_flags().items()},
            "wasm2c_flags": list(WASM2C_FLAGS),
            # Only when not -O2, so the provenance of every build before the option is unchanged.
            **({"app_c_flags": list(image.app_flags)} if image.app_flags else {}),
        },
        builder_version={"keepstack": __version__, "keepstack-wheel": f"sha256:{wheel.sha256}"},
        byproducts=[
            *(
                Resource(f"launch-digest/vcpus={count}", {"sha384": digest.hex()})
                for count, digest in digests.items()
            ),
            *(
                Resource(f"launch-digest/snp/c-bit={DEFAULT_C_BIT}/vcpus={n}", {"sha384": d.hex()})
                for n, d in snp_digests.items()
            ),
        ],
    )
    provenance = write_provenance(statement, out_dir / PROVENANCE_FILE)
    step("provenance", started)
    outputs = {**artifacts, PROVENANCE_FILE: provenance}
    where = record.record_path(
        build_cache, app, out_dir, vcpu_counts=vcpu_counts, opt=opt, root=root, memory=memory
    )
    if recorded_inputs is not None:
        output_digests = record.write_record(where, recorded_inputs, outputs, digests)
    else:
        output_digests = {name: record.sha256(path) for name, path in sorted(outputs.items())}
    return KeepBuild(out_dir, artifacts, digests, provenance, output_digests)


def check_app_memory(wasm: bytes, plan: LaunchPlan) -> None:
    """Refuse an application whose initial linear memory exceeds what the keep's heap holds.

    The limit is the one both backends enforce at run time (``toolchain.measure.keep``'s
    ``linear_memory_limit``); a module asking for more at start could only abort.
    """
    import wasmtime

    from toolchain.measure.keep import WASM_PAGE, linear_memory_limit

    module = wasmtime.Module(wasmtime.Engine(), wasm)
    types = [item.type for item in module.imports] + [item.type for item in module.exports]
    pages = max(
        (kind.limits.min for kind in types if isinstance(kind, wasmtime.MemoryType)), default=0
    )
    limit = linear_memory_limit(plan.abi.heap_end - plan.abi.heap_start) // WASM_PAGE
    if pages > limit:
        raise InputError(
            f"the application asks for {pages} pages ({pages * WASM_PAGE >> 20} MiB) of linear "
            f"memory at start; a keep with {plan.ram_size >> 20} MiB of guest memory holds at most "
            f"{limit} pages",
            hint="build it with a larger --memory (e.g. --memory 512M)",
        )


def copy_tree_outputs(build: KeepBuild, destination: Path) -> None:
    """Copy the top-level artifacts (not ``work/``) elsewhere."""
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(build.artifacts.items()):
        shutil.copyfile(path, destination / name)
    shutil.copyfile(build.provenance, destination / build.provenance.name)
