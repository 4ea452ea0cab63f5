"""What a report must show to be accepted: ``VerificationPolicy``, with secure defaults, from TOML.

Defaults: debugging and the migration agent forbidden, VMPL 0, report versions 2-5, reserved bits
reported (rejected in strict mode). Everything the defaults cannot know (nonce, measurements,
minimum TCB, ...) is unset and then shown as a skipped check with the reason, never passed silently.

TOML keys are the field names; bytes are hex strings; ``min_abi`` is "MAJOR.MINOR"; ``min_tcb`` is
a table of components (bootloader, tee, snp, microcode, fmc)::

    allow_debug = false
    vmpl = 0
    min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
    allowed_measurements = ["aabb..."]
    required_platform_flags = ["tsme_enabled"]
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import InputError
from toolchain.snp.policy import POLICY_FLAGS
from toolchain.snp.report import PLATFORM_FLAGS

TCB_COMPONENTS = ("fmc", "bootloader", "tee", "snp", "microcode")
_BYTE_SIZES = {
    "report_data": 64,
    "host_data": 32,
    "family_id": 16,
    "image_id": 16,
}
_DIGEST_SETS = {
    "allowed_measurements": 48,
    "allowed_id_key_digests": 48,
    "allowed_author_key_digests": 48,
}


@dataclass(frozen=True)
class VerificationPolicy:
    """The verifier's expectations. Every unset expectation is reported as a skipped check."""

    allow_debug: bool = False
    allow_migration_agent: bool = False
    allow_smt: bool = True
    vmpl: int | None = 0
    allowed_versions: frozenset[int] = frozenset({2, 3, 4, 5})
    min_abi: tuple[int, int] | None = None  # firmware ABI (CURRENT_MAJOR.CURRENT_MINOR)
    min_tcb: Mapping[str, int] | None = None  # component -> minimum, for REPORTED_TCB
    min_guest_svn: int | None = None
    required_platform_flags: frozenset[str] = frozenset()
    required_policy_flags: frozenset[str] = frozenset()
    report_data: bytes | None = None  # expected REPORT_DATA (a shorter nonce is zero-padded)
    host_data: bytes | None = None
    family_id: bytes | None = None
    image_id: bytes | None = None
    allowed_measurements: frozenset[bytes] | None = None
    allowed_id_key_digests: frozenset[bytes] | None = None
    allowed_author_key_digests: frozenset[bytes] | None = None
    require_crl: bool = False
    require_fresh_crl: bool = False
    strict: bool = False  # reject reserved bits that are set

    def __post_init__(self) -> None:
        if self.vmpl is not None and not 0 <= self.vmpl <= 3:
            raise InputError(f"vmpl must be 0..3, not {self.vmpl}")
        for name, size in _BYTE_SIZES.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, bytes) or len(value) > size):
                raise InputError(f"{name} must be at most {size} bytes")
        for name, size in _DIGEST_SETS.items():
            values = getattr(self, name)
            if values is not None and any(len(v) != size for v in values):
                raise InputError(f"every entry of {name} must be {size} bytes")
        unknown = self.required_platform_flags - set(PLATFORM_FLAGS.values())
        if unknown:
            known = ", ".join(PLATFORM_FLAGS.values())
            raise InputError(f"unknown platform flag(s) {sorted(unknown)} (known: {known})")
        unknown = self.required_policy_flags - set(POLICY_FLAGS.values())
        if unknown:
            known = ", ".join(POLICY_FLAGS.values())
            raise InputError(f"unknown guest policy flag(s) {sorted(unknown)} (known: {known})")
        if self.min_tcb is not None:
            bad = set(self.min_tcb) - set(TCB_COMPONENTS)
            if bad or any(not 0 <= v <= 0xFF for v in self.min_tcb.values()):
                raise InputError(
                    f"min_tcb takes components {', '.join(TCB_COMPONENTS)} with values 0..255"
                )

    def replace(self, **changes: Any) -> VerificationPolicy:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_toml(cls, text: str) -> VerificationPolicy:
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"policy is not valid TOML: {exc}") from exc
        return cls.from_mapping(table)

    @classmethod
    def load(cls, path: Path) -> VerificationPolicy:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read policy {path}: {exc}") from exc
        return cls.from_toml(text)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> VerificationPolicy:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise InputError(f"unknown policy key(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for key, raw in table.items():
            values[key] = _convert(key, raw)
        return cls(**values)


def _hex(key: str, raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise InputError(f"policy {key}: expected a hex string")
    try:
        return bytes.fromhex(raw.removeprefix("0x"))
    except ValueError as exc:
        raise InputError(f"policy {key}: not hex: {raw!r}") from exc


def _convert(key: str, raw: Any) -> Any:
    if key in ("allow_debug", "allow_migration_agent", "allow_smt", "strict") or key in (
        "require_crl",
        "require_fresh_crl",
    ):
        if not isinstance(raw, bool):
            raise InputError(f"policy {key}: expected true or false")
        return raw
    if key in ("vmpl", "min_guest_svn"):
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise InputError(f"policy {key}: expected a non-negative integer")
        return raw
    if key == "allowed_versions":
        if not isinstance(raw, list) or not all(isinstance(v, int) for v in raw):
            raise InputError(f"policy {key}: expected a list of integers")
        return frozenset(raw)
    if key == "min_abi":
        text = str(raw)
        major, _, minor = text.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise InputError(f'policy min_abi: expected "MAJOR.MINOR", not {raw!r}')
        return int(major), int(minor)
    if key == "min_tcb":
        if not isinstance(raw, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw.values()
        ):
            raise InputError("policy min_tcb: expected a table of integers")
        return dict(raw)
    if key in ("required_platform_flags", "required_policy_flags"):
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise InputError(f"policy {key}: expected a list of names")
        return frozenset(raw)
    if key in _BYTE_SIZES:
        return _hex(key, raw)
    if key in _DIGEST_SETS:
        if not isinstance(raw, list):
            raise InputError(f"policy {key}: expected a list of hex strings")
        return frozenset(_hex(key, v) for v in raw)
    raise InputError(f"policy key {key} cannot be set from a file")  # pragma: no cover
