"""The trust policy: which public keys may sign references, for what, and how many must agree.

Which trust anchor a command uses (``TrustPolicy.select``), never read from the current directory:

1. ``--trust FILE`` when given;
2. else the file named by ``$KEEPSTACK_TRUST`` (documented; an explicit choice of the user);
3. else the **built-in** anchor shipped inside the installed package
   (``toolchain/sign/release-trust/``), loaded with importlib.resources: the pinned first TUF
   root ``root.json`` when the package ships one, else (the one-release bridge until the
   project's TUF repository is initialised) the policy ``trust.toml``.

A FILE ending in ``.json`` is a pinned TUF root: the policy is then what the TUF client
(``toolchain.sign.tuf_client``) establishes from it against the repository's metadata
(``$KEEPSTACK_TUF_REPOSITORY``, else ``reference-measurements/`` beside keepstack or in the
current directory; metadata is verified from the root, so its location decides nothing), and
``for_envelope`` picks, per envelope, the role that lists its exact bytes and that role's keys.

``--trusted-key PUB`` (``TrustPolicy.from_keys``) trusts exactly the keys given. Whatever was
chosen, ``describe()`` names it ("built-in" or the path) with the SHA-256 of the policy file, and
every verification checklist carries that line. The file's SHA-256 pins the whole policy: each
key entry pins its public key by ``keyid`` (the SHA-256 of its SubjectPublicKeyInfo DER).

A policy file (``trust.toml``)::

    version = 1
    threshold = 2                      # M: distinct trusted keys that must sign

    [[keys]]
    file = "keys/release-a.pub.pem"    # relative to trust.toml
    keyid = "<sha256 of the key's SubjectPublicKeyInfo DER>"
    releases = ["0.1.*"]               # optional fnmatch patterns; default: every release
    not_before = 2026-11-01T00:00:00Z  # optional: the key counts only at verification
    not_after = 2027-11-01T00:00:00Z   #   times inside this range

Keys are identified by their key ID, recomputed from the key file: a ``keyid`` that does not match
the file is an error, so one key can never stand for two. ``add_key`` and ``retire_key`` (``keep
trust``, ``nox -s release``) edit a policy file in place, keep its comments, and re-read it: an
edit that does not load as intended is never left behind.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputError, PlatformError
from toolchain.sign.keys import (
    PublicKey,
    algorithm_of,
    key_id,
    load_public_key,
    public_key_der,
    public_key_pem,
)
from toolchain.sign.predicate import format_time, parse_time

if TYPE_CHECKING:
    from toolchain.sign.tuf_client import TufTrust

POLICY_VERSION = 1
#: The environment variable naming a trust policy file (used when --trust is not given).
TRUST_ENV = "KEEPSTACK_TRUST"
#: How the policy shipped inside the package is named in every checklist.
BUILTIN = "built-in"
POLICY_FILE = "trust.toml"
#: The pinned first TUF root, when the package ships one (it then replaces trust.toml).
ROOT_FILE = "root.json"
KEYS_DIR = "keys"
#: Where the built-in policy lives: in the package, and (for ``nox -s release``) in a source tree.
BUILTIN_PACKAGE = "toolchain.sign"
BUILTIN_DIR = "release-trust"
BUILTIN_SOURCE_DIR = Path("toolchain", "sign", BUILTIN_DIR)
_KEY_FIELDS = {"file", "keyid", "releases", "not_before", "not_after", "name"}
_TOP_FIELDS = {"version", "threshold", "keys"}


@dataclass(frozen=True)
class TrustedKey:
    public_key: PublicKey
    key_id: str
    name: str
    releases: tuple[str, ...] | None = None  # fnmatch patterns; None: every release
    not_before: datetime | None = None
    not_after: datetime | None = None

    @property
    def algorithm(self) -> str:
        return algorithm_of(self.public_key)

    def scope_problem(self, release: str | None, at: datetime) -> str | None:
        """Why this key does not count for ``release`` at time ``at`` (None: it counts)."""
        if self.not_before is not None and at < self.not_before:
            return f"key trusted only from {format_time(self.not_before)}"
        if self.not_after is not None and at > self.not_after:
            return f"key trusted only until {format_time(self.not_after)}"
        if self.releases is not None:
            if release is None:
                return "key is trusted only for Keepstack releases " + ", ".join(self.releases)
            if not any(fnmatch.fnmatchcase(release, p) for p in self.releases):
                return f"key is not trusted for release {release} (only {', '.join(self.releases)})"
        return None


@dataclass(frozen=True)
class TrustPolicy:
    keys: tuple[TrustedKey, ...]
    threshold: int
    source: str = "trusted keys"  # "built-in", a file's path, or how the keys were given
    sha256: str = ""  # of the policy file ("" for keys given one by one)
    path: Path | None = None  # the policy file, when there is one
    role: str = ""  # the TUF role whose keys these are
    tuf: TufTrust | None = None  # a TUF trust: decides per envelope (for_envelope)

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise InputError(f"{self.source}: threshold must be an integer")
        if self.threshold < 1:
            raise InputError(f"{self.source}: threshold must be at least 1, found {self.threshold}")
        ids = [k.key_id for k in self.keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError(
                f"{self.source}: the same key is listed more than once ({', '.join(duplicates)}); "
                "one key counts once toward the threshold"
            )

    def key(self, wanted: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.key_id == wanted), None)

    def with_threshold(self, threshold: int) -> TrustPolicy:
        return replace(self, threshold=threshold)

    @property
    def builtin(self) -> bool:
        return self.source == BUILTIN

    def describe(self) -> str:
        """Which policy this is, for a checklist: "built-in" or the path, and its SHA-256; for
        TUF, the root (version and SHA-256, and the pinned root it was followed from)."""
        if self.tuf is not None:
            return self.tuf.describe()
        if self.role:
            ids = ", ".join(k.key_id for k in self.keys)
            return f"{self.source}, key IDs {ids}"
        if self.sha256:
            return f"{self.source}, sha256 {self.sha256}"
        ids = ", ".join(k.key_id for k in self.keys)
        return f"{self.source} (key ID: SHA-256 of the public key {ids})"

    def for_envelope(self, envelope: bytes) -> tuple[TrustPolicy | None, str]:
        """The policy that decides ``envelope`` and what TUF found: this policy itself, or for a
        TUF trust the role that lists the envelope's exact bytes (None when no role does)."""
        if self.tuf is None:
            return self, ""
        target = self.tuf.lookup(envelope)
        digest = hashlib.sha256(envelope).hexdigest()
        if target is None:
            return None, f"sha256 {digest}, listed by no TUF targets role"
        policy = target.policy
        if self.threshold > policy.threshold:  # --threshold may only raise it
            policy = policy.with_threshold(self.threshold)
        return policy, f"{target.path} (role {target.role}, sha256 {digest})"

    @classmethod
    def from_keys(
        cls, keys: Sequence[PublicKey], threshold: int = 1, source: str = "trusted keys"
    ) -> TrustPolicy:
        """Trust exactly these keys, for every release and time; the same key given twice is
        kept once (it can only ever count once)."""
        unique: dict[str, TrustedKey] = {}
        for public in keys:
            algorithm_of(public)
            identity = key_id(public)
            unique.setdefault(identity, TrustedKey(public, identity, identity[:16]))
        return cls(tuple(unique.values()), threshold, source)

    @classmethod
    def builtin_file(cls, name: str = POLICY_FILE) -> Path:
        """The built-in policy file inside the installed package (never the current directory)."""
        resource = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_DIR, name)
        # Keys are files beside the policy: the package must be installed as plain files.
        if not isinstance(resource, Path):
            raise PlatformError(
                f"the built-in trust policy is not a file ({resource!r}); "
                "install keepstack as a regular (unzipped) package"
            )
        return resource

    @classmethod
    def load_builtin(cls, environ: Mapping[str, str] | None = None) -> TrustPolicy:
        """The project's trust anchor, shipped in the package: the pinned TUF root when there
        is one, else the trust.toml bridge."""
        root = cls.builtin_file(ROOT_FILE)
        if root.is_file():
            return cls.load_tuf_root(root, source=BUILTIN, environ=environ)
        return cls.load(cls.builtin_file(), source=BUILTIN)

    @classmethod
    def load_tuf_root(
        cls, path: Path, *, source: str | None = None, environ: Mapping[str, str] | None = None
    ) -> TrustPolicy:
        """The trust a TUF client establishes from the pinned root ``path`` (see the module)."""
        from toolchain.sign.tuf_client import default_repository, open_tuf_trust

        where = str(path) if source is None else source
        try:
            root = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read TUF root {where}: {exc.strerror}") from exc
        trust = open_tuf_trust(root, where, default_repository(environ))
        return cls((), 1, f"TUF ({where})", trust.root_sha256, path, tuf=trust)

    @classmethod
    def select(
        cls, path: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> TrustPolicy:
        """``path`` when given, else ``$KEEPSTACK_TRUST`` when set, else the built-in policy."""
        if path is not None:
            if path.suffix == ".json":
                return cls.load_tuf_root(path, environ=environ)
            return cls.load(path)
        named = (os.environ if environ is None else environ).get(TRUST_ENV, "")
        if named:
            source = f"{named} (from ${TRUST_ENV})"
            if named.endswith(".json"):
                return cls.load_tuf_root(Path(named), source=source, environ=environ)
            return cls.load(Path(named), source=source)
        return cls.load_builtin(environ)

    @classmethod
    def load(cls, path: Path, *, source: str | None = None) -> TrustPolicy:
        # Errors name the file (and where its name came from, e.g. $KEEPSTACK_TRUST).
        where = str(path) if source in (None, BUILTIN) else str(source)
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read trust policy {where}: {exc}") from exc
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"trust policy {where} is not valid TOML: {exc}") from exc
        unknown = set(document) - _TOP_FIELDS
        if unknown:
            raise InputError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
        version = document.get("version", POLICY_VERSION)
        if version != POLICY_VERSION:
            raise InputError(f"{where}: policy version {version!r} (this Keepstack reads 1)")
        entries = document.get("keys", [])
        if not isinstance(entries, list):
            raise InputError(f"{where}: keys must be an array of tables ([[keys]])")
        keys = tuple(
            _load_key(entry, path.parent, f"{where} keys[{i}]") for i, entry in enumerate(entries)
        )
        return cls(
            keys,
            document.get("threshold", 1),
            where if source is None else source,
            hashlib.sha256(data).hexdigest(),
            path,
        )


