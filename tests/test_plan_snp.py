"""The ``snp`` launch plan: C-bit page-table entries, shared pages left out, KVM's VMSAs, and the
simulated platform's plan untouched.

Vectors are written by hand: page-table entries from the x86 bit layout (P 0, RW 1, US 2, A 5,
D 6, PS 7, NX 63) and the C-bit at 51 (CPUID 0x8000001F EBX[5:0] on Milan, Genoa and Turin);
launch digests from hashlib and the PAGE_INFO layout of the SNP firmware ABI (rev. 1.55,
SNP_LAUNCH_UPDATE: DIGEST_CUR 48 bytes, CONTENTS 48, LENGTH u16 = 0x70, PAGE_TYPE u8, IMI_PAGE
u8, VMPL3..VMPL1 permissions u8 each, reserved u8, GPA u64), never with ``LaunchDigest``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from ukernel_images import Images, build_images

from toolchain.errors import InputError
from toolchain.measure.abi import USER_INFO
from toolchain.measure.keep import (
    GHCB_PAGE,
    KERNEL_RO,
    KERNEL_RW,
    SHARED_KERNEL_RW,
    SHARED_USER_RW,
    USER_RW,
    build_plan,
    snp_plan_of,
)
from toolchain.measure.plan import AbiAddresses, LaunchPlan, Region
from toolchain.snp.digest import PageType
from toolchain.snp.vmsa import VcpuState, kvm_snp_vmsa, long_mode_state, vmsa_page

C51 = 1 << 51
VMSA_GPA = 0xFFFFFFFFF000


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("plan-snp")
    return build_images(base / "out", cache_dir=base / "cache", snp=True)


@pytest.fixture(scope="module")
def plans(images: Images) -> tuple[LaunchPlan, LaunchPlan]:
    simulated = build_plan(images.ukernel, images.user, vcpu_count=2)
    return simulated, build_plan(images.ukernel, images.user, vcpu_count=2, platform="snp")


def page_info_chain(pages: list[tuple[int, int, bytes | None]]) -> bytes:
    """SNP_LAUNCH_UPDATE's digest, written from the PAGE_INFO layout alone."""
    current = bytes(48)
    for gpa, page_type, data in pages:
        # NORMAL (1) and VMSA (2) pages measure their contents; ZERO, SECRETS, CPUID zeroes.
        contents = hashlib.sha384(data).digest() if page_type in (1, 2) else bytes(48)
        record = current + contents + struct.pack("<HBB4BQ", 0x70, page_type, 0, 0, 0, 0, 0, gpa)
        assert len(record) == 0x70
        current = hashlib.sha384(record).digest()
    return current


def memory(plan: LaunchPlan) -> dict[int, bytes]:
    return {gpa: data for gpa, _, data in plan.pages() if data is not None}


def entry(plan: LaunchPlan, gpa: int) -> tuple[int, int]:
    """(level, entry) that maps ``gpa`` in the plan's own page tables: 2 for a 2 MiB PD entry,
    1 for a 4 KiB PT entry. Table pointers are followed with the C-bit masked off."""
    pages = memory(plan)
    address = ((1 << 52) - (1 << 12)) & ~(1 << (plan.c_bit or 51))  # the C-bit is no address
    table = plan.abi.page_tables
    for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
        (value,) = struct.unpack_from("<Q", pages[table], ((gpa >> shift) & 0x1FF) * 8)
        if level == 1 or (level == 2 and value & 0x80):
            return level, value
        assert value & 1, f"level {level} entry for {gpa:#x} not present"
        table = value & address
    raise AssertionError("unreachable")


def test_access_bits_by_hand() -> None:
    # P|A|D|RW|NX (+C-bit for private): 0x63 | 1<<63 | 1<<51.
    assert KERNEL_RW.pte_bits(C51) == 0x8008_0000_0000_0063
    assert KERNEL_RW.pte_bits() == 0x8000_0000_0000_0063
    assert KERNEL_RO.pte_bits(C51) == 0x8008_0000_0000_0021
    assert USER_RW.pte_bits(C51) == 0x8008_0000_0000_0067
    assert SHARED_USER_RW.pte_bits(C51) == 0x8000_0000_0000_0067
    assert SHARED_KERNEL_RW.pte_bits(C51) == 0x8000_0000_0000_0063


