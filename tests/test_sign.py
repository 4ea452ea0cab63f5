"""Statements and the Keepstack predicate: building, schema validation, `keep sign` inputs."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keep.cli import main
from toolchain.errors import InputError
from toolchain.sign import (
    PREDICATE_TYPE,
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    build_statement,
    generate_private_key,
    sign_statement,
    validate_statement,
    write_key_pair,
)
from toolchain.sign.dsse import Envelope
from toolchain.sign.intoto import canonical_payload, parse_statement
from toolchain.sign.predicate import SCHEMA_FILE, parse_time
from toolchain.sign.schema_check import _check_supported, load_schema, validate

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = Path(__file__).parent.parent / "toolchain/sign/schema" / SCHEMA_FILE
AT = datetime(2026, 11, 27, tzinfo=UTC)


def _predicate(**changes: object) -> KeepPredicate:
    fields: dict[str, object] = {
        "release": "0.1.0",
        "configs": [LaunchConfig("turin", 8, 0x30000, "snp", b"\x11" * 48)],
        "components": [ComponentDigest("vmm.whl", "a" * 64, "b" * 96)],
        "toolchain": {"ziglang": "0.15.2 sha256:" + "c" * 64},
        "provenance_sha256": "d" * 64,
        "not_before": AT,
        "not_after": AT + timedelta(days=365),
        "development": False,
    }
    fields.update(changes)
    return KeepPredicate(**fields)  # type: ignore[arg-type]


def _statement() -> dict[str, object]:
    return build_statement(_predicate(), {"vmm.whl": {"sha256": "a" * 64, "sha384": "b" * 96}})


def test_statement_shape_and_predicate_round_trip() -> None:
    statement = _statement()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert (
        statement["predicateType"]
        == PREDICATE_TYPE
        == ("https://keepstack.dev/reference-measurements/v1")
    )
    assert statement["subject"] == [
        {"name": "vmm.whl", "digest": {"sha256": "a" * 64, "sha384": "b" * 96}}
    ]
    predicate = statement["predicate"]
    assert predicate == {
        "release": "0.1.0",
        "development": False,
        "validity": {"notBefore": "2026-11-27T00:00:00Z", "notAfter": "2027-11-27T00:00:00Z"},
        "launchConfigurations": [
            {
                "cpuGeneration": "turin",
                "vcpus": 8,
                "guestPolicy": "0x0000000000030000",
                "backend": "snp",
                "launchDigest": "11" * 48,
            }
        ],
        "components": [{"name": "vmm.whl", "digest": {"sha256": "a" * 64, "sha384": "b" * 96}}],
        "toolchain": {"ziglang": "0.15.2 sha256:" + "c" * 64},
        "buildProvenance": {"sha256": "d" * 64},
    }
    assert KeepPredicate.from_json(predicate) == _predicate()
    assert validate_statement(statement) == _predicate()
    # The signed bytes are canonical: key order does not change them.
    shuffled = dict(reversed(list(statement.items())))
    assert canonical_payload(shuffled) == canonical_payload(statement)


def test_times_are_normalised_to_utc_seconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    predicate = _predicate(not_before=datetime(2026, 11, 27, 2, 0, 0, 999, tzinfo=plus_two))
    assert predicate.not_before == datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    with pytest.raises(InputError, match="time zone"):
        _predicate(not_before=datetime(2026, 11, 27))
    with pytest.raises(InputError, match="validity window is empty"):
        _predicate(not_after=AT)
    assert parse_time("2026-11-27") == AT
    assert parse_time("2026-11-27T01:00:00+01:00") == AT
    with pytest.raises(InputError, match="no time zone"):
        parse_time("2026-11-27T00:00:00")
    with pytest.raises(InputError, match="not an ISO 8601"):
        parse_time("yesterday")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"release": "../x"}, "release"),
        ({"release": ""}, "release"),
        ({"configs": []}, "at least one launch configuration"),
        ({"provenance_sha256": "D" * 64}, "provenance"),
        (
            {
                "configs": [
                    LaunchConfig("milan", 1, 1, "kvm", b"\x01" * 48),
                    LaunchConfig("milan", 1, 1, "kvm", b"\x02" * 48),
                ]
            },
            "listed twice with different digests",
        ),
        (
            {"components": [ComponentDigest("a", "a" * 64, "b" * 96)] * 2},
            "component(s) listed twice: a",
        ),
        ({"toolchain": {"zig": ""}}, "toolchain entry"),
    ],
)
def test_bad_predicates_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as info:
        _predicate(**changes)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pentium", 1, 0, "kvm", bytes(48)), "CPU generation"),
        (("milan", 0, 0, "kvm", bytes(48)), "vCPU"),
        (("milan", True, 0, "kvm", bytes(48)), "vCPU"),
        (("milan", 1, 1 << 64, "kvm", bytes(48)), "64 bits"),
        (("milan", 1, -1, "kvm", bytes(48)), "64 bits"),
        (("milan", 1, 0, "xen", bytes(48)), "backend"),
        (("milan", 1, 0, "kvm", bytes(32)), "48 bytes"),
    ],
)
def test_bad_launch_configs_are_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(InputError, match=message):
        LaunchConfig(*args)  # type: ignore[arg-type]


def test_schema_file_is_valid_json_and_uses_only_supported_keywords() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    _check_supported(schema, "file")
    assert load_schema(SCHEMA_FILE) == schema
    assert validate(_predicate().to_json(), schema) == []


def _mutations() -> list[tuple[str, object, str]]:
    """(path, new value, expected message) — each breaks one rule of the schema."""
    return [
        ("release", 5, "$.release: expected string"),
        ("development", "no", "$.development: expected boolean"),
        ("validity.notBefore", "2026-11-27", "does not match"),
        ("validity.notAfter", "2026-11-27T00:00:00Z\n", "does not match"),
        ("launchConfigurations", [], "fewer than 1 item"),
        ("launchConfigurations.0.cpuGeneration", "bergamo", "expected one of"),
        ("launchConfigurations.0.vcpus", 0, "below the minimum"),
        ("launchConfigurations.0.vcpus", True, "expected integer"),
        ("launchConfigurations.0.vcpus", 1.5, "expected integer"),
        ("launchConfigurations.0.guestPolicy", 196608, "expected string"),
        ("launchConfigurations.0.guestPolicy", "0x30000", "does not match"),
        ("launchConfigurations.0.launchDigest", "AB" * 48, "does not match"),
        ("launchConfigurations.0.extra", 1, "unexpected property 'extra'"),
        ("components.0.digest.sha384", "b" * 95, "does not match"),
        ("components.0.name", "", "shorter than 1"),
        ("toolchain.zig", 15, "$.toolchain.zig: expected string"),
        ("buildProvenance", {}, "missing required property 'sha256'"),
        ("surprise", True, "unexpected property 'surprise'"),
    ]


@pytest.mark.parametrize(("path", "value", "message"), _mutations())
def test_schema_rejects_each_broken_field(path: str, value: object, message: str) -> None:
    document: object = _predicate().to_json()
    target = document
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]  # type: ignore[index]
    target[last] = value  # type: ignore[index]
    errors = validate(document, load_schema(SCHEMA_FILE))
    assert any(message in e for e in errors), errors
    with pytest.raises(InputError, match="predicate does not match"):
        KeepPredicate.from_json(document)


def test_schema_reports_missing_required_properties() -> None:
    errors = validate({}, load_schema(SCHEMA_FILE), root="predicate")
    assert "predicate: missing required property 'release'" in errors
    assert len(errors) == 7


def test_schema_checker_refuses_unsupported_keywords() -> None:
    with pytest.raises(InputError, match="unsupported keyword"):
        _check_supported({"type": "object", "properties": {"a": {"oneOf": []}}}, "t")


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
)
def test_arbitrary_json_never_escapes_as_a_raw_exception(value: object) -> None:
    for candidate in (value, {**_predicate().to_json(), "launchConfigurations": [value]}):
        with contextlib.suppress(InputError):
            KeepPredicate.from_json(candidate)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update({"_type": "https://in-toto.io/Statement/v0.1"}), "_type"),
        (lambda s: s.update({"subject": []}), "non-empty list"),
        (lambda s: s.update({"subject": [{"name": "x"}]}), "digest set"),
        (lambda s: s.update({"subject": [{"name": "", "digest": {"sha256": "0" * 64}}]}), "name"),
        (
            lambda s: s.update({"subject": [{"name": "x", "digest": {"sha256": "0" * 63}}]}),
            "64 hex",
        ),
        (lambda s: s.update({"subject": [{"name": "x", "digest": {"sha256": "G" * 64}}]}), "hex"),
        (lambda s: s.update({"subject": [s["subject"][0], s["subject"][0]]}), "listed twice"),
        (lambda s: s.pop("predicateType"), "predicateType"),
        (lambda s: s.update({"predicate": []}), "predicate must be a JSON object"),
        (lambda s: s["predicate"].pop("release"), "missing required property 'release'"),
    ],
)
def test_bad_statements_are_refused_before_signing(mutate: object, message: str) -> None:
    statement = copy.deepcopy(_statement())
    mutate(statement)  # type: ignore[operator]
    with pytest.raises(InputError) as info:
        sign_statement(statement, generate_private_key("ed25519"))
    assert message in info.value.message


def test_any_statement_type_can_be_signed() -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a.tar", "digest": {"gitCommit": "ab" * 20}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {},
    }
    envelope = Envelope.parse(sign_statement(statement, generate_private_key()))
    assert parse_statement(envelope.payload) == (statement, None)


def test_keep_sign_cli_validates_its_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_key_pair(Path("k.pem"), generate_private_key())
    Path("good.json").write_text(json.dumps(_statement()))
    Path("bad.json").write_text('{"_type": "x"')
    Path("wrong.json").write_text(json.dumps({**_statement(), "predicateType": 1}))
    sign = ["sign", "--key", "k.pem", "--statement"]
    assert main([*sign, "bad.json", "-o", "e.json"]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main([*sign, "wrong.json", "-o", "e.json"]) == 2
    assert "predicateType" in capsys.readouterr().err
    assert main([*sign, "good.json"]) == 2
    assert "needs -o" in capsys.readouterr().err
    assert main([*sign, "good.json", "-o", "e.json"]) == 0
    assert main([*sign, "good.json", "-o", "e.json"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*sign, "good.json", "-o", "e.json", "--force"]) == 0
    Path("junk.json").write_text("junk")
    assert main(["sign", "--key", "k.pem", "--add-to", "junk.json"]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["sign", "--key", "missing.pem", "--add-to", "e.json"]) == 2
    assert "cannot read private key" in capsys.readouterr().err


# --- keep sign signs only reference statements; keep statement makes them -----------------------


def _slsa_provenance() -> dict[str, object]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app.wasm", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {}},
    }


def test_keep_sign_refuses_anything_but_a_reference_statement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users signed provenance.json by mistake and keep sign accepted it: now exit 2, naming
    what the file is, before any key is read (the key path here does not exist)."""
    monkeypatch.chdir(tmp_path)
    other = {**_slsa_provenance(), "predicateType": "https://example.com/other/v1"}
    envelope = sign_statement(_slsa_provenance(), generate_private_key())
    cases = {
        "provenance.json": (_slsa_provenance(), "provenance.json is an SLSA build provenance"),
        "other.json": (other, "predicateType 'https://example.com/other/v1', not https://keep"),
        "list.json": ([_statement()], "list.json is a JSON list, not an in-toto statement"),
        "e.json": (json.loads(envelope), "e.json is a DSSE envelope (already signed)"),
        "v01.json": (
            {**_statement(), "_type": "https://in-toto.io/Statement/v0.1"},
            "v01.json is not an in-toto Statement v1",
        ),
    }
    for name, (document, message) in cases.items():
        Path(name).write_text(json.dumps(document))
        argv = ["sign", "--key", "absent.pem", "--statement", name, "-o", "out.json"]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err, err
        assert "cannot read private key" not in err
        assert not Path("out.json").exists()
    assert "keep statement BUILD_DIR" in _refusal(["--statement", "provenance.json"], capsys)
    # Co-signing an envelope around anything but a reference is refused the same way.
    assert "the payload of e.json is an SLSA build provenance" in _refusal(
        ["--add-to", "e.json"], capsys
    )
    # The library still signs other statement types (tests use it to check the verifier).
    assert parse_statement(Envelope.parse(envelope).payload)[1] is None


