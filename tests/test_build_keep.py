"""keep build end to end: artifacts, no-op rebuilds, provenance, the wheel, the repro checker."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest

from keep.cli import main as keep_main
from toolchain.errors import KeepError
from toolchain.image import compile as cc
from toolchain.image import keep_build, repro, tools, wheel
from toolchain.image.cache import BuildCache
from toolchain.measure.plan import PLAN_FILE, LaunchPlan

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
WHEEL = f"keepstack-{VERSION}-py3-none-any.whl"
TOP_LEVEL = {
    "app.wasm",
    "ukernel.elf",
    "ukernel-snp.elf",
    "runtime.elf",
    PLAN_FILE,
    "provenance.json",
    WHEEL,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> keep_build.KeepBuild:
    return keep_build.build_keep(HELLO, tmp_path_factory.mktemp("keep") / "out")


def test_cli_writes_every_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dir"
    assert keep_main(["build", str(HELLO), "--out", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["artifacts"]) == TOP_LEVEL
    assert {p.name for p in out.iterdir() if p.is_file()} == TOP_LEVEL
    for name, entry in document["artifacts"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert set(document["launch_digests"]) == {"1", "2", "4"}
    assert len(set(document["launch_digests"].values())) == 3
    # backend snp: the plan laid out with the C-bit (51 on every generation) and KVM's VMSAs.
    from toolchain.measure.keep import snp_plan_of

    plan = LaunchPlan.load(out / PLAN_FILE)
    elfs = (out / "ukernel.elf", out / "runtime.elf", out / "ukernel-snp.elf")
    snp = snp_plan_of(plan, *elfs).launch_digests([1, 2, 4])
    expected = {str(n): d.hex() for n, d in snp.items()}
    assert document["snp_launch_digests"] == dict.fromkeys(("milan", "genoa", "turin"), expected)
    assert not set(expected.values()) & set(document["launch_digests"].values())
    # ...from the microkernel built for snp, the one that executes VMGEXIT (f3 0f 01 d9), never
    # from the simulated one, which rings the doorbell instead.
    assert b"\xf3\x0f\x01\xd9" in (out / "ukernel-snp.elf").read_bytes()
    assert b"\xf3\x0f\x01\xd9" not in (out / "ukernel.elf").read_bytes()
    from toolchain.measure.keep import build_plan

    doorbell = build_plan(out / "ukernel.elf", out / "runtime.elf", platform="snp")
    assert doorbell.launch_digest(1).hex() != expected["1"]
    provenance = json.loads((out / "provenance.json").read_text())
    byproducts = {
        b["name"]: b["digest"]["sha384"]
        for b in provenance["predicate"]["runDetails"]["byproducts"]
    }
    assert byproducts["launch-digest/snp/c-bit=51/vcpus=4"] == expected["4"]
    assert byproducts["launch-digest/vcpus=4"] == document["launch_digests"]["4"]
    subjects = {s["name"]: s["digest"]["sha256"] for s in provenance["subject"]}
    assert subjects["ukernel-snp.elf"] == document["artifacts"]["ukernel-snp.elf"]["sha256"]
    assert keep_main(["build", str(HELLO), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"snp launch digest (2 vCPUs, milan/genoa/turin): {expected['2']}" in text


def test_bad_application_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wat"
    bad.write_text('(module (func (export "_start") (i32.add)))')
    assert keep_main(["build", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unusable input:")
    assert "invalid WebAssembly module" in err


def test_two_builds_in_different_directories_are_identical(
    built: keep_build.KeepBuild, tmp_path: Path
) -> None:
    other = keep_build.build_keep(HELLO, tmp_path / "elsewhere" / "deeper")
    assert repro.compare(built.out_dir, other.out_dir) == []
    assert other.launch_digests == built.launch_digests


def test_noop_rebuild_runs_no_tool(
    built: keep_build.KeepBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {name: path.read_bytes() for name, path in built.artifacts.items()}

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tool ran during a no-op rebuild")

    monkeypatch.setattr(cc, "_run", forbidden)
    monkeypatch.setattr(tools, "run_tool", forbidden)
    again = keep_build.build_keep(HELLO, built.out_dir)
    assert {name: path.read_bytes() for name, path in again.artifacts.items()} == before


def test_an_altered_cached_output_is_rebuilt_and_measured_right(
    built: keep_build.KeepBuild, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hits are re-hashed: an edited blob in the cache never becomes what `keep run` boots."""
    right = {name: built.artifacts[name].read_bytes() for name in ("runtime.elf", "ukernel.elf")}
    cache_root = BuildCache().root
    for data in right.values():
        sha = hashlib.sha256(data).hexdigest()
        blob = cache_root / "blobs" / sha[:2] / sha
        blob.write_bytes(data.replace(b"hello", b"HELLO") + b"\0")  # another image, same entry
    capsys.readouterr()
    assert keep_main(["build", str(HELLO), "--out", str(tmp_path / "again"), "--json"]) == 0
    captured = capsys.readouterr()
    rebuilt = [line for line in captured.err.splitlines() if "build cache" in line]
    assert len(rebuilt) == 2, captured.err
    assert all("does not match its SHA-256 (damaged or altered): rebuilding" in x for x in rebuilt)
    document = json.loads(captured.out)
    for name, data in right.items():
        assert (tmp_path / "again" / name).read_bytes() == data, name
    digests = {int(k): bytes.fromhex(v) for k, v in document["launch_digests"].items()}
    assert digests == built.launch_digests


