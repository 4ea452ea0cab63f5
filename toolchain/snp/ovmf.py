"""OVMF (and Coconut-SVSM) firmware images: the footer GUID table and the SEV metadata.

The last bytes of an OVMF image hold a table of GUID-tagged entries (edk2
``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm``), read backwards from 32 bytes before the
end of the image::

    ... | data | u16 size | GUID | ... | data | u16 size | GUID | u16 size | FOOTER GUID | 32 bytes

Entries used for measurement: the SEV-ES AP reset address, the SEV kernel-hashes table
address, and the SEV metadata ("ASEV" header and section list, ``OvmfSevMetadata.asm``),
which lists the regions the VMM must pre-validate (zero/unmeasured pages, the secrets page,
the CPUID page, the SVSM calling area and the kernel-hashes page).
"""

from __future__ import annotations

import struct
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from toolchain.errors import InputError

FOUR_GIB = 1 << 32
PAGE_SIZE = 4096

FOOTER_TABLE_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_HASH_TABLE_RV_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
SEV_ES_RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
SEV_METADATA_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"
SVSM_INFO_GUID = "a789a612-0597-4c4b-a49f-cbb1fe9d1ddd"

_ENTRY_HEADER = struct.Struct("<H16s")  # size (including this header), GUID (little-endian)
_METADATA_HEADER = struct.Struct("<4sIII")  # "ASEV", size, version, number of sections
_SECTION = struct.Struct("<III")  # gpa, size, type
_FOOTER_GAP = 32  # the table ends this many bytes before the end of the image


class SectionType(IntEnum):
    """SEV metadata section types (edk2 OvmfSevMetadata.asm)."""

    SNP_SEC_MEM = 1
    SNP_SECRETS = 2
    CPUID = 3
    SVSM_CAA = 4
    SNP_KERNEL_HASHES = 0x10


class MetadataSection(NamedTuple):
    gpa: int
    size: int
    kind: SectionType

    def as_dict(self) -> dict[str, str]:
        return {"gpa": f"{self.gpa:#x}", "size": f"{self.size:#x}", "type": self.kind.name}


class Firmware(NamedTuple):
    """A parsed firmware image, loaded so that it ends at ``end_gpa`` (4 GiB for OVMF).

    NamedTuples, not dataclasses: ``keep measure-guest`` imports this module, and dataclass
    generation at import was a third of its run (``toolchain.records``)."""

    data: bytes
    gpa: int
    table: dict[str, bytes]
    sections: tuple[MetadataSection, ...]
    name: str = "firmware"

    @property
    def end_gpa(self) -> int:
        return self.gpa + len(self.data)

    def has_section(self, kind: SectionType) -> bool:
        return any(section.kind is kind for section in self.sections)

    def _entry_u32(self, guid: str, what: str) -> int:
        entry = self.table.get(guid)
        if entry is None:
            raise InputError(f"{self.name} has no {what} entry (GUID {guid}) in its footer table")
        if len(entry) < 4:
            raise InputError(f"{self.name}: {what} entry is truncated ({len(entry)} bytes)")
        value: int = struct.unpack_from("<I", entry)[0]
        return value

    def sev_es_reset_eip(self) -> int:
        """Where OVMF's application processors start (the SEV-ES AP reset block)."""
        return self._entry_u32(SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")

    def supports_kernel_hashes(self) -> bool:
        return SEV_HASH_TABLE_RV_GUID in self.table and self.sev_hashes_table_gpa() != 0

    def sev_hashes_table_gpa(self) -> int:
        return self._entry_u32(SEV_HASH_TABLE_RV_GUID, "SEV kernel-hashes table")

    def svsm_reset_eip(self) -> int:
        """Coconut-SVSM's entry point: the SVSM_INFO offset from the image's start GPA."""
        return self._entry_u32(SVSM_INFO_GUID, "SVSM info") + self.gpa

    def require_sev_metadata(self) -> None:
        if not self.sections:
            raise InputError(
                f"{self.name} has no SEV metadata: not an SEV-SNP capable OVMF build "
                "(build OvmfPkg/AmdSev/AmdSevX64.dsc or OvmfPkg/OvmfPkgX64.dsc)"
            )


def load_firmware(
    source: Path | str | bytes, *, end_gpa: int = FOUR_GIB, name: str | None = None
) -> Firmware:
    """Read and parse a firmware image that the VMM maps to end at ``end_gpa``."""
    if isinstance(source, bytes):
        data = source
        label = name or "firmware"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read firmware {path}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"{label} is empty")
    if len(data) % PAGE_SIZE:
        raise InputError(
            f"{label} is {len(data)} bytes, not a multiple of 4096: "
            "truncated or not a firmware image"
        )
    if end_gpa > FOUR_GIB or end_gpa % PAGE_SIZE or len(data) > end_gpa:
        raise InputError(f"{label} ({len(data)} bytes) cannot end at GPA {end_gpa:#x}")
    table = _parse_footer_table(data, label)
    sections = _parse_sev_metadata(data, table, label)
    return Firmware(data=data, gpa=end_gpa - len(data), table=table, sections=sections, name=label)


