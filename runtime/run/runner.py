"""``keep run``, step by step: build → plan → references → boot → attest → verify → app.

Fail closed: every step that cannot prove what it should stops the run before the application
starts, with the failed check's name, the expected and the found value. After the keep ends, the
runner's own verdict (``LiveAttestation.verdict``) must say that it requested, obtained and passed
exactly one report; otherwise the run fails (exit 1) whatever status the keep asked for.

The application is a ``.wasm``/``.wat`` file, built here (cached), or a ``keep build`` output
directory, which runs only if it equals a fresh build of its ``app.wasm``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from toolchain.checks import Checklist
from toolchain.errors import EvidenceError, InputError, KeepError, PlatformError

if TYPE_CHECKING:
    from runtime.firmware.interface import Firmware
    from runtime.run.attest import LiveAttestation
    from runtime.run.backends import Backend, Ended
    from toolchain.image.keep_build import KeepBuild
    from toolchain.measure.trees import DirSpec, Tree
    from toolchain.sign.keys import PublicKey
    from toolchain.sign.references import VerifiedReferences
    from toolchain.sign.trust import TrustPolicy
    from toolchain.verify import TrustedRoots, VerificationPolicy

SIM_ROOT_LABEL = "simulated AMD root (development only: NOT a hardware root of trust)"
DEV_REFERENCE_VALIDITY = timedelta(days=1)


@dataclass
class RunOptions:
    app: Path
    args: Sequence[str] = ()
    env: Sequence[tuple[str, str]] = ()
    backend: str | None = None  # None: kvm where /dev/kvm works, else nil (said loudly)
    vcpus: int = 1
    references: Path | None = None
    trust: TrustPolicy | None = None
    policy: Path | None = None
    dev: bool = False
    timeout: float = 60.0
    #: The chip's VCEK for ``snp`` (``--vcek``; else ``$KEEPSTACK_SNP_VCEK``), never fetched.
    vcek: Path | None = None
    evidence: Path | None = None
    build_dir: Path | None = None
    #: Guest memory in bytes (None: the default 256 MiB); part of the build and its measurement.
    memory: int | None = None
    #: Preopened directories (``--dir HOST[::GUEST][:rw]``): read before boot, copied into the
    #: keep, their digests bound into REPORT_DATA (``toolchain.measure.trees``); the ``:rw``
    #: ones come back at the application's exit (``runtime.run.writeback.apply_result``).
    dirs: Sequence[DirSpec] = ()
    #: Where the runner's own lines go (progress, security statement, checklist).
    log: TextIO = field(default_factory=lambda: sys.stderr)
    progress: bool | None = None  # None: only when ``log`` is a terminal
    #: One verdict line on success instead of the full output (which still comes on failure).
    quiet: bool = False


@dataclass
class RunOutcome:
    exit_status: int
    backend: str
    checklist: Checklist | None
    measurement: bytes
    timings_ms: dict[str, float] = field(default_factory=dict)


class _Log:
    """The runner's own lines: said at once, or (``quiet``) held back until a failure."""

    def __init__(self, options: RunOptions) -> None:
        self.stream = options.log
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.progress_on = tty if options.progress is None else options.progress
        self.quiet = options.quiet
        self.held: list[str] = []

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line of the full output: printed now, or with ``quiet`` only if the run fails."""
        if self.quiet:
            self.held.append(text)
        else:
            self.say(text)

    def verdict(self, text: str) -> None:
        """The one line ``quiet`` prints instead of the full output on success."""
        if self.quiet:
            self.say(text)

    def release(self) -> None:
        """The run failed: print everything held back, in order."""
        held, self.held = self.held, []
        for text in held:
            self.say(text)

    def progress(self, text: str) -> None:
        if self.progress_on:
            self.say(f"keep: {text}")


DEV_HINT = (
    "this machine has only the simulated SNP firmware, whose reports chain to a simulated AMD "
    "root; pass --dev to trust that root (development only: it is NOT a hardware root of trust, "
    "and the host can forge its reports)"
)


def _add_dev_hint(
    error: EvidenceError, checks: Checklist, options: RunOptions, firmware: Firmware
) -> None:
    """Say what --dev would change when the only failure is the untrusted simulated root."""
    if options.dev or error.hint or not firmware.simulated:
        return
    if any(check.name == "ark.trusted" for check in checks.failures):
        error.hint = DEV_HINT


def _verdict_line(attestation: LiveAttestation, backend: Backend, options: RunOptions) -> str:
    """``--quiet``'s one line: the verdict, the backend and every development-only trust."""
    from toolchain.checks import OK_MARK

    checks = attestation.checklist
    passed = sum(1 for check in checks.checks if check.ok) if checks else 0
    caveats = [
        f"backend {backend.name} ({backend.isolation})",
        f"firmware {attestation.firmware.name}",
    ]
    if attestation.references.development:
        caveats.append("DEVELOPMENT references")
    if options.dev:
        caveats.append("simulated AMD root trusted by --dev")
    return f"keep: {OK_MARK} attested: {passed} checks passed; {', '.join(caveats)}"


