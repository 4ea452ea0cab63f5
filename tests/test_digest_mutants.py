"""Tests that kill the mutants of ``toolchain.snp.digest`` the digest suite let survive
(tests/MUTATION.md): the ABI's permission bits, each PAGE_INFO input check on its own (the
suite's bad inputs often failed two checks at once), and the edges of the GPA range."""

from __future__ import annotations

import pytest

from toolchain.errors import InputError
from toolchain.snp.digest import (
    PAGE_SIZE,
    PERM_EXEC_SUPERVISOR,
    PERM_EXEC_USER,
    PERM_READ,
    PERM_WRITE,
    VMSA_GPA,
    LaunchDigest,
    PageInfo,
    PageType,
)


def test_vmpl_permission_bits_are_the_abi_bits() -> None:
    # SNP ABI / APM vol. 2 (RMPADJUST): bit 0 read, 1 write, 2 execute-user, 3 execute-supervisor.
    assert (PERM_READ, PERM_WRITE, PERM_EXEC_USER, PERM_EXEC_SUPERVISOR) == (1, 2, 4, 8)
    every = PERM_READ | PERM_WRITE | PERM_EXEC_USER | PERM_EXEC_SUPERVISOR
    info = PageInfo(bytes(48), bytes(48), PageType.ZERO, 0, vmpl_perms=(every, every, every))
    assert info.to_bytes()[0x65:0x68] == b"\x0f\x0f\x0f"


@pytest.mark.parametrize("level", [1, 2, 3])
def test_each_vmpl_permission_is_checked_and_named(level: int) -> None:
    for bad in (0x10, -1):
        perms = [0, 0, 0]
        perms[level - 1] = bad
        with pytest.raises(InputError, match=f"VMPL{level} permissions .* out of range"):
            LaunchDigest().update(PageType.ZERO, 0, size=PAGE_SIZE, vmpl_perms=tuple(perms))  # type: ignore[arg-type]
        perms[level - 1] = True
        with pytest.raises(InputError, match=f"VMPL{level} permissions must be an integer"):
            LaunchDigest().update(PageType.ZERO, 0, size=PAGE_SIZE, vmpl_perms=tuple(perms))  # type: ignore[arg-type]


def test_gpa_edges() -> None:
    for gpa in (-1, -PAGE_SIZE):
        with pytest.raises(InputError, match="is negative"):
            LaunchDigest().update(PageType.ZERO, gpa, size=PAGE_SIZE)
    with pytest.raises(InputError, match="not 4 KiB page-aligned"):
        LaunchDigest().update(PageType.ZERO, 0x1001, size=PAGE_SIZE)
    # The last page of the 64-bit space may be measured; one page more does not fit.
    top = (1 << 64) - PAGE_SIZE
    digest = LaunchDigest()
    digest.update(PageType.ZERO, top, size=PAGE_SIZE)
    assert digest.pages == 1
    with pytest.raises(InputError, match="does not fit in 64 bits"):
        LaunchDigest().update(PageType.NORMAL, top, bytes(2 * PAGE_SIZE))
    assert PageInfo(bytes(48), bytes(48), PageType.VMSA, VMSA_GPA).gpa == VMSA_GPA


@pytest.mark.parametrize("field", ["digest_cur", "contents"])
def test_each_page_info_digest_field_must_be_48_bytes(field: str) -> None:
    values = {"digest_cur": bytes(48), "contents": bytes(48)}
    for size in (47, 49):
        values[field] = bytes(size)
        with pytest.raises(InputError, match="DIGEST_CUR and CONTENTS must be 48 bytes"):
            PageInfo(page_type=PageType.ZERO, gpa=0, **values)


def test_page_info_gpa_must_leave_room_for_its_page() -> None:
    # Found by mutation: GPA 2**64 is page-aligned, so a zero-length range check let it through
    # and PAGE_INFO.to_bytes then crashed in struct (a traceback, not an InputError).
    top = (1 << 64) - PAGE_SIZE
    assert PageInfo(bytes(48), bytes(48), PageType.ZERO, top).to_bytes()[0x68:] == top.to_bytes(
        8, "little"
    )
    for gpa in (1 << 64, (1 << 64) + PAGE_SIZE):
        with pytest.raises(InputError, match="does not fit in 64 bits"):
            PageInfo(bytes(48), bytes(48), PageType.ZERO, gpa)


@pytest.mark.parametrize("page_type", [PageType.NORMAL, PageType.VMSA])
def test_data_pages_refuse_a_size_even_with_their_bytes(page_type: PageType) -> None:
    digest = LaunchDigest()
    with pytest.raises(InputError, match="take their bytes as data"):
        digest.update(page_type, 0, bytes(PAGE_SIZE), size=PAGE_SIZE)
    with pytest.raises(InputError, match="take their bytes as data"):
        digest.update(page_type, 0)
    assert (digest.digest(), digest.pages) == (bytes(48), 0)


@pytest.mark.parametrize("page_type", [PageType.ZERO, PageType.UNMEASURED, PageType.SECRETS])
def test_size_pages_refuse_data_and_an_empty_size(page_type: PageType) -> None:
    digest = LaunchDigest()
    with pytest.raises(InputError, match="pages take a size, not data"):
        digest.update(page_type, 0, bytes(PAGE_SIZE), size=PAGE_SIZE)
    with pytest.raises(InputError, match="size 0 must be a positive multiple of 4096"):
        digest.update(page_type, 0, size=0)
    assert (digest.digest(), digest.pages) == (bytes(48), 0)
