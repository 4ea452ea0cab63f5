"""A software model of the SEV-SNP PSP: launch digest, guest policy, signed attestation reports.

What it models, byte for byte: the launch digest (``toolchain.snp.digest.LaunchDigest`` over the
pages the VMM hands it — the bytes read back from guest memory, not the plan's — and over the
VMSA pages built from the vCPU state the VMM read back from KVM) and the v3 ATTESTATION_REPORT,
signed with ECDSA P-384 by a simulated VCEK. The VCEK is certified by a simulated ASK and ARK
(RSA-PSS, SHA-384, salt 48, as AMD does) with AMD's VCEK extensions. The chain is generated once
per user in ``state_dir("sim-firmware")`` (mode 0700, private keys 0600) and reused.

The guest's side of the PSP as the SNP ABI defines it: the SECRETS page is filled at its
``launch_update`` as the firmware fills it (layout version 3, the chip's FMS, fresh random
VMPCK0-3 for every launch), and ``guest_request`` takes a sealed SNP guest message
(``toolchain.snp.guest_msg``), authenticates and decrypts it with VMPCK0, accepts only the next
sequence number, answers MSG_REPORT_REQ with a sealed MSG_REPORT_RSP, and after any failure
stops answering on that key for the rest of the launch. ``guest_request_report`` is the older
plain-text path (the VMM's own hypercall), kept for the microkernel that still uses it; both sign
the same report over the same MEASUREMENT: the digest of what the VMM actually loaded.

What it does not model: memory encryption (the host can read and change guest memory at any
time, VMPCKs included), ID-block/author-key signatures (ID_KEY_DIGEST stays zero), CPUID-page
validation, VLEK signing (KEY_SEL 2 is refused), VMPCK1-3 requests. A report from this
firmware proves only what a host could forge: a verifier trusts the simulated ARK only when
explicitly asked to.

One way in, ``runtime.firmware.interface.measured_launch``: the ``kvm`` backend's VMM feeds it
what it placed in the VM; the ``nil`` backend, which has no VM, the plan's own bytes and states
(``PlanOnly``: there is nothing else to measure there).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from runtime.firmware.interface import HOST_DATA_SIZE, ID_BLOCK_SIZE, CertificateChain
from toolchain.errors import EvidenceError, InputError, PlatformError
from toolchain.snp.certs import AMD_PSS, SIM_ORGANIZATION, vcek_extensions
from toolchain.snp.cpu import cpu_signature
from toolchain.snp.digest import PAGE_SIZE, VMSA_GPA, LaunchDigest, PageType
from toolchain.snp.guest_msg import (
    MESSAGE_PAGE_SIZE,
    REPORT_MSG_VERSION,
    REPORT_REQ_SIZE,
    MessageHeader,
    MessageType,
    ReportRequest,
    ReportResponse,
    ReportStatus,
    open_message,
    seal,
)
from toolchain.snp.policy import GuestPolicy
from toolchain.snp.report import AttestationReport, KeyInfo, PlatformInfo
from toolchain.snp.secrets import SecretsPage
from toolchain.snp.tcb import Product, TcbVersion
from toolchain.snp.vmsa import VcpuState, vmsa_page
from toolchain.state import state_dir

#: The generation the model claims to be (CPUID family 19h, model 11h: Genoa).
SIM_PRODUCT = Product.GENOA
SIM_CPUID = (0x19, 0x11, 0x01)
#: The TCB the simulated VCEK is issued for and every report states.
SIM_TCB = TcbVersion(bootloader=9, tee=0, snp=23, microcode=72)
SIM_FIRMWARE_VERSION = (1, 55, 40)  # major, minor, build
STATE_SUBDIR = "sim-firmware"
REPORT_VERSION = 3
_POLICY_MUST_BE_ONE = 1 << 17
_VALIDITY = timedelta(days=25 * 365)


class LaunchState(Enum):
    NONE = "no launch started"
    UPDATING = "launch in progress"
    VMSAS = "measuring VMSAs"
    RUNNING = "launch finished"


# ---- the per-user simulated chain ----------------------------------------------------------------


@dataclass(frozen=True)
class SimIdentity:
    """The simulated chip: its chain, its VCEK private key and its chip ID."""

    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes

    def chain(self) -> CertificateChain:
        der = serialization.Encoding.DER
        return CertificateChain(
            ark=self.ark.public_bytes(der),
            ask=self.ask.public_bytes(der),
            vcek=self.vcek.public_bytes(der),
            simulated=True,
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIM_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signing_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    extensions: Sequence[x509.Extension[x509.UnrecognizedExtension]] = (),
) -> x509.Certificate:
    now = datetime.now(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    for extension in extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(signing_key, hashes.SHA384(), rsa_padding=AMD_PSS)


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    temporary.replace(path)


def _generate(directory: Path) -> None:
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    product = SIM_PRODUCT.value
    ark_name, ask_name = _name(f"ARK-{product}"), _name(f"SEV-{product}")
    chip_id = secrets.token_bytes(64)
    ark = _certificate(ark_name, ark_name, ark_key.public_key(), ark_key, ca=True)
    ask = _certificate(ask_name, ark_name, ask_key.public_key(), ark_key, ca=True)
    vcek = _certificate(
        _name("SEV-VCEK"),
        ask_name,
        vcek_key.public_key(),
        ask_key,
        ca=False,
        extensions=vcek_extensions(SIM_TCB, chip_id, product),
    )
    pem = serialization.Encoding.PEM
    no_password = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    # The ARK and ASK keys are kept so that the chain can be extended (e.g. a VLEK) later.
    _write_private(directory / "ark.key", ark_key.private_bytes(pem, pkcs8, no_password))
    _write_private(directory / "ask.key", ask_key.private_bytes(pem, pkcs8, no_password))
    _write_private(directory / "vcek.key", vcek_key.private_bytes(pem, pkcs8, no_password))
    _write_private(directory / "chip_id", chip_id.hex().encode() + b"\n")
    for name, cert in (("ark.pem", ark), ("ask.pem", ask), ("vcek.pem", vcek)):
        _write_private(directory / name, cert.public_bytes(pem))


_FILES = ("ark.pem", "ask.pem", "vcek.pem", "vcek.key", "chip_id")
_cached: dict[Path, SimIdentity] = {}


def sim_identity_dir() -> Path:
    """Where this user's simulated chain lives (created 0700)."""
    directory = state_dir(STATE_SUBDIR)
    try:
        directory.chmod(0o700)
    except OSError as exc:
        raise PlatformError(f"cannot restrict {directory} to its owner: {exc.strerror}") from exc
    return directory


