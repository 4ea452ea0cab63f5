"""``keep verify-report``: verify an SEV-SNP attestation report offline, check by check.

Exit 0 when the report is valid, 1 when it is not, 2 on unusable input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from cryptography import x509

    from toolchain.checks import Checklist
    from toolchain.snp.report import AttestationReport
    from toolchain.verify import TrustedRoots, VerificationPolicy


def _int_auto(text: str) -> int:
    return int(text, 0)


def configure(parser: argparse.ArgumentParser) -> None:
    from toolchain.cli.references import add_trust_arguments

    parser.description = (
        "Verify an SEV-SNP attestation report against AMD's pinned roots and a policy, offline. "
        "Exit 0 when valid, 1 when not, 2 on unusable input."
    )
    parser.add_argument(
        "report",
        type=Path,
        metavar="REPORT",
        help="the report: 1184 raw bytes, hex or base64 text, or MSG_REPORT_RSP",
    )
    parser.add_argument(
        "--offset",
        type=_int_auto,
        metavar="N",
        help="read the report embedded at byte offset N of REPORT",
    )
    parser.add_argument(
        "--vcek",
        type=Path,
        required=True,
        metavar="CERT",
        help="the VCEK or VLEK certificate (DER or PEM)",
    )
    parser.add_argument(
        "--ask-chain",
        type=Path,
        metavar="FILE",
        help="the ASK/ASVK (and optionally the ARK) as PEM or PkiPath "
        "(default: AMD's, shipped with keepstack)",
    )
    parser.add_argument(
        "--product",
        default="auto",
        choices=["auto", "milan", "genoa", "turin"],
        help="CPU generation (default: detected from the certificate)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="verification policy (TOML); options below override it",
    )
    parser.add_argument(
        "--report-data",
        metavar="HEX",
        help="expected REPORT_DATA (a nonce; zero-padded to 64 bytes)",
    )
    parser.add_argument("--host-data", metavar="HEX", help="expected HOST_DATA")
    parser.add_argument(
        "--measurement",
        action="append",
        metavar="HEX",
        help="an allowed launch measurement; repeat for several",
    )
    parser.add_argument(
        "--allow-debug", action="store_true", help="accept a guest whose policy allows debugging"
    )
    parser.add_argument("--vmpl", type=int, metavar="N", help="required VMPL (default 0)")
    parser.add_argument(
        "--at", metavar="TIME", help="verify as of TIME (ISO 8601, default now; UTC when no zone)"
    )
    parser.add_argument(
        "--crl", type=Path, metavar="FILE", help="AMD CRL (DER or PEM) to check revocation, offline"
    )
    parser.add_argument(
        "--strict", action="store_true", help="also reject reserved bits that are set"
    )
    parser.add_argument(
        "--extra-root",
        type=Path,
        metavar="CERT",
        help="also trust this self-signed root (development: a simulated ARK); the result names it",
    )
    refs = parser.add_argument_group("signed reference measurements")
    refs.add_argument(
        "--references",
        type=Path,
        metavar="ENVELOPE",
        help="accept MEASUREMENT only if this verified reference lists it for a matching "
        "configuration (guest policy, CPU generation)",
    )
    add_trust_arguments(refs)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def read_file(path: Path, what: str) -> bytes:
    from toolchain.errors import InputError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def parse_hex(text: str, what: str) -> bytes:
    from toolchain.errors import InputError

    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError as exc:
        raise InputError(f"{what} is not hex: {text!r}") from exc


def parse_time(text: str) -> datetime:
    from datetime import UTC, datetime

    from toolchain.errors import InputError

    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"--at {text!r} is not an ISO 8601 time") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def policy_from_args(args: argparse.Namespace) -> VerificationPolicy:
    """The policy file (or the defaults) with the command-line options applied on top."""
    from toolchain.verify import VerificationPolicy

    policy = VerificationPolicy.load(args.policy) if args.policy else VerificationPolicy()
    changes: dict[str, object] = {}
    if args.report_data is not None:
        changes["report_data"] = parse_hex(args.report_data, "--report-data")
    if args.host_data is not None:
        changes["host_data"] = parse_hex(args.host_data, "--host-data")
    if args.measurement:
        changes["allowed_measurements"] = frozenset(
            parse_hex(m, "--measurement") for m in args.measurement
        )
    if args.allow_debug:
        changes["allow_debug"] = True
    if args.vmpl is not None:
        changes["vmpl"] = args.vmpl
    if args.strict:
        changes["strict"] = True
    return policy.replace(**changes) if changes else policy


def split_chain(
    certificates: list[x509.Certificate],
) -> tuple[x509.Certificate | None, x509.Certificate | None]:
    """(intermediate, root) from an ASK/ASVK + ARK bundle in any order."""
    from toolchain.errors import InputError

    roots = [c for c in certificates if c.subject == c.issuer]
    others = [c for c in certificates if c.subject != c.issuer]
    if len(roots) > 1 or len(others) > 1:
        raise InputError("the chain file holds more than one intermediate or root")
    return (others[0] if others else None), (roots[0] if roots else None)


def roots_from_args(args: argparse.Namespace) -> TrustedRoots:
    from toolchain.snp.certs import load_certificate
    from toolchain.verify import TrustedRoots

    roots = TrustedRoots.amd()
    if args.extra_root is not None:
        extra = load_certificate(read_file(args.extra_root, "root"))
        roots = roots.with_extra(extra, label=f"extra root from {args.extra_root} (development)")
    return roots


def references_checklist(
    args: argparse.Namespace,
    report: AttestationReport,
    vcek: x509.Certificate,
    policy: VerificationPolicy,
) -> tuple[Checklist | None, VerificationPolicy]:
    """Verify ``--references`` and narrow the policy's allowed measurements to what it lists."""
    from toolchain.cli.references import trust_policy_from_args
    from toolchain.errors import InputError
    from toolchain.sign.references import verify_envelope
    from toolchain.verify.references import allowed_measurements, report_generation

    if args.references is None:
        if args.trust is not None or args.trusted_key:
            raise InputError("--trust and --trusted-key only make sense with --references")
        return None, policy
    trust = trust_policy_from_args(args)
    envelope = read_file(args.references, "reference envelope")
    at = parse_time(args.at) if args.at else None
    checks, references = verify_envelope(envelope, trust, at=at)
    checks.title = f"signed reference measurements {args.references}"
    if references is None:
        # Fail closed: an unverified reference allows nothing.
        return checks, policy.replace(allowed_measurements=frozenset())
    generation = report_generation(report, vcek, args.product)
    allowed = allowed_measurements(references, report, product=generation)
    if policy.allowed_measurements is not None:
        allowed &= policy.allowed_measurements
    checks.add(
        "references.configuration",
        bool(allowed),
        expected=f"a launch configuration for guest policy {report.policy.value:#x}"
        f" on {generation or 'any CPU generation'}",
        found=f"{len(allowed)} matching launch digest(s) in release {references.release}",
        detail="development reference" if references.development else "",
    )
    return checks, policy.replace(allowed_measurements=allowed)


def run(args: argparse.Namespace) -> int:
    from toolchain.snp.certs import load_certificate, load_certificates
    from toolchain.snp.report import read_report_file
    from toolchain.verify import verify_report

    report, how = read_report_file(args.report, offset=args.offset)
    vcek = load_certificate(read_file(args.vcek, "certificate"))
    ref_checks, policy = references_checklist(args, report, vcek, policy_from_args(args))
    ask = ark = None
    if args.ask_chain is not None:
        ask, ark = split_chain(load_certificates(read_file(args.ask_chain, "certificate chain")))
    crl = read_file(args.crl, "CRL") if args.crl is not None else None
    checklist = verify_report(
        report,
        vcek,
        policy=policy,
        ask=ask,
        ark=ark,
        product=args.product,
        at=parse_time(args.at) if args.at else None,
        crl=crl,
        roots=roots_from_args(args),
    )
    checklist.title = f"{checklist.title}: {args.report} ({how})"
    if ref_checks is not None:
        ref_checks.extend(checklist)
        ref_checks.title = checklist.title + f" with references {args.references}"
        checklist = ref_checks
    print(checklist.to_json() if args.json else checklist.render())
    return 0 if checklist.ok else 1
