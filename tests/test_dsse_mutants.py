"""DSSE envelope parsing rules that mutation testing found unpinned (tests/MUTATION.md)."""

from __future__ import annotations

import base64
import json

import pytest

from toolchain.errors import InputError
from toolchain.sign.dsse import Envelope

SIXTEEN_MIB = 16 * 1024 * 1024  # the documented limit, written out independently


def _document(payload: str = "e30", signatures: object = None) -> bytes:
    sigs = [{"keyid": "k", "sig": "AAAA"}] if signatures is None else signatures
    return json.dumps({"payload": payload, "payloadType": "t", "signatures": sigs}).encode()


def test_the_size_limit_is_16_mib_inclusive() -> None:
    at_limit = b" " * (SIXTEEN_MIB - 2) + b"[]"
    with pytest.raises(InputError, match="must be a JSON object"):  # read, then refused as JSON
        Envelope.parse(at_limit)
    with pytest.raises(InputError, match=f"{SIXTEEN_MIB + 1} bytes, over the {SIXTEEN_MIB} limit"):
        Envelope.parse(at_limit + b" ")


def test_base64_outside_the_alphabet_is_refused_not_skipped() -> None:
    for payload in ("e3$0", "e3 0", "e30*"):
        with pytest.raises(InputError, match="payload is not valid base64"):
            Envelope.parse(_document(payload))


@pytest.mark.parametrize("data", [b"a", b"ab", b"abc", b"abcd", b"\xfb\xff"])
def test_unpadded_and_url_safe_base64_decode_exactly(data: bytes) -> None:
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert Envelope.parse(_document(text)).payload == data


def test_a_bad_signature_entry_is_named_by_its_position() -> None:
    cases = {
        "envelope signature 1 must be an object with a 'sig'": [{"keyid": "k"}],
        "envelope signature 2 must be an object with a 'sig'": [{"sig": "AAAA"}, 5],
        "envelope signature 2: keyid must be a string": [{"sig": "AAAA"}, {"sig": "", "keyid": 1}],
        "envelope signature 1 is not valid base64": [{"sig": "A$"}],
    }
    for message, signatures in cases.items():
        with pytest.raises(InputError, match=message):
            Envelope.parse(_document(signatures=signatures))


def test_every_signature_is_kept_in_order() -> None:
    envelope = Envelope.parse(
        _document(signatures=[{"sig": "AAAA"}, {"keyid": "b", "sig": "AQID"}])
    )
    assert [(s.keyid, s.sig) for s in envelope.signatures] == [("", b"\0\0\0"), ("b", b"\1\2\3")]


def test_deeply_nested_json_is_unusable_input_not_a_traceback() -> None:
    """Python's JSON decoder recurses per nesting level: 100,000 brackets overflow its stack."""
    with pytest.raises(InputError, match="nested too deeply"):
        Envelope.parse(b"[" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        Envelope.parse(b'{"a":' * 100_000)
