"""``keep build APP.wasm|APP.wat --out DIR``: every artifact of a keep, reproducibly."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", type=Path, help="the application (.wasm or .wat)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--vcpus",
        type=int,
        action="append",
        metavar="N",
        help="vCPU count to compute a launch digest for (repeatable; default 1, 2 and 4)",
    )
    parser.add_argument(
        "--opt",
        choices=("O1", "O2", "Os"),
        default="O2",
        help="optimisation of the application's generated C (default O2; O1 compiles a big "
        "module about 15%% faster and runs slower: bench/opt_levels.py)",
    )
    parser.add_argument(
        "--memory",
        metavar="SIZE",
        help="guest memory, e.g. 512M or 1G (default 256M; part of the measurement)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from toolchain.image.keep_build import DEFAULT_VCPU_COUNTS, build_keep
    from toolchain.measure.keep import check_guest_memory, parse_memory_size

    memory = None
    if args.memory is not None:
        memory = parse_memory_size(args.memory)
        check_guest_memory(memory)

    tty = sys.stderr.isatty()

    def progress(step: str, seconds: float) -> None:
        if tty:
            print(f"  built {step:<14} {seconds:7.2f} s", file=sys.stderr)

    from toolchain.errors import PlatformError

    try:
        build = build_keep(
            args.app.expanduser(),  # "~/x" reaches us unexpanded when quoted or after "--out="
            args.out.expanduser(),
            vcpu_counts=args.vcpus or DEFAULT_VCPU_COUNTS,
            progress=progress,
            opt=args.opt,
            memory=memory,
        )
    except OSError as exc:  # the output directory, the cache or a tool's files
        where = f" ({exc.filename})" if exc.filename else ""
        raise PlatformError(f"cannot build the keep: {exc.strerror or exc}{where}") from exc
    files = {**build.artifacts, build.provenance.name: build.provenance}
    snp = build.snp_launch_digests()
    if args.json:
        import hashlib

        document = {
            "out": str(build.out_dir),
            "artifacts": {
                name: {
                    "path": str(path),
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
                for name, path in sorted(files.items())
            },
            "launch_digests": {str(k): v.hex() for k, v in sorted(build.launch_digests.items())},
            "snp_launch_digests": {
                generation: {str(k): v.hex() for k, v in sorted(digests.items())}
                for generation, digests in snp.items()
            },
        }
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    import hashlib

    print(f"keep built in {build.out_dir}")
    for name, path in sorted(files.items()):
        print(f"  {name:<40} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    for count, digest in sorted(build.launch_digests.items()):
        print(f"  launch digest ({count} vCPU{'s' if count > 1 else ''}): {digest.hex()}")
    for line in snp_digest_lines(snp):
        print(f"  {line}")
    return 0


def snp_digest_lines(snp: Mapping[str, Mapping[int, bytes]]) -> list[str]:
    """One line per vCPU count and set of CPU generations sharing a digest (one C-bit)."""
    by_digest: dict[tuple[int, bytes], list[str]] = {}
    for generation, digests in snp.items():
        for count, digest in digests.items():
            by_digest.setdefault((count, digest), []).append(generation)
    return [
        f"snp launch digest ({count} vCPU{'s' if count > 1 else ''}, "
        f"{'/'.join(generations)}): {digest.hex()}"
        for (count, digest), generations in sorted(by_digest.items())
    ]
