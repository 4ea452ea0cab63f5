"""The TUF client: which reference envelopes are current, and who may sign them.

``open_tuf_trust(root, origin, repository)`` starts from a *pinned* root (the first root, shipped
in the package, or one a tenant pinned with ``--trust root.json``) and runs python-tuf's
``ngclient.Updater`` against the repository's ``metadata/`` folder, read from the local disk (no
network: ``_LocalFetcher``). The updater follows root rotations one version at a time (each new
root signed by the threshold of the previous root's keys and of its own), then checks timestamp,
snapshot and targets: signatures and thresholds, expiry, versions never lower than what this
user's client saw before (rollback; its state lives in ``state_dir("tuf", <pinned root>)``),
and that every file is the version, length and hash the role above it names (mix-and-match).
Every delegated role is then loaded the same way. Any failure stops with EvidenceError naming
the role and the check.

Only then do the DSSE and statement checks run (``toolchain.sign.references``): an envelope
counts only if a TUF targets role lists its exact bytes (SHA-256 and length), and its DSSE
signatures must come from that role's keys, at that role's threshold, for the release named
by the target's path (``0.3.0/hello.dsse.json`` → release ``0.3.0``). Releases signed before TUF
(0.1.0, 0.2.0) are listed by the top-level ``targets`` role (the root keyholders' one-time
trust step) with the DSSE key of their time in the target's ``custom.keepstack`` field.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from toolchain.errors import EvidenceError, InputError
from toolchain.state import state_dir

if TYPE_CHECKING:
    from tuf.api.metadata import Root, TargetFile, Targets

    from toolchain.sign.trust import TrustedKey, TrustPolicy

METADATA_DIR = "metadata"
#: Environment variable naming the repository folder (the one holding ``metadata/``).
REPOSITORY_ENV = "KEEPSTACK_TUF_REPOSITORY"
REFERENCES_DIR = "reference-measurements"
#: Where the custom field of a legacy target names the DSSE keys of its time.
CUSTOM = "keepstack"
MAX_ROLES = 64
_ROLE_CHECKS = {
    "ExpiredMetadataError": "expiry",
    "BadVersionNumberError": "version (rollback or mix-and-match)",
    "EqualVersionNumberError": "version (rollback or mix-and-match)",
    "UnsignedMetadataError": "signature threshold",
    "LengthOrHashMismatchError": "length and hashes (mix-and-match)",
    "DownloadLengthMismatchError": "length",
    "DownloadHTTPError": "presence (file missing)",
}


def _checks_of(exc: Exception) -> str:
    return next(
        (check for cls in type(exc).__mro__ if (check := _ROLE_CHECKS.get(cls.__name__))),
        "metadata",
    )


def refused(role: str, exc: Exception) -> EvidenceError:
    """The one-line refusal for a TUF failure: which role, which check, python-tuf's reason."""
    message = str(exc) or type(exc).__name__
    if "root.json" in message:  # python-tuf checks the final root's expiry with the timestamp
        role = "root"
    return EvidenceError(f"TUF metadata refused: role {role}, {_checks_of(exc)} check: {message}")


class _LocalFetcher:
    """A python-tuf fetcher for a folder on this machine (``file://`` URLs only, no network)."""

    def __new__(cls, base: Path) -> Any:
        from tuf.api.exceptions import DownloadHTTPError
        from tuf.ngclient import FetcherInterface

        root = base.resolve()

        class Fetcher(FetcherInterface):
            def _fetch(self, url: str) -> Iterator[bytes]:
                parsed = urlparse(url)
                path = Path(unquote(parsed.path)).resolve()
                if parsed.scheme != "file" or not path.is_relative_to(root):
                    raise DownloadHTTPError(f"{url} is outside {root}", 403)
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise DownloadHTTPError(f"{path.name} not found in {root}", 404) from None
                yield data

        return Fetcher()


@dataclass(frozen=True)
class TufTarget:
    """One target file, the role that lists it, and the policy its DSSE signatures answer to."""

    path: str
    role: str
    info: TargetFile
    policy: TrustPolicy


