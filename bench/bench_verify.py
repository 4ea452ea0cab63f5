"""Attestation report verification throughput (one core).

Figures:
* cold: the first full verification after the chain caches are cleared (ARK self-signature, ASK
  and VCEK RSA-PSS signatures, extension parsing, then the report);
* warm: reports verified per second with the chain cached (parse 1184 bytes + every check);
* baseline: the bare ECDSA P-384 verification of bytes 0x000-0x29F alone with `cryptography`,
  the floor any verifier pays; the ratio shows what every other check costs.
No pip-installable Python peer verifier was found to compare with. Target: >= 500 reports/s,
and a warm report within 1.3x of the bare ECDSA verification (the ``ratio`` column: time per
report / time per ECDSA verify, both measured in this run).
"""

from __future__ import annotations

import os
import statistics
import time
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from toolchain.snp.certs import load_certificate
from toolchain.snp.report import AttestationReport
from toolchain.verify import VerificationPolicy, Verifier

ROOT = Path(__file__).resolve().parent.parent
SNP = ROOT / "tests" / "data" / "vectors" / "snp-reports"
SAMPLES = {
    "Genoa v3": (
        "microsoft-tee-av/genoa_attestation_report.bin",
        "microsoft-tee-av/genoa_vcek.pem",
    ),
    "Turin v5": (
        "microsoft-tee-av/turin_attestation_report.bin",
        "microsoft-tee-av/turin_vcek.pem",
    ),
    "Milan v2": ("enarx-steward/report.bin", "enarx-steward/vcek.der"),
}
#: One verifier for the run, as a service would hold it: its cache makes the warm figures.
VERIFIER = Verifier.amd()
SECONDS = float(os.environ.get("KEEP_BENCH_SECONDS", "2"))


def interleaved(first, second, seconds: float = SECONDS) -> tuple[float, float]:
    """Median seconds per call of ``first`` and of ``second``, timed in alternating batches of
    50, so a change in the machine's load meets both alike (the ratio is what counts)."""
    times: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times[0]) < 5:
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            for _ in range(50):
                fn()
            out.append((time.perf_counter() - start) / 50)
    return statistics.median(times[0]), statistics.median(times[1])


def _verify_bytes(data: bytes, vcek, policy: VerificationPolicy) -> bool:
    return VERIFIER.verify_report(AttestationReport.parse(data), vcek, policy=policy).ok


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    policy = VerificationPolicy()
    print(
        f"{'sample':<10} {'cold ms':>8} {'warm /s':>9} {'ECDSA only /s':>14} "
        f"{'us/report':>10} {'us/ECDSA':>9} {'ratio':>6}"
    )
    for label, (report_name, vcek_name) in SAMPLES.items():
        data = (SNP / report_name).read_bytes()
        vcek = load_certificate((SNP / vcek_name).read_bytes())

        VERIFIER.clear_caches()
        start = time.perf_counter()
        first = VERIFIER.verify_report(AttestationReport.parse(data), vcek, policy=policy)
        cold_ms = (time.perf_counter() - start) * 1000
        if not first.ok:
            raise SystemExit(f"{label}: the sample does not verify:\n{first.render()}")

        key = vcek.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        report = AttestationReport.parse(data)
        signature = encode_dss_signature(report.signature_r, report.signature_s)
        signed = data[:0x2A0]
        per_report, per_ecdsa = interleaved(
            partial(_verify_bytes, data, vcek, policy),
            partial(key.verify, signature, signed, ec.ECDSA(hashes.SHA384())),
        )
        print(
            f"{label:<10} {cold_ms:8.2f} {1 / per_report:9.0f} {1 / per_ecdsa:14.0f} "
            f"{per_report * 1e6:10.0f} {per_ecdsa * 1e6:9.0f} {per_report / per_ecdsa:6.2f}"
        )
    print("target: >= 500 reports/s warm on one core; ratio (per report / per ECDSA) <= 1.3")


if __name__ == "__main__":
    main()
