"""``keep verify-evidence``: verify a ``keep run --evidence`` file as a whole, offline.

Report, certificate chain, nonce binding, signed references and policy in one command, with the
entry point ``keep verify-report`` uses (``toolchain.verify.evidence.verify_evidence``, then
``Verifier.verify``). Exit 0 when the evidence verifies, 1 when it does not, 2 on unusable input.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from keep.cli.references import add_trust_arguments

    parser.description = (
        "Verify an evidence file written by 'keep run --evidence': the report and its "
        "certificate chain to a trusted root, REPORT_DATA against the nonce, the signed "
        "reference measurements and the policy. Exit 0 when valid, 1 when not, 2 on unusable "
        "input. A simulated root is trusted only when passed with --extra-root."
    )
    parser.add_argument("evidence", type=Path, metavar="EVIDENCE.json")
    add_trust_arguments(parser)
    parser.add_argument(
        "--extra-root",
        type=Path,
        metavar="CERT",
        help="also trust this self-signed root (development: your simulated ARK, e.g. from "
        "'keep run --dev'); the result names it",
    )
    parser.add_argument(
        "--nonce",
        metavar="HEX",
        help="the REPORT_DATA you expect (zero-padded to 64 bytes): proves the run is the one "
        "you asked for; without it freshness is not checked",
    )
    parser.add_argument(
        "--dir",
        dest="dirs",
        action="append",
        metavar="HOST[::GUEST][:rw]",
        help="a directory the run preopened (as 'keep run --dir', :rw included; repeat in the "
        "same order): proves the keep saw exactly these trees",
    )
    parser.add_argument("--policy", type=Path, metavar="FILE", help="verification policy (TOML)")
    parser.add_argument(
        "--at", metavar="TIME", help="verify as of TIME (ISO 8601, default now; UTC when no zone)"
    )
    parser.add_argument(
        "--crl", type=Path, metavar="FILE", help="AMD CRL (DER or PEM) to check revocation"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _trees(dirs: list[str] | None) -> tuple[list[tuple[str, bytes]] | None, list[bool]]:
    """(guest path, digest) and :rw of each --dir, read as 'keep run' reads it; None without."""
    if not dirs:
        return None, []
    from toolchain.measure.trees import DirSpec, read_trees

    trees = read_trees([DirSpec.parse(d) for d in dirs])
    return [(t.spec.guest, t.digest) for t in trees], [t.spec.rw for t in trees]


def run(args: argparse.Namespace) -> int:
    import sys

    from keep.cli.references import trust_policy_from_args
    from keep.cli.verify_report import parse_hex, parse_time, read_file, roots_from_args
    from toolchain.verify import VerificationPolicy, Verifier
    from toolchain.verify.evidence import verify_evidence

    # --trust ROOT.json, $KEEPSTACK_TRUST or the built-in TUF root (never the current directory);
    # 'keep run --dev' evidence is signed by your development key: pass its .pub as --trusted-key.
    trust = trust_policy_from_args(args)
    trees, rw = _trees(args.dirs)
    checklist = verify_evidence(
        read_file(args.evidence, "evidence"),
        verifier=Verifier(roots_from_args(args)),
        trust=trust,
        policy=VerificationPolicy.load(args.policy) if args.policy else None,
        nonce=parse_hex(args.nonce, "--nonce") if args.nonce is not None else None,
        trees=trees,
        rw=rw,
        at=parse_time(args.at) if args.at else None,
        crl=read_file(args.crl, "CRL") if args.crl is not None else None,
        title=f"evidence {args.evidence}",
    )
    print(checklist.to_json() if args.json else checklist.render())
    untrusted_root = any(c.name == "ark.trusted" for c in checklist.failures)
    if untrusted_root and args.extra_root is None:
        from runtime.firmware.sim import sim_root_present

        # Only a hint: the simulated root is trusted when the user names it, never by default.
        directory = sim_root_present()
        where = f" (this user's: {directory / 'ark.pem'})" if directory is not None else ""
        print(
            "keep: the evidence's root is not one of AMD's; evidence from 'keep run --dev' "
            f"verifies only with --extra-root naming your simulated ARK{where}",
            file=sys.stderr,
        )
    return 0 if checklist.ok else 1
