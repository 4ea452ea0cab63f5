"""``keep trust show|add-key|retire``: read and edit a trust policy (thin over sign/trust.py).

``show`` prints the policy a verifying command would use (``--trust FILE``, else
``$KEEPSTACK_TRUST``, else the built-in one), its SHA-256 and its keys. ``add-key`` and ``retire``
write, and only to the file given with ``--trust FILE``: never the environment's or the
built-in policy by default. Exit 0 on success, 2 on unusable input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolchain.sign.trust import TrustedKey, TrustPolicy
    from toolchain.sign.tuf_client import TufTrust


def configure(parser: argparse.ArgumentParser) -> None:
    from keep.cli.references import TRUST_DEFAULT_HELP

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print a trust policy: source, SHA-256, keys")
    show.add_argument(
        "--trust", type=Path, metavar="FILE", help=f"the policy ({TRUST_DEFAULT_HELP})"
    )
    show.add_argument("--json", action="store_true", help="print it as JSON")

    add = actions.add_parser(
        "add-key",
        help="trust a public key: copy it to keys/NAME.pub.pem and add a [[keys]] entry",
        description="Creates the policy (threshold 1) when FILE does not exist.",
    )
    add.add_argument("public_key", type=Path, metavar="PUB", help="public key PEM (keep keygen)")
    add.add_argument("--trust", type=Path, required=True, metavar="FILE", help="policy to edit")
    add.add_argument(
        "--releases",
        action="append",
        metavar="PATTERN",
        help="release pattern the key signs, e.g. '0.*' (repeatable; default: every release)",
    )
    add.add_argument("--name", help="label and key file name (default: PUB's name)")
    add.add_argument("--not-before", metavar="TIME", help="trusted from TIME (ISO 8601)")
    add.add_argument("--not-after", metavar="TIME", help="trusted until TIME (ISO 8601)")

    retire = actions.add_parser(
        "retire", help="stop trusting a key after a time (sets its not_after)"
    )
    retire.add_argument("key", metavar="KEYID", help="the key ID (or its first 8+ hex digits)")
    retire.add_argument("--trust", type=Path, required=True, metavar="FILE", help="policy to edit")
    retire.add_argument(
        "--not-after", required=True, metavar="TIME", help="last moment the key counts (ISO 8601)"
    )


def _key_row(key: TrustedKey) -> dict[str, object]:
    from toolchain.sign.predicate import format_time

    return {
        "name": key.name,
        "keyid": key.key_id,
        "algorithm": key.algorithm,
        "releases": list(key.releases) if key.releases is not None else None,
        "not_before": format_time(key.not_before) if key.not_before else None,
        "not_after": format_time(key.not_after) if key.not_after else None,
    }


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


def _render(policy: TrustPolicy) -> str:
    if policy.tuf is not None:
        return _render_tuf(policy, policy.tuf)
    lines = [
        f"trust policy: {policy.source}",
        f"  file       {policy.path}",
        f"  sha256     {policy.sha256}",
        f"  threshold  {policy.threshold} of {len(policy.keys)} key(s)",
    ]
    for key in policy.keys:
        row = _key_row(key)
        releases = ", ".join(key.releases) if key.releases is not None else "every release"
        lines += [
            "",
            f"  key {key.name} ({key.algorithm})",
            f"    keyid      {key.key_id}",
            f"    releases   {releases}",
            f"    valid      {row['not_before'] or 'always'} to {row['not_after'] or 'no end'}",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from toolchain.errors import InputError
    from toolchain.sign.keys import load_public_key
    from toolchain.sign.predicate import format_time, parse_time
    from toolchain.sign.trust import TrustPolicy, add_key, retire_key

    if args.action == "show":
        policy = TrustPolicy.select(args.trust)
        if args.json and policy.tuf is not None:
            tuf = policy.tuf
            document = {
                "source": policy.source,
                "root_version": tuf.root_version,
                "root_sha256": tuf.root_sha256,
                "pinned_sha256": tuf.pinned_sha256,
                "expires": tuf.expires,
                "targets": {
                    t.path: {"role": t.role, "keys": [k.key_id for k in t.policy.keys]}
                    for t in tuf.targets
                },
            }
            print(json.dumps(document, indent=2, sort_keys=True))
        elif args.json:
            document = {
                "source": policy.source,
                "file": str(policy.path),
                "sha256": policy.sha256,
                "threshold": policy.threshold,
                "keys": [_key_row(k) for k in policy.keys],
            }
            print(json.dumps(document, indent=2, sort_keys=True))
        else:
            print(_render(policy))
        return 0
    if args.action == "add-key":
        public = load_public_key(args.public_key)
        name = args.name or args.public_key.name.removesuffix(".pub").removesuffix(".pem")
        name = name.removesuffix(".pub")
        created = not args.trust.exists()
        not_before = parse_time(args.not_before, "--not-before") if args.not_before else None
        not_after = parse_time(args.not_after, "--not-after") if args.not_after else None
        policy, key = add_key(
            args.trust,
            public,
            name=name,
            releases=args.releases,
            not_before=not_before,
            not_after=not_after,
        )
        print(f"{'created' if created else 'updated'} {args.trust}: trusts key {key.name}")
    elif args.action == "retire":
        moment = parse_time(args.not_after, "--not-after")
        policy, key = retire_key(args.trust, args.key, moment)
        print(f"updated {args.trust}: key {key.name} counts until {format_time(moment)}")
    else:  # pragma: no cover - argparse allows only the actions above
        raise InputError(f"unknown action {args.action}")
    print(_render(policy))
    return 0
