"""DSSE (Dead Simple Signing Envelope) v1: the JSON envelope and its pre-authentication encoding.

Signatures cover ``PAE(payloadType, payload)`` — never the raw JSON — so neither the payload nor
its type can be changed without breaking every signature. See
https://github.com/secure-systems-lab/dsse/blob/master/protocol.md and envelope.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolchain.errors import InputError
from toolchain.sign import strict_json
from toolchain.sign.keys import PrivateKey, key_id, sign_bytes

if TYPE_CHECKING:
    from toolchain.sign.tokens import SigningKey

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# An envelope is a few KiB; refuse absurd input before parsing it.
MAX_ENVELOPE_SIZE = 16 * 1024 * 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str  # an unauthenticated hint: verification identifies the key by trying it
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_json(self) -> bytes:
        document = {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    def signed_by(self, key: PrivateKey | SigningKey) -> Envelope:
        """This envelope with one more signature, by ``key`` (in memory, a file or a token)."""
        if isinstance(key, PrivateKey):
            signature = Signature(key_id(key), sign_bytes(key, self.pae()))
        else:
            signature = Signature(key.key_id, key.sign(self.pae()))
        return Envelope(self.payload, self.payload_type, (*self.signatures, signature))

    @classmethod
    def parse(cls, data: bytes) -> Envelope:
        """Parse the JSON envelope; InputError says what is wrong (truncated, not JSON, ...)."""
        if len(data) > MAX_ENVELOPE_SIZE:
            raise InputError(f"envelope is {len(data)} bytes, over the {MAX_ENVELOPE_SIZE} limit")
        if not data.strip():
            raise InputError("envelope is empty")
        try:
            document = strict_json.loads(data)
        except UnicodeDecodeError as exc:
            raise InputError(f"envelope is not JSON: not UTF-8 text ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            # Input that stops mid-string or mid-structure was cut short, not merely malformed.
            if exc.msg.startswith("Unterminated string") or exc.pos >= len(exc.doc.rstrip()):
                raise InputError(
                    "envelope is truncated: its JSON ends before it is complete "
                    f"({exc.msg}, byte {exc.pos})"
                ) from exc
            raise InputError(
                f"envelope is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        except strict_json.TooDeepError as exc:
            raise InputError(f"envelope is not usable JSON: {exc}") from exc
        except ValueError as exc:
            raise InputError(f"envelope is ambiguous JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InputError(f"envelope must be a JSON object, found {type(document).__name__}")
        return cls._from_document(document)

    @classmethod
    def _from_document(cls, document: dict[str, Any]) -> Envelope:
        missing = [k for k in ("payload", "payloadType", "signatures") if k not in document]
        if missing:
            raise InputError(f"envelope lacks {', '.join(missing)}: not a DSSE envelope")
        payload_type = document["payloadType"]
        if not isinstance(payload_type, str):
            raise InputError("envelope payloadType must be a string")
        payload = _b64decode(document["payload"], "payload")
        raw_signatures = document["signatures"]
        if not isinstance(raw_signatures, list):
            raise InputError("envelope signatures must be a list")
        signatures = []
        for index, item in enumerate(raw_signatures, 1):
            if not isinstance(item, dict) or "sig" not in item:
                raise InputError(f"envelope signature {index} must be an object with a 'sig'")
            keyid = item.get("keyid", "")
            if not isinstance(keyid, str):
                raise InputError(f"envelope signature {index}: keyid must be a string")
            signatures.append(Signature(keyid, _b64decode(item["sig"], f"signature {index}")))
        return cls(payload, payload_type, tuple(signatures))


def _b64decode(value: object, what: str) -> bytes:
    # DSSE accepts standard and URL-safe base64, with or without padding.
    if not isinstance(value, str):
        raise InputError(f"envelope {what} must be a base64 string")
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"envelope {what} is not valid base64 ({exc})") from exc


def sign_payload(payload: bytes, payload_type: str, key: PrivateKey | SigningKey) -> Envelope:
    return Envelope(payload, payload_type, ()).signed_by(key)
