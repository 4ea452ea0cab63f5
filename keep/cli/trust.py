"""``keep trust show``: print the trust a verifying command would use (thin over sign/trust.py).

It is the TUF root named by ``--trust ROOT.json``, else ``$KEEPSTACK_TRUST``, else the root
pinned in the package: the root version followed and its SHA-256, each role's expiry and the
keys each release role has. Keys are added and revoked in the TUF repository (``keep tuf
add-release-key``, ``keep tuf revoke-key``); the ``add-key`` and ``retire`` actions edited the
``trust.toml`` format removed in 0.3.0. Exit 0 on success, 2 on unusable input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolchain.sign.trust import TrustPolicy
    from toolchain.sign.tuf_client import TufTrust


def configure(parser: argparse.ArgumentParser) -> None:
    from keep.cli.references import TRUST_DEFAULT_HELP

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the trust: TUF root, role expiry, keys")
    show.add_argument(
        "--trust", type=Path, metavar="ROOT.json", help=f"the TUF root ({TRUST_DEFAULT_HELP})"
    )
    show.add_argument("--json", action="store_true", help="print it as JSON")


def _render_tuf(policy: TrustPolicy, trust: TufTrust) -> str:
    """A TUF trust: the root followed, each role's expiry, and the keys each release role has."""
    lines = [f"trust: {policy.source}", f"  {trust.describe()}"]
    lines += [f"  {role:<10} expires {when}" for role, when in trust.expires.items()]
    seen: set[str] = set()
    for target in trust.targets:
        label = target.policy.source
        if label in seen:
            continue
        seen.add(label)
        count = sum(1 for t in trust.targets if t.policy.source == label)
        lines += ["", f"  {label}: threshold {target.policy.threshold}, {count} target(s)"]
        lines += [f"    key {k.name} {k.key_id}" for k in target.policy.keys]
    return "\n".join(lines)


def _document(policy: TrustPolicy, tuf: TufTrust) -> dict[str, object]:
    return {
        "source": policy.source,
        "root_version": tuf.root_version,
        "root_sha256": tuf.root_sha256,
        "pinned_sha256": tuf.pinned_sha256,
        "expires": tuf.expires,
        "targets": {
            t.path: {"role": t.role, "keys": [k.key_id for k in t.policy.keys]} for t in tuf.targets
        },
    }


def run(args: argparse.Namespace) -> int:
    import json

    from toolchain.errors import InputError
    from toolchain.sign.trust import TrustPolicy

    policy = TrustPolicy.select(args.trust)
    if policy.tuf is None:  # pragma: no cover - select only ever establishes a TUF trust
        raise InputError(f"{policy.source} is not a TUF trust")
    if args.json:
        print(json.dumps(_document(policy, policy.tuf), indent=2, sort_keys=True))
    else:
        print(_render_tuf(policy, policy.tuf))
    return 0
