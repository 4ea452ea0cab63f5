"""The SEV-SNP ATTESTATION_REPORT (SNP ABI, "ATTESTATION_REPORT Structure"): 0x4A0 bytes.

Versions 2 to 5 share one layout; v3 added the CPUID family/model/stepping bytes, v5 the launch and
current mitigation vectors (earlier versions have zeros, reserved, there). The PSP signs bytes
0x000-0x29F with ECDSA P-384/SHA-384; R and S sit at 0x2A0 and 0x2E8 as 72-byte little-endian
integers. Every byte, reserved ones included, is kept so that ``to_bytes()`` round-trips exactly.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from toolchain.errors import InputError
from toolchain.snp.policy import GuestPolicy
from toolchain.snp.tcb import Product, TcbVersion

__all__ = [
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "AttestationReport",
    "KeyInfo",
    "PlatformInfo",
    "SigningKey",
    "TcbVersion",
    "load_report",
    "read_report_file",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
_SIG_COMPONENT = 72  # bytes per R/S field
_MSG_REPORT_RSP_HEADER = 0x20  # status(4) + report_size(4) + reserved(24)

# ---- PLATFORM_INFO ------------------------------------------------------------------------------

PLATFORM_FLAGS: dict[int, str] = {
    0: "smt_enabled",
    1: "tsme_enabled",
    2: "ecc_enabled",
    3: "rapl_disabled",
    4: "ciphertext_hiding_enabled",
    5: "alias_check_complete",
    6: "iommu_write_safe",
    7: "tio_enabled",
}
_PLATFORM_KNOWN = sum(1 << bit for bit in PLATFORM_FLAGS)


@dataclass(frozen=True)
class PlatformInfo:
    """PLATFORM_INFO: how the host platform was configured when the report was made."""

    value: int = 0

    def flags(self) -> dict[str, bool]:
        return {name: bool(self.value >> bit & 1) for bit, name in PLATFORM_FLAGS.items()}

    def has(self, flag: str) -> bool:
        for bit, name in PLATFORM_FLAGS.items():
            if name == flag:
                return bool(self.value >> bit & 1)
        raise InputError(
            f"unknown platform flag {flag!r} (known: {', '.join(PLATFORM_FLAGS.values())})"
        )

    @property
    def unknown_bits(self) -> int:
        return self.value & ~_PLATFORM_KNOWN

    def __str__(self) -> str:
        on = [name for name, set_ in self.flags().items() if set_]
        text = f"0x{self.value:x} ({', '.join(on) or '-'})"
        if self.unknown_bits:
            text += f" unknown bits 0x{self.unknown_bits:x}"
        return text


# ---- KEY_INFO (offset 0x48) ---------------------------------------------------------------------


class SigningKey:
    """SIGNING_KEY values: which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7
    NAMES: ClassVar[dict[int, str]] = {0: "VCEK", 1: "VLEK", 7: "none"}


@dataclass(frozen=True)
class KeyInfo:
    """The 32-bit field at 0x48: AUTHOR_KEY_EN, MASK_CHIP_ID and SIGNING_KEY."""

    value: int = 0

    @property
    def author_key_en(self) -> bool:
        return bool(self.value & 1)

    @property
    def mask_chip_id(self) -> bool:
        return bool(self.value >> 1 & 1)

    @property
    def signing_key(self) -> int:
        return self.value >> 2 & 0x7

    @property
    def signing_key_name(self) -> str:
        return SigningKey.NAMES.get(self.signing_key, f"reserved ({self.signing_key})")

    @property
    def reserved_bits(self) -> int:
        return self.value & ~0x1F

    def __str__(self) -> str:
        return (
            f"signing key {self.signing_key_name}, author key "
            f"{'enabled' if self.author_key_en else 'disabled'}"
            f"{', chip ID masked' if self.mask_chip_id else ''}"
        )


# ---- the report ---------------------------------------------------------------------------------

