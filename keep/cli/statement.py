"""``keep statement BUILD_DIR -o statement.json``: the reference statement ``keep sign`` signs.

For any directory written by ``keep build --out BUILD_DIR``: an in-toto Statement v1 with the
Keepstack reference predicate, made by the code a release uses
(``toolchain.release.publish.reference_statement``): the trusted artifacts as subjects, one
launch configuration per backend, CPU generation and vCPU count asked for, and a validity window.

The build directory must still be what ``keep build`` wrote: every artifact its
``provenance.json`` names is present with the SHA-256 recorded there, or nothing is written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import timedelta

_DURATION = re.compile(r"([1-9][0-9]*)([dh])")


def _list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list")
    return items


def _counts(text: str) -> list[int]:
    try:
        counts = [int(item) for item in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: vCPU counts are integers, e.g. 1,2,4"
        ) from None
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: vCPU counts are positive")
    return counts


def _duration(text: str) -> timedelta:
    from datetime import timedelta

    found = _DURATION.fullmatch(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give days or hours, e.g. 365d or 12h")
    amount = int(found.group(1))
    return timedelta(days=amount) if found.group(2) == "d" else timedelta(hours=amount)


def _flatten(groups: list[list[str]] | None, default: tuple[str, ...]) -> list[str]:
    return [item for group in groups for item in group] if groups else list(default)


def configure(parser: argparse.ArgumentParser) -> None:
    from toolchain.measure.reference import GENERATIONS
    from toolchain.release.layout import RELEASE_BACKENDS, RELEASE_VCPU_COUNTS

    parser.description = (
        "Write the reference statement for a built keep (keep build --out BUILD_DIR); sign it "
        "with keep sign --statement. Exit 0 when written, 2 on unusable input."
    )
    parser.add_argument("build_dir", type=Path, metavar="BUILD_DIR", help="from keep build --out")
    parser.add_argument(
        "--vcpus",
        type=_counts,
        action="append",
        metavar="N,N",
        help="vCPU counts to list (default: "
        + ",".join(map(str, RELEASE_VCPU_COUNTS))
        + "; repeatable)",
    )
    parser.add_argument(
        "--cpu-generation",
        type=_list,
        action="append",
        metavar="GEN,GEN",
        help=f"CPU generations: milan, genoa, turin or any (default: {','.join(GENERATIONS)})",
    )
    parser.add_argument(
        "--backend",
        type=_list,
        action="append",
        metavar="NAME,NAME",
        help=f"backends: kvm, nil or snp (default: {','.join(RELEASE_BACKENDS)})",
    )
    parser.add_argument(
        "--valid-for",
        type=_duration,
        default="365d",
        metavar="DURATION",
        help="validity from --not-before: days (365d) or hours (12h); default 365d",
    )
    parser.add_argument(
        "--not-before", metavar="TIME", help="start of validity (ISO 8601; default: now)"
    )
    parser.add_argument(
        "--release", metavar="NAME", help="release name in the predicate (default: this keepstack)"
    )
    parser.add_argument(
        "--development",
        action="store_true",
        help="mark it a development reference (the only kind keep sign --development signs)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="where to write it (default: stdout)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def build_artifacts(build_dir: Path) -> tuple[dict[str, Path], Path]:
    """(artifact name → path, provenance file) of a ``keep build`` output directory, each
    artifact checked against the SHA-256 its provenance record lists."""
    import hashlib

    from toolchain.errors import InputError
    from toolchain.image.provenance import PROVENANCE_FILE
    from toolchain.sign import strict_json

    if not build_dir.is_dir():
        raise InputError(f"{build_dir} is not a directory (expected keep build --out DIR)")
    provenance = build_dir / PROVENANCE_FILE
    try:
        record = strict_json.loads(provenance.read_bytes())
        subjects = {s["name"]: s["digest"]["sha256"] for s in record["subject"]}
    except OSError as exc:
        raise InputError(
            f"{build_dir} has no readable {PROVENANCE_FILE} ({exc.strerror}): not a keep build"
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{provenance} is not a keep build provenance record ({exc})") from exc
    artifacts: dict[str, Path] = {}
    for name, expected in sorted(subjects.items()):
        path = build_dir / name
        if Path(name).name != name or not path.is_file():
            raise InputError(f"{build_dir}: artifact {name} named by {PROVENANCE_FILE} is missing")
        found = hashlib.sha256(path.read_bytes()).hexdigest()
        if found != expected:
            raise InputError(
                f"{path} changed since keep build: expected sha256 {expected} "
                f"({PROVENANCE_FILE}), found {found}",
                hint="rebuild with keep build, then make the statement",
            )
        artifacts[name] = path
    return artifacts, provenance


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from datetime import UTC, datetime

    from toolchain import __version__
    from toolchain.errors import InputError
    from toolchain.measure.reference import GENERATIONS
    from toolchain.release.layout import RELEASE_BACKENDS, RELEASE_VCPU_COUNTS
    from toolchain.release.publish import reference_statement
    from toolchain.sign.predicate import format_time, parse_time

    if args.output is not None and args.output.exists() and not args.force:
        raise InputError(f"{args.output} already exists", hint="pass --force to overwrite it")
    artifacts, provenance = build_artifacts(args.build_dir)
    vcpus = sorted({c for group in args.vcpus or [RELEASE_VCPU_COUNTS] for c in group})
    generations = list(dict.fromkeys(_flatten(args.cpu_generation, GENERATIONS)))
    backends = list(dict.fromkeys(_flatten(args.backend, RELEASE_BACKENDS)))
    not_before = (
        parse_time(args.not_before, "--not-before")
        if args.not_before
        else datetime.now(UTC).replace(microsecond=0)
    )
    statement = reference_statement(
        artifacts,
        provenance,
        release=args.release or __version__,
        vcpu_counts=vcpus,
        backends=backends,
        generations=generations,
        not_before=not_before,
        valid_for=args.valid_for,
        development=args.development,
    )
    text = json.dumps(statement, indent=2, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            from toolchain.errors import PlatformError

            raise PlatformError(f"cannot write {args.output}: {exc.strerror}") from exc
    predicate = statement["predicate"]
    configs = len(predicate["launchConfigurations"])
    print(
        f"reference statement for {args.build_dir}: release {predicate['release']}, "
        f"{len(statement['subject'])} subject(s), {configs} launch configuration(s) "
        f"(vCPUs {','.join(map(str, vcpus))}; {','.join(generations)}; {','.join(backends)}), "
        f"valid {format_time(not_before)} to {predicate['validity']['notAfter']}",
        file=sys.stderr,
    )
    if args.output is not None:
        print(
            f"sign it: keep sign --key PATH --statement {args.output} -o ENVELOPE.dsse.json",
            file=sys.stderr,
        )
    return 0
