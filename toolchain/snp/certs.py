"""AMD's SEV-SNP certificates: the pinned roots, the VCEK/VLEK extensions, chain links and CRLs.

The chain is ARK (self-signed) -> ASK (VCEK issuer) or ASVK (VLEK issuer) -> VCEK or VLEK. Every
AMD link is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a salt of exactly 48 bytes. AMD's ARK, ASK
and ASVK for each generation ship inside this package (``toolchain/snp/amd/``) and are pinned here
by the SHA-256 of their DER encoding: a changed file is refused, never trusted.

The VCEK/VLEK carry the TCB they were issued for, the chip's hwID and the product name as
extensions under 1.3.6.1.4.1.3704.1; ``vcek_extensions`` encodes them and
``parse_vcek_extensions`` decodes them, so simulated certificates pass through the same code as
AMD's.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from toolchain.errors import InputError, PlatformError
from toolchain.snp.tcb import Product, TcbVersion

# ---- pins ---------------------------------------------------------------------------------------

# SHA-256 of the DER of each packaged certificate, as published by AMD's KDS.
AMD_CERT_PINS: dict[str, str] = {
    "genoa_ark": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "genoa_ask": "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    "genoa_asvk": "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    "milan_ark": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "milan_ask": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    "milan_asvk": "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    "turin_ark": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    "turin_ask": "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    "turin_asvk": "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
}

AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
#: The organization of every certificate the simulated firmware makes: the verifier refuses it
#: unless the simulated root was chosen explicitly.
SIM_ORGANIZATION = "Keepstack simulated SNP firmware (NOT AMD)"


def der_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@cache
def amd_certificate(product: Product, role: str) -> x509.Certificate:
    """AMD's packaged ``ark``, ``ask`` or ``asvk`` for a generation, checked against its pin."""
    name = f"{product.value.lower()}_{role}"
    if name not in AMD_CERT_PINS:
        raise InputError(f"no AMD certificate {role!r} (known: ark, ask, asvk)")
    try:
        pem = (resources.files("toolchain.snp") / "amd" / f"{name}.pem").read_bytes()
    except OSError as exc:
        raise PlatformError(f"the packaged AMD certificate {name}.pem is missing: {exc}") from exc
    cert = x509.load_pem_x509_certificate(pem)
    if der_sha256(cert) != AMD_CERT_PINS[name]:
        raise PlatformError(
            f"the packaged AMD certificate {name}.pem does not match its pinned SHA-256",
            hint="the installation was modified; reinstall keepstack",
        )
    return cert


# ---- loading ------------------------------------------------------------------------------------


def _quiet_load_der(data: bytes) -> x509.Certificate:
    # AMD's VCEKs carry a serial that RFC 5280 calls negative; cryptography warns but parses them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(data)


# What cryptography raises on malformed input: ValueError mostly, but also its own exception
# classes, and a KeyError for an unknown string type inside a Name it already loaded.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _touch(cert: x509.Certificate) -> x509.Certificate:
    """Read the fields the verifier uses, so that lazily parsed garbage fails at load time."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AMD's VCEK serials are "negative" for RFC 5280
            _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
            _ = (cert.signature_algorithm_oid, cert.serial_number, cert.signature)
            _ = cert.tbs_certificate_bytes
    except _PARSE_ERRORS as exc:
        raise InputError(f"malformed certificate: {exc!r}") from exc
    return cert


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or many), DER, or a PkiPath (DER SEQUENCE OF Certificate)."""
    return [_touch(cert) for cert in _load_certificates(data)]


def _load_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return list(x509.load_pem_x509_certificates(data))
        try:
            return [_quiet_load_der(data)]
        except _PARSE_ERRORS:
            pass  # not one DER certificate: perhaps a PkiPath
        tag, content = _der_tlv(data)
        if tag != 0x30:
            raise InputError("not a certificate (PEM, DER) nor a PkiPath")
        certs = []
        while content:
            tag, _ = _der_tlv(content, allow_trailing=True)
            size = _der_size(content)
            certs.append(_quiet_load_der(content[:size]))
            content = content[size:]
    except _PARSE_ERRORS as exc:
        raise InputError(f"not a certificate (PEM, DER) nor a PkiPath: {exc!r}") from exc
    if not certs:
        raise InputError("an empty certificate list")
    return certs


