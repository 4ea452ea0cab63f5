"""``keep report show``: every field of an SEV-SNP attestation report, decoded (no verification)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print every field decoded, as a table (this does not verify anything)",
        description="Decode a report: raw 1184 bytes, hex (0x allowed) or base64 (standard or "
        "URL-safe) text, or MSG_REPORT_RSP; '-' reads standard input.",
    )
    show.add_argument("report", type=Path, metavar="REPORT")
    show.add_argument(
        "--offset",
        type=lambda t: int(t, 0),
        metavar="N",
        help="read the report embedded at byte offset N",
    )
    show.add_argument("--json", action="store_true", help="print the fields as JSON")


def _rows(name: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        raw = value.get("raw")
        head = [(name, str(raw))] if raw is not None else []
        rest = [(f"  .{key}", str(sub)) for key, sub in value.items() if key != "raw"]
        return head + rest
    return [(name, str(value))]


def render_table(fields: dict[str, Any]) -> str:
    lines = []
    for name, entry in fields.items():
        for index, (label, text) in enumerate(_rows(name, entry["value"])):
            offset = entry["offset"] if index == 0 else ""
            lines.append(f"{offset:>6}  {label:<22} {text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from toolchain.snp.report import read_report_file

    report, how = read_report_file(args.report, offset=args.offset)
    fields = report.fields()
    product = report.cpuid_product
    summary = {
        "source": f"{args.report} ({how})",
        "tcb_layout": "Turin (FMC)" if report.turin_layout else "Milan/Genoa",
        "cpuid_product": product.value if product else None,
        "anomalies": report.anomalies(),
        "verified": False,
    }
    if args.json:
        print(json.dumps({**summary, "fields": fields}, indent=2, sort_keys=True))
        return 0
    print(f"SEV-SNP attestation report v{report.version}: {summary['source']}")
    cpuid = product.value if product else "-"
    print(f"  TCB layout: {summary['tcb_layout']}; product from CPUID: {cpuid}")
    print("  (decoded only, NOT verified: use `keep verify-report`)")
    print(render_table(fields))
    for anomaly in report.anomalies():
        print(f"  ! {anomaly}")
    return 0
