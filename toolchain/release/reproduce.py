"""Rebuild a signed release from source and compare every digest (``keep reproduce``).

Order matters, and every comparison is made by the running code:

1. the envelope's signatures are verified against the trust policy (``verify_release``);
   nothing is built unless they verify;
2. the source tree (``toolchain.release.history.SourceTree``) is checked: when the statement
   signs its source, the tree's ``treeSha256`` (``toolchain.release.source``) must be the signed
   one, or nothing from the tree runs; when it does not (releases 0.1.0 and 0.2.0), a loud
   "source NOT SIGNED" line says which tree the user's choice made the rebuild use;
3. the example is rebuilt from the tree in a fresh temporary directory with a fresh build cache
   and the pinned toolchain: by the running code, or by the tree's own ``keep build`` in a
   subprocess for a release of another version (its exit status only says whether it built);
4. every subject (the trusted artifacts) in the output directory is compared by SHA-256 and
   SHA-384: ✔/✗;
5. every launch digest of the predicate is recomputed from the rebuilt LaunchPlan for its vCPU
   count, with the plan's guest policy: ✔/✗ (one line per vCPU count and policy, naming the
   CPU generations and backends it covers);
6. untrusted components (the VMM wheel), the toolchain and the provenance record are reported
   as "-" lines only: they are not part of the trust decision.

On a mismatch the line says where the bytes differ when the release's own bytes are published
beside the envelope (``<example>/<artifact>``, checked against the signed digest first).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.image.provenance import PROVENANCE_FILE
from toolchain.measure.plan import PLAN_FILE
from toolchain.release.history import SourceTree
from toolchain.release.layout import example_apps, example_name, published_dir
from toolchain.sign.predicate import KeepPredicate, LaunchConfig
from toolchain.sign.references import VerifiedReferences, verify_envelope
from toolchain.sign.trust import TrustPolicy


def _digests(path: Path, algorithms: list[str]) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algorithms}
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _published_copy(envelope: Path, name: str, signed: dict[str, str]) -> Path | None:
    """The release's bytes of ``name``, if published beside the envelope with the signed digest."""
    path = published_dir(envelope) / name
    if not path.is_file():
        return None
    algorithms = sorted(a for a in signed if a in ("sha256", "sha384"))
    return (
        path
        if algorithms and _digests(path, algorithms) == {a: signed[a] for a in algorithms}
        else None
    )


def _where(envelope: Path, name: str, signed: dict[str, str], rebuilt: Path) -> str:
    from toolchain.release.difference import describe

    published = _published_copy(envelope, name, signed)
    if published is None:
        return "the release's bytes are not published beside the envelope; digests only"
    return describe(published, rebuilt)


def _check_subjects(
    checklist: Checklist, envelope: Path, references: VerifiedReferences, out_dir: Path
) -> None:
    for name, signed in sorted(references.subjects.items()):
        label = f"artifact {name}"
        rebuilt = out_dir / name
        algorithms = sorted(a for a in signed if a in ("sha256", "sha384"))
        if not rebuilt.is_file() or "/" in name:
            checklist.add(label, False, expected="an artifact of the rebuild", found="not built")
            continue
        if not algorithms:
            checklist.add(label, False, expected="a sha256 or sha384 digest", found="none signed")
            continue
        actual = _digests(rebuilt, algorithms)
        wrong = [a for a in algorithms if actual[a] != signed[a]]
        if not wrong:
            checklist.add(label, True, found=f"{', '.join(algorithms)} reproduced")
            continue
        checklist.add(
            label,
            False,
            expected=f"{wrong[0]} {signed[wrong[0]]}",
            found=f"{wrong[0]} {actual[wrong[0]]}",
            detail=_where(envelope, name, signed, rebuilt),
        )


def _generation_order(generation: str) -> tuple[int, str]:
    from toolchain.measure.reference import CPU_GENERATIONS

    known = generation in CPU_GENERATIONS
    return (CPU_GENERATIONS.index(generation) if known else len(CPU_GENERATIONS), generation)