def _build_out(out: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``keep build`` of a module never built before (nothing cached) with ``--out out``."""
    app = cwd / "fresh.wat"
    # A fresh module (its own constant): its objects and link are not in the cache yet.
    app.write_text(HELLO.read_text().replace("hello", f"fresh {out}"))
    monkeypatch.chdir(cwd)
    assert keep_main(["build", str(app), "--out", out]) == 0
    return Path(out).expanduser()


@pytest.mark.parametrize("kind", ["relative", "absolute", "home"])
def test_out_may_be_relative_absolute_or_under_home(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative --out once failed to link: "ld.lld: cannot open rel/dir/work/app/obj/app.o"."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = {
        "relative": "rel/dir",
        "absolute": str(tmp_path / "abs" / "dir"),
        "home": "~/keeps/dir",  # as quoted on a command line: the shell does not expand it
    }[kind]
    built = _build_out(out, tmp_path, monkeypatch)
    where = {"relative": tmp_path / "rel/dir", "absolute": Path(out)}
    expected = where.get(kind, tmp_path / "home" / "keeps" / "dir")
    assert built.resolve() == expected
    assert {p.name for p in expected.iterdir() if p.is_file()} == TOP_LEVEL
    assert not (tmp_path / "~").exists()


def test_provenance_covers_every_output_and_input(built: keep_build.KeepBuild) -> None:
    text = built.provenance.read_text()
    statement = json.loads(text)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"] for s in statement["subject"]}
    assert set(subjects) == TOP_LEVEL - {"provenance.json"}
    for name, digest in subjects.items():
        data = (built.out_dir / name).read_bytes()
        assert digest == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha384": hashlib.sha384(data).hexdigest(),
        }
    definition = statement["predicate"]["buildDefinition"]
    deps = {d["name"]: d["digest"]["sha256"] for d in definition["resolvedDependencies"]}
    assert deps["application/hello.wat"] == hashlib.sha256(HELLO.read_bytes()).hexdigest()
    wasi = ROOT / "runtime" / "guest" / "wasm" / "wasi.c"
    assert deps["runtime/guest/wasm/wasi.c"] == hashlib.sha256(wasi.read_bytes()).hexdigest()
    assert any(n.startswith("runtime/guest/ukernel/") for n in deps)
    assert deps["tool/zig"] == tools.zig().sha256
    assert "wasm2c-runtime/wasm-rt-impl.c" in deps
    assert definition["internalParameters"]["toolchain"] == tools.toolchain_versions()
    builder = statement["predicate"]["runDetails"]["builder"]["version"]
    whl = built.artifacts[WHEEL]
    assert builder["keepstack-wheel"] == "sha256:" + hashlib.sha256(whl.read_bytes()).hexdigest()
    byproducts = {
        b["name"]: b["digest"]["sha384"] for b in statement["predicate"]["runDetails"]["byproducts"]
    }
    assert byproducts["launch-digest/vcpus=1"] == built.launch_digests[1].hex()
    assert str(built.out_dir) not in text
    assert "/tmp" not in text


def test_wheel_is_reproducible_and_its_record_verifies() -> None:
    name, first = wheel.wheel_bytes()
    _, second = wheel.wheel_bytes()
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        names = archive.namelist()
        assert names == sorted(names[:-4]) + names[-4:]  # package files sorted, dist-info last
        assert "runtime/guest/wasm/wasi.c" in names
        assert "toolchain/image/compile.py" in names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        record = archive.read(f"keepstack-{VERSION}.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if not digest:
                continue
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode()
            assert int(size) == len(data)
    assert name == WHEEL


def test_repro_compare_names_the_file_and_section(
    built: keep_build.KeepBuild, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built.out_dir, copy)
    assert repro.compare(built.out_dir, copy) == []
    from elftools.elf.elffile import ELFFile

    elf_path = copy / "runtime.elf"
    with elf_path.open("rb") as stream:
        text_offset = ELFFile(stream).get_section_by_name(".text")["sh_offset"]
    data = bytearray(elf_path.read_bytes())
    data[text_offset + 5] ^= 0x40
    elf_path.write_bytes(bytes(data))
    (copy / "extra.txt").write_text("x")
    found = {d.path: d.detail for d in repro.compare(built.out_dir, copy)}
    assert set(found) == {"runtime.elf", "extra.txt"}
    assert f"byte {text_offset + 5:#x}" in found["runtime.elf"]
    assert "section .text, offset 0x5" in found["runtime.elf"]
    assert found["extra.txt"] == "only in the second build"


def test_missing_application_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(KeepError, match="does not exist"):
        keep_build.build_keep(tmp_path / "nope.wasm", tmp_path / "out")


def test_unwritable_output_is_platform_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert keep_main(["build", str(HELLO), "--out", str(blocker / "out")]) == 3
    assert capsys.readouterr().err.startswith("platform error: cannot build the keep")