@dataclass(frozen=True)
class TufTrust:
    """What a TUF client established: the current root and every listed target."""

    origin: str  # "built-in" or the pinned root's path
    pinned_sha256: str
    root_version: int
    root_sha256: str
    repository: Path
    targets: tuple[TufTarget, ...]
    expires: dict[str, str]  # role -> expiry, for keep tuf show and the checklist

    def describe(self) -> str:
        return (
            f"TUF root v{self.root_version} sha256 {self.root_sha256} "
            f"(followed from the pinned {self.origin} root, sha256 {self.pinned_sha256}), "
            f"metadata {self.repository / METADATA_DIR}"
        )

    def lookup(self, data: bytes) -> TufTarget | None:
        """The target whose bytes these are, in TUF's order of trust (top-level first)."""
        digest = hashlib.sha256(data).hexdigest()
        for target in self.targets:
            if target.info.hashes.get("sha256") == digest and target.info.length == len(data):
                target.info.verify_length_and_hashes(data)  # the library's own check, too
                return target
        return None


def default_repository(environ: Mapping[str, str] | None = None) -> Path:
    """``$KEEPSTACK_TUF_REPOSITORY``, else ``reference-measurements/`` beside the running code,
    else in the current directory. Where the metadata comes from decides nothing: every file is
    verified from the pinned root."""
    env = os.environ if environ is None else environ
    named = env.get(REPOSITORY_ENV, "")
    if named:
        return Path(named)
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / REFERENCES_DIR / METADATA_DIR).is_dir():
            return base / REFERENCES_DIR
    raise InputError(
        f"no TUF metadata: no {REFERENCES_DIR}/{METADATA_DIR}/ beside keepstack or in the "
        "current directory",
        hint=f"run in a Keepstack checkout, or set ${REPOSITORY_ENV} to the repository folder",
    )


def open_tuf_trust(
    root: bytes,
    origin: str,
    repository: Path,
    *,
    cache: Path | None = None,
    metadata: Path | None = None,
) -> TufTrust:
    """Refresh from the pinned ``root`` against ``repository/metadata`` (or ``metadata``: a
    ceremony's scratch copy) and load every delegated role (see the module doc)."""
    from tuf.api import exceptions
    from tuf.ngclient import Updater

    metadata = metadata or repository / METADATA_DIR
    if not metadata.is_dir():
        raise InputError(f"TUF repository {repository} has no {METADATA_DIR}/ folder")
    pinned = hashlib.sha256(root).hexdigest()
    local = cache or state_dir("tuf", pinned[:32])
    try:
        updater = Updater(
            str(local),
            metadata.resolve().as_uri() + "/",
            fetcher=_LocalFetcher(metadata),
            bootstrap=root,
        )
    except (exceptions.RepositoryError, ValueError) as exc:
        raise refused("root", exc) from exc
    except OSError as exc:
        raise InputError(f"cannot use TUF client state {local}: {exc}") from exc
    # refresh() step by step (python-tuf's own order), so that a failure names its role.
    steps = (
        ("root", updater._load_root),
        ("timestamp", updater._load_timestamp),
        ("snapshot", updater._load_snapshot),
        ("targets", lambda: updater._load_targets("targets", "root")),
    )
    for role, step in steps:
        try:
            step()
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise refused(role, exc) from exc
    trusted = updater._trusted_set
    targets = _walk(updater, trusted.root, trusted.targets)
    current_root = trusted.root
    root_file = local / "root_history" / f"{current_root.version}.root.json"
    expires = {
        "root": current_root.expires.isoformat(),
        "timestamp": trusted.timestamp.expires.isoformat(),
        "snapshot": trusted.snapshot.expires.isoformat(),
        "targets": trusted.targets.expires.isoformat(),
    }
    return TufTrust(
        origin,
        pinned,
        current_root.version,
        hashlib.sha256(root_file.read_bytes()).hexdigest(),
        repository,
        targets,
        expires,
    )