def _check_launch_digests(checklist: Checklist, predicate: KeepPredicate, plan_path: Path) -> int:
    """One line per (vCPU count, guest policy, platform); returns how many configurations were
    compared."""
    from toolchain.measure.keep import SNP_UKERNEL_ELF, snp_plan_of
    from toolchain.measure.plan import LaunchPlan
    from toolchain.measure.reference import snp_c_bit

    try:
        plan = LaunchPlan.load(plan_path)
    except InputError as exc:  # the rebuild wrote none, or not a plan
        reason = "not built" if not plan_path.is_file() else exc.message
        checklist.add(
            "launch digests", False, expected="a launch plan to recompute them from", found=reason
        )
        return 0
    # kvm/nil configurations take the rebuilt plan's digest; snp ones the snp plan laid out from
    # the rebuilt ELFs (the microkernel built for snp) with their generation's C-bit (0 below:
    # the simulated platform).
    groups: dict[tuple[int, int, int], list[LaunchConfig]] = defaultdict(list)
    for config in predicate.configs:
        c_bit = 0
        if config.backend == "snp":
            try:
                c_bit = snp_c_bit(config.cpu_generation)
            except InputError as exc:
                checklist.add(
                    f"launch digest, snp on {config.cpu_generation}",
                    False,
                    expected="a CPU generation whose C-bit position is known",
                    found=exc.message,
                )
                continue
        groups[(config.vcpus, config.guest_policy, c_bit)].append(config)
    snp_plans: dict[int, LaunchPlan] = {}
    for (vcpus, policy, c_bit), configs in sorted(groups.items()):
        generations = sorted({c.cpu_generation for c in configs}, key=_generation_order)
        backends = sorted({c.backend for c in configs})
        label = (
            f"launch digest, {vcpus} vCPU{'s' if vcpus > 1 else ''}, policy {policy:#x} "
            f"({'/'.join(generations)} × {'/'.join(backends)})"
        )
        if c_bit:
            if c_bit not in snp_plans:
                try:
                    snp_plans[c_bit] = snp_plan_of(
                        plan,
                        plan_path.parent / "ukernel.elf",
                        plan_path.parent / "runtime.elf",
                        plan_path.parent / SNP_UKERNEL_ELF,
                        c_bit=c_bit,
                    )
                except InputError as exc:
                    checklist.add(label, False, expected="the rebuilt snp plan", found=exc.message)
                    continue
            rebuilt = snp_plans[c_bit].launch_digest(vcpus)
        else:
            rebuilt = plan.launch_digest(vcpus)
        wrong = [c for c in configs if c.launch_digest != rebuilt]
        if plan.guest_policy != policy:
            checklist.add(
                label,
                False,
                expected=f"guest policy {policy:#x}",
                found=f"the rebuilt plan's guest policy {plan.guest_policy:#x}",
            )
        elif wrong:
            checklist.add(
                label,
                False,
                expected=wrong[0].launch_digest.hex(),
                found=rebuilt.hex(),
                detail=f"{len(wrong)} of {len(configs)} configurations differ",
            )
        else:
            checklist.add(label, True, found=f"{rebuilt.hex()}, {len(configs)} configurations")
    return len(predicate.configs)


def _report_untrusted(checklist: Checklist, references: VerifiedReferences, out_dir: Path) -> None:
    from toolchain.image import tools

    for component in references.predicate.components:
        if component.name in references.subjects:
            continue
        rebuilt = out_dir / component.name
        if not rebuilt.is_file():
            outcome = "not rebuilt under this name (another package version?)"
        elif _digests(rebuilt, ["sha256"])["sha256"] == component.sha256:
            outcome = "rebuilt equal"
        else:
            outcome = "rebuilt different"
        checklist.add(
            f"component {component.name}",
            None,
            detail=f"{outcome}; an untrusted component (the VMM), not part of the trust decision",
        )
    current = tools.toolchain_versions()
    signed = references.predicate.toolchain
    differing = sorted(k for k in signed.keys() | current.keys() if signed.get(k) != current.get(k))
    checklist.add(
        "toolchain",
        None,
        detail="the same pinned tools as the release"
        if not differing
        else f"differs from the release's in {', '.join(differing)}; the artifacts decide",
    )
    provenance = out_dir / PROVENANCE_FILE
    if not provenance.is_file():
        outcome = "not rebuilt"
    elif _digests(provenance, ["sha256"])["sha256"] == references.predicate.provenance_sha256:
        outcome = "rebuilt equal"
    else:
        outcome = "rebuilt different"
    checklist.add(
        "provenance record",
        None,
        detail=f"{outcome}; informational: it names the package version and the wheel",
    )


def verify_release(
    envelope: Path, trust: TrustPolicy, *, at: datetime | None = None
) -> tuple[Checklist, VerifiedReferences | None]:
    """Step 1: the envelope's checklist (titled for reproduce) and its references, None (with a
    "rebuild not attempted" line) when it does not verify."""
    envelope = Path(envelope)
    example_name(envelope)  # an InputError before anything else when misnamed
    try:
        data = envelope.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {envelope}: {exc.strerror}") from exc
    checklist, references = verify_envelope(data, trust, at=at)
    checklist.title = f"reproduce {envelope}"
    # verify_envelope says it checked no artifact files; here the rebuild is the artifact check.
    checklist.checks = [c for c in checklist.checks if c.name != "artifacts"]
    if references is None:
        checklist.add("rebuild", None, detail="not attempted: the signed references do not verify")
    return checklist, references


