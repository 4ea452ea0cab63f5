"""What a published release directory holds, and where the examples it covers come from.

::

    reference-measurements/<version>/
    ├── <example>.dsse.json      signed statement: subjects = TRUSTED_ARTIFACTS, launch digests
    └── <example>/               the release's own bytes of those artifacts, plus provenance.json
                                 (so a tenant whose rebuild differs sees *where* it differs)

One envelope per example application ``examples/<example>/<app>.wat`` (or ``.wasm``). The VMM
wheel is a component of the predicate, never a subject: the VMM is untrusted by design.
"""

from __future__ import annotations

from pathlib import Path

from toolchain.errors import InputError
from toolchain.measure.keep import SNP_UKERNEL_ELF
from toolchain.measure.plan import PLAN_FILE

#: The measured, trusted artifacts of a keep: the subjects of a release statement (the
#: microkernel twice: for the simulated platform, and for ``snp``, whose launch digests the
#: statement signs too).
TRUSTED_ARTIFACTS = ("app.wasm", "ukernel.elf", SNP_UKERNEL_ELF, "runtime.elf", PLAN_FILE)
#: Launch configurations of a release (CPU generations come from toolchain.measure.reference).
RELEASE_VCPU_COUNTS = (1, 2, 4)
RELEASE_BACKENDS = ("kvm", "nil", "snp")
ENVELOPE_SUFFIX = ".dsse.json"
REFERENCES_DIR = "reference-measurements"
APP_SUFFIXES = (".wat", ".wasm")


def example_name(envelope: Path) -> str:
    """``hello`` for ``.../hello.dsse.json``."""
    name = envelope.name
    if not name.endswith(ENVELOPE_SUFFIX):
        raise InputError(f"{envelope}: a release envelope is named <example>{ENVELOPE_SUFFIX}")
    return name[: -len(ENVELOPE_SUFFIX)]


def published_dir(envelope: Path) -> Path:
    """The directory holding the release's bytes for ``envelope`` (it may be absent)."""
    return envelope.parent / example_name(envelope)


def release_envelopes(directory: Path) -> list[Path]:
    """Every envelope of one release directory, sorted; an error when there is none."""
    if not directory.is_dir():
        raise InputError(f"no published release at {directory}")
    envelopes = sorted(directory.glob(f"*{ENVELOPE_SUFFIX}"))
    if not envelopes:
        raise InputError(f"{directory} holds no signed envelopes (*{ENVELOPE_SUFFIX})")
    return envelopes


def example_apps(source_root: Path) -> dict[str, Path]:
    """example name → application source, for every ``examples/<name>/`` holding exactly one
    ``.wat``/``.wasm`` file (other examples, such as a guest image, are not keeps)."""
    examples = source_root / "examples"
    if not examples.is_dir():
        raise InputError(f"{source_root} has no examples/ directory")
    apps: dict[str, Path] = {}
    for directory in sorted(p for p in examples.iterdir() if p.is_dir()):
        found = sorted(p for p in directory.iterdir() if p.suffix in APP_SUFFIXES and p.is_file())
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise InputError(f"{directory} holds several applications ({names}); keep one")
        if found:
            apps[directory.name] = found[0]
    if not apps:
        raise InputError(f"no example applications (*.wat, *.wasm) under {examples}")
    return apps
