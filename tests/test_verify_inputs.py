"""verify-report reads what other tools produce: bundles, snpguest directories, the extended
report's certificate table, and reports on stdin, as 0x-hex and as URL-safe base64."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from keep.cli import main
from toolchain.errors import InputError, KeepError
from toolchain.snp import certs
from toolchain.snp.bundle import (
    TABLE_GUIDS,
    CertificateBundle,
    bundle_from_table,
    load_bundle,
    parse_cert_table,
)
from toolchain.snp.report import REPORT_SIZE, load_report

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
VLEK_GUID = "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
ASK_GUID = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID = "c0b406a4-a803-4952-9743-3fb6014cd0ae"


@pytest.fixture(scope="module")
def vectors(data_dir: Path) -> Path:
    return data_dir / "vectors" / "snp-reports"


@pytest.fixture(scope="module")
def milan(vectors: Path) -> dict[str, x509.Certificate]:
    """virtee/sev's Milan sample: the VCEK and AMD's ASK and ARK (README: VALID)."""
    ask, ark = certs.load_certificates((vectors / "virtee-sev/cert_chain_milan").read_bytes())
    vcek = certs.load_certificate((vectors / "virtee-sev/vcek_milan.der").read_bytes())
    return {"vcek": vcek, "ask": ask, "ark": ark}


def _verify(vectors: Path, vcek: Path, *extra: str) -> int:
    return main(
        ["verify-report", str(vectors / "virtee-sev/report_milan.hex"), "--vcek", str(vcek), *extra]
    )


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(PEM) for c in certificates)


def cert_table(entries: list[tuple[str, bytes]], *, pad: int = 0) -> bytes:
    """SNP_GET_EXT_REPORT's table, written independently of the parser: GUID (RFC 4122 bytes),
    offset and length (u32 LE, from the table's start), an all-zero entry, then the data."""
    head = 24 * (len(entries) + 1)
    table, blobs = b"", b""
    for guid, data in entries:
        table += uuid.UUID(guid).bytes + struct.pack("<II", head + len(blobs), len(data))
        blobs += data
    return table + bytes(24) + blobs + bytes(pad)


# ---- bundles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["leaf-first", "leaf-last"])
def test_vcek_bundle_in_either_order_verifies(
    vectors: Path,
    milan: dict[str, x509.Certificate],
    tmp_path: Path,
    order: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chain = [milan["vcek"], milan["ask"], milan["ark"]]
    bundle = tmp_path / "bundle.pem"
    # as openssl pkcs12 writes it: text before each certificate
    preamble = b"Bag Attributes\n    localKeyID: 01 00 00 00 \nsubject=/CN=SEV-VCEK\n" * 3
    bundle.write_bytes(preamble + _pem(*(chain if order == "leaf-first" else chain[::-1])))
    assert _verify(vectors, bundle) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "✔ ark.trusted: ARK-Milan: AMD Milan (pinned)" in out
    assert "=> VALID" in out


def test_bundle_as_pkipath(
    vectors: Path, milan: dict[str, x509.Certificate], tmp_path: Path
) -> None:
    body = b"".join(c.public_bytes(DER) for c in (milan["ark"], milan["ask"], milan["vcek"]))
    # DER SEQUENCE with a long-form length
    (tmp_path / "chain.pkipath").write_bytes(b"\x30\x82" + len(body).to_bytes(2, "big") + body)
    bundle = load_bundle(tmp_path / "chain.pkipath")
    assert bundle.vek == milan["vcek"]
    assert bundle.intermediate == milan["ask"]
    assert bundle.ark == milan["ark"]


def _fake_root(cn: str = "ARK-Milan") -> x509.Certificate:
    """A self-signed root under AMD's name: well-formed, and never to be trusted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(
            key,
            hashes.SHA384(),
            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
        )
    )


def test_an_ark_in_a_bundle_is_compared_with_the_pins_never_trusted(
    vectors: Path,
    milan: dict[str, x509.Certificate],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_pem(milan["vcek"], milan["ask"], _fake_root()))
    assert _verify(vectors, bundle) == 1
    assert "✗ ark.trusted: expected one of the pinned roots" in capsys.readouterr().out


def test_bundle_errors_are_unusable_input(
    vectors: Path,
    milan: dict[str, x509.Certificate],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other_vcek = certs.load_certificate((vectors / "trustee/test-vcek.der").read_bytes())
    two = tmp_path / "two.pem"
    two.write_bytes(_pem(milan["vcek"], other_vcek))
    assert _verify(vectors, two) == 2
    assert "two vek certificates" in capsys.readouterr().err
    # a chain without a leaf
    chain_only = tmp_path / "chain.pem"
    chain_only.write_bytes(_pem(milan["ask"], milan["ark"]))
    assert _verify(vectors, chain_only) == 2
    assert "no VCEK or VLEK" in capsys.readouterr().err
    # --ask-chain may repeat the bundle's ASK, never contradict it
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(_pem(milan["vcek"], milan["ask"], milan["ark"]))
    assert _verify(vectors, bundle, "--ask-chain", str(chain_only)) == 0
    genoa = tmp_path / "genoa.pem"
    genoa.write_bytes((data_dir / "amd-certs/genoa_ask.pem").read_bytes())
    assert _verify(vectors, bundle, "--ask-chain", str(genoa)) == 2
    assert "two different intermediate certificates" in capsys.readouterr().err


# ---- snpguest's certificate directory ----------------------------------------------------------


def test_snpguest_directory_verifies(
    vectors: Path,
    milan: dict[str, x509.Certificate],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    (certs_dir / "vcek.der").write_bytes(milan["vcek"].public_bytes(DER))
    (certs_dir / "ask.pem").write_bytes(_pem(milan["ask"]))
    (certs_dir / "ark.pem").write_bytes(_pem(milan["ark"]))
    assert _verify(vectors, certs_dir) == 0, capsys.readouterr()
    # a directory with only the VCEK uses AMD's packaged ASK
    (certs_dir / "ask.pem").unlink()
    (certs_dir / "ark.pem").unlink()
    assert _verify(vectors, certs_dir) == 0


def test_snpguest_directory_with_a_vlek(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asvk, ark = certs.load_certificates((vectors / "go-sev-guest/milanvlek.testcer").read_bytes())
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    (certs_dir / "vlek.der").write_bytes((vectors / "trustee/test-vlek.der").read_bytes())
    (certs_dir / "asvk.pem").write_bytes(_pem(asvk))
    (certs_dir / "ark.pem").write_bytes(_pem(ark))
    report = str(vectors / "trustee/test-vlek-report.bin")
    argv = ["verify-report", report, "--vcek", str(certs_dir), "--vmpl", "1"]
    assert main([*argv, "--at", "2025-06-01T00:00:00Z"]) == 0, capsys.readouterr()
    assert "✔ vlek.signed-by-asvk" in capsys.readouterr().out


def test_snpguest_directory_errors(
    vectors: Path, milan: dict[str, x509.Certificate], tmp_path: Path
) -> None:
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    with pytest.raises(InputError, match=r"holds no vcek.pem"):
        load_bundle(certs_dir)
    (certs_dir / "vcek.pem").write_bytes(_pem(milan["ask"]))  # wrong file content
    with pytest.raises(InputError, match=r"vcek.pem .* holds 'SEV-Milan'"):
        load_bundle(certs_dir)
    (certs_dir / "vcek.pem").write_bytes(_pem(milan["vcek"]))
    (certs_dir / "vcek.der").write_bytes(milan["vcek"].public_bytes(DER))
    with pytest.raises(InputError, match=r"both vcek.pem and vcek.der"):
        load_bundle(certs_dir)
    (certs_dir / "vcek.der").unlink()
    (certs_dir / "ark.pem").write_bytes(_pem(milan["ask"]))  # an ASK named ark
    with pytest.raises(InputError, match=r"ark.pem"):
        load_bundle(certs_dir)


# ---- the extended report's certificate table --------------------------------------------------


def test_table_guids_are_the_ghcb_ones_on_the_wire() -> None:
    wire = {role: guid.bytes.hex() for guid, role in TABLE_GUIDS.items()}
    assert wire == {
        "vcek": "63da758de6644564adc5f4b93be8accd",
        "vlek": "a8074bc2a25a483eaae639c045a0b8a1",
        "ask": "4ab7b379bbac4fe4a02f05aef327c782",
        "ark": "c0b406a4a803495297433fb6014cd0ae",
    }


def test_certificate_table_verifies(
    vectors: Path,
    milan: dict[str, x509.Certificate],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    der = {role: cert.public_bytes(DER) for role, cert in milan.items()}
    unknown = "11111111-2222-3333-4444-555555555555"
    table = cert_table(
        [
            (ARK_GUID, der["ark"]),
            (unknown, b"opaque"),
            (VCEK_GUID, der["vcek"]),
            (ASK_GUID, der["ask"]),
        ],
        pad=4096,  # the kernel hands over a zero-padded page-sized buffer
    )
    path = tmp_path / "certs.bin"
    path.write_bytes(table)
    bundle = load_bundle(path)
    assert (bundle.vek, bundle.intermediate, bundle.ark) == (
        milan["vcek"],
        milan["ask"],
        milan["ark"],
    )
    assert "1 unknown entry ignored" in bundle.source
    assert _verify(vectors, path) == 0, capsys.readouterr()


def test_certificate_table_damage_is_unusable_input(milan: dict[str, x509.Certificate]) -> None:
    vcek, ask = milan["vcek"].public_bytes(DER), milan["ask"].public_bytes(DER)
    good = cert_table([(VCEK_GUID, vcek), (ASK_GUID, ask)])
    assert set(parse_cert_table(good)[0]) == {"vcek", "ask"}
    with pytest.raises(InputError, match="no all-zero terminating entry"):
        parse_cert_table(good[:24] + good[48 + 24 :])  # table entries without the terminator
    past_end = bytearray(good)
    struct.pack_into("<I", past_end, 24 + 20, len(ask) + 1)  # the ASK one byte past the end
    with pytest.raises(InputError, match="outside the data area"):
        parse_cert_table(bytes(past_end))
    into_table = bytearray(good)
    struct.pack_into("<I", into_table, 16, 8)  # data overlapping the table itself
    with pytest.raises(InputError, match="outside the data area"):
        parse_cert_table(bytes(into_table))
    with pytest.raises(InputError, match=r"VCEK .* twice"):
        parse_cert_table(cert_table([(VCEK_GUID, vcek), (VCEK_GUID, vcek)]))
    bad_end = bytearray(good)
    struct.pack_into("<I", bad_end, 48 + 16, 5)
    with pytest.raises(InputError, match="zero GUID with offset 5"):
        parse_cert_table(bytes(bad_end))
    with pytest.raises(InputError, match="ASK entry holds 'SEV-VCEK'"):
        bundle_from_table(cert_table([(ASK_GUID, vcek)]), "t")
    with pytest.raises(InputError, match="VLEK entry holds 'SEV-VCEK'"):
        bundle_from_table(cert_table([(VLEK_GUID, vcek)]), "t")
    with pytest.raises(InputError, match="holds no VCEK"):
        bundle_from_table(cert_table([("11111111-2222-3333-4444-555555555555", vcek)]), "t")


def test_bundle_roles_validate_themselves(milan: dict[str, x509.Certificate]) -> None:
    with pytest.raises(InputError, match="not a vek"):
        CertificateBundle(vek=milan["ask"], source="x")
    with pytest.raises(InputError, match="not self-signed"):
        CertificateBundle(ark=milan["ask"], source="x")


# ---- report forms -------------------------------------------------------------------------------


def test_report_forms(vectors: Path) -> None:
    raw = (vectors / "trustee/test-report.bin").read_bytes()
    forms = {
        b"0x" + raw.hex().encode(): "0x-hex",
        b"0X" + raw.hex().upper().encode() + b"\n": "0x-hex",
        base64.urlsafe_b64encode(raw).rstrip(b"="): "URL-safe base64",
        base64.b64encode(raw).rstrip(b"="): "base64",
    }
    # URL-safe base64 of this report really uses the URL-safe letters
    assert set(b"-_") & set(base64.urlsafe_b64encode(raw))
    for text, how in forms.items():
        report, found = load_report(text)
        assert (report.to_bytes(), found) == (raw, how)
    msg = (vectors / "lit-sev-snp-utils/snp_report_msg_resp.bin").read_bytes()
    report, how = load_report(base64.urlsafe_b64encode(msg))
    assert report.to_bytes() == msg[0x20 : 0x20 + REPORT_SIZE]
    assert how == "MSG_REPORT_RSP at 0x20, URL-safe base64"
    # one alphabet per text: '+' and '_' together is not base64
    mixed = bytearray(base64.b64encode(raw))
    plus = mixed.index(b"+") if b"+" in mixed else 0
    mixed[plus] = ord("+")
    mixed[plus + 1] = ord("_")
    with pytest.raises(InputError, match="not an SEV-SNP attestation report"):
        load_report(bytes(mixed))
    with pytest.raises(InputError):
        load_report(b"0x" + base64.b64encode(raw))


def test_report_from_stdin(
    vectors: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (vectors / "virtee-sev/report_milan.hex").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"0x" + text.strip())))
    vcek = str(vectors / "virtee-sev/vcek_milan.der")
    assert main(["verify-report", "-", "--vcek", vcek]) == 0
    assert ": - (standard input, 0x-hex)" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"garbage")))
    assert main(["verify-report", "-", "--vcek", vcek]) == 2
    assert "not an SEV-SNP attestation report" in capsys.readouterr().err


# ---- fuzzing: damaged tables and text never escape as anything but KeepError ------------------


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_damaged_table(milan: dict[str, x509.Certificate], data: st.DataObject) -> None:
    der = {role: cert.public_bytes(DER) for role, cert in milan.items()}
    table = bytearray(
        cert_table([(VCEK_GUID, der["vcek"]), (ASK_GUID, der["ask"]), (ARK_GUID, der["ark"])])
    )
    for _ in range(data.draw(st.integers(1, 4))):
        # mostly the table's entries, where offsets and lengths live
        index = data.draw(
            st.integers(0, min(len(table) - 1, data.draw(st.sampled_from([95, 4000]))))
        )
        table[index] = data.draw(st.integers(0, 255))
    try:
        bundle = bundle_from_table(bytes(table), "fuzzed")
    except KeepError:
        return
    assert bundle.vek is None or certs.vek_kind(bundle.vek) == "VCEK"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF-_xX=+/ \n", max_size=2500))
def test_fuzz_report_text_forms(text: str) -> None:
    with contextlib.suppress(KeepError):
        load_report(text.encode())