def _swap_guid(raw: bytes) -> bytes:
    # The first three GUID fields are little-endian in EFI tables, big-endian in the text form.
    return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]


def guid_bytes(guid: str) -> bytes:
    """A GUID's 16 bytes as EFI tables hold them (``uuid.UUID(guid).bytes_le``, without the
    ``uuid`` import and its ``platform``: ``keep measure-guest`` pays every import)."""
    return _swap_guid(bytes.fromhex(guid.replace("-", "")))


def guid_text(raw: bytes) -> str:
    """The text form of a GUID read from an EFI table (``str(uuid.UUID(bytes_le=raw))``)."""
    hexed = _swap_guid(raw).hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def _parse_footer_table(data: bytes, label: str) -> dict[str, bytes]:
    footer_at = len(data) - _FOOTER_GAP - _ENTRY_HEADER.size
    if footer_at < 0:
        return {}
    size, guid = _ENTRY_HEADER.unpack_from(data, footer_at)
    if guid != guid_bytes(FOOTER_TABLE_GUID):
        return {}  # no table: a plain (non-SEV) firmware image
    if size < _ENTRY_HEADER.size or size - _ENTRY_HEADER.size > footer_at:
        raise InputError(f"{label}: OVMF footer table size {size} is out of bounds")
    table_bytes = data[footer_at - (size - _ENTRY_HEADER.size) : footer_at]
    table: dict[str, bytes] = {}
    end = len(table_bytes)
    while end >= _ENTRY_HEADER.size:
        entry_size, entry_guid = _ENTRY_HEADER.unpack_from(table_bytes, end - _ENTRY_HEADER.size)
        if entry_size < _ENTRY_HEADER.size or entry_size > end:
            raise InputError(f"{label}: OVMF footer table entry has invalid size {entry_size}")
        key = guid_text(entry_guid)
        table[key] = table_bytes[end - entry_size : end - _ENTRY_HEADER.size]
        end -= entry_size
    return table


def _parse_sev_metadata(
    data: bytes, table: dict[str, bytes], label: str
) -> tuple[MetadataSection, ...]:
    entry = table.get(SEV_METADATA_GUID)
    if entry is None:
        return ()
    if len(entry) < 4:
        raise InputError(f"{label}: SEV metadata entry is truncated")
    offset_from_end = struct.unpack_from("<I", entry)[0]
    start = len(data) - offset_from_end
    if offset_from_end > len(data) or start + _METADATA_HEADER.size > len(data):
        raise InputError(f"{label}: SEV metadata offset {offset_from_end:#x} is out of bounds")
    signature, size, version, count = _METADATA_HEADER.unpack_from(data, start)
    if signature != b"ASEV":
        raise InputError(f"{label}: SEV metadata has signature {signature!r}, expected b'ASEV'")
    if version != 1:
        raise InputError(f"{label}: SEV metadata version {version} is not supported (expected 1)")
    needed = _METADATA_HEADER.size + count * _SECTION.size
    if size < needed or start + size > len(data):
        raise InputError(f"{label}: SEV metadata ({count} sections, {size} bytes) is truncated")
    sections = []
    for index in range(count):
        gpa, length, kind = _SECTION.unpack_from(
            data, start + _METADATA_HEADER.size + index * _SECTION.size
        )
        try:
            section_type = SectionType(kind)
        except ValueError:
            raise InputError(
                f"{label}: SEV metadata section {index} has unknown type {kind}"
            ) from None
        if gpa % PAGE_SIZE or length % PAGE_SIZE or length == 0:
            raise InputError(
                f"{label}: SEV metadata section {index} ({section_type.name} at {gpa:#x}, "
                f"{length:#x} bytes) is not page-aligned"
            )
        sections.append(MetadataSection(gpa, length, section_type))
    return tuple(sections)
