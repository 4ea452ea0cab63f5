"""``keep references verify|show``: check signed reference measurements offline, or print one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolchain.sign.predicate import KeepPredicate
    from toolchain.sign.trust import TrustPolicy

#: Where the default comes from, for --help (never the current directory).
TRUST_DEFAULT_HELP = (
    "a pinned TUF root .json, made with keep tuf init; default: $KEEPSTACK_TRUST when set, "
    "else the TUF root pinned in keepstack"
)


def add_trust_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--trust ROOT.json`` | ``--trusted-key PUB ...``: which keys may sign references.

    Shared by every command that reads signed references (references, verify-report, run).
    """
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--trust",
        type=Path,
        metavar="ROOT.json",
        help=f"TUF root to trust ({TRUST_DEFAULT_HELP})",
    )
    trust.add_argument(
        "--trusted-key",
        type=Path,
        action="append",
        metavar="PUB",
        help="trust this public key (PEM); repeat for several keys",
    )


def _add_trust_options(parser: argparse.ArgumentParser) -> None:
    add_trust_arguments(parser)
    parser.add_argument(
        "--threshold",
        type=int,
        metavar="M",
        help="distinct trusted keys required (with --trust it may only raise the policy's)",
    )
    parser.add_argument("--at", metavar="TIME", help="verify as of TIME (ISO 8601; default: now)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="verify an envelope: payload type, signatures, threshold, validity, artifacts",
        description="Exit 0 when the reference verifies, 1 when it does not, 2 on unusable input.",
    )
    verify.add_argument("envelope", type=Path, metavar="ENVELOPE")
    _add_trust_options(verify)
    verify.add_argument(
        "--artifacts",
        type=Path,
        metavar="DIR",
        help="also check that every subject's digest matches DIR/<subject name>",
    )
    show = actions.add_parser(
        "show",
        help="print an envelope's predicate as a table (verified first with --trust/--trusted-key)",
    )
    show.add_argument("envelope", type=Path, metavar="ENVELOPE")
    _add_trust_options(show)


def trust_policy_from_args(args: argparse.Namespace) -> TrustPolicy:
    """The policy the options name: ``--trusted-key`` keys, else ``TrustPolicy.select(--trust)``
    (``--trust ROOT.json``, else ``$KEEPSTACK_TRUST``, else the built-in TUF root; never a file of
    the current directory). Reads ``args.trust``, ``args.trusted_key`` and (when present)
    ``args.threshold``; also used by ``keep verify-report --references`` and ``keep run``.
    """
    from toolchain.errors import InputError
    from toolchain.sign.keys import load_public_key
    from toolchain.sign.trust import TrustPolicy

    threshold = getattr(args, "threshold", None)
    if args.trusted_key:
        policy = TrustPolicy.from_keys(
            [load_public_key(p) for p in args.trusted_key],
            source="--trusted-key " + ", ".join(str(p) for p in args.trusted_key),
        )
        return policy.with_threshold(1 if threshold is None else threshold)
    policy = TrustPolicy.select(args.trust)
    if threshold is not None:
        if threshold < policy.threshold:
            raise InputError(
                f"--threshold {threshold} is below the policy's threshold "
                f"{policy.threshold} ({policy.source}); it may only be raised"
            )
        policy = policy.with_threshold(threshold)
    return policy


def _read_envelope(path: Path) -> bytes:
    from toolchain.errors import InputError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read envelope {path}: {exc.strerror}") from exc


def _at(args: argparse.Namespace) -> Any:
    from toolchain.sign.predicate import parse_time

    return parse_time(args.at, "--at") if args.at else None


