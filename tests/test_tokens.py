"""Signing in a PKCS#11 token: a THROW-AWAY SoftHSM2 token made here (never the project's).

Needs SoftHSM2 (Debian ``softhsm2``, installed by ``.ci/run``); without it every test here skips,
saying so. All of them run in one worker (xdist group): the token's configuration is read once
per process, when the module is loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keep.cli import main
from toolchain.errors import InputError, PlatformError
from toolchain.sign import (
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    build_statement,
)
from toolchain.sign.keys import public_key_pem, verify_bytes
from toolchain.sign.tokens import TokenKey, open_signing_key

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN = "keepstack-test"
PIN = "test-user-pin"
P384 = bytes.fromhex("06052b81040022")

pytestmark = [
    pytest.mark.xdist_group("softhsm"),
    pytest.mark.skipif(
        not MODULE.exists() or shutil.which("softhsm2-util") is None,
        reason=f"SoftHSM2 is not installed ({MODULE}, softhsm2-util): apt-get install softhsm2 "
        "(.ci/run does); the PKCS#11 signing tests cannot run",
    ),
]


def _generate(session: object, label: str, ident: int, *, sign: bool = True) -> None:
    import PyKCS11 as P

    public = [
        (P.CKA_CLASS, P.CKO_PUBLIC_KEY),
        (P.CKA_KEY_TYPE, P.CKK_EC),
        (P.CKA_TOKEN, True),
        (P.CKA_EC_PARAMS, P384),
        (P.CKA_VERIFY, True),
        (P.CKA_LABEL, label),
        (P.CKA_ID, (ident,)),
    ]
    private = [
        (P.CKA_CLASS, P.CKO_PRIVATE_KEY),
        (P.CKA_KEY_TYPE, P.CKK_EC),
        (P.CKA_TOKEN, True),
        (P.CKA_PRIVATE, True),
        (P.CKA_SENSITIVE, True),
        (P.CKA_SIGN, sign),
        (P.CKA_DERIVE, not sign),
        (P.CKA_LABEL, label),
        (P.CKA_ID, (ident,)),
    ]
    session.generateKeyPair(public, private, mecha=P.MechanismECGENERATEKEYPAIR)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fresh token: root-1, root-2 and release (ECDSA P-384, may sign), a P-384 key that may
    not sign, and an AES key; the environment a signing command reads."""
    import PyKCS11

    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    config = folder / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    environment = {"SOFTHSM2_CONF": str(config)}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "test-so-pin",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, **environment},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(config))
        library = PyKCS11.PyKCS11Lib()
        library.load(str(MODULE))
        slot = next(
            s
            for s in library.getSlotList(tokenPresent=True)
            if library.getTokenInfo(s).label.strip() == TOKEN
        )
        session = library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        session.login(PIN)
        for ident, label in enumerate(("root-1", "root-2", "release"), 1):
            _generate(session, label, ident)
        _generate(session, "derive-only", 9, sign=False)
        session.generateKey(
            [
                (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
                (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
                (PyKCS11.CKA_VALUE_LEN, 32),
                (PyKCS11.CKA_TOKEN, True),
                (PyKCS11.CKA_LABEL, "aes"),
            ],
            mecha=PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN),
        )
        session.logout()
        session.closeSession()
        patch.setenv("KEEPSTACK_PKCS11_MODULE", str(MODULE))
        patch.setenv("KEEPSTACK_PKCS11_PIN", PIN)
        yield environment


def _uri(label: str) -> str:
    return f"pkcs11:token={TOKEN};object={label}"


def _statement(path: Path, release: str = "0.3.0") -> Path:
    data = b"\0asm\1\0\0\0 app"
    digests = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha384": hashlib.sha384(data).hexdigest(),
    }
    now = datetime.now(UTC).replace(microsecond=0)
    predicate = KeepPredicate(
        release=release,
        configs=[LaunchConfig("milan", 1, 0x30000, "kvm", bytes(range(48)))],
        components=[ComponentDigest("app.wasm", digests["sha256"], digests["sha384"])],
        toolchain={"ziglang": "0.15.2"},
        provenance_sha256="ab" * 32,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=30),
    )
    import json

    path.write_text(json.dumps(build_statement(predicate, {"app.wasm": digests})))
    return path


def _public_pem(tmp_path: Path, label: str) -> Path:
    key = open_signing_key(_uri(label))
    try:
        path = tmp_path / f"{label}.pub.pem"
        path.write_bytes(public_key_pem(key.public_key))
    finally:
        key.close()
    return path


def test_token_signature_is_der_and_verifies(token: dict[str, str]) -> None:
    key = open_signing_key(_uri("release"))
    try:
        assert isinstance(key, TokenKey)
        signature = key.sign(b"message")
        assert signature[0] == 0x30  # DER SEQUENCE, converted from the token's r||s
        assert verify_bytes(key.public_key, signature, b"message")
        assert not verify_bytes(key.public_key, signature, b"other message")
    finally:
        key.close()


