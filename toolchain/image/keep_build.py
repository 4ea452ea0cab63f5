"""``keep build``: application → every artifact of a keep, reproducibly, into one directory.

``DIR`` receives (and nothing in it varies between builds of the same sources):

* ``app.wasm`` — the validated application module (assembled from ``.wat`` if needed);
* ``ukernel.elf`` — the microkernel (``toolchain.image.ukernel``) for the simulated platform
  (backends kvm and nil);
* ``ukernel-snp.elf`` — the same microkernel built for ``snp`` (``SNP_UKERNEL_ELF``: its platform
  layer executes VMGEXIT), what the ``snp`` plan and its launch digests are laid out from;
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    """Where everything went, the parsed launch plan, and the launch digests (vCPU count → 48
    bytes). ``plan`` is the plan ``artifacts[PLAN_FILE]`` holds, parsed once (when it was laid
    out, or from bytes whose SHA-256 is ``output_digests[PLAN_FILE]``): use it, never the file."""

    out_dir: Path
    artifacts: dict[str, Path]  # file name → path, the top-level outputs
    plan: LaunchPlan
    launch_digests: dict[int, bytes]
    provenance: Path
    #: output file name → SHA-256 (hex), hashed when the build was made or recognised complete
    output_digests: Mapping[str, str] = field(default_factory=dict)

    def snp_launch_digests(self) -> dict[str, dict[int, bytes]]:
        """generation → vCPU count → the ``snp`` launch digest, laid out from this build's plan
        and ELFs (``toolchain.measure.reference.snp_launch_digests``)."""
        from toolchain.measure.keep import SNP_UKERNEL_ELF
        from toolchain.measure.reference import GENERATIONS, snp_launch_digests

        return snp_launch_digests(
            self.plan,
            self.artifacts["ukernel.elf"],
            self.artifacts["runtime.elf"],
            self.artifacts[SNP_UKERNEL_ELF],
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


def _checked_inputs(app: Path, vcpu_counts: Sequence[int], source_root: Path | None) -> Path:
    """Refuse a build that cannot succeed, before anything is compiled; the source tree's root."""
    from toolchain.measure.abi import HEADER_PATH, check_header

    if not app.is_file():
        raise InputError(f"application {app} does not exist")
    if not vcpu_counts:
        raise InputError("at least one vCPU count is needed")
    root = ROOT if source_root is None else Path(source_root).resolve()
    if not (root / UKERNEL_SOURCES).is_dir():
        raise InputError(f"{root} is not a Keepstack source tree (no {UKERNEL_SOURCES}/)")
    if root == ROOT:
        # This tree's guest is served by this tree's VMM: its C header must be the one the
        # Python ABI generates (another tree, rebuilt by ``keep reproduce``, has its own).
        check_header(root / HEADER_PATH)
    return root


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
    from toolchain.image import record
    from toolchain.image.cache import BuildCache
    from toolchain.image.provenance import PROVENANCE_FILE, write_provenance
    from toolchain.image.wheel import build_wheel

    app = Path(app)
    root = _checked_inputs(app, vcpu_counts, source_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timer = _Timer(progress)

    # The inputs as they are before anything is read: a file changed during the build is then
    # a changed input next time, never recorded as what these outputs were built from.
    build_cache = cache if cache is not None else BuildCache()
    recorded_inputs = record.current_inputs(app, root) if build_cache.enabled else None
    images = _build_images(app, out_dir, root=root, cache=cache, opt=opt, timer=timer)
    with timer("launch plan"):
        layout = _lay_out(images, out_dir, vcpu_counts, memory)
    with timer("wheel"):
        wheel = build_wheel(out_dir, root)
    with timer("provenance"):
        built = (
            images.app_wasm,
            images.ukernel_elf,
            images.snp_ukernel_elf,
            images.runtime_elf,
            layout.path,
            wheel.path,
        )
        artifacts = {path.name: path for path in built}
        external = {
            "application": app.name,
            "vcpu_counts": sorted(set(vcpu_counts)),
            **({"memory": layout.plan.ram_size} if memory is not None else {}),
        }
        statement = _provenance(
            app, root, images, layout, artifacts=artifacts, wheel=wheel.sha256, external=external
        )
        provenance = write_provenance(statement, out_dir / PROVENANCE_FILE)
    outputs = {**artifacts, PROVENANCE_FILE: provenance}
    where = record.record_path(
        build_cache, app, out_dir, vcpu_counts=vcpu_counts, opt=opt, root=root, memory=memory
    )
    if recorded_inputs is not None:
        output_digests = record.write_record(where, recorded_inputs, outputs, layout.digests)
    else:
        output_digests = {name: record.sha256(path) for name, path in sorted(outputs.items())}
    return KeepBuild(
        out_dir=out_dir,
        artifacts=artifacts,
        plan=layout.plan,
        launch_digests=layout.digests,
        provenance=provenance,
        output_digests=output_digests,
    )


UKERNEL_SOURCES = Path("runtime") / "guest" / "ukernel"


class _Timer:
    """``with timer(name):`` reports each step's seconds to ``progress``."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if self.progress is not None:
            self.progress(name, time.perf_counter() - started)


@dataclass(frozen=True)
class _Images:
    """The built ELFs and module, copied to the output directory."""

    app_wasm: Path
    ukernel_elf: Path
    #: the microkernel built for ``snp`` (``SNP_UKERNEL_ELF``)
    snp_ukernel_elf: Path
    runtime_elf: Path
    #: the application's C flags when not -O2 (``AppImage.app_flags``)
    app_flags: tuple[str, ...]
    versions: dict[str, str]


def _build_images(
    app: Path, out_dir: Path, *, root: Path, cache: BuildCache | None, opt: str, timer: _Timer
) -> _Images:
    from concurrent.futures import ThreadPoolExecutor

    from toolchain.image import tools
    from toolchain.image.app import build_app_image
    from toolchain.image.ukernel import build_ukernel
    from toolchain.measure.plan import PLATFORM_SIMULATED, PLATFORM_SNP

    work = out_dir / "work"
    with timer("toolchain"):
        versions = tools.toolchain_versions()

    # The microkernels do not depend on the application: they build while the runtime image
    # does (their compiles share compile.jobs() process slots). Both platforms' builds come
    # from the same sources and flags; only platform.c differs (toolchain.image.ukernel).
    def timed_ukernel() -> tuple[list[Path], float]:
        begun = time.perf_counter()
        built = [
            build_ukernel(
                work / "ukernel", source_dir=root / UKERNEL_SOURCES, cache=cache, platform=platform
            )
            for platform in (PLATFORM_SIMULATED, PLATFORM_SNP)
        ]
        return built, begun

    with ThreadPoolExecutor(max_workers=1) as pool:
        ukernel_future = pool.submit(timed_ukernel)
        with timer("runtime image"):
            image = build_app_image(app, work / "app", cache=cache, source_root=root, opt=opt)
            runtime_elf = _copy_if_changed(image.elf.path, out_dir / "runtime.elf")
            app_wasm = _copy_if_changed(image.wasm.path, out_dir / "app.wasm")
        built_ukernels, started = ukernel_future.result()
    ukernel_elf, snp_ukernel_elf = (
        _copy_if_changed(built, out_dir / built.name) for built in built_ukernels
    )
    if timer.progress is not None:
        timer.progress("microkernel", time.perf_counter() - started)
    return _Images(
        app_wasm, ukernel_elf, snp_ukernel_elf, runtime_elf, tuple(image.app_flags), versions
    )


@dataclass(frozen=True)
class _Layout:
    """The laid-out plan, where it was written, and the launch digests per vCPU count (the
    simulated platform's and the snp plan's with the default C-bit)."""

    plan: LaunchPlan
    path: Path
    digests: dict[int, bytes]
    snp_digests: dict[int, bytes]


def _lay_out(
    images: _Images, out_dir: Path, vcpu_counts: Sequence[int], memory: int | None
) -> _Layout:
    """Lay out the plan and write it to ``PLAN_FILE`` (only if its bytes changed). The file
    records the smallest vCPU count's digest; the others are launch arguments."""
    from toolchain.measure.keep import build_plan, snp_plan_of
    from toolchain.measure.plan import PLAN_FILE

    plan = build_plan(
        images.ukernel_elf, images.runtime_elf, vcpu_count=min(vcpu_counts), memory=memory
    )
    check_app_memory(images.app_wasm.read_bytes(), plan)
    plan_path = out_dir / PLAN_FILE
    plan_text = plan.to_json().encode()
    if not plan_path.is_file() or plan_path.read_bytes() != plan_text:
        plan_path.write_bytes(plan_text)
    snp = snp_plan_of(plan, images.ukernel_elf, images.runtime_elf, images.snp_ukernel_elf)
    return _Layout(
        plan, plan_path, plan.launch_digests(vcpu_counts), snp.launch_digests(vcpu_counts)
    )


def _provenance(
    app: Path,
    root: Path,
    images: _Images,
    layout: _Layout,
    *,
    artifacts: Mapping[str, Path],
    wheel: str,
    external: Mapping[str, object],
) -> dict[str, object]:
    """The SLSA provenance statement of the build (``wheel``: the wheel's SHA-256)."""
    from toolchain import __version__
    from toolchain.image import tools
    from toolchain.image.app import WASM2C_FLAGS, runtime_dir
    from toolchain.image.compile import CPU, describe_flags
    from toolchain.image.provenance import Resource, provenance_statement, source_resources
    from toolchain.measure.keep import DEFAULT_C_BIT

    runtime_info = tools.wasm2c_runtime()
    inputs = [
        Resource.of_file(f"application/{app.name}", app),
        *source_resources(root, runtime_dir(root), (".c", ".h", ".ld")),
        *source_resources(root, root / UKERNEL_SOURCES, (".c", ".S", ".h", ".ld")),
        *[
            Resource.of_file(f"wasm2c-runtime/{name}", runtime_info.directory / name, sha384=False)
            for name in tools.WASM2C_RUNTIME_FILES
        ],
        Resource("tool/zig", {"sha256": tools.zig().sha256}),
        Resource("tool/wasm2c", {"sha256": tools.wasm2c().sha256}),
    ]
    return provenance_statement(
        outputs=[Resource.of_file(name, path) for name, path in artifacts.items()],
        inputs=inputs,
        external_parameters=external,
        internal_parameters={
            "toolchain": images.versions,
            "cpu": CPU,
            "target_flags": {k: list(v) for k, v in describe_flags().items()},
            "wasm2c_flags": list(WASM2C_FLAGS),
            # Only when not -O2, so the provenance of every build before the option is unchanged.
            **({"app_c_flags": list(images.app_flags)} if images.app_flags else {}),
        },
        builder_version={"keepstack": __version__, "keepstack-wheel": f"sha256:{wheel}"},
        byproducts=[
            *(
                Resource(f"launch-digest/vcpus={count}", {"sha384": digest.hex()})
                for count, digest in layout.digests.items()
            ),
            *(
                Resource(f"launch-digest/snp/c-bit={DEFAULT_C_BIT}/vcpus={n}", {"sha384": d.hex()})
                for n, d in layout.snp_digests.items()
            ),
        ],
    )


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
    limit = linear_memory_limit(plan.abi) // WASM_PAGE
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