def load_certificate(data: bytes) -> x509.Certificate:
    certs = load_certificates(data)
    if len(certs) != 1:
        raise InputError(f"expected one certificate, found {len(certs)}")
    return certs[0]


# ---- a strict, minimal DER reader and writer (for the AMD extension values) ----------------------


def _der_size(data: bytes) -> int:
    """Total size of the TLV at the start of ``data``."""
    if len(data) < 2:
        raise InputError("truncated DER element")
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        raise InputError("bad DER length")
    length = int.from_bytes(data[2 : 2 + count], "big")
    if length < 0x80 or data[2] == 0:
        raise InputError("non-minimal DER length")
    return 2 + count + length


def _der_tlv(data: bytes, *, allow_trailing: bool = False) -> tuple[int, bytes]:
    if len(data) < 2:
        raise InputError("truncated DER element")
    size = _der_size(data)
    if size > len(data):
        raise InputError("truncated DER element")
    if size != len(data) and not allow_trailing:
        raise InputError("trailing bytes after a DER element")
    header = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
    return data[0], data[header:size]


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der_integer(value: int) -> bytes:
    if value < 0:
        raise InputError("negative integers are not used in AMD's extensions")
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(raw)) + raw


def der_ia5(text: str) -> bytes:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InputError(f"{text!r} is not IA5 (ASCII) text") from exc
    return b"\x16" + _der_length(len(raw)) + raw


def parse_der_integer(data: bytes) -> int:
    tag, content = _der_tlv(data)
    if tag != 0x02 or not content:
        raise InputError("expected a DER INTEGER")
    if content[0] & 0x80:
        raise InputError("negative INTEGER")
    if len(content) > 1 and content[0] == 0 and not content[1] & 0x80:
        raise InputError("non-minimal INTEGER")
    return int.from_bytes(content, "big")


def parse_der_ia5(data: bytes) -> str:
    tag, content = _der_tlv(data)
    if tag != 0x16:
        raise InputError("expected a DER IA5String")
    try:
        return content.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError("IA5String holds non-ASCII bytes") from exc


# ---- the VCEK/VLEK extensions -------------------------------------------------------------------

AMD_OID = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{AMD_OID}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{AMD_OID}.2")
OID_HWID = x509.ObjectIdentifier(f"{AMD_OID}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{AMD_OID}.5")
# TCB component -> last arc of 1.3.6.1.4.1.3704.1.3.x
TCB_ARCS: dict[str, int] = {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 8, "fmc": 9}


# The arc of 1.3.6.1.4.1.3704.1.3.x that holds each byte (0..7) of a TCB value, per layout
# (Turin: False/True key). The arcs not named in TCB_ARCS fill the reserved bytes.
_SPL_ARC_BY_BYTE = {False: (1, 2, 4, 5, 6, 7, 3, 8), True: (9, 1, 2, 3, 5, 6, 7, 8)}


def _tcb_oid(arc: int) -> x509.ObjectIdentifier:
    return x509.ObjectIdentifier(f"{AMD_OID}.3.{arc}")


@dataclass(frozen=True)
class VekExtensions:
    """What a VCEK or VLEK says about itself through AMD's extensions."""

    struct_version: int | None
    product_name: str | None
    spl: dict[int, int]  # arc x of 1.3.6.1.4.1.3704.1.3.x -> value
    hwid: bytes | None
    csp_id: str | None

    def tcb(self, *, turin: bool) -> TcbVersion:
        """The certificate's TCB as a TCB_VERSION in the given layout (reserved SPLs absent: 0)."""
        arcs = _SPL_ARC_BY_BYTE[turin]
        missing = [n for n, arc in TCB_ARCS.items() if arc in arcs and arc not in self.spl]
        if missing:
            raise InputError(f"the certificate lacks TCB extension(s): {', '.join(missing)}")
        value = 0
        for byte, arc in enumerate(arcs):
            level = self.spl.get(arc, 0)
            if level > 0xFF:
                raise InputError(f"TCB extension 1.3.6.1.4.1.3704.1.3.{arc} exceeds 255: {level}")
            value |= level << (8 * byte)
        return TcbVersion.from_int(value, turin=turin)


