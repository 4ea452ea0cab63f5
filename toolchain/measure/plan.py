"""The LaunchPlan: exactly what a keep's launch feeds the SNP firmware, in order.

A plan is

* ``regions`` — ordered ``(gpa, page_type, bytes or size)``: what SNP_LAUNCH_UPDATE receives, in
  the order it receives it (ascending GPA). NORMAL regions carry their bytes; ZERO, SECRETS and
  CPUID regions only a size. Everything not in a region is not launched (shared pages, heap);
* the initial state of the boot vCPU and of every application processor (their VMSA pages are
  measured last, at GPA ``0xFFFFFFFFF000``, boot CPU first);
* the guest policy, SEV_FEATURES, RAM size and the ABI addresses the VMM serves
  (``LaunchPlan.abi``);
* the platform it is laid out for: ``simulated`` (backends kvm and nil, the simulated firmware:
  the VMSA is ``vmsa_page`` of each state, no C-bit) or ``snp`` (AMD SEV-SNP through Linux's KVM
  SNP API: private mappings carry the C-bit at ``c_bit``, the GHCB and hypercall pages are mapped
  shared and never launched, and each VMSA is the page Linux v6.12 KVM builds at
  KVM_SEV_SNP_LAUNCH_FINISH, ``toolchain.snp.vmsa.kvm_snp_vmsa``). A simulated plan's JSON has no
  platform key, so its bytes are those of every plan before ``snp`` existed.

``keep measure`` and the VMM both take the plan from here (``toolchain.measure.keep`` builds it),
so the expected digest and the real launch cannot drift. ``to_json``/``from_json`` give the
committed artifact ``launch-plan.json`` (``PLAN_FILE``) that ``keep build --out DIR`` writes;
``LaunchPlan.load`` is the one reader of that file. A plan is parsed and checked once and then
passed on as the object (``KeepBuild.plan``): nothing downstream re-reads the file.

The vCPU count is a launch argument, not part of the plan: ``launch_digest(vcpus)``,
``vcpu_states(vcpus)`` and the VMM's launch take it. ``vcpu_count`` is only the count whose
digest the file records (``launch_digest`` in the JSON, checked when it is read; kept so that
published plans keep their bytes); no launch reads it.

For the VMM: back RAM ``[0, ram_size)`` with memory except the doorbell page
(``LaunchPlan.memory_ranges()``), copy every NORMAL region's bytes to its GPA (ZERO, SECRETS and
CPUID pages start zero; the firmware fills SECRETS, the VMM may fill CPUID), then issue one
LAUNCH_UPDATE per region in ``regions`` order, then the VMSAs of ``vcpu_states(vcpus)`` in order.
KVM's EFER must not carry ``EFER_SVME`` (it is in the VMSA only: the SNP firmware requires it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from toolchain.errors import EvidenceError, InputError
from toolchain.measure.abi import AbiAddresses  # the ABI addresses a plan carries
from toolchain.snp.digest import PAGE_SIZE, VMSA_GPA, LaunchDigest, PageType
from toolchain.snp.vmsa import (
    KVM_SYNC_VMSA_VERSION,
    Segment,
    VcpuState,
    kvm_snp_vmsa,
    vmsa_page,
)

PLAN_FORMAT = "keepstack-launch-plan-1"
#: The file name of the plan inside ``keep build --out DIR``.
PLAN_FILE = "launch-plan.json"
#: Page types a plan region may have (VMSA pages come from the vCPU states, not regions).
REGION_TYPES = frozenset({PageType.NORMAL, PageType.ZERO, PageType.SECRETS, PageType.CPUID})
MAX_VCPUS = 64
#: The platforms (``toolchain.measure.keep.PLATFORMS`` names them for the layout).
PLATFORM_SIMULATED = "simulated"
PLATFORM_SNP = "snp"
#: backend → the platform whose plan gives its launch digests.
BACKEND_PLATFORMS = {"kvm": PLATFORM_SIMULATED, "nil": PLATFORM_SIMULATED, "snp": PLATFORM_SNP}


@dataclass(frozen=True)
class Region:
    """One SNP_LAUNCH_UPDATE: ``size`` bytes at ``gpa`` of one page type.

    ``data`` holds the bytes for NORMAL regions and is ``None`` for the others; ``label`` says
    what the region is (``"ukernel PT_LOAD 0"``, ``"page tables"``, ...).
    """

    gpa: int
    page_type: PageType
    size: int
    data: bytes | None = None
    label: str = ""

    def __post_init__(self) -> None:
        where = f"region {self.label or '?'} at {self.gpa!r}"
        if not isinstance(self.gpa, int) or self.gpa < 0 or self.gpa % PAGE_SIZE:
            raise InputError(f"{where}: GPA must be a page-aligned non-negative integer")
        if self.page_type not in REGION_TYPES:
            raise InputError(f"{where}: page type {self.page_type!r} is not allowed in a region")
        if not isinstance(self.size, int) or self.size <= 0 or self.size % PAGE_SIZE:
            raise InputError(f"{where}: size {self.size!r} is not a positive multiple of 4096")
        if self.page_type is PageType.NORMAL:
            if self.data is None or len(self.data) != self.size:
                raise InputError(f"{where}: NORMAL region needs exactly {self.size} bytes")
        elif self.data is not None:
            raise InputError(f"{where}: {self.page_type.name} region carries no bytes")

    @property
    def end(self) -> int:
        return self.gpa + self.size

    @property
    def pages(self) -> int:
        return self.size // PAGE_SIZE


@dataclass(frozen=True)
class LaunchPlan:
    """Everything the launch measures, plus what the VMM needs to serve the keep."""

    regions: tuple[Region, ...]
    boot_vcpu: VcpuState
    ap_vcpu: VcpuState
    #: The vCPU count of the launch digest the JSON records (not a launch's count; see above).
    vcpu_count: int
    guest_policy: int
    sev_features: int
    ram_size: int
    abi: AbiAddresses
    #: Free-form facts about the inputs (e.g. the ELF SHA-256s); not measured.
    inputs: Mapping[str, str] = field(default_factory=dict)
    platform: str = PLATFORM_SIMULATED
    #: The C-bit position of an ``snp`` plan's page tables (None on ``simulated``).
    c_bit: int | None = None

    def __post_init__(self) -> None:
        if self.platform == PLATFORM_SNP:
            if not isinstance(self.c_bit, int) or isinstance(self.c_bit, bool):
                raise InputError(f"an snp plan needs its C-bit position, not {self.c_bit!r}")
        elif self.platform == PLATFORM_SIMULATED:
            if self.c_bit is not None:
                raise InputError("a simulated plan has no C-bit")
        else:
            raise InputError(f"unknown plan platform {self.platform!r}")
        _check_vcpu_count(self.vcpu_count)
        for name in ("guest_policy", "sev_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
                raise InputError(f"{name} {value!r} is not a 64-bit value")
        if not isinstance(self.ram_size, int) or self.ram_size <= 0 or self.ram_size % PAGE_SIZE:
            raise InputError(f"RAM size {self.ram_size!r} is not a positive multiple of 4096")
        previous_end = 0
        for region in self.regions:
            if region.gpa < previous_end:
                raise InputError(
                    f"plan regions overlap or are out of order at {region.gpa:#x} ({region.label})"
                )
            if region.end > self.ram_size:
                raise InputError(f"region {region.label} at {region.gpa:#x} lies beyond RAM")
            if region.gpa <= self.abi.doorbell < region.end:
                raise InputError(f"region {region.label} covers the MMIO doorbell")
            previous_end = region.end
        if self.platform == PLATFORM_SNP:
            self._check_c_bit()

    def _check_c_bit(self) -> None:
        """An snp plan's PML4 (at ``abi.page_tables``) points at the PDPT through a private entry:
        its C-bit must be the plan's, so ``c_bit`` never says something the tables do not."""
        c_bit = self.c_bit or 0  # set: __post_init__ checked it
        for gpa, _, data in self.pages():
            if gpa == self.abi.page_tables and data is not None:
                first = int.from_bytes(data[:8], "little")
                if first & 1 and first >> c_bit & 1:
                    return
                raise InputError(
                    f"the snp plan's PML4 entry 0 is {first:#x}: it does not carry the plan's "
                    f"C-bit {self.c_bit}"
                )
        raise InputError(f"the snp plan launches no page tables at {self.abi.page_tables:#x}")

    # ---- the measurement -------------------------------------------------------------------

    def vcpu_states(self, vcpu_count: int) -> tuple[VcpuState, ...]:
        """The initial state of each of ``vcpu_count`` vCPUs, boot CPU first."""
        _check_vcpu_count(vcpu_count)
        return (self.boot_vcpu,) + (self.ap_vcpu,) * (vcpu_count - 1)

    def vmsa_pages(self, vcpu_count: int) -> list[bytes]:
        """The VMSA page of each vCPU as the firmware measures it, in vCPU-index order.

        On ``snp`` KVM builds them (``kvm_snp_vmsa``, ``KVM_SYNC_VMSA_VERSION``) from the
        registers the VMM sets and KVM's reset FPU; SEV_FEATURES is the plan's, which KVM takes
        from KVM_SEV_INIT2 (the driver passes it, minus SNPActive that KVM adds).
        """
        page = kvm_snp_vmsa if self.platform == PLATFORM_SNP else vmsa_page
        return [
            page(state, sev_features=self.sev_features) for state in self.vcpu_states(vcpu_count)
        ]

    @cached_property
    def _regions_digest(self) -> LaunchDigest:
        """The digest of every region, hashed once per plan (the plan is frozen); copy it."""
        digest = LaunchDigest()
        for region in self.regions:
            if region.data is not None:
                digest.update(region.page_type, region.gpa, region.data)
            else:
                digest.update(region.page_type, region.gpa, size=region.size)
        return digest

    def launch_digest(self, vcpu_count: int) -> bytes:
        """The 48-byte SNP launch digest (MEASUREMENT) with ``vcpu_count`` vCPUs."""
        return self.launch_digests([vcpu_count])[vcpu_count]

    def launch_digests(self, vcpu_counts: Iterable[int]) -> dict[int, bytes]:
        """vCPU count → launch digest; the regions are hashed once for all counts."""
        result: dict[int, bytes] = {}
        for count in sorted(set(vcpu_counts)):
            digest = self._regions_digest.copy()
            for page in self.vmsa_pages(count):
                digest.update(PageType.VMSA, VMSA_GPA, page)
            result[count] = digest.digest()
        return result

    def differences(self, other: LaunchPlan) -> list[str]:
        """The fields in which ``other`` launches another keep (the recorded count aside)."""
        return [
            item.name
            for item in fields(self)
            if item.name != "vcpu_count" and getattr(self, item.name) != getattr(other, item.name)
        ]

    # ---- views for the VMM and for tests ---------------------------------------------------

    def pages(self) -> Iterator[tuple[int, PageType, bytes | None]]:
        """Every launched page in launch order: ``(gpa, page_type, 4096 bytes or None)``."""
        for region in self.regions:
            for index in range(region.pages):
                offset = index * PAGE_SIZE
                chunk = None if region.data is None else region.data[offset : offset + PAGE_SIZE]
                yield region.gpa + offset, region.page_type, chunk

    def memory_ranges(self) -> list[tuple[int, int]]:
        """``(gpa, size)`` of the RAM the VMM backs with memory: all of it but the doorbell."""
        ranges = []
        if self.abi.doorbell > 0:
            ranges.append((0, min(self.abi.doorbell, self.ram_size)))
        after = self.abi.doorbell + PAGE_SIZE
        if after < self.ram_size:
            ranges.append((after, self.ram_size - after))
        return ranges

    def page_counts(self, vcpu_count: int) -> dict[str, int]:
        """Launched pages per page type with ``vcpu_count`` vCPUs (VMSA: one per vCPU)."""
        counts: dict[str, int] = {}
        for region in self.regions:
            counts[region.page_type.name] = counts.get(region.page_type.name, 0) + region.pages
        counts[PageType.VMSA.name] = len(self.vcpu_states(vcpu_count))
        return counts

    # ---- the artifact ----------------------------------------------------------------------

    def to_json(self) -> str:
        """A deterministic JSON document (sorted keys, no timestamps), ending in a newline."""
        document = {
            "format": PLAN_FORMAT,
            "guest_policy": self.guest_policy,
            "sev_features": self.sev_features,
            "ram_size": self.ram_size,
            "vcpu_count": self.vcpu_count,
            "abi": {item.name: getattr(self.abi, item.name) for item in fields(self.abi)},
            "boot_vcpu": _state_to_dict(self.boot_vcpu),
            "ap_vcpu": _state_to_dict(self.ap_vcpu),
            "inputs": dict(sorted(self.inputs.items())),
            "regions": [
                {
                    "gpa": region.gpa,
                    "type": region.page_type.name,
                    "size": region.size,
                    "label": region.label,
                    **(
                        {
                            "sha384": hashlib.sha384(region.data).hexdigest(),
                            "data": base64.b64encode(region.data).decode("ascii"),
                        }
                        if region.data is not None
                        else {}
                    ),
                }
                for region in self.regions
            ],
            "launch_digest": self.launch_digest(self.vcpu_count).hex(),
        }
        if self.platform != PLATFORM_SIMULATED:  # a simulated plan keeps its bytes of old
            document["platform"] = self.platform
            document["c_bit"] = self.c_bit
            document["vmsa"] = KVM_SYNC_VMSA_VERSION
        return json.dumps(document, sort_keys=True, indent=1) + "\n"

    @classmethod
    def load(cls, path: Path, *, sha256: str | None = None) -> LaunchPlan:
        """The one reader of a plan file: its bytes read once, checked and parsed.

        ``sha256`` is the digest a build recorded for the file: the bytes parsed must be those
        (a file changed since its build was checked is refused, naming both digests).
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the launch plan {path}: {exc.strerror}") from None
        found = hashlib.sha256(data).hexdigest()
        if sha256 is not None and found != sha256:
            raise EvidenceError(
                f"{path} changed after its build was checked; it is not used",
                field=PLAN_FILE,
                expected=f"sha256:{sha256}",
                found=f"sha256:{found}",
            )
        return cls.from_json(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> LaunchPlan:
        """Read a plan written by ``to_json``; anything malformed is an ``InputError``."""
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"launch plan is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
            raise InputError(f"not a launch plan (expected format {PLAN_FORMAT!r})")
        try:
            regions = tuple(_region_from_dict(item) for item in document["regions"])
            abi = AbiAddresses(**document["abi"])
            plan = cls(
                regions=regions,
                boot_vcpu=_state_from_dict(document["boot_vcpu"]),
                ap_vcpu=_state_from_dict(document["ap_vcpu"]),
                vcpu_count=document["vcpu_count"],
                guest_policy=document["guest_policy"],
                sev_features=document["sev_features"],
                ram_size=document["ram_size"],
                abi=abi,
                inputs={str(k): str(v) for k, v in document.get("inputs", {}).items()},
                platform=document.get("platform", PLATFORM_SIMULATED),
                c_bit=document.get("c_bit"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"launch plan is incomplete or malformed: {exc!r}") from None
        vmsa = document.get("vmsa")
        if plan.platform == PLATFORM_SNP and vmsa != KVM_SYNC_VMSA_VERSION:
            # The VMSAs are recomputed here, as this toolchain's kernel builds them.
            raise InputError(
                f"the snp launch plan's VMSAs are {vmsa!r}'s; this toolchain builds "
                f"{KVM_SYNC_VMSA_VERSION!r}'s",
                hint="lay the plan out again with this toolchain",
            )
        recorded = document.get("launch_digest")
        if recorded is not None and recorded != plan.launch_digest(plan.vcpu_count).hex():
            raise InputError(
                "launch plan's recorded launch_digest does not match its contents",
                hint="the file was edited or corrupted; rebuild it with keep build",
            )
        return plan


def _check_vcpu_count(count: object) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_VCPUS:
        raise InputError(f"vCPU count {count!r} out of range 1..{MAX_VCPUS}")


def _state_to_dict(state: VcpuState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(state._fields, state, strict=True):
        if isinstance(value, Segment):
            out[name] = {
                "selector": value.selector,
                "attrib": value.attrib,
                "limit": value.limit,
                "base": value.base,
            }
        elif isinstance(value, bytes):
            out[name] = {"hex": value.hex()}
        else:
            out[name] = value
    return out


def _state_from_dict(raw: Mapping[str, Any]) -> VcpuState:
    if not isinstance(raw, Mapping):
        raise InputError("a vCPU state in the launch plan is not an object")
    known = set(VcpuState._fields)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise InputError(f"unknown vCPU state field {name!r} in the launch plan")
        if isinstance(value, Mapping) and set(value) == {"hex"}:
            try:
                values[name] = bytes.fromhex(value["hex"])
            except (ValueError, TypeError):
                raise InputError(f"vCPU state field {name} is not hex") from None
        elif isinstance(value, Mapping):
            values[name] = Segment(**value)
        else:
            values[name] = value
    return VcpuState(**values)


def _region_from_dict(raw: Mapping[str, Any]) -> Region:
    try:
        page_type = PageType[raw["type"]]
    except KeyError:
        raise InputError(f"unknown page type {raw.get('type')!r} in the launch plan") from None
    data = None
    if "data" in raw:
        try:
            data = base64.b64decode(raw["data"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InputError(f"region {raw.get('label')!r}: data is not base64") from None
        if hashlib.sha384(data).hexdigest() != raw.get("sha384"):
            raise InputError(f"region {raw.get('label')!r}: data does not match its sha384")
    return Region(
        gpa=raw["gpa"],
        page_type=page_type,
        size=raw["size"],
        data=data,
        label=str(raw.get("label", "")),
    )
