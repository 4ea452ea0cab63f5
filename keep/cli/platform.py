"""``keep platform``: a ✔/✗ list of what this host offers (KVM, software KVM, SEV-SNP, sim root).

For SEV-SNP it names each fact (/dev/sev, kvm_amd.sev_snp, the SNP VM type, the C-bit position
from CPUID 0x8000001F, the firmware) and says what is missing for the ``snp`` backend.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-timing", action="store_true", help="skip the ring-0/ring-3 timing probe"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from runtime.vmm.platform import platform_checklist, probe

    facts = probe(timing=not args.no_timing)
    checklist = platform_checklist(facts)
    if args.json:
        print(checklist.to_json())
        return 0
    print(checklist.render(verdict=False))
    if facts.kvm_usable:
        print("  => keeps run here with the kvm backend and the simulated firmware (sim)")
    else:
        print("  => keeps run here only with the nil backend (no isolation)")
    missing = facts.snp_missing()
    if missing:
        print("  => the snp backend (real SEV-SNP) cannot run here: " + "; ".join(missing))
    else:
        print(
            "  => this is an SEV-SNP host: keep run --backend snp --vcek FILE runs keeps here "
            "(FILE: this chip's VCEK, obtained offline; tests/hardware/README.md)"
        )
    # Informational: exit 0 when keeps can run here at all (kvm or the nil fallback).
    return 0
