"""``keep measure --out DIR``: the launch digest(s) of a built keep, per vCPU count.

The plan comes from ``DIR/launch-plan.json`` (written by ``keep build``). Where the microkernel
and runtime ELFs are beside it, the plan is laid out again from them and must equal the file:
a plan that does not follow from its ELFs is refused (exit 1). ``--ukernel``/``--runtime``
measure two ELFs directly, without a build directory. With the ELFs it also prints the ``snp``
launch digests (backend snp: the plan laid out with the C-bit ``--c-bit``, default 51, and KVM's
VMSAs; ``toolchain.measure.keep.snp_plan_of``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

RUNTIME_ELF = "runtime.elf"
UKERNEL_ELF = "ukernel.elf"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="a directory written by 'keep build --out DIR'"
    )
    parser.add_argument("--plan", type=Path, metavar="FILE", help="a launch-plan.json to measure")
    parser.add_argument("--ukernel", type=Path, metavar="ELF", help="the microkernel ELF")
    parser.add_argument("--runtime", type=Path, metavar="ELF", help="the ring-3 runtime image ELF")
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

    from toolchain.errors import EvidenceError, InputError
    from toolchain.measure.keep import DEFAULT_C_BIT, build_plan, check_c_bit, snp_plan_of
    from toolchain.measure.plan import PLAN_FILE, LaunchPlan

    vcpu_counts = sorted(set(args.vcpus or (1, 2, 4)))
    plan_path: Path | None = args.plan
    ukernel: Path | None = args.ukernel
    runtime: Path | None = args.runtime
    if (ukernel is None) != (runtime is None):
        raise InputError("--ukernel and --runtime go together")
    if args.out is not None:
        if not args.out.is_dir():
            raise InputError(f"{args.out} is not a directory (expected 'keep build --out DIR')")
        plan_path = plan_path or args.out / PLAN_FILE
        if ukernel is None and (args.out / UKERNEL_ELF).is_file():
            ukernel, runtime = args.out / UKERNEL_ELF, args.out / RUNTIME_ELF
    if plan_path is None and ukernel is None:
        raise InputError("nothing to measure", hint="give --out DIR, --plan FILE or the two ELFs")

    recorded: LaunchPlan | None = None
    if plan_path is not None:
        try:
            text = plan_path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the launch plan {plan_path}: {exc.strerror}") from None
        recorded = LaunchPlan.from_json(text)
    plan = recorded
    if ukernel is not None and runtime is not None:
        laid_out = build_plan(ukernel, runtime)
        if recorded is not None:
            laid_out = laid_out.with_vcpu_count(recorded.vcpu_count)
            if laid_out.to_json() != recorded.to_json():
                raise EvidenceError(
                    f"{plan_path} does not follow from {ukernel.name} and {runtime.name}",
                    field="launch digest",
                    expected=laid_out.launch_digest().hex(),
                    found=recorded.launch_digest().hex(),
                    hint="rebuild with 'keep build', or remove the stale plan",
                )
        plan = laid_out
    if plan is None:  # pragma: no cover - one of the branches above set it
        raise InputError("nothing to measure")

    c_bit = DEFAULT_C_BIT if args.c_bit is None else args.c_bit
    check_c_bit(c_bit)
    digests = plan.launch_digests(vcpu_counts)
    snp: dict[int, bytes] | None = None
    if ukernel is not None and runtime is not None:  # the snp plan is laid out from the ELFs
        snp = snp_plan_of(plan, ukernel, runtime, c_bit=c_bit).launch_digests(vcpu_counts)
    if args.json:
        document = {
            "launch_digests": {str(count): digest.hex() for count, digest in digests.items()},
            "snp": None
            if snp is None
            else {
                "c_bit": c_bit,
                "launch_digests": {str(count): digest.hex() for count, digest in snp.items()},
            },
            "guest_policy": f"{plan.guest_policy:#x}",
            "sev_features": f"{plan.sev_features:#x}",
            "ram_size": plan.ram_size,
            "pages": plan.page_counts(),
            "inputs": dict(plan.inputs),
        }
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    pages = ", ".join(f"{count} {kind}" for kind, count in sorted(plan.page_counts().items()))
    print(f"guest policy {plan.guest_policy:#x}, SEV features {plan.sev_features:#x}")
    print(f"launched pages: {pages} (VMSA per vCPU)")
    for count, digest in digests.items():
        print(f"launch digest ({count} vCPU{'s' if count > 1 else ''}): {digest.hex()}")
    if snp is None:
        print("snp launch digests: not computed (the snp plan is laid out from the ELFs: --out DIR")
        print("  of 'keep build', or --ukernel and --runtime)")
    for count, digest in (snp or {}).items():
        print(
            f"snp launch digest ({count} vCPU{'s' if count > 1 else ''}, C-bit {c_bit}): "
            f"{digest.hex()}"
        )
    return 0
