"""The VMSA KVM builds for an SNP vCPU at KVM_SEV_SNP_LAUNCH_FINISH (Linux v6.12).

The expected pages here are written by hand from the kernel source: the member list of
``struct sev_es_save_area`` (arch/x86/include/asm/svm.h) is transcribed below and every field
``sev_es_sync_vmsa`` (arch/x86/kvm/svm/sev.c) writes is placed through it, independently of
``toolchain.snp.vmsa``'s own offset table.
"""

from __future__ import annotations

import struct

import pytest

from toolchain.errors import InputError
from toolchain.snp.vmsa import (
    KVM_SYNC_VMSA_VERSION,
    GuestFpu,
    Segment,
    VcpuState,
    kvm_sev_features,
    kvm_snp_vmsa,
    long_mode_state,
)

# struct sev_es_save_area, v6.12, up to the FPU area (name, size); __packed.
SEV_ES_SAVE_AREA = [
    *[(seg, 16) for seg in ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")],
    ("vmpl0_ssp", 8),
    ("vmpl1_ssp", 8),
    ("vmpl2_ssp", 8),
    ("vmpl3_ssp", 8),
    ("u_cet", 8),
    ("reserved_0xc8", 2),
    ("vmpl", 1),
    ("cpl", 1),
    ("reserved_0xcc", 4),
    ("efer", 8),
    ("reserved_0xd8", 104),
    ("xss", 8),
    ("cr4", 8),
    ("cr3", 8),
    ("cr0", 8),
    ("dr7", 8),
    ("dr6", 8),
    ("rflags", 8),
    ("rip", 8),
    ("dr0", 8),
    ("dr1", 8),
    ("dr2", 8),
    ("dr3", 8),
    ("dr0_addr_mask", 8),
    ("dr1_addr_mask", 8),
    ("dr2_addr_mask", 8),
    ("dr3_addr_mask", 8),
    ("reserved_0x1c0", 24),
    ("rsp", 8),
    ("s_cet", 8),
    ("ssp", 8),
    ("isst_addr", 8),
    ("rax", 8),
    ("star", 8),
    ("lstar", 8),
    ("cstar", 8),
    ("sfmask", 8),
    ("kernel_gs_base", 8),
    ("sysenter_cs", 8),
    ("sysenter_esp", 8),
    ("sysenter_eip", 8),
    ("cr2", 8),
    ("reserved_0x248", 32),
    ("g_pat", 8),
    ("dbgctl", 8),
    ("br_from", 8),
    ("br_to", 8),
    ("last_excp_from", 8),
    ("last_excp_to", 8),
    ("reserved_0x298", 80),  # vmcb_save_area's SPEC_CTRL lands at 0x2E0, inside this
    ("pkru", 4),
    ("tsc_aux", 4),
    ("reserved_0x2f0", 24),
    ("rcx", 8),
    ("rdx", 8),
    ("rbx", 8),
    ("reserved_0x320", 8),
    ("rbp", 8),
    ("rsi", 8),
    ("rdi", 8),
    *[(f"r{n}", 8) for n in range(8, 16)],
    ("reserved_0x380", 16),
    ("guest_exit_info_1", 8),
    ("guest_exit_info_2", 8),
    ("guest_exit_int_info", 8),
    ("guest_nrip", 8),
    ("sev_features", 8),
    ("vintr_ctrl", 8),
    ("guest_exit_code", 8),
    ("virtual_tom", 8),
    ("tlb_id", 8),
    ("pcpu_id", 8),
    ("event_inj", 8),
    ("xcr0", 8),
    ("reserved_0x3f0", 16),
    ("x87_dp", 8),
    ("mxcsr", 4),
    ("x87_ftw", 2),
    ("x87_fsw", 2),
    ("x87_fcw", 2),
    ("x87_fop", 2),
    ("x87_ds", 2),
    ("x87_cs", 2),
    ("x87_rip", 8),
    ("fpreg_x87", 80),
    ("fpreg_xmm", 256),
    ("fpreg_ymm", 256),
]
OFF: dict[str, int] = {}
_at = 0
for _name, _size in SEV_ES_SAVE_AREA:
    OFF[_name] = _at
    _at += _size
SIZE = dict(SEV_ES_SAVE_AREA)

# The registers sev_es_sync_vmsa takes from the VMCB save area and vcpu->arch (everything else
# it writes comes from the FPU or SEV features), each with a distinct value.
SYNCED = {
    "efer": 0x1D01,
    "xss": 0x0A0B,
    "cr4": 0x3620,
    "cr3": 0x0000_7000,
    "cr0": 0x8005_0033,
    "dr6": 0xFFFF_0FF0,
    "rflags": 0x246,
    "rip": 0x0040_1000,
    "rsp": 0x0080_0000,
    "s_cet": 0x11,
    "ssp": 0x22,
    "isst_addr": 0x33,
    "rax": 0xA0A0,
    "star": 0x0023_0010_0000_0000,
    "lstar": 0xFFFF_8000_0000_1000,
    "cstar": 0x44,
    "sfmask": 0x4_7700,
    "kernel_gs_base": 0x55,
    "sysenter_cs": 0x10,
    "sysenter_esp": 0x66,
    "sysenter_eip": 0x77,
    "cr2": 0x88,
    "g_pat": 0x0007_0406_0007_0406,
    "dbgctl": 0x1,
    "pkru": 0x5555_5554,
    "rcx": 0xC1,
    "rdx": 0xD1,
    "rbx": 0xB1,
    "rbp": 0xB2,
    "rsi": 0x51,
    "rdi": 0xD2,
    **{f"r{n}": 0x0800 + n for n in range(8, 16)},
    "xcr0": 0x7,
}
ST = bytes(range(128))  # ST_i occupies bytes 16i..16i+15 of the FXSAVE area, 10 of them used
XMM = bytes((i * 7) & 0xFF for i in range(256))
YMM = bytes(255 - i for i in range(256))


def _state() -> VcpuState:
    state = long_mode_state(
        rip=SYNCED["rip"],
        rsp=SYNCED["rsp"],
        cr3=SYNCED["cr3"],
        gdt_base=0x2000,
        gdt_limit=0x37,
        tr=Segment(0x28, 0x8B, 0x67, 0x2100),
        cr0=SYNCED["cr0"],
        cr4=SYNCED["cr4"],
        efer=SYNCED["efer"],
    )
    entry = {"rip", "rsp", "cr3", "cr0", "cr4", "efer"}
    # VcpuState spells the VMSA's DBGCTL "dbgctrl".
    others = {"dbgctrl" if k == "dbgctl" else k: v for k, v in SYNCED.items() if k not in entry}
    return state._replace(**others)


def _fpu(*, ymm: bytes | None = YMM) -> GuestFpu:
    return GuestFpu(
        fcw=0x037F,
        fsw=0x3800,
        ftw=0x00C0,  # the abridged tag word: ST6, ST7 valid
        fop=0x07DB,
        rip=0x0040_1234,
        rdp=0x0060_5678,
        mxcsr=0x0000_9FC0,
        st_space=ST,
        xmm_space=XMM,
        ymm=ymm,
    )


def _expected(state: VcpuState, *, sev_features: int, ymm: bytes | None, spec_ctrl: int) -> bytes:
    page = bytearray(4096)

    def put(name: str, value: int) -> None:
        page[OFF[name] : OFF[name] + SIZE[name]] = value.to_bytes(SIZE[name], "little")

    for seg in ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr"):
        s: Segment = getattr(state, seg)
        page[OFF[seg] : OFF[seg] + 16] = struct.pack("<HHIQ", s.selector, s.attrib, s.limit, s.base)
    put("cpl", 0)
    put("dr7", 0x400)
    for name, value in SYNCED.items():
        put(name, value)
    put("sev_features", sev_features)
    page[0x2E0:0x2E8] = spec_ctrl.to_bytes(8, "little")  # vmcb_save_area.spec_ctrl
    put("x87_dp", 0x0060_5678)
    put("mxcsr", 0x9FC0)
    put("x87_ftw", 0x00C0)
    put("x87_fsw", 0x3800)
    put("x87_fcw", 0x037F)
    put("x87_fop", 0x07DB)
    put("x87_rip", 0x0040_1234)
    # 8x8 bytes (bytes 0-7 of ST0..ST7), then 8x2 bytes (bytes 8-9 of each), written out:
    page[OFF["fpreg_x87"] : OFF["fpreg_x87"] + 80] = bytes.fromhex(
        "0001020304050607" "1011121314151617" "2021222324252627" "3031323334353637"
        "4041424344454647" "5051525354555657" "6061626364656667" "7071727374757677"
        "0809" "1819" "2829" "3839" "4849" "5859" "6869" "7879"
    )  # fmt: skip
    page[OFF["fpreg_xmm"] : OFF["fpreg_xmm"] + 256] = XMM
    if ymm is not None:
        page[OFF["fpreg_ymm"] : OFF["fpreg_ymm"] + 256] = ymm
    return bytes(page)


def test_the_transcribed_struct_matches_the_kernels_own_offset_comments() -> None:
    # The offsets Linux names its reserved fields after, and the FPU area at 0x400.
    assert OFF["reserved_0xc8"] == 0xC8
    assert OFF["reserved_0x1c0"] == 0x1C0
    assert OFF["reserved_0x298"] == 0x298
    assert OFF["reserved_0x320"] == 0x320
    assert OFF["reserved_0x3f0"] == 0x3F0
    assert OFF["x87_dp"] == 0x400
    assert OFF["fpreg_ymm"] + 256 == 0x670


@pytest.mark.parametrize("ymm", [YMM, None], ids=["with-ymm", "no-ymm-state"])
def test_kvm_vmsa_matches_the_hand_built_page(ymm: bytes | None) -> None:
    state = _state()
    page = kvm_snp_vmsa(state, sev_features=0x21, fpu=_fpu(ymm=ymm), spec_ctrl=0x4)
    assert page == _expected(state, sev_features=0x21, ymm=ymm, spec_ctrl=0x4)


def test_x87_registers_are_packed_eight_then_two() -> None:
    page = kvm_snp_vmsa(_state(), sev_features=1, fpu=_fpu())
    x87 = page[0x420:0x470]
    assert x87[:8] == bytes(range(8))  # ST0 bytes 0-7
    assert x87[56:64] == bytes(range(0x70, 0x78))  # ST7 bytes 0-7
    assert x87[64:66] == b"\x08\x09"  # ST0 bytes 8-9
    assert x87[78:80] == b"\x78\x79"  # ST7 bytes 8-9
    assert b"\x0a" not in x87  # bytes 10-15 of each slot are padding, never copied


def test_the_reset_fpu_and_zero_ds_cs() -> None:
    page = kvm_snp_vmsa(_state(), sev_features=1)
    assert page[0x408:0x40C] == b"\x80\x1f\x00\x00"  # MXCSR 0x1F80
    assert page[0x410:0x412] == b"\x7f\x03"  # FCW 0x37F
    assert page[0x414:0x418] == bytes(4)  # X87_DS, X87_CS always zero
    assert page[0x420:0x670] == bytes(0x250)


def test_ymm_follows_xstate_bv_bit_2_of_the_xsave_image() -> None:
    image = bytearray(_fpu().to_xsave())
    assert struct.unpack_from("<Q", image, 512)[0] == 0x7
    assert GuestFpu.from_xsave(bytes(image)) == _fpu()
    image[512] &= ~0x4  # YMM not in use: get_xsave_addr() gives NULL, KVM zeroes FPREG_YMM
    fpu = GuestFpu.from_xsave(bytes(image))
    assert fpu.ymm is None
    assert image[576:832] == YMM  # the stale bytes are there, and must not be used
    assert kvm_snp_vmsa(_state(), sev_features=1, fpu=fpu)[0x570:0x670] == bytes(256)
    with pytest.raises(InputError, match="at least 576"):
        GuestFpu.from_xsave(bytes(512))


def test_sev_features_as_kvm_sev_init2_sets_them() -> None:
    assert kvm_sev_features() == 0x1
    assert kvm_sev_features(0x20) == 0x21  # DebugSwap
    for unsupported in (0x2, 0x8, 0x200, 0x1):
        with pytest.raises(InputError, match="refuses vmsa_features"):
            kvm_sev_features(unsupported)
    page = kvm_snp_vmsa(_state(), sev_features=kvm_sev_features(0x20))
    assert page[0x3B0:0x3B8] == b"\x21" + bytes(7)
    for bad in (0x0, 0x20, 0x3):
        with pytest.raises(InputError, match="SEV_FEATURES"):
            kvm_snp_vmsa(_state(), sev_features=bad)
    assert "v6.12" in KVM_SYNC_VMSA_VERSION


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dr7": 0x401}, "DR7=0x401"),
        ({"cpl": 3}, "CPL from SS.DPL"),
        ({"dr0": 0x1000}, "dr0"),
        ({"u_cet": 1}, "u_cet"),
        ({"vmpl2_ssp": 1}, "vmpl2_ssp"),
        ({"tsc_aux": 1}, "tsc_aux"),
        ({"mxcsr": 0x1F81}, "mxcsr"),
        ({"x87_fcw": 0}, "x87_fcw"),
        ({"fpreg_xmm": b"\x01"}, "fpreg_xmm"),
    ],
)
def test_states_kvm_cannot_produce_are_refused(change: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        kvm_snp_vmsa(_state()._replace(**change), sev_features=1)


def test_spec_ctrl_is_a_32_bit_value_at_0x2e0() -> None:
    assert kvm_snp_vmsa(_state(), sev_features=1, spec_ctrl=0x5)[0x2E0:0x2E8] == b"\x05" + bytes(7)
    with pytest.raises(InputError, match="spec_ctrl"):
        kvm_snp_vmsa(_state(), sev_features=1, spec_ctrl=1 << 32)


def test_a_ring3_state_needs_ss_dpl_3() -> None:
    state = _state()
    ss3 = state.ss._replace(attrib=state.ss.attrib | 3 << 5)
    assert kvm_snp_vmsa(state._replace(ss=ss3, cpl=3), sev_features=1)[0xCB] == 3


def test_fpu_values_are_range_checked() -> None:
    with pytest.raises(InputError, match="fcw"):
        GuestFpu(fcw=0x10000)
    with pytest.raises(InputError, match="st_space"):
        GuestFpu(st_space=bytes(80))
    with pytest.raises(InputError, match="ymm"):
        GuestFpu(ymm=bytes(128))
