"""Signing keys wherever they live: a private key file or a PKCS#11 token (RFC 7512 URI).

Every signing command (``keep sign``, ``nox -s release``, ``keep tuf ...``) names its key with
one string, ``open_signing_key(spec)``:

* a path: a PKCS#8 PEM private key file (``toolchain.sign.keys``: mode 0600, maybe encrypted);
* ``pkcs11:token=LABEL;object=LABEL`` (RFC 7512; ``id=%10`` may stand for or narrow ``object``,
  ``type=private`` is accepted, ``serial=`` narrows the token): a private key inside a token,
  which never leaves it. The module comes from ``$KEEPSTACK_PKCS11_MODULE`` (or the URI's
  ``?module-path=``), the user PIN from ``$KEEPSTACK_PKCS11_PIN``; a PIN in the URI
  (``pin-value``) is refused, since command lines are visible to every user of the machine.

Tokens sign with ``CKM_ECDSA`` over a SHA-384 digest computed here (SoftHSM2 and most tokens
offer no ``CKM_ECDSA_SHA384``); the token returns r‖s, which is converted to the DER signature
DSSE and TUF expect, and checked against the token's public key before it is returned. Only
ECDSA P-384 keys are accepted from a token. Errors say which token, object and check failed:
a wrong PIN, a missing object or a key that may not sign is unusable input (exit 2); a module
that cannot be loaded or a token that misbehaves is a platform problem (exit 3).

``TufSigner`` adapts any of these keys to securesystemslib's ``Signer``, so TUF metadata is
signed by the same keys, identified by the same key ID (SHA-256 of the SubjectPublicKeyInfo DER).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from toolchain.errors import InputError, PlatformError
from toolchain.sign.keys import (
    PrivateKey,
    PublicKey,
    algorithm_of,
    key_id,
    load_private_key,
    sign_bytes,
    verify_bytes,
)

PKCS11_MODULE_ENV = "KEEPSTACK_PKCS11_MODULE"
PKCS11_PIN_ENV = "KEEPSTACK_PKCS11_PIN"
URI_SCHEME = "pkcs11:"
# RFC 7512 path attributes we act on; any other attribute is refused rather than ignored.
_PATH_ATTRIBUTES = {"token", "object", "id", "type", "serial"}
_QUERY_ATTRIBUTES = {"module-path"}
# DER of the secp384r1 OID, as CKA_EC_PARAMS holds it.
_P384_PARAMS = bytes.fromhex("06052b81040022")
_P384_POINT = 97  # uncompressed point: 0x04 || X || Y, 48 bytes each


@dataclass(frozen=True)
class FileKey:
    """A private key loaded from a file (``toolchain.sign.keys``)."""

    private: PrivateKey
    description: str

    @property
    def public_key(self) -> PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.private)

    def sign(self, data: bytes) -> bytes:
        return sign_bytes(self.private, data)

    def close(self) -> None:
        """Nothing to release (a token key logs out here)."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI naming one private key in one token."""

    token: str
    object: str | None = None
    id: bytes | None = None
    serial: str | None = None
    module_path: str | None = None

    def __post_init__(self) -> None:
        if not self.token:
            raise InputError("PKCS#11 URI needs token=LABEL (the token's label)")
        if self.object is None and self.id is None:
            raise InputError("PKCS#11 URI needs object=LABEL or id=%XX (which key in the token)")

    def describe(self) -> str:
        what = f"object {self.object}" if self.object is not None else ""
        if self.id is not None:
            what = (what + " " if what else "") + f"id {self.id.hex()}"
        return f"token {self.token}, {what}"

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        if not uri.startswith(URI_SCHEME):
            raise InputError(f"{uri!r} is not a PKCS#11 URI (pkcs11:token=...;object=...)")
        path, _, query = uri[len(URI_SCHEME) :].partition("?")
        attributes = _attributes(path, ";", _PATH_ATTRIBUTES, uri)
        options = _attributes(query, "&", _QUERY_ATTRIBUTES, uri) if query else {}
        kind = attributes.pop("type", b"private")
        if kind != b"private":
            raise InputError(
                f"{uri}: type={kind.decode(errors='replace')}; a signer needs "
                "type=private (or no type)"
            )
        text = {k: v.decode("utf-8", errors="strict") for k, v in attributes.items() if k != "id"}
        module = options.get("module-path")
        return cls(
            token=text.get("token", ""),
            object=text.get("object"),
            id=attributes.get("id"),
            serial=text.get("serial"),
            module_path=module.decode() if module is not None else None,
        )


