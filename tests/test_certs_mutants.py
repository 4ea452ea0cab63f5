"""Tests that kill the mutants of ``toolchain.snp.certs`` its suite let survive
(tests/MUTATION.md): the strict DER reader's edges (the shortest element, the first long-form
length), the quiet loading of AMD's real VCEKs (their serials are "negative" for RFC 5280) in
every encoding, and the packaged-certificate lookup."""

from __future__ import annotations

import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from testdata import DATA

from toolchain.errors import InputError
from toolchain.snp import certs
from toolchain.snp.tcb import Product

VECTORS = DATA / "vectors/snp-reports"


def test_the_shortest_der_elements_parse() -> None:
    assert certs.parse_der_ia5(b"\x16\x00") == ""
    assert certs.parse_der_integer(b"\x02\x01\x00") == 0
    for truncated in (b"", b"\x16"):
        with pytest.raises(InputError, match="truncated DER element"):
            certs.parse_der_ia5(truncated)


def test_long_form_lengths_start_at_128() -> None:
    text = "a" * 0x80
    assert certs.der_ia5(text) == b"\x16\x81\x80" + text.encode()
    assert certs.parse_der_ia5(b"\x16\x81\x80" + text.encode()) == text
    assert certs.parse_der_ia5(certs.der_ia5("b" * 0x7F)) == "b" * 0x7F
    with pytest.raises(InputError, match="non-minimal DER length"):
        certs.parse_der_ia5(b"\x16\x81\x7f" + b"b" * 0x7F)


@pytest.mark.parametrize(
    "name",
    ["enarx-steward/vcek.der", "virtee-sev/vcek_turin.der", "microsoft-tee-av/genoa_vcek.pem"],
)
def test_real_vceks_load_without_a_warning_in_every_encoding(name: str) -> None:
    data = (VECTORS / name).read_bytes()
    cert = certs.load_certificate(data)
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    pkipath = b"\x30" + certs._der_length(len(der)) + der
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cryptography's "negative serial" warning would raise
        for encoded in (der, pem, pkipath, pem + pem):
            loaded = certs.load_certificates(encoded)
            assert [certs.der_sha256(c) for c in loaded] == [certs.der_sha256(cert)] * len(loaded)


def test_an_unknown_packaged_certificate_role_is_input_error() -> None:
    assert certs.common_name(certs.amd_certificate(Product.MILAN, "ark").subject) == "ARK-Milan"
    with pytest.raises(InputError, match="no AMD certificate 'vcek'"):
        certs.amd_certificate(Product.MILAN, "vcek")
