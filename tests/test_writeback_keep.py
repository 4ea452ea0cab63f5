"""``keep run --dir HOST::GUEST:rw``: the application's changes come back, on kvm as on nil.

* ``tests/wasi_c/fs_writeback.c`` creates, modifies, deletes, renames, makes a directory, a
  symbolic link and a hard link in a ``:rw`` tree and in a tree without ``:rw``; after the run
  the ``:rw`` host directory holds the same entries, contents and modes on kvm and on nil (and
  the same entries and contents as wasmtime, which writes to the host directly), the other one
  is untouched, and the keep's result blob is byte for byte the nil backend's (one canonical
  encoding);
* a trap hands nothing back, an exit with a failing status does; an unchanged tree is not
  written; a tree grown past the result bound ends the run before anything is written;
* hostile results (wrong magic, oversized, a path with ``..``, an absolute path, a tree not
  marked ``:rw``) are refused by the host's check, by the VMM's RESULT call and by the runner,
  with a clear message and nothing written.
"""

from __future__ import annotations

import contextlib
import io
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wasi_c_keep import KVM_MISSING
from test_wasi_fs_keep import run_wasmtime
from wasi_c.wasi_cc import compile_wasi

from keep.cli import main
from runtime.run import writeback
from runtime.run.writeback import apply_result
from runtime.vmm.errors import GuestError
from runtime.vmm.hypercalls import (
    ABI_VERSION,
    EXIT,
    HC_MAGIC,
    RESULT,
    HypercallLayout,
    HypercallServer,
)
from runtime.vmm.memory import GuestMemory, ram_ranges
from toolchain.errors import EvidenceError
from toolchain.measure.trees import (
    RESULT_MAGIC,
    TREE_MAGIC,
    DirSpec,
    Record,
    accept_result_blob,
    encode_records,
    encode_tree,
    read_trees,
    result_blob,
)

SOURCES = Path(__file__).resolve().parent / "wasi_c"
PAGE, BUFFER = 0x200000, 0x201000
BACKENDS = ["nil", "kvm"]

pytestmark = pytest.mark.xdist_group("writeback_keep")


def make_tree(root: Path) -> Path:
    (root / "sub" / "gone").mkdir(parents=True)
    for name, text, mode in (
        ("modify.txt", "original\n", 0o600),
        ("delete.txt", "bye\n", 0o644),
        ("rename-from.txt", "moved\n", 0o640),
        ("sub/deep.txt", "deep\n", 0o644),
    ):
        (root / name).write_text(text)
        (root / name).chmod(mode)
    (root / "oldlink").symlink_to("sub/deep.txt")
    return root


