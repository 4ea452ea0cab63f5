"""The SEV-SNP secrets page: the page the firmware fills at SNP_LAUNCH_UPDATE(SECRETS).

Layout as Linux v6.12 declares it (``struct snp_secrets_page`` and ``struct secrets_os_area`` in
``arch/x86/include/asm/sev.h``; SNP ABI specification, "Secrets Page Format"), 4096 bytes:

======  ====  ==================================================================
offset  size  field
======  ====  ==================================================================
0x000   4     VERSION (layout version)
0x004   4     bit 0 IMIEN (interrupt injection mode enabled), bits 31:1 reserved
0x008   4     FMS (the chip's CPUID Fn0000_0001_EAX)
0x00C   4     reserved
0x010   16    GOSVW (guest OS-visible workarounds)
0x020   32    VMPCK0, the guest-message key of VMPL0
0x040   32    VMPCK1
0x060   32    VMPCK2
0x080   32    VMPCK3
0x0A0   96    OS area (the guest's): MSG_SEQNO_0..3 (u32 each), AP_JUMP_TABLE_PA (u64),
              40 reserved bytes, GUEST_USAGE (32 bytes)
0x100   64    VMSA tweak bitmap
0x140   8+8+8 SVSM base, size, calling-area address
0x158   4     SVSM maximum protocol version
0x15C   1     SVSM guest VMPL
0x15D   3+..  reserved to the end of the page
======  ====  ==================================================================

``SecretsPage.parse`` refuses a page that is not 4096 bytes or whose reserved bytes are not
zero (the firmware zero-fills them); ``SecretsPage.fresh`` makes the page a firmware writes at
launch (fresh random VMPCK0-3, everything the guest owns zero); ``to_bytes`` lays a page out
again, byte for byte.
"""

from __future__ import annotations

import secrets as _random
import struct
from dataclasses import dataclass

from toolchain.errors import InputError

SECRETS_PAGE_SIZE = 4096
VMPCK_SIZE = 32
VMPCK_COUNT = 4
#: The layout version the firmware writes (SNP ABI 1.55: 3; older firmware wrote 2).
SECRETS_VERSION = 3
#: Offset of VMPCKn is VMPCK_OFFSET + n * VMPCK_SIZE.
VMPCK_OFFSET = 0x20
OS_AREA_OFFSET = 0xA0
OS_AREA_SIZE = 96

_HEAD = struct.Struct("<III4x16s")  # version, imien word, fms, reserved, gosvw
_OS_AREA = struct.Struct("<IIIIQ40x32s")  # msg_seqno_0..3, ap_jump_table_pa, reserved, usage
_SVSM = struct.Struct("<QQQIB")  # svsm_base, svsm_size, svsm_caa, max_version, guest_vmpl
_SVSM_OFFSET = 0x140
_RESERVED = (
    (0x00C, 4),
    (OS_AREA_OFFSET + 24, 40),
    (_SVSM_OFFSET + _SVSM.size, SECRETS_PAGE_SIZE - _SVSM_OFFSET - _SVSM.size),
)
#: Every named field's offset, for tests and for tools that dump a page.
FIELD_OFFSETS: dict[str, int] = {
    "version": 0x000,
    "imien": 0x004,
    "fms": 0x008,
    "gosvw": 0x010,
    **{f"vmpck{n}": VMPCK_OFFSET + n * VMPCK_SIZE for n in range(VMPCK_COUNT)},
    **{f"msg_seqno_{n}": OS_AREA_OFFSET + 4 * n for n in range(VMPCK_COUNT)},
    "ap_jump_table_pa": OS_AREA_OFFSET + 0x10,
    "guest_usage": OS_AREA_OFFSET + 0x40,
    "vmsa_tweak_bitmap": 0x100,
    "svsm_base": 0x140,
    "svsm_size": 0x148,
    "svsm_caa": 0x150,
    "svsm_max_version": 0x158,
    "svsm_guest_vmpl": 0x15C,
}


