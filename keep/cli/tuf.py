"""``keep tuf ACTION``: the key ceremonies of the TUF repository of reference measurements.

``init``, ``import-legacy``, ``add-release-key``, ``add-targets``, ``rotate-root``,
``revoke-key``, ``refresh`` write new metadata versions into ``--repository DIR/metadata`` (thin
over ``toolchain.sign.tuf_repository``); ``show`` prints every role with its version, expiry
date, threshold and keys. Signing keys are given with ``--key SPEC`` (repeatable): a private key
file or a PKCS#11 URI (``pkcs11:token=...;object=...``, module and PIN from
``$KEEPSTACK_PKCS11_MODULE`` and ``$KEEPSTACK_PKCS11_PIN``). Each role signs with the given keys
it lists; too few for its threshold is refused naming the role. After every write the whole
repository is verified by the TUF client from its first root. Exit 0 on success, 2 on
unusable input, 3 when a token or the disk fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import timedelta

    from toolchain.sign.keys import PublicKey
    from toolchain.sign.tokens import SigningKey
    from toolchain.sign.tuf_repository import Keyring, Repository

_KEY_HELP = (
    "signing key: a private key file or a PKCS#11 URI pkcs11:token=LABEL;object=LABEL "
    "(module and PIN from $KEEPSTACK_PKCS11_MODULE and $KEEPSTACK_PKCS11_PIN); repeatable"
)


def _common(parser: argparse.ArgumentParser, *, keys: bool = True) -> None:
    from keep.cli.keygen import add_passphrase_options

    parser.add_argument(
        "--repository",
        type=Path,
        required=True,
        metavar="DIR",
        help="the repository folder (the project's: reference-measurements)",
    )
    if keys:
        parser.add_argument("--key", action="append", default=[], metavar="SPEC", help=_KEY_HELP)
        parser.add_argument(
            "--expiry",
            action="append",
            default=[],
            metavar="ROLE=DAYS",
            help="expiry of a role signed now, in days (defaults: root, targets and release "
            "roles 365, snapshot 90, timestamp 30)",
        )
        add_passphrase_options(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _configure_init(actions)
    _configure_releases(actions)
    _configure_keys(actions)


def _configure_init(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = actions.add_parser("init", help="create root v1, targets, snapshot and timestamp")
    _common(init)
    init.add_argument(
        "--root-key",
        action="append",
        required=True,
        metavar="SPEC",
        help="a root key (also signs targets); repeat for each",
    )
    init.add_argument(
        "--root-threshold",
        type=int,
        default=None,
        metavar="M",
        help="root keys needed to change the root (default: all of them)",
    )
    init.add_argument(
        "--online-key",
        required=True,
        metavar="SPEC",
        help="the key of snapshot and timestamp (e.g. the release key)",
    )


def _configure_releases(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    legacy = actions.add_parser(
        "import-legacy", help="the one-time trust step: list releases signed before TUF"
    )
    _common(legacy)
    legacy.add_argument("releases", nargs="+", metavar="RELEASE", help="e.g. 0.1.0 0.2.0")
    legacy.add_argument(
        "--legacy-key",
        type=Path,
        required=True,
        metavar="PUB",
        help="public key that signed their envelopes (PEM)",
    )
    legacy.add_argument("--legacy-name", help="its label (default: PUB's name)")

    add = actions.add_parser("add-release-key", help="delegate releases to a new release key")
    _common(add)
    add.add_argument(
        "--release-key",
        required=True,
        metavar="SPEC",
        help="the new release key (it signs its role's first metadata)",
    )
    add.add_argument("--name", help="role name (default: the key's label)")
    add.add_argument(
        "--releases",
        action="append",
        required=True,
        metavar="PATTERN",
        help="releases it may sign, e.g. '0.*' (repeatable)",
    )

    targets = actions.add_parser("add-targets", help="list a release's files in a release role")
    _common(targets)
    targets.add_argument("release", metavar="RELEASE", help="the release folder, e.g. 0.3.0")
    targets.add_argument("--role", required=True, help="the release role that lists them")


def _configure_keys(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = actions.add_parser(
        "rotate-root", help="new root version: add/remove keys of a top-level role"
    )
    _common(rotate)
    rotate.add_argument(
        "--role", default="root", choices=("root", "targets", "snapshot", "timestamp")
    )
    rotate.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="SPEC|PUB",
        help="key to add (a signing key SPEC, or a public key PEM)",
    )
    rotate.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="KEYID",
        help="key to remove (8+ hex digits of its ID)",
    )
    rotate.add_argument("--threshold", type=int, metavar="M", help="the role's new threshold")

    revoke = actions.add_parser("revoke-key", help="stop trusting a key in every role")
    _common(revoke)
    revoke.add_argument("keyid", metavar="KEYID", help="8+ hex digits of its ID")

    refresh = actions.add_parser("refresh", help="re-sign snapshot and timestamp (new expiry)")
    _common(refresh)

    show = actions.add_parser("show", help="every role: version, expiry, threshold, keys")
    _common(show, keys=False)
    show.add_argument("--json", action="store_true", help="print it as JSON")


def _expiry(values: list[str]) -> dict[str, timedelta]:
    from datetime import timedelta

    from toolchain.errors import InputError

    table: dict[str, timedelta] = {}
    for value in values:
        role, _, days = value.partition("=")
        if not role or not days.isdigit() or int(days) < 1:
            raise InputError(f"--expiry {value}: use ROLE=DAYS, e.g. timestamp=30")
        table["release" if role not in ("root", "targets", "snapshot", "timestamp") else role] = (
            timedelta(days=int(days))
        )
    return table


def _open(args: argparse.Namespace, spec: str | Path) -> SigningKey:
    from toolchain.sign.passphrase import load_key_for_signing
    from toolchain.sign.tokens import open_signing_key

    return open_signing_key(spec, passphrase=lambda path: load_key_for_signing(args, path))


def _render(view: dict[str, Any]) -> str:
    lines = [f"TUF repository {view['repository']}", f"  root sha256 {view['root_sha256']}"]
    for name, role in view["roles"].items():
        lines += [
            "",
            (
                f"  role {name}: version {role['version']}, expires {role['expires']}, "
                f"threshold {role['threshold']} of {len(role['keys'])}"
            ),
        ]
        lines += [f"    key {k['keyid']} {k['name']}" for k in role["keys"]]
        if "paths" in role:
            lines.append(f"    paths {', '.join(role['paths'])}; {role['targets']} target(s)")
        if "legacy_targets" in role:
            lines.append(f"    lists {role['legacy_targets']} target(s) of releases before TUF")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json
    from contextlib import ExitStack

    from toolchain.sign import tuf_repository as tuf

    repo = tuf.Repository(args.repository)
    if args.action == "show":
        view = tuf.show(repo)
        tuf.verify_repository(repo)
        print(json.dumps(view, indent=2, sort_keys=True) if args.json else _render(view))
        return 0
    with ExitStack() as stack:

        def opened(spec: str | Path) -> SigningKey:
            key = _open(args, spec)
            stack.callback(key.close)
            return key

        keys = [opened(spec) for spec in args.key]
        with repo.transaction():  # all or nothing, verified before it replaces anything
            message = _act(args, repo, tuf.Keyring(tuple(keys)), opened, _expiry(args.expiry))
    print(message)
    print(_render(tuf.show(repo)))
    return 0


def _act(
    args: argparse.Namespace,
    repo: Repository,
    keyring: Keyring,
    opened: Any,
    expiry: dict[str, timedelta],
) -> str:
    from toolchain.errors import InputError
    from toolchain.sign import tuf_repository as tuf
    from toolchain.sign.keys import load_public_key
    from toolchain.sign.tokens import FileKey, TokenKey
    from toolchain.sign.tuf_client import METADATA_DIR

    if args.action == "init":
        roots = [opened(spec) for spec in args.root_key]
        online = opened(args.online_key)
        ring = tuf.Keyring((*keyring.keys, *roots, online))
        threshold = args.root_threshold or len(roots)
        tuf.init(
            repo, ring, root_keys=roots, root_threshold=threshold, online_key=online, expiry=expiry
        )
        where = repo.directory / METADATA_DIR
        return f"initialised {where}: root v1, {threshold} of {len(roots)} root keys"
    if args.action == "import-legacy":
        public = load_public_key(args.legacy_key)
        name = args.legacy_name or args.legacy_key.name.removesuffix(".pem").removesuffix(".pub")
        listed = tuf.import_legacy(
            repo, keyring, args.releases, public, legacy_name=name, expiry=expiry
        )
        return f"targets lists {len(listed)} file(s) of {', '.join(args.releases)} (key {name})"
    if args.action == "add-release-key":
        key = opened(args.release_key)
        name = args.name or tuf.key_name(key)
        ring = tuf.Keyring((*keyring.keys, key))
        tuf.add_release_key(repo, ring, key, name=name, releases=args.releases, expiry=expiry)
        return f"role {name} (key {key.key_id}) may sign releases {', '.join(args.releases)}"
    if args.action == "add-targets":
        added = tuf.add_targets(
            repo, keyring, args.role, tuf.release_files(repo, args.release), expiry=expiry
        )
        return f"role {args.role} lists {len(added)} file(s) of release {args.release}"
    if args.action == "rotate-root":
        add: list[SigningKey | PublicKey] = [
            load_public_key(Path(s))
            if not s.startswith("pkcs11:") and _is_public_file(s)
            else opened(s)
            for s in args.add
        ]
        ring = tuf.Keyring((*keyring.keys, *(k for k in add if isinstance(k, FileKey | TokenKey))))
        version = tuf.rotate_root(
            repo,
            ring,
            role=args.role,
            add=add,
            remove=args.remove,
            threshold=args.threshold,
            expiry=expiry,
        )
        return f"root v{version}: role {args.role} changed"
    if args.action == "revoke-key":
        roles = tuf.revoke_key(repo, keyring, args.keyid, expiry=expiry)
        return f"key {args.keyid} removed from {', '.join(roles)}"
    if args.action == "refresh":
        tuf.refresh(repo, keyring, expiry=expiry)
        return "snapshot and timestamp re-signed"
    raise InputError(f"unknown action {args.action}")  # pragma: no cover - argparse


def _is_public_file(spec: str) -> bool:
    try:
        return b"PUBLIC KEY" in Path(spec).read_bytes()[:64]
    except OSError:
        return False
