"""atheris target: certificate loading (PEM, DER, PkiPath) and AMD's VCEK/VLEK extension parser.

Run: python tests/fuzz/fuzz_certs.py -runs=N. The input either is a whole certificate file, or
feeds the extension values directly (hwID, TCB levels, productName) so the DER decoding of
each is reached without a valid certificate around it.
"""

from __future__ import annotations

import sys

import atheris
from _seeds import patched, seed

with atheris.instrument_imports():
    from toolchain.errors import KeepError
    from toolchain.snp import certs

_OIDS = [f"1.3.6.1.4.1.3704.1.{x}" for x in ("1", "2", "4", "5")] + [
    f"1.3.6.1.4.1.3704.1.3.{x}" for x in range(1, 10)
]


_SEEDS = [seed("trustee/test-vcek-invalid-new.der"), seed("virtee-sev/vcek_turin.der")]


def TestOneInput(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    try:
        if provider.ConsumeBool():
            values = {
                _OIDS[provider.ConsumeIntInRange(0, len(_OIDS) - 1)]: provider.ConsumeBytes(
                    provider.ConsumeIntInRange(0, 80)
                )
                for _ in range(provider.ConsumeIntInRange(0, 12))
            }
            turin = provider.ConsumeBool()
            certs.parse_vek_extension_values(values).tcb(turin=turin)
        else:
            base = _SEEDS[provider.ConsumeIntInRange(0, len(_SEEDS) - 1)]
            rest = provider.ConsumeBytes(provider.remaining_bytes())
            blob = patched(base, rest) if provider.ConsumeBool() else rest
            for cert in certs.load_certificates(blob):
                certs.parse_vcek_extensions(cert).tcb(turin=False)
                certs.vek_kind(cert)
                certs.product_from_issuer(cert)
    except KeepError:
        return


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
