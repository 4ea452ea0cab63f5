"""Releases that tenants reproduce.

A release engineer publishes signed reference measurements of every example keep
(``make_release``, the ``nox -s release`` session); a tenant rebuilds them from source and compares
every digest (``reproduce``, ``keep reproduce``)::

    release = make_release("0.1.0", key_path, repo_root)      # reference-measurements/0.1.0/
    checklist = reproduce(envelope, TrustPolicy.select(root_json), source_root)

See ``layout`` for what a release directory holds.
"""

from __future__ import annotations

from toolchain.release.layout import RELEASE_BACKENDS, TRUSTED_ARTIFACTS
from toolchain.release.publish import Release, make_release
from toolchain.release.reproduce import reproduce

__all__ = ["RELEASE_BACKENDS", "TRUSTED_ARTIFACTS", "Release", "make_release", "reproduce"]
