"""The certificate chain: a VCEK or VLEK, its intermediate (ASK or ASVK) and a pinned root.

``chain_checks`` adds, in order: ``ark.trusted`` (the root is one of the verifier's roots, found
by identity when an ARK is passed, else by the intermediate's issuer name), the root's
self-signature and validity, the intermediate signed by the root and its validity, the leaf
signed by the intermediate and its validity. An ARK passed in is only compared with the roots,
never trusted for having been passed; the simulated root of Keepstack's firmware is trusted only
when the caller put it among the roots.

``ChainCache`` keeps every per-certificate result (facts, signatures, extensions, TCB, issuers)
keyed by the certificate's DER SHA-256, so verifying many reports from one machine costs one
ECDSA verification each. A ``Verifier`` owns one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.snp import certs
from toolchain.snp.tcb import Product, TcbVersion
from toolchain.verify.roots import TrustedRoot, TrustedRoots

_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class CertificateFacts:
    """What the verifier reads from one certificate, read once per certificate (by DER SHA-256).

    Reading a field of a ``cryptography`` certificate parses it again every time (names,
    validity, extensions), so the facts of every report's checks come from here instead.
    """

    fingerprint: bytes  # SHA-256 of the DER
    subject_cn: str
    not_before: datetime
    not_after: datetime
    span: str  # the validity period as certs.validity writes it
    kind: str | None  # "VCEK", "VLEK" or None (certs.vek_kind)
    issuer_product: Product | None  # certs.product_from_issuer
    ec_key: ec.EllipticCurvePublicKey | None  # a P-384 public key, else None

    @classmethod
    def read(cls, cert: x509.Certificate, fingerprint: bytes) -> CertificateFacts:
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            key = None
        p384 = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        return cls(
            fingerprint,
            certs.common_name(cert.subject),
            start,
            end,
            certs.validity(cert, start)[1],
            certs.vek_kind(cert),
            certs.product_from_issuer(cert),
            key if p384 else None,  # type: ignore[arg-type]
        )

    def validity(self, at: datetime) -> tuple[bool, str]:
        """``certs.validity`` from the facts."""
        return self.not_before <= at <= self.not_after, self.span


class ChainCache:
    """Every cached certificate result of the verifier, in one place (bounded; ``clear()``).

    Keyed by the certificate's DER SHA-256 (links by the pair), so equal certificates loaded
    twice share entries. An object seen before is recognised by identity first: the entry holds
    the object, so its ``id`` cannot be reused while the entry lives.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[x509.Certificate, CertificateFacts]] = {}
        self._facts: dict[bytes, CertificateFacts] = {}
        self._links: dict[tuple[bytes, bytes], tuple[bool, str]] = {}
        self._extensions: dict[bytes, certs.VekExtensions] = {}
        self._tcbs: dict[tuple[bytes, bool], TcbVersion | InputError] = {}
        self._issuers: dict[tuple[bytes, tuple[str, ...]], tuple[TrustedRoot, ...]] = {}

    def clear(self) -> None:
        for cache in self._caches():
            cache.clear()

    def _caches(self) -> tuple[dict[Any, Any], ...]:
        return (self._by_id, self._facts, self._links, self._extensions, self._tcbs, self._issuers)

    def _room(self, cache: dict[Any, Any]) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()

    def facts(self, cert: x509.Certificate) -> CertificateFacts:
        entry = self._by_id.get(id(cert))
        if entry is not None and entry[0] is cert:
            return entry[1]
        fingerprint = cert.fingerprint(hashes.SHA256())
        facts = self._facts.get(fingerprint)
        if facts is None:
            self._room(self._facts)
            facts = self._facts[fingerprint] = CertificateFacts.read(cert, fingerprint)
        self._room(self._by_id)
        self._by_id[id(cert)] = (cert, facts)
        return facts

    def signed_by(self, cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bool, str]:
        key = (self.facts(cert).fingerprint, self.facts(issuer).fingerprint)
        result = self._links.get(key)
        if result is None:
            self._room(self._links)
            result = self._links[key] = certs.signed_by(cert, issuer)
        return result

    def extensions(self, cert: x509.Certificate) -> certs.VekExtensions:
        """AMD's extensions (InputError, not cached, when malformed)."""
        fingerprint = self.facts(cert).fingerprint
        ext = self._extensions.get(fingerprint)
        if ext is None:
            self._room(self._extensions)
            ext = self._extensions[fingerprint] = certs.parse_vcek_extensions(cert)
        return ext

    def tcb(self, cert: x509.Certificate, *, turin: bool) -> TcbVersion:
        """The certificate's TCB in a layout, decoded once (its InputError too)."""
        key = (self.facts(cert).fingerprint, turin)
        found = self._tcbs.get(key)
        if found is None:
            self._room(self._tcbs)
            try:
                found = self.extensions(cert).tcb(turin=turin)
            except InputError as exc:
                found = exc
            self._tcbs[key] = found
        if isinstance(found, InputError):
            raise found
        return found

    def issuers_of(self, cert: x509.Certificate, roots: TrustedRoots) -> tuple[TrustedRoot, ...]:
        """``roots.issuers_of(cert)``, by the certificate and the roots' digests."""
        key = (self.facts(cert).fingerprint, roots.identity)
        found = self._issuers.get(key)
        if found is None:
            self._room(self._issuers)
            found = self._issuers[key] = tuple(roots.issuers_of(cert))
        return found


def is_simulated(name: x509.Name) -> bool:
    """Whether ``name`` is one of the simulated firmware's (its organization says so)."""
    organizations = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(a.value == certs.SIM_ORGANIZATION for a in organizations)