def _attributes(text: str, separator: str, known: set[str], uri: str) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for part in filter(None, text.split(separator)):
        name, equals, value = part.partition("=")
        if name in ("pin-value", "pin-source"):
            raise InputError(
                f"{uri}: a PIN does not belong in the URI (command lines are public)",
                hint=f"put the user PIN in ${PKCS11_PIN_ENV}",
            )
        if not equals or name not in known:
            raise InputError(
                f"{uri}: unsupported PKCS#11 URI attribute {name!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        if name in values:
            raise InputError(f"{uri}: attribute {name} given twice")
        try:
            values[name] = unquote_to_bytes(value)
        except ValueError as exc:  # pragma: no cover - unquote_to_bytes is lenient
            raise InputError(f"{uri}: attribute {name} is not percent-encoded text") from exc
    return values


@dataclass(frozen=True)
class TokenKey:
    """A private key inside a PKCS#11 token, used through an open, logged-in session."""

    uri: Pkcs11Uri
    public_key: PublicKey
    _sign: Callable[[bytes], bytes] = field(repr=False, compare=False)
    _close: Callable[[], None] = field(repr=False, compare=False)

    @property
    def description(self) -> str:
        return f"pkcs11 {self.uri.describe()}"

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-384 over SHA-384(data), DER-encoded; checked against the token's public key."""
        signature = self._sign(hashlib.sha384(data).digest())
        if not verify_bytes(self.public_key, signature, data):
            raise PlatformError(
                f"{self.description}: the token's signature does not verify with its own "
                "public key (a public and private object of different keys share the label?)"
            )
        return signature

    def close(self) -> None:
        """Log out of the token once no other key of this process uses the session."""
        self._close()


SigningKey = FileKey | TokenKey


def open_signing_key(
    spec: str | Path,
    *,
    passphrase: Callable[[Path], PrivateKey] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SigningKey:
    """The key ``spec`` names: a ``pkcs11:`` URI, else a private key file.

    ``passphrase`` loads a file key with the caller's passphrase options (``keep sign``'s
    ``--passphrase-env``); without it an encrypted key file is refused.
    """
    text = str(spec)
    if text.startswith(URI_SCHEME):
        return open_token_key(Pkcs11Uri.parse(text), environ=environ)
    path = Path(text)
    private = passphrase(path) if passphrase is not None else load_private_key(path)
    return FileKey(private, str(path))


def open_token_key(uri: Pkcs11Uri, *, environ: Mapping[str, str] | None = None) -> TokenKey:
    """Log in to the token ``uri`` names and find its private key (ECDSA P-384, may sign)."""
    env = os.environ if environ is None else environ
    module = uri.module_path or env.get(PKCS11_MODULE_ENV, "")
    if not module:
        raise InputError(
            f"no PKCS#11 module: set ${PKCS11_MODULE_ENV} to the token's library "
            "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
        )
    pin = env.get(PKCS11_PIN_ENV)
    if not pin:
        raise InputError(f"no PIN for token {uri.token}: set ${PKCS11_PIN_ENV} to its user PIN")
    session = _SESSIONS.open(uri, module, pin)
    try:
        private = _find_private_key(session.handle, uri)
        public = _public_key_of(session.handle, uri, private)
    except BaseException:
        session.release()
        raise

    def sign(digest: bytes) -> bytes:
        import PyKCS11

        try:
            mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
            raw = bytes(session.handle.sign(private, digest, mechanism))
        except PyKCS11.PyKCS11Error as exc:
            raise PlatformError(f"PKCS#11 {uri.describe()}: signing failed ({_ckr(exc)})") from exc
        if len(raw) != 96:
            raise PlatformError(
                f"PKCS#11 {uri.describe()}: expected a 96-byte r||s ECDSA P-384 signature, "
                f"found {len(raw)} bytes"
            )
        return encode_dss_signature(int.from_bytes(raw[:48]), int.from_bytes(raw[48:]))

    return TokenKey(uri, public, sign, session.release)


@dataclass
class _Session:
    """One logged-in session to a token, shared by every key opened on it in this process
    (PKCS#11 login state is per token and application: the two root keys of one token share it)."""

    key: tuple[str, str, str | None]
    library: Any
    handle: Any
    pin_digest: bytes
    users: int = 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            _SESSIONS.close(self)


class _Registry:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str, str | None], _Session] = {}
        self.libraries: dict[str, Any] = {}

    def _library(self, module: str) -> Any:
        import PyKCS11

        if module not in self.libraries:
            library = PyKCS11.PyKCS11Lib()
            try:
                library.load(module)
            except PyKCS11.PyKCS11Error as exc:
                raise PlatformError(f"cannot load PKCS#11 module {module}: {exc}") from exc
            self.libraries[module] = library
        return self.libraries[module]

    def open(self, uri: Pkcs11Uri, module: str, pin: str) -> _Session:
        import PyKCS11

        key = (module, uri.token, uri.serial)
        digest = hashlib.sha256(pin.encode()).digest()
        existing = self.sessions.get(key)
        if existing is not None:
            if existing.pin_digest != digest:
                raise InputError(
                    f"PKCS#11 token {uri.token} is already logged in with another PIN "
                    "in this process"
                )
            existing.users += 1
            return existing
        library = self._library(module)
        handle = _open_session(library, uri, module)
        try:
            handle.login(pin)
        except PyKCS11.PyKCS11Error as exc:
            handle.closeSession()
            reason = _ckr(exc)
            if reason in ("CKR_PIN_INCORRECT", "CKR_PIN_LEN_RANGE", "CKR_PIN_INVALID"):
                raise InputError(
                    f"PKCS#11 token {uri.token}: login refused, wrong PIN ({reason})",
                    hint=f"the user PIN comes from ${PKCS11_PIN_ENV}",
                ) from exc
            if reason == "CKR_PIN_LOCKED":
                raise InputError(
                    f"PKCS#11 token {uri.token}: the user PIN is locked ({reason})"
                ) from exc
            raise PlatformError(f"PKCS#11 token {uri.token}: login failed ({reason})") from exc
        session = _Session(key, library, handle, digest)
        self.sessions[key] = session
        return session

    def close(self, session: _Session) -> None:
        import PyKCS11

        self.sessions.pop(session.key, None)
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            session.handle.logout()
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            session.handle.closeSession()