def _verify(args: argparse.Namespace, policy: TrustPolicy, data: bytes) -> tuple[int, Any]:
    from toolchain.errors import InputError
    from toolchain.sign.references import verify_envelope

    try:
        checklist, references = verify_envelope(
            data, policy, at=_at(args), artifacts=getattr(args, "artifacts", None)
        )
    except InputError as exc:
        if not exc.message.startswith("envelope"):
            raise
        raise InputError(f"{args.envelope}: {exc.message}", hint=exc.hint) from exc
    checklist.title = f"signed reference measurements {args.envelope}"
    return (0 if checklist.ok else 1), (checklist, references)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (
            indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _source_text(predicate: KeepPredicate) -> str:
    source = predicate.source
    if source is None:
        return "NOT SIGNED (the statement names no source; releases 0.1.0 and 0.2.0 predate it)"
    commit = f"commit {source.commit}, " if source.commit else "no commit, "
    return f"{commit}treeSha256 {source.tree_sha256}"


def format_predicate(
    predicate: KeepPredicate, subjects: dict[str, dict[str, str]], signers: list[str]
) -> str:
    """The predicate as a human-readable table."""
    from toolchain.sign.predicate import format_time

    lines = _table(
        [
            ["release", predicate.release],
            [
                "development",
                "YES: signed with a development key, not for production"
                if predicate.development
                else "no",
            ],
            ["not before", format_time(predicate.not_before)],
            ["not after", format_time(predicate.not_after)],
            ["provenance", f"sha256:{predicate.provenance_sha256}"],
            ["source", _source_text(predicate)],
            ["signatures", ", ".join(signers) or "none"],
        ],
        indent="",
    )
    lines += ["", "launch configurations:"]
    lines += _table(
        [
            ["cpu", "vcpus", "guest policy", "backend", "launch digest (SNP MEASUREMENT)"],
            *[
                [
                    c.cpu_generation,
                    str(c.vcpus),
                    f"0x{c.guest_policy:016x}",
                    c.backend,
                    c.launch_digest.hex(),
                ]
                for c in predicate.configs
            ],
        ]
    )
    lines += ["", "components:"]
    if predicate.components:
        lines += _table(
            [
                ["name", "sha256", "sha384"],
                *[[c.name, c.sha256, c.sha384] for c in predicate.components],
            ]
        )
    else:
        lines.append("  (none)")
    lines += ["", "toolchain:"]
    if predicate.toolchain:
        lines += _table([[tool, pin] for tool, pin in sorted(predicate.toolchain.items())])
    else:
        lines.append("  (none)")
    lines += ["", "subjects:"]
    lines += _table(
        [
            [name, ", ".join(f"{alg}:{value}" for alg, value in sorted(digests.items()))]
            for name, digests in subjects.items()
        ]
    )
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    import json

    from toolchain.errors import InputError
    from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope
    from toolchain.sign.intoto import parse_statement

    data = _read_envelope(args.envelope)
    status = 0
    # show verifies only when asked to: an unverified table says so on its first line.
    policy = trust_policy_from_args(args) if args.trust or args.trusted_key else None
    if policy is not None:
        status, (checklist, _) = _verify(args, policy, data)
        if not args.json:
            print(checklist.render())
            print()
    try:
        envelope = Envelope.parse(data)
        statement, predicate = parse_statement(envelope.payload)
    except InputError as exc:
        raise InputError(f"{args.envelope}: {exc.message}") from exc
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        raise InputError(
            f"{args.envelope}: payload type is {envelope.payload_type!r}, not {INTOTO_PAYLOAD_TYPE}"
        )
    subjects = {s["name"]: dict(s["digest"]) for s in statement["subject"]}
    signers = [s.keyid[:16] or "(no keyid)" for s in envelope.signatures]
    if args.json:
        print(json.dumps(statement, indent=2, sort_keys=True))
        return status
    if policy is None:
        print("UNVERIFIED: signatures not checked (give --trust or --trusted-key)\n")
    if predicate is None:
        print(f"predicate type {statement['predicateType']} (not a Keepstack reference):")
        print(json.dumps(statement["predicate"], indent=2, sort_keys=True))
    else:
        print(format_predicate(predicate, subjects, signers))
    return status


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return _show(args)
    policy = trust_policy_from_args(args)
    status, (checklist, references) = _verify(args, policy, _read_envelope(args.envelope))
    if args.json:
        print(checklist.to_json())
        return status
    print(checklist.render())
    if references is not None and references.development:
        print("  note: DEVELOPMENT reference (per-user development key): not for production")
    return status