def _ext_value(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise InputError(f"extension {ext.oid.dotted_string} is not an AMD raw value")
    return value.value


def decode_hwid(raw: bytes) -> bytes:
    """hwID as the chip ID bytes: raw (64 bytes; 8 on Turin) or wrapped in a DER OCTET STRING."""
    if len(raw) in (66, 10) and raw[0] == 0x04 and raw[1] == len(raw) - 2:
        raw = raw[2:]
    if len(raw) not in (64, 8):
        raise InputError(f"hwID of {len(raw)} bytes (expected 64, or 8 on Turin)")
    return raw


def parse_vek_extension_values(values: dict[str, bytes]) -> VekExtensions:
    """Decode AMD's extensions given as {dotted OID: extnValue bytes} (others are ignored)."""
    struct_version = product_name = hwid = csp_id = None
    spl: dict[int, int] = {}
    for oid, raw in values.items():
        if oid == OID_STRUCT_VERSION.dotted_string:
            struct_version = parse_der_integer(raw)
        elif oid == OID_PRODUCT_NAME.dotted_string:
            product_name = parse_der_ia5(raw)
        elif oid == OID_HWID.dotted_string:
            hwid = decode_hwid(raw)
        elif oid == OID_CSP_ID.dotted_string:
            csp_id = parse_der_ia5(raw)
        elif oid.startswith(f"{AMD_OID}.3."):
            arc_text = oid.rsplit(".", 1)[1]
            if not arc_text.isdigit() or oid.count(".") != AMD_OID.count(".") + 2:
                continue
            spl[int(arc_text)] = parse_der_integer(raw)
    return VekExtensions(struct_version, product_name, spl, hwid, csp_id)


def parse_vcek_extensions(cert: x509.Certificate) -> VekExtensions:
    """AMD's extensions of a VCEK/VLEK; InputError when one is malformed."""
    try:
        extensions = list(cert.extensions)
    except _PARSE_ERRORS as exc:
        raise InputError(f"the certificate's extensions cannot be read: {exc}") from exc
    values = {
        ext.oid.dotted_string: _ext_value(ext)
        for ext in extensions
        if ext.oid.dotted_string.startswith(f"{AMD_OID}.")
    }
    return parse_vek_extension_values(values)


def vcek_extensions(
    tcb: TcbVersion, chip_id: bytes, product: str | Product, *, csp_id: str | None = None
) -> list[x509.Extension[x509.UnrecognizedExtension]]:
    """AMD's VCEK extensions (or VLEK's, with ``csp_id`` and ``chip_id=b""``) for a builder.

    ``product`` is the productName ("Milan-B0", "Genoa", "Turin", or a ``Product``). Turin
    certificates carry structVersion 1, the FMC level and an 8-byte hwID.
    """
    name = product.value if isinstance(product, Product) else product
    turin = Product.from_name(name).turin_layout
    if turin != tcb.turin_layout:
        raise InputError(f"TCB layout does not match product {name}")
    values: list[tuple[x509.ObjectIdentifier, bytes]] = [
        (OID_STRUCT_VERSION, der_integer(1 if turin else 0)),
        (OID_PRODUCT_NAME, der_ia5(name)),
    ]
    # One extension per byte of the TCB value, in byte order (as AMD's certificates list them).
    value = tcb.to_int()
    for arc in _SPL_ARC_BY_BYTE[turin]:
        values.append((_tcb_oid(arc), der_integer(value & 0xFF)))
        value >>= 8
    if chip_id:
        hwid = chip_id[:8] if turin and len(chip_id) == 64 and not any(chip_id[8:]) else chip_id
        values.append((OID_HWID, decode_hwid(hwid)))
    if csp_id is not None:
        values.append((OID_CSP_ID, der_ia5(csp_id)))
    return [x509.Extension(oid, False, x509.UnrecognizedExtension(oid, raw)) for oid, raw in values]


# ---- identity of a certificate ------------------------------------------------------------------


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def name_differs(found: x509.Name, expected: x509.Name) -> str:
    """ "'<found DN>' is not '<expected DN>'": whole names, since two of them may share a CN
    (a simulated 'SEV-Milan' is not AMD's 'SEV-Milan')."""
    return f"{found.rfc4514_string()!r} is not {expected.rfc4514_string()!r}"


def vek_kind(cert: x509.Certificate) -> str | None:
    """ "VCEK" or "VLEK" from the subject CN (SEV-VCEK / SEV-VLEK); None for anything else."""
    cn = common_name(cert.subject)
    return {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}.get(cn)


def product_from_issuer(cert: x509.Certificate) -> Product | None:
    """Product from an AMD issuer CN: SEV-Milan, SEV-VLEK-Genoa, ARK-Turin."""
    cn = common_name(cert.issuer)
    for prefix in ("SEV-VLEK-", "SEV-", "ARK-"):
        if cn.startswith(prefix):
            try:
                return Product.from_name(cn[len(prefix) :])
            except InputError:
                return None
    return None


# ---- signatures and validity --------------------------------------------------------------------


def _amd_pss_verdict(
    signature: bytes,
    signed: bytes,
    algorithm: x509.ObjectIdentifier,
    issuer: x509.Certificate,
    *,
    what: str,
) -> tuple[bool, str]:
    """Whether ``issuer``'s RSA key made ``signature`` over ``signed`` the way AMD signs (RSA-PSS,
    SHA-384, salt 48), and why not. Shared by certificates and CRLs."""
    if algorithm != SignatureAlgorithmOID.RSASSA_PSS:
        return False, f"signature algorithm {algorithm.dotted_string}, not RSA-PSS"
    try:
        key = issuer.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return False, f"{what} key unreadable: {exc}"
    if not isinstance(key, rsa.RSAPublicKey):
        return False, f"{what} key is not RSA"
    try:
        key.verify(signature, signed, AMD_PSS, hashes.SHA384())
    except InvalidSignature:
        return False, "RSA-PSS (SHA-384, salt 48) signature does not verify"
    return True, "RSA-PSS SHA-384 salt 48"


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bool, str]:
    """Whether ``issuer``'s RSA key signed ``cert`` with RSA-PSS/SHA-384/salt 48, and why not."""
    if cert.issuer != issuer.subject:
        return False, f"issuer {name_differs(cert.issuer, issuer.subject)}"
    return _amd_pss_verdict(
        cert.signature,
        cert.tbs_certificate_bytes,
        cert.signature_algorithm_oid,
        issuer,
        what="issuer",
    )


