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

    from toolchain.snp.bundle import CertificateBundle
    from toolchain.snp.report import AttestationReport
    from toolchain.verify import References, TrustedRoots, VerificationPolicy


def _int_auto(text: str) -> int:
    return int(text, 0)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Verify an SEV-SNP attestation report against AMD's pinned roots and a policy, offline. "
        "Exit 0 when valid, 1 when not, 2 on unusable input."
    )
    parser.add_argument(
        "report",
        type=Path,
        metavar="REPORT",
        help="the report ('-': standard input): 1184 raw bytes, hex (0x allowed) or base64 "
        "(standard or URL-safe) text, or MSG_REPORT_RSP",
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
        metavar="CERTS",
        help="the VCEK or VLEK: a certificate (DER or PEM); a bundle with its ASK and ARK (PEM or "
        "PkiPath, any order); a directory in snpguest's layout (vcek|vlek, ask, ark .pem/.der); or "
        "the extended report's certificate table. Default: fetched from AMD KDS (see --kds-url)",
    )
    kds = parser.add_argument_group("AMD key distribution service (without --vcek)")
    kds.add_argument(
        "--kds-url",
        metavar="URL",
        help="KDS base URL, e.g. a mirror (default: $KEEPSTACK_KDS_URL, else "
        "https://kdsintf.amd.com); what it returns is checked against the pinned roots",
    )
    kds.add_argument(
        "--offline",
        action="store_true",
        help="never fetch: use the cache only, and say what is missing",
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
    _policy_arguments(parser)
    _reference_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    """What the report must show, and how it is checked (policy, TCB, revocation)."""
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
        "--allow-stale-crl",
        action="store_true",
        help="accept a --crl past its nextUpdate (otherwise the revocation check fails); "
        "the verdict says revocation was checked only as of that CRL",
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


def _reference_arguments(parser: argparse.ArgumentParser) -> None:
    from keep.cli.references import add_trust_arguments

    refs = parser.add_argument_group("signed reference measurements")
    refs.add_argument(
        "--references",
        type=Path,
        metavar="ENVELOPE",
        help="accept MEASUREMENT only if this verified reference lists it for a matching "
        "configuration (guest policy, CPU generation)",
    )
    add_trust_arguments(refs)


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
    # Every time is printed as UTC: an offset is converted, never dropped.
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


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
    if args.allow_stale_crl:
        changes["allow_stale_crl"] = True
    return policy.replace(**changes) if changes else policy


def roots_from_args(args: argparse.Namespace) -> TrustedRoots:
    from toolchain.snp.certs import load_certificate
    from toolchain.verify import TrustedRoots

    roots = TrustedRoots.amd()
    if args.extra_root is not None:
        extra = load_certificate(read_file(args.extra_root, "root"))
        roots = roots.with_extra(extra, label=f"extra root from {args.extra_root} (development)")
    return roots


def references_from_args(args: argparse.Namespace) -> References | None:
    """``--references`` verified against the trust policy (None without it)."""
    from keep.cli.references import trust_policy_from_args
    from toolchain.errors import InputError
    from toolchain.verify import References

    if args.references is None:
        if args.trust is not None or args.trusted_key:
            raise InputError("--trust and --trusted-key only make sense with --references")
        return None
    trust = trust_policy_from_args(args)
    return References.verify(
        read_file(args.references, "reference envelope"),
        trust,
        at=parse_time(args.at) if args.at else None,
        title=f"signed reference measurements {args.references}",
    )


def certificates_from_args(
    args: argparse.Namespace, report: AttestationReport
) -> tuple[x509.Certificate, CertificateBundle, bytes | None]:
    """The VCEK/VLEK and the bundle it came in (``--vcek`` in any accepted form, plus
    ``--ask-chain``) or, without ``--vcek``, what KDS gave; and the CRL (``--crl``, else the
    fetched one)."""
    import sys

    from toolchain.errors import InputError
    from toolchain.snp.bundle import CertificateBundle, load_bundle
    from toolchain.snp.certs import load_certificates
    from toolchain.snp.kds import KdsClient, report_product

    crl = read_file(args.crl, "CRL") if args.crl is not None else None
    if args.vcek is not None:
        if args.kds_url is not None:
            raise InputError("--kds-url is used only without --vcek (nothing is fetched)")
        bundle = load_bundle(args.vcek)
    else:
        client = KdsClient(base_url=args.kds_url, offline=args.offline)
        fetched = client.for_report(
            report, report_product(report, args.product), with_crl=crl is None
        )
        for note in fetched.notes:
            print(f"keep: {note}", file=sys.stderr)
        bundle, crl = fetched.bundle, crl if crl is not None else fetched.crl
    if args.ask_chain is not None:
        chain = load_certificates(read_file(args.ask_chain, "certificate chain"))
        bundle = bundle.merged(CertificateBundle.from_certificates(chain, f"{args.ask_chain}"))
    if bundle.vek is None:
        raise InputError(f"no VCEK or VLEK in {bundle.describe()}")
    return bundle.vek, bundle, crl


def run(args: argparse.Namespace) -> int:
    from toolchain.snp.report import read_report_file
    from toolchain.verify import Verifier

    report, how = read_report_file(args.report, offset=args.offset)
    vek, bundle, crl = certificates_from_args(args, report)
    policy = policy_from_args(args)
    references = references_from_args(args)
    checklist = Verifier(roots_from_args(args)).verify(
        report,
        vek,
        policy=policy,
        references=references,
        ask=bundle.intermediate,
        ark=bundle.ark,
        product=args.product,
        at=parse_time(args.at) if args.at else None,
        crl=crl,
    )
    checklist.title = f"{checklist.title}: {args.report} ({how})"
    if references is not None:
        checklist.title += f" with references {args.references}"
    print(checklist.to_json() if args.json else checklist.render())
    return 0 if checklist.ok else 1