def _optional_time(entry: dict[str, object], name: str, where: str) -> datetime | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InputError(f"{where}: {name} needs a time zone (end it with Z for UTC)")
        return value
    if isinstance(value, str):
        return parse_time(value, f"{where} {name}")
    raise InputError(f"{where}: {name} must be a date-time")


def _load_key(entry: object, base: Path, where: str) -> TrustedKey:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: must be a table")
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    file = entry.get("file")
    expected_id = entry.get("keyid")
    if not isinstance(file, str) or not isinstance(expected_id, str):
        raise InputError(f"{where}: needs file (a public key PEM) and keyid")
    public = load_public_key(base / file)
    actual_id = key_id(public)
    if actual_id != expected_id.lower():
        raise InputError(
            f"{where}: keyid {expected_id} does not match {file} (its key ID is {actual_id})"
        )
    releases = entry.get("releases")
    if releases is not None and (
        not isinstance(releases, list) or not all(isinstance(r, str) and r for r in releases)
    ):
        raise InputError(f'{where}: releases must be a list of patterns such as "0.1.*"')
    not_before = _optional_time(entry, "not_before", where)
    not_after = _optional_time(entry, "not_after", where)
    if not_before is not None and not_after is not None and not_before >= not_after:
        raise InputError(f"{where}: not_before must be earlier than not_after")
    name = entry.get("name", Path(file).name)
    return TrustedKey(
        public,
        actual_id,
        str(name),
        tuple(releases) if releases is not None else None,
        not_before,
        not_after,
    )