def _walk(updater: Any, root: Root, top: Targets) -> tuple[TufTarget, ...]:
    """Every target of every role, pre-order (TUF's order of trust), delegations loaded and
    verified by the updater; each with the policy its envelope's DSSE signatures answer to."""
    from tuf.api import exceptions

    found: list[TufTarget] = []
    top_role = root.roles["targets"]
    top_keys = [(root.keys[k], k) for k in top_role.keyids]
    queue: list[tuple[str, Targets, list[tuple[Any, str]], int]] = [
        ("targets", top, top_keys, top_role.threshold)
    ]
    seen: set[str] = set()
    while queue:
        name, role, keys, threshold = queue.pop(0)
        seen.add(name)
        for path, info in role.targets.items():
            found.append(TufTarget(path, name, info, _policy(name, path, info, keys, threshold)))
        if role.delegations is None or role.delegations.roles is None:
            continue
        for child in role.delegations.roles.values():
            if child.name in seen or len(seen) >= MAX_ROLES:
                continue
            try:
                loaded = updater._load_targets(child.name, name)
            except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
                raise refused(child.name, exc) from exc
            # A delegated role may list only paths its delegation names (python-tuf checks
            # this while searching by path; the hash lookup here must check it itself).
            stray = [p for p in loaded.targets if not child.is_delegated_path(p)]
            if stray:
                raise EvidenceError(
                    f"TUF metadata refused: role {child.name}, delegated paths check: lists "
                    f"{stray[0]}, outside its paths {', '.join(child.paths or [])}"
                )
            child_keys = [(role.delegations.keys[k], k) for k in child.keyids]
            queue.append((child.name, loaded, child_keys, child.threshold))
    return tuple(found)


def release_of(path: str) -> str:
    """The release a target path belongs to: its first folder (``0.3.0/hello.dsse.json``)."""
    parts = PurePosixPath(path).parts
    return parts[0] if len(parts) > 1 else ""


def _policy(
    role: str, path: str, info: TargetFile, keys: list[tuple[Any, str]], threshold: int
) -> TrustPolicy:
    """The DSSE policy of one target: its role's keys (or, for a legacy release listed by the
    top-level role, the keys its ``custom.keepstack`` names), only for its release."""
    from toolchain.sign.tokens import public_key_of_tuf
    from toolchain.sign.trust import TrustedKey, TrustPolicy

    custom = info.unrecognized_fields.get("custom")
    where = f"TUF role {role}, target {path}"
    legacy = isinstance(custom, dict) and CUSTOM in custom
    if isinstance(custom, dict) and CUSTOM in custom:
        if role != "targets":
            raise EvidenceError(
                f"TUF metadata refused: role {role}, target {path}: only the top-level "
                "targets role may name the DSSE keys of a legacy release"
            )
        keys, threshold = _legacy_keys(custom[CUSTOM], where)
    release = release_of(path)
    trusted: list[TrustedKey] = []
    for key, keyid in keys:
        public = public_key_of_tuf(key, where)
        name = str(key.unrecognized_fields.get("x-keepstack-name") or keyid[:16])
        trusted.append(TrustedKey(public, keyid, name, (release,) if release else ("",)))
    label = f"role {role}" + (" (legacy release, one-time trust step)" if legacy else "")
    return TrustPolicy(tuple(trusted), threshold, source=f"TUF {label}", role=role)


def _legacy_keys(value: object, where: str) -> tuple[list[tuple[Any, str]], int]:
    from securesystemslib.signer import Key

    if not isinstance(value, dict):
        raise InputError(f"{where}: custom.{CUSTOM} must be an object")
    raw_keys = value.get("dsseKeys")
    threshold = value.get("dsseThreshold")
    if not isinstance(raw_keys, dict) or not raw_keys or not isinstance(threshold, int):
        raise InputError(f"{where}: custom.{CUSTOM} needs dsseKeys and dsseThreshold")
    try:
        keys = [(Key.from_dict(k, dict(v)), k) for k, v in raw_keys.items()]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{where}: custom.{CUSTOM}.dsseKeys: {exc}") from exc
    return keys, threshold