def _app_name(app: Path) -> str:
    """argv[0] of the application: its file name without the suffix, or a build directory's name."""
    return app.name if app.is_dir() else app.stem


#: What a keep is made of: a build directory must hold exactly what a fresh build makes of them.
#: (The wheel and provenance.json are not booted; the plan is compared separately.) The
#: microkernel built for snp (``toolchain.measure.keep.SNP_UKERNEL_ELF``) is compared too, in
#: ``check_build_directory``, which imports its name only when a directory is run.
KEEP_ARTIFACTS = ("app.wasm", "ukernel.elf", "runtime.elf")


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def check_build_directory(
    directory: Path, build_dir: Path | None, vcpus: int, log: _Log, memory: int | None = None
) -> KeepBuild:
    """A directory made by ``keep build --out``: rebuilt from its ``app.wasm`` and compared.

    Nothing in it is trusted for being there: the keep that runs is a fresh (cached) build of
    its application, and only if the directory's microkernel, runtime image, module and launch
    plan equal that build byte for byte; otherwise the run stops, naming the file.
    """
    from toolchain.measure.keep import SNP_UKERNEL_ELF
    from toolchain.measure.plan import PLAN_FILE, LaunchPlan

    app = directory / "app.wasm"
    if not app.is_file():
        raise InputError(
            f"{directory} is a directory but not a keep build (it has no app.wasm)",
            hint="pass an application .wasm/.wat, or a directory made by 'keep build --out DIR'",
        )
    if build_dir is not None and build_dir.resolve() == directory.resolve():
        # The fresh build would overwrite what it is compared with.
        raise InputError(
            f"--build-dir {build_dir} is the build directory being run",
            hint="leave out --build-dir, or give another directory",
        )
    theirs_plan = directory / PLAN_FILE
    plan = LaunchPlan.load(theirs_plan)
    if memory is not None and memory != plan.ram_size:
        raise InputError(
            f"--memory {memory} differs from the {plan.ram_size} bytes {directory} was built with",
            hint="leave out --memory, or rebuild the directory with 'keep build --memory'",
        )
    # The fresh build takes the directory's memory size: the comparison below decides.
    fresh = build_for_run(app, build_dir, vcpus, log, memory=plan.ram_size)
    for name in (*KEEP_ARTIFACTS, SNP_UKERNEL_ELF):
        theirs = directory / name
        if not theirs.is_file():
            raise InputError(f"{directory} has no {name}: not a complete keep build")
        expected, found = _sha256(fresh.artifacts[name]), _sha256(theirs)
        if expected != found:
            raise EvidenceError(
                f"{theirs} is not what this Keepstack builds from {app}; the keep was not started",
                field=name,
                expected=f"sha256:{expected} (a fresh build)",
                found=f"sha256:{found}",
                hint="rebuild the directory with this version's 'keep build', or run the "
                "application file itself",
            )
    # Every field counts (an unmeasured one, like the heap's end, still steers the keep), but
    # the count the file records a digest for: the keep launches with ``vcpus``.
    differs = fresh.plan.differences(plan)
    if differs:
        raise EvidenceError(
            f"{theirs_plan} differs from the plan of a fresh build; the keep was not started",
            field=PLAN_FILE,
            expected=f"a fresh build's plan (launch digest "
            f"{fresh.plan.launch_digest(vcpus).hex()})",
            found=f"launch digest {plan.launch_digest(vcpus).hex()}; "
            f"differs in {', '.join(differs)}",
        )
    log.progress(f"{directory} equals a fresh build of its app.wasm")
    return fresh


