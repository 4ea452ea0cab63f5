"""``keep demo``: for now, measure an SEV-SNP guest from the firmware sample shipped in the repo.

This stands in for the main job until the runner lands (it is then replaced by the full
build, measure, sign, boot, verify and run demo). It prints the launch digests an OVMF guest
would report for 1 to 4 vCPUs, with one line per input explaining what went into them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SAMPLE = Path("examples/guest/ovmf_AmdSev_suffix.bin")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure an SEV-SNP guest from the OVMF sample in examples/guest (stand-in for the full "
        "demo until the runner exists)."
    )
    parser.add_argument("--vcpus", default="1-4", help="vCPU counts to measure (default: 1-4)")
    parser.add_argument("--vcpu-type", default="EPYC-v4", help="CPU model (default: EPYC-v4)")


def _sample() -> Path:
    from toolchain.errors import PlatformError

    repo = Path(__file__).resolve().parent.parent.parent
    for candidate in (repo / SAMPLE, Path.cwd() / SAMPLE):
        if candidate.is_file():
            return candidate
    raise PlatformError(f"the firmware sample {SAMPLE} is missing: run keep demo from a checkout")


def run(args: argparse.Namespace) -> int:
    from toolchain.measure.guest import GuestSpec, Mode, measure_guest, parse_vcpu_counts
    from toolchain.snp.cpu import decode_signature, model_signature
    from toolchain.snp.ovmf import SectionType, load_firmware
    from toolchain.snp.vmsa import BSP_RESET_EIP, VmmType

    ovmf = _sample()
    counts = parse_vcpu_counts(args.vcpus)
    signature = model_signature(args.vcpu_type)
    firmware = load_firmware(ovmf)
    spec = GuestSpec(mode=Mode.SNP, ovmf=ovmf, vcpu_sig=signature, guest_features=0x1)
    result = measure_guest(spec, counts)
    family, model, stepping = decode_signature(signature)
    kinds = ", ".join(sorted({s.kind.name for s in firmware.sections}))
    hashes = next(s for s in firmware.sections if s.kind is SectionType.SNP_KERNEL_HASHES)
    try:
        shown = ovmf.relative_to(Path.cwd())
    except ValueError:
        shown = ovmf
    print("Keepstack demo: the SEV-SNP launch digest of an OVMF guest (keep measure-guest)")
    print("(stand-in for the full build/measure/sign/run demo, which replaces it later)\n")
    print("inputs:")
    print(
        f"  firmware     {shown}: {len(firmware.data)} bytes of OVMF (AmdSevX64 footer) mapped "
        f"at {firmware.gpa:#x}, measured as NORMAL pages"
    )
    print(
        f"  metadata     {len(firmware.sections)} SEV metadata sections ({kinds}): ZERO, SECRETS "
        "and CPUID pages, measured after the firmware in firmware order"
    )
    print(
        f"  kernel       none: the SNP_KERNEL_HASHES page at {hashes.gpa:#x} is measured as a "
        "ZERO page (with --kernel it would hold the SHA-256 of kernel, initrd, cmdline)"
    )
    print(
        f"  vCPU model   {args.vcpu_type}: CPUID signature {signature:#x} (family {family:#x}, "
        f"model {model:#x}, stepping {stepping}), loaded into RDX of every VMSA"
    )
    print(
        f"  VMM          QEMU reset state: boot CPU at {BSP_RESET_EIP:#x}, the others at OVMF's "
        f"SEV-ES AP reset address {firmware.sev_es_reset_eip():#x}; one VMSA page each, last"
    )
    print(f"  features     SEV_FEATURES {spec.guest_features:#x} (SNP active) in every VMSA")
    print("\nSNP launch digests (SHA-384), as the AMD secure processor would report them:")
    for count, digest in sorted(result.digests.items()):
        print(f"  {count:>2} vCPU{'s' if count > 1 else ' '}  {digest.hex()}")
    print(
        f"\nsame as: keep measure-guest --vcpus {args.vcpus} --vcpu-type {args.vcpu_type} "
        f"--vmm-type {VmmType.QEMU.value} --ovmf {shown}"
    )
    return 0
