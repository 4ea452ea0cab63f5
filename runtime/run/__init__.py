"""``keep run``: build (or reuse), boot, attest live, and run the application only if it checks out.

The public entry is ``run_app(RunOptions) -> RunOutcome``; ``keep.cli.run`` is its CLI.
"""

from runtime.run.attest import LiveAttestation
from runtime.run.runner import RunOptions, RunOutcome, run_app

__all__ = ["LiveAttestation", "RunOptions", "RunOutcome", "run_app"]
