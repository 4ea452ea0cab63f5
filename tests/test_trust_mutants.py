"""Tests that kill the mutants of ``toolchain.sign.trust`` its suite let survive
(tests/MUTATION.md): a key window that is not a date-time never widens trust, ``retire_key`` edits
exactly the entry it names whatever the layout of the file (a header on the first line, the
keyid right under its header or last in its table, not_after before or after the keyid), and
the names ``--trusted-key`` gives keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.sign import generate_private_key
from toolchain.sign.keys import key_id, public_key_pem
from toolchain.sign.trust import TrustPolicy, retire_key

RETIRE_AT = datetime(2028, 1, 1, tzinfo=UTC)


def _keys(tmp_path: Path) -> tuple[str, str]:
    ids = []
    for name in ("a", "b"):
        public = generate_private_key().public_key()
        (tmp_path / f"{name}.pub.pem").write_bytes(public_key_pem(public))
        ids.append(key_id(public))
    return ids[0], ids[1]


@pytest.mark.parametrize("value", ["5", "true", '["2027-01-01T00:00:00Z"]', "{ at = 1 }"])
@pytest.mark.parametrize("field", ["not_before", "not_after"])
def test_a_key_window_that_is_not_a_date_time_is_refused(
    tmp_path: Path, field: str, value: str
) -> None:
    a, _ = _keys(tmp_path)
    policy = tmp_path / "trust.toml"
    policy.write_text(f'[[keys]]\nfile = "a.pub.pem"\nkeyid = "{a}"\n{field} = {value}\n')
    with pytest.raises(InputError, match=f"keys\\[0\\]: {field} must be a date-time"):
        TrustPolicy.load(policy)


def _windows(policy_file: Path) -> dict[str, datetime | None]:
    return {k.key_id: k.not_after for k in TrustPolicy.load(policy_file).keys}


def test_retire_with_the_header_on_the_first_line_and_keyid_under_it(tmp_path: Path) -> None:
    a, b = _keys(tmp_path)
    policy = tmp_path / "trust.toml"
    policy.write_text(
        f'[[keys]]\nkeyid = "{a}"\nfile = "a.pub.pem"\nnot_after = 2030-01-01T00:00:00Z\n\n'
        f'[[keys]]\nkeyid = "{b}"\nfile = "b.pub.pem"\n'
    )
    retire_key(policy, a, RETIRE_AT)
    assert _windows(policy) == {a: RETIRE_AT, b: None}
    retire_key(policy, b, RETIRE_AT)
    assert _windows(policy) == {a: RETIRE_AT, b: RETIRE_AT}
    assert policy.read_text().count("not_after") == 2


def test_retire_touches_only_its_own_table(tmp_path: Path) -> None:
    a, b = _keys(tmp_path)
    policy = tmp_path / "trust.toml"
    # b's keyid is the first line of its table and a's not_after the last line of the one above.
    policy.write_text(
        "version = 1\nthreshold = 1\n\n"
        f'[[keys]]\nfile = "a.pub.pem"\nkeyid = "{a}"\nnot_after = 2030-01-01T00:00:00Z\n\n'
        f'[[keys]]\nkeyid = "{b}"\nfile = "b.pub.pem"\n'
    )
    retire_key(policy, b, RETIRE_AT)
    assert _windows(policy) == {a: datetime(2030, 1, 1, tzinfo=UTC), b: RETIRE_AT}


def test_retire_replaces_a_not_after_above_a_keyid_that_ends_its_table(tmp_path: Path) -> None:
    a, b = _keys(tmp_path)
    policy = tmp_path / "trust.toml"
    policy.write_text(
        f'[[keys]]\nfile = "a.pub.pem"\nnot_after = 2030-01-01T00:00:00Z\nkeyid = "{a}"\n'
        f'[[keys]]\nfile = "b.pub.pem"\nnot_after = 2029-01-01T00:00:00Z\nkeyid = "{b}"\n'
    )
    retire_key(policy, a, RETIRE_AT)
    assert _windows(policy) == {a: RETIRE_AT, b: datetime(2029, 1, 1, tzinfo=UTC)}
    assert policy.read_text().count("not_after") == 2


def test_trusted_keys_are_named_by_their_key_id_prefix() -> None:
    public = generate_private_key().public_key()
    (key,) = TrustPolicy.from_keys([public, public]).keys
    assert key.key_id == key_id(public)
    assert key.name == key_id(public)[:16]