# (field, offset, size, kind). Kinds: u8/u32/u64 little-endian integers; bytes; tcb; special types.
_LAYOUT: tuple[tuple[str, int, int, str], ...] = (
    ("version", 0x000, 4, "u32"),
    ("guest_svn", 0x004, 4, "u32"),
    ("policy", 0x008, 8, "policy"),
    ("family_id", 0x010, 16, "bytes"),
    ("image_id", 0x020, 16, "bytes"),
    ("vmpl", 0x030, 4, "u32"),
    ("signature_algo", 0x034, 4, "u32"),
    ("current_tcb", 0x038, 8, "tcb"),
    ("platform_info", 0x040, 8, "platform"),
    ("key_info", 0x048, 4, "keyinfo"),
    ("reserved_04c", 0x04C, 4, "u32"),
    ("report_data", 0x050, 64, "bytes"),
    ("measurement", 0x090, 48, "bytes"),
    ("host_data", 0x0C0, 32, "bytes"),
    ("id_key_digest", 0x0E0, 48, "bytes"),
    ("author_key_digest", 0x110, 48, "bytes"),
    ("report_id", 0x140, 32, "bytes"),
    ("report_id_ma", 0x160, 32, "bytes"),
    ("reported_tcb", 0x180, 8, "tcb"),
    ("cpuid_fam_id", 0x188, 1, "u8"),
    ("cpuid_mod_id", 0x189, 1, "u8"),
    ("cpuid_step", 0x18A, 1, "u8"),
    ("reserved_18b", 0x18B, 0x15, "bytes"),
    ("chip_id", 0x1A0, 64, "bytes"),
    ("committed_tcb", 0x1E0, 8, "tcb"),
    ("current_build", 0x1E8, 1, "u8"),
    ("current_minor", 0x1E9, 1, "u8"),
    ("current_major", 0x1EA, 1, "u8"),
    ("reserved_1eb", 0x1EB, 1, "u8"),
    ("committed_build", 0x1EC, 1, "u8"),
    ("committed_minor", 0x1ED, 1, "u8"),
    ("committed_major", 0x1EE, 1, "u8"),
    ("reserved_1ef", 0x1EF, 1, "u8"),
    ("launch_tcb", 0x1F0, 8, "tcb"),
    ("launch_mit_vector", 0x1F8, 8, "u64"),
    ("current_mit_vector", 0x200, 8, "u64"),
    ("reserved_208", 0x208, SIGNED_SIZE - 0x208, "bytes"),
    ("signature_r", 0x2A0, _SIG_COMPONENT, "sig"),
    ("signature_s", 0x2E8, _SIG_COMPONENT, "sig"),
    ("reserved_330", 0x330, REPORT_SIZE - 0x330, "bytes"),
)


# One struct for the whole layout (little-endian; the fields tile the 0x4A0 bytes in order, which
# tests/test_report.py's round trips check).
_CODES = {"u8": "B", "u32": "I", "u64": "Q", "tcb": "Q", "policy": "Q", "platform": "Q"}
_CODES["keyinfo"] = "I"
_STRUCT = struct.Struct("<" + "".join(_CODES.get(kind, f"{size}s") for *_, size, kind in _LAYOUT))
_UNPACK = _STRUCT.unpack
_NAMES = tuple(name for name, *_ in _LAYOUT)
_WRAPPERS = {"policy": GuestPolicy, "platform": PlatformInfo, "keyinfo": KeyInfo}
_WRAPPED_FIELDS = tuple(
    (i, _WRAPPERS[kind]) for i, (*_, kind) in enumerate(_LAYOUT) if kind in _WRAPPERS
)
_TCB_FIELDS = tuple(i for i, (*_, kind) in enumerate(_LAYOUT) if kind == "tcb")
_SIG_FIELDS = tuple(i for i, (*_, kind) in enumerate(_LAYOUT) if kind == "sig")


def _zeros(size: int) -> Any:
    return dataclasses.field(default=bytes(size))


