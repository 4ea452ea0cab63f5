"""The TUF repository of reference measurements and its key ceremonies (``keep tuf ...``).

The repository is a folder (the project's is ``reference-measurements/``): its targets are the
files under it (``0.3.0/hello.dsse.json``, ``0.3.0/hello/app.wasm``, ...), its metadata is in
``metadata/`` with consistent snapshots (``N.root.json``, ``N.targets.json``, ``N.ROLE.json``,
``N.snapshot.json``; only ``timestamp.json`` has no version in its name). Roles:

* ``root``: the root keys, threshold M (the project: keepstack-root-1 and -2, 2 of 2). A new root
  version is signed by the threshold of the old root's keys and of its own (``rotate_root``).
* ``targets``: the same keys by default. It only delegates, and lists the releases signed before
  TUF (the one-time trust step, ``import_legacy``).
* one delegated role per release key (``add_release_key``), named after the key, scoped to
  release paths (``0.*`` → ``0.*/*`` and ``0.*/*/*``); it lists a release's files, and the
  release's DSSE envelopes must be signed by its keys.
* ``snapshot`` and ``timestamp``: the online key (by default the first release key), re-signed
  by ``refresh`` before they expire.

Every ceremony takes the signing keys it needs as ``SigningKey``s (files or tokens,
``toolchain.sign.tokens``) and refuses, naming the role, when they cannot meet a threshold.
After writing, the whole repository is verified by the TUF client from its first root, so a
ceremony never leaves metadata that a client would refuse.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from toolchain.errors import InputError, PlatformError
from toolchain.sign.keys import key_id
from toolchain.sign.tokens import FileKey, SigningKey, TokenKey, make_tuf_signer, tuf_key
from toolchain.sign.tuf_client import CUSTOM, METADATA_DIR, release_of

if TYPE_CHECKING:
    from tuf.api.metadata import Metadata

    from toolchain.sign.keys import PublicKey

#: Expiry of each role, from the moment it is signed (documented in reference-measurements/).
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=365),
    "release": timedelta(days=365),
    "snapshot": timedelta(days=90),
    "timestamp": timedelta(days=30),
}
TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
NAME_FIELD = "x-keepstack-name"
_HASHES = ["sha256"]


def key_name(key: SigningKey) -> str:
    """A key's label: the token object's label, else the key file's name without suffixes."""
    if isinstance(key, TokenKey):
        return key.uri.object or key.key_id[:16]
    name = Path(key.description).name
    for suffix in (".pem", ".key"):
        name = name.removesuffix(suffix)
    return name


@dataclass(frozen=True)
class Keyring:
    """The signing keys a ceremony was given; each role signs with the ones it lists."""

    keys: tuple[SigningKey, ...]

    def sign(
        self, metadata: Metadata[Any], role: str, keyids: Sequence[str], threshold: int
    ) -> None:
        """Replace ``metadata``'s signatures by those of every given key the role lists."""
        usable = [k for k in self.keys if k.key_id in keyids]
        if len(usable) < threshold:
            given = ", ".join(f"{key_name(k)} {k.key_id[:16]}" for k in self.keys) or "none"
            raise InputError(
                f"role {role} needs {threshold} signature(s) from its keys "
                f"({', '.join(keyids)}); the keys given ({given}) make {len(usable)}",
                hint="pass the role's keys with --key (a file or a pkcs11: URI)",
            )
        metadata.signatures.clear()
        for key in usable:
            metadata.sign(make_tuf_signer(key), append=True)


