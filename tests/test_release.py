"""The committed releases: every envelope under reference-measurements/*/ verifies against the
built-in trust root (toolchain/sign/release-trust/root.json, through TUF), and while the package
version is a published release, a fresh build of this tree reproduces every subject and launch
digest in it (the code of keep reproduce).

So a change to the trusted stack (microkernel, runtime, examples, pinned toolchain) fails here
until the version moves on; a new release then needs new signed references. Older releases
reproduce too: keep reproduce rebuilds them from a commit of the git history, built by that
commit's own code and compared by the running code. Releases 0.1.0 and 0.2.0 do not sign their
source, so the commit is one the user names (--source-commit); an unsigned file beside the
envelopes never chooses it."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keep.cli import main as keep_main
from toolchain import __version__
from toolchain.release import reproduce
from toolchain.release.history import SOURCE_COMMIT_FILE
from toolchain.sign import Envelope, TrustPolicy, verify_envelope
from toolchain.sign.intoto import parse_statement

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "reference-measurements"
# The built-in trust anchor: the TUF root pinned in the package (0.1.0 and 0.2.0 are legacy
# targets of its top-level targets role).
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


def _release_commit(version: str) -> str:
    """The commit release ``version`` was built from, as a tenant would look it up: the note
    beside its envelopes (0.2.0), else the commit that added its folder (0.1.0)."""
    note = REFERENCES / version / SOURCE_COMMIT_FILE
    if note.is_file():
        return note.read_text(encoding="utf-8").strip()
    folder = f"reference-measurements/{version}/"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--", folder],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()[-1]


def _signs_its_source(envelope: Path) -> bool:
    _, predicate = parse_statement(Envelope.parse(envelope.read_bytes()).payload)
    return predicate is not None and predicate.source is not None


def _published_releases(*, signed_source: bool) -> list[str]:
    return sorted({p.parent.name for p in ENVELOPES if _signs_its_source(p) == signed_source})


@pytest.mark.parametrize("version", _published_releases(signed_source=True) or [None])
def test_a_release_reproduces_from_its_signed_source(
    version: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """keep reproduce --version V for a release that signs its source (0.3.0 on): the signed
    commit is exported, checked by treeSha256 before anything runs, and every digest reproduces;
    no source needs naming."""
    if version is None:
        pytest.skip("no published release signs its source yet (0.3.0 will): nothing to check")
    missing = _history_missing()
    if missing is not None:
        pytest.skip(f"no git history to export release {version} from: {missing}")
    status = keep_main(["reproduce", "--version", version])  # the built-in trust anchor
    out = capsys.readouterr().out
    assert status == 0, out
    assert "✗" not in out
    envelopes = len(list((REFERENCES / version).glob("*.dsse.json")))
    assert out.count("✔ source tree: treeSha256") == envelopes
    assert out.count("=> REPRODUCED (") == envelopes
    assert "UNSIGNED" not in out


@pytest.mark.parametrize("version", _published_releases(signed_source=False))
def test_a_release_reproduces_from_a_named_commit(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """keep reproduce --version V --source-commit SHA: the commit, exported from the git history,
    is built (by its own code when V is not this code's version) and every digest of the signed
    references reproduces; the output says loudly that the source was not signed."""
    missing = _history_missing()
    if missing is not None:
        pytest.skip(f"no git history to export release {version} from: {missing}")
    commit = _release_commit(version)
    argv = ["reproduce", "--version", version, "--source-commit", commit]  # the built-in policy
    status = keep_main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "✗" not in out
    envelopes = len(list((REFERENCES / version).glob("*.dsse.json")))
    assert out.count("=> REPRODUCED from an UNSIGNED source") == envelopes
    assert out.count(f"- source NOT SIGNED (release {version} was signed without") == envelopes
    assert out.count(f"commit {commit[:12]} (named by --source-commit)") == envelopes
    assert out.count("✔ artifact ukernel.elf") == envelopes
    own_code = "by the tree's own keep build" in out
    assert own_code == (version != __version__)


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


@pytest.mark.parametrize(
    "version", sorted(set(_older_releases()) & set(_published_releases(signed_source=False)))
)
def test_an_older_release_without_its_sources_is_unusable_input(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No named source, or a named commit outside any clone or missing from it: exit 2, saying
    what to name and how to get the history; nothing is built."""
    trust = str(TRUST)
    outside = _copy_release(tmp_path / "plain", version)
    envelope = str(outside / "hello.dsse.json")
    assert keep_main(["reproduce", envelope, "--trust", trust]) == 2
    err = capsys.readouterr().err
    assert f"release {version} was signed without its source" in err
    assert "--source-commit SHA" in err
    assert keep_main(["reproduce", envelope, "--trust", trust, "--source-commit", "0" * 40]) == 2
    err = capsys.readouterr().err
    assert "not inside a git clone" in err
    assert "--unshallow" in err

    repo = tmp_path / "clone"
    release = _copy_release(repo, version)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "release without sources")
    envelope = str(release / "hello.dsse.json")
    assert keep_main(["reproduce", envelope, "--trust", trust, "--source-commit", "0" * 40]) == 2
    err = capsys.readouterr().err
    assert f"{'0' * 40} is not a commit in this clone" in err
    # Never an option to git: a name starting with "-" would be read as one.
    assert keep_main(["reproduce", envelope, "--trust", trust, "--source-commit=--output=x"]) == 2
    assert "'--output=x' is not a commit name" in capsys.readouterr().err


