"""verify-report --references: MEASUREMENT accepted only if a verified reference lists it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from testdata import DATA

from keep.cli import main
from toolchain.sign import (
    KeepPredicate,
    LaunchConfig,
    PrivateKey,
    build_statement,
    generate_private_key,
    sign_statement,
    write_key_pair,
)
from toolchain.snp.report import AttestationReport

REPORT = "vectors/snp-reports/enarx-steward/report.bin"
VCEK = "vectors/snp-reports/enarx-steward/vcek.der"
NOW = datetime.now(UTC).replace(microsecond=0)


def signed_reference(configs: list[LaunchConfig], key: PrivateKey) -> bytes:
    """A reference envelope (release 9.9.9, valid from a day ago to a day ahead) signed by key."""
    predicate = KeepPredicate(
        release="9.9.9",
        configs=configs,
        components=[],
        toolchain={},
        provenance_sha256=hashlib.sha256(b"provenance").hexdigest(),
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=1),
        development=False,
    )
    statement = build_statement(predicate, {"keep.img": {"sha256": "00" * 32}})
    return sign_statement(statement, key)


def _envelope(tmp_path: Path, key_name: str, configs: list[LaunchConfig]) -> tuple[Path, Path]:
    key = generate_private_key("ecdsa-p384")
    pub_path = write_key_pair(tmp_path / key_name, key)
    out = tmp_path / f"{key_name}.dsse.json"
    out.write_bytes(signed_reference(configs, key))
    return out, pub_path


@pytest.fixture
def report_facts(data_dir: Path) -> tuple[bytes, int]:
    report = AttestationReport.parse((data_dir / REPORT).read_bytes())
    return report.measurement, report.policy.value


def _verify(*extra: str) -> int:
    return main(["verify-report", str(DATA / REPORT), "--vcek", str(DATA / VCEK), *extra])


def test_listed_measurement_verifies(
    tmp_path: Path, report_facts: tuple[bytes, int], capsys
) -> None:
    measurement, policy = report_facts
    envelope, pub = _envelope(
        tmp_path, "release", [LaunchConfig("milan", 1, policy, "snp", measurement)]
    )
    status = _verify("--references", str(envelope), "--trusted-key", str(pub))
    out = capsys.readouterr().out
    assert status == 0, out
    assert "✔ references.configuration" in out
    assert "✔ measurement" in out


def test_unlisted_measurement_is_rejected(
    tmp_path: Path, report_facts: tuple[bytes, int], capsys
) -> None:
    _, policy = report_facts
    envelope, pub = _envelope(
        tmp_path, "release", [LaunchConfig("milan", 1, policy, "snp", bytes(48))]
    )
    status = _verify("--references", str(envelope), "--trusted-key", str(pub))
    out = capsys.readouterr().out
    assert status == 1
    assert "✗ measurement" in out


def test_other_generation_or_policy_does_not_match(
    tmp_path: Path, report_facts: tuple[bytes, int], capsys
) -> None:
    measurement, policy = report_facts
    envelope, pub = _envelope(
        tmp_path,
        "release",
        [
            LaunchConfig("genoa", 1, policy, "snp", measurement),
            LaunchConfig("milan", 1, policy ^ (1 << 16), "snp", measurement),
        ],
    )
    status = _verify("--references", str(envelope), "--trusted-key", str(pub))
    out = capsys.readouterr().out
    assert status == 1
    assert "✗ references.configuration" in out


def test_reference_signed_by_untrusted_key_allows_nothing(
    tmp_path: Path, report_facts: tuple[bytes, int], capsys
) -> None:
    measurement, policy = report_facts
    envelope, _ = _envelope(
        tmp_path, "release", [LaunchConfig("milan", 1, policy, "snp", measurement)]
    )
    _, other_pub = _envelope(
        tmp_path, "other", [LaunchConfig("milan", 1, policy, "snp", bytes(48))]
    )
    status = _verify("--references", str(envelope), "--trusted-key", str(other_pub))
    out = capsys.readouterr().out
    assert status == 1
    assert "✗" in out
    assert "✗ measurement" in out


def test_references_without_trust_use_the_built_in_policy_never_the_current_directory(
    tmp_path: Path, report_facts: tuple[bytes, int], capsys, monkeypatch
) -> None:
    """The attack: run from a directory holding someone else's TUF repository, key and envelope
    (listing this report's measurement). Without --trust the built-in policy decides, and the
    output names it; their envelope allows nothing."""
    from test_references import FOREIGN_REFUSED, builtin_line, plant_trust_policy

    from toolchain.sign import load_private_key

    measurement, policy = report_facts
    envelope, _ = _envelope(
        tmp_path, "release", [LaunchConfig("milan", 1, policy, "snp", measurement)]
    )
    planted = plant_trust_policy(
        tmp_path, load_private_key(tmp_path / "release"), envelope.read_bytes()
    )
    monkeypatch.chdir(tmp_path)
    assert _verify("--references", envelope.name) == 1
    out = capsys.readouterr().out
    assert builtin_line() in out
    assert FOREIGN_REFUSED in out
    assert "✗ measurement" in out
    assert "=> VALID" not in out
    # Given explicitly (root and metadata), their trust is used, and named.
    monkeypatch.setenv("KEEPSTACK_TUF_REPOSITORY", str(planted.parent.parent))
    assert _verify("--references", envelope.name, "--trust", str(planted)) == 0
    out = capsys.readouterr().out
    assert f"(followed from the pinned {planted} root, sha256 " in out
    assert "=> VALID" in out
