"""Validation: what the tenant's ``VerificationPolicy`` demands of a report whose signature and
chain verified (go-sev-guest's ``validate``), one small function per concern, called in this order:

- guest policy: debugging and the migration agent forbidden unless allowed, required flags;
- platform: SMT, required platform flags, the VMPL the report was requested from;
- TCB: the firmware's minimum ABI, the minimum reported TCB, the minimum guest SVN;
- binding: REPORT_DATA (the nonce, or what binds it), HOST_DATA, family and image ID;
- identity: MEASUREMENT, the ID key and the author key among the allowed ones;
- format: reserved bits (rejected only in strict mode).

Whatever the policy does not constrain is listed as skipped with the reason, never passed.
"""

from __future__ import annotations

from toolchain.checks import Checklist
from toolchain.snp.report import AttestationReport
from toolchain.verify.policy import VerificationPolicy


def validate(report: AttestationReport, policy: VerificationPolicy, checks: Checklist) -> None:
    """Every check of ``policy`` on ``report``, in the module's order."""
    guest_policy_checks(report, policy, checks)
    platform_checks(report, policy, checks)
    tcb_checks(report, policy, checks)
    binding_checks(report, policy, checks)
    identity_checks(report, policy, checks)
    reserved_check(report, policy, checks)


def guest_policy_checks(
    report: AttestationReport, policy: VerificationPolicy, checks: Checklist
) -> None:
    """The guest policy the keep was launched with: debugging, migration agent, required flags."""
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
            found=guest,
            detail="no guest policy flags required by the verification policy",
        )


def platform_checks(
    report: AttestationReport, policy: VerificationPolicy, checks: Checklist
) -> None:
    """Where the guest runs: SMT, required platform flags, the VMPL that asked for the report."""
    smt = report.platform_info.has("smt_enabled")
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
            found=report.platform_info,
            detail="no platform flags required by the policy",
        )
    if policy.vmpl is None:
        checks.add("report.vmpl", None, found=report.vmpl, detail="any VMPL accepted by the policy")
    else:
        checks.add(
            "report.vmpl", report.vmpl == policy.vmpl, expected=policy.vmpl, found=report.vmpl
        )


def tcb_checks(report: AttestationReport, policy: VerificationPolicy, checks: Checklist) -> None:
    """The firmware's minimum ABI, the minimum reported TCB, the minimum guest SVN."""
    firmware = (report.current_major, report.current_minor)

    def fw_text() -> str:
        return f"{firmware[0]}.{firmware[1]} build {report.current_build}"

    if policy.min_abi is None:
        checks.add("firmware.min-abi", None, found=fw_text, detail="no minimum ABI in the policy")
    else:
        min_abi = policy.min_abi
        checks.add(
            "firmware.min-abi",
            firmware >= min_abi,
            expected=lambda: f">= {min_abi[0]}.{min_abi[1]}",
            found=fw_text,
        )
    if policy.min_tcb is None:
        checks.add(
            "tcb.minimum",
            None,
            found=report.reported_tcb,
            detail="no minimum TCB in the policy",
        )
    else:
        have = report.reported_tcb.components()
        low = [n for n, floor in policy.min_tcb.items() if have.get(n, 0) < floor]
        floors = policy.min_tcb
        checks.add(
            "tcb.minimum",
            not low,
            expected=lambda: " ".join(f"{n}>={v}" for n, v in floors.items()),
            found=report.reported_tcb,
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


def binding_checks(
    report: AttestationReport, policy: VerificationPolicy, checks: Checklist
) -> None:
    """The values the launch or the request bound into the report: REPORT_DATA, HOST_DATA, IDs."""
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


def identity_checks(
    report: AttestationReport, policy: VerificationPolicy, checks: Checklist
) -> None:
    """What was launched and who vouched for it: MEASUREMENT, the ID key, the author key."""
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


def reserved_check(
    report: AttestationReport, policy: VerificationPolicy, checks: Checklist
) -> None:
    """Reserved bits as the ABI requires: reported, and rejected in strict mode."""
    anomalies = report.anomalies()
    if not anomalies:
        checks.add("report.reserved", True, found="all reserved bits as the ABI requires")
    elif policy.strict:
        checks.add(
            "report.reserved",
            False,
            expected="reserved bits clear",
            found=lambda: "; ".join(anomalies),
        )
    else:
        checks.add(
            "report.reserved",
            None,
            found=lambda: "; ".join(anomalies),
            detail=lambda: f"reported, not rejected (strict mode off): {'; '.join(anomalies)}",
        )


def hexs(data: bytes, limit: int = 128) -> str:
    text = data.hex()
    return text if len(text) <= limit else f"{text[:limit]}…"


def _allow_list(
    checks: Checklist, name: str, value: bytes, allowed: frozenset[bytes] | None, skip_reason: str
) -> None:
    if allowed is None:
        checks.add(name, None, found=lambda: hexs(value), detail=skip_reason)
        return
    checks.add(
        name,
        value in allowed,
        expected=lambda: f"one of {len(allowed)} ({_shown(allowed)})",
        found=lambda: hexs(value),
    )


def _shown(allowed: frozenset[bytes]) -> str:
    """The first four allowed values, sorted, shortened: enough to recognise the list."""
    return ", ".join(sorted(hexs(v, 24) for v in allowed)[:4])


def _equal(
    checks: Checklist, name: str, value: bytes, expected: bytes | None, skip_reason: str
) -> None:
    if expected is None:
        checks.add(name, None, found=lambda: hexs(value), detail=skip_reason)
        return
    padded = expected.ljust(len(value), b"\0")
    detail = (
        "" if len(expected) == len(value) else f"expected value zero-padded to {len(value)} bytes"
    )
    checks.add(
        name,
        value == padded,
        expected=lambda: hexs(padded),
        found=lambda: hexs(value),
        detail=detail,
    )