_SESSIONS = _Registry()


def _ckr(exc: Exception) -> str:
    """The CKR_ name of a PyKCS11 error (its str() is 'CKR_X (0x...)')."""
    import PyKCS11

    value = getattr(exc, "value", None)
    name = PyKCS11.CKR.get(value) if isinstance(value, int) else None
    return str(name) if isinstance(name, str) else str(exc).strip()


def _open_session(library: Any, uri: Pkcs11Uri, module: str) -> Any:
    import PyKCS11

    labels: list[str] = []
    try:
        for slot in library.getSlotList(tokenPresent=True):
            info = library.getTokenInfo(slot)
            label = str(info.label).strip()
            serial = str(info.serialNumber).strip()
            labels.append(label)
            if label == uri.token and (uri.serial is None or serial == uri.serial):
                return library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
    except PyKCS11.PyKCS11Error as exc:
        raise PlatformError(f"PKCS#11 module {module}: cannot list tokens ({_ckr(exc)})") from exc
    raise InputError(
        f"no PKCS#11 token labelled {uri.token!r}"
        + (f" with serial {uri.serial}" if uri.serial else "")
        + f" in {module} (tokens: {', '.join(repr(x) for x in labels) or 'none'})"
    )


def _template(uri: Pkcs11Uri) -> list[tuple[int, Any]]:
    import PyKCS11

    template: list[tuple[int, Any]] = []
    if uri.object is not None:
        template.append((PyKCS11.CKA_LABEL, uri.object))
    if uri.id is not None:
        template.append((PyKCS11.CKA_ID, tuple(uri.id)))
    return template


def _find_private_key(session: Any, uri: Pkcs11Uri) -> Any:
    import PyKCS11

    template = _template(uri)
    found = session.findObjects(template)
    private = [
        o
        for o in found
        if session.getAttributeValue(o, [PyKCS11.CKA_CLASS])[0] == PyKCS11.CKO_PRIVATE_KEY
    ]
    if not private:
        if found:
            kinds = sorted(
                str(PyKCS11.CKO.get(session.getAttributeValue(o, [PyKCS11.CKA_CLASS])[0]))
                for o in found
            )
            raise InputError(
                f"PKCS#11 {uri.describe()}: not a private key (found {', '.join(kinds)}); "
                "it cannot sign"
            )
        names = sorted(
            str(session.getAttributeValue(o, [PyKCS11.CKA_LABEL])[0])
            for o in session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)])
        )
        raise InputError(
            f"PKCS#11 token {uri.token}: no private key with {uri.describe().split(', ', 1)[1]} "
            f"(its private keys: {', '.join(names) or 'none'})"
        )
    if len(private) > 1:
        raise InputError(f"PKCS#11 {uri.describe()}: {len(private)} private keys match; add id=")
    key = private[0]
    may_sign, key_type = session.getAttributeValue(key, [PyKCS11.CKA_SIGN, PyKCS11.CKA_KEY_TYPE])
    if key_type != PyKCS11.CKK_EC:
        raise InputError(
            f"PKCS#11 {uri.describe()}: a {PyKCS11.CKK.get(key_type, key_type)} key; "
            "only ECDSA P-384 keys sign Keepstack releases"
        )
    if not may_sign:
        raise InputError(
            f"PKCS#11 {uri.describe()}: the key may not sign (CKA_SIGN is false); "
            "it is not a signing key"
        )
    return key