@dataclass(frozen=True)
class AttestationReport:
    """One attestation report, every field typed. Construct from fields or ``parse(bytes)``."""

    version: int = 3
    guest_svn: int = 0
    policy: GuestPolicy = dataclasses.field(default_factory=GuestPolicy)
    family_id: bytes = _zeros(16)
    image_id: bytes = _zeros(16)
    vmpl: int = 0
    signature_algo: int = SIGNATURE_ALGO_ECDSA_P384_SHA384
    current_tcb: TcbVersion = dataclasses.field(default_factory=TcbVersion)
    platform_info: PlatformInfo = dataclasses.field(default_factory=PlatformInfo)
    key_info: KeyInfo = dataclasses.field(default_factory=KeyInfo)
    reserved_04c: int = 0
    report_data: bytes = _zeros(64)
    measurement: bytes = _zeros(48)
    host_data: bytes = _zeros(32)
    id_key_digest: bytes = _zeros(48)
    author_key_digest: bytes = _zeros(48)
    report_id: bytes = _zeros(32)
    report_id_ma: bytes = _zeros(32)
    reported_tcb: TcbVersion = dataclasses.field(default_factory=TcbVersion)
    cpuid_fam_id: int = 0
    cpuid_mod_id: int = 0
    cpuid_step: int = 0
    reserved_18b: bytes = _zeros(0x15)
    chip_id: bytes = _zeros(64)
    committed_tcb: TcbVersion = dataclasses.field(default_factory=TcbVersion)
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    reserved_1eb: int = 0
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    reserved_1ef: int = 0
    launch_tcb: TcbVersion = dataclasses.field(default_factory=TcbVersion)
    launch_mit_vector: int = 0
    current_mit_vector: int = 0
    reserved_208: bytes = _zeros(SIGNED_SIZE - 0x208)
    signature_r: int = 0
    signature_s: int = 0
    reserved_330: bytes = _zeros(REPORT_SIZE - 0x330)
    # The bytes ``parse`` read (None when built from fields): ``to_bytes`` would rebuild exactly
    # these (every byte is a field), so the signed bytes are a slice of them. Not a constructor
    # argument, so ``dataclasses.replace`` (a new signature, say) never carries stale bytes.
    _raw: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, _offset, size, kind in _LAYOUT:
            value = getattr(self, name)
            if kind == "bytes":
                if not isinstance(value, bytes) or len(value) != size:
                    raise InputError(f"report field {name} must be {size} bytes")
            elif kind in ("u8", "u32", "u64", "sig"):
                if not isinstance(value, int) or not 0 <= value < 1 << (8 * size):
                    raise InputError(f"report field {name} must fit in {size} bytes")
            elif kind == "tcb" and not isinstance(value, TcbVersion):
                raise InputError(f"report field {name} must be a TcbVersion")
        layouts = {
            tcb.turin_layout
            for tcb in (self.current_tcb, self.reported_tcb, self.committed_tcb, self.launch_tcb)
        }
        if len(layouts) != 1:
            raise InputError("the report's four TCB fields must share one layout (FMC or not)")
        if not isinstance(self.policy, GuestPolicy):
            raise InputError("report field policy must be a GuestPolicy")
        if not isinstance(self.platform_info, PlatformInfo) or not 0 <= self.platform_info.value < (
            1 << 64
        ):
            raise InputError("report field platform_info must be a 64-bit PlatformInfo")
        if not isinstance(self.key_info, KeyInfo) or not 0 <= self.key_info.value < 1 << 32:
            raise InputError("report field key_info must be a 32-bit KeyInfo")

    # -- reading ----------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes) -> AttestationReport:
        """Decode exactly 0x4A0 raw bytes. Values are not judged here; the verifier does that."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InputError(f"a report is bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise InputError(
                f"an SEV-SNP attestation report is {REPORT_SIZE} bytes, this is {len(data)}",
                hint="a report embedded in a larger message can be read with an offset",
            )
        values: list[Any] = list(_UNPACK(data))
        turin = values[0] >= 3 and data[0x188] == 0x1A  # CPUID family 1Ah: Turin's TCB layout
        for index in _TCB_FIELDS:
            values[index] = TcbVersion.from_int(values[index], turin=turin)
        for index in _SIG_FIELDS:
            values[index] = int.from_bytes(values[index], "little")
        for index, kind in _WRAPPED_FIELDS:
            values[index] = kind(values[index])
        # Not through __init__: __post_init__ would check what the struct already guarantees
        # (each bytes field its size, each integer its width, the four TCBs one layout), at a
        # fifth of a verification's own cost. tests/test_report.py runs it on parsed reports.
        report = object.__new__(cls)
        report.__dict__.update(zip(_NAMES, values, strict=True))
        report.__dict__["_raw"] = data
        return report

    # -- writing ----------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        if self._raw is not None:
            return self._raw
        out = bytearray(REPORT_SIZE)
        for name, offset, size, kind in _LAYOUT:
            value = getattr(self, name)
            if kind == "bytes":
                raw = value
            elif kind in ("u8", "u32", "u64", "sig"):
                raw = int(value).to_bytes(size, "little")
            elif kind == "tcb":
                raw = value.to_bytes()
            else:  # policy / platform / keyinfo
                raw = int(value.value).to_bytes(size, "little")
            out[offset : offset + size] = raw
        return bytes(out)

    def signed_bytes(self) -> bytes:
        """Bytes 0x000-0x29F: what the signature covers."""
        return self.to_bytes()[:SIGNED_SIZE]

    def with_signature(self, r: int, s: int) -> AttestationReport:
        return dataclasses.replace(self, signature_r=r, signature_s=s)

    # -- interpretation ---------------------------------------------------------------------------

    @property
    def turin_layout(self) -> bool:
        return self.reported_tcb.turin_layout

    @property
    def cpuid_product(self) -> Product | None:
        """The generation named by the CPUID bytes (v3 and later); None when absent or unknown."""
        if self.version < 3:
            return None
        return Product.from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    def chip_id_meaningful(self, product: Product | None = None) -> bytes:
        """The CHIP_ID bytes that identify the chip: 8 on Turin, all 64 before."""
        turin = product.turin_layout if product is not None else self.turin_layout
        return self.chip_id[:8] if turin else self.chip_id

    def with_layout(self, *, turin: bool) -> AttestationReport:
        """The same bytes with every TCB field read in the given generation's layout."""
        if turin == self.turin_layout:
            return self
        relaid = dataclasses.replace(
            self,
            current_tcb=self.current_tcb.relayout(turin=turin),
            reported_tcb=self.reported_tcb.relayout(turin=turin),
            committed_tcb=self.committed_tcb.relayout(turin=turin),
            launch_tcb=self.launch_tcb.relayout(turin=turin),
        )
        object.__setattr__(relaid, "_raw", self._raw)  # the same bytes, read differently
        return relaid

    def anomalies(self) -> list[str]:
        """Reserved bits and bytes that are not zero (or not one where the ABI wants one)."""
        found = list(self.policy.anomalies())
        if self.platform_info.unknown_bits:
            found.append(f"PLATFORM_INFO unknown bits 0x{self.platform_info.unknown_bits:x}")
        if self.key_info.reserved_bits:
            found.append(f"KEY_INFO reserved bits 0x{self.key_info.reserved_bits:x}")
        if self.key_info.signing_key not in SigningKey.NAMES:
            found.append(f"SIGNING_KEY reserved value {self.key_info.signing_key}")
        for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
            tcb: TcbVersion = getattr(self, name)
            if tcb.reserved:
                found.append(f"{name.upper()} reserved bytes 0x{tcb.reserved:016x}")
        zero_fields = ["reserved_04c", "reserved_18b", "reserved_1eb", "reserved_1ef"]
        zero_fields += ["reserved_208", "reserved_330"]
        if self.version < 3:
            zero_fields += ["cpuid_fam_id", "cpuid_mod_id", "cpuid_step"]
        if self.version < 5:
            zero_fields += ["launch_mit_vector", "current_mit_vector"]
        for name in zero_fields:
            value = getattr(self, name)
            if value if isinstance(value, int) else value.count(0) != len(value):
                found.append(f"{name} (reserved in v{self.version}) is not zero")
        found.extend(
            f"{name} has bits set above the 48-byte P-384 value"
            for name in ("signature_r", "signature_s")
            if getattr(self, name) >> 384
        )
        return found

    def fields(self) -> dict[str, Any]:
        """Every field decoded for display or JSON (bytes as hex, flags as dicts)."""
        out: dict[str, Any] = {}
        for name, offset, _size, kind in _LAYOUT:
            value = getattr(self, name)
            if kind == "bytes":
                shown: Any = value.hex()
            elif kind == "sig":
                shown = f"{value:096x}"
            elif kind == "tcb":
                shown = {"raw": f"0x{value.to_int():016x}", **value.components()}
                if value.reserved:
                    shown["reserved"] = f"0x{value.reserved:016x}"
            elif kind == "policy":
                shown = {
                    "raw": f"0x{value.value:016x}",
                    "abi": f"{value.abi_major}.{value.abi_minor}",
                    **value.flags(),
                }
            elif kind == "platform":
                shown = {"raw": f"0x{value.value:016x}", **value.flags()}
            elif kind == "keyinfo":
                shown = {
                    "raw": f"0x{value.value:08x}",
                    "author_key_en": value.author_key_en,
                    "mask_chip_id": value.mask_chip_id,
                    "signing_key": value.signing_key_name,
                }
            else:
                shown = value
            out[name] = {"offset": f"0x{offset:03x}", "value": shown}
        return out


