"""Tests that kill the mutants of ``toolchain.sign.trust`` its suite let survive
(tests/MUTATION.md): a key's release scope (no release, a pattern, every release), which anchor
``select`` picks (``--trust`` over ``$KEEPSTACK_TRUST`` over the built-in root) and that only a
TUF root is ever one (the trust.toml format is refused by name), a threshold that is not an
integer, a key of an unsupported curve, a built-in root that is not a plain file, and the names
``--trusted-key`` gives keys."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import toolchain.sign.trust as sign_trust
from toolchain.errors import InputError, PlatformError
from toolchain.sign import generate_private_key
from toolchain.sign.keys import key_id
from toolchain.sign.trust import TrustedKey, TrustPolicy


def _key(releases: tuple[str, ...] | None) -> TrustedKey:
    public = generate_private_key().public_key()
    return TrustedKey(public, key_id(public), "k", releases)


def test_a_key_counts_only_for_the_releases_of_its_scope() -> None:
    scoped = _key(("0.1.*", "1.*"))
    assert scoped.scope_problem("0.1.7") is None
    assert scoped.scope_problem("1.0.0") is None
    assert scoped.scope_problem("0.2.0") == "key is not trusted for release 0.2.0 (only 0.1.*, 1.*)"
    assert scoped.scope_problem("0.1") == "key is not trusted for release 0.1 (only 0.1.*, 1.*)"
    # A statement naming no release never passes a scoped key.
    assert scoped.scope_problem(None) == "key is trusted only for Keepstack releases 0.1.*, 1.*"
    # Patterns match case-sensitively and whole: TUF's folder "0.3.0" is exactly that release.
    exact = _key(("0.3.0",))
    assert exact.scope_problem("0.3.0") is None
    assert exact.scope_problem("0.3.00") is not None
    assert _key(("a*",)).scope_problem("A1") is not None
    assert _key(None).scope_problem(None) is None
    assert _key(None).scope_problem("9.9.9") is None


def _chosen(monkeypatch: pytest.MonkeyPatch, *args: object, env: str = "") -> str:
    """What ``select`` passed to load_tuf_root: the path and the source it named."""
    seen: list[str] = []

    def load(cls: type, path: Path, *, source: str | None = None, environ: object = None) -> str:
        seen.append(f"{path}|{source}")
        return seen[-1]

    monkeypatch.setattr(TrustPolicy, "load_tuf_root", classmethod(load))
    environ = {"KEEPSTACK_TRUST": env} if env else {}
    TrustPolicy.select(*args, environ=environ)  # type: ignore[arg-type]
    return seen[0]


def test_select_prefers_trust_then_the_environment_then_the_built_in_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given, named = Path("/given/root.json"), "/named/root.json"
    assert _chosen(monkeypatch, given, env=named) == "/given/root.json|None"
    assert _chosen(monkeypatch, None, env=named) == (f"{named}|{named} (from $KEEPSTACK_TRUST)")
    builtin = TrustPolicy.builtin_file()
    assert builtin.name == "root.json"
    assert _chosen(monkeypatch, None) == f"{builtin}|built-in"


@pytest.mark.parametrize("name", ["trust.toml", "root.json.toml", "root.JSON", "root", "json"])
def test_only_a_json_file_is_taken_for_a_tuf_root(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    with pytest.raises(InputError, match=f"--trust {name}: not a TUF root"):
        _chosen(monkeypatch, Path(name))
    with pytest.raises(InputError, match=rf"\$KEEPSTACK_TRUST {name}: not a TUF root"):
        _chosen(monkeypatch, None, env=name)


def test_trusted_keys_are_named_by_their_key_id_prefix() -> None:
    public = generate_private_key().public_key()
    (key,) = TrustPolicy.from_keys([public, public]).keys
    assert key.key_id == key_id(public)
    assert key.name == key_id(public)[:16]
    assert key.releases is None  # exactly these keys, for every release


@pytest.mark.parametrize("threshold", ["2", 2.0, True, None])
def test_a_threshold_that_is_not_an_integer_is_refused(threshold: object) -> None:
    with pytest.raises(InputError, match="threshold must be an integer"):
        TrustPolicy((), threshold)  # type: ignore[arg-type]


def test_a_key_of_an_unsupported_curve_is_never_trusted() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(InputError, match="unsupported elliptic curve secp256r1"):
        TrustPolicy.from_keys([p256])


def test_a_built_in_root_that_is_not_a_plain_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed zipped, the root is no file the TUF client could read: a PlatformError."""
    archive = tmp_path / "keepstack.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("release-trust/root.json", "{}")
    monkeypatch.setattr(sign_trust.resources, "files", lambda package: zipfile.Path(archive))
    with pytest.raises(PlatformError, match=r"not a file .*regular \(unzipped\) package"):
        TrustPolicy.builtin_file()
