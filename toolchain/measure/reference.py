"""Reference statements for built keeps: the one place a build becomes a signable statement.

``keep run --dev`` (a development reference for the keep it just built), ``keep measure --sign``
and releases all call ``keep_statement`` so a reference always lists the same things: every
artifact as an in-toto subject (SHA-256 and SHA-384), the same digests as components, the pinned
toolchain, the provenance record's digest, and the launch digest per configuration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.errors import InputError

if TYPE_CHECKING:
    from toolchain.measure.plan import LaunchPlan
    from toolchain.sign.predicate import SourceDigest

#: CPU generations a release lists (the kvm/nil launch digest does not depend on them, but a
#: verifier matches a report's generation against the reference's).
GENERATIONS = ("milan", "genoa", "turin")
#: What a reference's configuration may name (the predicate's schema): a generation, or "any".
#: Defined here, not in toolchain.sign.predicate, so that a build asking for a C-bit does not
#: import toolchain.sign (and with it cryptography: ~25 ms of every cold keep build).
CPU_GENERATIONS = (*GENERATIONS, "any")
#: The C-bit position (CPUID 0x8000001F EBX[5:0]) per CPU generation: the snp plan's page
#: tables carry it, so the snp launch digest is per generation (AMD PPRs for families 19h/1Ah).
SNP_C_BITS = {"milan": 51, "genoa": 51, "turin": 51}


def snp_c_bit(generation: str) -> int:
    """The C-bit position of ``generation``; an unknown one is an ``InputError``."""
    if generation not in CPU_GENERATIONS:
        raise InputError(
            f"unknown CPU generation {generation!r} (known: {', '.join(CPU_GENERATIONS)})"
        )
    try:
        return SNP_C_BITS[generation]
    except KeyError:
        raise InputError(
            f"no C-bit position known for CPU generation {generation!r}: the snp launch digest "
            f"is known for {', '.join(SNP_C_BITS)}"
        ) from None


def snp_launch_digests(
    plan: LaunchPlan,
    ukernel: Path,
    runtime: Path,
    snp_ukernel: Path,
    *,
    vcpu_counts: Iterable[int],
    generations: Iterable[str],
) -> dict[str, dict[int, bytes]]:
    """generation → vCPU count → the ``snp`` launch digest of the built keep (``keep build``'s
    plan, its two ELFs and the microkernel built for ``snp``, ``snp_plan_of``; laid out once
    per distinct C-bit position)."""
    from toolchain.measure.keep import snp_plan_of

    counts = sorted(set(vcpu_counts))
    by_c_bit: dict[int, dict[int, bytes]] = {}
    result: dict[str, dict[int, bytes]] = {}
    for generation in generations:
        c_bit = snp_c_bit(generation)
        if c_bit not in by_c_bit:
            snp = snp_plan_of(plan, ukernel, runtime, snp_ukernel, c_bit=c_bit)
            by_c_bit[c_bit] = snp.launch_digests(counts)
        result[generation] = by_c_bit[c_bit]
    return result


@dataclass(frozen=True)
class FileDigest:
    name: str
    sha256: str
    sha384: str

    @classmethod
    def of(cls, name: str, path: Path) -> FileDigest:
        sha256, sha384 = hashlib.sha256(), hashlib.sha384()
        try:
            with path.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    sha256.update(chunk)
                    sha384.update(chunk)
        except OSError as exc:
            raise InputError(f"cannot read artifact {path}: {exc.strerror}") from exc
        return cls(name, sha256.hexdigest(), sha384.hexdigest())


def keep_statement(
    *,
    release: str,
    artifacts: Mapping[str, Path],
    provenance: Path,
    launch_digests: Mapping[int, bytes],
    guest_policy: int,
    backends: Iterable[str],
    generations: Iterable[str] = GENERATIONS,
    toolchain: Mapping[str, str],
    not_before: datetime,
    valid_for: timedelta,
    development: bool,
    subject_prefix: str = "",
    untrusted_components: Mapping[str, Path] | None = None,
    source: SourceDigest | None = None,
    snp_digests: Mapping[str, Mapping[int, bytes]] | None = None,
) -> dict[str, Any]:
    """An in-toto Statement v1 with the Keepstack predicate for one built keep.

    ``launch_digests`` (vCPU count → digest) are the simulated platform's, for backends kvm and
    nil; backend ``snp`` takes ``snp_digests`` (generation → vCPU count → digest, from
    ``snp_launch_digests``) and is refused without them: one plan's digest never stands in for
    another platform's.

    ``untrusted_components`` (a release's VMM wheel) are listed among the predicate's components
    but are not subjects: they are outside the trust decision, so reproducing a release never
    depends on them. ``source`` (a release's) signs the source tree the keep was built from.
    """
    from toolchain.sign import ComponentDigest, KeepPredicate, LaunchConfig, build_statement

    files = [FileDigest.of(subject_prefix + name, path) for name, path in sorted(artifacts.items())]
    untrusted = [
        FileDigest.of(subject_prefix + name, path)
        for name, path in sorted((untrusted_components or {}).items())
    ]
    generations = list(generations)
    configs = []
    for backend in sorted(set(backends)):
        for generation in generations:
            digests = launch_digests
            if backend == "snp":
                if snp_digests is None or generation not in snp_digests:
                    raise InputError(
                        f"backend snp needs the snp launch digests for {generation}; "
                        "they were not computed"
                    )
                digests = snp_digests[generation]
                if set(digests) != set(launch_digests):
                    raise InputError(
                        f"snp launch digests for vCPU counts {sorted(digests)}, "
                        f"expected {sorted(launch_digests)}"
                    )
            configs += [
                LaunchConfig(generation, vcpus, guest_policy, backend, digest)
                for vcpus, digest in sorted(digests.items())
            ]
    predicate = KeepPredicate(
        release=release,
        configs=configs,
        components=[
            ComponentDigest(f.name, f.sha256, f.sha384)
            for f in sorted((*files, *untrusted), key=lambda f: f.name)
        ],
        toolchain=dict(sorted(toolchain.items())),
        provenance_sha256=FileDigest.of("provenance", provenance).sha256,
        not_before=not_before,
        not_after=not_before + valid_for,
        development=development,
        source=source,
    )
    subjects = {f.name: {"sha256": f.sha256, "sha384": f.sha384} for f in files}
    return build_statement(predicate, subjects)
