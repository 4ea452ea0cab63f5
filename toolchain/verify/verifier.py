"""The report verifier: every check named, with what was expected and what was found.

Order: the report's own format, the product, the certificate chain to a pinned root (with
revocation when a CRL is given), the report signature and its binding to the certificate (TCB,
chip ID, key kind), then the tenant's policy. Checks never stop early: one run shows every problem.
A CRL past its nextUpdate fails the revocation check unless the policy allows stale CRLs; what a
VALID verdict did not cover (no CRL, a stale one accepted) is a caveat on the verdict line. Every
time is UTC (an aware ``at`` is converted).

Certificate-chain results are cached by certificate fingerprint, so verifying many reports from
one machine costs one ECDSA verification each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.snp import certs
from toolchain.snp.report import (
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    AttestationReport,
    SigningKey,
)
from toolchain.snp.tcb import Product, TcbVersion
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.roots import TrustedRoot, TrustedRoots

_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)
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
        key = (self.facts(cert).fingerprint, tuple(f"{r.sha256} {r.label}" for r in roots.roots))
        found = self._issuers.get(key)
        if found is None:
            self._room(self._issuers)
            found = self._issuers[key] = tuple(roots.issuers_of(cert))
        return found


#: The verifier's one cache (a Verifier object will own it; see ChainCache).
_CHAIN = ChainCache()


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bool, str]:
    return _CHAIN.signed_by(cert, issuer)


def clear_caches() -> None:
    """Forget cached chain results (benchmarks use it to time a cold verification)."""
    _CHAIN.clear()


def report_signature_ok(report: AttestationReport, key: ec.EllipticCurvePublicKey) -> bool:
    """ECDSA P-384/SHA-384 over bytes 0x000-0x29F with R, S taken from the 72-byte LE fields."""
    r, s = report.signature_r, report.signature_s
    if not (0 < r < _P384_ORDER and 0 < s < _P384_ORDER):
        return False
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


def _hexs(data: bytes, limit: int = 128) -> str:
    text = data.hex()
    return text if len(text) <= limit else f"{text[:limit]}…"


def _detect_product(
    report: AttestationReport,
    ext: certs.VekExtensions,
    vek: x509.Certificate,
    given: str | Product | None,
    checks: Checklist,
) -> Product | None:
    sources: dict[str, Product] = {}
    if isinstance(given, Product):
        sources["given"] = given
    elif given is not None and given.lower() != "auto":
        sources["given"] = Product.from_name(given)
    if ext.product_name:
        try:
            sources["certificate productName"] = Product.from_name(ext.product_name)
        except InputError:
            checks.add(
                "product",
                False,
                expected="Milan, Genoa or Turin",
                found=f"certificate productName {ext.product_name!r}",
            )
            return None
    issuer_product = _CHAIN.facts(vek).issuer_product
    if issuer_product is not None:
        sources["certificate issuer"] = issuer_product
    cpuid = report.cpuid_product
    if cpuid is not None:
        sources["report CPUID"] = cpuid
    found = ", ".join(f"{where}: {p.value}" for where, p in sources.items())
    if not sources:
        checks.add(
            "product",
            False,
            expected="a product (given or from the certificate)",
            found="none detected",
            detail="pass --product",
        )
        return None
    distinct = set(sources.values())
    chosen = next(iter(sources.values()))
    if len(distinct) > 1:
        checks.add("product", False, expected="one product from every source", found=found)
        return chosen
    checks.add("product", True, found=f"{chosen.value} ({found})")
    return chosen


def verify_report(
    report: AttestationReport,
    vcek: x509.Certificate,
    *,
    policy: VerificationPolicy,
    ask: x509.Certificate | None = None,
    ark: x509.Certificate | None = None,
    product: str | Product | None = None,
    at: datetime | None = None,
    crl: bytes | None = None,
    roots: TrustedRoots | None = None,
) -> Checklist:
    """Verify ``report`` signed by ``vcek`` (a VCEK or VLEK); every check lands in the list.

    ``ask`` is the VCEK's issuer (ASK, or ASVK for a VLEK): AMD's packaged one when omitted.
    ``ark`` is only compared with ``roots`` (AMD's pinned ARKs unless the caller explicitly built
    a set with more); a root is never trusted because it was passed here. ``at`` is the
    verification time (default now). ``crl`` is an AMD CRL file (DER or PEM), signed by the ARK.
    Raises InputError only for unusable input (an unreadable CRL or certificate extension).
    """
    roots = roots if roots is not None else TrustedRoots.amd()
    when = datetime.now(UTC) if at is None else at
    # Naive means UTC; an offset is converted, since every time below is printed as UTC.
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    revocations = certs.read_crl(crl) if crl is not None else None
    valid_at = f"valid at {when:%Y-%m-%d %H:%M:%S} UTC"
    ext = _CHAIN.extensions(vcek)
    vcek_facts = _CHAIN.facts(vcek)
    kind = vcek_facts.kind
    checks = Checklist(f"SEV-SNP attestation report v{report.version}")

    # -- the report's format --
    checks.add(
        "report.version",
        report.version in policy.allowed_versions,
        expected=f"one of {sorted(policy.allowed_versions)}",
        found=report.version,
    )
    checks.add(
        "report.signature-algorithm",
        report.signature_algo == SIGNATURE_ALGO_ECDSA_P384_SHA384,
        expected="1 (ECDSA P-384 with SHA-384)",
        found=report.signature_algo,
    )

    # -- product and key kind --
    chosen = _detect_product(report, ext, vcek, product, checks)
    if chosen is not None:
        report = report.with_layout(turin=chosen.turin_layout)
        checks.title = f"SEV-SNP attestation report v{report.version} ({chosen.value})"
    checks.add(
        "certificate.kind",
        kind is not None,
        expected="SEV-VCEK or SEV-VLEK",
        found=kind or f"subject CN {vcek_facts.subject_cn!r}",
    )
    signing_key = report.key_info.signing_key
    expected_key = {"VCEK": SigningKey.VCEK, "VLEK": SigningKey.VLEK}.get(kind or "")
    checks.add(
        "report.signing-key",
        expected_key is not None and signing_key == expected_key,
        expected=kind or "VCEK or VLEK",
        found=report.key_info.signing_key_name,
    )

    # -- the chain --
    vek_name = (kind or "vcek").lower()
    issuer_role = "asvk" if kind == "VLEK" else "ask"
    intermediate = ask
    if intermediate is None and chosen is not None:
        intermediate = certs.amd_certificate(chosen, issuer_role)
    root = _choose_root(roots, ark, intermediate, checks)
    if root is not None:
        ok, why = _signed_by(root.certificate, root.certificate)
        checks.add("ark.self-signature", ok, expected="valid", found=why)
        ok, span = _CHAIN.facts(root.certificate).validity(when)
        checks.add("ark.validity", ok, expected=valid_at, found=span)
    if intermediate is not None and root is not None:
        ok, why = _signed_by(intermediate, root.certificate)
        name = _CHAIN.facts(intermediate).subject_cn
        root_cn = _CHAIN.facts(root.certificate).subject_cn
        checks.add(
            f"{issuer_role}.signed-by-ark", ok, expected=f"{name} signed by {root_cn}", found=why
        )
        ok, span = _CHAIN.facts(intermediate).validity(when)
        checks.add(
            f"{issuer_role}.validity",
            ok,
            expected=valid_at,
            found=span,
        )
    else:
        checks.add(
            f"{issuer_role}.signed-by-ark",
            False,
            expected="an intermediate and a pinned root",
            found="no intermediate" if intermediate is None else "no pinned root",
            detail=_why_no_link(intermediate, ark),
        )
    if intermediate is not None:
        ok, why = _signed_by(vcek, intermediate)
        checks.add(
            f"{vek_name}.signed-by-{issuer_role}",
            ok,
            expected=f"signed by {_CHAIN.facts(intermediate).subject_cn}",
            found=why,
            detail="a simulated certificate: pass its chain with --ask-chain; " + _SIMULATED_ROOT
            if not ok and ask is None and _is_simulated(vcek.issuer)
            else "",
        )
    ok, span = vcek_facts.validity(when)
    checks.add(f"{vek_name}.validity", ok, expected=valid_at, found=span)
    _revocation_checks(revocations, root, intermediate, issuer_role, when, policy, checks)

    # -- the report's signature and its binding to the certificate --
    key = vcek_facts.ec_key
    if key is None:
        checks.add(
            "report.signature",
            False,
            expected="a P-384 public key in the certificate",
            found="none",
        )
    else:
        signature_ok = report_signature_ok(report, key)
        checks.add(
            "report.signature",
            signature_ok,
            expected=f"ECDSA P-384/SHA-384 by this {kind or 'certificate'}",
            found="valid" if signature_ok else "does not verify",
        )
    if chosen is not None:
        try:
            cert_tcb: TcbVersion | None = _CHAIN.tcb(vcek, turin=chosen.turin_layout)
        except InputError as exc:
            cert_tcb = None
            checks.add(
                "report.reported-tcb", False, expected="TCB in the certificate", found=exc.message
            )
        if cert_tcb is not None:
            checks.add(
                "report.reported-tcb",
                cert_tcb.to_int() == report.reported_tcb.to_int(),
                expected=f"certificate TCB {cert_tcb}",
                found=str(report.reported_tcb),
            )
    else:
        checks.add(
            "report.reported-tcb",
            False,
            expected="a known product to read the TCB",
            found="unknown product",
        )
    _chip_id_check(report, ext, kind, chosen, checks)

    # -- the tenant's policy --
    _policy_checks(report, policy, checks)
    return checks


def _is_simulated(name: x509.Name) -> bool:
    """Whether ``name`` is one of the simulated firmware's (its organization says so)."""
    organizations = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(a.value == certs.SIM_ORGANIZATION for a in organizations)


