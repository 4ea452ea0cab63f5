"""``keep measure``: the launch digests of a built keep (or of two ELFs), per vCPU count.

``measure_keep`` takes the plan from ``DIR/launch-plan.json`` (``PLAN_FILE``, written by ``keep
build``) or ``--plan FILE``. Where the microkernel and runtime ELFs are beside it (or given), the
plan is laid out again from them and must launch the same keep as the file: a plan that does not
follow from its ELFs is an ``EvidenceError`` naming both launch digests. With the ELFs and the
microkernel built for ``snp`` (``DIR/ukernel-snp.elf``, or ``--snp-ukernel``) it also gives the
``snp`` launch digests (the snp plan laid out from them with the C-bit ``c_bit``, default 51, and
KVM's VMSAs; ``toolchain.measure.keep.snp_plan_of``). The plan is read once, by
``LaunchPlan.load``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import EvidenceError, InputError
from toolchain.measure.plan import PLAN_FILE, LaunchPlan

RUNTIME_ELF = "runtime.elf"
UKERNEL_ELF = "ukernel.elf"


@dataclass(frozen=True)
class KeepMeasurement:
    """What ``keep measure`` prints: the plan and its digests (``snp``: None without the ELFs)."""

    plan: LaunchPlan
    digests: dict[int, bytes]
    c_bit: int
    snp: dict[int, bytes] | None

    def as_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "launch_digests": {str(count): d.hex() for count, d in self.digests.items()},
            "snp": None
            if self.snp is None
            else {
                "c_bit": self.c_bit,
                "launch_digests": {str(count): d.hex() for count, d in self.snp.items()},
            },
            "guest_policy": f"{plan.guest_policy:#x}",
            "sev_features": f"{plan.sev_features:#x}",
            "ram_size": plan.ram_size,
            "pages": plan.page_counts(plan.vcpu_count),
            "inputs": dict(plan.inputs),
        }

    def lines(self) -> list[str]:
        plan = self.plan
        counts = sorted(plan.page_counts(plan.vcpu_count).items())
        lines = [
            f"guest policy {plan.guest_policy:#x}, SEV features {plan.sev_features:#x}",
            f"launched pages: {', '.join(f'{n} {kind}' for kind, n in counts)} (VMSA per vCPU)",
        ]
        for count, digest in self.digests.items():
            lines.append(f"launch digest ({_vcpus(count)}): {digest.hex()}")
        if self.snp is None:
            not_computed = (
                "snp launch digests: not computed (the snp plan is laid out from the ELFs:"
            )
            lines += [
                f"{not_computed} --out DIR",
                "  of 'keep build', or --ukernel, --runtime and --snp-ukernel)",
            ]
        for count, digest in (self.snp or {}).items():
            lines.append(f"snp launch digest ({_vcpus(count)}, C-bit {self.c_bit}): {digest.hex()}")
        return lines


def _vcpus(count: int) -> str:
    return f"{count} vCPU{'s' if count > 1 else ''}"


def measure_keep(
    *,
    out: Path | None = None,
    plan_path: Path | None = None,
    ukernel: Path | None = None,
    runtime: Path | None = None,
    vcpu_counts: Iterable[int] = (1, 2, 4),
    c_bit: int | None = None,
    snp_ukernel: Path | None = None,
) -> KeepMeasurement:
    """Measure a build directory ``out``, a plan file, and/or the two ELFs (see above)."""
    from toolchain.measure.keep import DEFAULT_C_BIT, SNP_UKERNEL_ELF, check_c_bit, snp_plan_of

    counts = sorted(set(vcpu_counts))
    if (ukernel is None) != (runtime is None):
        raise InputError("--ukernel and --runtime go together")
    if out is not None:
        if not out.is_dir():
            raise InputError(f"{out} is not a directory (expected 'keep build --out DIR')")
        plan_path = plan_path or out / PLAN_FILE
        if ukernel is None and (out / UKERNEL_ELF).is_file():
            ukernel, runtime = out / UKERNEL_ELF, out / RUNTIME_ELF
        if snp_ukernel is None and (out / SNP_UKERNEL_ELF).is_file():
            snp_ukernel = out / SNP_UKERNEL_ELF
    plan = _plan(plan_path, ukernel, runtime)
    c_bit = DEFAULT_C_BIT if c_bit is None else c_bit
    check_c_bit(c_bit)
    snp = None
    if ukernel is not None and runtime is not None and snp_ukernel is not None:
        # The snp plan is laid out from the ELFs, the microkernel built for snp.
        snp = snp_plan_of(plan, ukernel, runtime, snp_ukernel, c_bit=c_bit).launch_digests(counts)
    return KeepMeasurement(plan, plan.launch_digests(counts), c_bit, snp)


def _plan(plan_path: Path | None, ukernel: Path | None, runtime: Path | None) -> LaunchPlan:
    """The plan file's plan, checked against the ELFs when they are there; or the ELFs' plan."""
    from toolchain.measure.keep import build_plan

    recorded = LaunchPlan.load(plan_path) if plan_path is not None else None
    if ukernel is None or runtime is None:
        if recorded is None:
            raise InputError(
                "nothing to measure", hint="give --out DIR, --plan FILE or the two ELFs"
            )
        return recorded
    if recorded is None:
        return build_plan(ukernel, runtime)
    laid_out = build_plan(ukernel, runtime, vcpu_count=recorded.vcpu_count)
    if laid_out.differences(recorded):
        count = recorded.vcpu_count
        raise EvidenceError(
            f"{plan_path} does not follow from {ukernel.name} and {runtime.name}",
            field="launch digest",
            expected=laid_out.launch_digest(count).hex(),
            found=recorded.launch_digest(count).hex(),
            hint="rebuild with 'keep build', or remove the stale plan",
        )
    return laid_out
