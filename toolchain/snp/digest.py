"""The SEV-SNP launch digest, byte for byte as the AMD secure processor computes it.

Every 4 KiB page handed to SNP_LAUNCH_UPDATE extends the digest::

    LD' = SHA-384(PAGE_INFO(LD, CONTENTS, PAGE_TYPE, IMI, VMPL1..3 perms, GPA))

where CONTENTS is SHA-384 of the page for NORMAL and VMSA pages and 48 zero bytes for the
others. One PAGE_INFO per 4 KiB page, in the order the VMM issues them.

PAGE_INFO layout (112 bytes, little-endian), per the SEV-SNP Firmware ABI specification
(publication 56860, "PAGE_INFO structure" under SNP_LAUNCH_UPDATE) and AMD's own firmware
source (amd/AMD-ASPFW, sev_mcmd.h ``snp_mcmd_launch_update_page_info_t``)::

    0x00  DIGEST_CUR   48 bytes
    0x30  CONTENTS     48 bytes
    0x60  LENGTH       u16 = 0x70
    0x62  PAGE_TYPE    u8
    0x63  IMI_PAGE     u8, bit 0 (bits 7:1 reserved)
    0x64  reserved     u8
    0x65  VMPL1_PERMS  u8
    0x66  VMPL2_PERMS  u8
    0x67  VMPL3_PERMS  u8
    0x68  GPA          u64

(sev-snp-measure 0.0.13 writes 0x64..0x67 as VMPL3, VMPL2, VMPL1, 0; that only matches the
firmware because it always writes zeros.)
"""

from __future__ import annotations

import hashlib
import struct
from enum import IntEnum
from typing import NamedTuple

from toolchain.errors import InputError
from toolchain.records import Record

PAGE_SIZE = 4096
DIGEST_SIZE = 48
PAGE_INFO_SIZE = 0x70
#: The firmware records every VMSA page at this GPA (u64 -1, page aligned, bits above 51 clear).
VMSA_GPA = 0xFFFFFFFFF000
#: VMPL permission bits: read, write, execute-user, execute-supervisor. Bits 7:4 are reserved.
PERM_READ, PERM_WRITE, PERM_EXEC_USER, PERM_EXEC_SUPERVISOR = 0x1, 0x2, 0x4, 0x8
_PERMS_MASK = 0x0F
_U64_LIMIT = 1 << 64
_ZERO_CONTENTS = bytes(DIGEST_SIZE)
_HEADER = struct.Struct("<HBBBBBB")  # LENGTH, PAGE_TYPE, IMI_PAGE, reserved, VMPL1, VMPL2, VMPL3
_PAGE_INFO = struct.Struct("<48s48sHBBBBBBQ")


class PageType(IntEnum):
    """SNP_LAUNCH_UPDATE page types (SNP ABI, PAGE_TYPE encodings)."""

    NORMAL = 1
    VMSA = 2
    ZERO = 3
    UNMEASURED = 4
    SECRETS = 5
    CPUID = 6


#: Page types whose CONTENTS is the SHA-384 of the page (the caller passes the bytes).
DATA_PAGE_TYPES = frozenset({PageType.NORMAL, PageType.VMSA})


def _check_perms(perms: tuple[int, int, int]) -> tuple[int, int, int]:
    try:
        r1, r2, r3 = perms
    except (TypeError, ValueError):
        raise InputError(f"vmpl_perms must be three integers (VMPL1, VMPL2, VMPL3), got {perms!r}")  # noqa: B904
    for level, value in ((1, r1), (2, r2), (3, r3)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"VMPL{level} permissions must be an integer, got {value!r}")
        if value < 0 or value > _PERMS_MASK:
            raise InputError(
                f"VMPL{level} permissions {value:#x} out of range: only bits 0-3 "
                "(read, write, execute-user, execute-supervisor) are defined"
            )
    return r1, r2, r3


def _check_gpa(gpa: object, length: int) -> int:
    if not isinstance(gpa, int) or isinstance(gpa, bool):
        raise InputError(f"GPA must be an integer, got {gpa!r}")
    if gpa < 0:
        raise InputError(f"GPA {gpa:#x} is negative")
    if gpa % PAGE_SIZE:
        raise InputError(f"GPA {gpa:#x} is not 4 KiB page-aligned")
    if gpa + length > _U64_LIMIT:
        raise InputError(f"GPA range {gpa:#x}+{length:#x} does not fit in 64 bits")
    return gpa


class _PageInfoFields(NamedTuple):
    """The fields of ``PageInfo``, in order."""

    digest_cur: bytes
    contents: bytes
    page_type: PageType
    gpa: int
    imi: bool = False
    vmpl_perms: tuple[int, int, int] = (0, 0, 0)
    length: int = PAGE_INFO_SIZE


