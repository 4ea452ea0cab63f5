"""``python -m toolchain.release --key PATH`` (the ``nox -s release`` session).

Publishes the package version of this source tree (``pyproject.toml``) as a release: see
``toolchain.release.publish``. The key comes from ``--key`` or ``$KEEPSTACK_RELEASE_KEY``: a
private key file outside the repository, or a PKCS#11 URI (``pkcs11:token=...;object=...``, with
``$KEEPSTACK_PKCS11_MODULE`` and ``$KEEPSTACK_PKCS11_PIN``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toolchain.errors import InputError, KeepError


def main(argv: list[str] | None = None) -> int:
    from toolchain.release.publish import make_release, package_version

    parser = argparse.ArgumentParser(
        prog="nox -s release --", description="sign the reference measurements of a release"
    )
    parser.add_argument(
        "--key", metavar="PATH|URI", help="the release key: a private key file or a pkcs11: URI"
    )
    parser.add_argument(
        "--role", help="the TUF release role that lists the release (default: the key's)"
    )
    parser.add_argument(
        "--repo", type=Path, default=Path(__file__).resolve().parents[2], metavar="DIR"
    )
    parser.add_argument("--version", metavar="V", help="default: the package version")
    args = parser.parse_args(argv)
    try:
        key = args.key or os.environ.get("KEEPSTACK_RELEASE_KEY") or None
        if key is None:
            raise InputError("no release key", hint="pass --key PATH or set KEEPSTACK_RELEASE_KEY")
        version = args.version or package_version(args.repo)
        lines: list[str] = []
        release = make_release(version, key, args.repo, log=lines, role=args.role)
    except KeepError as exc:
        print(exc.explain(), file=sys.stderr)
        return exc.exit_code
    for line in lines:
        print(line)
    print(f"release {release.version}: {len(release.envelopes)} envelope(s) in {release.directory}")
    print(f"signed by key {release.key_id}")
    print(
        f"TUF role {release.tuf_role} lists the release ({release.metadata}); "
        "commit reference-measurements/ (the release and metadata/) with it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
