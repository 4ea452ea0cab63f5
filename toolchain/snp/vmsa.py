"""The VMSA page (the SEV-ES save area) that the firmware measures for each vCPU.

``VcpuState`` describes any x86-64 starting state; ``vmsa_page`` lays it out in the 4 KiB page
exactly as SNP_LAUNCH_UPDATE(VMSA) measures it (AMD APM vol. 2, table B-4 "VMSA layout, state
save area"; offsets below). Fields not set are zero, as KVM leaves them.

The reset states QEMU, EC2 and GCE launch OVMF with (boot CPU at the reset vector, application
processors at OVMF's SEV-ES AP reset address), the Coconut-SVSM start state, and a flat 64-bit
long-mode entry (for our own microkernel) are built here from the same ``VcpuState``.

``Segment`` is a ``NamedTuple``; ``VcpuState`` and ``GuestFpu`` are ``toolchain.records.Record``s
(NamedTuples that validate themselves when made, ``_replace`` too), not dataclasses:
``keep measure-guest`` imports this module, and generating a frozen dataclass's methods for ~100
fields was most of its import. ``VcpuState._fields`` names the fields in order;
``state._replace(rip=...)`` is a changed copy.
"""

# No ``from __future__ import annotations``: ``typing.NamedTuple`` turns every string annotation
# into a ``ForwardRef`` (one ``compile`` each), a quarter of this module's import with
# ``VcpuState``'s ~100 fields; evaluated annotations cost nothing (tests/test_perf_paths.py).

import struct
from enum import Enum
from typing import Any, NamedTuple, Self

from toolchain.errors import InputError
from toolchain.records import Record

VMSA_SIZE = 4096

#: Reset vector of the boot CPU (CS base 0xFFFF0000, IP 0xFFF0).
BSP_RESET_EIP = 0xFFFFFFF0
#: PAT MSR power-on value (AMD APM vol. 2, A.3).
PAT_RESET = 0x0007040600070406

# EFER / CR bits used by the builders.
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE, EFER_SVME = 0x1, 0x100, 0x400, 0x800, 0x1000
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 0x1, 0x2, 0x10, 0x20, 0x10000, 0x80000000
CR4_PAE, CR4_MCE, CR4_OSFXSR, CR4_OSXMMEXCPT = 0x20, 0x40, 0x200, 0x400


class Segment(NamedTuple):
    """A segment register as the VMSA stores it (``vmcb_seg``).

    ``attrib`` is the packed 16-bit form: bits 7:0 are descriptor bits 47:40 (type, S, DPL, P),
    bits 11:8 are descriptor bits 55:52 (AVL, L, D/B, G).
    """

    selector: int = 0
    attrib: int = 0
    limit: int = 0
    base: int = 0