def test_snp_page_table_entries_carry_the_c_bit_except_on_shared_pages(
    plans: tuple[LaunchPlan, LaunchPlan],
) -> None:
    simulated, snp = plans
    abi = snp.abi
    expected_snp = {
        0x1000: (1, 0x8008_0000_0000_1063),  # GDT/TSS: ring 0 RW, private
        0x2000: (1, 0x8008_0000_0000_2021),  # IDT: ring 0 RO, private
        0x3000: (1, 0x8008_0000_0000_3021),  # secrets page: ring 0 RO, private
        0x5000: (1, 0x8008_0000_0000_5025),  # user info: ring 3 RO, private
        GHCB_PAGE: (1, 0x8000_0000_0000_6063),  # GHCB: ring 0 RW, shared (no C-bit)
        abi.hc_page: (1, 0x8000_0000_0000_0067 | abi.hc_page),  # shared, ring 3
        abi.hc_buffer: (1, 0x8000_0000_0000_0067 | abi.hc_buffer),
        abi.doorbell: (1, 0x8000_0000_0000_0067 | abi.doorbell),
        # a whole 2 MiB of heap: PS, ring 3 RW, private
        0x2000000: (2, 0x8008_0000_0200_00E7),
    }
    assert abi.heap_start <= 0x2000000
    assert abi.heap_end >= 0x2200000
    for gpa, want in expected_snp.items():
        assert entry(snp, gpa) == want, hex(gpa)
        level, value = want
        assert entry(simulated, gpa) == (level, value & ~C51), hex(gpa)
    # Table pointers are private too (the tables are launched): PML4[0] -> the PDPT at +0x1000.
    pml4 = memory(snp)[abi.page_tables]
    assert struct.unpack_from("<Q", pml4)[0] == C51 | (abi.page_tables + 0x1000) | 0x27
    # ABI 4: the microkernel uses the GHCB on the simulated platform too (the same entry).
    assert entry(simulated, GHCB_PAGE) == (1, 0x8000_0000_0000_6063)


def test_snp_plan_differs_only_in_page_tables_and_vmsas(
    plans: tuple[LaunchPlan, LaunchPlan],
) -> None:
    """Strip the C-bit from the snp tables: the simulated plan's bytes (GHCB entry and all); the
    user-info page declares the C-bit (0 on simulated) for the microkernel's check (cbit.c)."""
    simulated, snp = plans
    assert [(r.gpa, r.page_type, r.size, r.label) for r in simulated.regions] == [
        (r.gpa, r.page_type, r.size, r.label) for r in snp.regions
    ]
    sim_pages, snp_pages = memory(simulated), memory(snp)
    tables = {
        r.gpa + o for r in snp.regions if r.label == "page tables" for o in range(0, r.size, 4096)
    }
    ghcb_pt = None
    info = snp.abi.user_info
    c_bit_at = info + USER_INFO.offset("c_bit")
    assert struct.unpack_from("<H", sim_pages[info], c_bit_at - info) == (0,)
    assert struct.unpack_from("<H", snp_pages[info], c_bit_at - info) == (51,)
    for gpa, data in snp_pages.items():
        if gpa == info:
            at = c_bit_at - info
            data = data[:at] + bytes(2) + data[at + 2 :]  # noqa: PLW2901
        if gpa not in tables:
            assert data == sim_pages[gpa], hex(gpa)
            continue
        entries = list(struct.unpack("<512Q", data))
        stripped = [e & ~C51 for e in entries]
        if GHCB_PAGE | 0x8000_0000_0000_0063 in entries:
            ghcb_pt = gpa
        assert struct.pack("<512Q", *stripped) == sim_pages[gpa], hex(gpa)
    assert ghcb_pt is not None
    # With KVM's reset FPU and SPEC_CTRL 0, KVM's page for these states is the simulated one:
    # the digests differ by the page tables alone.
    assert simulated.vmsa_pages(3) == snp.vmsa_pages(3)
    assert simulated.launch_digest(2) != snp.launch_digest(2)