def _refusal(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["sign", "--key", "absent.pem", *arguments, "-o", "out.json"]) == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def hello_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toolchain.image.keep_build import build_keep

    out = tmp_path_factory.mktemp("hello") / "build"
    build_keep(ROOT / "examples/hello/hello.wat", out, vcpu_counts=(1,))
    return out


def test_keep_statement_sign_verify_run(
    tmp_path: Path,
    hello_build: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole user flow the issue describes: build, statement, sign, verify, run, with
    relative paths; the signed reference is one keep run finds."""
    from toolchain.measure.plan import PLAN_FILE, LaunchPlan

    monkeypatch.chdir(tmp_path)
    shutil.copytree(hello_build, "build")
    write_key_pair(Path("me.pem"), generate_private_key())
    statement = ["statement", "build", "--vcpus", "1,2", "--vcpus", "4", "--backend", "nil"]
    statement += ["--cpu-generation", "milan,any", "--valid-for", "30d", "-o", "s.json"]
    assert main(statement) == 0
    assert "6 launch configuration(s)" in capfd.readouterr().err
    document = json.loads(Path("s.json").read_text())
    plan = LaunchPlan.load(Path("build") / PLAN_FILE)
    digests = plan.launch_digests([1, 2, 4])
    configs = document["predicate"]["launchConfigurations"]
    assert {(c["cpuGeneration"], c["vcpus"], c["backend"]) for c in configs} == {
        (g, v, "nil") for g in ("milan", "any") for v in (1, 2, 4)
    }
    assert all(c["launchDigest"] == digests[c["vcpus"]].hex() for c in configs)
    assert sorted(s["name"] for s in document["subject"]) == sorted(
        ["app.wasm", PLAN_FILE, "runtime.elf", "ukernel-snp.elf", "ukernel.elf"]
    )
    assert main(statement) == 2  # never overwritten silently
    assert "already exists" in capfd.readouterr().err
    # backend snp signs the snp plan's digests (its C-bit, KVM's VMSAs), never the kvm/nil ones;
    # "any" CPU generation has no known C-bit, so it is refused for snp rather than guessed.
    from toolchain.measure.keep import snp_plan_of

    elfs = (Path("build/ukernel.elf"), Path("build/runtime.elf"), Path("build/ukernel-snp.elf"))
    snp = snp_plan_of(plan, *elfs)
    snp_digests = snp.launch_digests([1, 2])
    both = ["statement", "build", "--vcpus", "1,2", "--backend", "kvm,snp", "-o", "snp.json"]
    assert main([*both, "--cpu-generation", "genoa,turin"]) == 0
    configs = json.loads(Path("snp.json").read_text())["predicate"]["launchConfigurations"]
    assert len(configs) == 2 * 2 * 2
    for config in configs:
        want = snp_digests if config["backend"] == "snp" else digests
        assert config["launchDigest"] == want[config["vcpus"]].hex(), config
    assert main([*both, "--force", "--cpu-generation", "any"]) == 2
    assert "no C-bit position known for CPU generation 'any'" in capfd.readouterr().err
    assert main(["sign", "--key", "me.pem", "--statement", "s.json", "-o", "hello.dsse.json"]) == 0
    trusted = ["--trusted-key", "me.pem.pub"]
    verify = ["references", "verify", "hello.dsse.json", *trusted, "--artifacts", "build"]
    assert main(verify) == 0
    assert "=> VALID" in capfd.readouterr().out
    run = ["run", "--dev", "--backend", "nil", "--build-dir", "build"]
    run += ["--references", "hello.dsse.json", *trusted, str(ROOT / "examples/hello/hello.wat")]
    assert main(run) == 0
    assert "hello from a keep" in capfd.readouterr().out


def test_keep_statement_refuses_a_changed_or_foreign_directory(
    tmp_path: Path, hello_build: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = tmp_path / "build"
    shutil.copytree(hello_build, build)
    (build / "ukernel.elf").write_bytes((build / "ukernel.elf").read_bytes() + b"\0")
    assert main(["statement", str(build)]) == 2
    err = capsys.readouterr().err
    assert "ukernel.elf changed since keep build: expected sha256 " in err
    assert main(["statement", str(tmp_path)]) == 2
    assert "no readable provenance.json" in capsys.readouterr().err
    assert main(["statement", str(hello_build), "--cpu-generation", "zen9"]) == 2
    assert "unknown CPU generation 'zen9'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: exit 2 with the usage
        main(["statement", str(hello_build), "--valid-for", "1y"])
    assert exited.value.code == 2
    assert "give days or hours" in capsys.readouterr().err


def test_keep_statement_makes_the_release_statement(
    hello_build: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The code a release signs with: for this tree's hello, keep statement with the release's
    parameters gives the published release statement's subjects and launch configurations."""
    from toolchain import __version__

    published = ROOT / "reference-measurements" / __version__ / "hello.dsse.json"
    if not published.is_file():
        pytest.skip(f"release {__version__} is not published in this tree")
    release = json.loads(Envelope.parse(published.read_bytes()).payload)
    validity = release["predicate"]["validity"]
    argv = ["statement", str(hello_build), "--not-before", validity["notBefore"]]
    assert main([*argv, "--release", __version__]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours["subject"] == release["subject"]
    for field in ("launchConfigurations", "validity", "release", "development"):
        assert ours["predicate"][field] == release["predicate"][field], field