# (field name, offset, struct format) for every scalar the builder writes.
_SCALARS: tuple[tuple[str, int, str], ...] = (
    ("vmpl0_ssp", 0x0A0, "Q"),
    ("vmpl1_ssp", 0x0A8, "Q"),
    ("vmpl2_ssp", 0x0B0, "Q"),
    ("vmpl3_ssp", 0x0B8, "Q"),
    ("u_cet", 0x0C0, "Q"),
    ("cpl", 0x0CB, "B"),
    ("efer", 0x0D0, "Q"),
    ("xss", 0x140, "Q"),
    ("cr4", 0x148, "Q"),
    ("cr3", 0x150, "Q"),
    ("cr0", 0x158, "Q"),
    ("dr7", 0x160, "Q"),
    ("dr6", 0x168, "Q"),
    ("rflags", 0x170, "Q"),
    ("rip", 0x178, "Q"),
    ("dr0", 0x180, "Q"),
    ("dr1", 0x188, "Q"),
    ("dr2", 0x190, "Q"),
    ("dr3", 0x198, "Q"),
    ("rsp", 0x1D8, "Q"),
    ("s_cet", 0x1E0, "Q"),
    ("ssp", 0x1E8, "Q"),
    ("isst_addr", 0x1F0, "Q"),
    ("rax", 0x1F8, "Q"),
    ("star", 0x200, "Q"),
    ("lstar", 0x208, "Q"),
    ("cstar", 0x210, "Q"),
    ("sfmask", 0x218, "Q"),
    ("kernel_gs_base", 0x220, "Q"),
    ("sysenter_cs", 0x228, "Q"),
    ("sysenter_esp", 0x230, "Q"),
    ("sysenter_eip", 0x238, "Q"),
    ("cr2", 0x240, "Q"),
    ("g_pat", 0x268, "Q"),
    ("dbgctrl", 0x270, "Q"),
    ("pkru", 0x2E8, "I"),
    ("tsc_aux", 0x2EC, "I"),
    ("rcx", 0x308, "Q"),
    ("rdx", 0x310, "Q"),
    ("rbx", 0x318, "Q"),
    ("rbp", 0x328, "Q"),
    ("rsi", 0x330, "Q"),
    ("rdi", 0x338, "Q"),
    ("r8", 0x340, "Q"),
    ("r9", 0x348, "Q"),
    ("r10", 0x350, "Q"),
    ("r11", 0x358, "Q"),
    ("r12", 0x360, "Q"),
    ("r13", 0x368, "Q"),
    ("r14", 0x370, "Q"),
    ("r15", 0x378, "Q"),
    ("xcr0", 0x3E8, "Q"),
    ("x87_dp", 0x400, "Q"),
    ("mxcsr", 0x408, "I"),
    ("x87_ftw", 0x40C, "H"),
    ("x87_fsw", 0x40E, "H"),
    ("x87_fcw", 0x410, "H"),
    ("x87_fop", 0x412, "H"),
    ("x87_ds", 0x414, "H"),
    ("x87_cs", 0x416, "H"),
    ("x87_rip", 0x418, "Q"),
)
_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")
_SEGMENT = struct.Struct("<HHIQ")
# Offsets of fields vmsa_page takes as keyword arguments (not part of the vCPU state).
OFFSET_VMPL = 0x0CA
OFFSET_SEV_FEATURES = 0x3B0
OFFSET_VIRTUAL_TOM = 0x3C8
#: Offset of every field, for tests and for tools that dump a VMSA.
FIELD_OFFSETS: dict[str, int] = {
    **{name: 0x10 * index for index, name in enumerate(_SEGMENTS)},
    **{name: offset for name, offset, _ in _SCALARS},
    "vmpl": OFFSET_VMPL,
    "sev_features": OFFSET_SEV_FEATURES,
    "virtual_tom": OFFSET_VIRTUAL_TOM,
}
# FPU register files: offset and size in bytes.
_FP_REGISTERS = {"fpreg_x87": (0x420, 80), "fpreg_xmm": (0x470, 256), "fpreg_ymm": (0x570, 256)}
FIELD_OFFSETS.update({name: offset for name, (offset, _) in _FP_REGISTERS.items()})
_LIMITS = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}


_NULL_SEGMENT = Segment()


