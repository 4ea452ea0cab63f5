"""SLSA provenance v1 for a keep build, as an in-toto Statement v1 (deterministic JSON).

* ``subject`` — every output, with SHA-256 and SHA-384;
* ``buildDefinition.resolvedDependencies`` — every input with its digest: the application, the
  runtime and microkernel sources, wasm2c's runtime sources, the pinned tools and the keepstack
  wheel itself;
* ``buildDefinition.internalParameters`` — tool versions (``toolchain_versions()``) and flags;
* ``runDetails.builder`` — the keepstack builder and its version; ``byproducts`` — launch digests.

No timestamps, host names or absolute paths: the record is part of what must not vary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://keepstack.dev/build/keep/v1"
BUILDER_ID = "https://keepstack.dev/builder/keep-build"
PROVENANCE_FILE = "provenance.json"


@dataclass(frozen=True)
class Resource:
    """An input or output: a name and its digests (algorithm → hex)."""

    name: str
    digest: Mapping[str, str]

    @classmethod
    def of_bytes(cls, name: str, data: bytes, *, sha384: bool = True) -> Resource:
        digest = {"sha256": hashlib.sha256(data).hexdigest()}
        if sha384:
            digest["sha384"] = hashlib.sha384(data).hexdigest()
        return cls(name, digest)

    @classmethod
    def of_file(cls, name: str, path: Path, *, sha384: bool = True) -> Resource:
        return cls.of_bytes(name, path.read_bytes(), sha384=sha384)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "digest": dict(sorted(self.digest.items()))}


def source_resources(root: Path, directory: Path, suffixes: Sequence[str]) -> list[Resource]:
    """Every file under ``directory`` with one of ``suffixes``, named relative to ``root``."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in set(suffixes))
    return [
        Resource.of_file(p.relative_to(root).as_posix(), p, sha384=False)
        for p in files
        if "__pycache__" not in p.parts
    ]


def provenance_statement(
    *,
    outputs: Sequence[Resource],
    inputs: Sequence[Resource],
    external_parameters: Mapping[str, object],
    internal_parameters: Mapping[str, object],
    builder_version: Mapping[str, str],
    byproducts: Sequence[Resource] = (),
) -> dict[str, object]:
    """The statement as a JSON-ready dict (subjects and dependencies sorted by name)."""
    run_details: dict[str, object] = {
        "builder": {"id": BUILDER_ID, "version": dict(sorted(builder_version.items()))},
        "metadata": {"invocationId": "", "startedOn": None, "finishedOn": None},
    }
    if byproducts:
        run_details["byproducts"] = [r.to_dict() for r in sorted(byproducts, key=_name)]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [r.to_dict() for r in sorted(outputs, key=_name)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": dict(external_parameters),
                "internalParameters": dict(internal_parameters),
                "resolvedDependencies": [r.to_dict() for r in sorted(inputs, key=_name)],
            },
            "runDetails": run_details,
        },
    }


def _name(resource: Resource) -> str:
    return resource.name


def write_provenance(statement: Mapping[str, object], path: Path) -> Path:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline (not rewritten when
    equal)."""
    data = (json.dumps(statement, sort_keys=True, indent=2) + "\n").encode()
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    return path
