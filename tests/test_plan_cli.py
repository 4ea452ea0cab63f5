"""``keep measure``: the digests of a built keep directory, checked against its ELFs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ukernel_images import Images, build_images

from keep.cli import main
from toolchain.measure.keep import build_plan
from toolchain.measure.plan import PLAN_FILE


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    base = tmp_path_factory.mktemp("measure")
    return build_images(base / "out", cache_dir=base / "cache", snp=True)


def keep_dir(images: Images, where: Path) -> Path:
    """A directory shaped like the output of ``keep build``."""
    where.mkdir()
    shutil.copy(images.ukernel, where / "ukernel.elf")
    assert images.snp_ukernel is not None
    shutil.copy(images.snp_ukernel, where / "ukernel-snp.elf")
    shutil.copy(images.user, where / "runtime.elf")
    (where / PLAN_FILE).write_text(build_plan(images.ukernel, images.user).to_json())
    return where


def test_measure_prints_a_digest_per_vcpu_count(
    images: Images, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = keep_dir(images, tmp_path / "keep")
    expected = build_plan(images.ukernel, images.user).launch_digests([1, 2, 4])
    assert main(["measure", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for count, digest in expected.items():
        assert f"({count} vCPU{'s' if count > 1 else ''}): {digest.hex()}" in text
    assert main(["measure", "--out", str(out), "--vcpus", "3", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    plan = build_plan(images.ukernel, images.user)
    assert document["launch_digests"] == {"3": plan.launch_digest(3).hex()}
    assert document["guest_policy"] == "0x30000"
    assert document["pages"]["SECRETS"] == 1


def test_measure_from_the_plan_alone_and_from_the_elfs_alone(
    images: Images, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = keep_dir(images, tmp_path / "keep")
    assert main(["measure", "--plan", str(out / PLAN_FILE), "--json"]) == 0
    from_plan = json.loads(capsys.readouterr().out)["launch_digests"]
    argv = ["measure", "--ukernel", str(images.ukernel), "--runtime", str(images.user), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["launch_digests"] == from_plan


def test_a_plan_that_does_not_follow_from_its_elfs_is_refused(
    images: Images, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = keep_dir(images, tmp_path / "keep")
    runtime = bytearray((out / "runtime.elf").read_bytes())
    runtime[0x1000] ^= 0xFF  # first byte of the image's text
    (out / "runtime.elf").write_bytes(bytes(runtime))
    assert main(["measure", "--out", str(out)]) == 1
    assert "does not follow" in capsys.readouterr().err


def test_unusable_input_is_exit_2(
    images: Images, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["measure"]) == 2
    assert main(["measure", "--out", str(tmp_path / "missing")]) == 2
    (tmp_path / "bad.json").write_text("{}")
    assert main(["measure", "--plan", str(tmp_path / "bad.json")]) == 2
    assert main(["measure", "--ukernel", str(images.ukernel)]) == 2
    argv = ["measure", "--ukernel", str(images.user), "--runtime", str(images.user)]
    assert main(argv) == 2
    assert "unusable input" in capsys.readouterr().err


def test_measure_prints_the_snp_digests_with_the_elfs(
    images: Images, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = keep_dir(images, tmp_path / "keep")
    assert images.snp_ukernel is not None
    snp = build_plan(images.snp_ukernel, images.user, platform="snp").launch_digests([1, 2, 4])
    kvm = build_plan(images.ukernel, images.user).launch_digests([1, 2, 4])
    assert main(["measure", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for count, digest in snp.items():
        vcpus = f"{count} vCPU{'s' if count > 1 else ''}"
        assert f"snp launch digest ({vcpus}, C-bit 51): {digest.hex()}" in text
        assert f"launch digest ({vcpus}): {kvm[count].hex()}" in text
        assert digest != kvm[count]
    c47 = build_plan(images.snp_ukernel, images.user, platform="snp", c_bit=47).launch_digest(2)
    assert main(["measure", "--out", str(out), "--vcpus", "2", "--c-bit", "47", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["snp"] == {"c_bit": 47, "launch_digests": {"2": c47.hex()}}
    assert document["launch_digests"] == {"2": kvm[2].hex()}
    # From the plan alone there is nothing to lay the snp plan out from: said, not guessed.
    assert main(["measure", "--plan", str(out / PLAN_FILE)]) == 0
    assert "snp launch digests: not computed" in capsys.readouterr().out
    # Two ELFs without the snp microkernel: the snp digests are not laid out from the simulated one.
    elfs = ["measure", "--ukernel", str(images.ukernel), "--runtime", str(images.user)]
    assert main(elfs) == 0
    assert "snp launch digests: not computed" in capsys.readouterr().out
    assert main([*elfs, "--snp-ukernel", str(images.snp_ukernel), "--vcpus", "2"]) == 0
    assert f"snp launch digest (2 vCPUs, C-bit 51): {snp[2].hex()}" in capsys.readouterr().out
    assert main(["measure", "--out", str(out), "--c-bit", "52"]) == 2
    assert "C-bit position 52" in capsys.readouterr().err
