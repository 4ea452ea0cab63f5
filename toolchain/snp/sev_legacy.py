"""Legacy SEV (pre-ES) launch measurement: what LAUNCH_MEASURE returns to the guest owner.

The firmware keeps a SHA-256 launch digest (LD) over everything LAUNCH_UPDATE_DATA encrypted
(for SEV-ES also every VMSA) and reports ``HMAC-SHA256(TIK, 0x04 || API_MAJOR || API_MINOR ||
BUILD || POLICY || LD || MNONCE)`` (SEV API specification #55766, LAUNCH_MEASURE), keyed with
the transport integrity key the guest owner negotiated at LAUNCH_START.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from toolchain.errors import EvidenceError, InputError

MEASURE_CONTEXT = 0x04


def launch_measurement(
    tik: bytes,
    *,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
    launch_digest: bytes,
    mnonce: bytes,
) -> bytes:
    """The 32-byte MEASURE value the firmware returns from LAUNCH_MEASURE."""
    if len(tik) != 16:
        raise InputError(f"the TIK must be 16 bytes, got {len(tik)}")
    if len(launch_digest) != 32:
        raise InputError(f"an SEV launch digest is 32 bytes (SHA-256), got {len(launch_digest)}")
    if len(mnonce) != 16:
        raise InputError(f"MNONCE must be 16 bytes, got {len(mnonce)}")
    for name, value, limit in (
        ("API major", api_major, 0xFF),
        ("API minor", api_minor, 0xFF),
        ("build", build, 0xFF),
        ("policy", policy, 0xFFFFFFFF),
    ):
        if not 0 <= value <= limit:
            raise InputError(f"{name} {value:#x} out of range 0..{limit:#x}")
    message = (
        struct.pack("<BBBBI", MEASURE_CONTEXT, api_major, api_minor, build, policy)
        + launch_digest
        + mnonce
    )
    return hmac.new(tik, message, hashlib.sha256).digest()


def verify_launch_measurement(
    measure: bytes,
    tik: bytes,
    *,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
    launch_digest: bytes,
    mnonce: bytes,
) -> None:
    """Raise ``EvidenceError`` unless ``measure`` is the HMAC of the expected launch."""
    expected = launch_measurement(
        tik,
        api_major=api_major,
        api_minor=api_minor,
        build=build,
        policy=policy,
        launch_digest=launch_digest,
        mnonce=mnonce,
    )
    if not hmac.compare_digest(expected, measure):
        raise EvidenceError(
            "SEV launch measurement does not match the expected guest",
            field="MEASURE",
            expected=expected.hex(),
            found=measure.hex(),
        )
