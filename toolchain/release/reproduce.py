"""Rebuild a signed release from source and compare every digest (``keep reproduce``).

Order matters: the envelope's signatures are verified against the trust policy first, and
nothing is built unless they verify. Then the example is rebuilt from ``source_root`` in a fresh
temporary directory with a fresh build cache and the pinned toolchain, and

* every subject (the trusted artifacts) is compared by SHA-256 and SHA-384: ✔/✗;
* every launch digest of the predicate is recomputed from the rebuilt LaunchPlan for its vCPU
  count, with the plan's guest policy: ✔/✗ (one line per vCPU count and policy, naming the CPU
  generations and backends it covers);
* untrusted components (the VMM wheel), the toolchain and the provenance record are reported
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
    from toolchain.sign.predicate import CPU_GENERATIONS

    known = generation in CPU_GENERATIONS
    return (CPU_GENERATIONS.index(generation) if known else len(CPU_GENERATIONS), generation)


def _check_launch_digests(checklist: Checklist, predicate: KeepPredicate, plan_path: Path) -> int:
    """One line per (vCPU count, guest policy); returns how many configurations were compared."""
    from toolchain.measure.plan import LaunchPlan

    plan = LaunchPlan.from_json(plan_path.read_bytes())
    groups: dict[tuple[int, int], list[LaunchConfig]] = defaultdict(list)
    for config in predicate.configs:
        groups[(config.vcpus, config.guest_policy)].append(config)
    for (vcpus, policy), configs in sorted(groups.items()):
        generations = sorted({c.cpu_generation for c in configs}, key=_generation_order)
        backends = sorted({c.backend for c in configs})
        label = (
            f"launch digest, {vcpus} vCPU{'s' if vcpus > 1 else ''}, policy {policy:#x} "
            f"({'/'.join(generations)} × {'/'.join(backends)})"
        )
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


def _report_untrusted(
    checklist: Checklist, references: VerifiedReferences, out_dir: Path, provenance: Path
) -> None:
    from toolchain.build import tools

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
    equal = _digests(provenance, ["sha256"])["sha256"] == references.predicate.provenance_sha256
    checklist.add(
        "provenance record",
        None,
        detail=("rebuilt equal" if equal else "rebuilt different")
        + "; informational: it names the package version and the wheel",
    )


def reproduce(
    envelope: Path,
    trust: TrustPolicy,
    source_root: Path | None = None,
    *,
    at: datetime | None = None,
) -> Checklist:
    """Verify ``envelope`` against ``trust``; only if it verifies, rebuild its example from
    ``source_root`` (default: the tree beside the package) and compare every digest."""
    from toolchain.build.cache import BuildCache
    from toolchain.build.keep_build import ROOT, build_keep

    envelope = Path(envelope)
    name = example_name(envelope)
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
        return checklist
    root = ROOT if source_root is None else Path(source_root).resolve()
    apps = example_apps(root)
    app = apps.get(name)
    if app is None:
        raise InputError(
            f"the source tree {root} has no example {name!r} (examples: {', '.join(apps)})"
        )
    vcpu_counts = sorted({c.vcpus for c in references.configs}) or [1]
    with tempfile.TemporaryDirectory(prefix="keep-reproduce-") as scratch:
        base = Path(scratch)
        try:
            build = build_keep(
                app,
                base / "out",
                vcpu_counts=vcpu_counts,
                source_root=root,
                cache=BuildCache(base / "cache"),
            )
        except InputError as exc:  # the source does not build: it does not reproduce either
            checklist.add("rebuild", False, expected="a build of the source", found=exc.message)
            return checklist
        checklist.add(
            "rebuild",
            True,
            found=f"{app.relative_to(root).as_posix()} from {root}, fresh directory and cache",
        )
        _check_subjects(checklist, envelope, references, build.out_dir)
        _check_launch_digests(checklist, references.predicate, build.out_dir / "launch-plan.json")
        _report_untrusted(checklist, references, build.out_dir, build.provenance)
    return checklist
