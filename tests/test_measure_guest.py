"""Guest measurement (snp, snp:ovmf-hash, snp:svsm, seves, sev) and `keep measure-guest`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from testdata import digest_fixtures, digest_vectors

from keep.cli import main
from toolchain.errors import EvidenceError, InputError
from toolchain.measure.guest import (
    GuestRequest,
    GuestSpec,
    Mode,
    measure_guest,
    parse_vcpu_counts,
    snp_ovmf_hash,
)
from toolchain.snp.sev_legacy import launch_measurement, verify_launch_measurement
from toolchain.snp.vmsa import VmmType

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = digest_fixtures()
TESTS = digest_vectors()["sev_snp_measure_tests"]
AMDSEV = FIXTURES / "ovmf_AmdSev_suffix.bin"


def _spec_from_vector(inputs: dict, name: str) -> GuestSpec:
    def path(key: str) -> Path | None:
        return FIXTURES / Path(inputs[key]).name if inputs.get(key) else None

    features = inputs.get("guest_features", "0x1")
    return GuestSpec(
        mode=Mode.parse(inputs["mode"]),
        ovmf=FIXTURES / Path(inputs["ovmf"]).name,
        kernel=path("kernel"),
        initrd=path("initrd"),
        append=inputs.get("append"),
        vcpu_sig=int(inputs["vcpu_sig"], 16) if inputs.get("vcpu_sig") else None,
        # the SVSM vectors note that guest features do not apply (SVSM VMSAs use 0x1)
        guest_features=int(features, 16) if features.startswith("0x") else 0x1,
        vmm=VmmType.parse(inputs.get("vmm_type", "QEMU")),
        snp_ovmf_hash=bytes.fromhex(inputs["snp_ovmf_hash"])
        if inputs.get("snp_ovmf_hash")
        else None,
        svsm=path("svsm"),
        vars_size=inputs.get("vars_size", 0),
        # sev-snp-measure <= 0.0.12 (and virtee/sev) loaded RDX=0 into EC2 VMSAs
        vmsa_rdx=0 if name.startswith("historical_ec2_rdx0") else None,
    )


@pytest.mark.parametrize("vector", TESTS, ids=[t["name"] for t in TESTS])
def test_sev_snp_measure_vector(vector):
    inputs = vector["inputs"]
    if vector["name"].startswith("calc_snp_ovmf_hash"):
        assert (
            snp_ovmf_hash(FIXTURES / Path(inputs["ovmf"]).name).hex() == vector["expected_digest"]
        )
        return
    spec = _spec_from_vector(inputs, vector["name"])
    counts = [inputs.get("vcpus", 1)] if spec.mode.needs_vcpus else []
    result = measure_guest(spec, counts)
    assert len(result.digests) == 1
    assert next(iter(result.digests.values())).hex() == vector["expected_digest"]


def test_every_guest_vector_is_collected():
    assert len(TESTS) == 26


def _reference(mode: str, vcpus: int, sig: int, kernel, initrd, append, features, vmm) -> bytes:
    guest = pytest.importorskip("sevsnpmeasure.guest")
    sev_mode = pytest.importorskip("sevsnpmeasure.sev_mode")
    vmm_types = pytest.importorskip("sevsnpmeasure.vmm_types")
    return guest.calc_launch_digest(
        sev_mode.SevMode.from_str(mode),
        vcpus,
        sig,
        str(AMDSEV),
        kernel and str(kernel),
        initrd and str(initrd),
        append,
        features,
        vmm_type=vmm_types.VMMType[vmm.value],
    )


def test_random_guests_match_sev_snp_measure(tmp_path):
    rng = random.Random(20261127)
    for case in range(24):
        mode = rng.choice(["snp", "snp", "seves", "sev"])
        vmm = rng.choice(list(VmmType)) if mode == "snp" else VmmType.QEMU
        kernel = tmp_path / f"kernel{case}"
        kernel.write_bytes(rng.randbytes(rng.randrange(0, 20000)))
        initrd = None
        if rng.random() < 0.6:
            initrd = tmp_path / f"initrd{case}"
            initrd.write_bytes(rng.randbytes(rng.randrange(0, 20000)))
        with_kernel = rng.random() < 0.8
        append = rng.choice([None, "", "console=ttyS0", "root=/dev/vda ro quiet é"])
        if not with_kernel:
            initrd = append = None
        features = rng.choice([0x1, 0x21, 0x5, 0x41])
        sig = rng.choice([0x800F12, 0xA00F11, 0xA10F10, 0xB00F00])
        counts = sorted(rng.sample(range(1, 9), rng.randrange(1, 4)))
        spec = GuestSpec(
            mode=Mode.parse(mode),
            ovmf=AMDSEV,
            kernel=kernel if with_kernel else None,
            initrd=initrd,
            append=append,
            vcpu_sig=sig,
            guest_features=features,
            vmm=vmm,
        )
        result = measure_guest(spec, counts if mode != "sev" else [])
        for count, digest in result.digests.items():
            expected = _reference(
                mode,
                count or 1,
                sig,
                kernel if with_kernel else None,
                initrd,
                append,
                features,
                vmm,
            )
            assert digest == expected, (case, mode, vmm, count)


def test_one_pass_equals_separate_runs():
    spec = GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=0xA00F11, guest_features=0x21)
    together = measure_guest(spec, range(1, 9)).digests
    for count in (1, 2, 5, 8):
        assert measure_guest(spec, [count]).digests[count] == together[count]
    seves = GuestSpec(mode=Mode.SEV_ES, ovmf=AMDSEV, vcpu_sig=0xA00F11)
    both = measure_guest(seves, [1, 3]).digests
    assert both[3] == measure_guest(seves, [3]).digests[3]
    assert both[1] == measure_guest(seves, [1]).digests[1]


def test_snp_ovmf_hash_seed_equals_full_measurement():
    seed = snp_ovmf_hash(AMDSEV)
    full = GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=0x800F12)
    seeded = GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=0x800F12, snp_ovmf_hash=seed)
    assert measure_guest(full, [2]).digests == measure_guest(seeded, [2]).digests
    only = measure_guest(GuestSpec(mode=Mode.SNP_OVMF_HASH, ovmf=AMDSEV))
    assert only.digests == {0: seed}


@pytest.mark.parametrize(
    ("spec", "counts", "message"),
    [
        (GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=1), [], "needs the number of vCPUs"),
        (GuestSpec(mode=Mode.SNP, ovmf=AMDSEV), [1], "vCPU model"),
        (GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=1), [0], "between 1 and"),
        (
            GuestSpec(
                mode=Mode.SNP, ovmf=FIXTURES / "ovmf_OvmfX64_suffix.bin", vcpu_sig=1, kernel=AMDSEV
            ),
            [1],
            "SNP_KERNEL_HASHES",
        ),
        (GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=1, initrd=AMDSEV), [1], "need --kernel"),
        (GuestSpec(mode=Mode.SNP, ovmf=FIXTURES / "empty.bin", vcpu_sig=1), [1], "empty"),
        (GuestSpec(mode=Mode.SNP, ovmf=FIXTURES / "nope.bin", vcpu_sig=1), [1], "cannot read"),
        (
            GuestSpec(mode=Mode.SEV_ES, ovmf=AMDSEV, vcpu_sig=1, snp_ovmf_hash=bytes(48)),
            [1],
            "only applies",
        ),
        (GuestSpec(mode=Mode.SNP_SVSM, ovmf=AMDSEV, vcpu_sig=1), [1], "needs --svsm"),
        (GuestSpec(mode=Mode.SNP, ovmf=AMDSEV, vcpu_sig=1, guest_features=1 << 64), [1], "64 bits"),
    ],
)
def test_bad_guest_specs(spec, counts, message):
    with pytest.raises(InputError, match=message):
        measure_guest(spec, counts)


def test_firmware_without_sev_metadata_is_rejected(tmp_path):
    plain = tmp_path / "plain.fd"
    plain.write_bytes(bytes(8192))
    with pytest.raises(InputError, match="no SEV metadata"):
        measure_guest(GuestSpec(mode=Mode.SNP, ovmf=plain, vcpu_sig=1), [1])


def test_parse_vcpu_counts():
    assert parse_vcpu_counts("4") == [4]
    assert parse_vcpu_counts("1-4") == [1, 2, 3, 4]
    assert parse_vcpu_counts("8, 1-2,2") == [1, 2, 8]
    for bad in ("", "0", "4-1", "a", "1,,2", "5000", "1-"):
        with pytest.raises(InputError):
            parse_vcpu_counts(bad)


# --- legacy SEV: the guest owner's HMAC ----------------------------------------------------


def test_guest_request_resolves_the_options_into_a_spec():
    request = GuestRequest(
        ovmf=str(AMDSEV), vcpus="3,1-2", vcpu_type="EPYC-Milan", guest_features="0x21"
    )
    assert request.vcpu_counts == (1, 2, 3)
    assert request.spec == GuestSpec(
        mode=Mode.SNP, ovmf=str(AMDSEV), vcpu_sig=0xA00F11, guest_features=0x21
    )
    sev = GuestRequest(mode="SEV", ovmf=str(AMDSEV), vcpus="junk", vcpu_sig="junk")
    assert sev.vcpu_counts == ()  # SEV has no VMSAs: vCPU options do not apply
    assert sev.spec == GuestSpec(mode=Mode.SEV, ovmf=str(AMDSEV))
    svsm = GuestRequest(
        mode="snp:svsm", ovmf=str(AMDSEV), vcpus="1", vcpu_sig="1", vars_file=str(AMDSEV)
    )
    assert svsm.spec.vars_size == AMDSEV.stat().st_size


_OK = {"ovmf": "OVMF", "vcpus": "1", "vcpu_type": "EPYC"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({**_OK, "mode": "tdx", "ovmf": None}, "unknown mode 'tdx'"),
        ({**_OK, "ovmf": None, "output_format": "raw"}, "--ovmf PATH is required"),
        ({**_OK, "output_format": "raw", "dump_vmsa": True}, "--output-format 'raw': use hex"),
        ({**_OK, "mode": "sev", "dump_vmsa": True, "vmm_type": "xen"}, "--dump-vmsa applies"),
        ({**_OK, "vmm_type": "xen", "vcpu_sig": "q"}, "xen"),
        ({**_OK, "vcpu_type": None, "vcpu_sig": "q", "vcpus": None}, "--vcpu-sig 'q' is not an"),
        ({**_OK, "vcpus": None, "snp_ovmf_hash": "x"}, "--vcpus N is required in mode snp"),
        ({**_OK, "vcpus": "0", "snp_ovmf_hash": "x"}, "between 1 and 4096"),
        ({**_OK, "snp_ovmf_hash": "x", "vars_size": "1", "vars_file": "y"}, "not hexadecimal"),
        ({**_OK, "snp_ovmf_hash": "ab" * 47}, "is 47 bytes; an SNP digest is 48 bytes"),
        ({**_OK, "vars_size": "1", "vars_file": "y", "guest_features": "q"}, "not both"),
        ({**_OK, "vars_size": "q"}, "--vars-size 'q' is not an integer"),
        ({**_OK, "vars_file": "/nonexistent/vars"}, "cannot read --vars-file /nonexistent/vars"),
        ({**_OK, "mode": "snp:svsm", "guest_features": "q"}, "needs --vars-size or --vars-file"),
        ({**_OK, "guest_features": "q", "vmsa_rdx": "q"}, "--guest-features 'q' is not an"),
        ({**_OK, "vmsa_rdx": "q"}, "--vmsa-rdx 'q' is not an integer"),
    ],
)
def test_guest_request_names_the_first_bad_option(options, message):
    # The order is the one `keep measure-guest` always reported: the first problem is the error.
    with pytest.raises(InputError) as raised:
        GuestRequest(**options)
    assert message in raised.value.message


def test_guest_request_renders_as_sev_snp_measure_prints(tmp_path, monkeypatch):
    request = GuestRequest(ovmf=str(AMDSEV), vcpus="1-2", vcpu_type="EPYC", dump_vmsa=True)
    monkeypatch.chdir(tmp_path)
    result = request.measure()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vmsa0.bin", "vmsa1.bin"]
    one, two = result.digests[1].hex(), result.digests[2].hex()
    assert request.render(result) == f"1\t{one}\n2\t{two}"
    assert request.render(result, verbose=True).splitlines()[1] == (
        f"Calculated SEV_SNP guest measurement (2 vCPUs): {two}"
    )
    b64 = GuestRequest(ovmf=str(AMDSEV), vcpus="1", vcpu_type="EPYC", output_format="Base64")
    document = json.loads(b64.render(b64.measure(), as_json=True))
    assert document["output_format"] == "base64"
    assert document["measurements"] == [
        {"vcpus": 1, "digest": base64.b64encode(result.digests[1]).decode()}
    ]


def test_sev_launch_measurement_hmac():
    tik = bytes(range(16))
    digest = hashlib.sha256(b"guest").digest()
    mnonce = bytes(range(100, 116))
    # written out from the SEV API spec (#55766, LAUNCH_MEASURE), independently of the module
    message = b"\x04" + bytes([0, 24, 15]) + (0x3).to_bytes(4, "little") + digest + mnonce
    expected = hmac.digest(tik, message, "sha256")
    kwargs = {"api_major": 0, "api_minor": 24, "build": 15, "policy": 0x3, "mnonce": mnonce}
    assert launch_measurement(tik, launch_digest=digest, **kwargs) == expected
    verify_launch_measurement(expected, tik, launch_digest=digest, **kwargs)
    with pytest.raises(EvidenceError):
        verify_launch_measurement(expected, tik, launch_digest=bytes(32), **kwargs)
    with pytest.raises(InputError):
        launch_measurement(bytes(15), launch_digest=digest, **kwargs)
    with pytest.raises(InputError):
        launch_measurement(tik, launch_digest=digest, **{**kwargs, "policy": 1 << 32})


# --- the CLI ---------------------------------------------------------------------------------


def _keep(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["measure-guest", *argv])
    except SystemExit as exc:  # argparse exits for unknown options
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_matches_vector_and_lists_counts(capsys):
    common = ["--mode", "snp", "--vcpu-type", "EPYC-v4", "--ovmf", str(AMDSEV)]
    common += ["--kernel", str(FIXTURES / "empty.bin"), "--initrd", str(FIXTURES / "empty.bin")]
    code, out, err = _keep(
        capsys, *common, "--append", "", "--guest-features", "0x21", "--vcpus", "4"
    )
    assert (code, err) == (0, "")
    assert out.strip() == (
        "4953b1fb416fa874980e8442b3706d345926d5f38879134e0"
        "0813c5d7abcbe78eafe7b422907be0b4698e2414a631942"
    )
    code, out, _ = _keep(
        capsys, *common, "--append", "", "--guest-features", "0x21", "--vcpus", "1-4"
    )
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3", "4"]
    assert lines[3].split("\t")[1].startswith("4953b1fb")
    assert lines[0].split("\t")[1].startswith("329c8ce0")
    code, out, _ = _keep(
        capsys, *common, "--append", "", "--vcpus", "1", "--output-format", "base64"
    )
    # test_snp_without_kernel... differs; this is the empty-kernel, features 0x1 digest
    assert base64.b64decode(out.strip()).hex().startswith("ddc52245")


def test_cli_json(capsys):
    code, out, err = _keep(
        capsys,
        "--vcpus",
        "1,2",
        "--vcpu-sig",
        "0x800f12",
        "--ovmf",
        str(AMDSEV),
        "--kernel",
        str(FIXTURES / "empty.bin"),
        "--append",
        "console=ttyS0 loglevel=7",
        "--json",
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["mode"] == "snp"
    assert [m["vcpus"] for m in document["measurements"]] == [1, 2]
    inputs = document["inputs"]
    assert inputs["kernel"]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert inputs["sev_hashes_table"]["page_sha384"].startswith("adbef9bc")
    assert inputs["ovmf"]["snp_ovmf_hash"].startswith("086e2e91")
    assert set(inputs["vmsa"]) >= {"bsp", "ap", "sev_features", "vcpu_sig"}


def test_cli_modes(capsys):
    code, out, _ = _keep(capsys, "--mode", "snp:ovmf-hash", "--ovmf", str(AMDSEV))
    assert (code, out.strip()[:8]) == (0, "086e2e91")
    code, out, _ = _keep(
        capsys, "--mode", "sev", "--ovmf", str(FIXTURES / "ovmf_OvmfX64_suffix.bin")
    )
    assert out.strip() == "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da"
    code, out, _ = _keep(
        capsys,
        "--mode",
        "snp:svsm",
        "--vcpus",
        "2",
        "--vcpu-sig",
        "0x800f12",
        "--ovmf",
        str(FIXTURES / "svsm_ovmf.fd"),
        "--svsm",
        str(FIXTURES / "svsm.bin"),
        "--vars-size",
        "540672",
        "-v",
    )
    assert code == 0
    assert out.strip().endswith(
        "9b94745036aafddf4f7f8b00c7513abb5b7703178cb95aaa57928bd963d68d3bfcb715d6019b9167ee2517b11b0d9be7"
    )
    code, out, _ = _keep(
        capsys,
        "--vmm-type",
        "ec2",
        "--vcpus",
        "1",
        "--ovmf",
        str(AMDSEV),
        "--kernel",
        str(FIXTURES / "empty.bin"),
        "--initrd",
        str(FIXTURES / "empty.bin"),
        "--append",
        "",
        "--vmsa-rdx",
        "0",
    )
    assert out.strip().startswith("7d375615")  # historical_ec2_rdx0_features_0x1


def test_cli_dump_vmsa(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _keep(
        capsys, "--vcpus", "3", "--vcpu-type", "EPYC-Milan", "--ovmf", str(AMDSEV), "--dump-vmsa"
    )
    assert code == 0, err
    pages = [(tmp_path / f"vmsa{i}.bin").read_bytes() for i in range(3)]
    assert pages[1] == pages[2] != pages[0]
    assert pages[0][0x310:0x318] == (0xA00F11).to_bytes(8, "little")  # RDX = CPU signature


@pytest.mark.parametrize(
    "argv",
    [
        ["--vcpus", "1", "--vcpu-type", "EPYC"],  # no --ovmf
        ["--vcpus", "1", "--vcpu-type", "EPYC-v9", "--ovmf", "AMDSEV"],  # unknown CPU model
        ["--vcpus", "0", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV"],
        ["--vcpus", "x", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV"],
        ["--vcpu-type", "EPYC", "--ovmf", "AMDSEV"],  # no --vcpus
        ["--vcpus", "1", "--ovmf", "AMDSEV"],  # QEMU without a CPU model
        ["--vcpus", "1", "--vcpu-sig", "zz", "--ovmf", "AMDSEV"],
        ["--vcpus", "1", "--vcpu-sig", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "EMPTY"],  # empty firmware
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "TRUNCATED"],  # not page-sized
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "PLAIN"],  # no SEV metadata
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "MISSING"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--kernel", "MISSING"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--append", "x"],  # no kernel
        ["--mode", "tdx", "--ovmf", "AMDSEV"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--vmm-type", "xen"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--output-format", "raw"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--guest-features", "lots"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--snp-ovmf-hash", "abcd"],
        ["--vcpus", "1", "--vcpu-type", "EPYC", "--ovmf", "AMDSEV", "--snp-ovmf-hash", "xyz"],
        ["--mode", "sev", "--ovmf", "AMDSEV", "--dump-vmsa"],
        [
            "--mode",
            "snp:svsm",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            "AMDSEV",
            "--svsm",
            "AMDSEV",
        ],
        ["--no-such-option"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path):
    files = {
        "AMDSEV": str(AMDSEV),
        "EMPTY": str(FIXTURES / "empty.bin"),
        "MISSING": str(tmp_path / "missing.bin"),
    }
    (tmp_path / "truncated.fd").write_bytes(AMDSEV.read_bytes()[:4000])
    (tmp_path / "plain.fd").write_bytes(bytes(8192))
    files["TRUNCATED"] = str(tmp_path / "truncated.fd")
    files["PLAIN"] = str(tmp_path / "plain.fd")
    code, out, err = _keep(capsys, *[files.get(a, a) for a in argv])
    assert code == 2, (out, err)
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_help_imports_nothing_heavy():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = (
        "import sys, io, contextlib\n"
        "from keep.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['measure-guest', '--help'])\n"
        "    except SystemExit: pass\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('toolchain.'))))\n"
    )
    loaded = (
        subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=ROOT,
        )
        .stdout.strip()
        .split(",")
    )
    assert "toolchain.measure.guest" not in loaded
    assert "toolchain.snp.digest" not in loaded
    # How fast that makes it is measured by the benchmarks, never asserted here (no timing
    # asserts in tests: a busy machine would make them flaky).


def test_shipped_sample_measures_without_test_data(capsys):
    """The OVMF sample shipped in examples/guest measures with nothing from tests/data."""
    sample = ROOT / "examples" / "guest" / "ovmf_AmdSev_suffix.bin"
    argv = ["measure-guest", "--mode", "snp", "--ovmf", str(sample), "--vcpus", "1-4"]
    assert main([*argv, "--vcpu-type", "EPYC-v4", "--guest-features", "0x1"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [line[0] for line in lines] == ["1", "2", "3", "4"]
    # the sample is sev-snp-measure's AmdSev fixture: 1 vCPU, EPYC-v4, features 0x1, no kernel
    assert lines[0][1].startswith("19358ba9a7615534")
