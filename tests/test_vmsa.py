"""VMSA pages: the reset states QEMU, EC2, GCE and SVSM launch with, field offsets, long mode."""

from __future__ import annotations

import hashlib
import struct

import pytest
from testdata import digest_vectors

from toolchain.errors import InputError
from toolchain.snp.cpu import (
    CPU_MODELS,
    cpu_signature,
    decode_signature,
    model_signature,
    resolve_signature,
)
from toolchain.snp.vmsa import (
    BSP_RESET_EIP,
    FIELD_OFFSETS,
    LONG_MODE_CODE,
    GuestFpu,
    Segment,
    VcpuState,
    VmmType,
    long_mode_state,
    ovmf_reset_state,
    svsm_reset_state,
    vmsa_page,
)

COMPONENTS = digest_vectors()["components"]
PAGES = COMPONENTS.get("vmsa_pages", {})


def sparse_page(spec: dict) -> bytes:
    out = bytearray(spec["size"])
    for offset, hex_text in spec["runs"]:
        run = bytes.fromhex(hex_text)
        out[offset : offset + len(run)] = run
    return bytes(out)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_reset_state_pages_match_vectors(name):
    vector = PAGES[name]
    expected = sparse_page(vector["page"])
    assert hashlib.sha384(expected).hexdigest() == vector["sha384"]
    if name.startswith("SVSM"):
        page = vmsa_page(svsm_reset_state(0xFFFF0000, 0x800F12), sev_features=0x1)
    else:
        vmm, _role, features, eip = name.split("_")
        state = ovmf_reset_state(VmmType.parse(vmm), int(eip[3:], 16), 0x800F12)
        page = vmsa_page(state, sev_features=int(features[8:], 16))
    assert page == expected


def test_every_vmsa_vector_is_collected():
    assert len(PAGES) == 13


def test_field_offsets_match_vectors():
    offsets = COMPONENTS["vmsa_field_offsets"]
    common = set(offsets) & set(FIELD_OFFSETS)
    assert len(common) >= 60
    for name in common:
        assert FIELD_OFFSETS[name] == int(offsets[name], 16), name


def test_every_field_lands_at_its_offset():
    """Each scalar field written alone shows up at its documented offset and nowhere else."""
    widths = {"cpl": 1, "pkru": 4, "tsc_aux": 4, "mxcsr": 4}
    widths.update(
        dict.fromkeys(("x87_ftw", "x87_fsw", "x87_fcw", "x87_fop", "x87_ds", "x87_cs"), 2)
    )
    segments = ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")
    zero = VcpuState(efer=0, rflags=0, dr6=0, dr7=0, g_pat=0, xcr0=0, mxcsr=0, x87_fcw=0)
    for name, offset in FIELD_OFFSETS.items():
        if name in segments or name in ("vmpl", "sev_features", "virtual_tom"):
            continue
        if name.startswith("fpreg_"):
            size = 80 if name == "fpreg_x87" else 256
            blob = bytes(1 + i % 255 for i in range(size))
            page = vmsa_page(zero._replace(**{name: blob}), sev_features=0)
            assert page[offset : offset + size] == blob, name
            assert page.count(0) == 4096 - size, name
            continue
        width = widths.get(name, 8)
        value = 0x5A if width == 1 else int.from_bytes(bytes(range(1, width + 1)), "little")
        page = vmsa_page(zero._replace(**{name: value}), sev_features=0)
        assert page[offset : offset + width] == value.to_bytes(width, "little"), name
        assert page.count(0) == 4096 - width, name
    page = vmsa_page(zero, sev_features=0x21, vmpl=2, virtual_tom=0x1000)
    assert page[0x3B0:0x3B8] == (0x21).to_bytes(8, "little")
    assert page[0xCA] == 2
    assert page[0x3C8:0x3D0] == (0x1000).to_bytes(8, "little")
    for index, name in enumerate(segments):
        seg = Segment(0x1234, 0xA9B, 0xFFFFF, 0xDEAD0000)
        page = vmsa_page(zero._replace(**{name: seg}), sev_features=0)
        assert struct.unpack_from("<HHIQ", page, 0x10 * index) == (
            0x1234,
            0xA9B,
            0xFFFFF,
            0xDEAD0000,
        )


