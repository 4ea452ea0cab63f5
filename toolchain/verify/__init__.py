"""Attestation report verification: ``Verifier(roots).verify(report, vek, policy=...)``.

``verifier`` is the entry point; the checks live by concern in ``chain``, ``revocation``,
``signature`` and ``validate``, the signed references in ``references``.
"""

from __future__ import annotations

from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.references import References
from toolchain.verify.roots import TrustedRoot, TrustedRoots
from toolchain.verify.signature import report_signature_ok
from toolchain.verify.verifier import Verifier

__all__ = [
    "References",
    "TrustedRoot",
    "TrustedRoots",
    "VerificationPolicy",
    "Verifier",
    "report_signature_ok",
]
