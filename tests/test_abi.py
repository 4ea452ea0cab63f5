"""One source for the guest ABI: toolchain/measure/abi.py, and the C header generated from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.image.compile import RING0, RING3, build_env
from toolchain.image.tools import zig
from toolchain.measure import abi

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / abi.HEADER_PATH


def test_the_committed_header_is_the_generated_one() -> None:
    """Drift in either direction (a hand edit of keep_abi.h, or abi.py not regenerated) fails."""
    assert abi.header_difference(HEADER.read_text(encoding="utf-8")) is None


def test_a_drifted_header_is_named_line_and_values() -> None:
    text = abi.header_text().replace("#define KEEP_HC_TREES 9", "#define KEEP_HC_TREES 10")
    difference = abi.header_difference(text)
    assert difference is not None
    line = abi.header_text().split("\n").index("#define KEEP_HC_TREES 9 /* ABI version 2 */")
    assert difference.startswith(f"line {line + 1}: expected ")
    assert "KEEP_HC_TREES 9" in difference
    assert "KEEP_HC_TREES 10" in difference
    assert abi.header_difference(abi.header_text() + "\n") == (
        f"expected {abi.header_text().count(chr(10)) + 1} lines, "
        f"found {abi.header_text().count(chr(10)) + 2}"
    )


def test_the_generator_writes_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keep_abi.h"
    assert abi.main(["--header", str(path)]) == 0
    assert path.read_bytes() == HEADER.read_bytes()
    assert abi.main(["--check", str(path)]) == 0
    path.write_text(path.read_text().replace("0x3143484B", "0x3143484C"), encoding="utf-8")
    assert abi.main(["--check", str(path)]) == 1
    assert "KEEP_HC_MAGIC 0x3143484B" in capsys.readouterr().err
    with pytest.raises(InputError, match="cannot read the ABI header"):
        abi.check_header(tmp_path / "missing.h")


def test_keep_build_refuses_its_own_tree_with_a_drifted_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs before anything is compiled, and names the line."""
    from toolchain.image import keep_build

    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "runtime" / "guest", tree / "runtime" / "guest")
    header = tree / abi.HEADER_PATH
    header.write_text(
        header.read_text().replace("KEEP_USER_INFO_MAGIC 0x3149554B", "KEEP_USER_INFO_MAGIC 0x1"),
        encoding="utf-8",
    )
    app = tmp_path / "app.wat"
    app.write_text("(module)", encoding="utf-8")
    monkeypatch.setattr(keep_build, "ROOT", tree.resolve())
    with pytest.raises(InputError, match=r"keep_abi.h is not the header .*KEEP_USER_INFO_MAGIC"):
        keep_build.build_keep(app, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _compile(header: str, tmp_path: Path, target: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "keep_abi.h").write_text(header, encoding="utf-8")
    probe = tmp_path / "probe.c"
    probe.write_text('#include "keep_abi.h"\n', encoding="utf-8")
    flags = (RING0 if target == "ring0" else RING3).compiler_flags()
    output = tmp_path / "probe.s"
    argv = [str(zig().path), "cc", *flags, f"-I{tmp_path}", "-S", "-o", str(output), str(probe)]
    return subprocess.run(argv, env=build_env(), capture_output=True, text=True, check=False)


@pytest.mark.parametrize("target", ["ring0", "ring3"])
def test_the_c_compiler_lays_the_structs_out_as_python_packs_them(
    tmp_path: Path, target: str
) -> None:
    result = _compile(abi.header_text(), tmp_path, target)
    assert result.returncode == 0, result.stderr


def test_a_struct_c_pads_differently_does_not_compile(tmp_path: Path) -> None:
    """A u32 before a u64: C pads to 8, Python's little-endian packing does not. The generated
    _Static_assert stops the build, naming the field."""
    padded = abi.CStruct(
        "keep_padded", (abi.Field("small", "uint32_t"), abi.Field("large", "uint64_t"))
    )
    result = _compile(abi.header_text((padded,)), tmp_path, "ring0")
    assert result.returncode != 0
    assert "abi.py: keep_padded.large at 4" in result.stderr


def test_the_structs_match_the_python_that_reads_and_writes_them() -> None:
    assert abi.HC_PAGE.size == 0x50
    assert (abi.OFF_STATUS, abi.OFF_ARGS, abi.OFF_RET) == (0x0C, 0x10, 0x40)
    assert abi.KEEP_LAYOUT.size == 176
    assert abi.USER_INFO.size == 104
    with pytest.raises(InputError, match=r"\['entry'\] missing or unknown"):
        abi.USER_INFO.pack({name: 0 for name in abi.USER_INFO.names if name != "entry"})
    request = {"magic": abi.HC_MAGIC, "version": 2, "reserved": 0, "call": abi.Hypercall.CLOCK}
    page = abi.HC_PAGE.pack({**request, "status": -7, "arg": range(1, 7), "ret": (8, 9)})
    assert abi.HC_PAGE.struct.unpack(page) == (abi.HC_MAGIC, 2, 0, 8, -7, *range(1, 7), 8, 9)
    with pytest.raises(InputError, match="arg takes 6 values"):
        abi.HC_PAGE.pack({**request, "status": 0, "arg": (1,), "ret": (0, 0)})
    with pytest.raises(InputError, match="names a field twice"):
        abi.CStruct("twice", (abi.Field("a", "uint32_t"), abi.Field("a", "uint32_t")))
    with pytest.raises(InputError, match="C type"):
        abi.Field("f", "float")


def test_calls_are_served_from_the_version_that_introduced_them() -> None:
    assert abi.Hypercall.TREES not in abi.calls_of(1)
    assert abi.calls_of(2) == frozenset(abi.Hypercall) - {abi.Hypercall.RESULT}
    assert abi.calls_of(3) == frozenset(abi.Hypercall)
    assert max(abi.ABI_VERSIONS) == abi.ABI_VERSION
    assert all(abi.since(call) in abi.ABI_VERSIONS for call in abi.Hypercall)


def test_the_user_info_page_is_the_abi_addresses_by_name() -> None:
    addresses = abi.AbiAddresses(2, *range(1, 16))
    page = abi.USER_INFO.struct.unpack(addresses.user_info_page(0x1000_0000))
    values = dict(zip(abi.USER_INFO.names, page, strict=True))
    assert values["magic"] == abi.USER_INFO_MAGIC
    assert values["c_bit"] == 0  # simulated: the bytes of the reserved field it was
    with_c_bit = abi.USER_INFO.struct.unpack(addresses.user_info_page(0x1000_0000, 51))
    assert dict(zip(abi.USER_INFO.names, with_c_bit, strict=True))["c_bit"] == 51
    assert values["entry"] == addresses.user_entry
    assert values["ram_size"] == 0x1000_0000
    for name in ("abi_version", "hc_page", "hc_buffer", "doorbell", "heap_end", "stack_bottom"):
        assert values[name] == getattr(addresses, name), name
    assert addresses.hypercalls == abi.HypercallLayout(1, 2, 3)


def test_keep_layout_is_the_note_field_list() -> None:
    values = dict.fromkeys(abi.KEEP_LAYOUT.names, 0)
    del values["size"]
    assert abi.KeepLayout(**values).abi_version == 0


def test_keep_layout_refuses_to_drift_from_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    values = dict.fromkeys(abi.KEEP_LAYOUT.names, 0)
    del values["size"]
    longer = abi.CStruct("keep_layout", (*abi.KEEP_LAYOUT.fields, abi.Field("extra", "uint64_t")))
    monkeypatch.setattr(abi, "KEEP_LAYOUT", longer)
    with pytest.raises(InputError, match="is not struct keep_layout"):
        abi.KeepLayout(**values)
