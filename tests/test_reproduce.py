"""Releases round trip: a throwaway release (throwaway key, copy of the source tree) is published
with ``make_release`` and reproduced with ``reproduce``/``keep reproduce``; a changed byte in the
microkernel or the runtime makes the rebuild fail and names the artifact; an envelope signed by
an untrusted key is refused before anything is built."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolchain.checks import Checklist
from toolchain.cli import main as keep_main
from toolchain.errors import InputError
from toolchain.release import TRUSTED_ARTIFACTS, make_release, reproduce
from toolchain.release.difference import json_differences
from toolchain.sign import (
    Envelope,
    TrustPolicy,
    generate_private_key,
    sign_statement,
    write_key_pair,
)
from toolchain.sign.trust import BUILTIN_SOURCE_DIR, KEYS_DIR, POLICY_FILE

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.0.1"


def _copy_sources(destination: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("runtime", "examples", "toolchain"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^version = "[^"]*"', f'version = "{VERSION}"', text, count=1)
    (destination / "pyproject.toml").write_text(text, encoding="utf-8")
    # The copy's built-in policy starts empty: only the throwaway release key will be in it.
    shutil.rmtree(destination / BUILTIN_SOURCE_DIR)
    (destination / BUILTIN_SOURCE_DIR).mkdir()
    _policy_file(destination).write_text("version = 1\nthreshold = 1\n", encoding="utf-8")
    return destination


def _policy_file(repo: Path) -> Path:
    """The built-in trust policy of a source tree (the copy the package ships)."""
    return repo / BUILTIN_SOURCE_DIR / POLICY_FILE


@dataclass(frozen=True)
class Published:
    repo: Path
    key: Path
    envelopes: dict[str, Path]

    @property
    def trust(self) -> TrustPolicy:
        return TrustPolicy.load(_policy_file(self.repo))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    repo = _copy_sources(tmp_path_factory.mktemp("repo"))
    key = tmp_path_factory.mktemp("keys") / "throwaway-release.pem"
    write_key_pair(key, generate_private_key("ecdsa-p384"))
    release = make_release(VERSION, key, repo)
    envelopes = {p.name.removesuffix(".dsse.json"): p for p in release.envelopes}
    return Published(repo, key, envelopes)


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


def test_release_layout(published: Published) -> None:
    assert sorted(published.envelopes) == ["cpu", "hello"]
    policy = published.trust
    assert len(policy.keys) == 1
    assert policy.keys[0].releases == ("0.*",)
    key_file = published.repo / BUILTIN_SOURCE_DIR / KEYS_DIR / "throwaway-release.pub.pem"
    assert key_file.is_file()
    for name, envelope in published.envelopes.items():
        statement = json.loads(Envelope.parse(envelope.read_bytes()).payload)
        assert sorted(s["name"] for s in statement["subject"]) == sorted(TRUSTED_ARTIFACTS)
        predicate = statement["predicate"]
        components = {c["name"] for c in predicate["components"]}
        assert f"keepstack-{VERSION}-py3-none-any.whl" in components  # a component, no subject
        configs = predicate["launchConfigurations"]
        assert len(configs) == 3 * 3 * 2  # generations × vCPU counts × backends
        assert {c["cpuGeneration"] for c in configs} == {"milan", "genoa", "turin"}
        assert {c["backend"] for c in configs} == {"kvm", "nil"}
        assert {c["vcpus"] for c in configs} == {1, 2, 4}
        assert predicate["development"] is False
        for artifact in (*TRUSTED_ARTIFACTS, "provenance.json"):
            assert (envelope.parent / name / artifact).is_file()


def test_round_trip_reproduces_every_digest(published: Published) -> None:
    for envelope in published.envelopes.values():
        checklist = reproduce(envelope, published.trust, published.repo)
        assert checklist.ok, checklist.render()
        names = _by_name(checklist)
        for artifact in TRUSTED_ARTIFACTS:
            assert names[f"artifact {artifact}"] is True
        launch = [c for c in checklist.checks if c.name.startswith("launch digest")]
        assert len(launch) == 3
        assert all(c.ok for c in launch)
        wheel = [c for c in checklist.checks if c.name.startswith("component keepstack-")]
        assert len(wheel) == 1
        assert wheel[0].ok is None


def test_cli_reproduces_a_version(published: Published, capsys: pytest.CaptureFixture[str]) -> None:
    trust = _policy_file(published.repo)
    argv = [
        "reproduce",
        "--version",
        VERSION,
        "--trust",
        str(trust),
        "--source",
        str(published.repo),
    ]
    assert keep_main(argv) == 0
    out = capsys.readouterr().out
    assert "✗" not in out
    assert out.count("=> REPRODUCED") == 2
    assert keep_main([*argv, "--json"]) == 0
    documents = json.loads(capsys.readouterr().out)
    assert [d["ok"] for d in documents] == [True, True]


def test_changed_microkernel_byte_names_ukernel_elf(published: Published, tmp_path: Path) -> None:
    boot = (published.repo / "runtime/ukernel/boot.c").read_text(encoding="utf-8")
    found = re.search(r"#define KEEP_EXIT_ATTEST_FAILED (\d+)", boot)
    assert found is not None
    old = found.group(0)
    new = old[:-1] + str((int(old[-1]) + 1) % 10)  # one byte
    source = _changed_copy(published, tmp_path, "runtime/ukernel/boot.c", old, new)
    checklist = reproduce(published.envelopes["hello"], published.trust, source)
    assert not checklist.ok
    names = _by_name(checklist)
    assert names["artifact ukernel.elf"] is False
    assert names["artifact launch-plan.json"] is False
    assert names["artifact runtime.elf"] is True
    assert names["artifact app.wasm"] is True
    launch = [c for c in checklist.checks if c.name.startswith("launch digest")]
    assert len(launch) == 3
    assert not any(c.ok for c in launch)
    details = {c.name: c.detail for c in checklist.checks}
    assert "section" in details["artifact ukernel.elf"]  # where: offset and ELF section
    assert "ukernel_sha256" in details["artifact launch-plan.json"]  # where: JSON path


def test_changed_runtime_byte_names_runtime_elf(published: Published, tmp_path: Path) -> None:
    source = _changed_copy(
        published,
        tmp_path,
        "runtime/wasm/wasi.c",
        "#define WASI_EBADF 8\n",
        "#define WASI_EBADF 9\n",
    )
    checklist = reproduce(published.envelopes["hello"], published.trust, source)
    names = _by_name(checklist)
    assert names["artifact runtime.elf"] is False
    assert names["artifact ukernel.elf"] is True
    assert not checklist.ok


def test_untrusted_signature_is_refused_before_any_build(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = Envelope.parse(published.envelopes["hello"].read_bytes()).payload
    forged = tmp_path / "hello.dsse.json"
    forged.write_bytes(sign_statement(json.loads(payload), generate_private_key("ecdsa-p384")))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("reproduce built from an envelope that does not verify")

    monkeypatch.setattr("toolchain.build.keep_build.build_keep", no_build)
    checklist = reproduce(forged, published.trust, published.repo)
    assert not checklist.ok
    assert _by_name(checklist)["threshold"] is False
    assert _by_name(checklist)["rebuild"] is None
    trust = _policy_file(published.repo)
    argv = ["reproduce", str(forged), "--trust", str(trust), "--source", str(published.repo)]
    assert keep_main(argv) == 1


def test_unusable_input_exits_2(published: Published) -> None:
    trust = _policy_file(published.repo)
    assert keep_main(["reproduce", "--version", "9.9.9", "--trust", str(trust)]) == 2
    assert keep_main(["reproduce", "--trust", str(published.repo / "missing.toml")]) == 2


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


def test_json_differences_names_paths() -> None:
    first = {"inputs": {"a": "1"}, "regions": [{"data": "x", "label": "k"}], "n": 1}
    second = {"inputs": {"a": "2"}, "regions": [{"data": "y", "label": "k"}], "n": 1}
    assert json_differences(first, second) == ["inputs.a", "regions[0].data"]
    assert json_differences(first, first) == []
    assert json_differences([1], [1, 2]) == [" (length 1 vs 2)"]
