"""Signed reference measurements: in-toto Statement v1 in a DSSE envelope, Keepstack predicate.

The public interface other parts of Keepstack code against::

    predicate = KeepPredicate(release, configs=[LaunchConfig(...)], components=[...], ...)
    statement = build_statement(predicate, {"keep.img": {"sha256": ..., "sha384": ...}})
    envelope = sign_statement(statement, load_private_key(path))   # or dev_key()[0]
    checklist, references = verify_envelope(envelope, TrustPolicy.select(root_json))
    references.allows(launch_digest, cpu_generation="milan", vcpus=1, guest_policy=0x30000)
"""

from __future__ import annotations

from toolchain.sign.dsse import INTOTO_PAYLOAD_TYPE, Envelope, Signature, pae
from toolchain.sign.intoto import STATEMENT_TYPE, build_statement, validate_statement
from toolchain.sign.keys import (
    ALGORITHMS,
    PrivateKey,
    PublicKey,
    dev_key,
    generate_private_key,
    is_development_key,
    key_id,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from toolchain.sign.predicate import (
    PREDICATE_TYPE,
    ComponentDigest,
    KeepPredicate,
    LaunchConfig,
    SourceDigest,
)
from toolchain.sign.references import VerifiedReferences, require_references, verify_envelope
from toolchain.sign.signing import add_signature, sign_statement
from toolchain.sign.trust import TrustedKey, TrustPolicy

__all__ = [
    "ALGORITHMS",
    "INTOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "ComponentDigest",
    "Envelope",
    "KeepPredicate",
    "LaunchConfig",
    "PrivateKey",
    "PublicKey",
    "Signature",
    "SourceDigest",
    "TrustPolicy",
    "TrustedKey",
    "VerifiedReferences",
    "add_signature",
    "build_statement",
    "dev_key",
    "generate_private_key",
    "is_development_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pae",
    "require_references",
    "sign_statement",
    "validate_statement",
    "verify_envelope",
    "write_key_pair",
]