def snapshot(root: Path, *, modes: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        what: Any = (
            str(path.readlink())
            if path.is_symlink()
            else path.read_bytes()
            if path.is_file()
            else "dir"
        )
        mode = oct(info.st_mode & 0o777) if modes and not path.is_symlink() else None
        found[str(path.relative_to(root))] = (what, mode)
    return found


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("writeback") / "fs_writeback.wasm"
    return compile_wasi(SOURCES / "fs_writeback.c", out)


def run(
    backend: str,
    program: Path,
    base: Path,
    capfd: pytest.CaptureFixture[str],
    *args: str,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[int, str, str, list[bytes]]:
    """One ``keep run`` on fresh trees ``base/rw`` (:rw) and ``base/ro``; the result blobs."""
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    make_tree(base / "rw")
    make_tree(base / "ro")
    results: list[bytes] = []
    if monkeypatch is not None:

        def recording(trees: Any, result: bytes, say: Any) -> None:
            results.append(result)
            apply_result(trees, result, say)  # the real one, imported before any patching

        monkeypatch.setattr(writeback, "apply_result", recording)
    argv = ["run", "--dev", "--backend", backend, "--build-dir", str(base.parent / "build")]
    argv += ["--dir", f"{base / 'rw'}::/rw:rw", "--dir", f"{base / 'ro'}::/ro"]
    status = main([*argv, str(program), *args])
    out, err = capfd.readouterr()
    return status, out, err, results


@pytest.fixture(scope="module")
def oracle(program: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """wasmtime on the host's directories: what the :rw tree should end up holding."""
    base = tmp_path_factory.mktemp("wasmtime")
    rw, ro = make_tree(base / "rw"), make_tree(base / "ro")
    out, status = run_wasmtime(program, rw, base / "stdout", ((rw, "/rw"), (ro, "/ro")))
    assert status == 0
    return out, rw


def test_the_rw_tree_comes_back_the_same_on_kvm_nil_and_wasmtime(
    program: Path,
    oracle: tuple[bytes, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    expected_out, wasmtime_tree = oracle
    pristine = snapshot(make_tree(tmp_path / "pristine"))
    hosts, blobs = {}, {}
    for backend in BACKENDS:
        status, out, err, results = run(
            backend, program, tmp_path / backend, capfd, monkeypatch=monkeypatch
        )
        assert status == 0, err
        assert out.splitlines() == expected_out.decode().splitlines()
        warning = f"⚠ writing back 11 files to {tmp_path / backend / 'rw'}: the host sees them"
        assert warning in err.splitlines()
        assert "keep: removed in " in err
        hosts[backend] = snapshot(tmp_path / backend / "rw")
        blobs[backend] = results
        assert snapshot(tmp_path / backend / "ro") == pristine, "a tree without :rw was written"
    assert hosts["kvm"] == hosts["nil"]
    assert len(blobs["kvm"]) == 1
    assert blobs["kvm"] == blobs["nil"], "the keep's result is not the canonical encoding"
    without_modes = {k: v[0] for k, v in hosts["kvm"].items()}
    assert without_modes == {k: v[0] for k, v in snapshot(wasmtime_tree).items()}
    kvm = hosts["kvm"]
    assert kvm["modify.txt"] == (b"original\n and more\n", "0o600")  # the mode it came in with
    assert kvm["renamed.txt"] == (b"moved\n", "0o640")  # a renamed file keeps its mode
    assert kvm["created.txt"][1] == "0o644"  # what the application made
    assert kvm["newdir"] == ("dir", "0o755")
    assert kvm["newlink"] == ("renamed.txt", None)
    assert not {"delete.txt", "rename-from.txt", "sub/gone"} & kvm.keys()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("how", "status", "line"),
    [
        ("trap", 134, "wasm trap: unreachable"),
        ("big", 125, "keep: the :rw trees are larger than a keep hands back (33 MiB)"),
    ],
)
def test_a_trap_or_a_tree_past_the_bound_writes_nothing(
    backend: str,
    how: str,
    status: int,
    line: str,
    program: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    pristine = snapshot(make_tree(tmp_path / "pristine"))
    found, _out, err, _ = run(backend, program, tmp_path / "t", capfd, how)
    assert found == status
    assert line in err
    assert snapshot(tmp_path / "t" / "rw") == pristine
    assert "writing back" not in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_exit_still_hands_the_tree_back(
    backend: str, program: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    status, _out, err, _ = run(backend, program, tmp_path / "t", capfd, "fail")
    assert status == 3
    assert (tmp_path / "t" / "rw" / "created.txt").read_bytes() == b"made in the keep\n"
    assert "⚠ writing back 11 files to" in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unchanged_tree_is_not_written(
    backend: str,
    program: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, _out, err, results = run(
        backend, program, tmp_path / "t", capfd, "none", monkeypatch=monkeypatch
    )
    assert status == 0, err
    original = encode_tree(DirSpec(tmp_path / "t" / "rw", "/"))
    assert results == [result_blob([(0, original)])]  # the very bytes that went in
    assert "the application changed nothing; nothing written" in err
    assert "writing back" not in err


def test_the_evidence_binds_which_trees_came_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], program: Path
) -> None:
    """The :rw flags are bound into REPORT_DATA: verify-evidence proves them, and a file that
    drops one, or a caller who names the tree without :rw, does not verify."""
    import json

    from runtime.firmware.sim import sim_identity_dir
    from toolchain.sign import dev_key
    from toolchain.sign.keys import public_path_for

    backend = "kvm" if KVM_MISSING is None else "nil"
    rw, ro = make_tree(tmp_path / "rw"), make_tree(tmp_path / "ro")
    evidence = tmp_path / "ev.json"
    argv = ["run", "--dev", "--quiet", "--backend", backend, "--build-dir", str(tmp_path / "b")]
    argv += ["--dir", f"{rw}::/rw:rw", "--dir", f"{ro}::/ro", "--evidence", str(evidence)]
    assert main([*argv, str(program), "none"]) == 0
    document = json.loads(evidence.read_text())
    assert [tree.get("rw", False) for tree in document["trees"]] == [True, False]
    _, key_path = dev_key()
    check = ["verify-evidence", str(evidence), "--json", "--trusted-key"]
    check += [str(public_path_for(key_path)), "--extra-root", str(sim_identity_dir() / "ark.pem")]
    capfd.readouterr()

    def verdict(*extra: str) -> dict[str, Any]:
        status = main([*check, *extra])
        found = json.loads(capfd.readouterr().out)["checks"]
        return {"status": status, **{c["name"].split(" (")[0]: c["ok"] for c in found}}

    ours = ["--dir", f"{rw}::/rw:rw", "--dir", f"{ro}::/ro"]
    good = verdict(*ours)
    assert (good["status"], good["evidence.trees"], good["report-data"]) == (0, True, True)
    lied = verdict("--dir", f"{rw}::/rw", "--dir", f"{ro}::/ro")  # the caller forgot :rw
    assert (lied["status"], lied["evidence.trees"]) == (1, False)
    del document["trees"][0]["rw"]  # the file hides that the tree came back
    evidence.write_text(json.dumps(document))
    hidden = verdict()
    assert (hidden["status"], hidden["report-data"]) == (1, False)


# ---- hostile results ----------------------------------------------------------------------------


def _record(kind: int, path: bytes, data: bytes = b"", mode: int = 0o644) -> bytes:
    return struct.pack("<BHI", kind, mode, len(path)) + path + struct.pack("<Q", len(data)) + data


def _encoding(*records: bytes) -> bytes:
    return TREE_MAGIC + _record(3, b"", mode=0o755) + b"".join(records)


GOOD = _encoding(_record(4, b"new.txt", b"from the keep"))
#: Results a hostile or broken keep could hand back, and the words of their refusal.
HOSTILE = {
    "magic": (b"KRESULT9" + result_blob([(0, GOOD)])[8:], "malformed (magic"),
    "dotdot": (result_blob([(0, _encoding(_record(4, b"../escape", b"x")))]), "../escape"),
    "absolute": (result_blob([(0, _encoding(_record(4, b"/etc/x", b"x")))]), "an absolute path"),
    "not-rw": (result_blob([(1, GOOD)]), "tree 1 was not preopened with :rw"),
    "no-such-tree": (result_blob([(7, GOOD)]), "tree 7 was not preopened with :rw"),
    "repeated": (result_blob([(0, GOOD), (0, GOOD)]), "tree 0 out of order or repeated"),
    "too-many": (result_blob([(0, GOOD)] * 3), "malformed (3 trees, the run preopened 2)"),
    "truncated": (result_blob([(0, GOOD)])[:-1], "malformed (truncated)"),
    "trailing": (result_blob([(0, GOOD)]) + b"\0", "bytes after the last tree"),
    "not-a-tree": (result_blob([(0, b"KEEPTREE2\0")]), "not a canonical tree encoding"),
}
RW = (True, False)  # tree 0 was preopened :rw, tree 1 was not


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_the_host_refuses_a_hostile_result(case: str) -> None:
    blob, words = HOSTILE[case]
    with pytest.raises(EvidenceError, match="nothing was written back") as caught:
        accept_result_blob(blob, RW)
    assert words in caught.value.message


def test_an_oversized_result_is_refused_before_it_is_read() -> None:
    blob = result_blob([(0, GOOD)])
    assert accept_result_blob(blob, RW, limit=len(blob)) == {0: GOOD}
    with pytest.raises(EvidenceError, match=f"{len(blob)} bytes, over the limit of 40"):
        accept_result_blob(blob, RW, limit=40)


def test_repeated_and_unordered_trees_are_refused() -> None:
    rw = (True, True)
    assert accept_result_blob(result_blob([(0, GOOD), (1, GOOD)]), rw) == {0: GOOD, 1: GOOD}
    with pytest.raises(EvidenceError, match="tree 0 out of order or repeated"):
        accept_result_blob(result_blob([(1, GOOD), (0, GOOD)]), rw)


def _host_pair(tmp_path: Path) -> list[Any]:
    for name in ("a", "b"):
        make_tree(tmp_path / name)
    specs = [DirSpec(tmp_path / "a", "/a", rw=True), DirSpec(tmp_path / "b", "/b", rw=True)]
    return read_trees(specs)


#: Encodings of a second tree that the runner must refuse before it writes the first one.
BAD_SECOND = {
    "dotdot": _encoding(_record(4, b"../escape", b"x")),
    "absolute": _encoding(_record(4, b"/etc/x", b"x")),
    "not-a-tree": b"KEEPTREE2\0",
    "link-out": _encoding(_record(7, b"escape", b"../../etc/passwd", 0o777)),  # the writer's
}


@pytest.mark.parametrize("case", sorted(BAD_SECOND))
def test_the_runner_writes_nothing_when_any_tree_is_refused(tmp_path: Path, case: str) -> None:
    """The first tree is sound, the second is not: neither host directory changes."""
    trees = _host_pair(tmp_path)
    before = [snapshot(tree.spec.host) for tree in trees]
    said: list[str] = []
    with pytest.raises(EvidenceError):
        apply_result(trees, result_blob([(0, GOOD), (1, BAD_SECOND[case])]), said.append)
    assert [snapshot(tree.spec.host) for tree in trees] == before
    assert not said


def test_the_runner_refuses_a_tree_not_marked_rw(tmp_path: Path) -> None:
    trees = _host_pair(tmp_path)
    trees[1] = read_trees([DirSpec(trees[1].spec.host, "/b")])[0]  # without :rw
    before = snapshot(trees[1].spec.host)
    with pytest.raises(EvidenceError, match="tree 1 was not preopened with :rw"):
        apply_result(trees, result_blob([(1, GOOD)]), print)
    assert snapshot(trees[1].spec.host) == before


def test_the_runner_says_what_it_writes_before_it_writes(tmp_path: Path) -> None:
    trees = _host_pair(tmp_path)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("⚠"):  # nothing written yet when the warning is said
            assert not (trees[0].spec.host / "new.txt").exists()

    apply_result(trees, result_blob([(0, GOOD)]), say)
    host = trees[0].spec.host
    assert said[0] == f"⚠ writing back 8 files to {host}: the host sees them"
    assert said[1] == f"keep: created in {host}: new.txt"
    assert said[2].startswith(f"keep: removed in {host}: delete.txt, modify.txt, oldlink, ")
    assert snapshot(host) == {"new.txt": (b"from the keep", "0o644")}


def test_one_changed_file_is_one_file(tmp_path: Path) -> None:
    from dataclasses import replace

    from toolchain.measure.trees import decode_tree

    trees = _host_pair(tmp_path)
    records = [
        replace(r, data=b"edited\n") if r.path == b"modify.txt" else r
        for r in decode_tree(trees[0].encoding)
    ]
    said: list[str] = []
    apply_result(trees, result_blob([(0, encode_records(records))]), said.append)
    host = trees[0].spec.host
    assert said == [
        f"⚠ writing back 1 file to {host}: the host sees them",
        f"keep: changed in {host}: modify.txt",
    ]
    assert (host / "modify.txt").read_bytes() == b"edited\n"
    assert oct((host / "modify.txt").stat().st_mode & 0o777) == "0o600"


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 250),
)
def test_a_damaged_result_is_refused_or_decodes(edits: list[tuple[int, int]], cut: int) -> None:
    """Any byte changed or cut: an EvidenceError from the host's checks, never another error."""
    blob = bytearray(result_blob([(0, _encoding(_record(3, b"d"), _record(4, b"d/f", b"x")))]))
    for at, value in edits:
        blob[at % len(blob)] = value
    with contextlib.suppress(EvidenceError):
        accepted = accept_result_blob(bytes(blob[: len(blob) - cut % 8]), RW)
        assert set(accepted) <= {0}
        for encoding in accepted.values():
            writeback.check_encoding(encoding, limit=1 << 20)


# ---- the VMM's RESULT call ----------------------------------------------------------------------


def _call(memory: GuestMemory, server: HypercallServer, call: int, *args: int) -> int | None:
    padded = [*args, *[0] * (6 - len(args))]
    memory.write(PAGE, struct.pack("<IHHIi6Q2Q", HC_MAGIC, ABI_VERSION, 0, call, 0, *padded, 0, 0))
    return server.serve()


def _send(memory: GuestMemory, server: HypercallServer, blob: bytes, chunk: int = 0x10000) -> None:
    for at in range(0, len(blob), chunk):
        part = blob[at : at + chunk]
        memory.write(BUFFER, part)
        assert _call(memory, server, RESULT, 0, len(part), at, len(blob)) is None


def _server(memory: GuestMemory, **options: Any) -> HypercallServer:
    options.setdefault("require_attestation", False)
    options.setdefault("rw", RW)
    layout = HypercallLayout(PAGE, BUFFER, 0x10000)
    return HypercallServer(memory, layout, stdout=io.BytesIO(), stderr=io.BytesIO(), **options)


def test_the_vmm_takes_a_result_in_chunks() -> None:
    big = _encoding(_record(4, b"f", bytes(200_000)))
    blob = result_blob([(0, big)])
    with GuestMemory(ram_ranges(0x400000)) as memory:
        server = _server(memory)
        _send(memory, server, blob)
        assert server.stats.result == blob
        assert _call(memory, server, EXIT, 0) == 0
        with pytest.raises(GuestError, match="already handed back"):
            _send(memory, server, blob)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_the_vmm_refuses_a_hostile_result(case: str) -> None:
    blob, words = HOSTILE[case]
    with GuestMemory(ram_ranges(0x400000)) as memory:
        server = _server(memory)
        with pytest.raises(GuestError, match="RESULT") as caught:
            _send(memory, server, blob)
        assert words in caught.value.message
        assert server.stats.result is None


def test_the_vmm_refuses_results_out_of_place_or_too_big() -> None:
    from toolchain.measure.abi import RESULT_MAX_BYTES

    blob = result_blob([(0, GOOD)])
    with GuestMemory(ram_ranges(0x400000)) as memory:
        memory.write(BUFFER, blob)
        cases = [
            ({"require_attestation": True}, (0, 8, 0, len(blob)), "before the keep has been"),
            ({"rw": (False, False)}, (0, 8, 0, len(blob)), "no tree was preopened with :rw"),
            ({}, (0, 8, 0, RESULT_MAX_BYTES + 1), f"over the limit of {RESULT_MAX_BYTES}"),
            ({}, (0, 8, 8, len(blob)), "expected the next chunk at 0"),
            ({}, (0, len(blob), 0, 4), "expected the next chunk at 0"),
            ({}, (0xFFF0, 0x20, 0, 0x20), "runs past"),
        ]
        for options, args, words in cases:
            with pytest.raises(GuestError, match=words):
                _call(memory, _server(memory, **options), RESULT, *args)
        server = _server(memory)
        assert _call(memory, server, RESULT, 0, 8, 0, len(blob)) is None
        with pytest.raises(GuestError, match="earlier chunks said"):
            _call(memory, server, RESULT, 8, 8, 8, len(blob) + 1)
        with pytest.raises(GuestError, match=f"exit with 8 of the result's {len(blob)} bytes"):
            _call(memory, server, EXIT, 0)


def test_a_version_2_keep_has_no_result_call() -> None:
    with GuestMemory(ram_ranges(0x400000)) as memory:
        server = _server(memory, abi_version=2, rw=())
        memory.write(PAGE, struct.pack("<IHHIi6Q2Q", HC_MAGIC, 2, 0, RESULT, 0, *[0] * 6, 0, 0))
        with pytest.raises(GuestError, match="unknown call number 10"):
            server.serve()
        with pytest.raises(Exception, match="needs a keep of hypercall ABI 3"):
            _server(memory, abi_version=2, rw=(True,))


# ---- DirSpec and the encoder --------------------------------------------------------------------


def test_dirspec_parses_rw() -> None:
    assert DirSpec.parse("data::/out:rw") == DirSpec(Path("data"), "/out", rw=True)
    assert DirSpec.parse("data:rw") == DirSpec(Path("data"), "data", rw=True)
    assert DirSpec.parse("data::/out") == DirSpec(Path("data"), "/out", rw=False)


def test_a_rw_directory_may_not_overlap_another(tmp_path: Path) -> None:
    from toolchain.errors import InputError

    (tmp_path / "a" / "b").mkdir(parents=True)
    a, b = tmp_path / "a", tmp_path / "a" / "b"
    for specs in (
        [DirSpec(a, "/x", rw=True), DirSpec(a, "/y")],
        [DirSpec(a, "/x", rw=True), DirSpec(b, "/y")],
        [DirSpec(a, "/x"), DirSpec(tmp_path / "a" / ".." / "a" / "b", "/y", rw=True)],
    ):
        with pytest.raises(InputError, match="overlaps"):
            read_trees(specs)
    assert len(read_trees([DirSpec(a, "/x"), DirSpec(b, "/y")])) == 2  # read-only may overlap


def test_one_encoder_gives_the_canonical_order() -> None:
    """'a-b' sorts before 'a/x' (0x2D < 0x2F): the keep's merge sort must agree."""
    records = [
        Record(4, 0o644, b"a/x", b"1"),
        Record(4, 0o644, b"a-b", b"2"),
        Record(3, 0o755, b"a"),
        Record(3, 0o755, b""),
    ]
    encoded = encode_records(records)
    assert encoded.index(b"a-b") < encoded.index(b"a/x")
    assert accept_result_blob(result_blob([(0, encoded)]), RW) == {0: encoded}
    assert RESULT_MAGIC == b"KRESULT\0"
