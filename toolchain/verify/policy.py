"""What a report must show to be accepted: ``VerificationPolicy``, with secure defaults, from TOML.

Defaults: debugging and the migration agent forbidden, VMPL 0, report versions 2-5, reserved bits
reported (rejected in strict mode), a CRL past its nextUpdate fails the revocation check
(``allow_stale_crl`` accepts it, said in the verdict). Everything the defaults cannot know (nonce,
measurements, minimum TCB, ...) is unset and then shown as a skipped check with the reason, never
passed silently.

TOML keys are the field names, every value strictly typed (a wrong type is unusable input naming
the key, the type found and a right example): booleans are booleans, integers are integers (not
floats, not booleans), bytes are hex strings; ``min_abi`` is a *string* "MAJOR.MINOR" (a float
would lose digits: 1.60 is 1.6); ``min_tcb`` is a table of components (bootloader, tee, snp,
microcode, fmc)::

    allow_debug = false
    vmpl = 0
    min_abi = "1.55"
    min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
    allowed_measurements = ["aabb..."]
    required_platform_flags = ["tsme_enabled"]
"""

from __future__ import annotations

import dataclasses
import re
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
    allow_stale_crl: bool = False  # accept a CRL past its nextUpdate (said in the verdict)
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
        if self.min_abi is not None and (
            len(self.min_abi) != 2 or any(not 0 <= part <= 0xFF for part in self.min_abi)
        ):
            raise InputError(f"min_abi takes (MAJOR, MINOR), each 0..255, not {self.min_abi}")
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
        known = {f.name for f in dataclasses.fields(cls)} | {_LEGACY_FRESH_CRL}
        unknown = set(table) - known
        if unknown:
            raise InputError(f"unknown policy key(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for key, raw in table.items():
            if key == _LEGACY_FRESH_CRL:
                _legacy_fresh_crl(raw)
                continue
            values[key] = _convert(key, raw)
        return cls(**values)


# Before a fresh CRL was the default, ``require_fresh_crl = true`` asked for one; it still means
# that (the default now). ``false`` would silently accept stale CRLs: that is ``allow_stale_crl``.
_LEGACY_FRESH_CRL = "require_fresh_crl"


def _legacy_fresh_crl(raw: Any) -> None:
    if _convert(_LEGACY_FRESH_CRL, raw) is False:
        raise InputError(
            "policy require_fresh_crl = false: a fresh CRL is now always required",
            hint="to accept a CRL past its nextUpdate, write allow_stale_crl = true",
        )


# What each key holds, for errors: (the kind of TOML value, an example of a right line).
_EXAMPLES: dict[str, tuple[str, str]] = {
    "allow_debug": ("a boolean", "allow_debug = false"),
    "allow_migration_agent": ("a boolean", "allow_migration_agent = false"),
    "allow_smt": ("a boolean", "allow_smt = true"),
    "strict": ("a boolean", "strict = true"),
    "require_crl": ("a boolean", "require_crl = true"),
    "allow_stale_crl": ("a boolean", "allow_stale_crl = false"),
    "require_fresh_crl": ("a boolean", "require_fresh_crl = true"),
    "vmpl": ("an integer 0..3", "vmpl = 0"),
    "min_guest_svn": ("a non-negative integer", "min_guest_svn = 1"),
    "allowed_versions": ("an array of integers", "allowed_versions = [3, 5]"),
    "min_abi": ('a string "MAJOR.MINOR", each part an integer 0..255', 'min_abi = "1.55"'),
    "min_tcb": (
        "a table of integers 0..255",
        "min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }",
    ),
    "required_platform_flags": ("an array of strings", 'required_platform_flags = ["smt_enabled"]'),
    "required_policy_flags": ("an array of strings", 'required_policy_flags = ["smt"]'),
    "allowed_measurements": ("an array of hex strings", 'allowed_measurements = ["6d6c35…"]'),
    "allowed_id_key_digests": ("an array of hex strings", 'allowed_id_key_digests = ["ab12…"]'),
    "allowed_author_key_digests": (
        "an array of hex strings",
        'allowed_author_key_digests = ["ab12…"]',
    ),
    "report_data": ("a hex string", 'report_data = "0011aabb"'),
    "host_data": ("a hex string", 'host_data = "0011aabb"'),
    "family_id": ("a hex string", 'family_id = "00112233445566778899aabbccddeeff"'),
    "image_id": ("a hex string", 'image_id = "00112233445566778899aabbccddeeff"'),
}

_MIN_ABI = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})")


def _toml_type(raw: Any) -> str:
    """The TOML name of a parsed value's type (bool before int: a bool is an int in Python)."""
    for python, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
    ):
        if isinstance(raw, python):
            return name
    return type(raw).__name__  # dates and times


def _wrong(key: str, raw: Any, *, where: str = "") -> InputError:
    """A wrong value: the key, what it takes, the type and value found, and a right example."""
    kind, example = _EXAMPLES[key]
    return InputError(
        f"policy {key}{where}: expected {kind}, found {_toml_type(raw)} {raw!r}",
        hint=f"for example: {example}",
    )


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def _int_list(key: str, raw: Any) -> list[int]:
    if not isinstance(raw, list):
        raise _wrong(key, raw)
    for index, item in enumerate(raw):
        if not _is_int(item) or item < 0:
            raise _wrong(key, item, where=f"[{index}]")
    return raw


def _str_list(key: str, raw: Any) -> list[str]:
    if not isinstance(raw, list):
        raise _wrong(key, raw)
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise _wrong(key, item, where=f"[{index}]")
    return raw


def _hex(key: str, raw: Any, where: str = "") -> bytes:
    if not isinstance(raw, str):
        raise _wrong(key, raw, where=where)
    try:
        return bytes.fromhex(raw.removeprefix("0x"))
    except ValueError as exc:
        raise InputError(f"policy {key}{where}: not hex: {raw!r}") from exc


def _abi(raw: Any) -> tuple[int, int]:
    # A TOML float loses digits (1.60 is 1.6, so ABI 1.52 would pass): only a string is exact.
    match = _MIN_ABI.fullmatch(raw) if isinstance(raw, str) else None
    if match is None or any(int(part) > 0xFF for part in match.groups()):
        raise _wrong("min_abi", raw)
    return int(match[1]), int(match[2])


def _convert(key: str, raw: Any) -> Any:
    kind, _ = _EXAMPLES.get(key, ("", ""))
    if kind == "a boolean":
        if not isinstance(raw, bool):
            raise _wrong(key, raw)
        return raw
    if key in ("vmpl", "min_guest_svn"):
        if not _is_int(raw) or raw < 0:
            raise _wrong(key, raw)
        return raw
    if key == "allowed_versions":
        return frozenset(_int_list(key, raw))
    if key == "min_abi":
        return _abi(raw)
    if key == "min_tcb":
        if not isinstance(raw, dict):
            raise _wrong(key, raw)
        for name, value in raw.items():
            if not _is_int(value):
                raise _wrong(key, value, where=f".{name}")
        return dict(raw)
    if key in ("required_platform_flags", "required_policy_flags"):
        return frozenset(_str_list(key, raw))
    if key in _BYTE_SIZES:
        return _hex(key, raw)
    if key in _DIGEST_SETS:
        if not isinstance(raw, list):
            raise _wrong(key, raw)
        return frozenset(_hex(key, v, f"[{i}]") for i, v in enumerate(raw))
    raise InputError(f"policy key {key} cannot be set from a file")  # pragma: no cover
