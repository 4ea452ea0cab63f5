"""The real SEV-SNP firmware (the AMD-SP) as the ``snp`` backend's ``Firmware``: reached via KVM.

On an SNP host the VMM never speaks to the firmware itself:

* the launch commands are KVM's: ``runtime.vmm.snp_launch.SnpLaunch`` drives them through
  ``KVM_MEMORY_ENCRYPT_OP`` (``KVM_SEV_SNP_LAUNCH_START`` / ``_UPDATE`` / ``_FINISH``), measures
  the bytes it hands over itself, and KVM (not the VMM) builds and measures the VMSAs at
  LAUNCH_FINISH — so ``measured_launch`` (the simulated firmware's sequence) never runs here,
  and every ``launch_*`` method refuses;
* the firmware's MEASUREMENT exists only inside its signed report: ``measurement`` is empty;
* the report is the guest's to obtain: an SNP guest message sealed under VMPCK0, sent through
  the GHCB (``SNP_GUEST_REQUEST``) and served by KVM in the kernel (Linux 6.12
  ``snp_handle_guest_req``, ``arch/x86/kvm/svm/sev.c``). A VMM cannot ask the AMD-SP for a
  guest's report, so ``guest_request_report`` and ``guest_request`` refuse, and this firmware
  ``sees_report_requests`` never: the runner witnesses the report the keep hands over instead
  (``runtime.run.attest``);
* the report is verified against AMD's pinned roots only: this chain is never ``simulated``, so
  ``--dev`` never adds the simulated root for it.

The certificate chain comes from the host operator, offline, never fetched at run time: the
chip's VCEK is a file (``keep run --vcek FILE`` or ``$KEEPSTACK_SNP_VCEK``; DER, PEM, a PkiPath
or snpguest's directory), loaded by ``load_vcek`` for the platform's CPU generation — given
explicitly, from the host's CPUID, never a default. The ASK (ASVK for a VLEK) and ARK are AMD's
pinned ones for that generation (``toolchain.snp.certs.amd_certificate``); a VCEK naming another
generation, not signed by that ASK, or shipped with an intermediate or root that is not the pinned
one is refused before the launch. Whether the VCEK is this chip's at the reported TCB is the
verifier's check (``report.chip-id``, ``report.reported-tcb``). Without a VCEK ``certificate_chain``
for a report refuses with ``PlatformError``, naming the KDS URL built from that report's chip ID
and TCB (printed, never fetched) and ``snphost fetch vcek`` as the other way to obtain it.

Every refusal is a ``PlatformError`` saying what is missing; nothing here ever answers with a
value that a verifier could mistake for the firmware's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.firmware.interface import CertificateChain
from toolchain.errors import InputError, KeepError, PlatformError

if TYPE_CHECKING:
    from cryptography import x509

    from toolchain.snp.digest import PageType
    from toolchain.snp.report import AttestationReport
    from toolchain.snp.tcb import Product
    from toolchain.snp.vmsa import VcpuState

#: Where ``keep run --backend snp`` finds the VCEK when ``--vcek`` is not given.
VCEK_ENV = "KEEPSTACK_SNP_VCEK"
_LAUNCH_IS_KVMS = (
    "on SEV-SNP, KVM issues the launch commands (runtime/vmm/snp_launch.py, SnpLaunch) and "
    "the VMM measures what it hands over; the firmware is not driven directly"
)
#: Why the VMM cannot answer the keep's report request on SNP.
GUEST_PATH_ONLY = (
    "on SEV-SNP only the keep can obtain its report, as an SNP guest message sealed under "
    "VMPCK0 and sent through the GHCB (KVM serves SNP_GUEST_REQUEST in the kernel); a VMM "
    "cannot ask the AMD-SP for it"
)
VCEK_MISSING = (
    f"no VCEK for this chip: pass --vcek FILE or set {VCEK_ENV} to the chip's VCEK for the "
    "reported TCB (DER or PEM), obtained offline beforehand; keep run never fetches it"
)


@dataclass(frozen=True)
class Vcek:
    """The operator's VCEK (or VLEK), checked against AMD's pinned chain of ``product``."""

    certificate: x509.Certificate
    product: Product
    source: str

    def __post_init__(self) -> None:
        from toolchain.snp import certs

        kind = certs.vek_kind(self.certificate)
        if kind is None:
            raise InputError(
                f"{self.source} holds no VCEK or VLEK (subject "
                f"{certs.common_name(self.certificate.subject)!r})"
            )
        named = certs.parse_vcek_extensions(self.certificate).product_name
        if named is None or _product(named, self.source) is not self.product:
            raise PlatformError(
                f"{self.source} is a VCEK for {named or 'no named product'}, but this host is "
                f"{self.product.value}",
                hint="obtain the VCEK of this chip (keep platform names its generation)",
            )
        ok, why = certs.signed_by(self.certificate, self.intermediate)
        if not ok:
            raise PlatformError(
                f"{self.source} is not signed by AMD's pinned {self.product.value} "
                f"{self.role.upper()}: {why}"
            )

    @property
    def role(self) -> str:
        from toolchain.snp import certs
        from toolchain.verify.chain import issuer_role

        return issuer_role(certs.vek_kind(self.certificate))

    @property
    def intermediate(self) -> x509.Certificate:
        from toolchain.snp import certs

        return certs.amd_certificate(self.product, self.role)

    def chain(self) -> CertificateChain:
        from cryptography.hazmat.primitives.serialization import Encoding

        from toolchain.snp import certs

        return CertificateChain(
            ark=certs.amd_certificate(self.product, "ark").public_bytes(Encoding.DER),
            ask=self.intermediate.public_bytes(Encoding.DER),
            vcek=self.certificate.public_bytes(Encoding.DER),
            simulated=False,
        )


def _product(name: str, source: str) -> Product:
    from toolchain.snp.tcb import Product

    try:
        return Product.from_name(name)
    except InputError as exc:
        raise InputError(f"{source}: {exc.message}") from exc


def load_vcek(path: Path, product: Product) -> Vcek:
    """The VCEK in ``path`` for a ``product`` host; any ASK/ARK beside it must be AMD's pinned."""
    from toolchain.snp import certs
    from toolchain.snp.bundle import load_bundle

    if not path.exists():
        raise InputError(f"the VCEK file {path} does not exist")
    bundle = load_bundle(path)
    if bundle.vek is None:
        raise InputError(f"no VCEK or VLEK in {bundle.describe()}")
    vcek = Vcek(bundle.vek, product, str(path))
    pinned = {"intermediate": vcek.intermediate, "ark": certs.amd_certificate(product, "ark")}
    for role, expected in pinned.items():
        given = getattr(bundle, role)
        if given is not None and certs.der_sha256(given) != certs.der_sha256(expected):
            raise PlatformError(
                f"{path} carries a {role} that is not AMD's pinned {product.value} one: "
                f"expected sha256 {certs.der_sha256(expected)}, found {certs.der_sha256(given)}"
            )
    return vcek


