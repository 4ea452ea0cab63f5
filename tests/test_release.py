"""The committed releases: every envelope under reference-measurements/*/ verifies against the
built-in trust policy (toolchain/sign/release-trust/), and while the package version is a
published release, a fresh build of this tree reproduces every subject and launch digest in it
(the code of keep reproduce).

So a change to the trusted stack (microkernel, runtime, examples, pinned toolchain) fails here
until the version moves on; a new release then needs new signed references. Older releases
reproduce too: keep reproduce rebuilds them with their own sources from the git history."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolchain import __version__
from toolchain.cli import main as keep_main
from toolchain.release import reproduce
from toolchain.release.history import SOURCE_COMMIT_FILE
from toolchain.sign import Envelope, TrustPolicy, verify_envelope
from toolchain.sign.intoto import parse_statement

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "reference-measurements"
TRUST = TrustPolicy.builtin_file()
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
    trust = TrustPolicy.load_builtin()
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
    trust = TrustPolicy.load_builtin()
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


def _older_releases() -> list[str]:
    return sorted({p.parent.name for p in ENVELOPES} - {__version__})


def _history_missing() -> str | None:
    """Why this checkout cannot provide older releases' sources (None when it can)."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"{ROOT} is not a git checkout"
    if done.stdout.strip() == "true":
        return f"{ROOT} is a shallow clone (git fetch --unshallow gives the history)"
    return None


@pytest.mark.parametrize("version", _older_releases())
def test_an_older_release_reproduces_with_its_own_sources(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """keep reproduce --version OLD: the release's commit, exported from the git history, is
    rebuilt by its own code, and every digest of the signed references reproduces."""
    missing = _history_missing()
    if missing is not None:
        pytest.skip(f"no git history to export release {version} from: {missing}")
    status = keep_main(["reproduce", "--version", version])  # the built-in policy
    out = capsys.readouterr().out
    assert status == 0, out
    assert "✗" not in out
    envelopes = len(list((REFERENCES / version).glob("*.dsse.json")))
    assert out.count(f"=> REPRODUCED with the sources of release {version}") == envelopes
    assert out.count("✔ artifact ukernel.elf") == envelopes
    assert f"release {version} is not this tree's version {__version__}" in out


def test_release_source_commit_locators_name_commits() -> None:
    for locator in sorted(REFERENCES.glob(f"*/{SOURCE_COMMIT_FILE}")):
        assert re.fullmatch(r"[0-9a-f]{40}\n", locator.read_text(encoding="utf-8")), locator


def _copy_release(destination: Path, version: str) -> Path:
    release = destination / "reference-measurements" / version
    release.mkdir(parents=True)
    for envelope in (REFERENCES / version).glob("*.dsse.json"):
        shutil.copyfile(envelope, release / envelope.name)
    return release


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        check=True,
    )


@pytest.mark.parametrize("version", _older_releases())
def test_an_older_release_without_its_sources_is_unusable_input(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside git, or with a locator naming a commit the clone lacks: exit 2, saying how to get
    the history; nothing is built."""
    trust = str(TRUST)
    outside = _copy_release(tmp_path / "plain", version)
    assert keep_main(["reproduce", str(outside / "hello.dsse.json"), "--trust", trust]) == 2
    err = capsys.readouterr().err
    assert "not inside a git clone" in err
    assert "--unshallow" in err

    repo = tmp_path / "clone"
    release = _copy_release(repo, version)
    (release / SOURCE_COMMIT_FILE).write_text("0" * 40 + "\n", encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "release without sources")
    assert keep_main(["reproduce", str(release / "hello.dsse.json"), "--trust", trust]) == 2
    err = capsys.readouterr().err
    assert f"commit {'0' * 40}" in err
    assert "not in this clone" in err


@pytest.mark.parametrize("version", _older_releases())
def test_an_older_release_in_a_shallow_clone_says_how_to_get_the_history(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shallow clone's oldest commit seems to add every file: it must not pass for the
    release's commit (that would rebuild the wrong sources); exit 2 and how to unshallow."""
    if _history_missing() == f"{ROOT} is not a git checkout":
        pytest.skip(f"{ROOT} is not a git checkout: nothing to clone shallowly")
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(shallow)],
        capture_output=True,
        check=True,
    )
    envelope = shallow / "reference-measurements" / version / "hello.dsse.json"
    assert keep_main(["reproduce", str(envelope)]) == 2  # the built-in policy
    err = capsys.readouterr().err
    assert "shallow" in err
    assert "git fetch --unshallow" in err
