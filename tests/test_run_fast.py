"""``keep run``'s fast path: a build recorded complete, a kept development reference, no rewrites.

Each shortcut must be exactly as strict as the way around it: a changed byte in any output or
input, a replaced tool, or another development key sends the run back through the pipeline or the
signer, and what runs is still checked byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from keep.cli import main
from runtime.run import runner
from toolchain.errors import EvidenceError
from toolchain.image import record, tools
from toolchain.image.cache import BuildCache, CacheHit
from toolchain.image.keep_build import KeepBuild, build_keep
from toolchain.measure.plan import PLAN_FILE, LaunchPlan
from toolchain.release import TRUSTED_ARTIFACTS
from toolchain.sign import generate_private_key
from toolchain.sign.keys import DEV_KEY_NAME, write_key_pair
from toolchain.state import state_dir

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
#: the trusted artifacts (both microkernels among them) and the provenance record
OUTPUTS = (*TRUSTED_ARTIFACTS, "provenance.json")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> KeepBuild:
    app = tmp_path_factory.mktemp("runfast-app") / "hello.wat"
    shutil.copyfile(HELLO, app)
    return build_keep(app, tmp_path_factory.mktemp("out"), vcpu_counts=(1,))


def _app(build: KeepBuild) -> Path:
    return next(p for p in build.out_dir.parent.glob("runfast-app*/hello.wat"))


def _recorded(build: KeepBuild, **kwargs: object) -> KeepBuild | None:
    return record.recorded_build(_app(build), build.out_dir, vcpu_counts=(1,), **kwargs)  # type: ignore[arg-type]


def test_a_finished_build_is_recognised_with_its_outputs_digests(built: KeepBuild) -> None:
    found = _recorded(built)
    assert found is not None
    assert found.artifacts == built.artifacts
    assert found.plan == built.plan  # parsed once, from the re-hashed bytes
    assert found.launch_digests == built.launch_digests
    assert found.provenance == built.provenance
    assert dict(found.output_digests) == dict(built.output_digests)
    assert set(found.output_digests) == {*OUTPUTS, *(n for n in built.artifacts if ".whl" in n)}


def test_other_parameters_are_another_build(built: KeepBuild) -> None:
    app = _app(built)
    assert record.recorded_build(app, built.out_dir, vcpu_counts=(1, 2)) is None
    assert record.recorded_build(app, built.out_dir, vcpu_counts=(1,), opt="Os") is None
    # Another guest memory size is another launch plan and measurement: never this record.
    other_memory = 512 << 20
    assert record.recorded_build(app, built.out_dir, vcpu_counts=(1,), memory=other_memory) is None
    assert (
        record.recorded_build(app, built.out_dir, vcpu_counts=(1,), cache=BuildCache(enabled=False))
        is None
    )


@pytest.mark.parametrize("name", [*OUTPUTS, "wheel"])
def test_a_changed_output_is_not_recognised(
    built: KeepBuild, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if name == "wheel":
        name = next(n for n in built.artifacts if n.endswith(".whl"))
    path = built.out_dir / name
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert _recorded(built) is None
        assert f"{path} does not match its recorded SHA-256" in capsys.readouterr().err
        path.unlink()
        assert _recorded(built) is None  # a missing output
    finally:
        path.write_bytes(original)
    assert _recorded(built) is not None


def test_a_changed_application_is_not_recognised(built: KeepBuild) -> None:
    app = _app(built)
    original = app.read_bytes()
    try:
        app.write_bytes(original + b"\n")
        assert _recorded(built) is None
    finally:
        app.write_bytes(original)
    assert _recorded(built) is not None


@pytest.fixture
def source_copy(tmp_path: Path, built: KeepBuild) -> Path:
    """A copy of the source tree, recorded as the root ``built`` was made from."""
    copy = tmp_path / "src"
    for package in ("keep", "toolchain", "runtime"):
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copyfile(ROOT / "pyproject.toml", copy / "pyproject.toml")
    app = _app(built)
    inputs = record.current_inputs(app, copy)
    assert inputs is not None
    where = record.record_path(
        BuildCache(), app, built.out_dir, vcpu_counts=(1,), opt="O2", root=copy
    )
    outputs = {**built.artifacts, "provenance.json": built.provenance}
    record.write_record(where, inputs, outputs, built.launch_digests)
    assert _recorded(built, root=copy) is not None
    return copy


@pytest.mark.parametrize(
    "source",
    ["runtime/guest/ukernel/entry.S", "runtime/guest/wasm/wasi.c", "toolchain/measure/keep.py"],
)
def test_a_changed_source_file_is_not_recognised(
    built: KeepBuild, source_copy: Path, source: str
) -> None:
    path = source_copy / source
    assert path.is_file(), f"{source} moved: update the test"
    path.write_bytes(path.read_bytes() + b"\n")
    assert _recorded(built, root=source_copy) is None


def test_a_new_source_file_or_changed_metadata_is_not_recognised(
    built: KeepBuild, source_copy: Path
) -> None:
    (source_copy / "runtime" / "guest" / "wasm" / "extra.h").write_text("#define EXTRA 1\n")
    assert _recorded(built, root=source_copy) is None
    (source_copy / "runtime" / "guest" / "wasm" / "extra.h").unlink()
    assert _recorded(built, root=source_copy) is not None
    pyproject = source_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("version =", "version  =", 1))
    assert _recorded(built, root=source_copy) is None


@pytest.mark.parametrize("tool", ["zig", "wasm2c", "wasmtime", "wasm2c-runtime/wasm-rt.h"])
def test_a_changed_tool_is_not_recognised(
    built: KeepBuild, tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    located = tools.tool_files()
    assert located is not None
    replacement = tmp_path / Path(tool).name  # a binary elsewhere; a source with other bytes
    shutil.copyfile(located[tool], replacement)
    if tool.startswith("wasm2c-runtime/"):
        replacement.write_bytes(replacement.read_bytes() + b"\n")
    monkeypatch.setattr(tools, "tool_files", lambda: {**located, tool: replacement})
    assert _recorded(built) is None


def test_another_pyelftools_or_python_is_not_recognised(
    built: KeepBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(sys, "version", sys.version + " (another build)")
        assert _recorded(built) is None
    stamp = tools.file_stamp

    def other_elftools(path: Path) -> str:
        return stamp(path) + ("|replaced" if "elftools" in str(path) else "")

    monkeypatch.setattr(tools, "file_stamp", other_elftools)
    assert _recorded(built) is None


def test_a_tool_rewritten_in_place_gets_another_stamp(tmp_path: Path) -> None:
    """Same size, same mtime (set back): the ctime and inode still tell the tool was replaced."""
    tool = tmp_path / "zig"
    tool.write_bytes(b"A" * 64)
    before = tool.stat()
    stamp = tools.file_stamp(tool)
    replacement = tmp_path / "zig.new"
    replacement.write_bytes(b"B" * 64)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement.replace(tool)
    assert tools.file_stamp(tool) != stamp


def test_a_tool_found_elsewhere_than_the_build_used_is_not_recorded(
    built: KeepBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(built)
    inputs = record.current_inputs(app, ROOT)
    assert inputs is not None
    inputs["tool/zig"] = f"{tmp_path / 'zig'}|1|2|3|4"
    assert record.tool_identities(inputs) is None


def _why_not_recorded(build: KeepBuild) -> str:
    """The inputs that differ from the record (for a failing test's message)."""
    app = _app(build)
    where = record.record_path(
        BuildCache(), app, build.out_dir, vcpu_counts=(1,), opt="O2", root=ROOT
    )
    loaded = record._load(where)
    if loaded is None:
        return f"no record at {where}"
    now = record.current_inputs(app, ROOT) or {}
    return repr({k: (v, now.get(k)) for k, v in loaded[0].items() if now.get(k) != v})


def test_the_fast_path_imports_no_build_tooling(built: KeepBuild) -> None:
    assert _recorded(built) is not None, _why_not_recorded(built)
    script = (
        "import sys, io\n"
        "from pathlib import Path\n"
        "from runtime.run.runner import RunOptions, _Log, build_for_run\n"
        f"found = build_for_run(Path({str(_app(built))!r}), Path({str(built.out_dir)!r}), 1, "
        "_Log(RunOptions(app=Path('x'), log=io.StringIO())))\n"
        "heavy = ('elftools', 'wasmtime', 'toolchain.image.app', 'toolchain.measure.keep',\n"
        "         'toolchain.image.compile', 'importlib.metadata')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_keep_run_takes_the_recorded_build_and_rebuilds_a_changed_one(
    built: KeepBuild, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from toolchain.image import keep_build

    def no_pipeline(*args: object, **kwargs: object) -> KeepBuild:
        raise AssertionError("the build pipeline ran for a recorded build")

    argv = ["run", "--dev", "--backend", "nil", "--build-dir", str(built.out_dir), str(_app(built))]
    with monkeypatch.context() as patch:
        patch.setattr(keep_build, "build_keep", no_pipeline)
        assert main(argv) == 0
    assert "hello from a keep" in capfd.readouterr().out
    runtime_elf = built.out_dir / "runtime.elf"
    original = runtime_elf.read_bytes()
    runtime_elf.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    assert main(argv) == 0  # the pipeline ran again and put the built bytes back
    assert runtime_elf.read_bytes() == original
    assert "does not match its recorded SHA-256" in capfd.readouterr().err


def test_the_plan_is_parsed_from_the_bytes_it_was_checked_by(
    built: KeepBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recognised build's plan is read once, and hashed and parsed from that one read: bytes
    that are not the recorded ones are never parsed into the plan that boots."""
    path = built.artifacts[PLAN_FILE]
    recorded = built.output_digests[PLAN_FILE]
    with pytest.raises(EvidenceError) as caught:
        LaunchPlan.load(path, sha256="0" * 64)
    assert caught.value.field == PLAN_FILE
    assert f"sha256:{recorded}" in str(caught.value.found)
    original = path.read_bytes()
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counted(self: Path) -> bytes:
        reads.append(self)
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    found = _recorded(built)
    assert found is not None
    assert found.plan == built.plan
    assert reads.count(path) == 1
    # A plan file changed since it was recorded is rebuilt, like any changed output.
    monkeypatch.undo()
    try:
        path.write_bytes(original + b" ")
        assert _recorded(built) is None
    finally:
        path.write_bytes(original)


def _run_dev(build: KeepBuild) -> int:
    argv = ["run", "--dev", "--backend", "nil", "--build-dir", str(build.out_dir), str(_app(build))]
    return main(argv)


def _signer(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    line = next(line for line in err.splitlines() if "signature 1 (key " in line)
    return line.split("signature 1 (key ")[1].split(",")[0]


def _kept(build: KeepBuild) -> Path:
    from toolchain.sign import dev_key

    dev_key()  # the slot is named by the development key: make sure there is one
    found = runner._dev_reference_path(build, "nil", 1)
    assert found is not None
    return found[0]


def test_the_development_reference_is_kept_per_build_and_verified_each_run(
    built: KeepBuild, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run_dev(built) == 0
    capfd.readouterr()
    kept = _kept(built)
    assert kept.is_file()
    signed = kept.read_bytes()

    def no_signing(*args: object, **kwargs: object) -> object:
        raise AssertionError("signed again although a kept reference verifies")

    with monkeypatch.context() as patch:
        patch.setattr(runner, "development_references", no_signing)
        assert _run_dev(built) == 0
    assert "✔ signature 1" in capfd.readouterr().err
    assert kept.read_bytes() == signed

    # A damaged kept reference does not verify: it is dropped and signed anew, never trusted.
    kept.write_bytes(signed.replace(b'"signatures"', b'"signatureZ"'))
    assert _run_dev(built) == 0
    assert "✔ signature 1" in capfd.readouterr().err
    assert b'"signatures"' in kept.read_bytes()


def test_a_new_development_key_never_takes_a_reference_kept_for_the_old_one(
    built: KeepBuild, capfd: pytest.CaptureFixture[str]
) -> None:
    assert _run_dev(built) == 0
    old_signer, old_kept = _signer(capfd), _kept(built)
    key_file = state_dir("keys") / DEV_KEY_NAME
    for stale in key_file.parent.glob(f"{DEV_KEY_NAME}*"):
        stale.unlink()
    write_key_pair(key_file, generate_private_key("ecdsa-p384"))
    new_kept = _kept(built)
    assert new_kept != old_kept  # kept under the new key's ID
    assert _run_dev(built) == 0
    new_signer = _signer(capfd)
    assert new_signer != old_signer
    assert new_kept.is_file()

    # Even the new key's slot holding the old key's envelope is caught by the verification.
    new_kept.write_bytes(old_kept.read_bytes())
    assert _run_dev(built) == 0
    assert _signer(capfd) == new_signer


def test_an_unchanged_rebuild_rewrites_no_file(built: KeepBuild) -> None:
    def stamps() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(built.out_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(built.out_dir.rglob("*"))
            if p.is_file()
        }

    build_keep(_app(built), built.out_dir, vcpu_counts=(1,))  # settles anything the tests changed
    before = stamps()
    build_keep(_app(built), built.out_dir, vcpu_counts=(1,))
    assert stamps() == before


def test_a_cache_hit_restores_a_changed_file_but_leaves_an_equal_one(tmp_path: Path) -> None:
    hit = CacheHit({"out": b"bytes"})
    target = tmp_path / "out"
    hit.restore("out", target)
    first = target.stat()
    hit.restore("out", target)
    assert target.stat().st_ino == first.st_ino
    target.write_bytes(b"other")
    hit.restore("out", target)
    assert target.read_bytes() == b"bytes"
    link = tmp_path / "link"
    link.symlink_to(target)
    hit.restore("out", link)
    assert not link.is_symlink()  # a link is replaced by the file, never followed


def test_an_expired_kept_reference_is_signed_anew(
    built: KeepBuild, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime, timedelta

    class TwoDaysAgo(datetime):
        @classmethod
        def now(cls, tz: object = None) -> TwoDaysAgo:  # type: ignore[override]
            return super().now(tz) - timedelta(days=2)  # type: ignore[arg-type,return-value]

    kept = _kept(built)
    kept.unlink(missing_ok=True)
    with monkeypatch.context() as patch:
        patch.setattr(runner, "datetime", TwoDaysAgo)
        runner._development_reference(built, "nil", 1)
    expired = kept.read_bytes()
    assert _run_dev(built) == 0
    assert "✔ validity window" in capfd.readouterr().err
    assert kept.read_bytes() != expired