@pytest.mark.parametrize("version", _published_releases(signed_source=True))
def test_a_release_that_signs_its_source_outside_a_clone_is_unusable_input(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its envelope names the commit to rebuild (signed), so without the history that holds it
    the error names that commit and how to get the history; nothing is built."""
    outside = _copy_release(tmp_path / "plain", version)
    envelope = outside / "hello.dsse.json"
    _, predicate = parse_statement(Envelope.parse(envelope.read_bytes()).payload)
    assert predicate is not None
    assert predicate.source is not None
    assert keep_main(["reproduce", str(envelope), "--trust", str(TRUST)]) == 2
    err = capsys.readouterr().err
    assert f"the sources of release {version} are commit {predicate.source.commit}" in err
    assert "not inside a git clone" in err
    assert "--unshallow" in err


@pytest.mark.parametrize("version", _older_releases())
def test_an_older_release_in_a_shallow_clone_says_how_to_get_the_history(
    version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shallow clone lacks the release's commit: exit 2 and how to unshallow."""
    if _history_missing() == f"{ROOT} is not a git checkout":
        pytest.skip(f"{ROOT} is not a git checkout: nothing to clone shallowly")
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(shallow)],
        capture_output=True,
        check=True,
    )
    envelope = shallow / "reference-measurements" / version / "hello.dsse.json"
    argv = ["reproduce", str(envelope)]  # the built-in policy
    assert keep_main([*argv, "--source-commit", _release_commit(version)]) == 2
    err = capsys.readouterr().err
    assert "this clone is shallow" in err
    assert "git fetch --unshallow" in err


#: Appended to a crafted commit's modules: a mark when its code runs, and a run() that claims
#: success (the later definition wins), as in the report of issue 10.
_CRAFTED = """
import pathlib as _pathlib

_pathlib.Path({marker!r}).write_text("crafted code ran")


def run(args):
    print("  ✔ artifact ukernel.elf: sha256, sha384 reproduced")
    print("  => REPRODUCED")
    return 0
"""


def test_an_unsigned_note_never_chooses_the_code_that_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10, finding 1: a crafted commit whose keep reproduce and keep build print ✔ and
    exit 0, named in reference-measurements/0.1.0/source-commit. keep reproduce does not take
    it (exit 2, nothing of it runs); named on purpose with --source-commit, its build code runs
    but builds nothing, and the running code's comparison says NOT REPRODUCED (exit 1)."""
    if _history_missing() is not None:
        pytest.skip(f"no git history to clone: {_history_missing()}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], capture_output=True, check=True)
    marker = tmp_path / "crafted-code-ran"
    _git(clone, "checkout", "-q", "-b", "crafted")
    for module in ("cli/reproduce.py", "cli/build.py"):
        path = clone / "keep" / module
        crafted = _CRAFTED.format(marker=str(marker))
        path.write_text(path.read_text(encoding="utf-8") + crafted, encoding="utf-8")
    _git(clone, "commit", "-q", "-a", "-m", "keep reproduce: always reproduced")
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    _git(clone, "checkout", "-q", "-")
    release = clone / "reference-measurements" / "0.1.0"
    (release / SOURCE_COMMIT_FILE).write_text(commit + "\n", encoding="utf-8")
    argv = ["reproduce", str(release / "hello.dsse.json")]  # the built-in policy

    assert keep_main(argv) == 2
    captured = capsys.readouterr()
    assert "REPRODUCED" not in captured.out
    assert "release 0.1.0 was signed without its source" in captured.err
    assert (
        f"the UNSIGNED note {release / SOURCE_COMMIT_FILE} suggests {commit[:12]}" in captured.err
    )
    assert not marker.exists(), "the crafted commit's code ran"

    assert keep_main([*argv, "--source-commit", commit]) == 1
    out = capsys.readouterr().out
    assert "✗ artifact ukernel.elf: expected an artifact of the rebuild, found not built" in out
    assert "✗ launch digests: expected a launch plan to recompute them from, found not built" in out
    assert "=> NOT REPRODUCED" in out
    assert "=> REPRODUCED" not in out  # the crafted build's own output is never shown as ours
    assert marker.exists()  # named on purpose: its build code ran, and decided nothing
