"""Signing keys for reference measurements: ECDSA P-384 (default) and Ed25519.

Private keys are PKCS#8 PEM files of mode 0600, optionally encrypted with a passphrase; a private
key file that the group or others can read is refused. Public keys are SubjectPublicKeyInfo PEM.
The key ID is the SHA-256 of the public key's SubjectPublicKeyInfo DER, in hex.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from toolchain.errors import InputError, KeepError, PlatformError
from toolchain.state import state_dir

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ECDSA_P384 = "ecdsa-p384"
ED25519 = "ed25519"
ALGORITHMS = (ECDSA_P384, ED25519)

# Key files are small; anything larger is not a key.
_MAX_KEY_FILE = 64 * 1024
DEV_KEY_NAME = "development.pem"


def generate_private_key(algorithm: str = ECDSA_P384) -> PrivateKey:
    if algorithm == ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    raise InputError(f"unknown key algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(key.curve, ec.SECP384R1):
        return ECDSA_P384
    raise InputError(f"unsupported elliptic curve {key.curve.name}: only P-384 or Ed25519 keys")


def public_key_der(public: PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_pem(public: PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: PrivateKey | PublicKey) -> str:
    """SHA-256 of the public key's SubjectPublicKeyInfo DER, lowercase hex."""
    public = key.public_key() if isinstance(key, PrivateKey) else key
    return hashlib.sha256(public_key_der(public)).hexdigest()


def sign_bytes(private: PrivateKey, data: bytes) -> bytes:
    """ECDSA P-384 with SHA-384, DER-encoded; Ed25519 raw (64 bytes)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(data)
    algorithm_of(private)  # refuses other curves
    return private.sign(data, ec.ECDSA(hashes.SHA384()))


def verify_bytes(public: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        else:
            algorithm_of(public)
            public.verify(signature, data, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


_UNSUPPORTED = "unsupported key type; only ECDSA P-384 or Ed25519 keys"


def _check_algorithm(key: PrivateKey | PublicKey, source: str) -> None:
    """``algorithm_of`` with the key's source in the message (e.g. an ECDSA key on P-256)."""
    try:
        algorithm_of(key)
    except InputError as exc:
        raise InputError(f"{source}: {exc.message}") from exc


def public_key_from_pem(data: bytes, source: str) -> PublicKey:
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{source}: not a PEM public key ({exc})") from exc
    if not isinstance(public, PublicKey):
        raise InputError(f"{source}: {_UNSUPPORTED}")
    _check_algorithm(public, source)
    return public