# ---- reading reports from files -----------------------------------------------------------------

_HEX_TEXT = re.compile(rb"[0-9a-fA-F\s]+")
# Standard (+/) or URL-safe (-_) base64, padded or not; one alphabet per text, never both.
_B64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+|[A-Za-z0-9\-_=\s]+")
#: The most ``-`` (standard input) is read: far above any report or MSG_REPORT_RSP text.
STDIN_LIMIT = 1 << 20


def _binary_report(data: bytes) -> tuple[AttestationReport, str] | None:
    """A report from raw bytes: exactly 0x4A0 of them, or a MSG_REPORT_RSP (recognised by its
    header: status 0, report size 0x4A0, reserved bytes zero, the report at 0x20)."""
    if len(data) == REPORT_SIZE:
        return AttestationReport.parse(data), "raw"
    if len(data) >= _MSG_REPORT_RSP_HEADER + REPORT_SIZE:
        status, size = struct.unpack_from("<II", data, 0)
        if status == 0 and size == REPORT_SIZE and not any(data[8:_MSG_REPORT_RSP_HEADER]):
            start = _MSG_REPORT_RSP_HEADER
            report = AttestationReport.parse(data[start : start + REPORT_SIZE])
            return report, "MSG_REPORT_RSP at 0x20"
    return None


