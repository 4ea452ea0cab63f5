"""atheris target: the report reader (raw, hex, base64, MSG_REPORT_RSP, embedded at an offset).

Run: python tests/fuzz/fuzz_report.py -runs=N (nox -s fuzz runs every target). Anything but a
KeepError escaping, or a parsed report that does not round-trip, is a crash.
"""

from __future__ import annotations

import sys

import atheris
from _seeds import patched, seed

with atheris.instrument_imports():
    from toolchain.errors import KeepError
    from toolchain.snp.report import AttestationReport, load_report


_SEED = seed("lit-sev-snp-utils/snp_report_msg_resp.bin")


def TestOneInput(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    offset = provider.ConsumeIntInRange(0, 64) if provider.ConsumeBool() else None
    use_seed = provider.ConsumeBool()
    blob = provider.ConsumeBytes(provider.remaining_bytes())
    if use_seed:
        blob = patched(_SEED, blob)
    try:
        report, _ = load_report(blob, offset=offset)
    except KeepError:
        return
    if AttestationReport.parse(report.to_bytes()) != report:
        raise AssertionError("parse(to_bytes()) differs")
    report.anomalies()
    report.fields()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
