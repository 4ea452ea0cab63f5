"""The single ``keep`` command and its subcommands.

Each subcommand lives in ``keep/cli/<module>.py`` and provides two functions:

* ``configure(parser: argparse.ArgumentParser) -> None`` — adds its options. It must import
  nothing heavy at module level so that ``keep X --help`` stays fast.
* ``run(args: argparse.Namespace) -> int`` — does the work and returns the exit status.

Only the chosen subcommand's module is imported. Every ``KeepError`` becomes one explained line on
stderr and its exit status; any other exception is a bug and is reported as such (exit 70).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from toolchain.errors import KeepError

# name -> (module under keep.cli, one-line help). Order is the order shown in `keep --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the main job end to end: build, measure, sign, boot, verify, run"),
    "build": ("build", "build a keep image reproducibly from an application .wasm/.wat"),
    "measure": ("measure", "print the launch digest(s) of a built keep"),
    "measure-guest": ("measure_guest", "compute the SNP/SEV-ES/SEV launch digest of any guest"),
    "keygen": ("keygen", "create a signing key pair for reference measurements"),
    "statement": ("statement", "write the reference statement of a built keep, for keep sign"),
    "sign": ("sign", "sign a reference statement into a DSSE envelope (or co-sign one)"),
    "references": ("references", "verify or show signed reference measurements"),
    "trust": ("trust", "show the trust a verification uses: TUF root, roles, keys"),
    "tuf": ("tuf", "TUF key ceremonies: init, release keys, root rotation, refresh, show"),
    "verify-report": ("verify_report", "verify an SEV-SNP attestation report, offline"),
    "verify-evidence": ("verify_evidence", "verify a 'keep run --evidence' file as a whole"),
    "report": ("report", "decode an SEV-SNP attestation report"),
    "run": ("run", "boot a keep, attest it, and run the application only if it checks out"),
    "platform": ("platform", "show what this host offers (KVM, SEV-SNP, simulated root)"),
    "reproduce": ("reproduce", "rebuild a signed release from source and compare every digest"),
}


class _Command(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _available() -> dict[str, tuple[str, str]]:
    import importlib.util  # only to list the commands: a named one is imported directly

    return {
        name: spec
        for name, spec in COMMANDS.items()
        if importlib.util.find_spec(f"keep.cli.{spec[0]}") is not None
    }


def _command_module(name: str) -> _Command | None:
    """The named command's module, imported; None when there is no such command."""
    spec = COMMANDS.get(name)
    if spec is None:
        return None
    module_name = f"keep.cli.{spec[0]}"
    try:
        return cast(_Command, importlib.import_module(module_name))
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the command exists; something it imports is missing
            raise
        return None


def _top_parser(commands: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    from toolchain import __version__

    parser = argparse.ArgumentParser(
        prog="keep",
        description="Keepstack: build, measure, sign and run confidential WebAssembly keeps "
        "for AMD SEV-SNP.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<15} {help_}" for name, (_, help_) in commands.items())
        + "\n\nRun 'keep COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"keepstack {__version__}")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        top = _top_parser(_available())
        top.parse_args(argv)
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    # A named command is imported alone: searching every module costs start-up time.
    module = _command_module(name)
    if module is None:
        known = ", ".join(_available())
        print(f"keep: unknown command {name!r} (known: {known})", file=sys.stderr)
        return 2
    help_ = COMMANDS[name][1]
    parser = argparse.ArgumentParser(prog=f"keep {name}", description=help_)
    module.configure(parser)
    if getattr(module, "INTERMIXED", False):
        args = parser.parse_intermixed_args(rest)
    else:
        args = parser.parse_args(rest)
    try:
        return module.run(args)
    except KeepError as exc:
        print(exc.explain(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("keep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
