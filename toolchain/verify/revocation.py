"""Revocation: the intermediate (ASK or ASVK) looked up in an AMD CRL signed by the pinned root.

Without a CRL the revocation check is skipped (a failure when the policy requires a CRL) and the
verdict carries the caveat. A CRL past its nextUpdate fails unless the policy allows stale CRLs;
then the verdict says revocation was checked only as of that CRL. A revocation is final, even in a
stale CRL; an unauthenticated CRL is never relied on.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509

from toolchain.checks import Checklist
from toolchain.snp import certs
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.roots import TrustedRoot

if TYPE_CHECKING:
    from toolchain.verify.chain import ChainCache


def revocation_checks(  # noqa: PLR0917
    cache: ChainCache,
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
        root_cn = cache.facts(root.certificate).subject_cn
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