_SIMULATED_ROOT = (
    "the simulated AMD root of Keepstack's simulated firmware is never trusted by default: "
    "'keep run --dev' or 'keep verify-report --extra-root ARK.pem' trusts it (development only)"
)


def _why_no_link(intermediate: x509.Certificate | None, ark: x509.Certificate | None) -> str:
    """Why there is no intermediate-to-root link to check: name the real cause."""
    if intermediate is None:
        return "no product detected, so no packaged intermediate: pass --product or --ask-chain"
    root_name = ark.subject if ark is not None else intermediate.issuer
    if _is_simulated(root_name):
        return _SIMULATED_ROOT
    return f"the root {root_name.rfc4514_string()!r} is not pinned (see ark.trusted)"


def _choose_root(
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
                detail=_SIMULATED_ROOT if _is_simulated(ark.subject) else "",
            )
            return None
    else:
        if intermediate is None:
            checks.add("ark.trusted", False, expected="a pinned root", found="no intermediate")
            return None
        candidates = _CHAIN.issuers_of(intermediate, roots)
        if not candidates:
            checks.add(
                "ark.trusted",
                False,
                expected="a pinned root",
                found=f"none named {intermediate.issuer.rfc4514_string()!r}",
                detail=_SIMULATED_ROOT if _is_simulated(intermediate.issuer) else "",
            )
            return None
        root = next(
            (c for c in candidates if _signed_by(intermediate, c.certificate)[0]), candidates[0]
        )
    root_cn = _CHAIN.facts(root.certificate).subject_cn
    checks.add("ark.trusted", True, found=f"{root_cn}: {root.label}, sha256 {root.sha256[:16]}…")
    return root


