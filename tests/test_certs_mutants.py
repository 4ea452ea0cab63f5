"""Tests that kill the mutants of ``toolchain.snp.certs`` its suite let survive
(tests/MUTATION.md): the strict DER reader's edges (the shortest element, the first long-form
length), the quiet loading of AMD's real VCEKs (their serials are "negative" for RFC 5280) in
every encoding, the packaged-certificate lookup, a signature that is not RSA-PSS (a certificate or
CRL naming the real ARK, ECDSA-signed by a stranger) and a VCEK without its microcode level."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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


def _ecdsa_signed_under(
    issuer: x509.Certificate,
) -> tuple[x509.Certificate, x509.CertificateRevocationList]:
    """A certificate and a CRL that name ``issuer`` but are ECDSA-signed by a stranger's key."""
    key = ec.generate_private_key(ec.SECP384R1())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-Milan")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA384())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(start)
        .next_update(start + timedelta(days=30))
        .sign(key, hashes.SHA384())
    )
    return cert, crl


def test_a_signature_that_is_not_rsa_pss_never_passes() -> None:
    ark = certs.amd_certificate(Product.MILAN, "ark")
    ask = certs.amd_certificate(Product.MILAN, "ask")
    assert certs.signed_by(ask, ark) == (True, "RSA-PSS SHA-384 salt 48")  # the real pair
    forged, crl = _ecdsa_signed_under(ark)
    ok, why = certs.signed_by(forged, ark)
    assert not ok
    assert why == "signature algorithm 1.2.840.10045.4.3.3, not RSA-PSS"
    ok, why = certs.crl_signed_by(crl, ark)
    assert not ok
    assert why == "signature algorithm 1.2.840.10045.4.3.3, not RSA-PSS"


def test_a_milan_vcek_without_its_microcode_level_is_refused() -> None:
    # The microcode SPL is arc 8 on every product (AMD's VCEK specification): a certificate
    # without it must not be read as microcode 0.
    assert certs.TCB_ARCS == {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 8, "fmc": 9}
    vcek = certs.load_certificate((VECTORS / "virtee-sev/vcek_milan.der").read_bytes())
    values = {
        ext.oid.dotted_string: ext.value.value
        for ext in vcek.extensions
        if ext.oid.dotted_string.startswith(f"{certs.AMD_OID}.")
    }
    assert certs.parse_vek_extension_values(values).tcb(turin=False).microcode == 115
    del values[f"{certs.AMD_OID}.3.8"]
    with pytest.raises(InputError, match="lacks TCB extension\\(s\\): microcode"):
        certs.parse_vek_extension_values(values).tcb(turin=False)