def test_shared_pages_are_not_launched_on_snp(plans: tuple[LaunchPlan, LaunchPlan]) -> None:
    _, snp = plans
    abi = snp.abi
    shared = {GHCB_PAGE, abi.hc_page, abi.doorbell}
    shared |= set(range(abi.hc_buffer, abi.hc_buffer + abi.hc_buffer_size, 4096))
    launched = {gpa for gpa, _, _ in snp.pages()}
    assert not launched & shared
    types = {gpa: kind for gpa, kind, _ in snp.pages()}
    assert types[abi.secrets_page] is PageType.SECRETS
    assert types[abi.cpuid_page] is PageType.CPUID
    # The measurement is the chain over exactly the launched pages and KVM's VMSAs: were the
    # GHCB measured (even as a ZERO page), the digest would differ.
    pages = [(gpa, int(kind), data) for gpa, kind, data in snp.pages()]
    vmsas = [(VMSA_GPA, 2, page) for page in snp.vmsa_pages(2)]
    assert snp.launch_digest(2) == page_info_chain(pages + vmsas)
    with_ghcb = sorted([*pages, (GHCB_PAGE, 3, None)], key=lambda p: p[0])
    assert snp.launch_digest(2) != page_info_chain(with_ghcb + vmsas)


def test_snp_vmsas_are_kvms_in_vcpu_index_order(plans: tuple[LaunchPlan, LaunchPlan]) -> None:
    _, snp = plans
    boot, ap, ap2 = snp.vmsa_pages(3)
    assert boot == kvm_snp_vmsa(snp.boot_vcpu, sev_features=0x1)
    assert ap == ap2 == kvm_snp_vmsa(snp.ap_vcpu, sev_features=0x1)
    # A state KVM could not hold (a debug register the sync never copies) is refused on snp,
    # where the simulated firmware would measure it.
    odd = replace(snp, boot_vcpu=snp.boot_vcpu._replace(dr0=0x1000))
    with pytest.raises(InputError, match="never takes dr0"):
        odd.vmsa_pages(2)
    assert replace(odd, platform="simulated", c_bit=None).vmsa_pages(1)[0] != boot


#: A PML4 whose entry 0 points at a PDPT at 0x6000 through a private entry (C-bit 51).
PML4 = struct.pack("<Q", C51 | 0x6027).ljust(4096, b"\0")


def tiny_plan(platform: str) -> LaunchPlan:
    state = long_mode_state(rip=0x1000, rsp=0x2000, cr3=0x4000, gdt_base=0, gdt_limit=0)
    abi = AbiAddresses(*([0] * 16))
    abi = replace(abi, doorbell=0x7000, abi_version=2, page_tables=0x5000)
    return LaunchPlan(
        regions=(
            Region(0x1000, PageType.NORMAL, 4096, b"\x90" * 4096, "code"),
            Region(0x2000, PageType.ZERO, 4096, None, "stack"),
            Region(0x3000, PageType.SECRETS, 4096, None, "secrets"),
            Region(0x4000, PageType.CPUID, 4096, None, "cpuid"),
            Region(0x5000, PageType.NORMAL, 4096, PML4, "page tables"),
        ),
        boot_vcpu=state,
        ap_vcpu=state._replace(rip=0x1800, rsp=0),
        vcpu_count=2,
        guest_policy=0x30000,
        sev_features=0x1,
        ram_size=0x10000,
        abi=abi,
        platform=platform,
        c_bit=51 if platform == "snp" else None,
    )