SIMULATED_ROOT = (
    "the simulated AMD root of Keepstack's simulated firmware is never trusted by default: "
    "'keep run --dev' or 'keep verify-report --extra-root ARK.pem' trusts it (development only)"
)


def valid_at(when: datetime) -> str:
    """The expected text of every validity check."""
    return f"valid at {when:%Y-%m-%d %H:%M:%S} UTC"


def issuer_role(kind: str | None) -> str:
    """The intermediate's role in the checklist: ``asvk`` for a VLEK, else ``ask``."""
    return "asvk" if kind == "VLEK" else "ask"


def intermediate_for(
    ask: x509.Certificate | None, product: Product | None, kind: str | None
) -> x509.Certificate | None:
    """The intermediate to check: the one given, else AMD's packaged one for the product."""
    if ask is None and product is not None:
        return certs.amd_certificate(product, issuer_role(kind))
    return ask


def chain_checks(
    cache: ChainCache,
    roots: TrustedRoots,
    vek: x509.Certificate,
    *,
    intermediate: x509.Certificate | None,
    ask: x509.Certificate | None,
    ark: x509.Certificate | None,
    when: datetime,
    checks: Checklist,
) -> TrustedRoot | None:
    """Check the chain from ``vek`` to one of ``roots`` (see the module); the root, if trusted.

    ``ask`` is the intermediate the caller passed (None: ``intermediate`` is AMD's packaged one).
    """
    facts = cache.facts(vek)
    kind = facts.kind
    role = issuer_role(kind)
    expected_validity = partial(valid_at, when)  # formatted only when printed
    root = _choose_root(cache, roots, ark, intermediate, checks)
    if root is not None:
        ok, why = cache.signed_by(root.certificate, root.certificate)
        checks.add("ark.self-signature", ok, expected="valid", found=why)
        ok, span = cache.facts(root.certificate).validity(when)
        checks.add("ark.validity", ok, expected=expected_validity, found=span)
    if intermediate is not None and root is not None:
        _intermediate_checks(cache, intermediate, root, role, when, expected_validity, checks)
    else:
        checks.add(
            f"{role}.signed-by-ark",
            False,
            expected="an intermediate and a pinned root",
            found="no intermediate" if intermediate is None else "no pinned root",
            detail=_why_no_link(intermediate, ark),
        )
    if intermediate is not None:
        ok, why = cache.signed_by(vek, intermediate)
        issuer_cn = cache.facts(intermediate).subject_cn
        checks.add(
            f"{(kind or 'vcek').lower()}.signed-by-{role}",
            ok,
            expected=lambda: f"signed by {issuer_cn}",
            found=why,
            detail="a simulated certificate: pass its chain with --ask-chain; " + SIMULATED_ROOT
            if not ok and ask is None and is_simulated(vek.issuer)
            else "",
        )
    ok, span = facts.validity(when)
    checks.add(f"{(kind or 'vcek').lower()}.validity", ok, expected=expected_validity, found=span)
    return root


def _intermediate_checks(  # noqa: PLR0917
    cache: ChainCache,
    intermediate: x509.Certificate,
    root: TrustedRoot,
    role: str,
    when: datetime,
    expected_validity: Callable[[], str],
    checks: Checklist,
) -> None:
    ok, why = cache.signed_by(intermediate, root.certificate)
    facts = cache.facts(intermediate)
    root_cn = cache.facts(root.certificate).subject_cn
    checks.add(
        f"{role}.signed-by-ark",
        ok,
        expected=lambda: f"{facts.subject_cn} signed by {root_cn}",
        found=why,
    )
    ok, span = facts.validity(when)
    checks.add(f"{role}.validity", ok, expected=expected_validity, found=span)


def _why_no_link(intermediate: x509.Certificate | None, ark: x509.Certificate | None) -> str:
    """Why there is no intermediate-to-root link to check: name the real cause."""
    if intermediate is None:
        return "no product detected, so no packaged intermediate: pass --product or --ask-chain"
    root_name = ark.subject if ark is not None else intermediate.issuer
    if is_simulated(root_name):
        return SIMULATED_ROOT
    return f"the root {root_name.rfc4514_string()!r} is not pinned (see ark.trusted)"


def _choose_root(
    cache: ChainCache,
    roots: TrustedRoots,
    ark: x509.Certificate | None,
    intermediate: x509.Certificate | None,
    checks: Checklist,
) -> TrustedRoot | None:
    if ark is not None:
        root = roots.find(ark)
        if root is None:
            checks.add(
                "ark.trusted",
                False,
                expected="one of the pinned roots",
                found=f"{certs.common_name(ark.subject)} sha256 {certs.der_sha256(ark)} "
                "is not pinned",
                detail=SIMULATED_ROOT if is_simulated(ark.subject) else "",
            )
            return None
    else:
        if intermediate is None:
            checks.add("ark.trusted", False, expected="a pinned root", found="no intermediate")
            return None
        candidates = cache.issuers_of(intermediate, roots)
        if not candidates:
            checks.add(
                "ark.trusted",
                False,
                expected="a pinned root",
                found=f"none named {intermediate.issuer.rfc4514_string()!r}",
                detail=SIMULATED_ROOT if is_simulated(intermediate.issuer) else "",
            )
            return None
        root = next(
            (c for c in candidates if cache.signed_by(intermediate, c.certificate)[0]),
            candidates[0],
        )
    root_cn = cache.facts(root.certificate).subject_cn
    checks.add(
        "ark.trusted", True, found=lambda: f"{root_cn}: {root.label}, sha256 {root.sha256[:16]}…"
    )
    return root
