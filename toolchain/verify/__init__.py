"""Attestation report verification: ``verify_report`` against a ``VerificationPolicy``."""

from __future__ import annotations

from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.roots import TrustedRoot, TrustedRoots
from toolchain.verify.verifier import report_signature_ok, verify_report

__all__ = [
    "TrustedRoot",
    "TrustedRoots",
    "VerificationPolicy",
    "report_signature_ok",
    "verify_report",
]