def test_long_mode_state():
    state = long_mode_state(
        rip=0xFFFF800000100000,
        rsp=0x200000,
        cr3=0x1000,
        gdt_base=0x3000,
        gdt_limit=0x17,
        idt_base=0x4000,
        idt_limit=0xFFF,
        rdi=0x5000,
    )
    assert state.cs.attrib == LONG_MODE_CODE
    assert state.cs.attrib & 0x200  # L bit
    assert state.cr0 & 0x80000001 == 0x80000001
    assert state.cr4 & 0x20
    assert state.efer & 0x500 == 0x500
    assert state.efer & 0x1000  # SVME, required in an SEV-ES/SNP VMSA
    assert state.rdi == 0x5000
    page = vmsa_page(state, sev_features=0x1)
    assert page[0x178:0x180] == (0xFFFF800000100000).to_bytes(8, "little")
    assert page[0x150:0x158] == (0x1000).to_bytes(8, "little")
    assert struct.unpack_from("<HHIQ", page, 0x60) == (0, 0, 0x17, 0x3000)  # GDTR
    assert struct.unpack_from("<HHIQ", page, 0x80) == (0, 0, 0xFFF, 0x4000)  # IDTR
    with pytest.raises(InputError):
        long_mode_state(rip=0, rsp=0, cr3=0, gdt_base=0, gdt_limit=0, cr0=0x1)
    with pytest.raises(InputError):
        long_mode_state(rip=0, rsp=0, cr3=0, gdt_base=0, gdt_limit=0, no_such_register=1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: vmsa_page(VcpuState(rip=1 << 64), sev_features=0),
        lambda: vmsa_page(VcpuState(mxcsr=1 << 32), sev_features=0),
        lambda: vmsa_page(VcpuState(rax=-1), sev_features=0),
        lambda: vmsa_page(VcpuState(cs=Segment(0x10000, 0, 0, 0)), sev_features=0),
        lambda: vmsa_page(VcpuState(), sev_features=1 << 64),
        lambda: vmsa_page(VcpuState(), sev_features=1, vmpl=4),
        lambda: VcpuState(rip="0"),
        lambda: VcpuState(cs=(0, 0, 0, 0)),
        lambda: VcpuState(fpreg_xmm=bytes(257)),
        lambda: VcpuState(fpreg_x87="00"),
        lambda: ovmf_reset_state(VmmType.QEMU, BSP_RESET_EIP, None),  # QEMU needs the CPU model
        lambda: ovmf_reset_state(VmmType.QEMU, 1 << 32, 0x800F12),
        lambda: VmmType.parse("xen"),
    ],
)
def test_bad_vmsa_input(build):
    with pytest.raises(InputError):
        build()


def test_vmsa_page_is_one_page():
    assert len(vmsa_page(VcpuState(), sev_features=0)) == 4096


def test_ec2_and_gce_ignore_the_cpu_signature_but_qemu_does_not():
    for vmm in (VmmType.EC2, VmmType.GCE):
        assert ovmf_reset_state(vmm, BSP_RESET_EIP, 0x800F12).rdx == 0x600
        assert ovmf_reset_state(vmm, BSP_RESET_EIP, None).rdx == 0x600
    assert ovmf_reset_state(VmmType.QEMU, BSP_RESET_EIP, 0xA00F11).rdx == 0xA00F11
    assert ovmf_reset_state(VmmType.EC2, BSP_RESET_EIP, None, rdx=0).rdx == 0


def test_cpu_models_match_sev_snp_measure():
    vcpu_types = pytest.importorskip("sevsnpmeasure.vcpu_types")
    for name, signature in vcpu_types.CPU_SIGS.items():
        assert CPU_MODELS[name] == signature
    for family in (0x6, 0xF, 0x17, 0x19, 0x1A):
        for model in (0, 1, 0x11, 0x31, 0xA0):
            for stepping in (0, 1, 2):
                expected = vcpu_types.cpu_sig(family, model, stepping)
                assert cpu_signature(family, model, stepping) == expected
                assert decode_signature(expected) == (family, model, stepping)


def test_cpu_model_lookup():
    assert model_signature("epyc-milan") == 0xA00F11
    assert model_signature("EPYC-Genoa-v1") == 0xA10F10
    assert model_signature("EPYC-Turin") == 0xB00F00
    assert resolve_signature(family=25, model=1, stepping=1) == 0xA00F11
    assert resolve_signature(vcpu_sig=0x800F12) == 0x800F12
    assert resolve_signature() is None
    for bad in (
        {"vcpu_type": "EPYC-v9"},
        {"vcpu_type": "EPYC", "vcpu_sig": 1},
        {"family": 25},
        {"model": 1},
        {"vcpu_sig": 1 << 32},
        {"family": 25, "model": 256, "stepping": 0},
        {"family": 25, "model": 1, "stepping": 16},
    ):
        with pytest.raises(InputError):
            resolve_signature(**bad)


def test_states_validate_when_made_and_when_replaced() -> None:
    """``VcpuState`` and ``GuestFpu`` are NamedTuples (no dataclass generation at import): made
    directly, positionally or through ``_replace``, a bad value is refused all the same."""
    good = VcpuState(rip=0x1000)
    assert good._replace(rax=1).rax == 1
    assert good._replace(rax=1)._replace(rax=0) == good
    assert VcpuState._fields[0] == "es"
    assert VcpuState._fields[-1] == "fpreg_ymm"
    for bad in ({"rax": "1"}, {"rax": True}, {"cs": (0, 0, 0, 0)}, {"fpreg_x87": bytes(81)}):
        with pytest.raises(InputError):
            VcpuState(**bad)
        with pytest.raises(InputError):
            good._replace(**bad)
    fpu = GuestFpu()
    assert fpu._replace(fcw=0x27F).fcw == 0x27F
    with pytest.raises(InputError):
        fpu._replace(fcw=1 << 16)
    with pytest.raises(InputError):
        GuestFpu(0x37F, 0, 0, 0, 0, 0, 0x1F80, bytes(127))