def _revocation_checks(  # noqa: PLR0917
    crl: x509.CertificateRevocationList | None,
    root: TrustedRoot | None,
    intermediate: x509.Certificate | None,
    role: str,
    when: datetime,
    policy: VerificationPolicy,
    checks: Checklist,
) -> None:
    if crl is None:
        checks.add(
            f"{role}.revocation",
            False if policy.require_crl else None,
            expected="an AMD CRL",
            found="none",
            detail="no CRL given: revocation not checked",
        )
        checks.caveat("revocation not checked: no CRL given")
        return
    authentic = False
    if root is None:
        checks.add("crl.signature", False, expected="signed by the pinned root", found="no root")
    else:
        authentic, why = certs.crl_signed_by(crl, root.certificate)
        root_cn = _CHAIN.facts(root.certificate).subject_cn
        checks.add("crl.signature", authentic, expected=f"signed by {root_cn}", found=why)
    stale = _crl_staleness(crl, when, policy, checks)
    if intermediate is None or not authentic:
        checks.add(
            f"{role}.revocation",
            None if authentic else False,
            expected="a CRL signed by the root",
            found="CRL authentic" if authentic else "CRL not authentic",
            detail="no intermediate to look up"
            if authentic
            else "cannot rely on an unauthenticated CRL",
        )
        return
    revoked_at = certs.crl_revocation(crl, intermediate)
    serial = f"serial 0x{intermediate.serial_number:x}"
    if revoked_at is not None:  # a revocation is final, even in a stale CRL
        checks.add(
            f"{role}.revocation",
            False,
            expected=f"{serial} not revoked",
            found=f"revoked {revoked_at:%Y-%m-%d}",
        )
    elif stale is None:
        checks.add(f"{role}.revocation", True, found=f"{serial} not listed")
    elif policy.allow_stale_crl:
        checks.add(
            f"{role}.revocation",
            True,
            found=f"{serial} not listed in the stale CRL ({stale})",
            detail="stale CRL accepted (allow_stale_crl): later revocations unknown",
        )
        checks.caveat(f"revocation checked only as of a stale CRL ({stale}): accepted by policy")
    else:
        checks.add(
            f"{role}.revocation",
            False,
            expected=f"{serial} not revoked by a CRL current at {when:%Y-%m-%d %H:%M:%S} UTC",
            found=f"{serial} not listed in a stale CRL ({stale}): revocation not checked",
            detail="fetch a current CRL, or accept this one with --allow-stale-crl",
        )