def validity(cert: x509.Certificate, at: datetime) -> tuple[bool, str]:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    span = f"{start:%Y-%m-%d %H:%M:%S} .. {end:%Y-%m-%d %H:%M:%S} UTC"
    return start <= at <= end, span


# ---- CRLs ---------------------------------------------------------------------------------------


def read_crl(data: bytes) -> x509.CertificateRevocationList:
    """An AMD CRL file (DER or PEM); InputError when it is not one."""
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        # Touch what the verifier will read, so malformed inner fields fail here.
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_algorithm_oid)
        _ = (crl.signature, crl.tbs_certlist_bytes)
        _ = [(entry.serial_number, entry.revocation_date_utc) for entry in crl]
    except _PARSE_ERRORS as exc:
        raise InputError(f"not a certificate revocation list: {exc!r}") from exc
    return crl


def crl_signed_by(crl: x509.CertificateRevocationList, ark: x509.Certificate) -> tuple[bool, str]:
    if crl.issuer != ark.subject:
        return False, f"issuer {name_differs(crl.issuer, ark.subject)}"
    ok, why = _amd_pss_verdict(
        crl.signature, crl.tbs_certlist_bytes, crl.signature_algorithm_oid, ark, what="ARK"
    )
    return (True, f"signed by {common_name(ark.subject)}") if ok else (False, why)


def crl_revocation(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> datetime | None:
    """When ``cert`` (same issuer) was revoked by ``crl``; None if it is not listed."""
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return None
    return entry.revocation_date_utc


def now_utc() -> datetime:
    return datetime.now(UTC)
