"""``keep run``: boot a keep, attest it live, and run the application only if it checks out.

The application's stdout/stderr stream through and its exit status becomes ours. On any failed
check the keep is stopped before the application runs, and the failed check is named (exit 1).
``EXIT_CODES`` is the one table of exit statuses (shown by ``keep run --help``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toolchain.measure.abi import FATAL_EXIT_STATUS, TRAP_EXIT_STATUS

#: Options may follow the application's arguments (``keep run app.wasm a b --backend nil``).
INTERMIXED = True

#: Every exit status of ``keep run`` (the application's own statuses pass through unchanged).
EXIT_CODES = (
    ("0-255", "the application's exit status (255 when its status does not fit in 0-255)"),
    (
        "1",
        (
            "verification failed: the references, the live report, or the keep did not attest "
            "(requested, obtained and passed one report) — whatever status it asked for; or the "
            "keep was stopped (a bad hypercall, a fault)"
        ),
    ),
    ("2", "unusable input: a bad option, application or build directory"),
    ("3", "platform error: no usable /dev/kvm for --backend kvm, a missing tool"),
    ("124", "--timeout passed after the keep attested (as timeout(1))"),
    (
        str(FATAL_EXIT_STATUS),
        "the keep's runtime stopped the application (e.g. its memory does not fit the keep)",
    ),
    ("130", "interrupted (Ctrl-C)"),
    (str(TRAP_EXIT_STATUS), "the application trapped ('wasm trap: NAME' on stderr)"),
)


def exit_code_table() -> str:
    """The exit statuses as the help text lists them."""
    import textwrap

    width = max(len(code) for code, _ in EXIT_CODES)
    lines = ["exit status:"]
    for code, meaning in EXIT_CODES:
        lines += textwrap.wrap(
            meaning,
            78,
            initial_indent=f"  {code:<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
    return "\n".join(lines)


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env takes KEY=VALUE, not {text!r}")
    return key, value


def _memory(text: str | None) -> int | None:
    """--memory SIZE in bytes, checked against the keep's limits (None: the default)."""
    if text is None:
        return None
    from toolchain.measure.keep import check_guest_memory, parse_memory_size

    memory = parse_memory_size(text)
    check_guest_memory(memory)
    return memory


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        exit_code_table()
        + "\n\nThe application may exit with any of these itself; the runner's own failures "
        "always\nprint a line on stderr that says why."
    )
    _what_to_run(parser)
    _what_to_trust(parser)
    _how_to_run(parser)


def _what_to_run(parser: argparse.ArgumentParser) -> None:
    from runtime.run.backends import BACKENDS

    parser.add_argument(
        "app",
        type=Path,
        metavar="APP",
        help="the application (.wasm/.wat), or a build directory made by 'keep build --out DIR' "
        "(rebuilt and compared: it runs only if it equals a fresh build)",
    )
    parser.add_argument(
        "args",
        nargs="*",
        metavar="ARGS",
        help="its arguments (options may come before or after them; put arguments that start "
        "with '-' after '--')",
    )
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        help="kvm: a VM on /dev/kvm (default where it works); nil: wasmtime in this process, "
        "no isolation; snp: an SEV-SNP VM on an SNP host (only when named; keep platform says "
        "what this host lacks)",
    )
    parser.add_argument("--vcpus", type=int, default=1, metavar="N", help="vCPUs (default 1)")
    parser.add_argument(
        "--dir",
        dest="dirs",
        action="append",
        default=[],
        metavar="HOST[::GUEST][:rw]",
        help="copy directory HOST into the keep as GUEST (default: HOST as written); "
        "repeatable. Read before boot (at most 32 MiB in all), its digest is bound into the "
        "attestation report and checked by the keep. The application's changes stay in the "
        "keep and are discarded at exit, unless the option ends with :rw: then, when the "
        "application exits (not on a trap), the tree comes back and HOST is made to hold it "
        "(the host sees the files; files keep the mode they came in with, new files get 0644, "
        "new directories 0755; at most 33 MiB)",
    )
    parser.add_argument(
        "--memory",
        metavar="SIZE",
        help="guest memory, e.g. 512M or 1G (default 256M; part of the measurement)",
    )


def _what_to_trust(parser: argparse.ArgumentParser) -> None:
    from keep.cli.references import add_trust_arguments

    parser.add_argument(
        "--references",
        type=Path,
        metavar="ENVELOPE",
        help="signed reference measurements the keep must match",
    )
    add_trust_arguments(parser)
    parser.add_argument("--policy", type=Path, metavar="FILE", help="verification policy (TOML)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development: trust the simulated AMD root and, without --references, sign a "
        "development reference for this build",
    )


def _how_to_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="stop the keep after S seconds"
    )
    parser.add_argument(
        "--evidence",
        type=Path,
        metavar="OUT.json",
        help="save the report, certificates and references for re-checking elsewhere",
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="one verdict line on stderr instead of the checklist; everything on failure",
    )
    parser.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="K=V",
        help="an environment variable for the application; repeat for several",
    )
    parser.add_argument(
        "--build-dir", type=Path, metavar="DIR", help="build here (default: the per-user cache)"
    )
    parser.add_argument(
        "--vcek",
        type=Path,
        metavar="FILE",
        help="--backend snp: this chip's VCEK for the reported TCB (DER or PEM), obtained offline "
        "beforehand (default: $KEEPSTACK_SNP_VCEK); AMD's ASK and ARK are built in",
    )


def run(args: argparse.Namespace) -> int:
    from keep.cli.references import trust_policy_from_args
    from runtime.run import RunOptions, run_app
    from toolchain.measure.trees import DirSpec

    trust = trust_policy_from_args(args) if args.references else None
    outcome = run_app(
        RunOptions(
            app=args.app,
            args=list(args.args),
            env=list(args.env),
            backend=args.backend,
            vcpus=args.vcpus,
            memory=_memory(args.memory),
            dirs=[DirSpec.parse(text) for text in args.dirs],
            references=args.references,
            trust=trust,
            policy=args.policy,
            dev=args.dev,
            timeout=args.timeout,
            evidence=args.evidence,
            vcek=args.vcek,
            build_dir=args.build_dir,
            quiet=args.quiet,
        )
    )
    return outcome.exit_status