def test_tiny_snp_plan_digest_computed_independently() -> None:
    plan = tiny_plan("snp")
    code = b"\x90" * 4096
    expected_pages = [
        (0x1000, 1, code),
        (0x2000, 3, None),
        (0x3000, 5, None),
        (0x4000, 6, None),
        (0x5000, 1, PML4),
    ]
    boot = kvm_snp_vmsa(plan.boot_vcpu, sev_features=1)
    ap = kvm_snp_vmsa(plan.ap_vcpu, sev_features=1)
    want = page_info_chain([*expected_pages, (VMSA_GPA, 2, boot), (VMSA_GPA, 2, ap)])
    assert plan.launch_digest(2) == want
    # Boot CPU first: swapping the two VMSAs is another digest.
    assert want != page_info_chain([*expected_pages, (VMSA_GPA, 2, ap), (VMSA_GPA, 2, boot)])
    # The same plan on the simulated platform: its own VMSAs (equal here: reset FPU).
    simulated = tiny_plan("simulated")
    sim_boot = vmsa_page(plan.boot_vcpu, sev_features=1)
    sim_ap = vmsa_page(plan.ap_vcpu, sev_features=1)
    assert simulated.launch_digest(2) == page_info_chain(
        [*expected_pages, (VMSA_GPA, 2, sim_boot), (VMSA_GPA, 2, sim_ap)]
    )


def test_snp_plan_json_round_trip_and_simulated_json_has_no_platform(
    plans: tuple[LaunchPlan, LaunchPlan],
) -> None:
    simulated, snp = plans
    document = json.loads(snp.to_json())
    assert (document["platform"], document["c_bit"], document["vmsa"]) == ("snp", 51, "Linux v6.12")
    again = LaunchPlan.from_json(snp.to_json())
    assert again == snp
    assert again.launch_digest(2) == snp.launch_digest(2)
    assert not {"platform", "c_bit", "vmsa"} & set(json.loads(simulated.to_json()))
    # VMSAs of another kernel's KVM are not what this toolchain computes: refused, not re-derived.
    other = dict(document, vmsa="Linux v6.16")
    with pytest.raises(InputError, match=r"'Linux v6\.16''s"):
        LaunchPlan.from_json(json.dumps(other))
    # An snp plan whose C-bit is edited no longer matches its page tables.
    document["c_bit"] = 47
    with pytest.raises(InputError, match="does not carry the plan's C-bit 47"):
        LaunchPlan.from_json(json.dumps(document))
    with pytest.raises(InputError, match="does not carry the plan's C-bit 51"):
        replace(
            tiny_plan("snp"),
            regions=(
                *tiny_plan("snp").regions[:4],
                Region(0x5000, PageType.NORMAL, 4096, bytes(4096), "page tables"),
            ),
        )


