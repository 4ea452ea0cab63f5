"""The roots a verification may chain to: AMD's pinned ARKs; others only on explicit request."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography import x509

from toolchain.errors import InputError
from toolchain.snp.certs import amd_certificate, common_name, der_sha256, signed_by
from toolchain.snp.tcb import Product


@dataclass(frozen=True)
class TrustedRoot:
    """One trusted self-signed root and what to call it in a checklist."""

    certificate: x509.Certificate
    label: str
    sha256: str

    @property
    def name(self) -> str:
        return common_name(self.certificate.subject)


@dataclass(frozen=True)
class TrustedRoots:
    """A set of pinned roots. ``TrustedRoots.amd()`` (AMD's ARKs) is the default everywhere.

    Another root (the simulated ARK of a development machine) is trusted only when a caller builds
    a set with ``with_extra``; a root passed to the verifier as ``ark=`` is only compared with
    these, never trusted for having been passed.
    """

    roots: tuple[TrustedRoot, ...]

    @classmethod
    def amd(cls) -> TrustedRoots:
        return _AMD_ROOTS

    def with_extra(self, certificate: x509.Certificate, *, label: str) -> TrustedRoots:
        ok, why = signed_by(certificate, certificate)
        if not ok:
            raise InputError(f"the extra root {common_name(certificate.subject)!r}: {why}")
        extra = TrustedRoot(certificate, label, der_sha256(certificate))
        return TrustedRoots((*self.roots, extra))

    @functools.cached_property
    def identity(self) -> tuple[str, ...]:
        """Each root's digest and label, in order: what a cached lookup in this set is keyed by."""
        return tuple(f"{r.sha256} {r.label}" for r in self.roots)

    def find(self, certificate: x509.Certificate) -> TrustedRoot | None:
        """The root identical (by DER SHA-256) to ``certificate``."""
        digest = der_sha256(certificate)
        return next((root for root in self.roots if root.sha256 == digest), None)

    def issuers_of(self, certificate: x509.Certificate) -> list[TrustedRoot]:
        """Roots whose subject is ``certificate``'s issuer (AMD's first, then extras)."""
        return [root for root in self.roots if root.certificate.subject == certificate.issuer]


def _amd_roots() -> TrustedRoots:
    roots = []
    for product in Product:
        cert = amd_certificate(product, "ark")
        roots.append(TrustedRoot(cert, f"AMD {product.value} (pinned)", der_sha256(cert)))
    return TrustedRoots(tuple(roots))


_AMD_ROOTS = _amd_roots()