class _VcpuFields(NamedTuple):
    """The fields of ``VcpuState``, in order."""

    es: Segment = _NULL_SEGMENT
    cs: Segment = _NULL_SEGMENT
    ss: Segment = _NULL_SEGMENT
    ds: Segment = _NULL_SEGMENT
    fs: Segment = _NULL_SEGMENT
    gs: Segment = _NULL_SEGMENT
    gdtr: Segment = _NULL_SEGMENT
    ldtr: Segment = _NULL_SEGMENT
    idtr: Segment = _NULL_SEGMENT
    tr: Segment = _NULL_SEGMENT
    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    efer: int = EFER_SVME  # SVME must be set in an SEV-ES/SNP guest's VMSA
    rip: int = 0
    rsp: int = 0
    rflags: int = 0x2
    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    dr0: int = 0
    dr1: int = 0
    dr2: int = 0
    dr3: int = 0
    dr6: int = 0xFFFF0FF0
    dr7: int = 0x400
    g_pat: int = PAT_RESET
    xcr0: int = 0x1
    xss: int = 0
    mxcsr: int = 0x1F80
    x87_fcw: int = 0x37F
    x87_fsw: int = 0
    x87_ftw: int = 0
    x87_fop: int = 0
    x87_ds: int = 0
    x87_cs: int = 0
    x87_dp: int = 0
    x87_rip: int = 0
    star: int = 0
    lstar: int = 0
    cstar: int = 0
    sfmask: int = 0
    kernel_gs_base: int = 0
    sysenter_cs: int = 0
    sysenter_esp: int = 0
    sysenter_eip: int = 0
    dbgctrl: int = 0
    pkru: int = 0
    tsc_aux: int = 0
    cpl: int = 0
    u_cet: int = 0
    s_cet: int = 0
    ssp: int = 0
    isst_addr: int = 0
    vmpl0_ssp: int = 0
    vmpl1_ssp: int = 0
    vmpl2_ssp: int = 0
    vmpl3_ssp: int = 0
    fpreg_x87: bytes = b""
    fpreg_xmm: bytes = b""
    fpreg_ymm: bytes = b""


class VcpuState(Record, _VcpuFields):
    """Every architectural register the VMSA measures that a vCPU can start with.

    Defaults are the values KVM puts in a freshly created vCPU (and zero elsewhere); segment
    registers default to the null segment, so build real states with the helpers below or
    give every segment explicitly. From KVM's register state (``KVM_GET_SREGS`` and friends):
    OR ``EFER_SVME`` into ``efer`` (KVM's VMSA carries it, sregs do not show it). The FPU
    register files are raw bytes (``fpreg_x87`` 80, ``fpreg_xmm`` and ``fpreg_ymm`` 256 each),
    zero-padded when shorter.
    """

    __slots__ = ()

    def _validate(self) -> None:
        for name, value in zip(self._fields, self, strict=True):
            if name in _FP_REGISTERS:
                size = _FP_REGISTERS[name][1]
                if not isinstance(value, bytes) or len(value) > size:
                    raise InputError(f"{name} must be at most {size} bytes, got {value!r:.40}")
                continue
            if name in _SEGMENTS:
                if not isinstance(value, Segment):
                    raise InputError(f"{name} must be a Segment, got {value!r}")
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"{name} must be an integer, got {value!r}")


def _put(page: bytearray, name: str, offset: int, fmt: str, value: int) -> None:
    if not 0 <= value <= _LIMITS[fmt]:
        raise InputError(
            f"VMSA field {name}={value:#x} does not fit in {struct.calcsize(fmt)} bytes"
        )
    struct.pack_into("<" + fmt, page, offset, value)


