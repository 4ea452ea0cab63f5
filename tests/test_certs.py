"""AMD certificates: pins, chain links, VCEK/VLEK extensions (both hwID encodings), CRLs."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from toolchain.errors import InputError, KeepError
from toolchain.snp import certs
from toolchain.snp.tcb import Product, TcbVersion


@pytest.fixture(scope="module")
def vectors(data_dir: Path) -> Path:
    return data_dir / "vectors" / "snp-reports"


def _cert(path: Path) -> x509.Certificate:
    return certs.load_certificate(path.read_bytes())


@pytest.mark.parametrize("product", list(Product))
@pytest.mark.parametrize("role", ["ark", "ask", "asvk"])
def test_packaged_certificates_match_pins_and_amd_copies(
    data_dir: Path, product: Product, role: str
) -> None:
    packaged = certs.amd_certificate(product, role)
    published = _cert(data_dir / "amd-certs" / f"{product.value.lower()}_{role}.pem")
    assert packaged == published
    pins = (data_dir / "amd-certs" / "PINS.md").read_text()
    assert certs.der_sha256(packaged) in pins
    ark = certs.amd_certificate(product, "ark")
    ok, why = certs.signed_by(packaged, ark)
    assert ok, why


def test_wrong_issuer_and_wrong_salt_are_refused() -> None:
    milan_ask = certs.amd_certificate(Product.MILAN, "ask")
    genoa_ark = certs.amd_certificate(Product.GENOA, "ark")
    ok, why = certs.signed_by(milan_ask, genoa_ark)
    assert not ok
    assert "issuer" in why


def test_virtee_turin_vcek_chains_to_turin_ask(vectors: Path) -> None:
    vcek = _cert(vectors / "virtee-sev/vcek_turin.der")
    assert certs.signed_by(vcek, certs.amd_certificate(Product.TURIN, "ask"))[0]
    ext = certs.parse_vcek_extensions(vcek)
    assert ext.struct_version == 1
    assert ext.product_name == "Turin"
    assert ext.hwid is not None
    assert len(ext.hwid) == 8
    assert ext.tcb(turin=True) == TcbVersion(bootloader=0, tee=0, snp=0, microcode=9, fmc=0)
    assert certs.product_from_issuer(vcek) is Product.TURIN


@pytest.mark.parametrize(
    ("name", "product_name", "tcb"),
    [
        ("virtee-sev/vcek_milan.der", "Milan-B0", (3, 0, 8, 115)),
        ("trustee/test-vcek.der", "Milan-B0", (3, 0, 8, 115)),
        ("go-sev-guest/vcek.testcer", "Milan-B0", (2, 0, 5, 68)),
        ("enarx-steward/vcek.der", "Milan-B0", (2, 0, 6, 93)),
        ("microsoft-tee-av/genoa_vcek.pem", "Genoa", (10, 0, 23, 84)),
        ("trustee/test-vlek.der", "Milan", (4, 0, 24, 217)),
    ],
)
def test_real_vek_extensions(
    vectors: Path, name: str, product_name: str, tcb: tuple[int, int, int, int]
) -> None:
    ext = certs.parse_vcek_extensions(_cert(vectors / name))
    assert ext.product_name == product_name
    assert ext.struct_version == 0
    bootloader, tee, snp, microcode = tcb
    assert ext.tcb(turin=False) == TcbVersion(
        bootloader=bootloader, tee=tee, snp=snp, microcode=microcode
    )


def test_vlek_has_csp_id_and_no_hwid(vectors: Path) -> None:
    vlek = _cert(vectors / "trustee/test-vlek.der")
    ext = certs.parse_vcek_extensions(vlek)
    assert ext.hwid is None
    assert ext.csp_id == "CN=cc-us-east-2.amazonaws.com"
    assert certs.vek_kind(vlek) == "VLEK"
    assert certs.signed_by(vlek, certs.amd_certificate(Product.MILAN, "asvk"))[0]


def test_both_hwid_encodings_decode_to_the_same_bytes(vectors: Path) -> None:
    legacy = certs.parse_vcek_extensions(_cert(vectors / "trustee/test-vcek-invalid-legacy.der"))
    new = certs.parse_vcek_extensions(_cert(vectors / "trustee/test-vcek-invalid-new.der"))
    assert legacy.hwid == new.hwid == bytes(range(64))
    assert certs.decode_hwid(b"\x04\x08" + bytes(8)) == bytes(8)
    with pytest.raises(InputError):
        certs.decode_hwid(bytes(63))


@pytest.mark.parametrize(
    ("name", "product"),
    [
        ("virtee-sev/vcek_milan.der", "Milan-B0"),
        ("microsoft-tee-av/genoa_vcek.pem", "Genoa"),
        ("microsoft-tee-av/turin_vcek.pem", "Turin"),
        ("virtee-sev/vcek_turin.der", "Turin"),
    ],
)
def test_encoder_reproduces_amds_extensions_exactly(vectors: Path, name: str, product: str) -> None:
    real = _cert(vectors / name)
    ext = certs.parse_vcek_extensions(real)
    turin = Product.from_name(product).turin_layout
    assert ext.hwid is not None
    encoded = certs.vcek_extensions(ext.tcb(turin=turin), ext.hwid, product)
    real_amd = [
        (e.oid.dotted_string, e.value.value)
        for e in real.extensions
        if e.oid.dotted_string.startswith("1.3.6.1.4.1.3704.")
        and isinstance(e.value, x509.UnrecognizedExtension)
    ]
    assert [(e.oid.dotted_string, e.value.value) for e in encoded] == real_amd


def _self_signed(extensions: list[x509.Extension[x509.UnrecognizedExtension]]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SEV-VCEK")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    for ext in extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(key, hashes.SHA384())


@pytest.mark.parametrize(
    ("tcb", "chip_id", "product", "hwid_len"),
    [
        (
            TcbVersion(bootloader=3, tee=1, snp=8, microcode=115, reserved=7 << 24),
            bytes(64),
            "Milan",
            64,
        ),
        (
            TcbVersion(bootloader=1, tee=1, snp=4, microcode=81, fmc=2),
            b"\x11" * 8 + bytes(56),
            "Turin",
            8,
        ),
        (TcbVersion(bootloader=9, tee=0, snp=23, microcode=84), b"\xab" * 64, Product.GENOA, 64),
    ],
)
def test_encoded_extensions_parse_back(
    tcb: TcbVersion, chip_id: bytes, product: str | Product, hwid_len: int
) -> None:
    cert = _self_signed(certs.vcek_extensions(tcb, chip_id, product))
    ext = certs.parse_vcek_extensions(cert)
    assert ext.tcb(turin=tcb.turin_layout) == tcb
    assert ext.hwid == chip_id[:hwid_len]
    assert ext.struct_version == (1 if tcb.turin_layout else 0)


def test_encoder_refuses_layout_mismatch() -> None:
    with pytest.raises(InputError):
        certs.vcek_extensions(TcbVersion(), bytes(8), "Turin")


def test_pkipath_and_pem_bundles(vectors: Path) -> None:
    path = certs.load_certificates((vectors / "enarx-steward/genoa.pkipath").read_bytes())
    assert [certs.common_name(c.subject) for c in path] == ["ARK-Genoa", "SEV-Genoa"]
    assert path[1].serial_number == 0x20001
    bundle = certs.load_certificates((vectors / "virtee-sev/cert_chain_turin").read_bytes())
    assert [certs.common_name(c.subject) for c in bundle] == ["SEV-Turin", "ARK-Turin"]
    with pytest.raises(InputError):
        certs.load_certificates(b"not a certificate")
    with pytest.raises(InputError):
        certs.load_certificate((vectors / "virtee-sev/cert_chain_turin").read_bytes())


def test_real_crls(vectors: Path) -> None:
    milan = certs.read_crl((vectors / "enarx-steward/milan_vcek_crl_2022-05-09.der").read_bytes())
    genoa = certs.read_crl((vectors / "enarx-steward/genoa_vcek_crl_2022-10-31.der").read_bytes())
    assert certs.crl_signed_by(milan, certs.amd_certificate(Product.MILAN, "ark"))[0]
    assert certs.crl_signed_by(genoa, certs.amd_certificate(Product.GENOA, "ark"))[0]
    assert not certs.crl_signed_by(genoa, certs.amd_certificate(Product.MILAN, "ark"))[0]
    revoked_ask = _cert(vectors / "enarx-steward/genoa_ask_REVOKED_serial_0x20001.pem")
    assert certs.crl_revocation(genoa, revoked_ask) is not None
    assert certs.crl_revocation(genoa, certs.amd_certificate(Product.GENOA, "ask")) is None
    assert len(list(milan)) == 0
    with pytest.raises(InputError):
        certs.read_crl(b"\x30\x03\x02\x01\x00")


def test_bad_versions_are_unusable_input(vectors: Path) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for these: found by atheris."""
    crl = bytearray((vectors / "enarx-steward/genoa_vcek_crl_2022-10-31.der").read_bytes())
    version_at = crl.index(bytes.fromhex("020101"))  # TBSCertList version v2 (1)
    crl[version_at + 2] = 4
    with pytest.raises(InputError):
        certs.read_crl(bytes(crl))
    cert = bytearray((vectors / "trustee/test-vcek.der").read_bytes())
    version_at = cert.index(bytes.fromhex("a003020102"))  # [0] EXPLICIT version v3 (2)
    cert[version_at + 4] = 7
    with pytest.raises(InputError):
        certs.load_certificate(bytes(cert))