def build_for_run(
    app: Path, build_dir: Path | None, vcpus: int, log: _Log, memory: int | None = None
) -> KeepBuild:
    """The keep's build: recognised complete (``toolchain.image.record``) or built (cached steps).

    ``app`` may also be a build directory (``check_build_directory``). A recognised build runs
    no build step and imports no ELF, wasm or wasm2c tooling; every input and output is re-hashed.
    """
    from toolchain.image.record import recorded_build
    from toolchain.state import cache_dir

    if app.is_dir():
        return check_build_directory(app, build_dir, vcpus, log, memory)
    if not app.is_file():
        raise InputError(f"application {app} does not exist")
    if build_dir is None:
        sized = b"" if memory is None else f"memory={memory}".encode()
        # The checkout that builds is part of the key: two checkouts never share (and rebuild
        # over) one directory; every input is still re-hashed on each run.
        source = str(Path(__file__).resolve().parents[2]).encode()
        key = hashlib.sha256(app.read_bytes() + app.suffix.encode() + sized + b"\0" + source)
        build_dir = cache_dir("run", f"{app.stem}-{key.hexdigest()[:16]}")

    def step(name: str, seconds: float) -> None:
        log.progress(f"  {name}: {seconds * 1e3:.0f} ms")

    with _exclusive(build_dir):  # keeps of one app started at once: one builds, the rest reuse
        recorded = recorded_build(app, build_dir, vcpu_counts=(vcpus,), memory=memory)
        if recorded is not None:
            log.progress(
                f"{build_dir}: a complete build of {app}, every input and output as recorded"
            )
            return recorded
        from toolchain.image.keep_build import build_keep

        log.progress(f"building {app} into {build_dir}")
        return build_keep(app, build_dir, vcpu_counts=(vcpus,), progress=step, memory=memory)