def vmsa_page(
    state: VcpuState,
    *,
    sev_features: int,
    vmpl: int = 0,
    virtual_tom: int = 0,
) -> bytes:
    """The 4096-byte VMSA page of ``state``, as the firmware measures it.

    ``sev_features`` is the guest's SEV_FEATURES (the "guest features": bit 0 SNP active, bit 5
    debug swap, ...); ``vmpl`` the VMPL the vCPU runs at (0 for an ordinary guest).
    """
    page = bytearray(VMSA_SIZE)
    for index, name in enumerate(_SEGMENTS):
        seg: Segment = getattr(state, name)
        for part, value, limit in (
            ("selector", seg.selector, 0xFFFF),
            ("attrib", seg.attrib, 0xFFFF),
            ("limit", seg.limit, 0xFFFFFFFF),
            ("base", seg.base, 0xFFFFFFFFFFFFFFFF),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                raise InputError(f"segment {name}.{part}={value!r} out of range 0..{limit:#x}")
        _SEGMENT.pack_into(page, 0x10 * index, seg.selector, seg.attrib, seg.limit, seg.base)
    for name, offset, fmt in _SCALARS:
        _put(page, name, offset, fmt, getattr(state, name))
    _put(page, "vmpl", OFFSET_VMPL, "B", vmpl)
    if vmpl > 3:
        raise InputError(f"VMPL {vmpl} out of range 0..3")
    _put(page, "sev_features", OFFSET_SEV_FEATURES, "Q", sev_features)
    _put(page, "virtual_tom", OFFSET_VIRTUAL_TOM, "Q", virtual_tom)
    for name, (offset, _size) in _FP_REGISTERS.items():
        raw: bytes = getattr(state, name)
        page[offset : offset + len(raw)] = raw
    return bytes(page)


class VmmType(Enum):
    """The VMMs whose OVMF launch states differ (names as sev-snp-measure spells them)."""

    QEMU = "QEMU"
    EC2 = "ec2"
    GCE = "gce"

    @classmethod
    def parse(cls, name: str) -> Self:
        for member in cls:
            if member.value.lower() == name.lower():
                return member
        raise InputError(
            f"unknown VMM type {name!r} (use one of: {', '.join(m.value for m in cls)})"
        )


#: RDX that EC2 and GCE load regardless of the CPU model (family 6, i.e. the INIT default).
FIXED_RESET_RDX = 0x600


def ovmf_reset_state(
    vmm: VmmType, eip: int, vcpu_sig: int | None, *, rdx: int | None = None
) -> VcpuState:
    """The real-mode reset state a VMM starts an OVMF vCPU in, at ``eip``.

    The boot CPU starts at ``BSP_RESET_EIP``; application processors at OVMF's SEV-ES AP reset
    address (from its footer table). CS base/IP split ``eip`` as the reset vector does.

    QEMU loads the CPU signature into RDX and KVM's FPU defaults (MXCSR 0x1F80, FCW 0x37F).
    EC2 marks the boot CPU's CS non-accessed and SS/TR with other type bits, loads RDX 0x600
    and zero FPU state. GCE loads RDX 0x600, zero FPU state and PAT 0x70106. ``rdx`` overrides
    RDX (e.g. 0 for EC2 guests measured before sev-snp-measure 0.0.13).
    """
    if not 0 <= eip <= 0xFFFFFFFF:
        raise InputError(f"reset EIP {eip:#x} does not fit in 32 bits")
    cs_attrib, ss_attrib, tr_attrib = 0x9B, 0x93, 0x8B
    g_pat, mxcsr, fcw = PAT_RESET, 0x1F80, 0x37F
    if vmm is VmmType.QEMU:
        if vcpu_sig is None and rdx is None:
            raise InputError(
                "QEMU guests need the vCPU model: give --vcpu-type, --vcpu-sig or "
                "--vcpu-family/--vcpu-model/--vcpu-stepping"
            )
        reset_rdx = vcpu_sig if vcpu_sig is not None else 0
    elif vmm is VmmType.EC2:
        if eip == BSP_RESET_EIP:
            cs_attrib = 0x9A
        ss_attrib, tr_attrib = 0x92, 0x83
        mxcsr = fcw = 0
        reset_rdx = FIXED_RESET_RDX
    else:
        g_pat = 0x00070106  # GCE's hypervisor loads its own PAT
        mxcsr = fcw = 0
        reset_rdx = FIXED_RESET_RDX
    data = Segment(0, 0x93, 0xFFFF, 0)
    return VcpuState(
        es=data,
        cs=Segment(0xF000, cs_attrib, 0xFFFF, eip & 0xFFFF0000),
        ss=Segment(0, ss_attrib, 0xFFFF, 0),
        ds=data,
        fs=data,
        gs=data,
        gdtr=Segment(0, 0, 0xFFFF, 0),
        ldtr=Segment(0, 0x82, 0xFFFF, 0),
        idtr=Segment(0, 0, 0xFFFF, 0),
        tr=Segment(0, tr_attrib, 0xFFFF, 0),
        cr0=CR0_ET,
        cr4=CR4_MCE,  # KVM sets CR4.MCE
        efer=EFER_SVME,
        rip=eip & 0xFFFF,
        rdx=reset_rdx if rdx is None else rdx,
        g_pat=g_pat,
        mxcsr=mxcsr,
        x87_fcw=fcw,
    )


def svsm_reset_state(eip: int, vcpu_sig: int) -> VcpuState:
    """The 32-bit protected-mode start state QEMU gives Coconut-SVSM's entry point.

    FCW stays 0 here: the state QEMU's IGVM/SVSM path loads does not set it (and the measured
    digests of real SVSM launches agree).
    """
    flat_data = Segment(0x10, 0xC93, 0xFFFFFFFF, 0)
    return VcpuState(
        es=flat_data,
        cs=Segment(0x08, 0xC9B, 0xFFFFFFFF, 0),
        ss=flat_data,
        ds=flat_data,
        fs=flat_data,
        gs=Segment(0, 0x93, 0xFFFF, 0),
        gdtr=Segment(0, 0, 0xFFFF, 0),
        ldtr=Segment(0, 0x82, 0xFFFF, 0),
        idtr=Segment(0, 0, 0xFFFF, 0),
        tr=Segment(0, 0x8B, 0xFFFF, 0),
        cr0=CR0_PE | CR0_ET,
        cr4=CR4_MCE,
        efer=EFER_SVME,
        rip=eip,
        rdx=vcpu_sig,
        mxcsr=0x1F80,
        x87_fcw=0,
    )


#: Packed attributes of flat long-mode segments.
LONG_MODE_CODE = 0xA9B  # P, DPL 0, code exec/read accessed, L=1, G=1
LONG_MODE_DATA = 0xC93  # P, DPL 0, data read/write accessed, D/B=1, G=1
TSS64_BUSY = 0x8B  # P, 64-bit TSS (busy)


def long_mode_state(
    *,
    rip: int,
    rsp: int,
    cr3: int,
    gdt_base: int,
    gdt_limit: int,
    idt_base: int = 0,
    idt_limit: int = 0,
    tr: Segment | None = None,
    code_selector: int = 0x08,
    data_selector: int = 0x10,
    cr0: int = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
    cr4: int = CR4_PAE | CR4_MCE | CR4_OSFXSR | CR4_OSXMMEXCPT,
    efer: int = EFER_SVME | EFER_NXE | EFER_LMA | EFER_LME | EFER_SCE,
    **registers: Any,
) -> VcpuState:
    """A vCPU entering 64-bit flat long mode at ring 0 (paging on, ``cr3`` the PML4).

    CS is a 64-bit code segment (L=1) at ``code_selector``; DS/ES/SS/FS/GS flat data at
    ``data_selector``; the GDT/IDT registers point at ``gdt_base``/``idt_base``. ``tr`` is the
    task register (a busy 64-bit TSS; defaults to the null TSS, which KVM accepts at entry).
    Any other ``VcpuState`` field (rdi, rsi, xcr0, ...) can be passed by name.
    """
    if not efer & EFER_LMA or not efer & EFER_LME or not cr0 & CR0_PG or not cr4 & CR4_PAE:
        raise InputError("long mode needs EFER.LME and EFER.LMA, CR0.PG and CR4.PAE set")
    data = Segment(data_selector, LONG_MODE_DATA, 0xFFFFFFFF, 0)
    try:
        return VcpuState(
            es=data,
            cs=Segment(code_selector, LONG_MODE_CODE, 0xFFFFFFFF, 0),
            ss=data,
            ds=data,
            fs=data,
            gs=data,
            gdtr=Segment(0, 0, gdt_limit, gdt_base),
            ldtr=Segment(0, 0x82, 0xFFFF, 0),
            idtr=Segment(0, 0, idt_limit, idt_base),
            tr=tr if tr is not None else Segment(0, TSS64_BUSY, 0xFFFF, 0),
            cr0=cr0,
            cr3=cr3,
            cr4=cr4,
            efer=efer,
            rip=rip,
            rsp=rsp,
            **registers,
        )
    except TypeError as exc:
        raise InputError(f"long_mode_state: {exc}") from None


# ---- the VMSA KVM builds for an SNP guest --------------------------------------------------------
#
# Linux v6.12, arch/x86/kvm/svm/sev.c: at KVM_SEV_SNP_LAUNCH_FINISH, snp_launch_update_vmsa()
# calls sev_es_sync_vmsa() for every vCPU, in vCPU-index order, and has the firmware measure the
# page at GPA 0xFFFFFFFFF000. sev_es_sync_vmsa():
#   1. refuses (-EINVAL) a vCPU with guest debugging or DR7 other than its fixed bit 10;
#   2. copies the VMCB save area (struct vmcb_save_area, 0x2E8 bytes: the segments, VMPL, CPL,
#      EFER, CR0/2/3/4, DR6/7, RFLAGS, RIP, RSP, the CET and syscall MSRs, G_PAT, DBGCTL, the LBR
#      MSRs and SPEC_CTRL at 0x2E0) over the start of the page; what that struct leaves reserved
#      (DR0-3, U_CET, VMPLn_SSP, XSS, ...) is zero there;
#   3. writes the GPRs and RIP from vcpu->arch.regs, then XCR0, PKRU, XSS and DR6 from vcpu->arch;
#   4. SEV_FEATURES = kvm_sev_info.vmsa_features (KVM_SEV_INIT2's vmsa_features, plus SNPActive
#      for a KVM_X86_SNP_VM; v6.12 accepts only DebugSwap besides);
#   5. for any VM type but KVM_X86_DEFAULT_VM (so for KVM_SEV_INIT2 guests), the FPU from the
#      guest's XSAVE image: X87_DP=rdp, MXCSR, X87_FTW=twd (the abridged tag word, as FXSAVE
#      stores it), X87_FSW, X87_FCW, X87_FOP, X87_DS=X87_CS=0, X87_RIP=rip; FPREG_X87 = bytes 0-7
#      of ST0..ST7 (8x8), then bytes 8-9 of each (8x2); FPREG_XMM = XMM0-15; FPREG_YMM = the
#      upper halves of YMM0-15 if XSTATE_BV has bit 2 (get_xsave_addr), else zero.

#: The kernel whose sev_es_sync_vmsa ``kvm_snp_vmsa`` reproduces.
KVM_SYNC_VMSA_VERSION = "Linux v6.12"
SVM_SEV_FEAT_SNP_ACTIVE = 1 << 0
SVM_SEV_FEAT_DEBUG_SWAP = 1 << 5
#: sev_supported_vmsa_features in v6.12 (sev_hardware_setup): DebugSwap, where the CPU has it.
KVM_SUPPORTED_VMSA_FEATURES = SVM_SEV_FEAT_DEBUG_SWAP
DR7_FIXED_1 = 0x400
OFFSET_SPEC_CTRL = 0x2E0
XFEATURE_YMM = 2
#: Size of the region KVM_GET_XSAVE/KVM_SET_XSAVE exchange (struct kvm_xsave).
KVM_XSAVE_SIZE = 4096
_FXSAVE = struct.Struct("<HHHHQQII128s256s")  # cwd swd twd fop rip rdp mxcsr mxcsr_mask st xmm
_XSTATE_BV_OFFSET = 512
_YMM_OFFSET = 576  # standard-format offset of XFEATURE_YMM (also its compacted offset)
_YMM_SIZE = 256
# VcpuState fields that sev_es_sync_vmsa never carries into the page: reserved in the VMCB save
# area (so zero), not synced from vcpu->arch, or taken from the guest FPU instead.
_NOT_FROM_STATE = (
    "dr0",
    "dr1",
    "dr2",
    "dr3",
    "u_cet",
    "vmpl0_ssp",
    "vmpl1_ssp",
    "vmpl2_ssp",
    "vmpl3_ssp",
    "tsc_aux",
    "x87_dp",
    "mxcsr",
    "x87_ftw",
    "x87_fsw",
    "x87_fcw",
    "x87_fop",
    "x87_ds",
    "x87_cs",
    "x87_rip",
    "fpreg_x87",
    "fpreg_xmm",
    "fpreg_ymm",
)


def kvm_sev_features(vmsa_features: int = 0) -> int:
    """SEV_FEATURES of a KVM_X86_SNP_VM created with KVM_SEV_INIT2 ``vmsa_features`` (v6.12)."""
    if not isinstance(vmsa_features, int) or isinstance(vmsa_features, bool):
        raise InputError(f"vmsa_features must be an integer, got {vmsa_features!r}")
    if vmsa_features & ~KVM_SUPPORTED_VMSA_FEATURES or vmsa_features < 0:
        raise InputError(
            f"KVM_SEV_INIT2 refuses vmsa_features {vmsa_features:#x}: {KVM_SYNC_VMSA_VERSION} "
            f"supports only {KVM_SUPPORTED_VMSA_FEATURES:#x} (DebugSwap)"
        )
    return vmsa_features | SVM_SEV_FEAT_SNP_ACTIVE


class _FpuFields(NamedTuple):
    """The fields of ``GuestFpu``, in order."""

    fcw: int = 0x37F
    fsw: int = 0
    ftw: int = 0
    fop: int = 0
    rip: int = 0
    rdp: int = 0
    mxcsr: int = 0x1F80
    st_space: bytes = bytes(128)
    xmm_space: bytes = bytes(256)
    ymm: bytes | None = None


class GuestFpu(Record, _FpuFields):
    """A vCPU's x87/SSE/AVX state as KVM holds it (the XSAVE image of KVM_GET_XSAVE).

    Defaults are KVM's reset state (FCW 0x37F, MXCSR 0x1F80, everything else zero, no YMM
    state). ``st_space`` is the FXSAVE register area: ST0..ST7, 16 bytes each, 10 used.
    ``ymm`` is the upper halves of YMM0-15, or None when XSTATE_BV bit 2 is clear.
    """

    __slots__ = ()

    def _validate(self) -> None:
        for name, bits in (
            ("fcw", 16),
            ("fsw", 16),
            ("ftw", 16),
            ("fop", 16),
            ("rip", 64),
            ("rdp", 64),
            ("mxcsr", 32),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
                raise InputError(f"FPU {name}={value!r} does not fit in {bits} bits")
        for name, size in (("st_space", 128), ("xmm_space", 256)):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise InputError(f"FPU {name} must be {size} bytes")
        if self.ymm is not None and (not isinstance(self.ymm, bytes) or len(self.ymm) != 256):
            raise InputError("FPU ymm must be 256 bytes (or None: no YMM state)")

    @classmethod
    def from_xsave(cls, region: bytes) -> Self:
        """From the XSAVE image KVM_GET_XSAVE returns (at least the legacy area and header)."""
        if len(region) < _YMM_OFFSET:
            raise InputError(f"an XSAVE image is at least {_YMM_OFFSET} bytes, not {len(region)}")
        fcw, fsw, ftw, fop, rip, rdp, mxcsr, _mask, st, xmm = _FXSAVE.unpack_from(bytes(region))
        (xstate_bv,) = struct.unpack_from("<Q", region, _XSTATE_BV_OFFSET)
        ymm = None
        if xstate_bv >> XFEATURE_YMM & 1:
            if len(region) < _YMM_OFFSET + _YMM_SIZE:
                raise InputError("the XSAVE image has YMM state (XSTATE_BV bit 2) but no room")
            ymm = bytes(region[_YMM_OFFSET : _YMM_OFFSET + _YMM_SIZE])
        return cls(fcw, fsw, ftw, fop, rip, rdp, mxcsr, st, xmm, ymm)

    def to_xsave(self) -> bytes:
        """The 4096-byte KVM_SET_XSAVE image of this state (standard format, MXCSR_MASK 0xFFFF)."""
        region = bytearray(KVM_XSAVE_SIZE)
        _FXSAVE.pack_into(
            region,
            0,
            self.fcw,
            self.fsw,
            self.ftw,
            self.fop,
            self.rip,
            self.rdp,
            self.mxcsr,
            0xFFFF,
            self.st_space,
            self.xmm_space,
        )
        xstate_bv = 0x3  # x87 and SSE state present
        if self.ymm is not None:
            xstate_bv |= 1 << XFEATURE_YMM
            region[_YMM_OFFSET : _YMM_OFFSET + _YMM_SIZE] = self.ymm
        struct.pack_into("<Q", region, _XSTATE_BV_OFFSET, xstate_bv)
        return bytes(region)

    def packed_x87(self) -> bytes:
        """FPREG_X87 as sev_es_sync_vmsa packs it: bytes 0-7 of ST0..7, then bytes 8-9 of each."""
        registers = [self.st_space[16 * i : 16 * i + 10] for i in range(8)]
        return b"".join(r[:8] for r in registers) + b"".join(r[8:10] for r in registers)


def kvm_snp_vmsa(
    state: VcpuState,
    *,
    sev_features: int,
    fpu: GuestFpu | None = None,
    spec_ctrl: int = 0,
) -> bytes:
    """The VMSA page KVM (``KVM_SYNC_VMSA_VERSION``) builds for an SNP vCPU at LAUNCH_FINISH.

    ``state`` is the vCPU as KVM holds it: its VMCB save area (segments, CRs, EFER with SVME,
    ...) and registers; ``fpu`` the guest FPU (KVM's reset FPU if None); ``sev_features`` what
    ``kvm_sev_features`` returned; ``spec_ctrl`` the VMCB's SPEC_CTRL (0 unless the VMM wrote the
    MSR on a CPU with V_SPEC_CTRL). Refuses a state KVM cannot produce: DR7 beyond its fixed
    bit, a CPL other than SS.DPL, or a value in a field the sync never writes (see
    ``_NOT_FROM_STATE``; the FPU fields come from ``fpu``).
    """
    fpu = fpu if fpu is not None else GuestFpu()
    if state.dr7 & ~DR7_FIXED_1:
        raise InputError(
            f"KVM refuses to launch an SNP vCPU with DR7={state.dr7:#x} "
            f"(sev_es_sync_vmsa: only bit 10 may be set)"
        )
    ss_dpl = (state.ss.attrib >> 5) & 3
    if state.cpl != ss_dpl:
        raise InputError(f"KVM sets CPL from SS.DPL ({ss_dpl}); the state says CPL {state.cpl}")
    defaults = VcpuState()
    for name in _NOT_FROM_STATE:
        found, default = getattr(state, name), getattr(defaults, name)
        if found != default:
            raise InputError(
                f"KVM's SNP VMSA never takes {name} from the vCPU state: it must stay "
                f"{default!r}, not {found!r} (FPU state comes from the guest FPU)"
            )
    if not sev_features & SVM_SEV_FEAT_SNP_ACTIVE or sev_features & ~(
        SVM_SEV_FEAT_SNP_ACTIVE | KVM_SUPPORTED_VMSA_FEATURES
    ):
        raise InputError(
            f"SEV_FEATURES {sev_features:#x} is not one KVM sets for an SNP guest "
            "(SNPActive, optionally DebugSwap)"
        )
    synced = state._replace(
        x87_dp=fpu.rdp,
        mxcsr=fpu.mxcsr,
        x87_ftw=fpu.ftw,
        x87_fsw=fpu.fsw,
        x87_fcw=fpu.fcw,
        x87_fop=fpu.fop,
        x87_rip=fpu.rip,
        fpreg_x87=fpu.packed_x87(),
        fpreg_xmm=fpu.xmm_space,
        fpreg_ymm=fpu.ymm if fpu.ymm is not None else bytes(_YMM_SIZE),
    )
    page = bytearray(vmsa_page(synced, sev_features=sev_features))
    # u32 in older vmcb_save_area, u64 since; SPEC_CTRL's defined bits are all in the low 32, and
    # a 32-bit value lays out the same either way.
    _put(page, "spec_ctrl", OFFSET_SPEC_CTRL, "I", spec_ctrl)
    return bytes(page)
