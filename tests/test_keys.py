"""Signing keys: generation, key IDs, file modes, passphrases, the development key."""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from keep.cli import main
from toolchain.errors import InputError, PlatformError
from toolchain.sign import build_statement, keys
from toolchain.sign.dsse import Envelope
from toolchain.sign.keys import (
    dev_key,
    generate_private_key,
    is_development_key,
    key_id,
    load_private_key,
    load_public_key,
    public_path_for,
    sign_bytes,
    verify_bytes,
    write_key_pair,
)
from toolchain.sign.predicate import ComponentDigest, KeepPredicate, LaunchConfig


def _der_from_pem(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "ed25519"])
def test_keygen_writes_0600_private_and_public_and_id_is_sha256_of_spki(
    tmp_path: Path, algorithm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "release.pem"
    assert main(["keygen", str(path), "--algorithm", algorithm]) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    public_pem = (tmp_path / "release.pem.pub").read_bytes()
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    # The key ID, computed independently from the PEM's DER body.
    expected_id = hashlib.sha256(_der_from_pem(public_pem)).hexdigest()
    out = capsys.readouterr().out
    assert f"key ID:      {expected_id}" in out
    assert f"--release-key {path} --releases PATTERN" in out
    assert f"--trusted-key {path}.pub" in out
    private = load_private_key(path)
    assert key_id(private) == expected_id == key_id(load_public_key(tmp_path / "release.pem.pub"))
    assert keys.algorithm_of(private) == algorithm


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_key_id_matches_openssl_der(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_key_pair(path, generate_private_key())
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(path) + ".pub", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert key_id(load_public_key(Path(str(path) + ".pub"))) == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_private_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.pem"
    write_key_pair(path, generate_private_key())
    path.chmod(mode)
    with pytest.raises(InputError) as info:
        load_private_key(path)
    assert str(path) in info.value.message
    assert f"{mode:04o}" in info.value.message
    assert "readable by group or others" in info.value.message


def test_cli_sign_refuses_world_readable_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "k.pem"
    write_key_pair(path, generate_private_key())
    path.chmod(0o644)
    statement = _reference_statement(tmp_path)
    code = main(["sign", "--key", str(path), "--statement", str(statement), "-o", "x.json"])
    assert code == 2
    err = capsys.readouterr().err
    assert "readable by group or others" in err
    assert "0644" in err


def test_encrypted_key_needs_the_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    private = generate_private_key("ed25519")
    write_key_pair(path, private, passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    with pytest.raises(InputError, match="encrypted and no passphrase"):
        load_private_key(path)
    with pytest.raises(InputError, match="wrong passphrase"):
        load_private_key(path, passphrase=b"wrong")
    assert key_id(load_private_key(path, passphrase=b"correct horse")) == key_id(private)


def test_keygen_passphrase_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.pem"
    monkeypatch.setenv("KEEP_TEST_PASS", "s3cret")
    assert main(["keygen", str(path), "--passphrase-env", "KEEP_TEST_PASS"]) == 0
    load_private_key(path, passphrase=b"s3cret")
    monkeypatch.delenv("KEEP_TEST_PASS")
    assert main(["keygen", str(tmp_path / "j.pem"), "--passphrase-env", "KEEP_TEST_PASS"]) == 2


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    assert main(["keygen", str(path)]) == 0
    first = path.read_bytes()
    assert main(["keygen", str(path)]) == 2
    assert path.read_bytes() == first
    assert main(["keygen", str(path), "--force"]) == 0
    assert path.read_bytes() != first
    assert path.stat().st_mode & 0o777 == 0o600


def _pair(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), public_path_for(path).read_bytes()


def test_keygen_never_writes_through_a_symlink_at_the_public_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planted PATH.pub -> victim once made keygen overwrite the victim."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "k.pem"
    public_path_for(path).symlink_to(victim)
    assert main(["keygen", str(path)]) == 2
    assert "k.pem.pub already exists (a symbolic link)" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious"
    assert public_path_for(path).is_symlink()
    assert not path.exists(), "no private key without its public key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem.pub", "victim"]
    # a dangling link is refused the same way (O_EXCL|O_NOFOLLOW semantics, not exists())
    victim.unlink()
    assert main(["keygen", str(path)]) == 2
    assert not victim.exists()
    # --force replaces the link itself, never its target
    victim.write_bytes(b"precious")
    assert main(["keygen", str(path), "--force"]) == 0
    assert victim.read_bytes() == b"precious"
    assert not public_path_for(path).is_symlink()
    load_public_key(public_path_for(path))


def test_keygen_refuses_an_existing_public_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    public_path_for(path).write_bytes(b"someone else's public key")
    assert main(["keygen", str(path)]) == 2
    assert public_path_for(path).read_bytes() == b"someone else's public key"
    assert not path.exists()
    # and a symlink at PATH itself is never followed either
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    other = tmp_path / "o.pem"
    other.symlink_to(target)
    assert main(["keygen", str(other)]) == 2
    assert target.read_bytes() == b"precious"
    assert not public_path_for(other).exists()


@pytest.mark.parametrize("failing_write", [1, 2])
def test_keygen_force_keeps_the_old_pair_until_the_new_one_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    """--force used to delete the old pair first: a failed write then left no key at all."""
    path = tmp_path / "k.pem"
    write_key_pair(path, generate_private_key())
    old = _pair(path)
    real_open = os.open
    calls = []

    def open_failing(file: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT and str(file).endswith(".tmp"):
            calls.append(file)
            if len(calls) == failing_write:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_failing)
    with pytest.raises(PlatformError, match="No space left on device"):
        write_key_pair(path, generate_private_key(), overwrite=True)
    monkeypatch.undo()
    assert _pair(path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "k.pem.pub"], "no temporaries"
    # and when nothing fails, the new pair replaces the old one, matched
    private = generate_private_key()
    write_key_pair(path, private, overwrite=True)
    assert key_id(load_public_key(public_path_for(path))) == key_id(private)
    assert key_id(load_private_key(path)) == key_id(private)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "k.pem.pub"]


def test_keygen_under_permissive_umask_still_0600(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_key_pair(tmp_path / "k.pem", generate_private_key())
    finally:
        os.umask(old)
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_other_curves_and_garbage_are_refused(tmp_path: Path) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    pem = p256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "p256.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(InputError, match="P-384"):
        load_private_key(path)
    pub = tmp_path / "p256.pub"
    pub.write_bytes(
        p256.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(InputError, match="P-384"):
        load_public_key(pub)
    garbage = tmp_path / "g.pem"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(InputError, match="not a PEM"):
        load_private_key(garbage)
    with pytest.raises(InputError, match="not a PEM"):
        load_public_key(garbage)
    with pytest.raises(InputError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")


@pytest.mark.parametrize("algorithm", ["ecdsa-p384", "ed25519"])
def test_sign_and_verify_bytes(algorithm: str) -> None:
    private = generate_private_key(algorithm)
    signature = sign_bytes(private, b"message")
    assert verify_bytes(private.public_key(), signature, b"message")
    assert not verify_bytes(private.public_key(), signature, b"messagE")
    if algorithm == "ed25519":
        assert len(signature) == 64
        assert isinstance(private, ed25519.Ed25519PrivateKey)
    else:
        assert signature[0] == 0x30  # DER SEQUENCE


def test_dev_key_is_created_once_in_state_dir() -> None:
    private, path = dev_key()
    assert path.parent.name == "keys"
    assert path.stat().st_mode & 0o777 == 0o600
    again, same_path = dev_key()
    assert same_path == path
    assert key_id(again) == key_id(private)
    assert is_development_key(private)
    assert not is_development_key(generate_private_key())


def _reference_statement(directory: Path) -> Path:
    """A valid reference statement (the only kind keep sign signs), as a file."""
    now = datetime.now(UTC)
    predicate = KeepPredicate(
        "1.0",
        [LaunchConfig("any", 1, 0, "nil", bytes(48))],
        [ComponentDigest("a", "0" * 64, "0" * 96)],
        {},
        "0" * 64,
        now,
        now + timedelta(days=1),
        False,
    )
    statement = directory / "s.json"
    statement.write_text(json.dumps(build_statement(predicate, {"a": {"sha256": "0" * 64}})))
    return statement


def test_sign_prompts_for_the_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    answers = iter(["pw", "pw"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    key = tmp_path / "k.pem"
    assert main(["keygen", str(key), "--passphrase"]) == 0
    assert "encrypted" in capsys.readouterr().out
    statement = _reference_statement(tmp_path)
    out = tmp_path / "e.json"
    sign = ["sign", "--key", str(key), "--statement", str(statement), "-o", str(out), "--force"]
    # Not a terminal and no passphrase option: a clear error, no prompt.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(sign) == 2
    assert "encrypted and no passphrase" in capsys.readouterr().err
    # On a terminal, the encrypted key is prompted for.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["pw"])
    assert main(sign) == 0
    answers = iter(["wrong"])
    assert main([*sign, "--passphrase"]) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    assert Envelope.parse(out.read_bytes()).signatures
    # keygen with two different answers refuses.
    answers = iter(["one", "two"])
    assert main(["keygen", str(tmp_path / "j.pem"), "--passphrase"]) == 2
    assert "differ" in capsys.readouterr().err
