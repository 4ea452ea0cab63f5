"""``keep measure --out DIR``: the launch digest(s) of a built keep, per vCPU count.

A thin command over ``toolchain.measure.digests.measure_keep`` (which says what is measured and
checked): ``--out DIR``, ``--plan FILE``, or ``--ukernel``/``--runtime`` to measure two ELFs
directly, without a build directory (and ``--snp-ukernel`` for the ``snp`` digests).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="a directory written by 'keep build --out DIR'"
    )
    parser.add_argument("--plan", type=Path, metavar="FILE", help="a launch-plan.json to measure")
    parser.add_argument("--ukernel", type=Path, metavar="ELF", help="the microkernel ELF")
    parser.add_argument("--runtime", type=Path, metavar="ELF", help="the ring-3 runtime image ELF")
    parser.add_argument(
        "--snp-ukernel",
        type=Path,
        metavar="ELF",
        help="the microkernel built for snp (ukernel-snp.elf), which the snp digests come from",
    )
    parser.add_argument(
        "--vcpus",
        type=int,
        action="append",
        metavar="N",
        help="vCPU count to compute the launch digest for (repeatable; default 1, 2 and 4)",
    )
    parser.add_argument(
        "--c-bit",
        type=int,
        default=None,
        metavar="N",
        help="C-bit position for the snp launch digests (CPUID 0x8000001F EBX[5:0]; "
        "default 51: Milan, Genoa, Turin)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from toolchain.measure.digests import measure_keep

    measured = measure_keep(
        out=args.out,
        plan_path=args.plan,
        ukernel=args.ukernel,
        runtime=args.runtime,
        snp_ukernel=args.snp_ukernel,
        vcpu_counts=args.vcpus or (1, 2, 4),
        c_bit=args.c_bit,
    )
    if args.json:
        print(json.dumps(measured.as_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(measured.lines()))
    return 0