@contextmanager
def _exclusive(build_dir: Path) -> Iterator[None]:
    """Hold ``build_dir``'s lock (a file beside it, so the directory's contents stay only the
    build's) while the build is recognised or made."""
    import fcntl

    build_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = build_dir.with_name(build_dir.name + ".lock").open("a+b")
    except OSError as exc:
        raise PlatformError(f"cannot lock the build directory {build_dir}: {exc.strerror}") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def development_references(build: KeepBuild, backend: str, vcpus: int) -> tuple[bytes, TrustPolicy]:
    """Sign a development reference for this build (its plan's digest with ``vcpus`` vCPUs, for
    ``backend``) with the per-user development key.

    For ``snp`` it carries the build's ``snp`` digests (its twin plan's, per CPU generation: KVM's
    VMSAs, the C-bit), never the simulated platform's: a report from the real firmware could not
    match those."""
    from toolchain import __version__
    from toolchain.image import tools
    from toolchain.image.provenance import PROVENANCE_FILE
    from toolchain.measure.keep import SNP_UKERNEL_ELF
    from toolchain.measure.plan import BACKEND_PLATFORMS, PLATFORM_SNP
    from toolchain.measure.reference import GENERATIONS, keep_statement, snp_launch_digests
    from toolchain.sign import TrustPolicy, dev_key, sign_statement

    generations: Sequence[str] = ["any"]
    snp = None
    # A reference names its backend; the platform it is measured on decides which digests it holds.
    if BACKEND_PLATFORMS.get(backend) == PLATFORM_SNP:
        generations = GENERATIONS
        snp = snp_launch_digests(
            build.plan,
            build.artifacts["ukernel.elf"],
            build.artifacts["runtime.elf"],
            build.artifacts[SNP_UKERNEL_ELF],
            vcpu_counts=[vcpus],
            generations=generations,
        )
    key, _ = dev_key()
    statement = keep_statement(
        release=f"{__version__}+dev",
        artifacts=build.artifacts,
        provenance=build.out_dir / PROVENANCE_FILE,
        launch_digests={vcpus: build.plan.launch_digest(vcpus)},
        guest_policy=build.plan.guest_policy,
        backends=[backend],
        generations=generations,
        snp_digests=snp,
        toolchain=tools.toolchain_versions(),
        not_before=datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5),
        valid_for=DEV_REFERENCE_VALIDITY,
        development=True,
    )
    return sign_statement(statement, key), TrustPolicy.from_keys([key.public_key()])


DEV_REFERENCE_FORMAT = "keepstack-dev-reference-1"


def _dev_reference_path(
    build: KeepBuild, backend: str, vcpus: int
) -> tuple[Path, PublicKey] | None:
    """Where the development reference of this build is kept, and the development public key.

    Kept by the build's output digests and the development key's ID (with the backend and the
    vCPU count it names), so a changed output or a new development key names another file: a
    reference signed for anything else is never looked up. None (sign every run) when the
    build's output digests are unknown or there is no development key yet.
    """
    from toolchain.image.cache import step_key
    from toolchain.sign.keys import DEV_KEY_NAME, key_id, load_public_key, public_path_for
    from toolchain.state import cache_dir, state_dir

    if not build.output_digests:
        return None
    try:
        public = load_public_key(public_path_for(state_dir("keys") / DEV_KEY_NAME))
    except KeepError:
        return None  # no development key yet: development_references creates it
    outputs = json.dumps(dict(sorted(build.output_digests.items())))
    key = step_key(DEV_REFERENCE_FORMAT, outputs, key_id(public), backend, str(vcpus))
    return cache_dir("run") / "dev-references" / f"{key}.dsse.json", public


def _development_reference(
    build: KeepBuild, backend: str, vcpus: int
) -> tuple[bytes, TrustPolicy, Path | None]:
    """This build's development reference, kept from an earlier run or signed now (and kept).

    Returns the envelope, the trust policy of the development key and the kept file it came from
    (None when signed now). Whatever its origin, the envelope is verified every run
    (``load_references``) against the development key's public key.
    """
    from toolchain.image.cache import _atomic_write
    from toolchain.sign import TrustPolicy

    kept = _dev_reference_path(build, backend, vcpus)
    if kept is not None:
        path, public = kept
        try:
            return path.read_bytes(), TrustPolicy.from_keys([public]), path
        except OSError:
            pass
    envelope, trust = development_references(build, backend, vcpus)
    kept = _dev_reference_path(build, backend, vcpus)  # the key exists now
    if kept is not None:
        _atomic_write(kept[0], envelope)
    return envelope, trust, None