def load_public_key(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()[: _MAX_KEY_FILE + 1]
    except OSError as exc:
        raise InputError(f"cannot read public key {path}: {exc.strerror}") from exc
    if len(data) > _MAX_KEY_FILE:
        raise InputError(f"{path}: too large to be a public key")
    return public_key_from_pem(data, str(path))


def _read_private_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"private key {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise InputError(
                f"private key file {path} has mode {mode:04o}: readable by group or others; "
                "refusing to use it",
                hint=f"chmod 600 {path} (and consider the key compromised if others read it)",
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise InputError(f"{path}: too large to be a private key")
    return data


def load_private_key(
    path: Path,
    *,
    passphrase: bytes | None = None,
    ask_passphrase: Callable[[Path], bytes] | None = None,
) -> PrivateKey:
    """Load a PKCS#8 PEM private key, refusing files the group or others can read.

    An encrypted key needs ``passphrase``, or else ``ask_passphrase(path)`` is called for it.
    """
    data = _read_private_key_file(path)
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    if encrypted and passphrase is None and ask_passphrase is not None:
        passphrase = ask_passphrase(path)
    if encrypted and passphrase is None:
        raise InputError(
            f"private key {path} is encrypted and no passphrase was given",
            hint="pass --passphrase-env NAME (an environment variable holding it) or --passphrase",
        )
    try:
        private = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise InputError(f"cannot decrypt private key {path}: wrong passphrase?") from exc
        raise InputError(f"{path}: not a PEM PKCS#8 private key ({exc})") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{path}: unusable private key ({exc})") from exc
    if not isinstance(private, PrivateKey):
        raise InputError(f"{path}: {_UNSUPPORTED}")
    _check_algorithm(private, str(path))
    return private


def public_path_for(private_path: Path) -> Path:
    """Where ``keep keygen PATH`` puts the public key: ``PATH.pub``."""
    return private_path.with_name(private_path.name + ".pub")


def write_key_pair(
    path: Path, private: PrivateKey, *, passphrase: bytes | None = None, overwrite: bool = False
) -> Path:
    """Write the private key to ``path`` (mode 0600) and the public key to ``path.pub``.

    Both are written completely under temporary names in the same directory, created with
    ``O_EXCL|O_NOFOLLOW`` (never through a planted link, never readable by others, not even
    briefly). Then, without ``overwrite``, each is hard-linked to its name, which fails if
    anything (a file, a symlink) is there: nothing is ever written through or over it. With
    ``overwrite``, each is renamed over its name: the old pair stays until the new one is complete.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_path = public_path_for(path)
    temporaries: list[Path] = []
    try:
        new_private = _write_temporary(path, pem, 0o600, temporaries)
        new_public = _write_temporary(
            public_path, public_key_pem(private.public_key()), 0o644, temporaries
        )
        if overwrite:
            _rename(new_private, path)
            _rename(new_public, public_path)
        else:
            _link_new(new_private, path)
            try:
                _link_new(new_public, public_path)
            except KeepError:
                _unlink_if_ours(path, new_private)  # no half pair: the key without its .pub
                raise
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return public_path


def _write_temporary(final: Path, data: bytes, mode: int, made: list[Path]) -> Path:
    """``data`` in a new file beside ``final`` (``O_EXCL|O_NOFOLLOW``, ``mode``), appended to
    ``made`` so that the caller removes it whatever happens."""
    temporary = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temporary, flags, mode)
    except OSError as exc:
        raise PlatformError(f"cannot create {final}: {exc.strerror}") from exc
    made.append(temporary)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise PlatformError(f"cannot write {final}: {exc.strerror}") from exc
    return temporary


def _link_new(temporary: Path, final: Path) -> None:
    """Give the complete file its name; refuse if the name exists (link(2) never follows it)."""
    try:
        os.link(temporary, final, follow_symlinks=False)
    except FileExistsError as exc:
        what = "a symbolic link" if final.is_symlink() else "a file"
        raise InputError(
            f"{final} already exists ({what}); refusing to overwrite a key",
            hint="pass --force to replace the pair",
        ) from exc
    except OSError as exc:
        raise PlatformError(f"cannot create {final}: {exc.strerror}") from exc


def _rename(temporary: Path, final: Path) -> None:
    try:
        temporary.replace(final)  # replaces a link at ``final`` itself, never its target
    except OSError as exc:
        raise PlatformError(f"cannot replace {final}: {exc.strerror}") from exc


def _unlink_if_ours(final: Path, temporary: Path) -> None:
    with contextlib.suppress(OSError):
        if not final.is_symlink() and final.samefile(temporary):
            final.unlink()


def dev_key() -> tuple[PrivateKey, Path]:
    """The per-user development key (ECDSA P-384), created on first use.

    Returns the key and the path of its private key file (the public key is beside it, ``.pub``).
    Everything signed with it must be a development reference.
    """
    path = state_dir("keys") / DEV_KEY_NAME
    if not path.exists():
        # If another process creates it first, write_key_pair refuses to overwrite: load theirs.
        with contextlib.suppress(InputError):
            write_key_pair(path, generate_private_key(ECDSA_P384))
    return load_private_key(path), path


def is_development_key(key: PrivateKey | PublicKey) -> bool:
    """Whether ``key`` is this user's development key (never creates one)."""
    public_path = public_path_for(state_dir("keys") / DEV_KEY_NAME)
    if not public_path.exists():
        return False
    return key_id(load_public_key(public_path)) == key_id(key)


def passphrase_from_env(name: str) -> bytes:
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"environment variable {name} (the key's passphrase) is not set")
    if not value:
        raise InputError(f"environment variable {name} (the key's passphrase) is empty")
    return value.encode()
