"""Verification-policy bounds that mutation testing found unpinned (tests/MUTATION.md).

Each bound is tested on both sides: the last accepted value and the first refused one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.errors import InputError
from toolchain.verify import VerificationPolicy


def test_vmpl_is_0_to_3() -> None:
    for vmpl in (None, 0, 3):
        assert VerificationPolicy(vmpl=vmpl).vmpl == vmpl
    for vmpl in (-1, 4):
        with pytest.raises(InputError, match="vmpl"):
            VerificationPolicy(vmpl=vmpl)
    assert VerificationPolicy.from_toml("vmpl = 3").vmpl == 3
    for text in ("vmpl = -1", "vmpl = 4", "vmpl = true", 'vmpl = "0"'):
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(text)


def test_min_tcb_levels_are_0_to_255_of_known_components() -> None:
    assert VerificationPolicy(min_tcb={"snp": 0, "microcode": 255, "fmc": 1}).min_tcb
    for bad in ({"snp": -1}, {"snp": 256}, {"sn": 1}):
        with pytest.raises(InputError, match="min_tcb"):
            VerificationPolicy(min_tcb=bad)
    assert VerificationPolicy.from_toml("min_tcb = { snp = 255 }").min_tcb == {"snp": 255}
    for text in ("min_tcb = { snp = true }", 'min_tcb = { snp = "8" }', "min_tcb = 8"):
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(text)


def test_min_guest_svn_is_a_non_negative_integer() -> None:
    assert VerificationPolicy.from_toml("min_guest_svn = 0").min_guest_svn == 0
    for text in ("min_guest_svn = -1", "min_guest_svn = true", "min_guest_svn = 1.5"):
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(text)


def test_expected_values_have_their_field_sizes() -> None:
    sizes = {"report_data": 64, "host_data": 32, "family_id": 16, "image_id": 16}
    for name, size in sizes.items():
        assert getattr(VerificationPolicy(**{name: bytes(size)}), name) == bytes(size)
        assert getattr(VerificationPolicy(**{name: b"\1"}), name) == b"\1"  # zero-padded later
        with pytest.raises(InputError, match=name):
            VerificationPolicy(**{name: bytes(size + 1)})
        with pytest.raises(InputError, match=name):
            VerificationPolicy(**{name: "00"})
        assert getattr(VerificationPolicy.from_toml(f'{name} = "{"ab" * size}"'), name) == (
            b"\xab" * size
        )
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(f"{name} = 1")


def test_digest_allow_lists_need_48_byte_entries() -> None:
    for name in ("allowed_measurements", "allowed_id_key_digests", "allowed_author_key_digests"):
        assert getattr(VerificationPolicy(**{name: frozenset({bytes(48)})}), name)
        for size in (47, 49):
            with pytest.raises(InputError, match=name):
                VerificationPolicy(**{name: frozenset({bytes(48), bytes(size)})})
        parsed = VerificationPolicy.from_toml(f'{name} = ["{"cd" * 48}"]')
        assert getattr(parsed, name) == frozenset({b"\xcd" * 48})
        for text in (f'{name} = "{"cd" * 48}"', f'{name} = ["zz"]', f"{name} = [1]"):
            with pytest.raises(InputError):
                VerificationPolicy.from_toml(text)


def test_flags_are_known_names() -> None:
    policy = VerificationPolicy.from_toml(
        'required_platform_flags = ["tsme_enabled"]\nrequired_policy_flags = ["smt"]'
    )
    assert policy.required_platform_flags == frozenset({"tsme_enabled"})
    for text in (
        'required_platform_flags = ["tsme"]',
        'required_policy_flags = ["debugging"]',
        "required_platform_flags = [1]",
        'required_policy_flags = "smt"',
    ):
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(text)


def test_booleans_and_versions_from_toml() -> None:
    policy = VerificationPolicy.from_toml(
        "allow_debug = true\nstrict = true\nrequire_crl = true\nallowed_versions = [3, 5]"
    )
    assert (policy.allow_debug, policy.strict, policy.require_crl) == (True, True, True)
    assert policy.allowed_versions == frozenset({3, 5})
    assert VerificationPolicy.from_toml('min_abi = "1.51"').min_abi == (1, 51)
    for text in (
        "allow_debug = 1",
        'strict = "yes"',
        "allowed_versions = 3",
        'allowed_versions = ["3"]',
        'min_abi = "1"',
        'min_abi = "a.b"',
        "unknown_key = 1",
        "not toml [",
    ):
        with pytest.raises(InputError):
            VerificationPolicy.from_toml(text)


def test_an_empty_string_is_not_an_empty_list_of_flags() -> None:
    for key in ("required_platform_flags", "required_policy_flags"):
        with pytest.raises(InputError, match="expected an array of strings"):
            VerificationPolicy.from_toml(f'{key} = ""')


def test_an_unreadable_policy_file_is_unusable_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read policy"):
        VerificationPolicy.load(tmp_path / "absent.toml")
    (tmp_path / "latin1.toml").write_bytes(b"# \xe9\n")
    with pytest.raises(InputError, match="cannot read policy"):
        VerificationPolicy.load(tmp_path / "latin1.toml")
