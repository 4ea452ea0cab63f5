"""``keep reproduce``: rebuild a signed release from source and compare every digest.

``keep reproduce --version 0.2.0`` (or ``keep reproduce ENVELOPE ...``) verifies each envelope
against the trust policy first and refuses it if it does not verify; then it rebuilds the
example from a source tree in a fresh temporary directory and prints a ✔/✗ line per trusted
artifact and per launch digest (``toolchain.release.reproduce``). Which tree, and which code
builds it, is ``toolchain.release.history``'s: ``--source DIR``, ``--source-commit SHA``, the
commit the statement signs, or (for this code's own version) this source tree. A signed source
is checked by its treeSha256 before anything from it runs; a release signed without its source
(0.1.0, 0.2.0) of another version needs ``--source-commit`` or ``--source`` and says loudly that
its source was not signed. The verdict always comes from this code's comparison of the rebuilt
files with the signed statement. Exit status 0 when everything reproduces, 1 when anything does
not, 2 on unusable input (including a release whose source no one named, or a clone without
the history a commit needs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolchain.sign import VerifiedReferences


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
    from keep.cli.references import add_trust_arguments

    # --trust ROOT.json | --trusted-key PUB: the same choice every verifying command offers
    # (a private deployment without a TUF repository pins its own keys).
    add_trust_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="the source tree to rebuild (default: the commit the release signs, else for this "
        "code's version the tree beside the package or the current directory)",
    )
    source.add_argument(
        "--source-commit",
        metavar="SHA",
        help="rebuild this commit, exported from the git clone holding the envelope (needed for "
        "an older release signed without its source, such as 0.1.0)",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def _tree_version(root: Path) -> str:
    from toolchain import __version__
    from toolchain.release.publish import package_version

    return package_version(root) if (root / "pyproject.toml").is_file() else __version__


def run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    import time

    from keep.cli.references import trust_policy_from_args
    from toolchain import __version__
    from toolchain.errors import InputError
    from toolchain.image import keep_build
    from toolchain.release import history
    from toolchain.release.layout import release_envelopes
    from toolchain.release.reproduce import rebuild_and_compare, verify_release

    if args.envelopes and args.version:
        raise InputError("give envelopes or --version, not both")
    trust = trust_policy_from_args(args)
    envelopes: list[Path] = list(args.envelopes)
    if not envelopes:
        releases = _published_releases(args.source, keep_build.ROOT)
        envelopes = release_envelopes(releases / (args.version or __version__))
    if args.source is not None and not args.source.is_dir():
        raise InputError(f"source tree {args.source} is not a directory")
    running_root = keep_build.ROOT
    running_version = _tree_version(running_root)
    results: list[dict[str, object]] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="keep-reproduce-sources-") as scratch:
        for envelope in envelopes:
            started = time.perf_counter()
            checklist, references = verify_release(envelope, trust)
            if references is not None:
                signed = references.predicate.source
                tree = history.release_tree(
                    release=references.release,
                    signed_commit=signed.commit if signed is not None else None,
                    envelope=envelope,
                    running_root=running_root,
                    running_version=running_version,
                    source=args.source,
                    source_commit=args.source_commit,
                    scratch=Path(scratch),
                )
                rebuild_and_compare(checklist, envelope, references, tree)
            seconds = time.perf_counter() - started
            results.append(checklist.as_dict())
            status = max(status, 0 if checklist.ok else 1)
            if not args.json:
                print(checklist.render(verdict=False))
                print(f"  => {_verdict(checklist.ok, references)} ({seconds:.1f} s)", flush=True)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return status


def _published_releases(source: Path | None, running_root: Path) -> Path:
    """Where ``--version`` finds the published envelopes: in ``--source``, beside the running
    code, else in the current directory (a checkout, when keep is installed from a wheel). The
    envelopes are verified against the trust policy before use, so where they come from decides
    nothing; the policy never comes from there."""
    from toolchain.errors import InputError
    from toolchain.release.layout import REFERENCES_DIR

    for root in (source, running_root, Path.cwd()):
        if root is not None and (root / REFERENCES_DIR).is_dir():
            return root / REFERENCES_DIR
    raise InputError(
        f"no {REFERENCES_DIR}/ directory in {source or running_root} or the current directory",
        hint="run keep reproduce in a Keepstack checkout, or pass --source DIR or the envelopes",
    )


def _verdict(ok: bool, references: VerifiedReferences | None) -> str:
    if not ok:
        return "NOT REPRODUCED"
    if references is not None and references.predicate.source is None:
        return (
            f"REPRODUCED from an UNSIGNED source: release {references.release} does not sign "
            "the source it was built from; the tree was your choice"
        )
    return "REPRODUCED"
