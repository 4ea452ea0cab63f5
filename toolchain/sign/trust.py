"""The trust policy: which public keys may sign references, for what, and how many must agree.

``reference-measurements/trust.toml``::

    version = 1
    threshold = 2                      # M: distinct trusted keys that must sign

    [[keys]]
    file = "keys/release-a.pub.pem"    # relative to trust.toml
    keyid = "<sha256 of the key's SubjectPublicKeyInfo DER>"
    releases = ["0.1.*"]               # optional fnmatch patterns; default: every release
    not_before = 2026-11-01T00:00:00Z  # optional: the key counts only at verification
    not_after = 2027-11-01T00:00:00Z   #   times inside this range

Keys are identified by their key ID, recomputed from the key file: a ``keyid`` that does not match
the file is an error, so one key can never stand for two.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from toolchain.errors import InputError
from toolchain.sign.keys import PublicKey, algorithm_of, key_id, load_public_key
from toolchain.sign.predicate import format_time, parse_time

POLICY_VERSION = 1
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
    source: str = "trusted keys"

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
        return TrustPolicy(self.keys, threshold, self.source)

    @classmethod
    def from_keys(cls, keys: Sequence[PublicKey], threshold: int = 1) -> TrustPolicy:
        """Trust exactly these keys, for every release and time; the same key given twice is
        kept once (it can only ever count once)."""
        unique: dict[str, TrustedKey] = {}
        for public in keys:
            algorithm_of(public)
            identity = key_id(public)
            unique.setdefault(identity, TrustedKey(public, identity, identity[:16]))
        return cls(tuple(unique.values()), threshold, "trusted keys")

    @classmethod
    def load(cls, path: Path) -> TrustPolicy:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read trust policy {path}: {exc}") from exc
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"trust policy {path} is not valid TOML: {exc}") from exc
        source = str(path)
        unknown = set(document) - _TOP_FIELDS
        if unknown:
            raise InputError(f"{source}: unknown setting(s) {', '.join(sorted(unknown))}")
        version = document.get("version", POLICY_VERSION)
        if version != POLICY_VERSION:
            raise InputError(f"{source}: policy version {version!r} (this Keepstack reads 1)")
        entries = document.get("keys", [])
        if not isinstance(entries, list):
            raise InputError(f"{source}: keys must be an array of tables ([[keys]])")
        keys = tuple(
            _load_key(entry, path.parent, f"{source} keys[{i}]") for i, entry in enumerate(entries)
        )
        return cls(keys, document.get("threshold", 1), source)


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