def how_to_obtain(report: AttestationReport, product: Product) -> str:
    """Where this report's VCEK is, offline: the KDS URL of its chip and TCB, or snphost."""
    from toolchain.snp.kds import DEFAULT_KDS_URL, hwid, vcek_url

    try:
        url = vcek_url(DEFAULT_KDS_URL, product, hwid(report, product), report.reported_tcb)
    except KeepError as exc:
        return f"the report does not say which VCEK signed it ({exc.message})"
    return (
        f"fetch it on any machine with network ({url}), or on this host run "
        f"'snphost fetch vcek der DIR'; then pass --vcek FILE or set {VCEK_ENV}"
    )


class SnpFirmware:
    """The real AMD-SP, as the runner holds it for backend ``snp``: it answers nothing itself."""

    name = "snp"
    simulated = False
    #: The keep's report requests go to KVM in the kernel, never through this object.
    sees_report_requests = False

    def __init__(self, vcek: Vcek | None = None, product: Product | None = None) -> None:
        self.vcek = vcek
        #: The host's CPU generation (the VCEK's, when one is given).
        self.product = vcek.product if vcek is not None else product

    @property
    def measurement(self) -> bytes:
        """Empty: the real MEASUREMENT is only in the signed report (equal to no 48-byte digest)."""
        return b""

    def launch_start(self, policy: int, *, sev_features: int = 1) -> None:
        raise PlatformError(f"SNP_LAUNCH_START: {_LAUNCH_IS_KVMS}")

    def launch_update(self, page_type: PageType, gpa: int, data: bytes) -> bytes:
        raise PlatformError(f"SNP_LAUNCH_UPDATE: {_LAUNCH_IS_KVMS}")

    def launch_vmsa(self, state: VcpuState) -> None:
        raise PlatformError(f"the VMSA: {_LAUNCH_IS_KVMS} (KVM builds the VMSAs)")

    def launch_finish(self, id_block: bytes | None = None, host_data: bytes = bytes(32)) -> None:
        raise PlatformError(f"SNP_LAUNCH_FINISH: {_LAUNCH_IS_KVMS}")

    def guest_request_report(self, report_data: bytes, vmpl: int) -> bytes:
        raise PlatformError(GUEST_PATH_ONLY)

    def guest_request(self, message: bytes) -> bytes:
        raise PlatformError(
            "a VMM cannot relay an SNP guest message to the real firmware: the keep sends it "
            "through the GHCB and KVM serves it in the kernel"
        )

    def certificate_chain(self, report: AttestationReport | None = None) -> CertificateChain:
        """AMD's pinned ARK and AS(V)K of the host's generation, and the operator's VCEK."""
        if self.vcek is not None:
            return self.vcek.chain()
        if report is None or self.product is None:
            raise PlatformError(VCEK_MISSING, hint="keep platform lists the SEV-SNP facts")
        raise PlatformError(VCEK_MISSING, hint=how_to_obtain(report, self.product))