def _check_int(name: str, value: object, bits: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise InputError(f"secrets page {name}={value!r} does not fit in {bits} bits")


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise InputError(f"secrets page {name} must be {size} bytes, got {value!r:.40}")


@dataclass(frozen=True, repr=False)
class SecretsPage:
    """One secrets page. ``repr`` never shows the keys."""

    version: int
    fms: int
    vmpck: tuple[bytes, bytes, bytes, bytes]
    imien: bool = False
    gosvw: bytes = bytes(16)
    msg_seqno: tuple[int, int, int, int] = (0, 0, 0, 0)
    ap_jump_table_pa: int = 0
    guest_usage: bytes = bytes(32)
    vmsa_tweak_bitmap: bytes = bytes(64)
    svsm_base: int = 0
    svsm_size: int = 0
    svsm_caa: int = 0
    svsm_max_version: int = 0
    svsm_guest_vmpl: int = 0

    def __post_init__(self) -> None:
        _check_int("version", self.version, 32)
        _check_int("fms", self.fms, 32)
        if not isinstance(self.imien, bool):
            raise InputError(f"secrets page imien must be a bool, got {self.imien!r}")
        if not isinstance(self.vmpck, tuple) or len(self.vmpck) != VMPCK_COUNT:
            raise InputError(f"a secrets page holds {VMPCK_COUNT} VMPCKs")
        for index, key in enumerate(self.vmpck):
            _check_bytes(f"vmpck{index}", key, VMPCK_SIZE)
        if not isinstance(self.msg_seqno, tuple) or len(self.msg_seqno) != VMPCK_COUNT:
            raise InputError(f"a secrets page holds {VMPCK_COUNT} message sequence numbers")
        for index, seqno in enumerate(self.msg_seqno):
            _check_int(f"msg_seqno_{index}", seqno, 32)
        _check_bytes("gosvw", self.gosvw, 16)
        _check_bytes("guest_usage", self.guest_usage, 32)
        _check_bytes("vmsa_tweak_bitmap", self.vmsa_tweak_bitmap, 64)
        for name in ("ap_jump_table_pa", "svsm_base", "svsm_size", "svsm_caa"):
            _check_int(name, getattr(self, name), 64)
        _check_int("svsm_max_version", self.svsm_max_version, 32)
        _check_int("svsm_guest_vmpl", self.svsm_guest_vmpl, 8)

    def __repr__(self) -> str:
        return f"SecretsPage(version={self.version}, fms={self.fms:#010x}, vmpck=<4 keys hidden>)"

    @classmethod
    def fresh(cls, fms: int, *, version: int = SECRETS_VERSION) -> SecretsPage:
        """The page the firmware writes at launch: random VMPCK0-3, the guest's area zero."""
        keys = tuple(_random.token_bytes(VMPCK_SIZE) for _ in range(VMPCK_COUNT))
        return cls(version=version, fms=fms, vmpck=keys)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, data: bytes) -> SecretsPage:
        """Decode exactly one page; reserved bytes must be zero, as the firmware leaves them."""
        if not isinstance(data, bytes | bytearray) or len(data) != SECRETS_PAGE_SIZE:
            size = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
            raise InputError(f"a secrets page is {SECRETS_PAGE_SIZE} bytes, not {size}")
        data = bytes(data)
        version, imien_word, fms, gosvw = _HEAD.unpack_from(data, 0)
        if imien_word & ~1:
            raise InputError(
                f"secrets page word 0x4 has reserved bits set: {imien_word:#x} (only bit 0, "
                "IMIEN, is defined)"
            )
        for offset, size in _RESERVED:
            if any(data[offset : offset + size]):
                raise InputError(
                    f"secrets page reserved bytes {offset:#x}..{offset + size - 1:#x} are not zero"
                )
        seq0, seq1, seq2, seq3, jump, usage = _OS_AREA.unpack_from(data, OS_AREA_OFFSET)
        base, size, caa, max_version, vmpl = _SVSM.unpack_from(data, _SVSM_OFFSET)
        keys = tuple(
            data[VMPCK_OFFSET + n * VMPCK_SIZE : VMPCK_OFFSET + (n + 1) * VMPCK_SIZE]
            for n in range(VMPCK_COUNT)
        )
        return cls(
            version=version,
            fms=fms,
            vmpck=keys,  # type: ignore[arg-type]
            imien=bool(imien_word & 1),
            gosvw=gosvw,
            msg_seqno=(seq0, seq1, seq2, seq3),
            ap_jump_table_pa=jump,
            guest_usage=usage,
            vmsa_tweak_bitmap=data[0x100:0x140],
            svsm_base=base,
            svsm_size=size,
            svsm_caa=caa,
            svsm_max_version=max_version,
            svsm_guest_vmpl=vmpl,
        )

    def to_bytes(self) -> bytes:
        page = bytearray(SECRETS_PAGE_SIZE)
        _HEAD.pack_into(page, 0, self.version, int(self.imien), self.fms, self.gosvw)
        for index, key in enumerate(self.vmpck):
            page[VMPCK_OFFSET + index * VMPCK_SIZE : VMPCK_OFFSET + (index + 1) * VMPCK_SIZE] = key
        _OS_AREA.pack_into(
            page, OS_AREA_OFFSET, *self.msg_seqno, self.ap_jump_table_pa, self.guest_usage
        )
        page[0x100:0x140] = self.vmsa_tweak_bitmap
        _SVSM.pack_into(
            page,
            _SVSM_OFFSET,
            self.svsm_base,
            self.svsm_size,
            self.svsm_caa,
            self.svsm_max_version,
            self.svsm_guest_vmpl,
        )
        return bytes(page)

    def key(self, index: int) -> bytes:
        """VMPCK``index`` (0..3)."""
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < VMPCK_COUNT:
            raise InputError(f"VMPCK index {index!r} out of range 0..{VMPCK_COUNT - 1}")
        return self.vmpck[index]
