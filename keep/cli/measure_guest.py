"""``keep measure-guest``: the launch digest of any OVMF-based SEV, SEV-ES or SEV-SNP guest.

A drop-in for ``sev-snp-measure``: the options it has keep their names and meaning. Beyond
it, ``--vcpus`` takes ranges and lists (``1-64``, ``1,2,4,8``) and prints one digest per count
from a single pass, and ``--json`` prints the digest of every input as well.

Only argparse is imported at module level, so ``keep measure-guest --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

_MODES = ("snp", "snp:ovmf-hash", "snp:svsm", "seves", "sev")


def _one_line_error(message: str) -> NoReturn:
    # argparse's own error prints the whole usage; a bad option deserves one line.
    print(f"unusable input: {message} (see keep measure-guest --help)", file=sys.stderr)
    raise SystemExit(2)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compute the launch digest an AMD SEV, SEV-ES or SEV-SNP guest booted from OVMF will "
        "report (options named as in sev-snp-measure)."
    )
    parser.error = _one_line_error  # type: ignore[method-assign]
    parser.add_argument(
        "--mode",
        default="snp",
        metavar="MODE",
        help=f"guest mode: {', '.join(_MODES)} (default: snp)",
    )
    parser.add_argument(
        "--vcpus",
        metavar="N",
        help="number of vCPUs, or a range/list (1-64, 1,2,4,8): one digest per count",
    )
    parser.add_argument(
        "--vcpu-type", metavar="CPUTYPE", help="CPU model, e.g. EPYC-v4, EPYC-Milan"
    )
    parser.add_argument("--vcpu-sig", metavar="VALUE", help="raw CPUID signature, e.g. 0x800f12")
    parser.add_argument("--vcpu-family", metavar="FAMILY", help="CPU family (with model, stepping)")
    parser.add_argument("--vcpu-model", metavar="MODEL", help="CPU model number")
    parser.add_argument("--vcpu-stepping", metavar="STEPPING", help="CPU stepping")
    parser.add_argument(
        "--vmm-type", metavar="VMMTYPE", default="QEMU", help="QEMU, ec2 or gce (default: QEMU)"
    )
    parser.add_argument("--ovmf", metavar="PATH", help="the OVMF firmware image (required)")
    parser.add_argument("--kernel", metavar="PATH", help="kernel for measured direct boot")
    parser.add_argument("--initrd", metavar="PATH", help="initrd (with --kernel)")
    parser.add_argument("--append", metavar="CMDLINE", help="kernel command line (with --kernel)")
    parser.add_argument(
        "--guest-features",
        metavar="VALUE",
        default="0x1",
        help="SEV_FEATURES of the SNP VMSAs (default 0x1: SNP active; 0x21 adds debug swap)",
    )
    parser.add_argument(
        "--output-format", metavar="FORMAT", default="hex", help="hex (default) or base64"
    )
    parser.add_argument(
        "--snp-ovmf-hash",
        metavar="HASH",
        help="precomputed OVMF hash (from --mode snp:ovmf-hash) to start from instead of the file",
    )
    parser.add_argument(
        "--dump-vmsa",
        action="store_true",
        help="write the measured VMSAs to vmsa<N>.bin (seves, snp, snp:svsm)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="label the output")
    parser.add_argument(
        "--json", action="store_true", help="print every input's digest and the measurements"
    )
    svsm = parser.add_argument_group("snp:svsm mode (Coconut-SVSM)")
    svsm.add_argument("--svsm", metavar="PATH", help="SVSM image")
    svsm.add_argument("--vars-size", metavar="SIZE", help="size of the OVMF_VARS file in bytes")
    svsm.add_argument("--vars-file", metavar="PATH", help="the OVMF_VARS file (for its size)")
    parser.add_argument(
        "--vmsa-rdx",
        metavar="VALUE",
        help="override RDX in every VMSA (0 reproduces EC2 digests of sev-snp-measure <= 0.0.12)",
    )


def run(args: argparse.Namespace) -> int:
    from toolchain.measure.guest import GuestRequest

    request = GuestRequest(  # checks every option; the first problem is the error
        mode=args.mode,
        ovmf=args.ovmf,
        vcpus=args.vcpus,
        vcpu_type=args.vcpu_type,
        vcpu_sig=args.vcpu_sig,
        vcpu_family=args.vcpu_family,
        vcpu_model=args.vcpu_model,
        vcpu_stepping=args.vcpu_stepping,
        vmm_type=args.vmm_type,
        kernel=args.kernel,
        initrd=args.initrd,
        append=args.append,
        guest_features=args.guest_features,
        output_format=args.output_format,
        snp_ovmf_hash=args.snp_ovmf_hash,
        dump_vmsa=args.dump_vmsa,
        svsm=args.svsm,
        vars_size=args.vars_size,
        vars_file=args.vars_file,
        vmsa_rdx=args.vmsa_rdx,
    )
    print(request.render(request.measure(), verbose=args.verbose, as_json=args.json))
    return 0