def sim_identity() -> SimIdentity:
    """This user's simulated chip, generated on first use (under a lock) and then reused."""
    directory = sim_identity_dir()
    if directory in _cached:
        return _cached[directory]
    lock_path = directory / ".lock"
    try:
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not all((directory / name).is_file() for name in _FILES):
                _generate(directory)
            identity = _load(directory)
    except OSError as exc:
        raise PlatformError(
            f"cannot use the simulated firmware state in {directory}: {exc}"
        ) from exc
    _cached[directory] = identity
    return identity


def _load(directory: Path) -> SimIdentity:
    try:
        ark = x509.load_pem_x509_certificate((directory / "ark.pem").read_bytes())
        ask = x509.load_pem_x509_certificate((directory / "ask.pem").read_bytes())
        vcek = x509.load_pem_x509_certificate((directory / "vcek.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "vcek.key").read_bytes(), None)
        chip_id = bytes.fromhex((directory / "chip_id").read_text().strip())
    except (ValueError, TypeError) as exc:
        raise PlatformError(
            f"the simulated firmware state in {directory} is damaged: {exc}",
            hint=f"remove {directory} to generate a new simulated chain",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or len(chip_id) != 64:
        raise PlatformError(
            f"the simulated firmware state in {directory} is damaged",
            hint=f"remove {directory} to generate a new simulated chain",
        )
    return SimIdentity(ark=ark, ask=ask, vcek=vcek, vcek_key=key, chip_id=chip_id)


def sim_root_certificate() -> x509.Certificate:
    """The simulated ARK, for a verifier that was explicitly asked to trust it."""
    return sim_identity().ark


def sim_root_present() -> Path | None:
    """Where the simulated chain is, if it has been generated (without generating it)."""
    try:
        directory = state_dir(STATE_SUBDIR)
    except PlatformError:
        return None
    return directory if (directory / "ark.pem").is_file() else None


# ---- one guest context ---------------------------------------------------------------------------


class SimFirmware:
    """One guest context on the simulated PSP (create one per keep)."""

    name = "sim"
    simulated = True
    sees_report_requests = True

    def __init__(self) -> None:
        self.identity = sim_identity()
        self.state = LaunchState.NONE
        self._digest = LaunchDigest()
        self._policy = 0
        self._sev_features = 0
        self._last_gpa = -1
        self._host_data = bytes(HOST_DATA_SIZE)
        self._family_id = bytes(16)
        self._image_id = bytes(16)
        self._guest_svn = 0
        self._report_id = secrets.token_bytes(32)
        self.vmsa_count = 0
        # The guest-message state: the secrets page written at launch, the last sequence
        # number used on VMPCK0, and why VMPCK0 stopped answering (None while it answers).
        self._secrets: SecretsPage | None = None
        self._last_seqno = 0
        self._vmpck0_failure: str | None = None

    def _expect(self, *states: LaunchState, command: str) -> None:
        if self.state not in states:
            raise InputError(f"{command} is not allowed now ({self.state.value})")

    @property
    def measurement(self) -> bytes:
        """The launch digest so far (final after ``launch_finish``)."""
        return self._digest.digest()

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        self._expect(LaunchState.NONE, command="LAUNCH_START")
        if not isinstance(policy, int) or not 0 <= policy < 1 << 64:
            raise InputError(f"guest policy {policy!r} is not a 64-bit value")
        if not policy & _POLICY_MUST_BE_ONE:
            raise InputError(
                f"LAUNCH_START refused guest policy {policy:#x}: bit 17 (reserved, must be one) "
                "is clear"
            )
        if not sev_features & 1:
            raise InputError(f"SEV_FEATURES {sev_features:#x} lacks SNPActive (bit 0)")
        self._policy = policy
        self._sev_features = sev_features
        self.state = LaunchState.UPDATING

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        self._expect(LaunchState.UPDATING, command="LAUNCH_UPDATE")
        try:
            ptype = PageType(page_type)
        except ValueError:
            raise InputError(f"LAUNCH_UPDATE: unknown page type {page_type!r}") from None
        if ptype is PageType.VMSA:
            raise InputError("LAUNCH_UPDATE: VMSA pages are measured through launch_vmsa")
        if not data or len(data) % PAGE_SIZE:
            raise InputError(f"LAUNCH_UPDATE at {gpa:#x}: {len(data)} bytes is not whole pages")
        if gpa < 0 or gpa % PAGE_SIZE:
            raise InputError(f"LAUNCH_UPDATE: GPA {gpa:#x} is not page aligned")
        if gpa <= self._last_gpa:
            # The PSP refuses to measure a page twice (its RMP entry is already validated).
            raise InputError(f"LAUNCH_UPDATE: GPA {gpa:#x} was already launched or is out of order")
        self._last_gpa = gpa + len(data) - PAGE_SIZE
        if ptype is PageType.NORMAL:
            self._digest.update(ptype, gpa, data)
            return bytes(data)
        self._digest.update(ptype, gpa, size=len(data))
        if ptype is PageType.ZERO:
            return bytes(len(data))
        if ptype is PageType.SECRETS:
            if len(data) != PAGE_SIZE:
                raise InputError("LAUNCH_UPDATE: a SECRETS region is exactly one page")
            if self._secrets is not None:
                raise InputError("LAUNCH_UPDATE: a launch has exactly one SECRETS page")
            self._secrets = SecretsPage.fresh(cpu_signature(*SIM_CPUID))
            return self._secrets.to_bytes()
        return bytes(data)  # UNMEASURED and CPUID keep their contents

    def launch_vmsa(self, state: VcpuState) -> None:
        self._expect(LaunchState.UPDATING, LaunchState.VMSAS, command="LAUNCH_UPDATE(VMSA)")
        self._digest.update(
            PageType.VMSA, VMSA_GPA, vmsa_page(state, sev_features=self._sev_features)
        )
        self.vmsa_count += 1
        self.state = LaunchState.VMSAS

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        self._expect(LaunchState.VMSAS, command="LAUNCH_FINISH")
        if len(host_data) != HOST_DATA_SIZE:
            raise InputError(f"HOST_DATA must be {HOST_DATA_SIZE} bytes, not {len(host_data)}")
        if id_block is not None:
            self._check_id_block(bytes(id_block))
        self._host_data = bytes(host_data)
        self.state = LaunchState.RUNNING

    def _check_id_block(self, id_block: bytes) -> None:
        if len(id_block) != ID_BLOCK_SIZE:
            raise InputError(f"an ID block is {ID_BLOCK_SIZE} bytes, not {len(id_block)}")
        expected_ld, family_id, image_id, version, guest_svn, policy = struct.unpack(
            "<48s16s16sIIQ", id_block
        )
        if version != 1:
            raise InputError(f"ID block version {version} (the firmware knows version 1)")
        if expected_ld != self.measurement:
            raise EvidenceError(
                "LAUNCH_FINISH refused: the ID block names another launch digest",
                field="ID_BLOCK.LD",
                expected=expected_ld.hex(),
                found=self.measurement.hex(),
            )
        if policy != self._policy:
            raise EvidenceError(
                "LAUNCH_FINISH refused: the ID block names another guest policy",
                field="ID_BLOCK.POLICY",
                expected=f"{policy:#x}",
                found=f"{self._policy:#x}",
            )
        self._family_id, self._image_id, self._guest_svn = family_id, image_id, guest_svn

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        self._expect(LaunchState.RUNNING, command="MSG_REPORT_REQ")
        return self._signed_report(report_data, vmpl)

    def _signed_report(self, report_data: bytes, vmpl: int) -> bytes:
        if len(report_data) != 64:
            raise InputError(f"REPORT_DATA must be 64 bytes, not {len(report_data)}")
        if not isinstance(vmpl, int) or not 0 <= vmpl <= 3:
            raise InputError(f"VMPL {vmpl!r} out of range 0..3")
        family, model, stepping = SIM_CPUID
        major, minor, build = SIM_FIRMWARE_VERSION
        report = AttestationReport(
            version=REPORT_VERSION,
            guest_svn=self._guest_svn,
            policy=GuestPolicy(self._policy),
            family_id=self._family_id,
            image_id=self._image_id,
            vmpl=vmpl,
            current_tcb=SIM_TCB,
            platform_info=PlatformInfo(0x1),  # SMT enabled
            key_info=KeyInfo(0),  # signed by the VCEK
            report_data=bytes(report_data),
            measurement=self.measurement,
            host_data=self._host_data,
            report_id=self._report_id,
            report_id_ma=b"\xff" * 32,  # no migration agent
            reported_tcb=SIM_TCB,
            cpuid_fam_id=family,
            cpuid_mod_id=model,
            cpuid_step=stepping,
            chip_id=self.identity.chip_id,
            committed_tcb=SIM_TCB,
            current_build=build,
            current_minor=minor,
            current_major=major,
            committed_build=build,
            committed_minor=minor,
            committed_major=major,
            launch_tcb=SIM_TCB,
        )
        signature = self.identity.vcek_key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(signature)
        return report.with_signature(r, s).to_bytes()

    def guest_request(self, message: bytes) -> bytes:
        """SNP_GUEST_REQUEST: one sealed request page in, one sealed response page out.

        Refused (``EvidenceError``/``InputError``, and VMPCK0 answers nothing more in this launch):
        a message that does not authenticate, a sequence number other than the next one (a
        replay or a skip), an unknown header format, a MSG_SZ beyond the page. Refused without
        touching VMPCK0: a message for another VMPCK (this model's guest runs at VMPL0 and
        holds only VMPCK0's channel). A well-sealed MSG_REPORT_REQ with bad parameters gets a
        sealed MSG_REPORT_RSP whose STATUS says why, as the firmware answers.
        """
        self._expect(LaunchState.RUNNING, command="SNP_GUEST_REQUEST")
        if self._secrets is None:
            raise InputError("SNP_GUEST_REQUEST: this launch has no SECRETS page, so no VMPCK")
        if self._vmpck0_failure is not None:
            raise EvidenceError(
                "SNP_GUEST_REQUEST refused: VMPCK0 stopped answering after an earlier failure "
                f"({self._vmpck0_failure})"
            )
        if not isinstance(message, bytes | bytearray) or len(message) > MESSAGE_PAGE_SIZE:
            raise InputError("SNP_GUEST_REQUEST: the request is not one page")
        message = bytes(message)
        if len(message) >= 0x3D and message[0x3C] != 0:
            raise EvidenceError(
                "SNP_GUEST_REQUEST refused: the message names a VMPCK this guest cannot use",
                field="MSG_VMPCK",
                expected=0,
                found=message[0x3C],
            )
        try:
            header, payload = self._open_request(message)
        except (EvidenceError, InputError) as exc:
            self._vmpck0_failure = exc.message
            raise
        self._last_seqno = header.msg_seqno + 1
        if header.msg_type != MessageType.REPORT_REQ or header.msg_version != REPORT_MSG_VERSION:
            # Accepted (the sequence moved on) but not served: this model answers reports only.
            raise InputError(
                f"SNP_GUEST_REQUEST: message type {header.msg_type} version "
                f"{header.msg_version} is not served (MSG_REPORT_REQ version 1 is)"
            )
        response = self._report_response(payload)
        sealed = seal(
            self._secrets.key(0),
            seqno=self._last_seqno,
            msg_type=MessageType.REPORT_RSP,
            msg_version=header.msg_version,
            vmpck=0,
            payload=response.to_bytes(),
        )
        return sealed + bytes(MESSAGE_PAGE_SIZE - len(sealed))

    def _open_request(self, message: bytes) -> tuple[MessageHeader, bytes]:
        if self._secrets is None:
            raise InputError("SNP_GUEST_REQUEST: this launch has no SECRETS page, so no VMPCK")
        header, payload = open_message(self._secrets.key(0), message)
        expected = self._last_seqno + 1
        if header.msg_seqno != expected:
            raise EvidenceError(
                "SNP_GUEST_REQUEST refused: a replayed or skipped sequence number",
                field="MSG_SEQNO",
                expected=expected,
                found=header.msg_seqno,
            )
        return header, payload

    def _report_response(self, payload: bytes) -> ReportResponse:
        if len(payload) != REPORT_REQ_SIZE:
            return ReportResponse(status=ReportStatus.INVALID_PARAMETERS, report_size=0)
        request, clean = ReportRequest.parse(payload)
        if not clean or request.vmpl > 3:
            return ReportResponse(status=ReportStatus.INVALID_PARAMETERS, report_size=0)
        if request.key_sel not in (0, 1):  # 0 default (VCEK here), 1 VCEK; no VLEK is loaded
            return ReportResponse(status=ReportStatus.INVALID_KEY_SELECTION, report_size=0)
        return ReportResponse(
            status=ReportStatus.SUCCESS,
            report=self._signed_report(request.report_data, request.vmpl),
        )

    def certificate_chain(self, report: AttestationReport | None = None) -> CertificateChain:
        """This user's simulated chain: one for every report."""
        return self.identity.chain()
