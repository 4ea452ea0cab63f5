"""The committed releases: every envelope under reference-measurements/*/ verifies against
reference-measurements/trust.toml, and while the package version is a published release, a fresh
build of this tree reproduces every subject and launch digest in it (the code of keep reproduce).

So a change to the trusted stack (microkernel, runtime, examples, pinned toolchain) fails here
until the version moves on; a new release then needs new signed references."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolchain import __version__
from toolchain.release import reproduce
from toolchain.sign import Envelope, TrustPolicy, verify_envelope
from toolchain.sign.intoto import parse_statement

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "reference-measurements"
ENVELOPES = sorted(REFERENCES.glob("*/*.dsse.json"))


def _label(path: Path) -> str:
    return path.relative_to(REFERENCES).as_posix()


def test_published_releases_exist_or_say_so() -> None:
    if not ENVELOPES:
        pytest.skip("no release published under reference-measurements/ yet")
    assert all(p.parent.name == _release_of(p) for p in ENVELOPES)


def _release_of(envelope: Path) -> str:
    _, predicate = parse_statement(Envelope.parse(envelope.read_bytes()).payload)
    assert predicate is not None, f"{envelope}: not a Keepstack reference"
    return predicate.release


@pytest.mark.parametrize("envelope", ENVELOPES, ids=_label)
def test_committed_envelope_verifies(envelope: Path) -> None:
    """Signatures, threshold and key scope as of signing time; the current release also now."""
    trust = TrustPolicy.load(REFERENCES / "trust.toml")
    _, predicate = parse_statement(Envelope.parse(envelope.read_bytes()).payload)
    assert predicate is not None
    assert not predicate.development, "a development reference was committed as a release"
    moments = [predicate.not_before]
    if predicate.release == __version__:
        moments.append(datetime.now(UTC))
    for moment in moments:
        checklist, references = verify_envelope(envelope.read_bytes(), trust, at=moment)
        assert references is not None, checklist.render()


def test_this_version_reproduces() -> None:
    release = REFERENCES / __version__
    if not release.is_dir():
        pytest.skip(
            f"package version {__version__} has no published release "
            f"(reference-measurements/{__version__}/ is absent): nothing to reproduce"
        )
    envelopes = sorted(release.glob("*.dsse.json"))
    assert envelopes, f"{release} holds no envelopes"
    trust = TrustPolicy.load(REFERENCES / "trust.toml")
    failed = []
    for envelope in envelopes:
        checklist = reproduce(envelope, trust, ROOT)
        if not checklist.ok:
            failed.append(checklist.render())
    assert not failed, (
        "the trusted stack changed since release "
        f"{__version__} was signed; bump the version (and publish new references):\n"
        + "\n".join(failed)
    )
