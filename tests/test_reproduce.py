"""Releases round trip: a throwaway release (throwaway key, a git repository holding a copy of the
source tree) is published with ``make_release``, signing its source, and reproduced with
``reproduce``/``keep reproduce``; a tree that is not the signed source is refused before anything
from it runs; for a release that signs no source, a changed byte in the microkernel or the
runtime makes the rebuild fail and names the artifact; an envelope signed by an untrusted key is
refused before anything is built."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from keep.cli import main as keep_main
from toolchain.checks import Checklist
from toolchain.errors import InputError
from toolchain.measure.plan import PLAN_FILE
from toolchain.release import TRUSTED_ARTIFACTS, make_release, reproduce
from toolchain.release.difference import json_differences
from toolchain.release.history import SourceTree
from toolchain.release.publish import Release
from toolchain.release.reproduce import rebuild_and_compare, verify_release
from toolchain.release.source import tree_sha256
from toolchain.sign import (
    Envelope,
    TrustPolicy,
    generate_private_key,
    load_private_key,
    sign_statement,
    write_key_pair,
)
from toolchain.sign import tuf_repository as tuf
from toolchain.sign.keys import public_path_for
from toolchain.sign.tokens import FileKey
from toolchain.sign.trust import BUILTIN_SOURCE_DIR, ROOT_FILE
from toolchain.sign.tuf_client import METADATA_DIR, REPOSITORY_ENV

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.0.1"


def _copy_sources(destination: Path, release_key: FileKey) -> Path:
    """The source tree with a TUF repository of its own: a throwaway root key, the release key
    delegated ``0.*`` (and online: snapshot, timestamp), its first root pinned in the copy."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("keep", "runtime", "examples", "toolchain"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^version = "[^"]*"', f'version = "{VERSION}"', text, count=1)
    (destination / "pyproject.toml").write_text(text, encoding="utf-8")
    root_key = FileKey(generate_private_key(), "throwaway-root")
    ring = tuf.Keyring((root_key, release_key))
    repo = tuf.Repository(destination / "reference-measurements")
    tuf.init(repo, ring, root_keys=[root_key], root_threshold=1, online_key=release_key)
    tuf.add_release_key(repo, ring, release_key, name="throwaway-release", releases=["0.*"])
    shutil.rmtree(destination / BUILTIN_SOURCE_DIR)
    (destination / BUILTIN_SOURCE_DIR).mkdir()
    shutil.copyfile(repo.metadata / "1.root.json", _root_file(destination))
    return destination


def _root_file(repo: Path) -> Path:
    """The built-in trust root of a source tree (the copy the package ships)."""
    return repo / BUILTIN_SOURCE_DIR / ROOT_FILE


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _commit_all(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@dataclass(frozen=True)
class Published:
    repo: Path
    key: Path
    envelopes: dict[str, Path]
    commit: str  # the release's source commit
    release: Release

    @property
    def trust(self) -> TrustPolicy:
        """Through TUF, from the root pinned in the tree, against the tree's metadata."""
        references = {REPOSITORY_ENV: str(self.repo / "reference-measurements")}
        return TrustPolicy.load_tuf_root(_root_file(self.repo), environ=references)

    @property
    def key_trust(self) -> TrustPolicy:
        """The release key alone (``--trusted-key``), for envelopes re-signed by a test."""
        return TrustPolicy.from_keys([load_private_key(self.key).public_key()])

    @property
    def trusted_key(self) -> list[str]:
        return ["--trusted-key", str(public_path_for(self.key))]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    key = tmp_path_factory.mktemp("keys") / "throwaway-release.pem"
    private = generate_private_key("ecdsa-p384")
    write_key_pair(key, private)
    repo = _copy_sources(tmp_path_factory.mktemp("repo"), FileKey(private, str(key)))
    _git(repo, "init", "-q")
    commit = _commit_all(repo, f"sources of release {VERSION}")
    release = make_release(VERSION, key, repo)
    envelopes = {p.name.removesuffix(".dsse.json"): p for p in release.envelopes}
    return Published(repo, key, envelopes, commit, release)


@pytest.fixture
def tuf_trust(published: Published, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``--trust ROOT.json`` with the tree's metadata as the TUF repository."""
    monkeypatch.setenv(REPOSITORY_ENV, str(published.repo / "reference-measurements"))
    return ["--trust", str(_root_file(published.repo))]


def _by_name(checklist: Checklist) -> dict[str, bool | None]:
    return {c.name: c.ok for c in checklist.checks}


def _changed_copy(published: Published, tmp_path: Path, relative: str, old: str, new: str) -> Path:
    source = tmp_path / "source"
    shutil.copytree(published.repo, source, ignore=shutil.ignore_patterns("reference-measurements"))
    path = source / relative
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{relative} no longer contains {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return source


def _as_if_unsigned(published: Published, name: str, source: Path) -> Checklist:
    """Rebuild ``source`` by the running code as for a release that signs no source (0.1.0,
    0.2.0): nothing stops a changed tree from being built, and the comparison names the
    artifacts that differ and where."""
    envelope = published.envelopes[name]
    checklist, references = verify_release(envelope, published.trust)
    assert references is not None, checklist.render()
    unsigned = replace(references, predicate=replace(references.predicate, source=None))
    tree = SourceTree(source, f"the changed copy {source}", own_code=False)
    return rebuild_and_compare(checklist, envelope, unsigned, tree)


#: Python that leaves a mark when it runs (appended to a crafted tree's modules).
_MARK = "\nimport pathlib as _p\n_p.Path({path!r}).write_text('crafted code ran')\n"


def test_release_layout(published: Published) -> None:
    assert sorted(published.envelopes) == ["cpu", "hello"]
    # The release role lists every file of the release, each signed by the release key only.
    assert published.release.tuf_role == "throwaway-release"
    metadata = published.repo / "reference-measurements" / METADATA_DIR
    assert published.release.metadata == metadata / "2.throwaway-release.json"
    tuf_trust = published.trust.tuf
    assert tuf_trust is not None
    listed = {t.path: t for t in tuf_trust.targets}
    references = published.repo / "reference-measurements"
    files = {p.relative_to(references).as_posix() for p in (references / VERSION).rglob("*")}
    assert set(listed) == {f for f in files if (references / f).is_file()}
    for target in listed.values():
        assert target.role == "throwaway-release"
        assert [k.key_id for k in target.policy.keys] == [published.release.key_id]
        assert target.policy.keys[0].releases == (VERSION,)
    for name, envelope in published.envelopes.items():
        statement = json.loads(Envelope.parse(envelope.read_bytes()).payload)
        assert sorted(s["name"] for s in statement["subject"]) == sorted(TRUSTED_ARTIFACTS)
        predicate = statement["predicate"]
        assert predicate["source"] == {
            "commit": published.commit,
            "treeSha256": tree_sha256(published.repo),
        }
        assert not (envelope.parent / "source-commit").exists()  # no unsigned note any more
        components = {c["name"] for c in predicate["components"]}
        assert f"keepstack-{VERSION}-py3-none-any.whl" in components  # a component, no subject
        configs = predicate["launchConfigurations"]
        assert len(configs) == 3 * 3 * 3  # generations × vCPU counts × backends
        assert {c["cpuGeneration"] for c in configs} == {"milan", "genoa", "turin"}
        assert {c["backend"] for c in configs} == {"kvm", "nil", "snp"}
        # snp is another platform's plan: never the kvm/nil digest of the same vCPU count.
        digests = {
            (c["backend"], c["cpuGeneration"], c["vcpus"]): c["launchDigest"] for c in configs
        }
        for generation in ("milan", "genoa", "turin"):
            for vcpus in (1, 2, 4):
                kvm = digests[("kvm", generation, vcpus)]
                assert digests[("nil", generation, vcpus)] == kvm
                assert digests[("snp", generation, vcpus)] != kvm
        assert {c["vcpus"] for c in configs} == {1, 2, 4}
        assert predicate["development"] is False
        for artifact in (*TRUSTED_ARTIFACTS, "provenance.json"):
            assert (envelope.parent / name / artifact).is_file()


def test_round_trip_reproduces_every_digest(published: Published) -> None:
    for envelope in published.envelopes.values():
        checklist = reproduce(envelope, published.trust, published.repo)
        assert checklist.ok, checklist.render()
        names = _by_name(checklist)
        assert names["source tree"] is True
        for artifact in TRUSTED_ARTIFACTS:
            assert names[f"artifact {artifact}"] is True
        launch = [c for c in checklist.checks if c.name.startswith("launch digest")]
        assert len(launch) == 3 * 2  # vCPU counts × platforms (kvm/nil, snp with C-bit 51)
        assert all(c.ok for c in launch)
        assert sum("× snp)" in c.name for c in launch) == 3
        wheel = [c for c in checklist.checks if c.name.startswith("component keepstack-")]
        assert len(wheel) == 1
        assert wheel[0].ok is None


def test_cli_reproduces_a_version(
    published: Published, tuf_trust: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Release 0.0.1 is not the running code's version: its signed commit is exported from the
    clone holding the envelopes, checked by treeSha256, built by its own code in a subprocess
    and compared by the running code; with --source the same holds for that directory."""
    envelopes = [str(published.envelopes[name]) for name in sorted(published.envelopes)]
    for extra, tree in (
        ([*envelopes], f"commit {published.commit[:12]} (signed in the statement)"),
        (["--version", VERSION, "--source", str(published.repo)], f"--source {published.repo}"),
    ):
        assert keep_main(["reproduce", *tuf_trust, *extra]) == 0
        out = capsys.readouterr().out
        assert "✗" not in out
        assert out.count("=> REPRODUCED (") == 2
        digest = tree_sha256(published.repo)
        assert out.count(f"✔ source tree: treeSha256 {digest}, signed of commit") == 2
        assert out.count(tree) == 2
        assert out.count("by the tree's own keep build") == 2
    hello = str(published.envelopes["hello"])
    assert keep_main(["reproduce", hello, *tuf_trust, "--json"]) == 0
    documents = json.loads(capsys.readouterr().out)
    assert [d["ok"] for d in documents] == [True]
    checks = {c["name"]: c for c in documents[0]["checks"]}
    assert checks["source tree"]["ok"] is True
    assert checks["rebuild"]["ok"] is None  # the tree's own build: its exit status is no ✔


def test_a_tree_that_is_not_the_signed_source_never_runs(
    published: Published,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--source DIR or --source-commit SHA naming another tree than the signed one: ✗ source
    tree (expected and found treeSha256) before anything from that tree runs; exit 1."""
    repo = tmp_path / "repo"
    shutil.copytree(published.repo, repo, symlinks=True)
    marker = tmp_path / "crafted-code-ran"
    build_cli = repo / "keep" / "cli" / "build.py"
    build_cli.write_text(
        build_cli.read_text(encoding="utf-8") + _MARK.format(path=str(marker)), encoding="utf-8"
    )
    _git(repo, "checkout", "-q", "-b", "crafted")
    _git(repo, "commit", "-q", "-m", "crafted build code", "--", "keep/cli/build.py")
    crafted = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-")
    monkeypatch.setenv(REPOSITORY_ENV, str(repo / "reference-measurements"))
    trust = _root_file(repo)
    envelope = repo / "reference-measurements" / VERSION / "hello.dsse.json"
    for extra in (["--source-commit", crafted], ["--source", str(repo)]):
        if extra[0] == "--source":
            _git(repo, "checkout", "-q", "crafted")
        assert keep_main(["reproduce", str(envelope), "--trust", str(trust), *extra]) == 1
        out = capsys.readouterr().out
        assert (
            f"✗ source tree: expected the signed treeSha256 of commit {published.commit[:12]}"
            in out
        )
        assert tree_sha256(published.repo) in out
        assert "- rebuild (not attempted: nothing from that tree ran)" in out
        assert "=> NOT REPRODUCED" in out
        assert not marker.exists(), "code from a tree that is not the signed source ran"


def test_reproduce_refuses_a_changed_copy_before_building(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library call too: a tree whose treeSha256 is not the signed one is never built."""

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("reproduce built a tree that is not the signed source")

    monkeypatch.setattr("toolchain.image.keep_build.build_keep", no_build)
    source = _changed_copy(
        published,
        tmp_path,
        "runtime/guest/wasm/wasi.c",
        "#define LAUNCH_ARGS_MAX (64u << 10)\n",
        "#define LAUNCH_ARGS_MAX (65u << 10)\n",
    )
    checklist = reproduce(published.envelopes["hello"], published.trust, source)
    assert not checklist.ok
    assert _by_name(checklist)["source tree"] is False
    assert _by_name(checklist)["rebuild"] is None


def test_snp_configurations_signed_with_the_simulated_digest_do_not_reproduce(
    published: Published, tmp_path: Path
) -> None:
    """What `keep statement --backend snp` signed before the snp plan existed: the kvm/nil
    digest under backend snp. The rebuild recomputes the snp plan's and names the difference."""
    statement = json.loads(Envelope.parse(published.envelopes["hello"].read_bytes()).payload)
    configs = statement["predicate"]["launchConfigurations"]
    kvm = {
        (c["cpuGeneration"], c["vcpus"]): c["launchDigest"]
        for c in configs
        if c["backend"] == "kvm"
    }
    for config in configs:
        if config["backend"] == "snp":
            config["launchDigest"] = kvm[(config["cpuGeneration"], config["vcpus"])]
    envelope = tmp_path / "reference-measurements" / VERSION / "hello.dsse.json"
    envelope.parent.mkdir(parents=True)
    envelope.write_bytes(sign_statement(statement, load_private_key(published.key)))
    checklist = reproduce(envelope, published.key_trust, published.repo)
    assert not checklist.ok
    launch = {c.name: c for c in checklist.checks if c.name.startswith("launch digest")}
    failed = sorted(name for name, check in launch.items() if not check.ok)
    assert failed == [
        f"launch digest, {n} vCPU{'s' if n > 1 else ''}, policy 0x30000 (milan/genoa/turin × snp)"
        for n in (1, 2, 4)
    ], checklist.render()
    check = launch[failed[0]]
    assert check.expected == kvm[("milan", 1)]
    assert check.found not in {None, kvm[("milan", 1)]}


def _unsigned_release(published: Published, directory: Path) -> Path:
    """The hello envelope re-signed without its source field (as releases 0.1.0 and 0.2.0 are),
    under ``directory/reference-measurements/``; returns the envelope."""
    statement = json.loads(Envelope.parse(published.envelopes["hello"].read_bytes()).payload)
    del statement["predicate"]["source"]
    references = directory / "reference-measurements"
    shutil.copytree(
        published.repo / "reference-measurements",
        references,
        ignore=shutil.ignore_patterns(VERSION),
    )
    envelope = references / VERSION / "hello.dsse.json"
    envelope.parent.mkdir()
    envelope.write_bytes(sign_statement(statement, load_private_key(published.key)))
    return envelope


def test_unsigned_release_cli_needs_a_named_source(
    published: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A release of another version whose statement signs no source: exit 2 unless the user
    names the tree; named, it reproduces with a loud NOT SIGNED line and verdict."""
    unsigned = _unsigned_release(published, tmp_path)
    trust = published.trusted_key
    assert keep_main(["reproduce", str(unsigned), *trust]) == 2
    err = capsys.readouterr().err
    assert f"release {VERSION} was signed without its source" in err
    assert "--source-commit SHA" in err
    argv = ["reproduce", str(unsigned), *trust, "--source", str(published.repo)]
    assert keep_main(argv) == 0
    out = capsys.readouterr().out
    assert f"- source NOT SIGNED (release {VERSION} was signed without its source" in out
    assert "that tree's own build code runs, unverified" in out
    assert "=> REPRODUCED from an UNSIGNED source" in out


def test_installed_package_rebuilds_from_the_current_directory(
    published: Published,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 11: a keepstack installed from its wheel (no examples/ beside the package) rebuilds
    its own version from the current directory when that is a Keepstack source tree of that
    version, and otherwise says to pass --source (exit 2, never a traceback)."""
    import toolchain

    monkeypatch.setattr("toolchain.image.keep_build.ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(toolchain, "__version__", VERSION)  # what the installed metadata says
    unsigned = _unsigned_release(published, tmp_path / "elsewhere")
    argv = ["reproduce", str(unsigned), *published.trusted_key]
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert keep_main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a Keepstack source tree" in err
    assert "--source DIR" in err
    monkeypatch.chdir(published.repo)
    assert keep_main(argv) == 0
    out = capsys.readouterr().out
    assert f"rebuilt from the current directory {published.repo} (version {VERSION})" in out
    assert "by the running code" in out
    assert "=> REPRODUCED from an UNSIGNED source" in out


def test_changed_microkernel_byte_names_ukernel_elf(published: Published, tmp_path: Path) -> None:
    header = "runtime/guest/ukernel/include/keep_abi.h"
    boot = (published.repo / header).read_text(encoding="utf-8")
    found = re.search(r"#define KEEP_EXIT_ATTEST_FAILED (\d+)", boot)
    assert found is not None
    old = found.group(0)
    new = old[:-1] + str((int(old[-1]) + 1) % 10)  # one byte
    source = _changed_copy(published, tmp_path, header, old, new)
    checklist = _as_if_unsigned(published, "hello", source)
    assert not checklist.ok
    names = _by_name(checklist)
    assert names["artifact ukernel.elf"] is False
    assert names[f"artifact {PLAN_FILE}"] is False
    assert names["artifact runtime.elf"] is True
    assert names["artifact app.wasm"] is True
    launch = [c for c in checklist.checks if c.name.startswith("launch digest")]
    assert len(launch) == 3 * 2  # kvm/nil and snp, per vCPU count
    assert not any(c.ok for c in launch)
    details = {c.name: c.detail for c in checklist.checks}
    assert "section" in details["artifact ukernel.elf"]  # where: offset and ELF section
    assert "ukernel_sha256" in details[f"artifact {PLAN_FILE}"]  # where: JSON path


def test_changed_runtime_byte_names_runtime_elf(published: Published, tmp_path: Path) -> None:
    source = _changed_copy(
        published,
        tmp_path,
        "runtime/guest/wasm/wasi.c",
        "#define LAUNCH_ARGS_MAX (64u << 10)\n",
        "#define LAUNCH_ARGS_MAX (65u << 10)\n",
    )
    checklist = _as_if_unsigned(published, "hello", source)
    names = _by_name(checklist)
    assert names["artifact runtime.elf"] is False
    assert names["artifact ukernel.elf"] is True
    assert not checklist.ok


def test_untrusted_signature_is_refused_before_any_build(
    published: Published,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    payload = Envelope.parse(published.envelopes["hello"].read_bytes()).payload
    forged = tmp_path / "hello.dsse.json"
    forged.write_bytes(sign_statement(json.loads(payload), generate_private_key("ecdsa-p384")))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("reproduce built from an envelope that does not verify")

    monkeypatch.setattr("toolchain.image.keep_build.build_keep", no_build)
    checklist = reproduce(forged, published.key_trust, published.repo)
    assert not checklist.ok
    assert _by_name(checklist)["threshold"] is False
    assert _by_name(checklist)["rebuild"] is None
    argv = ["reproduce", str(forged), "--source", str(published.repo)]
    assert keep_main([*argv, *published.trusted_key]) == 1
    # Through TUF, an envelope its metadata does not list is refused the same way.
    monkeypatch.setenv(REPOSITORY_ENV, str(published.repo / "reference-measurements"))
    assert keep_main([*argv, "--trust", str(_root_file(published.repo))]) == 1
    assert "✗ TUF target" in capsys.readouterr().out


def test_unusable_input_exits_2(
    published: Published, tuf_trust: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert keep_main(["reproduce", "--version", "9.9.9", *tuf_trust]) == 2
    assert keep_main(["reproduce", "--trust", str(published.repo / "missing.json")]) == 2
    # The removed policy format: refused by name, whether or not such a file exists.
    old = published.repo / "trust.toml"
    old.write_text("version = 1\n", encoding="utf-8")
    try:
        assert keep_main(["reproduce", "--trust", str(old)]) == 2
    finally:
        old.unlink()
    assert "the trust.toml policy format was removed in Keepstack 0.3.0" in capsys.readouterr().err


def test_make_release_refusals(published: Published, tmp_path: Path) -> None:
    inside = published.repo / "release.pem"
    shutil.copyfile(published.key, inside)
    inside.chmod(0o600)
    with pytest.raises(InputError, match="inside the repository"):
        make_release(VERSION, inside, published.repo)
    with pytest.raises(InputError, match="already published"):
        make_release(VERSION, published.key, published.repo)
    with pytest.raises(InputError, match="development version"):
        make_release("0.2.0.dev0", published.key, published.repo)
    with pytest.raises(InputError, match="package version is"):
        make_release("0.2.0", published.key, published.repo)
    # Publishing needs a TUF repository: its release roles decide who signs which release.
    repo = tmp_path / "repo"
    shutil.copytree(published.repo, repo, symlinks=True)
    shutil.rmtree(repo / "reference-measurements")
    with pytest.raises(InputError, match=r"no TUF repository in .* publishing a release needs one"):
        make_release(VERSION, published.key, repo)
    assert not (repo / "reference-measurements" / VERSION).exists()


def test_make_release_refuses_sources_its_commit_lacks(
    published: Published, tmp_path: Path
) -> None:
    """An ignored file under a trusted path would be built and hashed but not exported from the
    commit: the release would not reproduce from its signed commit, so it is refused."""
    repo = tmp_path / "repo"
    shutil.copytree(published.repo, repo, symlinks=True)
    (repo / ".gitignore").write_text("*.stray\n", encoding="utf-8")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "ignore strays", "--", ".gitignore")
    (repo / "examples" / "hello" / "left.stray").write_text("not committed", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"differ from commit \w{12}'s in examples/hello/left.stray"
    ):
        make_release(VERSION, published.key, repo)


def test_references_show_names_the_signed_source(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keep_main(["references", "show", str(published.envelopes["hello"])]) == 0
    out = capsys.readouterr().out
    digest = tree_sha256(published.repo)
    assert f"source       commit {published.commit}, treeSha256 {digest}" in out


def test_json_differences_names_paths() -> None:
    first = {"inputs": {"a": "1"}, "regions": [{"data": "x", "label": "k"}], "n": 1}
    second = {"inputs": {"a": "2"}, "regions": [{"data": "y", "label": "k"}], "n": 1}
    assert json_differences(first, second) == ["inputs.a", "regions[0].data"]
    assert json_differences(first, first) == []
    assert json_differences([1], [1, 2]) == [" (length 1 vs 2)"]
