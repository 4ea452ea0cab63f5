"""An evidence file from ``keep run --evidence``, verified as a whole: ``verify_evidence``.

The file (written by ``runtime.run.runner.write_evidence``) is JSON::

    _type        "https://keepstack.dev/evidence/v1"
    nonce        hex, 64 bytes: the REPORT_DATA the runner asked for
    report       hex, the 1184-byte ATTESTATION_REPORT
    vcek, ask, ark
                 PEM, the certificate chain the firmware handed over
    references   base64 of the signed reference envelope (DSSE) the run was checked against
    trees        (with ``keep run --dir``) [{"guest": path, "sha512": hex[, "rw": true]}], in
                 --dir order: the preopened trees the keep checked against REPORT_DATA, and
                 which of them it was told to hand back (``:rw``, bound too)
    backend, firmware, simulated_root, checklist
                 what the runner says about itself

One call checks everything with the entry point ``keep verify-report`` uses
(``Verifier.verify``): the report's signature and chain (the ARK only compared with the verifier's
roots: AMD's pinned ARKs, plus a simulated root only when the caller put it there), the nonce
binding (REPORT_DATA equals the file's nonce, and the caller's own nonce when given — only that
proves freshness to the caller; with ``trees``, REPORT_DATA = SHA-512(nonce || their digests), and
the caller's own directories' digests when given — only that proves which inputs the keep saw),
the reference envelope against the caller's trust policy, MEASUREMENT among the launch digests it
signs for the report's guest policy and CPU generation, and the verification policy.

Nothing unsigned decides: ``backend``, ``firmware``, ``simulated_root`` and the runner's
``checklist`` are shown in the title or ignored, never trusted; keys this version does not know
are ignored for the same reason. A file that cannot be read as evidence is an InputError.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.measure.abi import REPORT_DATA_SIZE
from toolchain.measure.trees import bind_report_data
from toolchain.sign import strict_json
from toolchain.sign.trust import TrustPolicy
from toolchain.snp.certs import load_certificate
from toolchain.snp.report import AttestationReport
from toolchain.verify.policy import VerificationPolicy
from toolchain.verify.references import References
from toolchain.verify.verifier import Verifier

EVIDENCE_TYPE = "https://keepstack.dev/evidence/v1"
#: The runner's nonce is the REPORT_DATA it asks the keep to attest.
NONCE_SIZE = REPORT_DATA_SIZE
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


def _trees(document: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    listed = _tree_list(document)
    trees = []
    for index, entry in enumerate(listed):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("guest"), str)
            and isinstance(entry.get("sha512"), str)
        ):
            raise InputError(f"evidence trees[{index}] must have string 'guest' and 'sha512'")
        digest = _hex(entry, "sha512")
        if len(digest) != 64:
            raise InputError(f"evidence trees[{index}].sha512 is {len(digest)} bytes, not 64")
        trees.append((entry["guest"], digest))
    return tuple(trees)


def _tree_list(document: dict[str, Any]) -> list[Any]:
    listed = document.get("trees", [])
    if not isinstance(listed, list):
        raise InputError("evidence field 'trees' must be a list")
    return listed


def _rw(document: dict[str, Any]) -> tuple[bool, ...]:
    """Each tree's ``rw`` (absent: False); anything but a boolean is refused."""
    flags = []
    for index, entry in enumerate(_tree_list(document)):
        flag = entry.get("rw", False) if isinstance(entry, dict) else False
        if not isinstance(flag, bool):
            raise InputError(f"evidence trees[{index}].rw must be true or false")
        flags.append(flag)
    return tuple(flags)


def _shown(trees: Sequence[tuple[str, bytes]], rw: Sequence[bool]) -> list[str]:
    flags = list(rw) or [False] * len(trees)
    return [
        f"{guest}{' (:rw)' if flag else ''} sha512:{digest.hex()}"
        for (guest, digest), flag in zip(trees, flags, strict=True)
    ]


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
    #: (guest path, SHA-512) of each preopened tree; bound by REPORT_DATA, so checked with it.
    trees: tuple[tuple[str, bytes], ...] = ()
    #: Per tree, whether the keep was told to hand it back (``:rw``); bound when one is.
    rw: tuple[bool, ...] = ()

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
            trees=_trees(document),
            rw=_rw(document),
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
    verifier: Verifier,
    trust: TrustPolicy,
    policy: VerificationPolicy | None = None,
    nonce: bytes | None = None,
    trees: Sequence[tuple[str, bytes]] | None = None,
    rw: Sequence[bool] = (),
    at: datetime | None = None,
    crl: bytes | None = None,
    title: str = "evidence",
) -> Checklist:
    """Verify an evidence file as a whole (see the module's contract); every check is listed.

    ``verifier`` holds the roots: evidence from the simulated firmware verifies only when the
    caller built it with that root. ``nonce`` is the caller's expected REPORT_DATA; without it the
    binding is checked against the file's own nonce only, and the list says that freshness was not
    proved. ``trees`` are the (guest path, digest) pairs the caller computed from its own
    directories (``toolchain.measure.trees``), ``rw`` which of them the caller preopened ``:rw``;
    without them the file's own list is what REPORT_DATA is checked against.
    """
    evidence = Evidence.parse(data)
    policy = policy if policy is not None else VerificationPolicy()
    checks = Checklist(f"{title} ({evidence.claims or 'no claims'}; unsigned, not trusted)")
    _nonce_check(evidence, nonce, checks)
    _trees_check(evidence, trees, rw, checks)
    # The binding: REPORT_DATA must be the nonce the file names, or SHA-512(nonce || the
    # digests of its trees [|| their :rw flags]) (the verifier's report-data).
    bound = bind_report_data(
        evidence.nonce, [digest for _guest, digest in evidence.trees], evidence.rw
    )
    references = References.verify(
        evidence.references,
        trust,
        at=at,
        title="signed reference measurements (from the evidence)",
    )
    checks.extend(
        verifier.verify(
            evidence.report,
            evidence.vcek,
            policy=policy.replace(report_data=bound),
            references=references,
            ask=evidence.ask,
            ark=evidence.ark,
            at=at,
            crl=crl,
        )
    )
    return checks


def _nonce_check(evidence: Evidence, nonce: bytes | None, checks: Checklist) -> None:
    """The file's nonce is the caller's: only that proves the run is the one asked for."""
    if nonce is None:
        checks.add(
            "evidence.nonce",
            None,
            found=evidence.nonce.hex()[:32] + "…",
            detail="no expected nonce given: the runner chose it, so freshness is not proved",
        )
        return
    padded = nonce.ljust(NONCE_SIZE, b"\0")
    checks.add(
        "evidence.nonce",
        evidence.nonce == padded,
        expected=padded.hex(),
        found=evidence.nonce.hex(),
    )


def _trees_check(
    evidence: Evidence,
    trees: Sequence[tuple[str, bytes]] | None,
    rw: Sequence[bool],
    checks: Checklist,
) -> None:
    """The file's trees are the caller's directories: only that proves which inputs the keep saw."""
    if trees is not None:
        ours = _shown(trees, rw)
        theirs = _shown(evidence.trees, evidence.rw)
        checks.add(
            "evidence.trees",
            ours == theirs,
            expected="; ".join(ours) or "no trees",
            found="; ".join(theirs) or "no trees",
        )
    elif evidence.trees:
        checks.add(
            "evidence.trees",
            None,
            found=", ".join(
                f"{guest} sha512:{digest.hex()[:16]}…" for guest, digest in evidence.trees
            ),
            detail="no directories given: the binding proves the keep saw these digests, "
            "not which directories they are",
        )
