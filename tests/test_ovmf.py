"""OVMF footer table, SEV metadata and the kernel-hashes table, against the vectors (tests/data)."""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testdata import digest_fixtures, digest_vectors

from toolchain.errors import InputError
from toolchain.measure.guest import GuestSpec, Mode, measure_guest
from toolchain.snp.kernel_hashes import PADDED_LENGTH, KernelHashes, cmdline_bytes
from toolchain.snp.ovmf import (
    FOOTER_TABLE_GUID,
    SEV_METADATA_GUID,
    SectionType,
    load_firmware,
)

HERE = Path(__file__).resolve().parent
FIXTURES = digest_fixtures()
COMPONENTS = digest_vectors()["components"]


@pytest.mark.parametrize("name", ["ovmf_AmdSev_suffix.bin", "ovmf_OvmfX64_suffix.bin"])
def test_metadata_matches_components(name):
    expected = COMPONENTS[name]
    firmware = load_firmware(FIXTURES / name)
    assert firmware.gpa == int(expected["gpa"], 16)
    assert [s.as_dict() for s in firmware.sections] == expected["metadata_sections"]
    assert firmware.sev_es_reset_eip() == int(expected["sev_es_reset_eip"], 16)
    if "sev_hashes_table_gpa" in expected:
        assert firmware.sev_hashes_table_gpa() == int(expected["sev_hashes_table_gpa"], 16)
        assert firmware.supports_kernel_hashes()
        assert sorted(firmware.table) == sorted(expected["footer_table_guids"])
    else:
        assert not firmware.supports_kernel_hashes()


def test_svsm_ovmf_layout():
    firmware = load_firmware(FIXTURES / "svsm_ovmf.fd")
    expected = COMPONENTS["svsm_ovmf.fd"]
    assert firmware.gpa == int(expected["gpa"], 16)
    assert len(firmware.data) == int(expected["size"], 16)
    svsm = load_firmware(FIXTURES / "svsm.bin", end_gpa=firmware.gpa - 540672)
    assert svsm.end_gpa == firmware.gpa - 540672
    assert svsm.has_section(SectionType.SNP_SECRETS)
    assert svsm.gpa <= svsm.svsm_reset_eip() < svsm.end_gpa


@pytest.mark.parametrize(
    "key",
    [k for k in COMPONENTS if k.startswith("sev_hashes_table(")],
)
def test_kernel_hashes_table_matches_components(key):
    expected = COMPONENTS[key]
    append = key.split("append=")[1].rstrip(")").strip("'")
    hashes = KernelHashes.of(b"", b"", append)
    table = hashes.table()
    assert len(table) == expected["table_len"] == PADDED_LENGTH
    assert table.hex() == expected["table_hex"]
    assert cmdline_bytes(append).hex() == expected["cmdline_bytes_hashed"]
    offset = int(expected["page_offset"], 16)
    assert hashlib.sha384(hashes.region(4096, offset)).hexdigest() == expected["page_sha384"]


def test_kernel_hashes_from_files_equal_from_bytes(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel" * 1000)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd" * 999)
    from_files = KernelHashes.of_files(kernel, initrd, "console=ttyS0")
    assert from_files == KernelHashes.of(b"kernel" * 1000, b"initrd" * 999, "console=ttyS0")
    assert KernelHashes.of_files(kernel, None, None) == KernelHashes.of(
        b"kernel" * 1000, None, None
    )
    with pytest.raises(InputError):
        KernelHashes.of_files(tmp_path / "missing", None, None)
    with pytest.raises(InputError):  # table does not fit in the region
        from_files.region(4096, 4096 - 100)


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def _firmware_with_table(entries: list[tuple[str, bytes]], size: int = 8192) -> bytearray:
    """A synthetic image whose footer table holds ``entries`` (last one nearest the footer)."""
    table = b""
    for guid, data in entries:
        table += data + struct.pack("<H", len(data) + 18) + _guid(guid)
    footer = struct.pack("<H", len(table) + 18) + _guid(FOOTER_TABLE_GUID)
    image = bytearray(size)
    end = size - 32
    image[end - len(footer) - len(table) : end] = table + footer
    return image


def _metadata(
    sections: list[tuple[int, int, int]], version: int = 1, sig: bytes = b"ASEV"
) -> bytes:
    body = b"".join(struct.pack("<III", *s) for s in sections)
    return struct.pack("<4sIII", sig, 16 + len(body), version, len(sections)) + body


