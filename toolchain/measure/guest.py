"""Launch digests of ordinary OVMF-based guests: SEV-SNP (plain, SVSM), SEV-ES and SEV.

The order of measurement is the order QEMU (or EC2, GCE) issues launch updates in:

* SNP: the OVMF image (NORMAL pages, ending at 4 GiB), then every SEV metadata section in
  firmware order: SNP_SEC_MEM as ZERO pages (UNMEASURED on GCE), the SECRETS page, the CPUID
  page (EC2 measures all CPUID pages after the other sections), the SVSM calling area as ZERO,
  and the kernel-hashes page as NORMAL (ZERO without ``-kernel``); then one VMSA per vCPU, the
  boot CPU first. ``--snp-ovmf-hash`` starts the chain from a precomputed digest of the OVMF
  pages instead of hashing them.
* SNP with Coconut-SVSM: OVMF, then the SVSM image (ending where the OVMF_VARS region begins),
  then the SVSM's metadata sections, then VMSAs that all start at the SVSM entry point.
* SEV-ES: SHA-256 over the OVMF image, the kernel-hashes table (with ``-kernel``) and VMSAs.
* SEV: SHA-256 over the OVMF image and the kernel-hashes table.

Digests for several vCPU counts share everything but the trailing VMSAs, so they are computed
in one pass: the common prefix once, then one VMSA page per additional vCPU.

``GuestRequest`` is ``keep measure-guest``'s whole contract: sev-snp-measure's options as text,
checked when the request is made (the first bad option is the error, ``InputError``), then
measured and printed as sev-snp-measure prints them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from toolchain.errors import InputError
from toolchain.records import Record
from toolchain.snp.cpu import resolve_signature
from toolchain.snp.digest import VMSA_GPA, LaunchDigest, PageType
from toolchain.snp.kernel_hashes import PADDED_LENGTH, KernelHashes, cmdline_bytes, sha256_file
from toolchain.snp.ovmf import Firmware, SectionType, load_firmware
from toolchain.snp.vmsa import (
    BSP_RESET_EIP,
    VmmType,
    ovmf_reset_state,
    svsm_reset_state,
    vmsa_page,
)

MAX_VCPUS = 4096
_AMDSEV_HINT = "(measured direct boot needs the AmdSev build, OvmfPkg/AmdSev/AmdSevX64.dsc)"
#: SEV_FEATURES of the VMSAs in SVSM mode (SNP active only), as QEMU's SVSM launch uses.
SVSM_SEV_FEATURES = 0x1


class Mode(Enum):
    SNP = "snp"
    SNP_OVMF_HASH = "snp:ovmf-hash"
    SNP_SVSM = "snp:svsm"
    SEV_ES = "seves"
    SEV = "sev"

    @classmethod
    def parse(cls, text: str) -> Mode:
        aliases = {
            "snp": cls.SNP,
            "sev-snp": cls.SNP,
            "snp:ovmf-hash": cls.SNP_OVMF_HASH,
            "snp:svsm": cls.SNP_SVSM,
            "sev-snp:svsm": cls.SNP_SVSM,
            "seves": cls.SEV_ES,
            "sev-es": cls.SEV_ES,
            "sev": cls.SEV,
        }
        try:
            return aliases[text.lower()]
        except KeyError:
            raise InputError(
                f"unknown mode {text!r} (use one of: {', '.join(m.value for m in cls)})"
            ) from None

    @property
    def needs_vcpus(self) -> bool:
        return self in (Mode.SNP, Mode.SNP_SVSM, Mode.SEV_ES)


class GuestSpec(NamedTuple):
    """Everything that determines an OVMF guest's launch digest.

    This module's classes are NamedTuples and plain classes, not dataclasses: dataclass
    generation (and the ``dataclasses`` import) was a third of ``keep measure-guest``'s run."""

    mode: Mode
    #: The OVMF image: a path, or its bytes.
    ovmf: Path | str | bytes
    kernel: Path | str | None = None
    initrd: Path | str | None = None
    append: str | None = None
    vcpu_sig: int | None = None
    guest_features: int = 0x1
    vmm: VmmType = VmmType.QEMU
    snp_ovmf_hash: bytes | None = None
    svsm: Path | str | bytes | None = None
    vars_size: int = 0
    #: Override RDX in every VMSA (e.g. 0 for EC2 measurements made before sev-snp-measure 0.0.13).
    vmsa_rdx: int | None = None