def load_references(
    options: RunOptions, build: KeepBuild, backend: str
) -> tuple[bytes, VerifiedReferences, Checklist]:
    from toolchain.sign.references import require_references

    kept: Path | None = None
    if options.references is not None:
        if options.trust is None:
            raise InputError(
                "--references needs a trust policy",
                hint="pass --trust ROOT.json or --trusted-key PUB "
                "(keep run uses the built-in TUF root)",
            )
        try:
            envelope = options.references.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {options.references}: {exc.strerror}") from exc
        trust = options.trust
        title = f"signed reference measurements {options.references}"
    elif options.dev:
        envelope, trust, kept = _development_reference(build, backend, options.vcpus)
        title = "signed reference measurements (development key, signed for this build)"
    else:
        raise InputError(
            "no reference measurements to check the keep against",
            hint="pass --references ENVELOPE (with --trust), or --dev (development only: sign a "
            "reference for this build with the development key, and trust the simulated AMD "
            "root, which is NOT a hardware root of trust)",
        )
    try:
        checks, references = require_references(envelope, trust, title=title, consequence=_NOT_RUN)
    except (InputError, EvidenceError):
        if kept is None:
            raise
        # A kept development reference that no longer verifies (expired, damaged, unreadable) is
        # only a cache: it is dropped, and a new one is signed and verified like any other.
        kept.unlink(missing_ok=True)
        envelope, trust, _ = _development_reference(build, backend, options.vcpus)
        checks, references = require_references(envelope, trust, title=title, consequence=_NOT_RUN)
    return envelope, references, checks


_NOT_RUN = "; the keep was not started"


def _roots(dev: bool, firmware: Firmware) -> TrustedRoots:
    from toolchain.snp.certs import load_certificate
    from toolchain.verify import TrustedRoots

    roots = TrustedRoots.amd()
    if firmware.simulated and dev:
        chain = firmware.certificate_chain()
        roots = roots.with_extra(load_certificate(chain.ark), label=SIM_ROOT_LABEL)
    return roots


def _policy(path: Path | None) -> VerificationPolicy:
    from toolchain.verify import VerificationPolicy

    return VerificationPolicy.load(path) if path is not None else VerificationPolicy()


def write_evidence(path: Path, attestation: LiveAttestation, envelope: bytes, backend: str) -> None:
    """Everything a tenant needs to re-check the run elsewhere with ``keep verify-report``."""
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding

    from toolchain.snp.certs import load_certificate

    chain = attestation.chain
    if chain is None:
        raise InputError("no evidence to write: the report was never checked against a chain")

    def pem(der: bytes) -> str:
        return load_certificate(der).public_bytes(Encoding.PEM).decode()

    document = {
        "_type": "https://keepstack.dev/evidence/v1",
        "backend": backend,
        "firmware": attestation.firmware.name,
        "simulated_root": chain.simulated,
        "nonce": attestation.nonce.hex(),
        # The preopened trees, in order: REPORT_DATA = SHA-512(nonce || their digests
        # [|| their :rw flags]), toolchain.measure.trees.bind_report_data.
        **({"trees": _evidence_trees(attestation)} if attestation.trees else {}),
        "report": (attestation.report or b"").hex(),
        "vcek": pem(chain.vcek),
        "ask": pem(chain.ask),
        "ark": pem(chain.ark),
        "references": base64.b64encode(envelope).decode(),
        "checklist": attestation.checklist.as_dict() if attestation.checklist else None,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"cannot write evidence {path}: {exc.strerror}") from exc


def _evidence_trees(attestation: LiveAttestation) -> list[dict[str, object]]:
    rw = attestation.rw or [False] * len(attestation.trees)
    return [
        {"guest": guest, "sha512": digest.hex(), **({"rw": True} if flag else {})}
        for (guest, digest), flag in zip(attestation.trees, rw, strict=True)
    ]


def run_app(options: RunOptions) -> RunOutcome:
    """Run ``options.app`` in a keep; the exit status is the application's (or 1 on refusal).

    With ``quiet`` the runner's lines are held back and one verdict line replaces them on
    success; on any failure every held line is printed after all.
    """
    log = _Log(options)
    try:
        return _run(options, log)
    except KeepError:
        log.release()
        raise