def test_keep_sign_with_a_token_key_then_verify(
    token: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statement = _statement(tmp_path / "statement.json")
    envelope = tmp_path / "hello.dsse.json"
    assert (
        main(["sign", "--key", _uri("release"), "--statement", str(statement), "-o", str(envelope)])
        == 0
    )
    assert "pkcs11:token=keepstack-test;object=release" in capsys.readouterr().out
    public = _public_pem(tmp_path, "release")
    assert main(["references", "verify", str(envelope), "--trusted-key", str(public)]) == 0
    # Co-signing with a second token key adds a second valid signature.
    assert main(["sign", "--key", _uri("root-1"), "--add-to", str(envelope)]) == 0
    other = _public_pem(tmp_path, "root-1")
    assert (
        main(
            [
                "references",
                "verify",
                str(envelope),
                "--trusted-key",
                str(public),
                "--trusted-key",
                str(other),
                "--threshold",
                "2",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("uri", "environment", "status", "message"),
    [
        (
            _uri("release"),
            {"KEEPSTACK_PKCS11_PIN": "0000"},
            2,
            "PKCS#11 token keepstack-test: login refused, wrong PIN (CKR_PIN_INCORRECT)",
        ),
        (
            _uri("missing"),
            {},
            2,
            "PKCS#11 token keepstack-test: no private key with object missing",
        ),
        (_uri("derive-only"), {}, 2, "the key may not sign (CKA_SIGN is false)"),
        (_uri("aes"), {}, 2, "not a private key (found CKO_SECRET_KEY)"),
        ("pkcs11:token=nope;object=release", {}, 2, "no PKCS#11 token labelled 'nope'"),
        (
            _uri("release"),
            {"KEEPSTACK_PKCS11_MODULE": "/nonexistent/libpkcs11.so"},
            3,
            "cannot load PKCS#11 module /nonexistent/libpkcs11.so",
        ),
        (_uri("release"), {"KEEPSTACK_PKCS11_PIN": ""}, 2, "set $KEEPSTACK_PKCS11_PIN"),
        (_uri("release") + "?pin-value=" + PIN, {}, 2, "a PIN does not belong in the URI"),
    ],
)
def test_unusable_token_keys_give_one_clear_line(
    token: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    environment: dict[str, str],
    status: int,
    message: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    statement = _statement(tmp_path / "statement.json")
    envelope = tmp_path / "out.dsse.json"
    assert (
        main(["sign", "--key", uri, "--statement", str(statement), "-o", str(envelope)]) == status
    )
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not envelope.exists()


def test_a_wrong_pin_after_a_good_one_is_still_refused(token: dict[str, str]) -> None:
    """Login state is per process: a closed key logs out, so the next PIN is checked again."""
    open_signing_key(_uri("release")).close()
    with pytest.raises(InputError, match="wrong PIN"):
        open_signing_key(_uri("release"), environ={**os.environ, "KEEPSTACK_PKCS11_PIN": "bad"})
    with pytest.raises(PlatformError, match="cannot load PKCS#11 module"):
        open_signing_key(
            _uri("release"), environ={**os.environ, "KEEPSTACK_PKCS11_MODULE": "/none.so"}
        )


def test_tuf_ceremonies_sign_metadata_in_the_token(
    token: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Root keys and release key in one token: init, delegate, publish, verify from root v1."""
    directory = tmp_path / "reference-measurements"
    (directory / "0.3.0").mkdir(parents=True)
    release = directory / "0.3.0"
    base = ["--repository", str(directory)]
    assert (
        main(
            [
                "tuf",
                "init",
                *base,
                "--root-key",
                _uri("root-1"),
                "--root-key",
                _uri("root-2"),
                "--online-key",
                _uri("release"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "tuf",
                "add-release-key",
                *base,
                "--key",
                _uri("root-1"),
                "--key",
                _uri("root-2"),
                "--release-key",
                _uri("release"),
                "--releases",
                "0.*",
            ]
        )
        == 0
    )
    statement = _statement(tmp_path / "statement.json")
    assert (
        main(
            [
                "sign",
                "--key",
                _uri("release"),
                "--statement",
                str(statement),
                "-o",
                str(release / "hello.dsse.json"),
            ]
        )
        == 0
    )
    assert (
        main(["tuf", "add-targets", *base, "0.3.0", "--role", "release", "--key", _uri("release")])
        == 0
    )
    capsys.readouterr()
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(directory))
    monkeypatch.setenv("KEEPSTACK_STATE_DIR", str(tmp_path / "client"))
    pinned = directory / "metadata" / "1.root.json"
    assert (
        main(["references", "verify", str(release / "hello.dsse.json"), "--trust", str(pinned)])
        == 0
    )
    out = capsys.readouterr().out
    assert "signing role: TUF role release" in out
    assert "✔ signature 1 (key release, ecdsa-p384): valid" in out
