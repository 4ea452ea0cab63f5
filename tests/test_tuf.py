"""TUF: references verified from a pinned root; every refusal names the role and the check.

Each test builds its own repository from throw-away file keys (the project's token is never
used), with copies of the committed releases 0.1.0 and 0.2.0 imported as legacy targets.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keep.cli import main
from toolchain.errors import EvidenceError, InputError
from toolchain.sign import (
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    build_statement,
    generate_private_key,
    sign_statement,
    verify_envelope,
)
from toolchain.sign import tuf_repository as tuf
from toolchain.sign.keys import load_public_key, write_key_pair
from toolchain.sign.tokens import FileKey
from toolchain.sign.trust import TrustPolicy

ROOT = Path(__file__).resolve().parent.parent
LEGACY_KEY = ROOT / "toolchain/sign/release-trust/keys/keepstack-release-2026.pub.pem"
RELEASE = "keepstack-release-2027"
ARTIFACTS = {"app.wasm": b"\0asm\1\0\0\0 test app", "ukernel.elf": b"\x7fELF microkernel"}


class Keys:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root1 = self.make("root-1")
        self.root2 = self.make("root-2")
        self.release = self.make(RELEASE)

    def make(self, name: str) -> FileKey:
        path = self.directory / f"{name}.pem"
        private = generate_private_key()
        write_key_pair(path, private)
        return FileKey(private, str(path))

    def ring(self, *extra: FileKey) -> tuf.Keyring:
        return tuf.Keyring((self.root1, self.root2, self.release, *extra))


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    return Keys(folder)


def _release_envelope(
    repo: tuf.Repository, release: str, key: FileKey, *, claims: str | None = None
) -> Path:
    """A release folder with artifacts and an envelope signed by ``key`` (whose predicate
    names release ``claims``, by default the folder's)."""
    folder = repo.directory / release / "hello"
    folder.mkdir(parents=True)
    subjects = {}
    for name, data in ARTIFACTS.items():
        (folder / name).write_bytes(data)
        subjects[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha384": hashlib.sha384(data).hexdigest(),
        }
    now = datetime.now(UTC).replace(microsecond=0)
    predicate = KeepPredicate(
        release=claims or release,
        configs=[LaunchConfig("milan", 1, 0x30000, "kvm", bytes(range(48)))],
        components=[ComponentDigest(n, s["sha256"], s["sha384"]) for n, s in subjects.items()],
        toolchain={"ziglang": "0.15.2"},
        provenance_sha256="ab" * 32,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=365),
    )
    envelope = repo.directory / release / "hello.dsse.json"
    envelope.write_bytes(sign_statement(build_statement(predicate, subjects), key))
    return envelope


@pytest.fixture
def repo(tmp_path: Path, keys: Keys) -> tuf.Repository:
    """root/targets 2 of 2 (root-1, root-2), release role for 0.*, 0.1.0/0.2.0 as legacy, and a
    0.3.0 signed by the release key."""
    directory = tmp_path / "reference-measurements"
    directory.mkdir()
    for release in ("0.1.0", "0.2.0"):
        shutil.copytree(ROOT / "reference-measurements" / release, directory / release)
    repository = tuf.Repository(directory)
    ring = keys.ring()
    tuf.init(
        repository,
        ring,
        root_keys=[keys.root1, keys.root2],
        root_threshold=2,
        online_key=keys.release,
    )
    tuf.import_legacy(
        repository,
        ring,
        ["0.1.0", "0.2.0"],
        load_public_key(LEGACY_KEY),
        legacy_name="keepstack-release-2026",
    )
    tuf.add_release_key(repository, ring, keys.release, name=RELEASE, releases=["0.*"])
    _release_envelope(repository, "0.3.0", keys.release)
    tuf.add_targets(repository, ring, RELEASE, tuf.release_files(repository, "0.3.0"))
    return repository


