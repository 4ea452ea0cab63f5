"""``keep run --dir``: the trees reach the keep, which accepts only the ones it attested.

* the keep (kvm) computes SHA-512 over every tree it received and requires
  SHA-512(nonce || digests) to equal the REPORT_DATA the microkernel kept from its attestation:
  a host that changes a byte, drops or reorders a tree, or lies about the nonce ends the keep
  with status 125 before the application runs (each case below fails if the check is removed);
* the nil backend makes the same check (``toolchain.measure.trees.accept_transfer_blob``);
* the VMM serves TREES only after attestation, inside its buffer, never past the blob;
* a tree over the bound is refused before anything is built or booted;
* the evidence names the trees and their digests; ``keep verify-evidence`` recomputes the binding
  and, given the directories, proves which trees the keep saw.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from keep.cli import main
from runtime.vmm.errors import GuestError
from runtime.vmm.hypercalls import ABI_VERSION, HC_MAGIC, TREES, HypercallLayout, HypercallServer
from runtime.vmm.memory import GuestMemory, ram_ranges
from runtime.vmm.platform import kvm_unavailable_reason
from toolchain.errors import EvidenceError
from toolchain.measure.trees import (
    DirSpec,
    accept_transfer_blob,
    bind_report_data,
    read_trees,
    transfer_blob,
)
from toolchain.sign.keys import public_path_for

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello" / "hello.wat"
KVM_MISSING = kvm_unavailable_reason()
NONCE = bytes(range(64))
PAGE, BUFFER = 0x200000, 0x201000
needs_kvm = pytest.mark.skipif(KVM_MISSING is not None, reason=f"needs /dev/kvm: {KVM_MISSING}")


def _trees(base: Path) -> list[Any]:
    for name, files in (("one", {"a.txt": b"alpha\n"}), ("two", {"b/c.bin": bytes(range(256))})):
        for relative, data in files.items():
            path = base / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return read_trees([DirSpec(base / "one", "/one"), DirSpec(base / "two", "/two")])


def _tampered(blob: bytes, how: str, trees: list[Any]) -> bytes:
    if how == "content":  # one byte of the first file's contents
        at = blob.index(b"alpha")
        return blob[:at] + b"A" + blob[at + 1 :]
    if how == "nonce":
        return blob[:8] + bytes(64) + blob[72:]
    if how == "dropped":
        return transfer_blob(NONCE, trees[:1])
    if how == "reordered":
        return transfer_blob(NONCE, trees[::-1])
    if how == "truncated":
        return blob[:-1]
    if how == "trailing":
        return blob + b"\0"
    if how == "rw":  # the first tree marked :rw behind the binding's back
        at = blob.index(b"/one") + 4
        return blob[:at] + struct.pack("<I", 1) + blob[at + 4 :]
    if how == "flags":  # a flag bit other than :rw (the first tree's flags follow "/one")
        at = blob.index(b"/one") + 4
        return blob[:at] + struct.pack("<I", 2) + blob[at + 4 :]
    raise AssertionError(how)


TAMPERING = ["content", "nonce", "dropped", "reordered", "rw", "truncated", "trailing", "flags"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from toolchain.image.keep_build import build_keep

    out = tmp_path_factory.mktemp("dirkeep")
    return build_keep(HELLO, out, vcpu_counts=(1,)).plan


def _run_keep(plan: Any, blob: bytes, report_data: bytes) -> tuple[int | None, bytes, Any]:
    from runtime.firmware.sim import SimFirmware
    from runtime.vmm.keep import run_keep

    stdout, stderr = io.BytesIO(), io.BytesIO()
    result = run_keep(
        plan,
        firmware=SimFirmware(),
        args=["hello"],
        stdout=stdout,
        stderr=stderr,
        on_report=lambda report: None,
        report_data=report_data,
        trees=blob,
        timeout=60,
    )
    return result.exit_status, stdout.getvalue() + stderr.getvalue(), result.error


@pytest.mark.kvm
@needs_kvm
def test_the_keep_accepts_the_trees_it_attested(plan: Any, tmp_path: Path) -> None:
    trees = _trees(tmp_path)
    bound = bind_report_data(NONCE, [tree.digest for tree in trees])
    status, output, error = _run_keep(plan, transfer_blob(NONCE, trees), bound)
    assert (status, error) == (0, None), output
    assert output.startswith(b"hello from a keep\n")


@pytest.mark.kvm
@needs_kvm
def test_a_big_tree_hashes_the_same_in_the_keep(plan: Any, tmp_path: Path) -> None:
    """10 MiB in 100 files: the keep's SHA-512 over many blocks agrees with hashlib's."""
    for index in range(100):
        data = hashlib.shake_256(str(index).encode()).digest(10 * 1024 * 1024 // 100)
        (tmp_path / "big" / f"d{index % 10}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "big" / f"d{index % 10}" / f"f{index}").write_bytes(data)
    trees = read_trees([DirSpec(tmp_path / "big", "/")])
    bound = bind_report_data(NONCE, [trees[0].digest])
    status, output, error = _run_keep(plan, transfer_blob(NONCE, trees), bound)
    assert (status, error) == (0, None), output


@pytest.mark.kvm
@needs_kvm
@pytest.mark.parametrize("how", TAMPERING)
def test_the_keep_refuses_trees_it_did_not_attest(plan: Any, tmp_path: Path, how: str) -> None:
    trees = _trees(tmp_path)
    bound = bind_report_data(NONCE, [tree.digest for tree in trees])
    blob = _tampered(transfer_blob(NONCE, trees), how, trees)
    status, output, error = _run_keep(plan, blob, bound)
    assert error is None, error
    assert status == 125
    assert b"hello from a keep" not in output  # refused before the application ran
    why = b"not the ones this keep attested" if how in TAMPERING[:5] else b"malformed"
    assert why in output, output


@pytest.mark.parametrize("how", TAMPERING)
def test_the_nil_backend_makes_the_same_check(tmp_path: Path, how: str) -> None:
    trees = _trees(tmp_path)
    bound = bind_report_data(NONCE, [tree.digest for tree in trees])
    blob = transfer_blob(NONCE, trees)
    accepted = accept_transfer_blob(blob, bound)
    assert [tree.guest for tree in accepted] == ["/one", "/two"]
    why = "not the ones this keep attested" if how in TAMPERING[:5] else "malformed"
    with pytest.raises(EvidenceError, match=why):
        accept_transfer_blob(_tampered(blob, how, trees), bound)


def _call(
    memory: GuestMemory, server: HypercallServer, *args: int, version: int = ABI_VERSION
) -> tuple:
    """One TREES request through the hypercall page; returns (status, ret0, ret1)."""
    memory.write(PAGE, struct.pack("<IHHIi6Q2Q", HC_MAGIC, version, 0, TREES, 0, *args, 0, 0))
    assert server.serve() is None
    (status,) = struct.unpack("<i", memory.read(PAGE + 0x0C, 4))
    return (status, *struct.unpack("<QQ", memory.read(PAGE + 0x40, 16)))


def test_the_vmm_serves_trees_only_after_attestation_and_within_bounds() -> None:
    blob = b"KTREES2\0" + bytes(range(200))
    layout = HypercallLayout(PAGE, BUFFER, 0x10000)

    def server(**options: Any) -> HypercallServer:
        return HypercallServer(memory, layout, stdout=io.BytesIO(), stderr=io.BytesIO(), **options)

    with GuestMemory(ram_ranges(0x400000)) as memory:
        with pytest.raises(GuestError, match="before the keep has been attested"):
            _call(memory, server(trees=blob), 0, 16, 0, 0, 0, 0)
        attested = server(trees=blob, require_attestation=False)
        assert _call(memory, attested, 0, 0, 0, 0, 0, 0) == (0, 0, len(blob))
        assert _call(memory, attested, 0x100, 16, 200, 0, 0, 0) == (0, 8, len(blob))
        assert memory.read(BUFFER + 0x100, 8) == blob[200:]  # the last 8 bytes
        with pytest.raises(GuestError, match="position 209 is past"):
            _call(memory, attested, 0, 16, 209, 0, 0, 0)
        with pytest.raises(GuestError, match="runs past"):
            _call(memory, attested, 0xFFF0, 0x20, 0, 0, 0, 0)
        version_1 = server(abi_version=1, require_attestation=False)
        with pytest.raises(GuestError, match="unknown call number 9"):
            _call(memory, version_1, 0, 0, 0, 0, 0, 0, version=1)


def test_an_oversized_tree_is_refused_before_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "f").write_bytes(b"\0" * (33 << 20))
    status = main(
        ["run", "--dev", "--backend", "nil", "--dir", f"{tmp_path / 'big'}::/", str(HELLO)]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "over the limit of 33554432 bytes" in err
    assert "live attestation" not in err
    assert "building" not in err


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from runtime.firmware.sim import sim_identity_dir
    from toolchain.sign import dev_key

    out = tmp_path_factory.mktemp("dir-evidence")
    trees_dir = out / "trees"
    _trees(trees_dir)
    evidence = out / "ev.json"
    backend = "kvm" if KVM_MISSING is None else "nil"
    argv = ["run", "--dev", "--quiet", "--backend", backend, "--build-dir", str(out / "build")]
    argv += ["--dir", f"{trees_dir / 'one'}::/one", "--dir", f"{trees_dir / 'two'}::/two"]
    assert main([*argv, "--evidence", str(evidence), str(HELLO)]) == 0
    _, key_path = dev_key()
    return {
        "evidence": evidence,
        "trees": trees_dir,
        "check": [
            "verify-evidence", str(evidence), "--json", "--trusted-key",
            str(public_path_for(key_path)), "--extra-root", str(sim_identity_dir() / "ark.pem"),
        ],
    }  # fmt: skip


def _checks(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return {c["name"].split(" (")[0]: c for c in json.loads(capsys.readouterr().out)["checks"]}


def test_evidence_names_the_trees_and_verifies_their_binding(
    evidence_run: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = json.loads(evidence_run["evidence"].read_text())
    trees = read_trees(
        [
            DirSpec(evidence_run["trees"] / "one", "/one"),
            DirSpec(evidence_run["trees"] / "two", "/two"),
        ]
    )
    assert document["trees"] == [{"guest": t.spec.guest, "sha512": t.digest.hex()} for t in trees]
    dirs = [
        "--dir",
        f"{evidence_run['trees'] / 'one'}::/one",
        "--dir",
        f"{evidence_run['trees'] / 'two'}::/two",
    ]
    assert main([*evidence_run["check"], *dirs]) == 0
    checks = _checks(capsys)
    assert checks["evidence.trees"]["ok"] is True
    assert checks["report-data"]["ok"] is True
    # The caller's own directory differs: named, and the run does not verify.
    (evidence_run["trees"] / "one" / "a.txt").write_bytes(b"alpha, changed\n")
    try:
        assert main([*evidence_run["check"], *dirs]) == 1
        assert _checks(capsys)["evidence.trees"]["ok"] is False
    finally:
        (evidence_run["trees"] / "one" / "a.txt").write_bytes(b"alpha\n")
    # A digest changed in the file: REPORT_DATA no longer matches the binding.
    document["trees"][0]["sha512"] = "00" * 64
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    check = list(evidence_run["check"])
    check[1] = str(forged)
    assert main(check) == 1
    assert _checks(capsys)["report-data"]["ok"] is False


@pytest.mark.parametrize("backend", ["kvm", "nil"])
def test_keep_run_dir_on_both_backends(
    tmp_path: Path, backend: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if backend == "kvm" and KVM_MISSING is not None:
        pytest.skip(f"needs /dev/kvm: {KVM_MISSING}")
    _trees(tmp_path)
    argv = ["run", "--dev", "--backend", backend, "--build-dir", str(tmp_path / "build")]
    argv += ["--dir", f"{tmp_path / 'one'}::/one", str(HELLO)]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert out.startswith("hello from a keep\n")
    assert f"keep: --dir {tmp_path / 'one'} -> /one: " in err
    assert "its changes are discarded at exit (the host directory is never written)" in err
    assert "NOT YET VISIBLE" not in err


def _record(kind: int, path: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<BHI", kind, 0o644, len(path)) + path + struct.pack("<Q", len(data)) + data


#: Encodings a runner could attest (the digest binds them) that are no tree: the keep parses the
#: shape as untrusted input and ends before the application (keep_fs.c; nil: nil_fs.Tree.build).
MALFORMED = {
    "no-root": ("no root", b""),
    "orphan": ("an entry before its directory", _record(3, b"") + _record(4, b"a/b", b"x")),
    "dotdot": ("a name", _record(3, b"") + _record(4, b"..", b"x")),
    "absolute": ("an absolute path", _record(3, b"") + _record(4, b"/etc", b"x")),
    "repeated": (
        "a name",
        _record(3, b"") + _record(4, b"a") + _record(4, b"b") + _record(4, b"a"),
    ),
    "unsorted": ("a name", _record(3, b"") + _record(4, b"b") + _record(4, b"a")),
    "device": ("an entry's type", _record(3, b"") + _record(2, b"dev")),
    "short": ("a record runs past its end", _record(3, b"") + _record(4, b"f", b"abc")[:-1]),
}


def _malformed_blob(tmp_path: Path, body: bytes) -> tuple[bytes, bytes]:
    from dataclasses import replace

    from toolchain.measure.trees import TREE_MAGIC

    tree = replace(_trees(tmp_path)[0], encoding=TREE_MAGIC + body)
    return transfer_blob(NONCE, [tree]), bind_report_data(NONCE, [tree.digest])


@pytest.mark.kvm
@needs_kvm
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_the_keep_refuses_an_attested_tree_that_is_malformed(
    plan: Any, tmp_path: Path, case: str
) -> None:
    reason, body = MALFORMED[case]
    blob, bound = _malformed_blob(tmp_path, body)
    status, output, error = _run_keep(plan, blob, bound)
    assert error is None, error
    assert status == 125
    assert b"hello from a keep" not in output
    assert f"keep: a preopened tree is malformed ({reason})".encode() in output, output


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_nil_refuses_an_attested_tree_that_is_malformed(
    tmp_path: Path, case: str, capfd: pytest.CaptureFixture[str]
) -> None:
    from runtime.run.nil import run_wasi

    reason, body = MALFORMED[case]
    blob, bound = _malformed_blob(tmp_path, body)
    status = run_wasi(HELLO, argv=["hello"], env=[], trees=blob, attested=bound)
    out, err = capfd.readouterr()
    assert status == 125
    assert "hello from a keep" not in out
    assert f"keep: a preopened tree is malformed ({reason})" in err
