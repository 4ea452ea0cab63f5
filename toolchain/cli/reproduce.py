"""``keep reproduce``: rebuild a signed release from source and compare every digest.

``keep reproduce --version 0.2.0`` (or ``keep reproduce ENVELOPE ...``) verifies each envelope
against the trust policy first and refuses it if it does not verify; then it rebuilds the
example from the source tree in a fresh temporary directory and prints a ✔/✗ line per trusted
artifact and per launch digest (``toolchain.release.reproduce``). An envelope of another release
than this source tree's version is rebuilt by that release's own code and sources, exported
from the clone's git history (``toolchain.release.history``), unless ``--source`` names a tree.
Exit status 0 when everything reproduces, 1 when anything does not, 2 on unusable input
(including a clone without the history an older release needs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolchain.sign.trust import TrustPolicy


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
        help="every envelope of release V (SOURCE/reference-measurements/V/); default when no "
        "ENVELOPE is given: this package's version",
    )
    from toolchain.cli.references import TRUST_DEFAULT_HELP

    parser.add_argument(
        "--trust", type=Path, metavar="FILE", help=f"trust policy ({TRUST_DEFAULT_HELP})"
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="the source tree to rebuild (default: the tree beside the installed package)",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def _tree_version(root: Path) -> str:
    from toolchain import __version__
    from toolchain.release.publish import package_version

    return package_version(root) if (root / "pyproject.toml").is_file() else __version__


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from toolchain import __version__
    from toolchain.build.keep_build import ROOT
    from toolchain.errors import InputError
    from toolchain.release.layout import REFERENCES_DIR, release_envelopes
    from toolchain.release.reproduce import reproduce
    from toolchain.sign import TrustPolicy, verify_envelope

    if args.envelopes and args.version:
        raise InputError("give envelopes or --version, not both")
    trust = TrustPolicy.select(args.trust)
    envelopes: list[Path] = list(args.envelopes)
    if not envelopes:
        releases = (args.source or ROOT) / REFERENCES_DIR
        envelopes = release_envelopes(releases / (args.version or __version__))
    if args.source is not None and not args.source.is_dir():
        raise InputError(f"source tree {args.source} is not a directory")
    tree_version = _tree_version(ROOT)
    results: list[dict[str, object]] = []
    status = 0
    for envelope in envelopes:
        started = time.perf_counter()
        try:
            data = envelope.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {envelope}: {exc.strerror}") from exc
        _, verified = verify_envelope(data, trust)
        if args.source is None and verified is not None and verified.release != tree_version:
            # Another release than this tree's: rebuild it with its own sources and code.
            code, dicts = _reproduce_from_history(
                args, trust, envelope, verified.release, tree_version
            )
            results.extend(dicts)
            status = max(status, code)
            continue
        checklist = reproduce(envelope, trust, args.source)
        seconds = time.perf_counter() - started
        results.append(checklist.as_dict())
        status = max(status, 0 if checklist.ok else 1)
        if not args.json:
            print(checklist.render(verdict=False))
            verdict = "REPRODUCED" if checklist.ok else "NOT REPRODUCED"
            print(f"  => {verdict} ({seconds:.1f} s)", flush=True)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return status


def _reproduce_from_history(
    args: argparse.Namespace,
    trust: TrustPolicy,
    envelope: Path,
    release: str,
    tree_version: str,
) -> tuple[int, list[dict[str, object]]]:
    """Export release ``release``'s commit and run its own ``keep reproduce`` on ``envelope``;
    returns (exit status, the checklists as dicts for --json)."""
    import json
    import sys
    import tempfile
    import time

    from toolchain.build.keep_build import ROOT
    from toolchain.checks import Checklist
    from toolchain.errors import InputError
    from toolchain.release import history

    started = time.perf_counter()
    source = history.find_release_commit(envelope.parent, release)
    header = Checklist(f"reproduce {envelope}")
    header.add(
        "signatures",
        True,
        found=f"verified against the trust policy {trust.describe()} before anything is built",
    )
    with tempfile.TemporaryDirectory(prefix=f"keep-release-{release}-") as scratch:
        tree = history.export_tree(source, Path(scratch) / "source")
        header.add(
            "release source",
            None,
            detail=f"release {release} is not this tree's version {tree_version}: its own "
            f"sources and reproduce code, commit {source.commit[:12]} ({source.how}), "
            f"exported to {tree}; {history.requirements_note(tree, ROOT)}",
        )
        if not args.json:
            print(header.render(verdict=False), flush=True)
        # The release's own code is given the same policy file (built-in: the package's copy).
        if trust.path is None:
            raise InputError(f"the trust policy {trust.source} is not a file to hand on")
        done = history.reproduce_in_tree(tree, envelope, trust.path, json_output=args.json)
    if done.stderr:
        print(done.stderr, end="", file=sys.stderr)
    seconds = time.perf_counter() - started
    code = done.returncode if done.returncode in (0, 1) else max(done.returncode, 2)
    if not args.json:
        print(done.stdout, end="")
        verdict = "REPRODUCED" if code == 0 else "NOT REPRODUCED"
        print(f"  => {verdict} with the sources of release {release} ({seconds:.1f} s)", flush=True)
        return code, []
    try:
        theirs = json.loads(done.stdout) if done.stdout.strip() else []
    except json.JSONDecodeError:
        theirs = [{"title": "release's keep reproduce", "ok": False, "output": done.stdout}]
    if not isinstance(theirs, list):
        theirs = [theirs]
    return code, [header.as_dict(), *theirs]