@pytest.fixture
def pinned(repo: tuf.Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The first root, pinned by a tenant (a copy outside the repository)."""
    path = tmp_path / "pinned-root.json"
    shutil.copyfile(repo.metadata / "1.root.json", path)
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(repo.directory))
    monkeypatch.setenv("KEEPSTACK_STATE_DIR", str(tmp_path / "client-state"))
    return path


def _verify(repo: tuf.Repository, pinned: Path, envelope: str) -> tuple[bool, str]:
    policy = TrustPolicy.select(pinned)
    release = envelope.split("/", 1)[0]
    checklist, references = verify_envelope(
        (repo.directory / envelope).read_bytes(),
        policy,
        artifacts=repo.directory / release / Path(envelope).name.removesuffix(".dsse.json"),
    )
    return references is not None, checklist.render()


def _refusal(pinned: Path) -> str:
    with pytest.raises(EvidenceError) as caught:
        TrustPolicy.select(pinned)
    return caught.value.message


# --- what verifies ------------------------------------------------------------------------------


@pytest.mark.parametrize("envelope", ["0.1.0/hello.dsse.json", "0.2.0/cpu.dsse.json"])
def test_legacy_releases_verify_through_the_targets_role(
    repo: tuf.Repository, pinned: Path, envelope: str
) -> None:
    ok, text = _verify(repo, pinned, envelope)
    assert ok, text
    assert "TUF root v1" in text
    assert "role targets (legacy release, one-time trust step)" in text
    assert "key keepstack-release-2026" in text


def test_a_release_verifies_with_its_release_role_keys(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    ok, text = _verify(repo, pinned, "0.3.0/hello.dsse.json")
    assert ok, text
    assert f"TUF target: 0.3.0/hello.dsse.json (role {RELEASE}" in text
    assert keys.release.key_id in text


def test_cli_references_verify_names_root_role_and_keys(
    repo: tuf.Repository, pinned: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = repo.directory / "0.3.0/hello.dsse.json"
    assert main(["references", "verify", str(envelope), "--trust", str(pinned)]) == 0
    out = capsys.readouterr().out
    assert "TUF root v1 sha256" in out
    assert f"signing role: TUF role {RELEASE}, key IDs" in out


# --- what TUF refuses ---------------------------------------------------------------------------


def test_an_envelope_no_role_lists_is_refused(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    _release_envelope(repo, "0.4.0", keys.release)  # validly signed, never published
    ok, text = _verify(repo, pinned, "0.4.0/hello.dsse.json")
    assert not ok
    assert "✗ TUF target" in text
    assert "listed by no TUF targets role" in text


def test_a_changed_envelope_is_not_the_listed_one(repo: tuf.Repository, pinned: Path) -> None:
    path = repo.directory / "0.3.0/hello.dsse.json"
    path.write_bytes(path.read_bytes().replace(b'"payloadType"', b'"payloadType" ', 1))
    ok, text = _verify(repo, pinned, "0.3.0/hello.dsse.json")
    assert not ok
    assert "✗ TUF target" in text


def test_a_listed_envelope_signed_by_another_key_is_refused(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    """The release role lists it, but only the role's keys may sign its DSSE envelope."""
    _release_envelope(repo, "0.5.0", keys.root1)
    tuf.add_targets(repo, keys.ring(), RELEASE, tuf.release_files(repo, "0.5.0"))
    ok, text = _verify(repo, pinned, "0.5.0/hello.dsse.json")
    assert not ok
    assert "✗ threshold" in text


def test_the_envelope_release_must_be_its_target_folder(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    """A key delegated only 0.6.* cannot sign a 0.3.0 reference, even one it lists under 0.6.0/."""
    other = keys.make("release-0.6")
    ring = keys.ring(other)
    tuf.add_release_key(repo, ring, other, name="release-0.6", releases=["0.6.*"])
    _release_envelope(repo, "0.6.0", other, claims="0.3.0")
    tuf.add_targets(repo, ring, "release-0.6", tuf.release_files(repo, "0.6.0"))
    ok, text = _verify(repo, pinned, "0.6.0/hello.dsse.json")
    assert not ok
    assert "key is not trusted for release 0.3.0 (only 0.6.0)" in text


def test_a_release_role_cannot_list_paths_outside_its_delegation(
    repo: tuf.Repository, keys: Keys
) -> None:
    _release_envelope(repo, "1.0.0", keys.release)
    with pytest.raises(InputError, match=f"role {RELEASE} may not list 1.0.0/"):
        tuf.add_targets(repo, keys.ring(), RELEASE, tuf.release_files(repo, "1.0.0"))


def test_client_refuses_a_role_listing_paths_outside_its_delegation(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    """Hash lookup bypasses python-tuf's path search: the client checks delegated paths."""
    _release_envelope(repo, "1.0.0", keys.release)
    role = repo.targets(RELEASE)
    role.signed.targets["1.0.0/hello.dsse.json"] = tuf._target(repo, "1.0.0/hello.dsse.json")
    role.signed.version += 1
    keys.ring().sign(role, RELEASE, [keys.release.key_id], 1)
    repo.write(role, RELEASE)
    tuf._snapshot_and_timestamp(repo, keys.ring(), {RELEASE: role}, datetime.now(UTC), None)
    assert f"role {RELEASE}, delegated paths check" in _refusal(pinned)


def test_tampered_targets_metadata_is_refused(repo: tuf.Repository, pinned: Path) -> None:
    version = repo.snapshot().signed.meta["targets.json"].version
    path = repo.metadata / f"{version}.targets.json"
    document = json.loads(path.read_bytes())
    document["signed"]["targets"]["0.1.0/hello.dsse.json"]["length"] += 1
    path.write_text(json.dumps(document))
    assert "role targets, signature threshold check" in _refusal(pinned)


def test_wrongly_signed_timestamp_is_refused(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    timestamp = repo.timestamp()
    timestamp.signed.version += 1
    tuf.Keyring((keys.root1,)).sign(timestamp, "timestamp", [keys.root1.key_id], 1)
    repo.write(timestamp, "timestamp")
    assert "role timestamp, signature threshold check" in _refusal(pinned)


def test_expired_timestamp_is_refused(repo: tuf.Repository, pinned: Path, keys: Keys) -> None:
    tuf.refresh(repo, keys.ring(), now=datetime.now(UTC) - timedelta(days=31))
    assert "role timestamp, expiry check" in _refusal(pinned)


def test_expired_release_role_is_refused(repo: tuf.Repository, pinned: Path, keys: Keys) -> None:
    _release_envelope(repo, "0.7.0", keys.release)
    tuf.add_targets(
        repo,
        keys.ring(),
        RELEASE,
        tuf.release_files(repo, "0.7.0"),
        now=datetime.now(UTC) - timedelta(days=366),
    )
    tuf.refresh(repo, keys.ring())
    assert f"role {RELEASE}, expiry check" in _refusal(pinned)


def test_rolled_back_timestamp_is_refused(repo: tuf.Repository, pinned: Path, keys: Keys) -> None:
    old = (repo.metadata / "timestamp.json").read_bytes()
    tuf.refresh(repo, keys.ring())
    TrustPolicy.select(pinned)  # this client has now seen the newer timestamp
    (repo.metadata / "timestamp.json").write_bytes(old)
    assert "role timestamp, version (rollback or mix-and-match) check" in _refusal(pinned)


def test_mix_and_match_targets_is_refused(repo: tuf.Repository, pinned: Path) -> None:
    """The snapshot names targets v3; an older targets served under that name is refused."""
    version = repo.snapshot().signed.meta["targets.json"].version
    shutil.copyfile(
        repo.metadata / f"{version - 1}.targets.json", repo.metadata / f"{version}.targets.json"
    )
    assert "role targets, version (rollback or mix-and-match) check" in _refusal(pinned)


def test_missing_metadata_is_refused_by_role(repo: tuf.Repository, pinned: Path) -> None:
    version = repo.snapshot().signed.meta[f"{RELEASE}.json"].version
    (repo.metadata / f"{version}.{RELEASE}.json").unlink()
    assert f"role {RELEASE}, presence (file missing) check" in _refusal(pinned)


# --- ceremonies ----------------------------------------------------------------------------------


def test_old_client_follows_a_root_rotation_made_with_the_commands(
    repo: tuf.Repository, pinned: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client pinned to root v1 follows v2 (root-2 replaced by root-3) and then v3."""
    assert TrustPolicy.select(pinned).tuf.root_version == 1  # type: ignore[union-attr]
    root3 = keys.make("root-3")
    base = ["tuf", "rotate-root", "--repository", str(repo.directory)]
    signers = ["--key", keys.root1.description, "--key", keys.root2.description]
    assert (
        main([*base, *signers, "--add", root3.description, "--remove", keys.root2.key_id[:12]]) == 0
    )
    assert "root v2: role root changed" in capsys.readouterr().out
    # v3 changes the targets keys too; root-2 (no longer a root key) cannot sign it, and the
    # refused ceremony leaves nothing behind.
    before = sorted(p.name for p in repo.metadata.iterdir())
    assert (
        main(
            [
                *base,
                "--key",
                keys.root1.description,
                "--key",
                keys.root2.description,
                "--role",
                "targets",
                "--add",
                root3.description + ".pub",
            ]
        )
        == 2
    )
    assert "role root (old keys) needs 2 signature(s)" in capsys.readouterr().err
    assert sorted(p.name for p in repo.metadata.iterdir()) == before
    assert (
        main(
            [
                *base,
                "--key",
                keys.root1.description,
                "--key",
                root3.description,
                "--key",
                keys.release.description,
                "--role",
                "targets",
                "--remove",
                keys.root2.key_id[:12],
                "--add",
                root3.description,
            ]
        )
        == 0
    )
    ok, text = _verify(repo, pinned, "0.2.0/hello.dsse.json")
    assert ok, text
    assert "TUF root v3" in text
    ok, text = _verify(repo, pinned, "0.3.0/hello.dsse.json")
    assert ok, text


def test_a_root_not_signed_by_the_old_root_threshold_is_refused(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    root3 = keys.make("root-3")
    new = repo.root()
    new.signed.version += 1
    new.signed.revoke_key(keys.root2.key_id, "root")
    new.signed.add_key(tuf.tuf_key(root3.public_key, "root-3"), "root")
    # Signed by the new root keys only: root-2 of the old 2-of-2 did not agree.
    tuf.Keyring((keys.root1, root3)).sign(new, "root", [keys.root1.key_id, root3.key_id], 2)
    repo.write(new, "root")
    assert "role root, signature threshold check" in _refusal(pinned)


def test_revoking_a_release_key_stops_its_releases(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    other = keys.make("release-0.8")
    ring = keys.ring(other)
    tuf.add_release_key(repo, ring, other, name="release-0.8", releases=["0.8.*"])
    _release_envelope(repo, "0.8.0", other)
    tuf.add_targets(repo, ring, "release-0.8", tuf.release_files(repo, "0.8.0"))
    assert _verify(repo, pinned, "0.8.0/hello.dsse.json")[0]
    assert tuf.revoke_key(repo, ring, other.key_id[:10]) == ["release-0.8"]
    ok, text = _verify(repo, pinned, "0.8.0/hello.dsse.json")
    assert not ok
    assert "listed by no TUF targets role" in text
    assert _verify(repo, pinned, "0.3.0/hello.dsse.json")[0]


def test_revoking_the_online_key_needs_its_successor_first(
    repo: tuf.Repository, keys: Keys
) -> None:
    with pytest.raises(InputError, match="role snapshot would have 0 key"):
        tuf.revoke_key(repo, keys.ring(), keys.release.key_id[:10])


def test_ceremony_refuses_too_few_keys_naming_the_role(
    repo: tuf.Repository, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["tuf", "refresh", "--repository", str(repo.directory), "--key", keys.root1.description]
    )
    assert status == 2
    assert "role snapshot needs 1 signature(s)" in capsys.readouterr().err


def test_cli_init_release_publish_and_show_with_expiry_dates(
    tmp_path: Path,
    keys: Keys,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = tmp_path / "repo"
    directory.mkdir()
    repo = tuf.Repository(directory)
    base = ["--repository", str(directory)]
    roots = ["--root-key", keys.root1.description, "--root-key", keys.root2.description]
    assert main(["tuf", "init", *base, *roots, "--online-key", keys.release.description]) == 0
    assert (
        main(
            [
                "tuf",
                "add-release-key",
                *base,
                "--key",
                keys.root1.description,
                "--key",
                keys.root2.description,
                "--release-key",
                keys.release.description,
                "--releases",
                "0.3.*",
            ]
        )
        == 0
    )
    _release_envelope(repo, "0.3.0", keys.release)
    assert (
        main(
            [
                "tuf",
                "add-targets",
                *base,
                "0.3.0",
                "--role",
                RELEASE,
                "--key",
                keys.release.description,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["tuf", "show", *base]) == 0
    out = capsys.readouterr().out
    expires = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert f"role timestamp: version 3, expires {expires}" in out
    assert f"role {RELEASE}: version 2" in out
    assert "paths 0.3.*/*, 0.3.*/*/*; 3 target(s)" in out
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(directory))
    monkeypatch.setenv("KEEPSTACK_TRUST", str(repo.metadata / "1.root.json"))
    envelope = directory / "0.3.0/hello.dsse.json"
    assert main(["references", "verify", str(envelope)]) == 0
    assert "(from $KEEPSTACK_TRUST) root" in capsys.readouterr().out


# --- publication and the entry point of the other commands --------------------------------------


def test_publish_to_tuf_finds_the_release_role_and_verifies(
    repo: tuf.Repository, pinned: Path, keys: Keys
) -> None:
    from toolchain.release.publish import publish_to_tuf

    _release_envelope(repo, "0.9.0", keys.release)
    role, written = publish_to_tuf(repo.directory, "0.9.0", keys.release, pinned_root=pinned)
    assert role == RELEASE
    assert written.is_file()
    assert _verify(repo, pinned, "0.9.0/hello.dsse.json")[0]


def test_publish_to_tuf_refuses_a_key_without_a_release_role(
    repo: tuf.Repository, keys: Keys
) -> None:
    from toolchain.release.publish import publish_to_tuf

    stranger = keys.make("stranger")
    _release_envelope(repo, "0.9.1", stranger)
    before = sorted(p.name for p in repo.metadata.iterdir())
    with pytest.raises(InputError, match=r"no TUF release role .* lets key"):
        publish_to_tuf(repo.directory, "0.9.1", stranger)
    assert sorted(p.name for p in repo.metadata.iterdir()) == before


def test_reproduce_verifies_through_tuf(repo: tuf.Repository, pinned: Path) -> None:
    """keep reproduce's first step takes the same trust: role and root named, or refused."""
    from toolchain.release.reproduce import verify_release

    policy = TrustPolicy.select(pinned)
    checklist, references = verify_release(repo.directory / "0.3.0/hello.dsse.json", policy)
    assert references is not None, checklist.render()
    assert f"role {RELEASE}" in checklist.render()
    stray = repo.directory / "0.4.0"
    stray.mkdir()
    shutil.copyfile(repo.directory / "0.2.0/hello.dsse.json", stray / "hello.dsse.json")
    (stray / "hello.dsse.json").write_bytes(
        (stray / "hello.dsse.json").read_bytes().rstrip() + b"\n\n"
    )
    checklist, references = verify_release(stray / "hello.dsse.json", policy)
    assert references is None
    assert "✗ TUF target" in checklist.render()


def test_builtin_root_is_the_default_and_never_falls_back(
    repo: tuf.Repository,
    pinned: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The built-in trust is the root.json in the package; without its metadata the command
    stops: it never falls back to anything else beside the root (the removed trust.toml)."""
    shipped = tmp_path / "release-trust"
    shipped.mkdir()
    shutil.copyfile(pinned, shipped / "root.json")
    (shipped / "trust.toml").write_text("version = 1\nthreshold = 1\n")  # never read
    monkeypatch.setattr(
        TrustPolicy, "builtin_file", classmethod(lambda cls, name="root.json": shipped / name)
    )
    policy = TrustPolicy.select()
    assert policy.tuf is not None
    assert "pinned built-in root" in policy.describe()
    assert main(["trust", "show"]) == 0
    out = capsys.readouterr().out
    assert f"TUF role {RELEASE}: threshold 1, 3 target(s)" in out
    assert "timestamp  expires" in out
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="has no metadata/ folder"):
        TrustPolicy.select()
