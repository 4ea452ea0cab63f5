"""Publish a release: build every example, measure, sign, write ``reference-measurements/<v>/``.

``make_release`` (run by ``nox -s release -- --key PATH``) builds each example keep of the source
tree in a fresh directory with a fresh build cache, signs one statement per example
(``toolchain.measure.reference.keep_statement``: subjects are the trusted artifacts, the VMM wheel
is an untrusted component) with the release key, writes the envelope and the release's bytes of
those artifacts plus the provenance record. The release key is a file outside the repository or
a key in a PKCS#11 token (``toolchain.sign.tokens``: ``pkcs11:token=...;object=...``).

The release is recorded in the tree's TUF repository (``reference-measurements/metadata/``,
made with ``keep tuf init``; publishing refuses a tree without one): the release role that
delegates this version to the release key (``--role``, else the one role whose keys include it)
lists every file of the release, signed by that key, with new snapshot and timestamp
(``publish_to_tuf``); the release then verifies through the TUF client from the root pinned in
the tree (``toolchain/sign/release-trust/root.json``, else the repository's first root).

Every statement signs the source it was built from (predicate ``source``): the ``treeSha256`` of
the trusted source files (``toolchain.release.source``) and, in a git checkout, the commit. The
trusted sources must be committed, and the commit's tree must hash to the same ``treeSha256`` as
the working tree that is built (so an ignored or untracked file under a trusted path, which git
would not export, is refused rather than making the release unreproducible from its commit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.errors import InputError, PlatformError
from toolchain.release.layout import (
    ENVELOPE_SUFFIX,
    REFERENCES_DIR,
    RELEASE_BACKENDS,
    RELEASE_VCPU_COUNTS,
    TRUSTED_ARTIFACTS,
    example_apps,
)
from toolchain.release.source import EXCLUDED, TRUSTED_SOURCES

if TYPE_CHECKING:
    from toolchain.measure.plan import LaunchPlan
    from toolchain.sign import SourceDigest
    from toolchain.sign.tokens import SigningKey

#: How long a release's references are valid, from the signing time.
RELEASE_VALIDITY = timedelta(days=365)
_RELEASE_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*([-+._]?[0-9A-Za-z]+)*")


@dataclass(frozen=True)
class Release:
    version: str
    directory: Path
    envelopes: tuple[Path, ...]
    key_id: str
    metadata: Path  # the release role's new metadata
    tuf_role: str  # the TUF release role that lists the release


def package_version(repo_root: Path) -> str:
    """The ``[project] version`` of ``repo_root/pyproject.toml``."""
    path = repo_root / "pyproject.toml"
    try:
        return str(tomllib.loads(path.read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise InputError(f"cannot read the package version from {path}: {exc}") from exc


def _check_version(version: str, repo_root: Path) -> None:
    if not _RELEASE_VERSION.fullmatch(version):
        raise InputError(f"{version!r} is not a release version")
    if "dev" in version:
        raise InputError(
            f"{version} is a development version, not a release",
            hint="set [project] version in pyproject.toml to the release (e.g. 0.1.0) first",
        )
    found = package_version(repo_root)
    if found != version:
        raise InputError(
            f"the package version is {found}, not {version}",
            hint=f"set [project] version = {version!r} in pyproject.toml",
        )


def _check_key_outside(key_path: Path, repo_root: Path) -> None:
    if key_path.resolve().is_relative_to(repo_root.resolve()):
        raise InputError(
            f"the release key {key_path} is inside the repository {repo_root}",
            hint="private keys never go in the repository; keep it in your state directory",
        )


def _check_clean(repo_root: Path) -> None:
    """Refuse uncommitted changes to what the release builds (only in a git checkout)."""
    if not (repo_root / ".git").exists():
        return
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", *TRUSTED_SOURCES]
            + [f":(exclude){path}" for path in EXCLUDED],
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PlatformError(f"cannot ask git whether {repo_root} is clean: {exc}") from exc
    if done.stdout.strip():
        changed = ", ".join(line[3:] for line in done.stdout.splitlines()[:8])
        raise InputError(
            f"uncommitted changes to the trusted sources: {changed}",
            hint="a release is built from a clean tree: commit or remove them first",
        )


def _source_commit(repo_root: Path) -> str | None:
    """The commit whose (clean) trusted sources the release builds; None outside git."""
    if not (repo_root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD^{commit}"],
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PlatformError(f"cannot ask git for the commit of {repo_root}: {exc}") from exc
    return done.stdout.strip()


def _signed_source(repo_root: Path, commit: str | None) -> SourceDigest:
    """What the statements sign as their source: the working tree's ``treeSha256``, which must
    be the commit's (checked by exporting the commit's trusted sources, in a git checkout)."""
    from toolchain.release import history, source
    from toolchain.sign import SourceDigest

    files = source.source_files(repo_root)
    if commit is not None:
        with tempfile.TemporaryDirectory(prefix="keep-release-source-") as scratch:
            committed = source.source_files(history.export_tree(repo_root, commit, Path(scratch)))
        differing = source.differences(files, committed)
        if differing:
            raise InputError(
                f"the trusted sources to build differ from commit {commit[:12]}'s in "
                f"{', '.join(differing[:8])}" + (" and more" if differing[8:] else ""),
                hint="remove untracked or ignored files under the trusted paths "
                f"({', '.join(TRUSTED_SOURCES)}), or commit them",
            )
    return SourceDigest(tree_sha256=source.digest(files), commit=commit)


def reference_statement(
    artifacts: Mapping[str, Path],
    provenance: Path,
    *,
    release: str,
    vcpu_counts: Iterable[int],
    backends: Iterable[str],
    generations: Iterable[str],
    not_before: datetime,
    valid_for: timedelta,
    development: bool = False,
    source: SourceDigest | None = None,
    plan: LaunchPlan | None = None,
) -> dict[str, Any]:
    """The reference statement for one built keep (``keep build``'s artifacts by name; ``plan``
    is the build's parsed plan, loaded from ``artifacts[PLAN_FILE]`` when not given): the
    trusted artifacts are its subjects, the others (the VMM wheel) untrusted components, and it
    lists a launch configuration per backend, CPU generation and vCPU count, with the launch
    digest the keep's plan gives for that count; a release also signs its ``source``. Releases and
    ``keep statement`` both use it."""
    from toolchain.image import tools
    from toolchain.measure.keep import SNP_UKERNEL_ELF
    from toolchain.measure.plan import PLAN_FILE, LaunchPlan
    from toolchain.measure.reference import keep_statement, snp_launch_digests

    missing = [n for n in TRUSTED_ARTIFACTS if n not in artifacts]
    if missing:
        raise InputError(f"not a built keep: {', '.join(missing)} missing")
    if plan is None:
        plan = LaunchPlan.load(artifacts[PLAN_FILE])
    trusted = {n: artifacts[n] for n in TRUSTED_ARTIFACTS}
    untrusted = {n: p for n, p in artifacts.items() if n not in trusted}
    vcpu_counts, backends, generations = list(vcpu_counts), list(backends), list(generations)
    snp = None
    if "snp" in backends:  # laid out from the same ELFs, checked against the plan's digest
        snp = snp_launch_digests(
            plan,
            artifacts["ukernel.elf"],
            artifacts["runtime.elf"],
            artifacts[SNP_UKERNEL_ELF],
            vcpu_counts=vcpu_counts,
            generations=generations,
        )
    return keep_statement(
        release=release,
        artifacts=trusted,
        provenance=provenance,
        launch_digests=plan.launch_digests(vcpu_counts),
        snp_digests=snp,
        guest_policy=plan.guest_policy,
        backends=backends,
        generations=generations,
        toolchain=tools.toolchain_versions(),
        not_before=not_before,
        valid_for=valid_for,
        development=development,
        untrusted_components=untrusted,
        source=source,
    )


def release_role(references: Path, key: SigningKey, version: str) -> str:
    """The TUF release role whose keys include ``key`` and whose paths cover ``version``."""
    from toolchain.sign.tuf_repository import Repository

    delegations = Repository(references).targets().signed.delegations
    roles = [
        name
        for name, role in (delegations.roles or {}).items()
        if key.key_id in role.keyids and role.is_delegated_path(f"{version}/x")
    ]
    if len(roles) != 1:
        raise InputError(
            f"{'no' if not roles else 'more than one'} TUF release role of {references} lets key "
            f"{key.key_id} sign release {version}" + (f" ({', '.join(roles)})" if roles else ""),
            hint="keep tuf add-release-key delegates releases to a key; pass --role to choose",
        )
    return str(roles[0])


def publish_to_tuf(
    references: Path,
    version: str,
    key: SigningKey,
    *,
    role: str | None = None,
    at: datetime | None = None,
    pinned_root: Path | None = None,
) -> tuple[str, Path]:
    """List every file of release ``version`` in its TUF release role (signed by ``key``, which
    also signs snapshot and timestamp), then verify each envelope through the TUF client from
    ``pinned_root`` (default: the repository's first root). Returns (role, its new metadata)."""
    from toolchain.sign.references import verify_envelope
    from toolchain.sign.trust import TrustPolicy
    from toolchain.sign.tuf_client import METADATA_DIR, REPOSITORY_ENV
    from toolchain.sign.tuf_repository import Keyring, Repository, add_targets, release_files

    repo = Repository(references)
    name = role or release_role(references, key, version)
    with repo.transaction():
        add_targets(repo, Keyring((key,)), name, release_files(repo, version))
    written = repo.metadata / f"{repo.targets(name).signed.version}.{name}.json"
    root = pinned_root or references / METADATA_DIR / "1.root.json"
    policy = TrustPolicy.load_tuf_root(root, environ={REPOSITORY_ENV: str(references)})
    for envelope in sorted((references / version).glob(f"*{ENVELOPE_SUFFIX}")):
        checklist, verified = verify_envelope(envelope.read_bytes(), policy, at=at)
        if verified is None:
            raise PlatformError(f"the new release does not verify:\n{checklist.render()}")
    return name, written


def make_release(
    version: str,
    key_spec: str | Path,
    repo_root: Path,
    *,
    now: datetime | None = None,
    log: list[str] | None = None,
    role: str | None = None,
) -> Release:
    """Build, measure and sign every example of ``repo_root`` as release ``version`` with the
    key ``key_spec`` names (a file outside the repository or a ``pkcs11:`` URI)."""
    from toolchain.sign.tokens import URI_SCHEME, open_signing_key

    repo_root = Path(repo_root).resolve()
    spec = str(key_spec)
    if not spec.startswith(URI_SCHEME):
        _check_key_outside(Path(spec), repo_root)
    key = open_signing_key(spec)
    try:
        return _make_release(version, key, repo_root, now, log, role)
    finally:
        key.close()


def _make_release(  # noqa: PLR0917 - the private body of make_release
    version: str,
    key: SigningKey,
    repo_root: Path,
    now: datetime | None,
    log: list[str] | None,
    role: str | None,
) -> Release:
    from toolchain.sign.trust import BUILTIN_SOURCE_DIR, ROOT_FILE
    from toolchain.sign.tuf_client import METADATA_DIR
    from toolchain.sign.tuf_repository import Repository

    _check_version(version, repo_root)
    _check_clean(repo_root)
    commit = _source_commit(repo_root)
    signed_source = _signed_source(repo_root, commit)
    references = repo_root / REFERENCES_DIR
    directory = references / version
    if directory.exists() and any(directory.iterdir()):
        raise InputError(
            f"release {version} is already published at {directory}",
            hint="a published release is never rewritten; release a new version",
        )
    signed_at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    if not Repository(references).exists():
        raise InputError(
            f"no TUF repository in {references} (no {METADATA_DIR}/): publishing a release "
            "needs one, its release roles decide who signs which release",
            hint="create it with keep tuf init and delegate releases to your key with keep tuf "
            "add-release-key (reference-measurements/README.md)",
        )
    # TUF decides who signs: the key must have a release role for this version.
    role = role or release_role(references, key, version)
    envelopes = _sign_examples(
        version, key, repo_root, directory, signed_at=signed_at, source=signed_source, log=log
    )
    builtin = repo_root / BUILTIN_SOURCE_DIR / ROOT_FILE
    role, written = publish_to_tuf(
        references,
        version,
        key,
        role=role,
        at=signed_at,
        pinned_root=builtin if builtin.is_file() else None,
    )
    return Release(version, directory, tuple(envelopes), key.key_id, written, role)


def _sign_examples(
    version: str,
    key: SigningKey,
    repo_root: Path,
    directory: Path,
    *,
    signed_at: datetime,
    source: SourceDigest,
    log: list[str] | None,
) -> list[Path]:
    """Build every example of ``repo_root``, publish its trusted artifacts under ``directory``
    and sign its reference statement (from the build's own plan); returns the envelopes."""
    from toolchain.image.cache import BuildCache
    from toolchain.image.keep_build import build_keep
    from toolchain.measure.reference import GENERATIONS
    from toolchain.sign import sign_statement

    apps = example_apps(repo_root)
    directory.mkdir(parents=True, exist_ok=True)
    envelopes: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="keep-release-") as scratch:
        cache = BuildCache(Path(scratch) / "cache")
        for name, app in apps.items():
            build = build_keep(
                app,
                Path(scratch) / name,
                vcpu_counts=RELEASE_VCPU_COUNTS,
                source_root=repo_root,
                cache=cache,
            )
            statement = reference_statement(
                build.artifacts,
                build.provenance,
                release=version,
                vcpu_counts=RELEASE_VCPU_COUNTS,
                backends=RELEASE_BACKENDS,
                generations=GENERATIONS,
                not_before=signed_at,
                valid_for=RELEASE_VALIDITY,
                source=source,
                plan=build.plan,
            )
            published = directory / name
            published.mkdir()
            for artifact in (*(build.artifacts[n] for n in TRUSTED_ARTIFACTS), build.provenance):
                shutil.copyfile(artifact, published / artifact.name)
            envelope = directory / f"{name}{ENVELOPE_SUFFIX}"
            envelope.write_bytes(sign_statement(statement, key))
            envelopes.append(envelope)
            if log is not None:
                digests = ", ".join(
                    f"{count} vCPU {digest.hex()[:16]}…"
                    for count, digest in build.launch_digests.items()
                )
                log.append(f"{envelope.relative_to(repo_root)}: {name} ({digests})")
    return envelopes
