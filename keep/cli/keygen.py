"""``keep keygen PATH``: create a signing key pair for reference measurements."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_passphrase_options(parser: argparse.ArgumentParser) -> None:
    """The passphrase options of every command that writes or reads a private key."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--passphrase-env",
        metavar="NAME",
        help="read the key's passphrase from environment variable NAME",
    )
    group.add_argument(
        "--passphrase",
        action="store_true",
        dest="passphrase_prompt",
        help="prompt for the key's passphrase on the terminal",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="private key file to create")
    parser.add_argument(
        "--algorithm",
        choices=("ecdsa-p384", "ed25519"),
        default="ecdsa-p384",
        help="signature algorithm (default: ecdsa-p384)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing pair at PATH and PATH.pub (the old pair stays until the new "
        "one is completely written)",
    )
    add_passphrase_options(parser)
    parser.epilog = (
        "Writes the private key to PATH (PKCS#8 PEM, mode 0600, encrypted when a passphrase is "
        "given) and the public key to PATH.pub; an existing file or symbolic link at either is "
        "refused without --force, never written through. Never commit the private key."
    )


def run(args: argparse.Namespace) -> int:
    from toolchain.sign.keys import generate_private_key, key_id, write_key_pair
    from toolchain.sign.passphrase import passphrase_for_new_key

    path: Path = args.path
    passphrase = passphrase_for_new_key(args)
    private = generate_private_key(args.algorithm)
    public_path = write_key_pair(path, private, passphrase=passphrase, overwrite=args.force)
    identity = key_id(private)
    state = "encrypted" if passphrase else "unencrypted"
    print(f"private key: {path} ({args.algorithm}, mode 0600, {state})")
    print(f"public key:  {public_path}")
    print(f"key ID:      {identity}")
    print(
        "\nTo trust it: delegate releases to it in a TUF repository (keep tuf add-release-key "
        f"--repository DIR --release-key {path} --releases PATTERN --key ROOT-KEY ...),"
        f"\nor verify with --trusted-key {public_path}"
    )
    return 0
