"""The SEV kernel-hashes table that QEMU puts into OVMF for measured direct boot.

With ``-kernel/-initrd/-append`` QEMU writes the SHA-256 of each into a GUIDed table at the
address OVMF advertises (``SEV_HASH_TABLE_RV_GUID``); OVMF checks the loaded files against it.
The table is measured with the firmware, so the launch digest covers the kernel, initrd and
command line. Layout (QEMU ``target/i386/sev.c``, ``SevHashTable``), little-endian, packed::

    GUID header | u16 length (168)
    GUID cmdline | u16 50 | SHA-256(cmdline + NUL)
    GUID initrd  | u16 50 | SHA-256(initrd)      (of b"" when there is none)
    GUID kernel  | u16 50 | SHA-256(kernel)
    zero padding to a multiple of 16 bytes (176)
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import NamedTuple

from toolchain.errors import InputError
from toolchain.snp.ovmf import guid_bytes

TABLE_HEADER_GUID = "9438d606-4f22-4cc9-b479-a793d411fd21"
CMDLINE_ENTRY_GUID = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a"
INITRD_ENTRY_GUID = "44baf731-3a2f-4bd7-9af1-41e29169781d"
KERNEL_ENTRY_GUID = "4de79437-abd2-427f-b835-d5b172d2045b"

_ENTRY = struct.Struct("<16sH32s")
_HEADER = struct.Struct("<16sH")
TABLE_LENGTH = _HEADER.size + 3 * _ENTRY.size  # 168
PADDED_LENGTH = (TABLE_LENGTH + 15) // 16 * 16  # 176


def cmdline_bytes(append: str | None) -> bytes:
    """The bytes QEMU hashes for the command line: the string plus its NUL (just NUL if none)."""
    return (append or "").encode() + b"\x00"


def sha256_file(path: Path | str, what: str) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").digest()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class KernelHashes(NamedTuple):
    """The three SHA-256 digests the table carries (a NamedTuple: no dataclass generation at
    import for ``keep measure-guest``)."""

    kernel: bytes
    initrd: bytes
    cmdline: bytes

    @classmethod
    def of(cls, kernel: bytes, initrd: bytes | None, append: str | None) -> KernelHashes:
        return cls(
            kernel=hashlib.sha256(kernel).digest(),
            initrd=hashlib.sha256(initrd or b"").digest(),
            cmdline=hashlib.sha256(cmdline_bytes(append)).digest(),
        )

    @classmethod
    def of_files(
        cls, kernel: Path | str, initrd: Path | str | None, append: str | None
    ) -> KernelHashes:
        return cls(
            kernel=sha256_file(kernel, "kernel"),
            initrd=sha256_file(initrd, "initrd") if initrd else hashlib.sha256(b"").digest(),
            cmdline=hashlib.sha256(cmdline_bytes(append)).digest(),
        )

    def table(self) -> bytes:
        """The padded table (176 bytes), as QEMU writes it into guest memory."""
        entry_len = _ENTRY.size
        raw = (
            _HEADER.pack(guid_bytes(TABLE_HEADER_GUID), TABLE_LENGTH)
            + _ENTRY.pack(guid_bytes(CMDLINE_ENTRY_GUID), entry_len, self.cmdline)
            + _ENTRY.pack(guid_bytes(INITRD_ENTRY_GUID), entry_len, self.initrd)
            + _ENTRY.pack(guid_bytes(KERNEL_ENTRY_GUID), entry_len, self.kernel)
        )
        return raw + bytes(PADDED_LENGTH - len(raw))

    def region(self, size: int, offset: int) -> bytes:
        """A ``size``-byte region of zeros holding the table at ``offset``."""
        if offset < 0 or offset + PADDED_LENGTH > size:
            raise InputError(
                f"the kernel-hashes table ({PADDED_LENGTH} bytes at offset {offset:#x}) does not "
                f"fit in its {size:#x}-byte firmware section"
            )
        return bytes(offset) + self.table() + bytes(size - offset - PADDED_LENGTH)
