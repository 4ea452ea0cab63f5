"""``keep reproduce``: rebuild a signed release from source and compare every digest.

``keep reproduce --version 0.1.0`` (or ``keep reproduce ENVELOPE ...``) verifies each envelope
against the trust policy first and refuses it if it does not verify; then it rebuilds the
example from the source tree in a fresh temporary directory and prints a ✔/✗ line per trusted
artifact and per launch digest (``toolchain.release.reproduce``). Exit status 0 when everything
reproduces, 1 when anything does not, 2 on unusable input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TRUST = Path("reference-measurements") / "trust.toml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "envelopes",
        nargs="*",
        type=Path,
        metavar="ENVELOPE",
        help="signed release references (reference-measurements/V/EXAMPLE.dsse.json)",
    )
    parser.add_argument(
        "--version",
        metavar="V",
        help="every envelope of release V (beside the trust policy); default when no "
        "ENVELOPE is given: this package's version",
    )
    parser.add_argument(
        "--trust",
        type=Path,
        default=DEFAULT_TRUST,
        metavar="FILE",
        help="trust policy (default: ./reference-measurements/trust.toml)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="the source tree to rebuild (default: the tree beside the installed package)",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from toolchain import __version__
    from toolchain.errors import InputError
    from toolchain.release.layout import release_envelopes
    from toolchain.release.reproduce import reproduce
    from toolchain.sign import TrustPolicy

    if args.envelopes and args.version:
        raise InputError("give envelopes or --version, not both")
    trust = TrustPolicy.load(args.trust)
    envelopes: list[Path] = list(args.envelopes)
    if not envelopes:
        envelopes = release_envelopes(args.trust.parent / (args.version or __version__))
    if args.source is not None and not args.source.is_dir():
        raise InputError(f"source tree {args.source} is not a directory")
    results = []
    for envelope in envelopes:
        started = time.perf_counter()
        checklist = reproduce(envelope, trust, args.source)
        seconds = time.perf_counter() - started
        results.append(checklist)
        if not args.json:
            print(checklist.render(verdict=False))
            verdict = "REPRODUCED" if checklist.ok else "NOT REPRODUCED"
            print(f"  => {verdict} ({seconds:.1f} s)", flush=True)
    if args.json:
        print(json.dumps([c.as_dict() for c in results], indent=2, sort_keys=True))
    return 0 if all(c.ok for c in results) else 1