def _crl_staleness(
    crl: x509.CertificateRevocationList,
    when: datetime,
    policy: VerificationPolicy,
    checks: Checklist,
) -> str | None:
    """Check that ``crl`` is current at ``when``; its span if it is not (None when fresh).

    A CRL past its nextUpdate (or before its lastUpdate, or without a nextUpdate) says nothing
    about revocations after it, so by default it fails; ``allow_stale_crl`` accepts it, said.
    """
    next_update = crl.next_update_utc
    last_update = crl.last_update_utc
    span = f"{last_update:%Y-%m-%d} .. {next_update:%Y-%m-%d}" if next_update else "no nextUpdate"
    if next_update is not None and last_update <= when <= next_update:
        checks.add("crl.freshness", True, found=span)
        return None
    checks.add(
        "crl.freshness",
        None if policy.allow_stale_crl else False,
        expected=f"a CRL current at {when:%Y-%m-%d %H:%M:%S} UTC",
        found=f"stale CRL ({span})",
        detail=f"stale CRL ({span}) accepted (allow_stale_crl): revocations after it are unknown"
        if policy.allow_stale_crl
        else "revocations after it are unknown; --allow-stale-crl accepts it",
    )
    return span


def _chip_id_check(
    report: AttestationReport,
    ext: certs.VekExtensions,
    kind: str | None,
    product: Product | None,
    checks: Checklist,
) -> None:
    if kind == "VLEK":
        checks.add("report.chip-id", None, detail="a VLEK is not bound to one chip (no hwID)")
        return
    if report.key_info.mask_chip_id:
        checks.add(
            "report.chip-id",
            None,
            detail="MASK_CHIP_ID is set: the report carries no chip ID to compare",
        )
        return
    if ext.hwid is None:
        checks.add("report.chip-id", False, expected="a hwID extension", found="none")
        return
    chip = report.chip_id_meaningful(product)
    rest_zero = product is None or not product.turin_layout or not any(report.chip_id[8:])
    checks.add(
        "report.chip-id",
        chip == ext.hwid and rest_zero,
        expected=f"hwID {_hexs(ext.hwid, 32)}",
        found=_hexs(report.chip_id_meaningful(product), 32)
        + ("" if rest_zero else " (bytes 8-63 not zero)"),
    )


def _allow_list(
    checks: Checklist, name: str, value: bytes, allowed: frozenset[bytes] | None, skip_reason: str
) -> None:
    if allowed is None:
        checks.add(name, None, found=_hexs(value), detail=skip_reason)
        return
    shown = ", ".join(sorted(_hexs(v, 24) for v in allowed)[:4])
    checks.add(
        name, value in allowed, expected=f"one of {len(allowed)} ({shown})", found=_hexs(value)
    )


def _equal(
    checks: Checklist, name: str, value: bytes, expected: bytes | None, skip_reason: str
) -> None:
    if expected is None:
        checks.add(name, None, found=_hexs(value), detail=skip_reason)
        return
    padded = expected.ljust(len(value), b"\0")
    detail = (
        "" if len(expected) == len(value) else f"expected value zero-padded to {len(value)} bytes"
    )
    checks.add(name, value == padded, expected=_hexs(padded), found=_hexs(value), detail=detail)


