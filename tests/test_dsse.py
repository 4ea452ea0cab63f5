"""DSSE envelopes: PAE, parsing, and interoperability with securesystemslib's implementation."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib import exceptions as sslib_exceptions
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from toolchain.errors import InputError
from toolchain.sign import (
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    TrustPolicy,
    build_statement,
    generate_private_key,
    key_id,
    sign_statement,
    verify_envelope,
)
from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope, pae
from toolchain.sign.intoto import canonical_payload

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _statement() -> dict[str, object]:
    predicate = KeepPredicate(
        release="0.1.0",
        configs=[LaunchConfig("milan", 1, 0x30000, "kvm", bytes(range(48)))],
        components=[ComponentDigest("ukernel.elf", "1" * 64, "2" * 96)],
        toolchain={"ziglang": "0.15.2"},
        provenance_sha256="3" * 64,
        not_before=AT - timedelta(days=1),
        not_after=AT + timedelta(days=30),
        development=False,
    )
    return build_statement(predicate, {"keep.img": {"sha256": "4" * 64}})


def test_pae_matches_the_dsse_specification_example() -> None:
    # The worked example in DSSE protocol.md.
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    # Lengths are in bytes, not characters.
    assert pae("t\u00e9", b"\xff") == b"DSSEv1 3 t\xc3\xa9 1 \xff"


def test_envelope_round_trip_and_url_safe_base64() -> None:
    key = generate_private_key("ed25519")
    env = Envelope.parse(sign_statement(_statement(), key))
    assert env.payload_type == INTOTO_PAYLOAD_TYPE
    assert env.signatures[0].keyid == key_id(key)
    assert Envelope.parse(env.to_json()) == env
    document = json.loads(env.to_json())
    document["payload"] = base64.urlsafe_b64encode(env.payload).decode().rstrip("=")
    document["signatures"][0]["sig"] = (
        base64.urlsafe_b64encode(env.signatures[0].sig).decode().rstrip("=")
    )
    assert Envelope.parse(json.dumps(document).encode()) == env


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b'{"payload": "eyJ', "truncated"),
        (b'{"payload": "abc", "payloadType": "x", "signatures": [', "truncated"),
        (b"hello world", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b'{"a": 1,}', "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"payload": "", "payloadType": "x"}', "lacks signatures"),
        (b'{"payload": "!!", "payloadType": "x", "signatures": []}', "base64"),
        (b'{"payload": 5, "payloadType": "x", "signatures": []}', "base64"),
        (b'{"payload": "", "payloadType": 5, "signatures": []}', "payloadType"),
        (b'{"payload": "", "payloadType": "x", "signatures": {}}', "list"),
        (b'{"payload": "", "payloadType": "x", "signatures": [{"keyid": "a"}]}', "sig"),
        (b'{"payload": "", "payloadType": "x", "signatures": [{"sig": "", "keyid": 1}]}', "keyid"),
    ],
)
def test_unusable_envelopes_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(InputError) as info:
        Envelope.parse(data)
    assert message in info.value.message


def test_every_truncation_of_a_real_envelope_is_unusable_input() -> None:
    whole = sign_statement(_statement(), generate_private_key("ed25519"))
    trust = TrustPolicy.from_keys([generate_private_key().public_key()])
    for cut in range(0, len(whole) - 2, 37):
        with pytest.raises(InputError):
            verify_envelope(whole[:cut], trust, at=AT)


# --- interoperability with securesystemslib (pinned test dependency) ---------------------------

ALGORITHMS = ["ecdsa-p384", "ed25519"]


def _sslib_key(private: object, keyid: str | None = None) -> SSlibKey:
    return SSlibKey.from_crypto(private.public_key(), keyid=keyid)  # type: ignore[attr-defined]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_our_envelope_verifies_with_securesystemslib(algorithm: str) -> None:
    private = generate_private_key(algorithm)
    ours = sign_statement(_statement(), private)
    theirs = SslibEnvelope.from_dict(json.loads(ours))
    assert theirs.payload_type == INTOTO_PAYLOAD_TYPE
    accepted = theirs.verify([_sslib_key(private, key_id(private))], 1)
    assert set(accepted) == {key_id(private)}
    # And securesystemslib rejects it once the payload changes: the signature is over the PAE.
    tampered = SslibEnvelope(theirs.payload + b" ", theirs.payload_type, theirs.signatures)
    with pytest.raises(sslib_exceptions.VerificationError):
        tampered.verify([_sslib_key(private, key_id(private))], 1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("keyid_style", ["ours", "securesystemslib-default"])
def test_securesystemslib_envelope_verifies_with_ours(algorithm: str, keyid_style: str) -> None:
    private = generate_private_key(algorithm)
    # securesystemslib's own default keyid differs from ours; the keyid is only a hint.
    keyid = key_id(private) if keyid_style == "ours" else None
    signer = CryptoSigner(private, _sslib_key(private, keyid))  # type: ignore[arg-type]
    theirs = SslibEnvelope(canonical_payload(_statement()), INTOTO_PAYLOAD_TYPE, {})
    theirs.sign(signer)
    data = json.dumps(theirs.to_dict()).encode()
    checklist, references = verify_envelope(
        data, TrustPolicy.from_keys([private.public_key()]), at=AT
    )
    assert checklist.ok, checklist.render()
    assert references is not None
    assert references.signers == (key_id(private),)
    assert references.allows(bytes(range(48)), cpu_generation="milan", vcpus=1)
    # A securesystemslib envelope over a different payload type fails our check by name.
    other = SslibEnvelope(theirs.payload, "application/json", {})
    other.sign(signer)
    checklist, references = verify_envelope(
        json.dumps(other.to_dict()).encode(), TrustPolicy.from_keys([private.public_key()]), at=AT
    )
    assert references is None
    assert [c.name for c in checklist.failures] == ["payload type"]


# --- robustness -------------------------------------------------------------------------------


def test_duplicate_keys_and_nan_are_refused() -> None:
    key = generate_private_key("ed25519")
    good = sign_statement(_statement(), key)
    text = good.decode()
    doubled = text.replace('"payloadType"', '"payloadType": "text/plain", "payloadType"', 1)
    with pytest.raises(InputError, match="duplicate key 'payloadType'"):
        Envelope.parse(doubled.encode())
    with pytest.raises(InputError, match="NaN"):
        Envelope.parse(b'{"payload": NaN, "payloadType": "x", "signatures": []}')
    # A signed payload with a duplicate key is not a usable statement either.
    payload = canonical_payload(_statement()).replace(b'{"_type"', b'{"_type":1,"_type"', 1)
    envelope = Envelope(payload, INTOTO_PAYLOAD_TYPE, ()).signed_by(key)
    checklist, references = verify_envelope(
        envelope.to_json(), TrustPolicy.from_keys([key.public_key()]), at=AT
    )
    assert references is None
    assert "duplicate key '_type'" in checklist.render()


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_unusable_input_or_unverified(data: bytes) -> None:
    trust = TrustPolicy.from_keys([_FUZZ_KEY.public_key()])
    try:
        _, references = verify_envelope(data, trust, at=AT)
    except InputError:
        return
    assert references is None


_FUZZ_KEY = generate_private_key("ed25519")
_FUZZ_ENVELOPE = sign_statement(_statement(), _FUZZ_KEY)
_FUZZ_CONTENT = Envelope.parse(_FUZZ_ENVELOPE)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(_FUZZ_ENVELOPE) - 1), st.integers(1, 255))
def test_a_flipped_byte_never_verifies_different_content(position: int, flip: int) -> None:
    data = bytearray(_FUZZ_ENVELOPE)
    data[position] ^= flip
    trust = TrustPolicy.from_keys([_FUZZ_KEY.public_key()])
    try:
        checklist, _ = verify_envelope(bytes(data), trust, at=AT)
    except InputError:
        return
    if checklist.ok:
        # Only changes outside the signed content (whitespace, the keyid hint) may still verify.
        parsed = Envelope.parse(bytes(data))
        assert parsed.payload == _FUZZ_CONTENT.payload
        assert parsed.payload_type == _FUZZ_CONTENT.payload_type