class Repository:
    """A TUF repository folder: reads the newest metadata, writes new versions."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.metadata = directory / METADATA_DIR

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Work on a copy of ``metadata/``; only when the block succeeds (and the client then
        verifies the copy from the first root) are the new files moved in, versioned files
        first and ``timestamp.json`` last, so a reader never sees a half-made ceremony."""
        real = self.metadata
        scratch = Path(tempfile.mkdtemp(prefix=".metadata-", dir=self.directory))
        try:
            if real.is_dir():
                shutil.copytree(real, scratch, dirs_exist_ok=True)
            self.metadata = scratch
            yield
            verify_repository(self)
            real.mkdir(parents=True, exist_ok=True)
            new = sorted(
                (p for p in scratch.iterdir() if p.is_file() and not p.name.startswith(".")),
                key=lambda p: p.name == "timestamp.json",
            )
            for path in new:
                target = real / path.name
                if not target.exists() or target.read_bytes() != path.read_bytes():
                    path.replace(target)
        except OSError as exc:
            raise PlatformError(f"cannot update {real}: {exc.strerror or exc}") from exc
        finally:
            self.metadata = real
            shutil.rmtree(scratch, ignore_errors=True)

    def exists(self) -> bool:
        return (self.metadata / "1.root.json").is_file()

    def _load(self, name: str) -> Metadata[Any]:
        from tuf.api.metadata import Metadata

        path = self.metadata / name
        try:
            return Metadata.from_bytes(path.read_bytes())
        except OSError as exc:
            raise InputError(f"cannot read TUF metadata {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise InputError(f"TUF metadata {path} is not valid: {exc}") from exc

    def root_version(self) -> int:
        versions = [int(p.name.split(".")[0]) for p in self.metadata.glob("*.root.json")]
        if not versions:
            raise InputError(f"{self.metadata} holds no root metadata: run keep tuf init")
        return max(versions)

    def root(self) -> Metadata[Any]:
        return self._load(f"{self.root_version()}.root.json")

    def timestamp(self) -> Metadata[Any]:
        return self._load("timestamp.json")

    def snapshot(self) -> Metadata[Any]:
        version = self.timestamp().signed.snapshot_meta.version
        return self._load(f"{version}.snapshot.json")

    def targets(self, role: str = "targets") -> Metadata[Any]:
        meta = self.snapshot().signed.meta.get(f"{role}.json")
        if meta is None:
            raise InputError(f"role {role} is not in the snapshot of {self.metadata}")
        return self._load(f"{meta.version}.{role}.json")

    def write(self, metadata: Metadata[Any], role: str) -> bytes:
        from tuf.api.serialization.json import JSONSerializer

        data = metadata.to_bytes(JSONSerializer(compact=False))
        name = "timestamp.json" if role == "timestamp" else f"{metadata.signed.version}.{role}.json"
        path = self.metadata / name
        if role != "timestamp" and path.exists():
            raise InputError(f"{path} exists: a version is never rewritten")
        temporary = path.with_name(f".{name}.tmp")
        try:
            self.metadata.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data + b"\n")
            temporary.replace(path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise PlatformError(f"cannot write {path}: {exc.strerror}") from exc
        return data + b"\n"


def _expiry(role: str, now: datetime, expiry: dict[str, timedelta] | None) -> datetime:
    table = {**EXPIRY, **(expiry or {})}
    return (now + table.get(role, table["release"])).replace(microsecond=0)


def _bump(
    metadata: Metadata[Any], role: str, now: datetime, expiry: dict[str, timedelta] | None
) -> None:
    metadata.signed.version += 1
    metadata.signed.expires = _expiry(role, now, expiry)


def _paths(patterns: Sequence[str]) -> list[str]:
    """Release patterns ("0.3.*") as TUF path patterns: a release's files and one folder deep."""
    paths: list[str] = []
    for pattern in patterns:
        if not pattern or "/" in pattern:
            raise InputError(f"release pattern {pattern!r}: a release such as 0.3.0 or 0.*")
        paths += [f"{pattern}/*", f"{pattern}/*/*"]
    return paths


def _role_keys(root: Any, role: str) -> tuple[list[str], int]:
    entry = root.roles[role]
    return list(entry.keyids), entry.threshold


def _snapshot_and_timestamp(
    repo: Repository,
    keyring: Keyring,
    changed: dict[str, Metadata[Any]],
    now: datetime,
    expiry: dict[str, timedelta] | None,
    *,
    root: Any | None = None,
) -> None:
    """A new snapshot naming the new versions of ``changed`` roles, and a new timestamp."""
    from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp

    root = root or repo.root().signed
    if (repo.metadata / "timestamp.json").exists():
        snapshot = repo.snapshot()
        _bump(snapshot, "snapshot", now, expiry)
        timestamp = repo.timestamp()
        _bump(timestamp, "timestamp", now, expiry)
    else:
        snapshot = Metadata(Snapshot(expires=_expiry("snapshot", now, expiry)))
        timestamp = Metadata(Timestamp(expires=_expiry("timestamp", now, expiry)))
    for role, metadata in changed.items():
        snapshot.signed.meta[f"{role}.json"] = MetaFile(version=metadata.signed.version)
    keyring.sign(snapshot, "snapshot", *_role_keys(root, "snapshot"))
    data = repo.write(snapshot, "snapshot")
    timestamp.signed.snapshot_meta = MetaFile.from_data(snapshot.signed.version, data, _HASHES)
    keyring.sign(timestamp, "timestamp", *_role_keys(root, "timestamp"))
    repo.write(timestamp, "timestamp")


def init(
    repo: Repository,
    keyring: Keyring,
    *,
    root_keys: Sequence[SigningKey],
    root_threshold: int,
    online_key: SigningKey,
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> None:
    """Root v1 (root and targets: ``root_keys``, ``root_threshold``; snapshot and timestamp:
    ``online_key``), an empty targets role, snapshot and timestamp."""
    from tuf.api.metadata import Delegations, Metadata, Root, Targets

    if repo.exists() or (repo.metadata / "timestamp.json").exists():
        raise InputError(f"{repo.metadata} already holds a TUF repository")
    if not 1 <= root_threshold <= len({k.key_id for k in root_keys}):
        raise InputError(
            f"root threshold {root_threshold} needs between 1 and {len(root_keys)} root keys"
        )
    moment = now or datetime.now(UTC)
    root = Metadata(Root(expires=_expiry("root", moment, expiry), consistent_snapshot=True))
    for key in root_keys:
        for role in ("root", "targets"):
            root.signed.add_key(tuf_key(key.public_key, key_name(key)), role)
    for role in ("snapshot", "timestamp"):
        root.signed.add_key(tuf_key(online_key.public_key, key_name(online_key)), role)
    root.signed.roles["root"].threshold = root_threshold
    root.signed.roles["targets"].threshold = root_threshold
    keyring.sign(root, "root", *_role_keys(root.signed, "root"))
    repo.write(root, "root")
    targets = Metadata(Targets(expires=_expiry("targets", moment, expiry)))
    targets.signed.delegations = Delegations(keys={}, roles={})
    keyring.sign(targets, "targets", *_role_keys(root.signed, "targets"))
    repo.write(targets, "targets")
    _snapshot_and_timestamp(repo, keyring, {"targets": targets}, moment, expiry, root=root.signed)


def add_release_key(
    repo: Repository,
    keyring: Keyring,
    release_key: SigningKey,
    *,
    name: str,
    releases: Sequence[str],
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> None:
    """Delegate ``releases`` to a new role ``name`` with ``release_key`` (targets signs the
    delegation, the new key signs its first, empty role metadata)."""
    from tuf.api.metadata import DelegatedRole, Metadata, Targets

    moment = now or datetime.now(UTC)
    root = repo.root().signed
    targets = repo.targets()
    delegations = targets.signed.delegations
    if name in TOP_LEVEL or not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise InputError(
            f"role name {name!r}: letters, digits, '.', '_' or '-', not a top-level role"
        )
    if name in (delegations.roles or {}):
        raise InputError(f"role {name} exists already; revoke its key first or pick another name")
    delegations.keys[release_key.key_id] = tuf_key(release_key.public_key, key_name(release_key))
    delegations.roles[name] = DelegatedRole(
        name, [release_key.key_id], 1, terminating=True, paths=_paths(releases)
    )
    _bump(targets, "targets", moment, expiry)
    keyring.sign(targets, "targets", *_role_keys(root, "targets"))
    role = Metadata(Targets(expires=_expiry("release", moment, expiry)))
    Keyring((release_key,)).sign(role, name, [release_key.key_id], 1)
    repo.write(role, name)
    repo.write(targets, "targets")
    _snapshot_and_timestamp(repo, keyring, {"targets": targets, name: role}, moment, expiry)


def _target(repo: Repository, path: str) -> Any:
    from tuf.api.metadata import TargetFile

    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not release_of(path):
        raise InputError(f"target {path}: a path inside a release folder of {repo.directory}")
    local = repo.directory / relative
    try:
        return TargetFile.from_file(path, str(local), _HASHES)
    except OSError as exc:
        raise InputError(f"cannot read target {local}: {exc.strerror}") from exc


def release_files(repo: Repository, release: str) -> list[str]:
    """Every regular file of one release folder, as target paths (sorted)."""
    folder = repo.directory / release
    if not folder.is_dir():
        raise InputError(f"no release folder {folder}")
    files: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise InputError(f"{path} is a symbolic link: a target must be a regular file")
        if path.is_file():
            files.append(path.relative_to(repo.directory).as_posix())
    return files


def add_targets(
    repo: Repository,
    keyring: Keyring,
    role_name: str,
    paths: Iterable[str],
    *,
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> list[str]:
    """List ``paths`` (files of the repository) in role ``role_name``: a new role version signed
    by its keys, then snapshot and timestamp. Refuses a path the role is not delegated."""
    moment = now or datetime.now(UTC)
    targets = repo.targets()
    roles = targets.signed.delegations.roles or {}
    if role_name not in roles:
        raise InputError(
            f"no release role {role_name} (roles: {', '.join(roles) or 'none'})",
            hint="keep tuf add-release-key creates one",
        )
    delegated = roles[role_name]
    role = repo.targets(role_name)
    added = []
    for path in paths:
        if not delegated.is_delegated_path(path):
            allowed = ", ".join(delegated.paths or [])
            raise InputError(f"role {role_name} may not list {path} (its paths: {allowed})")
        role.signed.targets[path] = _target(repo, path)
        added.append(path)
    _bump(role, "release", moment, expiry)
    keyring.sign(role, role_name, list(delegated.keyids), delegated.threshold)
    repo.write(role, role_name)
    _snapshot_and_timestamp(repo, keyring, {role_name: role}, moment, expiry)
    return added


def import_legacy(
    repo: Repository,
    keyring: Keyring,
    releases: Sequence[str],
    legacy_key: PublicKey,
    *,
    legacy_name: str,
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> list[str]:
    """The one-time trust step for releases signed before TUF: the targets role (the root
    keyholders) lists every file of ``releases``, each envelope naming ``legacy_key`` as the
    DSSE key of its time. Each envelope must verify with that key first."""
    from toolchain.sign.references import verify_envelope
    from toolchain.sign.trust import TrustPolicy

    moment = now or datetime.now(UTC)
    root = repo.root().signed
    targets = repo.targets()
    key = tuf_key(legacy_key, legacy_name)
    custom = {CUSTOM: {"dsseKeys": {key.keyid: key.to_dict()}, "dsseThreshold": 1}}
    policy = TrustPolicy.from_keys([legacy_key], source=f"legacy key {legacy_name}")
    listed = []
    for release in releases:
        for path in release_files(repo, release):
            target = _target(repo, path)
            if path.endswith(".dsse.json"):
                data = (repo.directory / path).read_bytes()
                checklist, references = verify_envelope(data, policy, at=moment)
                if references is None or references.release != release:
                    failed = "; ".join(c.line() for c in checklist.failures) or "another release"
                    raise InputError(f"{path} does not verify with {legacy_name}: {failed}")
                target.unrecognized_fields["custom"] = custom
            targets.signed.targets[path] = target
            listed.append(path)
    _bump(targets, "targets", moment, expiry)
    keyring.sign(targets, "targets", *_role_keys(root, "targets"))
    repo.write(targets, "targets")
    _snapshot_and_timestamp(repo, keyring, {"targets": targets}, moment, expiry)
    return listed


def rotate_root(
    repo: Repository,
    keyring: Keyring,
    *,
    role: str = "root",
    add: Sequence[SigningKey | PublicKey] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> int:
    """A new root version changing the keys (or threshold) of top-level ``role``; signed by the
    threshold of the old root keys and of the new ones. Roles whose keys changed are re-signed."""
    moment = now or datetime.now(UTC)
    if role not in TOP_LEVEL:
        raise InputError(f"{role} is not a top-level role ({', '.join(TOP_LEVEL)})")
    old = repo.root()
    old_keys, old_threshold = _role_keys(old.signed, "root")
    new = repo.root()
    for item in add:
        if isinstance(item, FileKey | TokenKey):
            new.signed.add_key(tuf_key(item.public_key, key_name(item)), role)
        else:
            new.signed.add_key(tuf_key(item, key_id(item)[:16]), role)
    for keyid in remove:
        full = _full_keyid(new.signed.roles[role].keyids, keyid, role)
        new.signed.revoke_key(full, role)
    if threshold is not None:
        new.signed.roles[role].threshold = threshold
    entry = new.signed.roles[role]
    if not 1 <= entry.threshold <= len(entry.keyids):
        raise InputError(
            f"role {role} would have {len(entry.keyids)} key(s) and threshold {entry.threshold}",
            hint=f"add its new key in the same step: keep tuf rotate-root --role {role} "
            "--add NEW --remove OLD",
        )
    _bump(new, "root", moment, expiry)
    # The new root must satisfy both the old root's threshold and its own.
    keyring.sign(new, "root (old keys)", old_keys, old_threshold)
    signatures = dict(new.signatures)
    new_keys, new_threshold = _role_keys(new.signed, "root")
    keyring.sign(new, "root (new keys)", new_keys, new_threshold)
    signatures.update(new.signatures)
    new.signatures.clear()
    new.signatures.update(signatures)
    repo.write(new, "root")
    if role == "targets":
        targets = repo.targets()
        _bump(targets, "targets", moment, expiry)
        keyring.sign(targets, "targets", *_role_keys(new.signed, "targets"))
        repo.write(targets, "targets")
        changed = {"targets": targets}
        _snapshot_and_timestamp(repo, keyring, changed, moment, expiry, root=new.signed)
    elif role in ("snapshot", "timestamp"):
        _snapshot_and_timestamp(repo, keyring, {}, moment, expiry, root=new.signed)
    return int(new.signed.version)


def _full_keyid(keyids: Iterable[str], prefix: str, where: str) -> str:
    matches = [k for k in keyids if k.startswith(prefix.lower())]
    if len(prefix) < 8 or len(matches) != 1:
        raise InputError(
            f"key {prefix}: {'no' if not matches else 'more than one'} key of {where} "
            "starts with it (give 8+ hex digits)"
        )
    return matches[0]


def revoke_key(
    repo: Repository,
    keyring: Keyring,
    keyid: str,
    *,
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> list[str]:
    """Stop trusting a key everywhere: a new root without it (top-level roles), a new targets
    version without it (delegated roles; a role left without keys is removed, and its
    releases stop verifying). Returns the roles it was removed from."""
    moment = now or datetime.now(UTC)
    root = repo.root().signed
    targets = repo.targets()
    delegations = targets.signed.delegations
    every = set(root.keys) | set(delegations.keys)
    full = _full_keyid(every, keyid, "this repository")
    roles: list[str] = []
    top = [r for r in TOP_LEVEL if full in root.roles[r].keyids]
    for role in top:
        rotate_root(repo, keyring, role=role, remove=[full], now=moment, expiry=expiry)
        roles.append(role)
    targets = repo.targets()
    delegations = targets.signed.delegations
    changed = False
    for name, role in list((delegations.roles or {}).items()):
        if full in role.keyids:
            role.keyids.remove(full)
            roles.append(name)
            changed = True
            if len(role.keyids) < role.threshold:
                del delegations.roles[name]
    if changed:
        if not any(full in r.keyids for r in (delegations.roles or {}).values()):
            delegations.keys.pop(full, None)
        _bump(targets, "targets", moment, expiry)
        keyring.sign(targets, "targets", *_role_keys(repo.root().signed, "targets"))
        repo.write(targets, "targets")
        _snapshot_and_timestamp(repo, keyring, {"targets": targets}, moment, expiry)
    if not roles:
        raise InputError(f"key {full} is not used by any role")
    return roles


def refresh(
    repo: Repository,
    keyring: Keyring,
    *,
    now: datetime | None = None,
    expiry: dict[str, timedelta] | None = None,
) -> None:
    """New snapshot and timestamp versions with fresh expiry dates (same targets)."""
    _snapshot_and_timestamp(repo, keyring, {}, now or datetime.now(UTC), expiry)


def show(repo: Repository) -> dict[str, Any]:
    """Every role: version, expiry, keys (ID and name), threshold; delegations with their paths."""
    root = repo.root()
    data = (repo.metadata / f"{root.signed.version}.root.json").read_bytes()
    result: dict[str, Any] = {
        "repository": str(repo.directory),
        "root_sha256": hashlib.sha256(data).hexdigest(),
        "roles": {},
    }

    def keys(ids: Iterable[str], table: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"keyid": k, "name": str(table[k].unrecognized_fields.get(NAME_FIELD, ""))} for k in ids
        ]

    versions = {
        "root": root,
        "timestamp": repo.timestamp(),
        "snapshot": repo.snapshot(),
        "targets": repo.targets(),
    }
    for name, metadata in versions.items():
        entry = root.signed.roles[name]
        result["roles"][name] = {
            "version": metadata.signed.version,
            "expires": metadata.signed.expires.isoformat(),
            "threshold": entry.threshold,
            "keys": keys(entry.keyids, root.signed.keys),
        }
    result["roles"]["targets"]["legacy_targets"] = len(versions["targets"].signed.targets)
    delegations = versions["targets"].signed.delegations
    for name, role in (delegations.roles or {}).items():
        metadata = repo.targets(name)
        result["roles"][name] = {
            "version": metadata.signed.version,
            "expires": metadata.signed.expires.isoformat(),
            "threshold": role.threshold,
            "keys": keys(role.keyids, delegations.keys),
            "paths": list(role.paths or []),
            "targets": len(metadata.signed.targets),
        }
    return result


def verify_repository(repo: Repository) -> None:
    """Run the TUF client over the repository from its first root (a fresh client's view)."""
    import tempfile

    from toolchain.sign.tuf_client import open_tuf_trust

    first = (repo.metadata / "1.root.json").read_bytes()
    with tempfile.TemporaryDirectory(prefix="keep-tuf-check-") as cache:
        open_tuf_trust(first, "first", repo.directory, cache=Path(cache), metadata=repo.metadata)
