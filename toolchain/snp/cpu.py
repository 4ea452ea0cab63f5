"""Guest CPU models and their CPUID signatures.

A vCPU's reset state carries the CPUID Fn0000_0001_EAX signature (family, model, stepping) in
RDX, so the VMSA, and hence the launch digest, depends on the CPU model the VMM exposes.
"""

from __future__ import annotations

from toolchain.errors import InputError


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """CPUID Fn0000_0001_EAX from family/model/stepping (AMD CPUID specification, #25481).

    Families above 0xF are encoded as base family 0xF plus an extended family.
    """
    for name, value, limit in (
        ("family", family, 0xFF + 0xF),
        ("model", model, 0xFF),
        ("stepping", stepping, 0xF),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise InputError(f"CPU {name} {value!r} out of range 0..{limit}")
    if family > 0xF:
        base_family, ext_family = 0xF, family - 0xF
    else:
        base_family, ext_family = family, 0
    return (
        (ext_family << 20)
        | ((model >> 4) << 16)
        | (base_family << 8)
        | ((model & 0xF) << 4)
        | stepping
    )


def decode_signature(signature: int) -> tuple[int, int, int]:
    """(family, model, stepping) of a CPUID signature."""
    base_family = (signature >> 8) & 0xF
    family = base_family + ((signature >> 20) & 0xFF) if base_family == 0xF else base_family
    model = (signature >> 4) & 0xF
    if base_family in (0x6, 0xF):
        model |= ((signature >> 16) & 0xF) << 4
    return family, model, signature & 0xF


_NAPLES = cpu_signature(23, 1, 2)
_ROME = cpu_signature(23, 49, 0)
_MILAN = cpu_signature(25, 1, 1)
_GENOA = cpu_signature(25, 17, 0)
_TURIN = cpu_signature(26, 0, 0)

#: QEMU's AMD EPYC CPU models (builtin_x86_defs) and the signature each exposes.
CPU_MODELS: dict[str, int] = {
    "EPYC": _NAPLES,
    "EPYC-v1": _NAPLES,
    "EPYC-v2": _NAPLES,
    "EPYC-IBPB": _NAPLES,
    "EPYC-v3": _NAPLES,
    "EPYC-v4": _NAPLES,
    "EPYC-Rome": _ROME,
    "EPYC-Rome-v1": _ROME,
    "EPYC-Rome-v2": _ROME,
    "EPYC-Rome-v3": _ROME,
    "EPYC-Rome-v4": _ROME,
    "EPYC-Milan": _MILAN,
    "EPYC-Milan-v1": _MILAN,
    "EPYC-Milan-v2": _MILAN,
    "EPYC-Genoa": _GENOA,
    "EPYC-Genoa-v1": _GENOA,
    "EPYC-Turin": _TURIN,
    "EPYC-Turin-v1": _TURIN,
}


def model_signature(name: str) -> int:
    """The signature of a named CPU model (case-insensitive)."""
    for known, signature in CPU_MODELS.items():
        if known.lower() == name.lower():
            return signature
    raise InputError(
        f"unknown CPU model {name!r} (known: {', '.join(CPU_MODELS)}; or give a raw --vcpu-sig)"
    )


def resolve_signature(
    *,
    vcpu_type: str | None = None,
    vcpu_sig: int | None = None,
    family: int | None = None,
    model: int | None = None,
    stepping: int | None = None,
) -> int | None:
    """The one signature named by exactly one of: a model name, a raw value, or f/m/s."""
    given = [
        label
        for label, present in (
            ("--vcpu-type", vcpu_type is not None),
            ("--vcpu-sig", vcpu_sig is not None),
            ("--vcpu-family/model/stepping", family is not None),
        )
        if present
    ]
    if len(given) > 1:
        raise InputError("give only one of " + ", ".join(given))
    if vcpu_type is not None:
        return model_signature(vcpu_type)
    if vcpu_sig is not None:
        if not 0 <= vcpu_sig <= 0xFFFFFFFF:
            raise InputError(f"CPU signature {vcpu_sig:#x} does not fit in 32 bits")
        return vcpu_sig
    if family is not None:
        if model is None or stepping is None:
            raise InputError("--vcpu-family needs --vcpu-model and --vcpu-stepping too")
        return cpu_signature(family, model, stepping)
    if model is not None or stepping is not None:
        raise InputError("--vcpu-model/--vcpu-stepping need --vcpu-family")
    return None