def _image_with_metadata(metadata: bytes, at: int = 0x100, offset_delta: int = 0) -> bytes:
    size = 8192
    offset_from_end = size - at + offset_delta
    image = _firmware_with_table([(SEV_METADATA_GUID, struct.pack("<I", offset_from_end))], size)
    image[at : at + len(metadata)] = metadata
    return bytes(image)


def test_synthetic_image_parses():
    image = _image_with_metadata(_metadata([(0x800000, 0x1000, 2), (0x801000, 0x1000, 3)]))
    firmware = load_firmware(image)
    assert firmware.gpa == (1 << 32) - 8192
    assert [s.kind for s in firmware.sections] == [SectionType.SNP_SECRETS, SectionType.CPUID]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"", "empty"),
        (bytes(4095), "not a multiple of 4096"),
        (bytes(4096 * 3 + 17), "truncated"),
        (_image_with_metadata(_metadata([(0, 0x1000, 1)], sig=b"XSEV")), "signature"),
        (_image_with_metadata(_metadata([(0, 0x1000, 1)], version=2)), "version"),
        (_image_with_metadata(_metadata([(0, 0x1000, 9)])), "unknown type"),
        (_image_with_metadata(_metadata([(0x123, 0x1000, 1)])), "not page-aligned"),
        (_image_with_metadata(_metadata([(0, 0x1000, 1)]), offset_delta=1 << 20), "out of bounds"),
        (
            _image_with_metadata(struct.pack("<4sIII", b"ASEV", 28, 1, 5) + bytes(12)),
            "truncated",
        ),
        (bytes(_firmware_with_table([(SEV_METADATA_GUID, b"\x01")])), "truncated"),
    ],
)
def test_bad_firmware_raises_input_error(image, message):
    with pytest.raises(InputError, match=message):
        load_firmware(image)


def test_bad_footer_entry_size():
    image = _firmware_with_table([(SEV_METADATA_GUID, bytes(4))])
    # corrupt the entry's size field (just before its GUID) to 3 (< header size)
    end = len(image) - 32 - 18
    image[end - 18 : end - 16] = struct.pack("<H", 3)
    with pytest.raises(InputError, match="invalid size"):
        load_firmware(bytes(image))


def test_firmware_without_table_has_no_metadata(tmp_path):
    firmware = load_firmware(bytes(4096))
    assert firmware.table == {}
    with pytest.raises(InputError, match="no SEV metadata"):
        firmware.require_sev_metadata()
    with pytest.raises(InputError, match="SEV-ES reset block"):
        firmware.sev_es_reset_eip()
    with pytest.raises(InputError, match="cannot read"):
        load_firmware(tmp_path / "missing.fd")
    with pytest.raises(InputError, match="cannot end"):
        load_firmware(bytes(8192), end_gpa=4096)


_SAMPLE = (HERE.parent / "examples/guest/ovmf_AmdSev_suffix.bin").read_bytes()


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4095), st.integers(min_value=0, max_value=255)
        ),
        min_size=1,
        max_size=8,
    ),
    tail_bias=st.booleans(),
)
def test_mutated_firmware_parses_or_raises_input_error(edits, tail_bias):
    """Corrupting bytes of a real OVMF footer never escapes as anything but InputError."""
    image = bytearray(_SAMPLE)
    for position, value in edits:
        # the footer table and metadata live in the last ~1 KiB: aim there half of the time
        index = 4096 - 1 - (position % 1024) if tail_bias else position
        image[index] = value
    try:
        firmware = load_firmware(bytes(image))
        for section in firmware.sections:
            assert section.size % 4096 == 0
        if firmware.sections:
            measure_guest(GuestSpec(mode=Mode.SNP, ovmf=bytes(image), vcpu_sig=1), [1, 2])
    except InputError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_guids_convert_as_uuid_does(raw: bytes) -> None:
    """ovmf's GUID conversions (no ``uuid`` import on measure-guest's path) are uuid's."""
    from toolchain.snp import kernel_hashes, ovmf

    text = str(uuid.UUID(bytes_le=raw))
    assert ovmf.guid_text(raw) == text
    assert ovmf.guid_bytes(text) == raw
    constants = [ovmf.FOOTER_TABLE_GUID, ovmf.SEV_HASH_TABLE_RV_GUID, ovmf.SEV_METADATA_GUID]
    constants += [ovmf.SEV_ES_RESET_BLOCK_GUID, ovmf.SVSM_INFO_GUID]
    constants += [kernel_hashes.TABLE_HEADER_GUID, kernel_hashes.KERNEL_ENTRY_GUID]
    for guid in constants:
        assert ovmf.guid_bytes(guid) == uuid.UUID(guid).bytes_le
