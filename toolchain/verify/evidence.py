"""An evidence file from ``keep run --evidence``, verified as a whole: ``verify_evidence``.

The file (written by ``toolchain.run.runner.write_evidence``) is JSON::

    _type        "https://keepstack.dev/evidence/v1"
    nonce        hex, 64 bytes: the REPORT_DATA the runner asked for
    report       hex, the 1184-byte ATTESTATION_REPORT
    vcek, ask, ark
                 PEM, the certificate chain the firmware handed over
    references   base64 of the signed reference envelope (DSSE) the run was checked against
    backend, firmware, simulated_root, checklist
                 what the runner says about itself

One call checks everything with the code ``keep verify-report`` uses: the report's signature and
chain (the ARK only compared with the caller's roots: AMD's pinned ARKs, plus a simulated root
only when the caller put it there), the nonce binding (REPORT_DATA equals the file's nonce, and
the caller's own nonce when given — only that proves freshness to the caller), the reference
envelope against the caller's trust policy, MEASUREMENT among the launch digests it signs for the
report's guest policy and CPU generation, and the verification policy.

Nothing unsigned decides: ``backend``, ``firmware``, ``simulated_root`` and the runner's
``checklist`` are shown in the title or ignored, never trusted; keys this version does not know
are ignored for the same reason. A file that cannot be read as evidence is an InputError.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.sign import strict_json
from toolchain.sign.trust import TrustPolicy
from toolchain.snp.certs import load_certificate
from toolchain.snp.report import AttestationReport
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.references import references_checklist
from toolchain.verify.roots import TrustedRoots
from toolchain.verify.verifier import verify_report

EVIDENCE_TYPE = "https://keepstack.dev/evidence/v1"
NONCE_SIZE = 64
_TEXT_FIELDS = ("nonce", "report", "vcek", "ask", "ark", "references")


def _hex(document: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(document[name])
    except ValueError as exc:
        raise InputError(f"evidence field {name!r} is not hex") from exc


def _certificate(document: dict[str, Any], name: str) -> x509.Certificate:
    try:
        return load_certificate(document[name].encode())
    except InputError as exc:
        raise InputError(f"evidence field {name!r}: {exc.message}") from exc


@dataclass(frozen=True)
class Evidence:
    """The parts of an evidence file that are checked (the rest is only shown)."""

    nonce: bytes
    report: AttestationReport
    vcek: x509.Certificate
    ask: x509.Certificate
    ark: x509.Certificate
    references: bytes
    claims: str = ""  # the unsigned self-description, for the title

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise InputError(f"evidence nonce is {len(self.nonce)} bytes, not {NONCE_SIZE}")
        if not self.references:
            raise InputError("evidence field 'references' is empty")

    @classmethod
    def parse(cls, data: bytes) -> Evidence:
        try:
            document = strict_json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"the evidence is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InputError(f"the evidence is a JSON {type(document).__name__}, not an object")
        found_type = document.get("_type")
        if found_type != EVIDENCE_TYPE:
            raise InputError(f"evidence _type is {found_type!r}, not {EVIDENCE_TYPE!r}")
        for name in _TEXT_FIELDS:
            if not isinstance(document.get(name), str):
                found = type(document[name]).__name__ if name in document else "missing"
                raise InputError(f"evidence field {name!r} must be a string, found {found}")
        try:
            references = base64.b64decode(document["references"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("evidence field 'references' is not base64") from exc
        claims = ", ".join(
            f"{key} {document[key]}"
            for key in ("backend", "firmware", "simulated_root")
            if isinstance(document.get(key), str | bool)
        )
        return cls(
            nonce=_hex(document, "nonce"),
            report=AttestationReport.parse(_hex(document, "report")),
            vcek=_certificate(document, "vcek"),
            ask=_certificate(document, "ask"),
            ark=_certificate(document, "ark"),
            references=references,
            claims=claims,
        )


def verify_evidence(
    data: bytes,
    *,
    trust: TrustPolicy,
    roots: TrustedRoots | None = None,
    policy: VerificationPolicy | None = None,
    nonce: bytes | None = None,
    at: datetime | None = None,
    crl: bytes | None = None,
    title: str = "evidence",
) -> Checklist:
    """Verify an evidence file as a whole (see the module's contract); every check is listed.

    ``roots`` defaults to AMD's pinned ARKs: evidence from the simulated firmware verifies only
    when the caller passes a set that includes that root. ``nonce`` is the caller's expected
    REPORT_DATA; without it the binding is checked against the file's own nonce only, and the
    list says that freshness was not proved.
    """
    evidence = Evidence.parse(data)
    policy = policy if policy is not None else VerificationPolicy()
    checks = Checklist(f"{title} ({evidence.claims or 'no claims'}; unsigned, not trusted)")
    if nonce is None:
        checks.add(
            "evidence.nonce",
            None,
            found=evidence.nonce.hex()[:32] + "…",
            detail="no expected nonce given: the runner chose it, so freshness is not proved",
        )
    else:
        padded = nonce.ljust(NONCE_SIZE, b"\0")
        checks.add(
            "evidence.nonce",
            evidence.nonce == padded,
            expected=padded.hex(),
            found=evidence.nonce.hex(),
        )
    # The binding: REPORT_DATA must be the nonce the file names (verify_report's report-data).
    policy = policy.replace(report_data=evidence.nonce)
    ref_checks, policy = references_checklist(
        evidence.references,
        trust,
        evidence.report,
        evidence.vcek,
        policy,
        at=at,
        title="signed reference measurements (from the evidence)",
    )
    checks.extend(ref_checks)
    checks.extend(
        verify_report(
            evidence.report,
            evidence.vcek,
            policy=policy,
            ask=evidence.ask,
            ark=evidence.ark,
            at=at,
            crl=crl,
            roots=roots,
        )
    )
    return checks
