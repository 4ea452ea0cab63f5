"""The trust policy: which public keys may sign references, for what, and how many must agree.

Which trust anchor a command uses (``TrustPolicy.select``), never read from the current directory:

1. ``--trust ROOT.json`` when given: a pinned TUF root (made with ``keep tuf init``);
2. else the root named by ``$KEEPSTACK_TRUST`` (documented; an explicit choice of the user);
3. else the **built-in** pinned first TUF root shipped inside the installed package
   (``toolchain/sign/release-trust/root.json``), loaded with importlib.resources.

The policy is then what the TUF client (``toolchain.sign.tuf_client``) establishes from that
root against the repository's metadata (``$KEEPSTACK_TUF_REPOSITORY``, else
``reference-measurements/`` beside keepstack or in the current directory; metadata is verified
from the root, so its location decides nothing), and ``for_envelope`` picks, per envelope, the
role that lists its exact bytes and that role's keys, scoped to the release of the target's
path (a delegation's paths decide which releases a key signs; TUF's expiry ends its trust).
Any other file is refused: the project's own policy format (``trust.toml``) was removed in
0.3.0.

``--trusted-key PUB`` (``TrustPolicy.from_keys``) trusts exactly the keys given, for every
release: the explicit, never default, choice of a private deployment or a test. Whatever was
chosen, ``describe()`` names it ("built-in" or the path, with the root's SHA-256, or the key
IDs), and every verification checklist carries that line. A key is identified by its key ID
(the SHA-256 of its SubjectPublicKeyInfo DER), so one key can never stand for two.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import InputError, PlatformError
from toolchain.sign.keys import PublicKey, algorithm_of, key_id

if TYPE_CHECKING:
    from toolchain.sign.tuf_client import TufTrust

#: The environment variable naming a pinned TUF root (used when --trust is not given).
TRUST_ENV = "KEEPSTACK_TRUST"
#: How the policy shipped inside the package is named in every checklist.
BUILTIN = "built-in"
#: The pinned first TUF root the package ships.
ROOT_FILE = "root.json"
#: Where the built-in root lives: in the package, and (for ``nox -s release``) in a source tree.
BUILTIN_PACKAGE = "toolchain.sign"
BUILTIN_DIR = "release-trust"
BUILTIN_SOURCE_DIR = Path("toolchain", "sign", BUILTIN_DIR)
#: The release that removed the project's own policy format (named in the error for one).
TOML_REMOVED_IN = "0.3.0"


@dataclass(frozen=True)
class TrustedKey:
    public_key: PublicKey
    key_id: str
    name: str
    releases: tuple[str, ...] | None = None  # fnmatch patterns; None: every release

    @property
    def algorithm(self) -> str:
        return algorithm_of(self.public_key)

    def scope_problem(self, release: str | None) -> str | None:
        """Why this key does not count for ``release`` (None: it counts). TUF scopes a role's
        keys to the release of the target's path; its metadata's expiry ends their trust."""
        if self.releases is not None:
            if release is None:
                return "key is trusted only for Keepstack releases " + ", ".join(self.releases)
            if not any(fnmatch.fnmatchcase(release, p) for p in self.releases):
                return f"key is not trusted for release {release} (only {', '.join(self.releases)})"
        return None


@dataclass(frozen=True)
class TrustPolicy:
    keys: tuple[TrustedKey, ...]
    threshold: int
    source: str = "trusted keys"  # "built-in", a root's path, or how the keys were given
    sha256: str = ""  # of the TUF root reached ("" for keys given one by one)
    path: Path | None = None  # the pinned TUF root, when there is one
    role: str = ""  # the TUF role whose keys these are
    tuf: TufTrust | None = None  # a TUF trust: decides per envelope (for_envelope)

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise InputError(f"{self.source}: threshold must be an integer")
        if self.threshold < 1:
            raise InputError(f"{self.source}: threshold must be at least 1, found {self.threshold}")
        ids = [k.key_id for k in self.keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError(
                f"{self.source}: the same key is listed more than once ({', '.join(duplicates)}); "
                "one key counts once toward the threshold"
            )

    def key(self, wanted: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.key_id == wanted), None)

    def with_threshold(self, threshold: int) -> TrustPolicy:
        return replace(self, threshold=threshold)

    def describe(self) -> str:
        """Which policy this is, for a checklist: for TUF, the root (version and SHA-256, and the
        pinned root it was followed from); for a role or given keys, their key IDs."""
        if self.tuf is not None:
            return self.tuf.describe()
        if self.role:
            ids = ", ".join(k.key_id for k in self.keys)
            return f"{self.source}, key IDs {ids}"
        ids = ", ".join(k.key_id for k in self.keys)
        return f"{self.source} (key ID: SHA-256 of the public key {ids})"

    def for_envelope(self, envelope: bytes) -> tuple[TrustPolicy | None, str]:
        """The policy that decides ``envelope`` and what TUF found: this policy itself, or for a
        TUF trust the role that lists the envelope's exact bytes (None when no role does)."""
        if self.tuf is None:
            return self, ""
        target = self.tuf.lookup(envelope)
        digest = hashlib.sha256(envelope).hexdigest()
        if target is None:
            return None, f"sha256 {digest}, listed by no TUF targets role"
        policy = target.policy
        if self.threshold > policy.threshold:  # --threshold may only raise it
            policy = policy.with_threshold(self.threshold)
        return policy, f"{target.path} (role {target.role}, sha256 {digest})"

    @classmethod
    def from_keys(
        cls, keys: Sequence[PublicKey], threshold: int = 1, source: str = "trusted keys"
    ) -> TrustPolicy:
        """Trust exactly these keys, for every release and time; the same key given twice is
        kept once (it can only ever count once)."""
        unique: dict[str, TrustedKey] = {}
        for public in keys:
            algorithm_of(public)
            identity = key_id(public)
            unique.setdefault(identity, TrustedKey(public, identity, identity[:16]))
        return cls(tuple(unique.values()), threshold, source)

    @classmethod
    def builtin_file(cls, name: str = ROOT_FILE) -> Path:
        """A file of the built-in anchor inside the installed package (never the current
        directory)."""
        resource = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_DIR, name)
        if not isinstance(resource, Path):
            raise PlatformError(
                f"the built-in trust root is not a file ({resource!r}); "
                "install keepstack as a regular (unzipped) package"
            )
        return resource

    @classmethod
    def load_builtin(cls, environ: Mapping[str, str] | None = None) -> TrustPolicy:
        """The project's trust anchor: the TUF root pinned in the package."""
        return cls.load_tuf_root(cls.builtin_file(), source=BUILTIN, environ=environ)

    @classmethod
    def load_tuf_root(
        cls, path: Path, *, source: str | None = None, environ: Mapping[str, str] | None = None
    ) -> TrustPolicy:
        """The trust a TUF client establishes from the pinned root ``path`` (see the module)."""
        from toolchain.sign.tuf_client import default_repository, open_tuf_trust

        where = str(path) if source is None else source
        try:
            root = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read TUF root {where}: {exc.strerror}") from exc
        trust = open_tuf_trust(root, where, default_repository(environ))
        return cls((), 1, f"TUF ({where})", trust.root_sha256, path, tuf=trust)

    @classmethod
    def select(
        cls, path: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> TrustPolicy:
        """``path`` when given, else ``$KEEPSTACK_TRUST`` when set, else the built-in root."""
        if path is not None:
            return cls.load_tuf_root(_tuf_root(str(path), "--trust"), environ=environ)
        named = (os.environ if environ is None else environ).get(TRUST_ENV, "")
        if named:
            source = f"{named} (from ${TRUST_ENV})"
            root = _tuf_root(named, f"${TRUST_ENV}")
            return cls.load_tuf_root(root, source=source, environ=environ)
        return cls.load_builtin(environ)


def _tuf_root(name: str, option: str) -> Path:
    """``name`` when it names a TUF root (``.json``); anything else is the removed format."""
    if not name.endswith(".json"):
        raise InputError(
            f"{option} {name}: not a TUF root (.json); the trust.toml policy format was "
            f"removed in Keepstack {TOML_REMOVED_IN}",
            hint="pin a TUF root made with keep tuf init (--trust ROOT.json), "
            "or trust exactly your keys with --trusted-key PUB",
        )
    return Path(name)