def _policy_checks(
    report: AttestationReport, policy: VerificationPolicy, checks: Checklist
) -> None:
    guest = report.policy
    if guest.debug and policy.allow_debug:
        checks.add(
            "policy.debug", True, found="debugging allowed", detail="accepted: --allow-debug"
        )
    else:
        checks.add(
            "policy.debug",
            not guest.debug,
            expected="debugging forbidden",
            found="debugging allowed" if guest.debug else "debugging forbidden",
        )
    if guest.migrate_ma and policy.allow_migration_agent:
        checks.add(
            "policy.migrate-ma", True, found="migration agent allowed", detail="accepted by policy"
        )
    else:
        checks.add(
            "policy.migrate-ma",
            not guest.migrate_ma,
            expected="migration agent forbidden",
            found="allowed" if guest.migrate_ma else "forbidden",
        )
    for flag in sorted(policy.required_policy_flags):
        checks.add(f"policy.{flag}", guest.flags()[flag], expected="set", found=guest.flags()[flag])
    if not policy.required_policy_flags:
        checks.add(
            "policy.required-flags",
            None,
            found=str(guest),
            detail="no guest policy flags required by the verification policy",
        )

    smt = report.platform_info.flags()["smt_enabled"]
    if policy.allow_smt:
        checks.add("platform.smt", True, found=f"SMT {'enabled' if smt else 'disabled'} (allowed)")
    else:
        checks.add(
            "platform.smt", not smt, expected="SMT disabled", found="enabled" if smt else "disabled"
        )
    for flag in sorted(policy.required_platform_flags):
        present = report.platform_info.has(flag)
        checks.add(f"platform.{flag}", present, expected="set", found=present)
    if not policy.required_platform_flags:
        checks.add(
            "platform.required-flags",
            None,
            found=str(report.platform_info),
            detail="no platform flags required by the policy",
        )

    if policy.vmpl is None:
        checks.add("report.vmpl", None, found=report.vmpl, detail="any VMPL accepted by the policy")
    else:
        checks.add(
            "report.vmpl", report.vmpl == policy.vmpl, expected=policy.vmpl, found=report.vmpl
        )

    firmware = (report.current_major, report.current_minor)
    fw_text = f"{report.current_major}.{report.current_minor} build {report.current_build}"
    if policy.min_abi is None:
        checks.add("firmware.min-abi", None, found=fw_text, detail="no minimum ABI in the policy")
    else:
        checks.add(
            "firmware.min-abi",
            firmware >= policy.min_abi,
            expected=f">= {policy.min_abi[0]}.{policy.min_abi[1]}",
            found=fw_text,
        )

    if policy.min_tcb is None:
        checks.add(
            "tcb.minimum",
            None,
            found=str(report.reported_tcb),
            detail="no minimum TCB in the policy",
        )
    else:
        have = report.reported_tcb.components()
        low = [n for n, floor in policy.min_tcb.items() if have.get(n, 0) < floor]
        want = " ".join(f"{n}>={v}" for n, v in policy.min_tcb.items())
        checks.add(
            "tcb.minimum",
            not low,
            expected=want,
            found=str(report.reported_tcb),
            detail=f"below: {', '.join(low)}" if low else "",
        )

    if policy.min_guest_svn is None:
        checks.add(
            "guest-svn.minimum",
            None,
            found=report.guest_svn,
            detail="no minimum guest SVN in the policy",
        )
    else:
        checks.add(
            "guest-svn.minimum",
            report.guest_svn >= policy.min_guest_svn,
            expected=f">= {policy.min_guest_svn}",
            found=report.guest_svn,
        )

    _equal(
        checks,
        "report-data",
        report.report_data,
        policy.report_data,
        "no expected REPORT_DATA (nonce) given: freshness not checked",
    )
    _equal(checks, "host-data", report.host_data, policy.host_data, "no expected HOST_DATA given")
    _equal(checks, "family-id", report.family_id, policy.family_id, "no expected family ID given")
    _equal(checks, "image-id", report.image_id, policy.image_id, "no expected image ID given")
    _allow_list(
        checks,
        "measurement",
        report.measurement,
        policy.allowed_measurements,
        "no reference measurements given: MEASUREMENT not checked",
    )
    _allow_list(
        checks,
        "id-key-digest",
        report.id_key_digest,
        policy.allowed_id_key_digests,
        "no ID-key allow-list given",
    )
    if policy.allowed_author_key_digests is not None and not report.key_info.author_key_en:
        checks.add(
            "author-key-digest",
            False,
            expected="an allowed author key",
            found="no author key (AUTHOR_KEY_EN is 0)",
        )
    else:
        _allow_list(
            checks,
            "author-key-digest",
            report.author_key_digest,
            policy.allowed_author_key_digests,
            "no author-key allow-list given",
        )

    anomalies = report.anomalies()
    if not anomalies:
        checks.add("report.reserved", True, found="all reserved bits as the ABI requires")
    elif policy.strict:
        checks.add(
            "report.reserved", False, expected="reserved bits clear", found="; ".join(anomalies)
        )
    else:
        checks.add(
            "report.reserved",
            None,
            found="; ".join(anomalies),
            detail=f"reported, not rejected (strict mode off): {'; '.join(anomalies)}",
        )