class PageInfo(Record, _PageInfoFields):
    """One PAGE_INFO record: what the firmware hashes to extend the launch digest (a
    ``toolchain.records.Record``: ``keep measure-guest`` imports this module)."""

    __slots__ = ()

    def _validate(self) -> None:
        if len(self.digest_cur) != DIGEST_SIZE or len(self.contents) != DIGEST_SIZE:
            raise InputError("PAGE_INFO DIGEST_CUR and CONTENTS must be 48 bytes each")
        if self.length != PAGE_INFO_SIZE:
            raise InputError(f"PAGE_INFO LENGTH must be {PAGE_INFO_SIZE:#x}, got {self.length:#x}")
        try:
            PageType(self.page_type)
        except ValueError:
            raise InputError(f"unknown PAGE_TYPE {self.page_type!r}") from None
        _check_perms(self.vmpl_perms)
        _check_gpa(self.gpa, PAGE_SIZE)  # the record's page must fit: GPA 2**64 is aligned too

    def to_bytes(self) -> bytes:
        r1, r2, r3 = self.vmpl_perms
        return _PAGE_INFO.pack(
            self.digest_cur,
            self.contents,
            self.length,
            int(self.page_type),
            1 if self.imi else 0,
            0,
            r1,
            r2,
            r3,
            self.gpa,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> PageInfo:
        if len(raw) != PAGE_INFO_SIZE:
            raise InputError(f"PAGE_INFO must be {PAGE_INFO_SIZE} bytes, got {len(raw)}")
        cur, contents, length, ptype, imi, reserved, r1, r2, r3, gpa = _PAGE_INFO.unpack(raw)
        if imi & 0xFE or reserved:
            raise InputError("PAGE_INFO reserved bits (0x63 bits 7:1, byte 0x64) must be zero")
        return cls(
            digest_cur=cur,
            contents=contents,
            page_type=ptype,
            gpa=gpa,
            imi=bool(imi),
            vmpl_perms=(r1, r2, r3),
            length=length,
        )

    def next_digest(self) -> bytes:
        """The launch digest after the firmware measures this record."""
        return hashlib.sha384(self.to_bytes()).digest()


class LaunchDigest:
    """A running SNP launch digest (the guest context's LD during SNP_LAUNCH_UPDATE)."""

    __slots__ = ("_digest", "pages")

    def __init__(self, initial: bytes | None = None) -> None:
        if initial is None:
            initial = _ZERO_CONTENTS
        if not isinstance(initial, bytes | bytearray | memoryview) or len(initial) != DIGEST_SIZE:
            raise InputError("the initial launch digest must be 48 bytes (SHA-384)")
        self._digest = bytes(initial)
        #: How many PAGE_INFO records have been measured.
        self.pages = 0

    def copy(self) -> LaunchDigest:
        """An independent digest with the same state (to branch, e.g. per vCPU count)."""
        clone = LaunchDigest(self._digest)
        clone.pages = self.pages
        return clone

    def digest(self) -> bytes:
        return self._digest

    def hexdigest(self) -> str:
        return self._digest.hex()

    def update(
        self,
        page_type: PageType | int,
        gpa: int,
        data: bytes | bytearray | memoryview | None = None,
        *,
        size: int | None = None,
        vmpl_perms: tuple[int, int, int] = (0, 0, 0),
        imi: bool = False,
    ) -> None:
        """Measure one SNP_LAUNCH_UPDATE region, one PAGE_INFO per 4 KiB page.

        NORMAL and VMSA take ``data`` (a multiple of 4096 bytes); ZERO, UNMEASURED, SECRETS and
        CPUID take ``size`` (a multiple of 4096). Pages are measured at ``gpa + 4096 * k``.
        """
        try:
            ptype = PageType(page_type)
        except ValueError:
            raise InputError(f"unknown page type {page_type!r}") from None
        r1, r2, r3 = _check_perms(vmpl_perms)
        if not isinstance(imi, bool):
            raise InputError(f"imi must be True or False, got {imi!r}")
        header = _HEADER.pack(PAGE_INFO_SIZE, ptype, int(imi), 0, r1, r2, r3)
        if ptype in DATA_PAGE_TYPES:
            if data is None or size is not None:
                raise InputError(f"{ptype.name} pages take their bytes as data (not a size)")
            view = memoryview(data).cast("B")
            length = view.nbytes
            if length == 0 or length % PAGE_SIZE:
                raise InputError(
                    f"{ptype.name} data is {length} bytes: must be a non-zero multiple of 4096"
                )
            _check_gpa(gpa, length)
            self._digest = _extend_data(self._digest, header, gpa, view)
        else:
            if data is not None:
                raise InputError(f"{ptype.name} pages take a size, not data")
            if not isinstance(size, int) or isinstance(size, bool):
                raise InputError(f"{ptype.name} pages need size= (a multiple of 4096)")
            if size <= 0 or size % PAGE_SIZE:
                raise InputError(f"{ptype.name} size {size} must be a positive multiple of 4096")
            length = size
            _check_gpa(gpa, length)
            self._digest = _extend_empty(self._digest, header, gpa, length)
        self.pages += length // PAGE_SIZE


def _extend_data(digest: bytes, header: bytes, gpa: int, view: memoryview) -> bytes:
    # The hot loop: two hashlib calls and one concatenation per page, nothing else. (Hashing
    # pages on several threads was measured slower: hashlib takes the GIL back after every
    # 4 KiB page, and the contention costs more than the parallel hashing saves.)
    sha384 = hashlib.sha384
    for offset in range(0, view.nbytes, PAGE_SIZE):
        contents = sha384(view[offset : offset + PAGE_SIZE]).digest()
        digest = sha384(digest + contents + header + (gpa + offset).to_bytes(8, "little")).digest()
    return digest


def _extend_empty(digest: bytes, header: bytes, gpa: int, length: int) -> bytes:
    sha384 = hashlib.sha384
    middle = _ZERO_CONTENTS + header
    for offset in range(0, length, PAGE_SIZE):
        digest = sha384(digest + middle + (gpa + offset).to_bytes(8, "little")).digest()
    return digest
