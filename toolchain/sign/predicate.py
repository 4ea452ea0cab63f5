"""The Keepstack reference-measurement predicate (``https://keepstack.dev/reference-measurements/v1``).

What one release measures: the launch digest for each launch configuration, the digests of every
component, the pinned toolchain, the digest of the build provenance record, a validity window
and (releases from 0.3.0 on) the source it was built from (``source``: the ``treeSha256`` of its
trusted source files, ``toolchain.release.source``, and the git commit holding them).
Its JSON form is specified by ``schema/keepstack-reference-v1.schema.json``; ``from_json`` checks
the schema first and then what a schema cannot say (window order, no ambiguous configuration).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from toolchain.errors import InputError
from toolchain.measure.reference import CPU_GENERATIONS
from toolchain.sign.schema_check import load_schema, validate

PREDICATE_TYPE = "https://keepstack.dev/reference-measurements/v1"
SCHEMA_FILE = "keepstack-reference-v1.schema.json"

BACKENDS = ("kvm", "nil", "snp")
LAUNCH_DIGEST_SIZE = 48
_RELEASE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_HEX = re.compile(r"[0-9a-f]+")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with seconds precision, as the predicate stores it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 time with a zone (``Z`` or an offset); a date alone means 00:00 UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} {text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        if "T" in text or " " in text:
            raise InputError(f"{what} {text!r} has no time zone (add Z for UTC)")
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(f"{what} must carry a time zone (a naive datetime is ambiguous)")
    return moment.astimezone(UTC).replace(microsecond=0)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.fullmatch(text) is not None


@dataclass(frozen=True)
class LaunchConfig:
    """One launch configuration and the launch digest the firmware reports for it."""

    cpu_generation: str  # "milan" | "genoa" | "turin" | "any"
    vcpus: int
    guest_policy: int
    backend: str  # "kvm" | "nil" | "snp"
    launch_digest: bytes  # 48 bytes

    def __post_init__(self) -> None:
        if self.cpu_generation not in CPU_GENERATIONS:
            raise InputError(
                f"unknown CPU generation {self.cpu_generation!r} "
                f"(known: {', '.join(CPU_GENERATIONS)})"
            )
        if isinstance(self.vcpus, bool) or not isinstance(self.vcpus, int) or self.vcpus < 1:
            raise InputError(f"vCPU count must be a positive integer, found {self.vcpus!r}")
        if isinstance(self.guest_policy, bool) or not 0 <= self.guest_policy < 1 << 64:
            raise InputError(f"guest policy must fit in 64 bits, found {self.guest_policy!r}")
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r} (known: {', '.join(BACKENDS)})")
        if not isinstance(self.launch_digest, bytes) or len(self.launch_digest) != 48:
            raise InputError(
                f"launch digest must be {LAUNCH_DIGEST_SIZE} bytes, "
                f"found {len(self.launch_digest)!r}"
            )

    @property
    def key(self) -> tuple[str, int, int, str]:
        """What identifies the configuration (everything but its digest)."""
        return (self.cpu_generation, self.vcpus, self.guest_policy, self.backend)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpuGeneration": self.cpu_generation,
            "vcpus": self.vcpus,
            "guestPolicy": f"0x{self.guest_policy:016x}",
            "backend": self.backend,
            "launchDigest": self.launch_digest.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchConfig:
        return cls(
            cpu_generation=data["cpuGeneration"],
            vcpus=data["vcpus"],
            guest_policy=int(data["guestPolicy"], 16),
            backend=data["backend"],
            launch_digest=bytes.fromhex(data["launchDigest"]),
        )


@dataclass(frozen=True)
class ComponentDigest:
    """A component of the stack by name, with its SHA-256 and SHA-384 (lowercase hex)."""

    name: str
    sha256: str
    sha384: str

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 255:
            raise InputError(f"component name must be 1 to 255 characters, found {self.name!r}")
        if not _is_hex(self.sha256, 64):
            raise InputError(f"component {self.name}: sha256 must be 64 lowercase hex digits")
        if not _is_hex(self.sha384, 96):
            raise InputError(f"component {self.name}: sha384 must be 96 lowercase hex digits")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256, "sha384": self.sha384}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComponentDigest:
        return cls(data["name"], data["digest"]["sha256"], data["digest"]["sha384"])


@dataclass(frozen=True)
class SourceDigest:
    """The source a release was built from: ``tree_sha256`` over its trusted source files (see
    ``toolchain.release.source``) and the git commit holding them. The commit is a locator; the
    digest decides whether a tree is the signed source."""

    tree_sha256: str
    commit: str | None = None  # 40 (SHA-1) or 64 (SHA-256) lowercase hex digits

    def __post_init__(self) -> None:
        if not isinstance(self.tree_sha256, str) or not _is_hex(self.tree_sha256, 64):
            raise InputError("source treeSha256 must be 64 lowercase hex digits")
        if self.commit is not None and not (
            isinstance(self.commit, str) and (_is_hex(self.commit, 40) or _is_hex(self.commit, 64))
        ):
            raise InputError(f"source commit {self.commit!r} must be 40 or 64 lowercase hex digits")

    def to_json(self) -> dict[str, Any]:
        document = {"treeSha256": self.tree_sha256}
        if self.commit is not None:
            document["commit"] = self.commit
        return document

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceDigest:
        return cls(tree_sha256=data["treeSha256"], commit=data.get("commit"))


@dataclass(frozen=True)
class KeepPredicate:
    """The predicate of a signed reference measurement."""

    release: str
    configs: list[LaunchConfig]
    components: list[ComponentDigest]
    toolchain: dict[str, str]
    provenance_sha256: str
    not_before: datetime
    not_after: datetime
    development: bool = False
    source: SourceDigest | None = None  # None: a release signed before sources were (0.1, 0.2)

    def __post_init__(self) -> None:
        if not isinstance(self.release, str) or not _RELEASE.fullmatch(self.release):
            raise InputError(
                f"release {self.release!r} must be 1-64 characters of letters, digits, . + _ -"
            )
        if not self.configs:
            raise InputError("a reference needs at least one launch configuration")
        seen: dict[tuple[str, int, int, str], LaunchConfig] = {}
        for config in self.configs:
            if not isinstance(config, LaunchConfig):
                raise InputError(f"launch configurations must be LaunchConfig, found {config!r}")
            earlier = seen.setdefault(config.key, config)
            if earlier is not config and earlier.launch_digest != config.launch_digest:
                raise InputError(
                    f"launch configuration {config.key} is listed twice with different digests"
                )
        names = [c.name for c in self.components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"component(s) listed twice: {', '.join(duplicates)}")
        for tool, pin in self.toolchain.items():
            if not isinstance(tool, str) or not isinstance(pin, str) or not tool or not pin:
                raise InputError(f"toolchain entry {tool!r}: {pin!r} must be two non-empty strings")
        if not _is_hex(self.provenance_sha256, 64):
            raise InputError("provenance digest must be a SHA-256: 64 lowercase hex digits")
        not_before = _aware(self.not_before, "not_before")
        not_after = _aware(self.not_after, "not_after")
        if not_before >= not_after:
            raise InputError(
                f"validity window is empty: not before {format_time(not_before)} "
                f"is not earlier than not after {format_time(not_after)}"
            )
        if not isinstance(self.development, bool):
            raise InputError("development must be true or false")
        if self.source is not None and not isinstance(self.source, SourceDigest):
            raise InputError(f"source must be a SourceDigest, found {self.source!r}")
        # Normalised to UTC at whole seconds: exactly what the JSON form carries.
        object.__setattr__(self, "not_before", not_before)
        object.__setattr__(self, "not_after", not_after)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "development": self.development,
            "validity": {
                "notBefore": format_time(self.not_before),
                "notAfter": format_time(self.not_after),
            },
            "launchConfigurations": [c.to_json() for c in self.configs],
            "components": [c.to_json() for c in self.components],
            "toolchain": dict(self.toolchain),
            "buildProvenance": {"sha256": self.provenance_sha256},
            # Absent, not null, when unsigned: the statements of 0.1.0 and 0.2.0 have no field.
            **({"source": self.source.to_json()} if self.source is not None else {}),
        }

    @classmethod
    def from_json(cls, data: object) -> KeepPredicate:
        """Parse and validate (schema, then semantics); InputError names every problem found."""
        errors = validate(data, load_schema(SCHEMA_FILE), root="predicate")
        if errors:
            shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if errors[5:] else "")
            raise InputError(f"predicate does not match {PREDICATE_TYPE}: {shown}")
        if not isinstance(data, dict):  # excluded by the schema; kept for the type checker
            raise InputError("predicate must be a JSON object")
        validity = data["validity"]
        return cls(
            release=data["release"],
            configs=[LaunchConfig.from_json(c) for c in data["launchConfigurations"]],
            components=[ComponentDigest.from_json(c) for c in data["components"]],
            toolchain=dict(data["toolchain"]),
            provenance_sha256=data["buildProvenance"]["sha256"],
            not_before=parse_time(validity["notBefore"], "notBefore"),
            not_after=parse_time(validity["notAfter"], "notAfter"),
            development=data["development"],
            source=SourceDigest.from_json(data["source"]) if "source" in data else None,
        )