def test_c_bit_is_a_parameter(images: Images) -> None:
    c47 = build_plan(images.ukernel, images.user, platform="snp", c_bit=47)
    c51 = build_plan(images.ukernel, images.user, platform="snp")
    assert c47.launch_digest(2) != c51.launch_digest(2)
    assert entry(c47, 0x1000) == (1, 0x8000_8000_0000_1063)
    info = c47.abi.user_info
    (page,) = (r for r in c47.regions if r.gpa <= info < r.end)
    assert page.data is not None
    assert struct.unpack_from("<H", page.data, info - page.gpa + USER_INFO.offset("c_bit")) == (47,)
    for bad in (38, 52, 63, True):
        with pytest.raises(InputError, match="C-bit position"):
            build_plan(images.ukernel, images.user, platform="snp", c_bit=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown platform"):
        build_plan(images.ukernel, images.user, platform="sev")
    with pytest.raises(InputError, match="a simulated plan has no C-bit"):
        replace(c51, platform="simulated")
    with pytest.raises(InputError, match="needs its C-bit"):
        replace(c51, c_bit=None)


def test_snp_plan_of_refuses_elfs_that_are_not_the_plans(images: Images, tmp_path: Path) -> None:
    assert images.snp_ukernel is not None
    snp_ukernel = images.snp_ukernel
    simulated = build_plan(images.ukernel, images.user)
    for other in (
        replace(simulated, guest_policy=simulated.guest_policy ^ 0x10000),
        replace(simulated, regions=simulated.regions[:-1]),
    ):
        with pytest.raises(InputError, match="not the launch plan's"):
            snp_plan_of(other, images.ukernel, images.user, snp_ukernel)
    snp = snp_plan_of(simulated, images.ukernel, images.user, snp_ukernel)
    assert snp == build_plan(snp_ukernel, images.user, platform="snp")
    with pytest.raises(InputError, match="not the simulated platform"):
        snp_plan_of(snp, images.ukernel, images.user, snp_ukernel)


def test_default_state_is_accepted_by_kvm_snp_vmsa() -> None:
    # The plan's states are ones KVM can hold: kvm_snp_vmsa refuses anything else.
    with pytest.raises(InputError, match="DR7"):
        replace(tiny_plan("snp"), boot_vcpu=VcpuState(dr7=0xFFFF)).vmsa_pages(1)


def _patched(elf: Path) -> bytes:
    """``elf`` with one byte of its loaded text changed (the byte after the entry point): still a
    valid microkernel with the same layout note, other launched bytes."""
    from toolchain.measure.keep import load_elf

    data = bytearray(elf.read_bytes())
    image = load_elf(bytes(data), "microkernel ELF")
    text = next(s for s in image.segments if s.vaddr <= image.entry < s.vaddr + len(s.data))
    offset = bytes(data).index(text.data) + image.entry - text.vaddr + 1
    data[offset] ^= 0xFF
    return bytes(data)


def test_each_platform_is_measured_from_its_own_microkernel(images: Images) -> None:
    """The snp digest follows the snp microkernel's bytes only, the kvm/nil digest the
    simulated microkernel's only: neither build stands in for the other."""
    assert images.snp_ukernel is not None
    sim, snp_elf, user = images.ukernel.read_bytes(), images.snp_ukernel.read_bytes(), images.user
    plan = build_plan(sim, user)
    snp = snp_plan_of(plan, sim, user, snp_elf).launch_digests([1, 2])
    # Only the snp microkernel's bytes change: the snp digests change, the plan does not.
    other_snp = snp_plan_of(plan, sim, user, _patched(images.snp_ukernel))
    assert build_plan(sim, user) == plan
    assert all(other_snp.launch_digest(n) != snp[n] for n in (1, 2))
    # Only the simulated microkernel's bytes change: the kvm/nil digests change, snp ones do not.
    other_sim = _patched(images.ukernel)
    other_plan = build_plan(other_sim, user)
    assert other_plan.launch_digests([1, 2]) != plan.launch_digests([1, 2])
    assert snp_plan_of(other_plan, other_sim, user, snp_elf).launch_digests([1, 2]) == snp
    # The simulated microkernel laid out for snp is not the snp plan (the digest we published
    # before: a keep that rings the doorbell cannot attest on SNP hardware).
    assert build_plan(sim, user, platform="snp").launch_digests([1, 2]) != snp


def test_snp_plan_of_refuses_an_snp_microkernel_with_another_layout(images: Images) -> None:
    """The snp microkernel must declare the plan's microkernel's layout (the builds differ only
    in platform.c): another one is refused, naming the field and both values."""
    from toolchain.measure.abi import NOTE_NAME

    assert images.snp_ukernel is not None
    plan = build_plan(images.ukernel, images.user)
    data = bytearray(images.snp_ukernel.read_bytes())
    note = bytes(data).index(NOTE_NAME + b"\0" * (-len(NOTE_NAME) % 4))
    policy = note + -(-len(NOTE_NAME) // 4) * 4 + 8  # after the name: version, size, policy
    data[policy] ^= 0x01
    with pytest.raises(InputError, match="not the twin of the plan's: its layout note declares"):
        snp_plan_of(plan, images.ukernel, images.user, bytes(data))