def check_source(checklist: Checklist, references: VerifiedReferences, tree: SourceTree) -> bool:
    """Step 2: whether the tree may be built — its treeSha256 is the signed one, or the release
    signs no source (said loudly). Nothing from the tree has run when this returns False."""
    from toolchain.release.source import tree_sha256

    signed = references.predicate.source
    if signed is None:
        checklist.add(
            "source NOT SIGNED",
            None,
            detail=f"release {references.release} was signed without its source: rebuilt from "
            f"{tree.how}, your choice, which the release does not vouch for"
            + ("; that tree's own build code runs, unverified" if tree.own_code else ""),
        )
        return True
    where = f" of commit {signed.commit[:12]}" if signed.commit else ""
    try:
        found = tree_sha256(tree.root)
    except InputError as exc:
        found = f"none: {exc.message}"
    if found != signed.tree_sha256:
        checklist.add(
            "source tree",
            False,
            expected=f"the signed treeSha256{where} {signed.tree_sha256}",
            found=f"{found} over {tree.how}",
        )
        checklist.add("rebuild", None, detail="not attempted: nothing from that tree ran")
        return False
    checklist.add("source tree", True, found=f"treeSha256 {found}, signed{where}; {tree.how}")
    return True


def _build(
    checklist: Checklist, app: Path, tree: SourceTree, scratch: Path, vcpu_counts: list[int]
) -> Path | None:
    """Step 3: the output directory of the rebuild, None (with a ✗ line) when it did not build."""
    from toolchain.image.cache import BuildCache
    from toolchain.image.keep_build import ROOT, build_keep
    from toolchain.release.history import build_in_tree, requirements_note

    out_dir = scratch / "out"
    # The source line above names the tree.
    what = f"{app.relative_to(tree.root).as_posix()} from that tree, fresh directory and cache"
    if not tree.own_code:
        try:
            build_keep(
                app,
                out_dir,
                vcpu_counts=vcpu_counts,
                source_root=tree.root,
                cache=BuildCache(scratch / "cache"),
            )
        except InputError as exc:  # the source does not build: it does not reproduce either
            checklist.add("rebuild", False, expected="a build of the source", found=exc.message)
            return None
        checklist.add("rebuild", True, found=f"{what}, by the running code")
        return out_dir
    done = build_in_tree(tree.root, app, out_dir, vcpu_counts, scratch / "cache")
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        checklist.add(
            "rebuild",
            False,
            expected="the tree's keep build to exit 0",
            found=f"exit status {done.returncode}: {said}",
        )
        return None
    checklist.add(
        "rebuild",
        None,
        detail=f"{what}, by the tree's own keep build (another version than the running "
        f"code's); only its output files count, compared below by the running code; "
        f"{requirements_note(tree.root, ROOT)}",
    )
    return out_dir


def rebuild_and_compare(
    checklist: Checklist, envelope: Path, references: VerifiedReferences, tree: SourceTree
) -> Checklist:
    """Steps 2 to 6 for verified ``references``, adding to ``checklist``."""
    if not check_source(checklist, references, tree):
        return checklist
    name = example_name(Path(envelope))
    apps = example_apps(tree.root)
    app = apps.get(name)
    if app is None:
        raise InputError(
            f"the source tree {tree.root} has no example {name!r} (examples: {', '.join(apps)})"
        )
    vcpu_counts = sorted({c.vcpus for c in references.configs}) or [1]
    with tempfile.TemporaryDirectory(prefix="keep-reproduce-") as scratch:
        out_dir = _build(checklist, app, tree, Path(scratch), vcpu_counts)
        if out_dir is not None:
            _check_subjects(checklist, Path(envelope), references, out_dir)
            _check_launch_digests(checklist, references.predicate, out_dir / PLAN_FILE)
            _report_untrusted(checklist, references, out_dir)
    return checklist


def reproduce(
    envelope: Path,
    trust: TrustPolicy,
    source_root: Path | None = None,
    *,
    at: datetime | None = None,
) -> Checklist:
    """Verify ``envelope`` against ``trust``; only if it verifies, rebuild its example from
    ``source_root`` (default: the tree beside the package) with the running code and compare
    every digest (``keep reproduce`` chooses the tree and the build code as
    ``toolchain.release.history`` says)."""
    from toolchain.image.keep_build import ROOT

    checklist, references = verify_release(envelope, trust, at=at)
    if references is None:
        return checklist
    root = ROOT if source_root is None else Path(source_root).resolve()
    return rebuild_and_compare(checklist, envelope, references, SourceTree(root, str(root), False))