def _run(options: RunOptions, log: _Log) -> RunOutcome:
    from runtime.run.attest import LiveAttestation, fresh_nonce
    from runtime.run.backends import choose_backend
    from toolchain.measure.trees import bind_report_data, read_trees
    from toolchain.verify import TrustedRoots, Verifier

    timings: dict[str, float] = {}
    if options.vcpus < 1:
        raise InputError(f"--vcpus must be at least 1, not {options.vcpus}")
    trees = read_trees(options.dirs)  # before anything is built or booted: bounded, or refused
    _announce_trees(trees, log)
    if not options.timeout > 0:
        raise InputError(f"--timeout must be a positive number of seconds, not {options.timeout}")
    backend = choose_backend(options.backend, log.say)
    policy = _policy(options.policy)

    started = time.perf_counter()
    build = build_for_run(options.app, options.build_dir, options.vcpus, log, options.memory)
    timings["build"] = (time.perf_counter() - started) * 1e3

    envelope, references, reference_checks = load_references(options, build, backend.name)
    if references.development:
        log.note("keep: using DEVELOPMENT reference measurements (signed by a development key)")

    firmware = backend.firmware(_vcek(options, backend.name))
    log.note(backend.statement(firmware))
    roots = _roots(options.dev, firmware)
    if roots != TrustedRoots.amd():  # --dev added the simulated root (never for a real chain)
        log.note(f"keep: --dev: trusting the {SIM_ROOT_LABEL}")
    nonce = fresh_nonce()
    attestation = LiveAttestation(
        nonce=nonce,
        report_data=bind_report_data(
            nonce, [tree.digest for tree in trees], [tree.spec.rw for tree in trees]
        ),
        trees=[(tree.spec.guest, tree.digest) for tree in trees],
        rw=[tree.spec.rw for tree in trees],
        firmware=firmware,
        references=references,
        reference_checks=reference_checks,
        verifier=Verifier(roots),
        policy=policy,
        backend=backend.name,
        vcpus=options.vcpus,
    )
    started = time.perf_counter()
    ended = _launch(backend, build, attestation, trees, options, log)
    timings.update(ended.timings_ms, run=(time.perf_counter() - started) * 1e3)
    # Only a report checked against a chain is evidence a tenant can re-check.
    if options.evidence is not None and attestation.chain is not None:
        write_evidence(options.evidence, attestation, envelope, backend.name)
        log.note(f"keep: evidence written to {options.evidence}")
    _require_attested(attestation, ended.exit_status, ended.error, log)
    if ended.error is not None:
        raise ended.error
    if ended.exit_status is None:
        raise PlatformError("the keep ended without an exit status")
    if ended.result is not None:  # only now: the keep attested and ended on its own
        from runtime.run.writeback import apply_result

        apply_result(trees, ended.result, log.say)  # loud, even with --quiet
    return RunOutcome(
        process_status(ended.exit_status, log),
        backend.name,
        attestation.checklist,
        ended.measurement,
        timings,
    )


def _vcek(options: RunOptions, backend: str) -> Path | None:
    """The operator's VCEK file for a backend on the SEV-SNP platform; refused for any other
    (their reports chain to the simulated root: a VCEK there would mean nothing)."""
    import os

    from runtime.firmware.snp import VCEK_ENV
    from toolchain.measure.plan import BACKEND_PLATFORMS, PLATFORM_SNP

    if BACKEND_PLATFORMS.get(backend) != PLATFORM_SNP:
        if options.vcek is not None:
            raise InputError(f"--vcek is for --backend snp, not {backend}")
        return None
    if options.vcek is not None:
        return options.vcek
    from_env = os.environ.get(VCEK_ENV)
    return Path(from_env) if from_env else None


