"""The report verifier: a ``Verifier`` holds the trusted roots and the chain cache, and its
``verify`` is the one entry point from a report, its certificates, signed references and a policy
to a verdict — for ``keep verify-report``, ``keep verify-evidence`` and the runner's live
attestation alike.

Build one ``Verifier`` per process or run, naming its roots: ``Verifier.amd()`` trusts AMD's pinned
ARKs only; any other root (the simulated ARK of a development machine) only when the caller built
the ``TrustedRoots`` with it. An ARK handed over with a report is compared with these roots, never
trusted for having been handed over.

Order of the checks, as go-sev-guest splits them: the signed references (when given) first, then
the report's own format, the product and key kind (``signature.detect_product``,
``signature.key_kind_checks``), the certificate chain to a pinned root (``chain``) and revocation
when a CRL is given (``revocation``), the report's signature and its binding to the certificate
(``signature``), then the tenant's policy (``validate``). Checks never stop early: one run shows
every problem. What a VALID verdict did not cover (no CRL, a stale one accepted) is a caveat on the
verdict line. Every time is UTC (an aware ``at`` is converted).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

from toolchain.checks import Checklist
from toolchain.snp import certs
from toolchain.snp.report import SIGNATURE_ALGO_ECDSA_P384_SHA384, AttestationReport
from toolchain.snp.tcb import Product
from toolchain.verify.chain import ChainCache, chain_checks, intermediate_for, issuer_role
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.references import References
from toolchain.verify.revocation import revocation_checks
from toolchain.verify.roots import TrustedRoots
from toolchain.verify.signature import detect_product, key_kind_checks, signature_checks
from toolchain.verify.validate import validate


class Verifier:
    """Verifies reports against one set of trusted roots, caching certificate results.

    The cache (``ChainCache``) is keyed by certificate fingerprint, so many reports from one
    machine cost one ECDSA verification each; ``clear_caches`` forgets it (cold benchmarks).
    """

    def __init__(self, roots: TrustedRoots) -> None:
        self.roots = roots
        self.cache = ChainCache()

    @classmethod
    def amd(cls) -> Verifier:
        """A verifier that trusts AMD's pinned ARKs and nothing else."""
        return cls(TrustedRoots.amd())

    def clear_caches(self) -> None:
        """Forget cached chain results (benchmarks use it to time a cold verification)."""
        self.cache.clear()

    def verify(
        self,
        report: AttestationReport,
        vek: x509.Certificate,
        *,
        policy: VerificationPolicy,
        references: References | None = None,
        ask: x509.Certificate | None = None,
        ark: x509.Certificate | None = None,
        product: str | Product | None = None,
        at: datetime | None = None,
        crl: bytes | None = None,
    ) -> Checklist:
        """The one entry point: ``report`` signed by ``vek`` against ``references`` and ``policy``.

        ``references`` (a verified envelope, or one that failed: then nothing is allowed) narrow
        the policy's allowed measurements to the launch digests they list for the report's
        configuration; their lines come first, then ``verify_report``'s, under its title.
        """
        if references is None:
            return self.verify_report(
                report, vek, policy=policy, ask=ask, ark=ark, product=product, at=at, crl=crl
            )
        generation = product.value if isinstance(product, Product) else product
        checks, policy = references.checklist(report, vek, policy, product=generation)
        verdict = self.verify_report(
            report, vek, policy=policy, ask=ask, ark=ark, product=product, at=at, crl=crl
        )
        checks.extend(verdict)
        checks.title = verdict.title
        return checks

    def verify_report(
        self,
        report: AttestationReport,
        vek: x509.Certificate,
        *,
        policy: VerificationPolicy,
        ask: x509.Certificate | None = None,
        ark: x509.Certificate | None = None,
        product: str | Product | None = None,
        at: datetime | None = None,
        crl: bytes | None = None,
    ) -> Checklist:
        """Verify ``report`` signed by ``vek`` (a VCEK or VLEK); every check lands in the list.

        ``ask`` is the VCEK's issuer (ASK, or ASVK for a VLEK): AMD's packaged one when omitted.
        ``ark`` is only compared with the verifier's roots. ``at`` is the verification time
        (default now). ``crl`` is an AMD CRL file (DER or PEM), signed by the ARK. Raises
        InputError only for unusable input (an unreadable CRL or certificate extension).
        """
        when = datetime.now(UTC) if at is None else at
        # Naive means UTC; an offset is converted, since every time below is printed as UTC.
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        revocations = certs.read_crl(crl) if crl is not None else None
        ext = self.cache.extensions(vek)
        facts = self.cache.facts(vek)
        checks = Checklist(f"SEV-SNP attestation report v{report.version}")
        format_checks(report, policy, checks)
        chosen = detect_product(self.cache, report, ext, vek, product, checks)
        if chosen is not None:
            report = report.with_layout(turin=chosen.turin_layout)
            checks.title = f"SEV-SNP attestation report v{report.version} ({chosen.value})"
        key_kind_checks(report, facts.kind, facts.subject_cn, checks)
        intermediate = intermediate_for(ask, chosen, facts.kind)
        root = chain_checks(
            self.cache,
            self.roots,
            vek,
            intermediate=intermediate,
            ask=ask,
            ark=ark,
            when=when,
            checks=checks,
        )
        revocation_checks(
            self.cache,
            revocations,
            root,
            intermediate,
            issuer_role(facts.kind),
            when,
            policy,
            checks,
        )
        signature_checks(self.cache, report, vek, chosen, checks)
        validate(report, policy, checks)
        return checks


def format_checks(report: AttestationReport, policy: VerificationPolicy, checks: Checklist) -> None:
    """The report's own format: a version the policy allows, signed with ECDSA P-384."""
    checks.add(
        "report.version",
        report.version in policy.allowed_versions,
        expected=lambda: f"one of {sorted(policy.allowed_versions)}",
        found=report.version,
    )
    checks.add(
        "report.signature-algorithm",
        report.signature_algo == SIGNATURE_ALGO_ECDSA_P384_SHA384,
        expected="1 (ECDSA P-384 with SHA-384)",
        found=report.signature_algo,
    )
