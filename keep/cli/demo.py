"""``keep demo``: the main job end to end, one visible step at a time.

1. build the example application into a keep, reproducibly (microkernel, runtime image, plan);
2. measure: the launch digest the SNP firmware will report, per vCPU count;
3. sign: a reference statement with the per-user development key, written to a file;
4. boot the keep (kvm backend where /dev/kvm works, else nil, said loudly), obtain its live
   attestation report bound to a fresh nonce, and verify it against the signed reference;
5. only then the application runs and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = Path("examples") / "hello" / "hello.wat"


def configure(parser: argparse.ArgumentParser) -> None:
    from runtime.run.backends import BACKENDS

    parser.add_argument(
        "--app", type=Path, metavar="APP", help=f"application to run (default: {EXAMPLE})"
    )
    parser.add_argument("--backend", choices=list(BACKENDS), help="default: kvm where it works")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="where the build and the reference go"
    )


def _example() -> Path:
    from toolchain.errors import InputError

    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo / EXAMPLE, Path.cwd() / EXAMPLE):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"the example application {EXAMPLE} was not found (run from a Keepstack checkout, "
        "or pass --app)"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from runtime.run import RunOptions, run_app
    from runtime.run.backends import choose_backend
    from runtime.run.runner import _Log, build_for_run, development_references
    from toolchain.sign import TrustPolicy, dev_key
    from toolchain.state import cache_dir

    app = args.app or _example()
    out = args.out or cache_dir("demo")
    out.mkdir(parents=True, exist_ok=True)

    def say(text: str = "") -> None:
        print(text, flush=True)

    options = RunOptions(app=app, backend=args.backend, dev=True, progress=True, log=sys.stdout)
    say(f"== 1. build {app} (reproducible; cached steps are reused)")
    build = build_for_run(app, out / "build", 1, _Log(options))
    for name, path in sorted(build.artifacts.items()):
        say(f"   {name:<36} {path.stat().st_size:>9} bytes")

    say("== 2. measure: the launch digest the SNP firmware will report")
    for vcpus, digest in sorted(build.plan.launch_digests((1, 2, 4)).items()):
        say(f"   {vcpus} vCPU(s): {digest.hex()}")

    backend = choose_backend(args.backend, say).name
    say(f"== 3. sign a development reference for the {backend} backend")
    envelope, _ = development_references(build, backend, 1)
    reference = out / "reference.dsse.json"
    reference.write_bytes(envelope)
    _, key_path = dev_key()
    say(f"   {reference} (development key {key_path}.pub)")

    say("== 4. boot, attest (fresh nonce), verify; 5. the application runs only if it verifies")
    sys.stdout.flush()
    outcome = run_app(
        RunOptions(
            app=app,
            args=["from", "the", "demo"],
            env=[("KEEP_DEMO", "1")],
            backend=backend,
            references=reference,
            trust=TrustPolicy.from_keys([dev_key()[0].public_key()]),
            dev=True,
            build_dir=out / "build",
            log=sys.stdout,
            progress=False,
        )
    )
    say(f"== the application exited with status {outcome.exit_status} ({outcome.backend} backend)")
    return outcome.exit_status
