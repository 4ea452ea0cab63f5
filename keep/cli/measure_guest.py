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


def _int(text: str | None, option: str) -> int | None:
    from toolchain.errors import InputError

    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise InputError(f"{option} {text!r} is not an integer") from None


def run(args: argparse.Namespace) -> int:
    import base64
    from pathlib import Path

    from toolchain.errors import InputError
    from toolchain.measure.guest import GuestSpec, Mode, measure_guest, parse_vcpu_counts
    from toolchain.snp.cpu import resolve_signature
    from toolchain.snp.vmsa import VmmType

    mode = Mode.parse(args.mode)
    if args.ovmf is None:
        raise InputError("--ovmf PATH is required")
    output_format = args.output_format.lower()
    if output_format not in ("hex", "base64"):
        raise InputError(f"--output-format {args.output_format!r}: use hex or base64")
    if args.dump_vmsa and mode not in (Mode.SNP, Mode.SEV_ES, Mode.SNP_SVSM):
        raise InputError("--dump-vmsa applies to modes seves, snp and snp:svsm")
    vmm = VmmType.parse(args.vmm_type)
    vcpu_sig = None
    if mode is not Mode.SEV:
        vcpu_sig = resolve_signature(
            vcpu_type=args.vcpu_type,
            vcpu_sig=_int(args.vcpu_sig, "--vcpu-sig"),
            family=_int(args.vcpu_family, "--vcpu-family"),
            model=_int(args.vcpu_model, "--vcpu-model"),
            stepping=_int(args.vcpu_stepping, "--vcpu-stepping"),
        )
    counts: list[int] = []
    if mode.needs_vcpus:
        if args.vcpus is None:
            raise InputError(f"--vcpus N is required in mode {mode.value}")
        counts = parse_vcpu_counts(args.vcpus)
    snp_ovmf_hash = None
    if args.snp_ovmf_hash is not None:
        try:
            snp_ovmf_hash = bytes.fromhex(args.snp_ovmf_hash)
        except ValueError:
            raise InputError("--snp-ovmf-hash is not hexadecimal") from None
        if len(snp_ovmf_hash) != 48:
            raise InputError(
                f"--snp-ovmf-hash is {len(snp_ovmf_hash)} bytes; an SNP digest is 48 bytes"
            )
    if args.vars_size is not None and args.vars_file is not None:
        raise InputError("give --vars-size or --vars-file, not both")
    vars_size = _int(args.vars_size, "--vars-size") or 0
    if args.vars_file is not None:
        try:
            vars_size = Path(args.vars_file).stat().st_size
        except OSError as exc:
            raise InputError(f"cannot read --vars-file {args.vars_file}: {exc.strerror}") from None
    if mode is Mode.SNP_SVSM and args.vars_size is None and args.vars_file is None:
        raise InputError("mode snp:svsm needs --vars-size or --vars-file")
    guest_features = _int(args.guest_features, "--guest-features")
    spec = GuestSpec(
        mode=mode,
        ovmf=args.ovmf,
        kernel=args.kernel,
        initrd=args.initrd,
        append=args.append,
        vcpu_sig=vcpu_sig,
        guest_features=0x1 if guest_features is None else guest_features,
        vmm=vmm,
        snp_ovmf_hash=snp_ovmf_hash,
        svsm=args.svsm,
        vars_size=vars_size,
        vmsa_rdx=_int(args.vmsa_rdx, "--vmsa-rdx"),
    )
    result = measure_guest(spec, counts)

    def render(digest: bytes) -> str:
        return digest.hex() if output_format == "hex" else base64.b64encode(digest).decode()

    if args.dump_vmsa:
        for index in range(max(counts)):
            try:
                Path(f"vmsa{index}.bin").write_bytes(result.vmsa_for(index))
            except OSError as exc:
                raise InputError(f"cannot write vmsa{index}.bin: {exc.strerror}") from None
    if args.json:
        import json  # only here: start-up is part of what a measurement costs

        document = result.as_dict()
        document["output_format"] = output_format
        for entry, digest in zip(
            document["measurements"], [d for _, d in sorted(result.digests.items())], strict=True
        ):
            entry["digest"] = render(digest)
        print(json.dumps(document, indent=2))
        return 0
    label = {
        Mode.SNP: "SEV_SNP",
        Mode.SNP_SVSM: "SEV_SNP_SVSM",
        Mode.SEV_ES: "SEV_ES",
        Mode.SEV: "SEV",
        Mode.SNP_OVMF_HASH: "SNP OVMF hash",
    }[mode]
    multiple = len(result.digests) > 1
    for count, digest in sorted(result.digests.items()):
        text = render(digest)
        if multiple:
            text = f"{count}\t{text}"
        if args.verbose:
            suffix = f" ({count} vCPU{'s' if count != 1 else ''})" if count else ""
            print(f"Calculated {label} guest measurement{suffix}: {render(digest)}")
        else:
            print(text)
    return 0