def _public_key_of(session: Any, uri: Pkcs11Uri, private: Any) -> PublicKey:
    """The public half: the public key object with the private key's CKA_ID (and label)."""
    import PyKCS11

    key_identifier = session.getAttributeValue(private, [PyKCS11.CKA_ID])[0]
    template = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY), (PyKCS11.CKA_ID, key_identifier)]
    if uri.object is not None:
        template.append((PyKCS11.CKA_LABEL, uri.object))
    found = session.findObjects(template)
    if len(found) != 1:
        raise InputError(
            f"PKCS#11 {uri.describe()}: expected one public key object beside the private key, "
            f"found {len(found)}"
        )
    params, point = session.getAttributeValue(
        found[0], [PyKCS11.CKA_EC_PARAMS, PyKCS11.CKA_EC_POINT]
    )
    if bytes(params) != _P384_PARAMS:
        raise InputError(
            f"PKCS#11 {uri.describe()}: not a P-384 key (CKA_EC_PARAMS {bytes(params).hex()}); "
            "only ECDSA P-384 keys sign Keepstack releases"
        )
    raw = bytes(point)
    # CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 v2.40); some tokens give it bare.
    if len(raw) == _P384_POINT + 2 and raw[:2] == bytes([0x04, _P384_POINT]):
        raw = raw[2:]
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), raw)
    except ValueError as exc:
        raise InputError(f"PKCS#11 {uri.describe()}: unusable public key point ({exc})") from exc
    algorithm_of(public)
    return public


# --- TUF metadata: the same keys through securesystemslib's Signer interface ---------------------


def tuf_key(public: PublicKey, name: str | None = None) -> Any:
    """``public`` as a TUF/securesystemslib key whose key ID is Keepstack's (SHA-256 of the
    SubjectPublicKeyInfo DER), so one key has one ID in envelopes, metadata and checklists."""
    from securesystemslib.signer import SSlibKey

    key = SSlibKey.from_crypto(public, keyid=key_id(public))
    if name:
        key.unrecognized_fields["x-keepstack-name"] = name
    return key


def public_key_of_tuf(key: Any, where: str) -> PublicKey:
    """The cryptography public key of a TUF key, refusing one whose key ID is not its own."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from toolchain.sign.keys import public_key_from_pem

    value = key.keyval.get("public")
    if key.keytype == "ed25519" and isinstance(value, str):
        try:
            public: PublicKey = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
        except ValueError as exc:
            raise InputError(f"{where}: key {key.keyid}: not an Ed25519 key ({exc})") from exc
    elif key.keytype == "ecdsa" and isinstance(value, str):
        public = public_key_from_pem(value.encode(), f"{where}: key {key.keyid}")
    else:
        raise InputError(f"{where}: key {key.keyid}: type {key.keytype}, not ecdsa or ed25519")
    if key_id(public) != key.keyid:
        raise InputError(
            f"{where}: key ID {key.keyid} is not the SHA-256 of its public key "
            f"({key_id(public)}); one key must never stand for two"
        )
    return public


def make_tuf_signer(key: SigningKey) -> Any:
    """A securesystemslib ``Signer`` over ``key`` (file or token)."""
    from securesystemslib.signer import Signature, Signer

    class _KeepstackSigner(Signer):
        def __init__(self) -> None:
            self._key = key
            self._public = tuf_key(key.public_key)

        @property
        def public_key(self) -> Any:
            return self._public

        def sign(self, payload: bytes) -> Signature:
            return Signature(self._public.keyid, self._key.sign(payload).hex())

        @classmethod
        def from_priv_key_uri(cls, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
            raise NotImplementedError("open keys with toolchain.sign.tokens.open_signing_key")

    return _KeepstackSigner()
