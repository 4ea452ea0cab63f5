"""The certificates for one report as other tools hand them over, sorted into their roles.

``load_bundle(path)`` reads any of:

* one certificate (DER or PEM): the VCEK or VLEK;
* a bundle (several PEM certificates, or a PkiPath): VCEK + ASK + ARK as Azure's and many KDS
  clients return them, leaf first or last;
* a directory in snpguest's layout: ``vcek.pem|der`` or ``vlek.pem|der``, and optionally
  ``ask.pem|der`` (``asvk.pem|der`` for a VLEK) and ``ark.pem|der``;
* the certificate table SNP_GET_EXT_REPORT returns (GHCB specification): 24-byte entries of
  GUID (16 bytes, RFC 4122 order) + offset (u32 LE) + length (u32 LE), offsets from the start of
  the table, ended by an all-zero entry.

A role comes from the certificate itself, never from its position or file name (those are only
checked against it): the VCEK/VLEK by its subject CN (SEV-VCEK, SEV-VLEK), the root because it is
self-signed, the intermediate (ASK or ASVK) is the rest. Nothing here is trusted: the verifier
compares the ARK with the pinned roots (``Verifier.verify(ark=...)``), and the intermediate and the
leaf must chain to it.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from toolchain.errors import InputError
from toolchain.snp.certs import common_name, load_certificate, load_certificates, vek_kind

# GUIDs of the extended report's certificate table (GHCB specification; as Linux's sev-guest
# users, virtee/sev and AMD's sev-guest tool spell them).
TABLE_GUIDS: dict[uuid.UUID, str] = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
TABLE_ENTRY = 24
_TABLE_LIMIT = 1 << 20  # far above three certificates (the kernel's buffer is a few pages)
_ROLE_FILES = ("vcek", "vlek", "ask", "asvk", "ark")


def _role(cert: x509.Certificate) -> str:
    """``vek``, ``ark`` (self-signed) or ``intermediate``, from the certificate itself."""
    if vek_kind(cert) is not None:
        return "vek"
    if cert.subject == cert.issuer:
        return "ark"
    return "intermediate"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class CertificateBundle:
    """A VCEK/VLEK, its intermediate (ASK/ASVK) and root (ARK), each possibly absent."""

    vek: x509.Certificate | None = None
    intermediate: x509.Certificate | None = None
    ark: x509.Certificate | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for role, cert in (("vek", self.vek), ("intermediate", self.intermediate)):
            if cert is not None and _role(cert) != role:
                raise InputError(
                    f"{common_name(cert.subject)!r} is not a {role} certificate ({self.source})"
                )
        if self.ark is not None and _role(self.ark) != "ark":
            raise InputError(
                f"the root {common_name(self.ark.subject)!r} is not self-signed ({self.source})"
            )

    @classmethod
    def from_certificates(
        cls, certificates: list[x509.Certificate], source: str
    ) -> CertificateBundle:
        """Sort certificates in any order into their roles; two of one role is unusable."""
        roles: dict[str, x509.Certificate] = {}
        for cert in certificates:
            role = _role(cert)
            if role in roles and _der(roles[role]) != _der(cert):
                names = f"{common_name(roles[role].subject)!r} and {common_name(cert.subject)!r}"
                raise InputError(f"{source} holds two {role} certificates: {names}")
            roles[role] = cert
        return cls(roles.get("vek"), roles.get("intermediate"), roles.get("ark"), source)

    def merged(self, other: CertificateBundle) -> CertificateBundle:
        """Both bundles' certificates; the same role from both must be the same certificate."""
        values = {}
        for role in ("vek", "intermediate", "ark"):
            mine, theirs = getattr(self, role), getattr(other, role)
            if mine is not None and theirs is not None and _der(mine) != _der(theirs):
                raise InputError(
                    f"two different {role} certificates: {common_name(mine.subject)!r} from "
                    f"{self.source} and {common_name(theirs.subject)!r} from {other.source}"
                )
            values[role] = mine if mine is not None else theirs
        return CertificateBundle(**values, source=f"{self.source} + {other.source}")

    def describe(self) -> str:
        names = [
            f"{role} {common_name(cert.subject)}"
            for role, cert in (("leaf", self.vek), ("intermediate", self.intermediate))
            if cert is not None
        ]
        if self.ark is not None:
            names.append(f"root {common_name(self.ark.subject)}")
        return f"{self.source}: {', '.join(names) or 'no certificates'}"


# ---- the extended report's certificate table ----------------------------------------------------


def looks_like_table(data: bytes) -> bool:
    """Whether ``data`` starts like a certificate table (not PEM, not a DER SEQUENCE)."""
    return (
        len(data) >= TABLE_ENTRY
        and b"-----BEGIN CERTIFICATE-----" not in data  # PEM, perhaps after a preamble
        and (data[0] != 0x30 or uuid.UUID(bytes=data[:16]) in TABLE_GUIDS)
    )