def _announce_trees(trees: Sequence[Tree], log: _Log) -> None:
    for tree in trees:
        log.note(
            f"keep: --dir {tree.spec.host} -> {tree.spec.guest}: {len(tree.encoding)} bytes, "
            f"sha512 {tree.digest.hex()[:32]}…, copied into the keep and bound into its report"
        )
    if any(not tree.spec.rw for tree in trees):
        # Where the application's changes go, so nobody expects them on the host.
        log.note(
            "keep: --dir: the application works on the keep's own in-memory copy; its changes "
            "are discarded at exit (the host directory is never written) unless the --dir "
            "ends with :rw"
        )
    for tree in trees:
        if tree.spec.rw:
            log.note(
                f"keep: --dir {tree.spec.host}:rw: the application's changes are written back "
                "to it at exit: the host sees them"
            )


def _launch(  # noqa: PLR0917 - the private body of _run
    backend: Backend,
    build: KeepBuild,
    attestation: LiveAttestation,
    trees: Sequence[Tree],
    options: RunOptions,
    log: _Log,
) -> Ended:
    """Run the keep on ``backend``, its reports checked by ``attestation``; any ``KeepError``
    while it runs is how it ended (the caller decides after the attestation verdict)."""
    from runtime.run.backends import Ended, Launch
    from toolchain.measure.trees import transfer_blob

    def verified(report: bytes) -> bool:
        try:
            return attestation(report)
        except EvidenceError as exc:
            if attestation.checklist is not None:
                _add_dev_hint(exc, attestation.checklist, options, attestation.firmware)
            raise
        finally:
            if attestation.checklist is not None and attestation.calls == 1:
                log.note(attestation.checklist.render())
                if attestation.accepted:
                    log.verdict(_verdict_line(attestation, backend, options))

    launch = Launch(
        build=build,
        vcpus=options.vcpus,
        firmware=attestation.witness,
        argv=[_app_name(options.app), *options.args],
        env=list(options.env),
        timeout=options.timeout,
        verified=verified,
        report_data=attestation.expected_report_data,
        trees=transfer_blob(attestation.nonce, trees),
        rw=[tree.spec.rw for tree in trees],
    )
    try:
        return backend.run(launch)
    except KeepError as exc:
        return Ended(None, b"", exc)


def _how_it_ended(status: int | None, error: KeepError | None) -> str:
    if error is not None:
        return error.explain().splitlines()[0]
    if status is not None:
        return f"the keep ended with exit status {status}"
    return "the keep ended without an exit status"


def _require_attested(
    attestation: LiveAttestation, status: int | None, error: KeepError | None, log: _Log
) -> None:
    """Fail the run unless this keep requested, obtained and passed exactly one report.

    The runner decides this itself (``LiveAttestation.verdict``), after every run and on every
    backend, whatever the keep or the VMM say: an exit status asked for by a keep that never
    attested is never passed on.
    """
    from runtime.vmm.errors import GuestError

    served = attestation.witnessed[0]
    if attestation.accepted and attestation.calls == 1 and served == 1:
        return
    if served == 0 and error is not None and not isinstance(error, GuestError | EvidenceError):
        # The host broke before the keep could ask (no KVM, an unusable plan): that error
        # explains the failure better than "no request", and it is a failure already.
        return
    verdict = attestation.verdict(_how_it_ended(status, error))
    log.release()
    log.say(verdict.render())
    if isinstance(error, EvidenceError) or (error is not None and error is attestation.error):
        raise error  # the report did not verify (or could not be checked): that error says why
    failed = verdict.failures[0]
    raise EvidenceError(
        "the keep did not complete attestation, so its run failed whatever status it asked for",
        field=failed.name,
        expected=failed.expected,
        found=failed.found,
    )


def process_status(status: int, log: _Log) -> int:
    """The application's WASI exit status as a process exit status (0-255).

    A status that does not fit must never turn into success (256 would be 0 modulo 256), so it
    becomes 255, and the runner says so.
    """
    if 0 <= status <= 255:
        return status
    log.say(f"keep: the application's exit status {status} does not fit in 0-255; exiting with 255")
    return 255
