"""atheris target: the offline AMD CRL reader, its signature check and revocation lookup.

Run: python tests/fuzz/fuzz_crl.py -runs=N.
"""

from __future__ import annotations

import sys

import atheris
from _seeds import patched, seed

with atheris.instrument_imports():
    from toolchain.errors import KeepError
    from toolchain.snp import certs
    from toolchain.snp.tcb import Product

_ARK = certs.amd_certificate(Product.GENOA, "ark")
_ASK = certs.amd_certificate(Product.GENOA, "ask")
_SEED = seed("enarx-steward/genoa_vcek_crl_2022-10-31.der")


def TestOneInput(data: bytes) -> None:
    blob = patched(_SEED, data[1:]) if data[:1] == b"\x01" else data
    try:
        crl = certs.read_crl(blob)
    except KeepError:
        return
    certs.crl_signed_by(crl, _ARK)
    certs.crl_revocation(crl, _ASK)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