def test_der_integer_rules() -> None:
    assert certs.parse_der_integer(certs.der_integer(0xA9)) == 0xA9
    assert certs.der_integer(0xA9) == bytes.fromhex("020200a9")
    for bad in ("0200", "020100ff", "0201ff", "02020001", "020101ff", "0401ff"):
        with pytest.raises(InputError):
            certs.parse_der_integer(bytes.fromhex(bad))


# ---- fuzzing: nothing but KeepError escapes ---------------------------------------------------

_AMD_OIDS = [f"1.3.6.1.4.1.3704.1.{x}" for x in ("1", "2", "4", "5")] + [
    f"1.3.6.1.4.1.3704.1.3.{x}" for x in range(1, 10)
]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_AMD_OIDS), st.binary(max_size=80)), st.booleans())
def test_fuzz_extension_values(values: dict[str, bytes], turin: bool) -> None:
    try:
        ext = certs.parse_vek_extension_values(values)
        ext.tcb(turin=turin)
    except KeepError:
        pass


@pytest.fixture(scope="module")
def crl_bytes(data_dir: Path) -> bytes:
    path = data_dir / "vectors/snp-reports/enarx-steward/genoa_vcek_crl_2022-10-31.der"
    return path.read_bytes()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_crl_reader(crl_bytes: bytes, data: st.DataObject) -> None:
    blob = bytearray(crl_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(blob) - 1))
        blob[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    ark = certs.amd_certificate(Product.GENOA, "ark")
    try:
        crl = certs.read_crl(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))
        certs.crl_signed_by(crl, ark)
        certs.crl_revocation(crl, ark)
    except KeepError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_crl_reader_random(blob: bytes) -> None:
    with contextlib.suppress(KeepError):
        certs.read_crl(blob)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_certificate_loading_and_extensions(vectors: Path, data: st.DataObject) -> None:
    name = data.draw(
        st.sampled_from(["trustee/test-vcek-invalid-new.der", "virtee-sev/vcek_turin.der"])
    )
    blob = bytearray((vectors / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        cert = certs.load_certificate(bytes(blob))
        certs.parse_vcek_extensions(cert).tcb(turin=data.draw(st.booleans()))
    except KeepError:
        pass