def parse_cert_table(data: bytes) -> tuple[dict[str, bytes], list[str]]:
    """The table's entries as {role: certificate bytes} for known GUIDs, and the unknown GUIDs.

    Strict: every entry's data lies inside the buffer and after the table (terminator included),
    each known GUID appears once, and the table ends with an all-zero entry.
    """
    if len(data) > _TABLE_LIMIT:
        raise InputError(f"a certificate table of {len(data)} bytes (at most {_TABLE_LIMIT})")
    entries: list[tuple[uuid.UUID, int, int]] = []
    position = 0
    while True:
        if position + TABLE_ENTRY > len(data):
            raise InputError(
                "the certificate table has no all-zero terminating entry "
                f"(after {len(entries)} entries, {len(data)} bytes)"
            )
        raw_guid = data[position : position + 16]
        offset, length = struct.unpack_from("<II", data, position + 16)
        position += TABLE_ENTRY
        if not any(raw_guid):
            if offset or length:
                raise InputError(
                    f"certificate table entry {len(entries)}: zero GUID with offset {offset}, "
                    f"length {length} (a terminator is all zero)"
                )
            break
        entries.append((uuid.UUID(bytes=raw_guid), offset, length))
    known: dict[str, bytes] = {}
    unknown: list[str] = []
    for index, (guid, offset, length) in enumerate(entries):
        if length == 0 or offset < position or offset + length > len(data):
            raise InputError(
                f"certificate table entry {index} ({guid}): offset {offset}, length {length} "
                f"outside the data area {position}..{len(data)}"
            )
        role = TABLE_GUIDS.get(guid)
        if role is None:
            unknown.append(str(guid))
        elif role in known:
            raise InputError(f"the certificate table lists {role.upper()} ({guid}) twice")
        else:
            known[role] = data[offset : offset + length]
    return known, unknown


def bundle_from_table(data: bytes, source: str) -> CertificateBundle:
    """The certificates of an extended report's table; each must be what its GUID says."""
    known, unknown = parse_cert_table(data)
    if not known:
        raise InputError(f"the certificate table {source} holds no VCEK, VLEK, ASK or ARK")
    certificates = []
    for role, der in known.items():
        cert = load_certificate(der)
        want = {"vcek": "vek", "vlek": "vek", "ask": "intermediate", "ark": "ark"}[role]
        kind = vek_kind(cert)
        if _role(cert) != want or (want == "vek" and kind != role.upper()):
            raise InputError(
                f"the certificate table's {role.upper()} entry holds {common_name(cert.subject)!r}"
            )
        certificates.append(cert)
    detail = f", {len(unknown)} unknown entr{'y' if len(unknown) == 1 else 'ies'} ignored"
    return CertificateBundle.from_certificates(
        certificates, f"certificate table {source}" + (detail if unknown else "")
    )


# ---- files and directories ----------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read certificate {path}: {exc.strerror or exc}") from exc


def bundle_from_directory(directory: Path) -> CertificateBundle:
    """snpguest's layout: ``{vcek,vlek,ask,asvk,ark}.{pem,der}``, one certificate per file."""
    found: dict[str, Path] = {}
    for role in _ROLE_FILES:
        paths = [directory / f"{role}.{ext}" for ext in ("pem", "der")]
        present = [p for p in paths if p.is_file()]
        if len(present) > 1:
            raise InputError(f"{directory} holds both {role}.pem and {role}.der: which one?")
        if present:
            found[role] = present[0]
    leaves = [role for role in ("vcek", "vlek") if role in found]
    if not leaves:
        raise InputError(
            f"{directory} holds no vcek.pem, vcek.der, vlek.pem or vlek.der",
            hint="a certificate directory uses snpguest's names: vcek|vlek, ask|asvk, ark "
            "(.pem or .der)",
        )
    if len(leaves) > 1:
        raise InputError(f"{directory} holds both a VCEK and a VLEK: pass the one file with --vcek")
    if "ask" in found and "asvk" in found:
        raise InputError(f"{directory} holds both ask and asvk: pass the chain with --ask-chain")
    certificates = []
    for role, path in found.items():
        cert = load_certificate(_read(path))
        want = {"vcek": "vek", "vlek": "vek", "ask": "intermediate", "asvk": "intermediate"}
        expected = want.get(role, "ark")
        if _role(cert) != expected or (expected == "vek" and vek_kind(cert) != role.upper()):
            raise InputError(f"{path.name} in {directory} holds {common_name(cert.subject)!r}")
        certificates.append(cert)
    return CertificateBundle.from_certificates(certificates, f"directory {directory}")


def load_bundle(path: Path) -> CertificateBundle:
    """A certificate, bundle, snpguest directory or certificate table, sorted into roles."""
    if path.is_dir():
        return bundle_from_directory(path)
    data = _read(path)
    if looks_like_table(data):
        try:
            return bundle_from_table(data, str(path))
        except InputError as exc:
            if uuid.UUID(bytes=data[:16]) in TABLE_GUIDS:
                raise  # it starts like a table: say what is wrong with it
            raise InputError(
                f"{path} is neither a certificate (PEM, DER), a PkiPath, nor a certificate "
                f"table ({exc.message})"
            ) from exc
    certificates = load_certificates(data)
    kind = "bundle" if len(certificates) > 1 else "file"
    return CertificateBundle.from_certificates(certificates, f"{kind} {path}")