# --- editing a policy file (keep trust add-key / retire, nox -s release) -------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TABLE = re.compile(r"\s*\[")
_KEYS_TABLE = re.compile(r"\s*\[\[\s*keys\s*\]\]")
_NEW_POLICY = (
    f"# Keepstack trust policy (see keep trust --help).\nversion = {POLICY_VERSION}\n"
    "threshold = 1\n"
)


def _toml_string(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string with ASCII escapes is a TOML basic string


def _write_checked(
    path: Path, text: str, check: Callable[[TrustPolicy], str | None]
) -> TrustPolicy:
    """Write ``text`` to ``path`` atomically, re-read it, and restore the old file unless
    ``check`` (returning a problem or None) accepts the policy it now holds."""
    old = path.read_bytes() if path.exists() else None
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise PlatformError(f"cannot write trust policy {path}: {exc.strerror}") from exc
    try:
        policy = TrustPolicy.load(path)
    except InputError:
        _restore(path, old)
        raise
    problem = check(policy)
    if problem is not None:
        _restore(path, old)
        raise InputError(f"{path}: the edit did not take effect ({problem}); file restored")
    return policy


def _restore(path: Path, old: bytes | None) -> None:
    if old is None:
        path.unlink()
    else:
        path.write_bytes(old)


def add_key(
    policy_file: Path,
    public: PublicKey,
    *,
    name: str,
    releases: Sequence[str] | None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[TrustPolicy, TrustedKey]:
    """Trust ``public`` in ``policy_file`` (created when absent): write ``keys/NAME.pub.pem``
    beside it and append a ``[[keys]]`` entry; refuses a key that is already listed."""
    if not _NAME.fullmatch(name):
        raise InputError(f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if releases is not None and not all(isinstance(r, str) and r.strip() for r in releases):
        raise InputError('releases must be non-empty patterns such as "0.*"')
    identity = key_id(public)
    text = _NEW_POLICY
    if policy_file.exists():
        existing = TrustPolicy.load(policy_file)
        known = existing.key(identity)
        if known is not None:
            raise InputError(f"{policy_file} already trusts key {identity} (as {known.name})")
        text = policy_file.read_text(encoding="utf-8").rstrip("\n") + "\n"
    relative = f"{KEYS_DIR}/{name}.pub.pem"
    key_file = policy_file.parent / relative
    pem = public_key_pem(public)
    if key_file.exists():
        if public_key_der(load_public_key(key_file)) != public_key_der(public):
            raise InputError(f"{key_file} exists and holds another key; choose another --name")
    else:
        try:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_bytes(pem)
        except OSError as exc:
            raise PlatformError(f"cannot write {key_file}: {exc.strerror}") from exc
    lines = [
        "",
        "[[keys]]",
        f"name = {_toml_string(name)}",
        f"file = {_toml_string(relative)}",
        f"keyid = {_toml_string(identity)}",
    ]
    if releases is not None:
        lines.append("releases = [" + ", ".join(_toml_string(r) for r in releases) + "]")
    if not_before is not None:
        lines.append(f"not_before = {format_time(not_before)}")
    if not_after is not None:
        lines.append(f"not_after = {format_time(not_after)}")

    def added(policy: TrustPolicy) -> str | None:
        return None if policy.key(identity) is not None else f"key {identity} is not listed"

    policy = _write_checked(policy_file, text + "\n".join(lines) + "\n", added)
    return policy, policy.key(identity)  # type: ignore[return-value]


def find_key(policy: TrustPolicy, wanted: str) -> TrustedKey:
    """The key whose ID is ``wanted`` or starts with it (at least 8 hex digits, unambiguous)."""
    wanted = wanted.lower()
    if len(wanted) < 8 or not re.fullmatch(r"[0-9a-f]+", wanted):
        raise InputError(f"key ID {wanted!r}: give at least 8 hex digits of it")
    found = [k for k in policy.keys if k.key_id.startswith(wanted)]
    if not found:
        listed = ", ".join(f"{k.key_id[:16]} ({k.name})" for k in policy.keys) or "none"
        raise InputError(f"{policy.source} lists no key {wanted} (it lists: {listed})")
    if len(found) > 1:
        raise InputError(f"key ID {wanted} is ambiguous in {policy.source}; give more digits")
    return found[0]


def retire_key(
    policy_file: Path, wanted: str, not_after: datetime
) -> tuple[TrustPolicy, TrustedKey]:
    """Set ``not_after`` of one key entry (found by key ID) in ``policy_file``: the key counts
    only for verifications up to that time. The rest of the file is kept as it is."""
    key = find_key(TrustPolicy.load(policy_file), wanted)
    lines = policy_file.read_text(encoding="utf-8").splitlines()
    keyid_line = re.compile(rf'\s*keyid\s*=\s*"{key.key_id}"\s*(#.*)?', re.IGNORECASE)
    entry = f"not_after = {format_time(not_after)}"
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if keyid_line.fullmatch(line) and _KEYS_TABLE.match(_table_header(lines, i))
        ),
        None,
    )
    if start is None:
        raise InputError(
            f"{policy_file}: cannot find the keyid line of key {key.key_id} to edit",
            hint="edit the file by hand: add not_after to that key's [[keys]] table",
        )
    end = next((i for i in range(start, len(lines)) if _TABLE.match(lines[i])), len(lines))
    existing = next(
        (i for i in range(start - 1, -1, -1) if _TABLE.match(lines[i])), 0
    )  # the table's header line
    replaced = False
    for i in range(existing + 1, end):
        if re.match(r"\s*not_after\s*=", lines[i]):
            lines[i] = entry
            replaced = True
    if not replaced:
        lines.insert(start + 1, entry)

    def retired(policy: TrustPolicy) -> str | None:
        now = policy.key(key.key_id)
        if now is None or now.not_after != not_after.replace(microsecond=0):
            return f"key {key.key_id} does not end at {format_time(not_after)}"
        return None

    policy = _write_checked(policy_file, "\n".join(lines) + "\n", retired)
    return policy, policy.key(key.key_id)  # type: ignore[return-value]


def _table_header(lines: list[str], index: int) -> str:
    """The table header line above ``lines[index]`` ("" at top level)."""
    return next((lines[i] for i in range(index, -1, -1) if _TABLE.match(lines[i])), "")
