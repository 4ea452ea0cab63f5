"""Verify a signed reference measurement (DSSE envelope around an in-toto statement) offline.

Checks, each one a ✔/✗ line: the envelope parses; its payload type; every signature over the
pre-authentication encoding; the threshold of *distinct* trusted keys (a key is identified by its
public key, never by the envelope's keyid hint, so one key never counts twice); the statement and
predicate; the validity window at the verification time; and, when artifacts are given, that every
subject's digest matches its file. The first line names the trust policy that decided ("built-in"
or its path, and its SHA-256); under TUF, the root (version, SHA-256, the pinned root), then the
target and the signing role that list the envelope, whose keys the signatures answer to. Only a
reference that passes them all yields ``VerifiedReferences``, the set of launch digests the runner
and report verifier may accept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from toolchain.checks import Checklist
from toolchain.errors import EvidenceError, InputError
from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope, Signature
from toolchain.sign.intoto import DIGEST_SIZES, parse_statement
from toolchain.sign.keys import verify_bytes
from toolchain.sign.predicate import PREDICATE_TYPE, KeepPredicate, LaunchConfig, format_time
from toolchain.sign.trust import TrustedKey, TrustPolicy

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class VerifiedReferences:
    """A reference measurement whose signatures, threshold and validity window all verified."""

    predicate: KeepPredicate
    subjects: dict[str, dict[str, str]]
    signers: tuple[str, ...]  # key IDs that counted toward the threshold
    verified_at: datetime

    @property
    def release(self) -> str:
        return self.predicate.release

    @property
    def development(self) -> bool:
        return self.predicate.development

    @property
    def configs(self) -> tuple[LaunchConfig, ...]:
        return tuple(self.predicate.configs)

    def allowed_pairs(self) -> frozenset[tuple[bytes, LaunchConfig]]:
        """Every (launch digest, launch configuration) this reference allows."""
        return frozenset((c.launch_digest, c) for c in self.predicate.configs)

    def matching(
        self,
        launch_digest: bytes,
        *,
        cpu_generation: str | None = None,
        vcpus: int | None = None,
        guest_policy: int | None = None,
        backend: str | None = None,
    ) -> tuple[LaunchConfig, ...]:
        """The configurations listing ``launch_digest`` that fit the given (non-None) parameters.

        A configuration for CPU generation "any" fits every generation.
        """
        return tuple(
            c
            for c in self.predicate.configs
            if c.launch_digest == launch_digest
            and (cpu_generation is None or c.cpu_generation in ("any", cpu_generation.lower()))
            and (vcpus is None or c.vcpus == vcpus)
            and (guest_policy is None or c.guest_policy == guest_policy)
            and (backend is None or c.backend == backend)
        )

    def allows(
        self,
        launch_digest: bytes,
        *,
        cpu_generation: str | None = None,
        vcpus: int | None = None,
        guest_policy: int | None = None,
        backend: str | None = None,
    ) -> bool:
        """Whether the reference lists ``launch_digest`` for a matching configuration."""
        return bool(
            self.matching(
                launch_digest,
                cpu_generation=cpu_generation,
                vcpus=vcpus,
                guest_policy=guest_policy,
                backend=backend,
            )
        )


@dataclass
class _SignatureResult:
    index: int
    signature: Signature
    key: TrustedKey | None = None  # the trusted key that verifies it
    hint_mismatch: bool = False
    claimed_key: TrustedKey | None = None  # keyid names a trusted key, but it does not verify


def _short(key_id: str) -> str:
    return key_id[:16] + "…" if len(key_id) > 16 else key_id or "(none)"


def _verify_signature(
    index: int, signature: Signature, message: bytes, trust: TrustPolicy
) -> _SignatureResult:
    result = _SignatureResult(index, signature)
    named = trust.key(signature.keyid.lower())
    if named is not None and verify_bytes(named.public_key, signature.sig, message):
        result.key = named
        return result
    # The keyid is only a hint (DSSE): try every other trusted key, and count the one that
    # verifies — by its own identity, so a relabelled copy never counts as a second key.
    for candidate in trust.keys:
        if candidate is not named and verify_bytes(candidate.public_key, signature.sig, message):
            result.key = candidate
            result.hint_mismatch = True
            return result
    result.claimed_key = named
    return result


def _read_statement(payload: bytes) -> tuple[dict[str, Any] | None, KeepPredicate | None, str]:
    """(statement, our predicate or None, problem); problem is "" when the statement is valid."""
    try:
        statement, predicate = parse_statement(payload)
    except InputError as exc:
        return None, None, exc.message
    return statement, predicate, ""


def verify_envelope(
    envelope: bytes,
    trust: TrustPolicy,
    *,
    at: datetime | None = None,
    artifacts: Path | None = None,
) -> tuple[Checklist, VerifiedReferences | None]:
    """Verify ``envelope`` against ``trust``; the references come back only if every check passes.

    Raises InputError when the envelope cannot be read at all (truncated, not JSON, not DSSE) or
    the policy cannot be satisfied by any envelope (fewer distinct keys than its threshold).
    """
    if at is not None and at.tzinfo is None:
        raise InputError("verification time needs a time zone")
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    checklist = Checklist("signed reference measurements")
    deciding = _deciding_policy(checklist, envelope, trust)
    if deciding is None:
        return checklist, None
    trust, policy_line = deciding
    parsed = _open_envelope(checklist, envelope, trust, policy_line)

    message = parsed.pae()
    results = [_verify_signature(i, s, message, trust) for i, s in enumerate(parsed.signatures, 1)]
    authenticated = any(r.key is not None for r in results)
    statement: dict[str, Any] | None = None
    predicate: KeepPredicate | None = None
    statement_problem = ""
    # Only a payload a trusted key signed is ever parsed.
    if authenticated and parsed.payload_type == INTOTO_PAYLOAD_TYPE:
        statement, predicate, statement_problem = _read_statement(parsed.payload)
    counted = _count_signers(checklist, results, trust, predicate)

    if not authenticated:
        checklist.add("statement", None, detail="not examined: no trusted signature verifies")
        return checklist, None
    if parsed.payload_type != INTOTO_PAYLOAD_TYPE:
        checklist.add("statement", None, detail="not examined: not an in-toto payload")
        return checklist, None
    subjects = _check_statement(checklist, statement, statement_problem, predicate, moment)
    if subjects is None:
        return checklist, None
    if artifacts is None:
        checklist.add("artifacts", None, detail="not checked: no artifacts directory given")
    else:
        _check_artifacts(checklist, subjects, artifacts)

    if not checklist.ok or predicate is None:
        return checklist, None
    return checklist, VerifiedReferences(
        predicate, subjects, tuple(sorted(counted, key=counted.__getitem__)), moment
    )


def _deciding_policy(
    checklist: Checklist, envelope: bytes, trust: TrustPolicy
) -> tuple[TrustPolicy, str] | None:
    """The policy whose keys the signatures answer to, and its line's name; None if TUF refuses.

    Raises InputError when that policy lists fewer distinct keys than its threshold.
    """
    policy_line = "trust policy"
    if trust.tuf is not None:
        # TUF decides which envelopes are current and whose keys sign them: the role that
        # lists these exact bytes. An envelope no role lists is refused before anything else.
        resolved, listed = trust.for_envelope(envelope)
        checklist.add(policy_line, True, found=trust.describe())
        checklist.add(
            "TUF target",
            resolved is not None,
            expected="an envelope listed by a TUF targets role (SHA-256 and length)",
            found=listed,
        )
        if resolved is None:
            return None
        trust, policy_line = resolved, "signing role"
    if len(trust.keys) < trust.threshold:
        raise InputError(
            f"trust policy ({trust.source}) lists {len(trust.keys)} distinct key(s) but needs "
            f"{trust.threshold}: no envelope can satisfy it",
            hint="add keys with keep tuf add-release-key, or pass --trusted-key PUB",
        )
    return trust, policy_line


def _open_envelope(
    checklist: Checklist, envelope: bytes, trust: TrustPolicy, policy_line: str
) -> Envelope:
    """Parse the DSSE envelope (InputError if it is not one); list the policy and payload type."""
    parsed = Envelope.parse(envelope)
    # Which trust anchor decided is never left implicit: name it, with its digest.
    checklist.add(
        policy_line,
        True,
        found=trust.describe(),
        detail=f"threshold {trust.threshold} of {len(trust.keys)} key(s)",
    )
    checklist.add("envelope", True, found=f"DSSE, {len(parsed.signatures)} signature(s)")
    checklist.add(
        "payload type",
        parsed.payload_type == INTOTO_PAYLOAD_TYPE,
        expected=INTOTO_PAYLOAD_TYPE,
        found=repr(parsed.payload_type),
    )
    return parsed


def _count_signers(
    checklist: Checklist,
    results: list[_SignatureResult],
    trust: TrustPolicy,
    predicate: KeepPredicate | None,
) -> dict[str, int]:
    """One line per signature and the threshold line; the key IDs that counted (-> signature).

    A key counts once however often it signed, and only for the releases of its scope.
    """
    counted: dict[str, int] = {}  # key ID -> index of the signature that counted
    notes: list[str] = []
    for result in results:
        name = f"signature {result.index}"
        hint = _short(result.signature.keyid)
        if result.claimed_key is not None:
            checklist.add(
                f"{name} (key {result.claimed_key.name})",
                False,
                expected="a valid signature over PAE(payloadType, payload)",
                found="a signature that does not verify",
                detail="payload or payload type changed, or the signature is corrupt",
            )
            continue
        key = result.key
        if key is None:
            checklist.add(
                f"{name} (keyid {hint})",
                None,
                detail="not by any trusted key; not counted",
            )
            notes.append(f"signature {result.index} is by an untrusted key ({hint})")
            continue
        label = f"{name} (key {key.name}, {key.algorithm})"
        extra = ""
        if result.hint_mismatch:
            extra = (
                f"keyid hint {hint} is not this key's ID; "
                if result.signature.keyid
                else "no keyid hint; "
            )
        if key.key_id in counted:
            checklist.add(
                label,
                None,
                found="valid",
                detail=f"{extra}same key as signature {counted[key.key_id]}; counted once",
            )
            notes.append(f"key {key.name} signed more than once and counts once")
            continue
        problem = key.scope_problem(predicate.release if predicate else None)
        if problem:
            checklist.add(label, None, found="valid", detail=f"{extra}{problem}; not counted")
            notes.append(f"key {key.name}: {problem}")
            continue
        counted[key.key_id] = result.index
        checklist.add(label, True, found="valid", detail=extra.rstrip("; "))

    checklist.add(
        "threshold",
        len(counted) >= trust.threshold,
        expected=f"{trust.threshold} distinct trusted key(s)",
        found=f"{len(counted)} distinct trusted key(s) signed",
        detail="; ".join(notes),
    )
    return counted


def _check_statement(
    checklist: Checklist,
    statement: dict[str, Any] | None,
    problem: str,
    predicate: KeepPredicate | None,
    moment: datetime,
) -> dict[str, dict[str, str]] | None:
    """The statement, its predicate and validity window; its subjects, None if it is unusable."""
    if statement is None:
        checklist.add(
            "statement",
            False,
            expected="an in-toto Statement v1",
            found=problem,
        )
        return None
    subjects = {s["name"]: dict(s["digest"]) for s in statement["subject"]}
    checklist.add("statement", True, found=f"in-toto Statement v1, {len(subjects)} subject(s)")
    if predicate is None:
        checklist.add(
            "predicate",
            None,
            found=statement["predicateType"],
            detail=f"not {PREDICATE_TYPE}; no validity window or launch digests to check",
        )
    else:
        checklist.add(
            "predicate", True, found=f"Keepstack reference v1, release {predicate.release}"
        )
        _check_window(checklist, predicate, moment)
        if predicate.development:
            checklist.add(
                "development",
                None,
                detail="development reference, signed with a per-user development key: "
                "not a release, never for production",
            )
    return subjects


def _check_window(checklist: Checklist, predicate: KeepPredicate, moment: datetime) -> None:
    window = f"{format_time(predicate.not_before)} to {format_time(predicate.not_after)}"
    if moment < predicate.not_before:
        found = f"not yet valid at {format_time(moment)}"
    elif moment > predicate.not_after:
        found = f"expired at {format_time(moment)}"
    else:
        checklist.add("validity window", True, found=f"{window}, checked at {format_time(moment)}")
        return
    checklist.add("validity window", False, expected=window, found=found)


def _file_digests(path: Path, algorithms: list[str]) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algorithms}
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _check_artifacts(
    checklist: Checklist, subjects: dict[str, dict[str, str]], directory: Path
) -> None:
    if not directory.is_dir():
        raise InputError(f"artifacts directory {directory} does not exist")
    for name, digests in subjects.items():
        label = f"artifact {name}"
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            checklist.add(label, False, expected="a relative path", found="an unsafe subject name")
            continue
        path = directory / relative
        if not path.is_file():
            checklist.add(label, False, expected=f"a file in {directory}", found="missing")
            continue
        algorithms = sorted(a for a in digests if a in DIGEST_SIZES)
        if not algorithms:
            checklist.add(
                label,
                False,
                expected=f"a digest Keepstack can recompute ({', '.join(DIGEST_SIZES)})",
                found=", ".join(sorted(digests)),
            )
            continue
        try:
            actual = _file_digests(path, algorithms)
        except OSError as exc:
            raise InputError(f"cannot read artifact {path}: {exc.strerror}") from exc
        wrong = [a for a in algorithms if actual[a] != digests[a]]
        if wrong:
            algorithm = wrong[0]
            checklist.add(
                f"{label} {algorithm}",
                False,
                expected=digests[algorithm],
                found=actual[algorithm],
                detail="the file differs from the signed digest",
            )
        else:
            checklist.add(label, True, found=", ".join(algorithms) + " match")


def require_references(
    envelope: bytes,
    trust: TrustPolicy,
    *,
    at: datetime | None = None,
    artifacts: Path | None = None,
    title: str | None = None,
    consequence: str = "",
) -> tuple[Checklist, VerifiedReferences]:
    """``verify_envelope`` for callers that need the references or an error (the runner): the
    checklist (titled ``title``) and the references, or an EvidenceError naming the first failed
    check, its expected and its found value; ``consequence`` ends the message ("; the keep was
    not started")."""
    checklist, references = verify_envelope(envelope, trust, at=at, artifacts=artifacts)
    if title is not None:
        checklist.title = title
    if references is None:
        failed = checklist.failures[0] if checklist.failures else None
        raise EvidenceError(
            f"the signed reference measurements do not verify{consequence}",
            field=failed.name if failed else "references",
            expected=failed.expected if failed else "a verified reference",
            found=failed.found if failed else "none",
        )
    return checklist, references