def _decoded_text(data: bytes) -> list[tuple[bytes, str]]:
    """What hex (optionally ``0x``-prefixed) or base64 (standard or URL-safe, padding optional)
    text may stand for, hex first; empty when the text is neither."""
    text = bytes(data).strip()
    prefixed = text[:2] in (b"0x", b"0X")
    if prefixed:
        text = text[2:]
    compact = b"".join(text.split())
    if not compact:
        return []
    candidates = []
    if _HEX_TEXT.fullmatch(text) and len(compact) % 2 == 0:
        candidates.append((bytes.fromhex(compact.decode()), "0x-hex" if prefixed else "hex"))
    if not prefixed and _B64_TEXT.fullmatch(text):
        urlsafe = b"-" in compact or b"_" in compact
        standard = compact.replace(b"-", b"+").replace(b"_", b"/") if urlsafe else compact
        try:
            decoded = base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded:
            candidates.append((decoded, "URL-safe base64" if urlsafe else "base64"))
    return candidates


def load_report(data: bytes, *, offset: int | None = None) -> tuple[AttestationReport, str]:
    """A report from a file's bytes: raw, hex text (``0x`` prefix allowed), base64 text (standard
    or URL-safe), a MSG_REPORT_RSP in any of these forms, or embedded at ``offset``.

    Returns the report and how it was found (for display).
    """
    if offset is not None:
        if offset < 0 or offset + REPORT_SIZE > len(data):
            raise InputError(
                f"no {REPORT_SIZE}-byte report at offset 0x{offset:x} of {len(data)} bytes"
            )
        return AttestationReport.parse(data[offset : offset + REPORT_SIZE]), f"at 0x{offset:x}"
    found = _binary_report(bytes(data))
    if found is not None:
        return found
    for raw, encoding in _decoded_text(data):
        found = _binary_report(raw)
        if found is not None:
            report, inner = found
            return report, encoding if inner == "raw" else f"{inner}, {encoding}"
    raise InputError(
        f"not an SEV-SNP attestation report: {len(data)} bytes, neither {REPORT_SIZE} raw bytes, "
        f"a MSG_REPORT_RSP, nor their hex or base64 text",
        hint="a report embedded in a larger message can be read with --offset",
    )


def read_report_file(path: Path, *, offset: int | None = None) -> tuple[AttestationReport, str]:
    """``load_report`` on a file, or on standard input when ``path`` is ``-``; an unreadable file
    is unusable input."""
    if str(path) == "-":
        data = sys.stdin.buffer.read(STDIN_LIMIT + 1)
        if len(data) > STDIN_LIMIT:
            raise InputError(f"standard input holds more than {STDIN_LIMIT} bytes: not a report")
        report, how = load_report(data, offset=offset)
        return report, f"standard input, {how}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read report {path}: {exc.strerror or exc}") from exc
    return load_report(data, offset=offset)