#: How ``GuestRequest.output_format`` renders a digest.
OUTPUT_FORMATS = ("hex", "base64")
_LABELS = {
    Mode.SNP: "SEV_SNP",
    Mode.SNP_SVSM: "SEV_SNP_SVSM",
    Mode.SEV_ES: "SEV_ES",
    Mode.SEV: "SEV",
    Mode.SNP_OVMF_HASH: "SNP OVMF hash",
}


def _option_int(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise InputError(f"{option} {text!r} is not an integer") from None


class _RequestOptions(NamedTuple):
    """The options of ``GuestRequest``, in order."""

    mode: str = "snp"
    ovmf: str | None = None
    vcpus: str | None = None
    vcpu_type: str | None = None
    vcpu_sig: str | None = None
    vcpu_family: str | None = None
    vcpu_model: str | None = None
    vcpu_stepping: str | None = None
    vmm_type: str = "QEMU"
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    guest_features: str | None = "0x1"
    output_format: str = "hex"
    snp_ovmf_hash: str | None = None
    dump_vmsa: bool = False
    svsm: str | None = None
    vars_size: str | None = None
    vars_file: str | None = None
    vmsa_rdx: str | None = None


class GuestRequest(Record, _RequestOptions):
    """A measurement asked for in sev-snp-measure's terms: each option as text, as given.

    Constructing one checks every option, in the order their errors have always been reported
    (the first problem is the one named), and resolves them into ``spec`` and ``vcpu_counts``,
    which ``measure`` hands to ``measure_guest``. What depends on the files themselves (OVMF
    metadata, kernel hashes) and on the combination of resolved values is ``measure_guest``'s.
    (No ``__slots__``: the two resolved values are kept in the instance's dictionary.)
    """

    #: Resolved from the options when the request is made.
    spec: GuestSpec
    vcpu_counts: tuple[int, ...]

    def _validate(self) -> None:
        mode = Mode.parse(self.mode)
        if self.ovmf is None:
            raise InputError("--ovmf PATH is required")
        if self.output_format.lower() not in OUTPUT_FORMATS:
            raise InputError(f"--output-format {self.output_format!r}: use hex or base64")
        if self.dump_vmsa and mode not in (Mode.SNP, Mode.SEV_ES, Mode.SNP_SVSM):
            raise InputError("--dump-vmsa applies to modes seves, snp and snp:svsm")
        vmm = VmmType.parse(self.vmm_type)
        vcpu_sig = None if mode is Mode.SEV else self._vcpu_signature()
        counts: list[int] = []
        if mode.needs_vcpus:
            if self.vcpus is None:
                raise InputError(f"--vcpus N is required in mode {mode.value}")
            counts = parse_vcpu_counts(self.vcpus)
        seed = self._snp_ovmf_hash()
        vars_size = self._vars_size(mode)
        guest_features = _option_int(self.guest_features, "--guest-features")
        spec = GuestSpec(
            mode=mode,
            ovmf=self.ovmf,
            kernel=self.kernel,
            initrd=self.initrd,
            append=self.append,
            vcpu_sig=vcpu_sig,
            guest_features=0x1 if guest_features is None else guest_features,
            vmm=vmm,
            snp_ovmf_hash=seed,
            svsm=self.svsm,
            vars_size=vars_size,
            vmsa_rdx=_option_int(self.vmsa_rdx, "--vmsa-rdx"),
        )
        self.spec = spec
        self.vcpu_counts = tuple(counts)

    def _vcpu_signature(self) -> int | None:
        return resolve_signature(
            vcpu_type=self.vcpu_type,
            vcpu_sig=_option_int(self.vcpu_sig, "--vcpu-sig"),
            family=_option_int(self.vcpu_family, "--vcpu-family"),
            model=_option_int(self.vcpu_model, "--vcpu-model"),
            stepping=_option_int(self.vcpu_stepping, "--vcpu-stepping"),
        )

    def _snp_ovmf_hash(self) -> bytes | None:
        if self.snp_ovmf_hash is None:
            return None
        try:
            seed = bytes.fromhex(self.snp_ovmf_hash)
        except ValueError:
            raise InputError("--snp-ovmf-hash is not hexadecimal") from None
        if len(seed) != 48:
            raise InputError(f"--snp-ovmf-hash is {len(seed)} bytes; an SNP digest is 48 bytes")
        return seed

    def _vars_size(self, mode: Mode) -> int:
        """The OVMF_VARS size, given as a number or as the file whose size it is (SVSM mode)."""
        if self.vars_size is not None and self.vars_file is not None:
            raise InputError("give --vars-size or --vars-file, not both")
        size = _option_int(self.vars_size, "--vars-size") or 0
        if self.vars_file is not None:
            try:
                size = Path(self.vars_file).stat().st_size
            except OSError as exc:
                raise InputError(
                    f"cannot read --vars-file {self.vars_file}: {exc.strerror}"
                ) from None
        if mode is Mode.SNP_SVSM and self.vars_size is None and self.vars_file is None:
            raise InputError("mode snp:svsm needs --vars-size or --vars-file")
        return size

    def measure(self) -> GuestMeasurement:
        """The measurement; with ``dump_vmsa``, the VMSAs are also written to vmsa<N>.bin."""
        result = measure_guest(self.spec, self.vcpu_counts)
        if self.dump_vmsa:
            for index in range(max(self.vcpu_counts)):
                try:
                    Path(f"vmsa{index}.bin").write_bytes(result.vmsa_for(index))
                except OSError as exc:
                    raise InputError(f"cannot write vmsa{index}.bin: {exc.strerror}") from None
        return result

    def render(
        self, result: GuestMeasurement, *, verbose: bool = False, as_json: bool = False
    ) -> str:
        """The text sev-snp-measure prints (one digest per count), or the JSON document."""
        output_format = self.output_format.lower()

        def text(digest: bytes) -> str:
            return digest.hex() if output_format == "hex" else base64.b64encode(digest).decode()

        if as_json:
            import json  # only here: start-up is part of what a measurement costs

            document = result.as_dict()
            document["output_format"] = output_format
            ordered = [d for _, d in sorted(result.digests.items())]
            for entry, digest in zip(document["measurements"], ordered, strict=True):
                entry["digest"] = text(digest)
            return json.dumps(document, indent=2)
        multiple = len(result.digests) > 1
        lines = []
        for count, digest in sorted(result.digests.items()):
            if verbose:
                suffix = f" ({count} vCPU{'s' if count != 1 else ''})" if count else ""
                lines.append(
                    f"Calculated {_LABELS[result.mode]} guest measurement{suffix}: {text(digest)}"
                )
            else:
                lines.append(f"{count}\t{text(digest)}" if multiple else text(digest))
        return "\n".join(lines)


class GuestMeasurement:
    """The result: one digest per requested vCPU count, plus every input's digest.

    ``vmsa_pages`` are the distinct VMSA pages measured, in order: boot CPU, then the
    application processor; ``images`` the firmware images by component name (their SHA-256 is
    only computed for ``as_dict``).
    """

    __slots__ = ("components", "digests", "images", "mode", "vmsa_pages")

    def __init__(
        self,
        mode: Mode,
        digests: dict[int, bytes],
        components: dict[str, Any] | None = None,
        vmsa_pages: list[bytes] | None = None,
        images: dict[str, bytes] | None = None,
    ) -> None:
        self.mode = mode
        self.digests = digests
        self.components: dict[str, Any] = {} if components is None else components
        self.vmsa_pages: list[bytes] = [] if vmsa_pages is None else vmsa_pages
        self.images: dict[str, bytes] = {} if images is None else images

    def vmsa_for(self, index: int) -> bytes:
        return self.vmsa_pages[0] if index == 0 else self.vmsa_pages[-1]

    def as_dict(self) -> dict[str, Any]:
        inputs = {name: dict(value) for name, value in self.components.items()}
        for name, data in self.images.items():
            inputs[name]["sha256"] = hashlib.sha256(data).hexdigest()
        return {
            "mode": self.mode.value,
            "inputs": inputs,
            "measurements": [
                {"vcpus": count or None, "digest": digest.hex()}
                for count, digest in sorted(self.digests.items())
            ],
        }


def parse_vcpu_counts(text: str) -> list[int]:
    """``"4"``, ``"1-64"``, ``"1,2,4,8"`` or a mix (``"1-4,8,16"``): sorted, distinct counts."""
    counts: set[int] = set()
    for part in text.split(","):
        item = part.strip()
        if not item:
            raise InputError(f"--vcpus {text!r}: empty item")
        low_text, sep, high_text = item.partition("-")
        try:
            low = int(low_text, 0)
            high = int(high_text, 0) if sep else low
        except ValueError:
            raise InputError(f"--vcpus {text!r}: {item!r} is not a count or a range A-B") from None
        if low > high:
            raise InputError(f"--vcpus {text!r}: range {item!r} is empty")
        if low < 1 or high > MAX_VCPUS:
            raise InputError(f"--vcpus {text!r}: counts must be between 1 and {MAX_VCPUS}")
        counts.update(range(low, high + 1))
    return sorted(counts)


class _Background:
    """Run a function in a thread (file hashing releases the GIL) and collect its result."""

    def __init__(self, function: Callable[[], bytes]) -> None:
        import threading  # only with a kernel to hash: not every measurement's start-up

        self._function = function
        self._result: bytes | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc

    def result(self) -> bytes:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is None:  # pragma: no cover - the thread always sets one or the other
            raise RuntimeError("background job produced no result")
        return self._result


def _kernel_hashes_async(spec: GuestSpec) -> Callable[[], KernelHashes] | None:
    """Start hashing kernel and initrd in the background; return a function that collects them."""
    if spec.kernel is None:
        if spec.initrd is not None or spec.append:  # an empty --append alone is harmless
            raise InputError("--initrd and --append need --kernel")
        return None
    kernel_path, initrd_path = spec.kernel, spec.initrd
    kernel_job = _Background(lambda: sha256_file(kernel_path, "kernel"))
    initrd_job = (
        _Background(lambda: sha256_file(initrd_path, "initrd")) if initrd_path is not None else None
    )

    def collect() -> KernelHashes:
        return KernelHashes(
            kernel=kernel_job.result(),
            initrd=initrd_job.result() if initrd_job else hashlib.sha256(b"").digest(),
            cmdline=hashlib.sha256(cmdline_bytes(spec.append)).digest(),
        )

    return collect


def _check_counts(spec: GuestSpec, counts: Sequence[int]) -> list[int]:
    if not spec.mode.needs_vcpus:
        return []
    if not counts:
        raise InputError(f"mode {spec.mode.value} needs the number of vCPUs (--vcpus)")
    ordered = sorted(set(counts))
    if ordered[0] < 1 or ordered[-1] > MAX_VCPUS:
        raise InputError(f"vCPU counts must be between 1 and {MAX_VCPUS}")
    return ordered


def _firmware_component(firmware: Firmware) -> dict[str, Any]:
    return {
        "path": firmware.name,
        "size": len(firmware.data),
        "gpa": f"{firmware.gpa:#x}",
        "sev_metadata": [section.as_dict() for section in firmware.sections],
    }


def snp_ovmf_hash(ovmf: Path | str | bytes) -> bytes:
    """The SNP launch digest after just the OVMF pages (``--snp-ovmf-hash`` seeds from it)."""
    firmware = load_firmware(ovmf)
    digest = LaunchDigest()
    digest.update(PageType.NORMAL, firmware.gpa, firmware.data)
    return digest.digest()


def measure_guest(spec: GuestSpec, vcpu_counts: Sequence[int] = ()) -> GuestMeasurement:
    """Compute the launch digest of ``spec`` for every count in ``vcpu_counts``."""
    counts = _check_counts(spec, vcpu_counts)
    if spec.snp_ovmf_hash is not None and spec.mode is not Mode.SNP:
        raise InputError("--snp-ovmf-hash only applies to mode snp")
    if spec.vars_size and spec.mode is not Mode.SNP_SVSM:
        raise InputError("--vars-size/--vars-file only apply to mode snp:svsm")
    if spec.svsm is not None and spec.mode is not Mode.SNP_SVSM:
        raise InputError("--svsm only applies to mode snp:svsm")
    if not 0 <= spec.guest_features <= 0xFFFFFFFFFFFFFFFF:
        raise InputError(f"guest features {spec.guest_features:#x} do not fit in 64 bits")
    if spec.mode is Mode.SNP_OVMF_HASH:
        if spec.kernel is not None:
            raise InputError("mode snp:ovmf-hash measures the OVMF image only (drop --kernel)")
        firmware = load_firmware(spec.ovmf)
        digest = LaunchDigest()
        digest.update(PageType.NORMAL, firmware.gpa, firmware.data)
        return GuestMeasurement(
            spec.mode,
            {0: digest.digest()},
            {"ovmf": _firmware_component(firmware)},
            images={"ovmf": firmware.data},
        )
    if spec.mode is Mode.SNP:
        return _measure_snp(spec, counts)
    if spec.mode is Mode.SNP_SVSM:
        return _measure_svsm(spec, counts)
    return _measure_sev(spec, counts)


def _vmsa_pages(
    spec: GuestSpec, firmware: Firmware, sev_features: int, max_count: int
) -> tuple[list[bytes], dict[str, Any]]:
    vcpu_sig = spec.vcpu_sig
    bsp = vmsa_page(
        ovmf_reset_state(spec.vmm, BSP_RESET_EIP, vcpu_sig, rdx=spec.vmsa_rdx),
        sev_features=sev_features,
    )
    pages = [bsp]
    info: dict[str, Any] = {
        "vmm_type": spec.vmm.value,
        "vcpu_sig": None if vcpu_sig is None else f"{vcpu_sig:#x}",
        "sev_features": f"{sev_features:#x}",
        "bsp": {"eip": f"{BSP_RESET_EIP:#x}", "sha384": hashlib.sha384(bsp).hexdigest()},
    }
    if max_count > 1:
        ap_eip = firmware.sev_es_reset_eip()
        ap = vmsa_page(
            ovmf_reset_state(spec.vmm, ap_eip, vcpu_sig, rdx=spec.vmsa_rdx),
            sev_features=sev_features,
        )
        pages.append(ap)
        info["ap"] = {"eip": f"{ap_eip:#x}", "sha384": hashlib.sha384(ap).hexdigest()}
    return pages, info


def _extend_vmsas(digest: LaunchDigest, pages: list[bytes], counts: list[int]) -> dict[int, bytes]:
    results: dict[int, bytes] = {}
    measured = 0
    for count in counts:
        while measured < count:
            digest.update(PageType.VMSA, VMSA_GPA, pages[0] if measured == 0 else pages[-1])
            measured += 1
        results[count] = digest.digest()
    return results


def _measure_snp(spec: GuestSpec, counts: list[int]) -> GuestMeasurement:
    collect_hashes = _kernel_hashes_async(spec)
    firmware = load_firmware(spec.ovmf)
    firmware.require_sev_metadata()
    if collect_hashes is not None and not firmware.has_section(SectionType.SNP_KERNEL_HASHES):
        raise InputError(
            f"--kernel given, but {firmware.name} has no SNP_KERNEL_HASHES section " + _AMDSEV_HINT
        )
    components: dict[str, Any] = {"ovmf": _firmware_component(firmware)}
    if spec.snp_ovmf_hash is not None:
        digest = LaunchDigest(spec.snp_ovmf_hash)
        components["ovmf"]["snp_ovmf_hash"] = spec.snp_ovmf_hash.hex() + " (given)"
    else:
        digest = LaunchDigest()
        digest.update(PageType.NORMAL, firmware.gpa, firmware.data)
        components["ovmf"]["snp_ovmf_hash"] = digest.hexdigest()
    hashes = collect_hashes() if collect_hashes is not None else None
    if hashes is not None:
        components["kernel"] = {"path": str(spec.kernel), "sha256": hashes.kernel.hex()}
        components["initrd"] = {
            "path": None if spec.initrd is None else str(spec.initrd),
            "sha256": hashes.initrd.hex(),
        }
        components["cmdline"] = {"text": spec.append or "", "sha256": hashes.cmdline.hex()}
    _measure_sections(digest, firmware, hashes, spec.vmm, components)
    pages, components["vmsa"] = _vmsa_pages(spec, firmware, spec.guest_features, max(counts))
    return GuestMeasurement(
        spec.mode,
        _extend_vmsas(digest, pages, counts),
        components,
        pages,
        images={"ovmf": firmware.data},
    )


def _measure_sections(
    digest: LaunchDigest,
    firmware: Firmware,
    hashes: KernelHashes | None,
    vmm: VmmType,
    components: dict[str, Any],
) -> None:
    for section in firmware.sections:
        kind = section.kind
        if kind is SectionType.SNP_SEC_MEM:
            page_type = PageType.UNMEASURED if vmm is VmmType.GCE else PageType.ZERO
            digest.update(page_type, section.gpa, size=section.size)
        elif kind is SectionType.SNP_SECRETS:
            digest.update(PageType.SECRETS, section.gpa, size=section.size)
        elif kind is SectionType.CPUID:
            if vmm is not VmmType.EC2:
                digest.update(PageType.CPUID, section.gpa, size=section.size)
        elif kind is SectionType.SVSM_CAA or hashes is None:
            # the SVSM calling area, and SNP_KERNEL_HASHES without -kernel: zero pages
            digest.update(PageType.ZERO, section.gpa, size=section.size)
        else:
            offset = firmware.sev_hashes_table_gpa() - section.gpa
            region = hashes.region(section.size, offset)
            digest.update(PageType.NORMAL, section.gpa, region)
            components["sev_hashes_table"] = {
                "gpa": f"{section.gpa + offset:#x}",
                "hex": region[offset : offset + PADDED_LENGTH].hex(),
                "page_sha384": hashlib.sha384(region).hexdigest(),
            }
    if vmm is VmmType.EC2:  # EC2 measures the CPUID page(s) last
        for section in firmware.sections:
            if section.kind is SectionType.CPUID:
                digest.update(PageType.CPUID, section.gpa, size=section.size)


def _measure_svsm(spec: GuestSpec, counts: list[int]) -> GuestMeasurement:
    if spec.svsm is None:
        raise InputError("mode snp:svsm needs --svsm (the SVSM image)")
    if spec.kernel is not None:
        raise InputError("mode snp:svsm does not measure --kernel/--initrd/--append")
    if spec.vmm is not VmmType.QEMU:
        raise InputError("mode snp:svsm is defined for QEMU only")
    if spec.vcpu_sig is None and spec.vmsa_rdx is None:
        raise InputError(
            "mode snp:svsm needs the vCPU model: give --vcpu-type, --vcpu-sig or "
            "--vcpu-family/--vcpu-model/--vcpu-stepping"
        )
    if spec.vars_size < 0 or spec.vars_size % 4096:
        raise InputError(f"--vars-size {spec.vars_size} must be a multiple of 4096")
    ovmf = load_firmware(spec.ovmf)
    svsm = load_firmware(spec.svsm, end_gpa=ovmf.gpa - spec.vars_size)
    svsm.require_sev_metadata()
    eip = svsm.svsm_reset_eip()
    digest = LaunchDigest()
    digest.update(PageType.NORMAL, ovmf.gpa, ovmf.data)
    digest.update(PageType.NORMAL, svsm.gpa, svsm.data)
    components: dict[str, Any] = {
        "ovmf": _firmware_component(ovmf),
        "svsm": _firmware_component(svsm),
    }
    _measure_sections(digest, svsm, None, VmmType.QEMU, components)
    sig = spec.vcpu_sig if spec.vmsa_rdx is None else spec.vmsa_rdx
    state = svsm_reset_state(eip, sig or 0)
    page = vmsa_page(state, sev_features=SVSM_SEV_FEATURES)
    components["vmsa"] = {
        "vmm_type": VmmType.QEMU.value,
        "vcpu_sig": None if spec.vcpu_sig is None else f"{spec.vcpu_sig:#x}",
        "sev_features": f"{SVSM_SEV_FEATURES:#x}",
        "all": {"eip": f"{eip:#x}", "sha384": hashlib.sha384(page).hexdigest()},
    }
    return GuestMeasurement(
        spec.mode,
        _extend_vmsas(digest, [page], counts),
        components,
        [page],
        images={"ovmf": ovmf.data, "svsm": svsm.data},
    )


def _measure_sev(spec: GuestSpec, counts: list[int]) -> GuestMeasurement:
    collect_hashes = _kernel_hashes_async(spec)
    firmware = load_firmware(spec.ovmf)
    components: dict[str, Any] = {"ovmf": _firmware_component(firmware)}
    launch = hashlib.sha256(firmware.data)
    if collect_hashes is not None:
        if not firmware.supports_kernel_hashes():
            raise InputError(
                f"--kernel given, but {firmware.name} has no SEV kernel-hashes table "
                + _AMDSEV_HINT
            )
        hashes = collect_hashes()
        table = hashes.table()
        launch.update(table)
        components["kernel"] = {"path": str(spec.kernel), "sha256": hashes.kernel.hex()}
        components["initrd"] = {
            "path": None if spec.initrd is None else str(spec.initrd),
            "sha256": hashes.initrd.hex(),
        }
        components["cmdline"] = {"text": spec.append or "", "sha256": hashes.cmdline.hex()}
        components["sev_hashes_table"] = {"hex": table.hex()}
    if spec.mode is Mode.SEV:
        return GuestMeasurement(
            spec.mode, {0: launch.digest()}, components, images={"ovmf": firmware.data}
        )
    # SEV-ES VMSAs carry no SEV_FEATURES (that field is SNP's): guest features do not apply.
    pages, components["vmsa"] = _vmsa_pages(spec, firmware, 0, max(counts))
    results: dict[int, bytes] = {}
    measured = 0
    for count in counts:
        while measured < count:
            launch.update(pages[0] if measured == 0 else pages[-1])
            measured += 1
        results[count] = launch.copy().digest()
    return GuestMeasurement(spec.mode, results, components, pages, images={"ovmf": firmware.data})
