"""AMD's Key Distribution Service (KDS): a report's VCEK, its ASK/ARK chain and AMD's CRL.

URLs as AMD documents them and snpguest and go-sev-guest build them::

    {base}/vcek/v1/{Milan|Genoa|Turin}/{hwid}?blSPL=NN&teeSPL=NN&snpSPL=NN&ucodeSPL=NN
        (Turin: hwid is the first 8 bytes of CHIP_ID, and fmcSPL=NN comes first)
    {base}/{vcek|vlek}/v1/{product}/cert_chain    PEM: ASK (or ASVK), then ARK
    {base}/{vcek|vlek}/v1/{product}/crl           DER, signed by the ARK

``base`` is ``--kds-url``, else ``$KEEPSTACK_KDS_URL``, else ``https://kdsintf.amd.com`` (a mirror
may serve plain http: nothing fetched is trusted for where it came from).

What KDS returns is evidence, never a trust anchor. Before anything is cached (and again when it
is read from the cache) it must parse and match what was asked: the chain's ARK must be identical
to a pinned AMD root and sign the ASK; the VCEK must name the requested product, chip and TCB and
be signed by that ASK; the CRL must be signed by the pinned ARK. The verifier then checks all of
it once more against the pinned roots. A VLEK cannot be fetched (KDS wants the cloud provider's
credentials for it): pass it with ``--vcek``.

The cache (``cache_dir("kds")``) is keyed by product, chip ID and TCB:
``vcek/{product}/{hwid}/{tcb:016x}.der``, ``{kind}/{product}/cert_chain.pem`` and
``{kind}/{product}/crl.der``; a cached CRL past its nextUpdate is fetched again (at most hourly).

AMD limits VCEK requests per address: HTTP 429 is retried after its Retry-After (seconds or an
HTTP date) when that is at most ``max_wait`` seconds, ``attempts`` times in all; a longer wait is a
PlatformError saying when to retry. ``offline`` forbids every request: a cache miss is an
InputError naming what is missing.
"""

from __future__ import annotations

import email.utils
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from toolchain.errors import InputError, PlatformError
from toolchain.snp import certs
from toolchain.snp.bundle import CertificateBundle
from toolchain.snp.report import AttestationReport, SigningKey
from toolchain.snp.tcb import Product, TcbVersion

DEFAULT_KDS_URL = "https://kdsintf.amd.com"
KDS_URL_ENV = "KEEPSTACK_KDS_URL"
_BODY_LIMIT = 1 << 20  # a certificate or CRL is a few KiB; more is not KDS
_DEFAULT_RETRY = 2.0  # seconds, when a 429 says no Retry-After
CRL_REFRESH = 3600.0  # seconds between fetches of a CRL that is past its nextUpdate


def kds_base_url(given: str | None = None) -> str:
    """The KDS base URL: ``given``, else ``$KEEPSTACK_KDS_URL``, else AMD's."""
    url = given or os.environ.get(KDS_URL_ENV) or DEFAULT_KDS_URL
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise InputError(f"KDS URL {url!r} is not an http(s) base URL (like {DEFAULT_KDS_URL})")
    return url.rstrip("/")


def hwid(report: AttestationReport, product: Product) -> bytes:
    """The chip ID KDS knows the chip by: 64 bytes, or the first 8 on Turin."""
    chip = report.chip_id_meaningful(product)
    if report.key_info.mask_chip_id or not any(chip):
        raise InputError(
            "the report's CHIP_ID is zero (MASK_CHIP_ID): KDS cannot say which VCEK signed it",
            hint="pass the VCEK with --vcek",
        )
    return chip


def vcek_url(base: str, product: Product, chip: bytes, tcb: TcbVersion) -> str:
    """The VCEK for a chip at a TCB (zero-padded levels, as snpguest writes them)."""
    levels = [("blSPL", tcb.bootloader), ("teeSPL", tcb.tee), ("snpSPL", tcb.snp)]
    levels.append(("ucodeSPL", tcb.microcode))
    if product.turin_layout:
        if tcb.fmc is None:
            raise InputError("a Turin TCB without its FMC level")
        levels.insert(0, ("fmcSPL", tcb.fmc))
    query = "&".join(f"{name}={value:02d}" for name, value in levels)
    return f"{base}/vcek/v1/{product.value}/{chip.hex()}?{query}"


def chain_url(base: str, product: Product, kind: str = "vcek") -> str:
    return f"{base}/{kind}/v1/{product.value}/cert_chain"


def crl_url(base: str, product: Product, kind: str = "vcek") -> str:
    return f"{base}/{kind}/v1/{product.value}/crl"


def report_product(report: AttestationReport, given: str | Product | None) -> Product:
    """The generation to ask KDS about: given, else the report's CPUID (v3 and later)."""
    if isinstance(given, Product):
        return given
    if given not in (None, "auto"):
        return Product.from_name(str(given))
    product = report.cpuid_product
    if product is None:
        raise InputError(
            f"the report (v{report.version}) does not name its CPU generation, so its VCEK "
            "cannot be looked up",
            hint="pass --product milan|genoa|turin",
        )
    return product


@dataclass(frozen=True)
class Fetched:
    """What KDS (or the cache) gave for a report, and where each part came from."""

    bundle: CertificateBundle
    crl: bytes | None
    notes: tuple[str, ...] = ()


# ---- checks applied before caching and after reading the cache ----------------------------------


def _pinned_ark(product: Product) -> x509.Certificate:
    return certs.amd_certificate(product, "ark")


def check_chain(data: bytes, product: Product, kind: str, where: str) -> CertificateBundle:
    """An AS(V)K + ARK body: the ARK must be AMD's pinned root and sign the intermediate."""
    bundle = CertificateBundle.from_certificates(certs.load_certificates(data), where)
    ark = _pinned_ark(product)
    if bundle.ark is None or certs.der_sha256(bundle.ark) != certs.der_sha256(ark):
        found = "none" if bundle.ark is None else certs.der_sha256(bundle.ark)
        raise InputError(
            f"{where}: the root is not AMD's pinned {product.value} ARK "
            f"(expected sha256 {certs.der_sha256(ark)}, found {found})"
        )
    if bundle.intermediate is None or bundle.vek is not None:
        raise InputError(
            f"{where}: expected an intermediate and the ARK, found {bundle.describe()}"
        )
    ok, why = certs.signed_by(bundle.intermediate, ark)
    if not ok:
        raise InputError(f"{where}: the intermediate is not signed by the pinned ARK: {why}")
    expected_cn = f"SEV-VLEK-{product.value}" if kind == "vlek" else f"SEV-{product.value}"
    found_cn = certs.common_name(bundle.intermediate.subject)
    if found_cn != expected_cn:
        raise InputError(f"{where}: expected intermediate {expected_cn!r}, found {found_cn!r}")
    return bundle


def check_vcek(
    data: bytes,
    *,
    product: Product,
    chip: bytes,
    tcb: TcbVersion,
    ask: x509.Certificate,
    where: str,
) -> x509.Certificate:
    """A VCEK body: for this product, chip and TCB, and signed by ``ask`` (already checked)."""
    vcek = certs.load_certificate(data)
    ext = certs.parse_vcek_extensions(vcek)
    named = Product.from_name(ext.product_name) if ext.product_name else None
    cert_tcb = ext.tcb(turin=product.turin_layout)
    problems = []
    if certs.vek_kind(vcek) != "VCEK":
        problems.append(f"subject {certs.common_name(vcek.subject)!r}, not SEV-VCEK")
    if named is not product:
        problems.append(f"product {ext.product_name!r}, not {product.value}")
    if ext.hwid != chip:
        problems.append(f"hwID {(ext.hwid or b'').hex()[:16]}…, not {chip.hex()[:16]}…")
    if cert_tcb.to_int() != tcb.to_int():
        problems.append(f"TCB {cert_tcb}, not {tcb}")
    ok, why = certs.signed_by(vcek, ask)
    if not ok:
        problems.append(f"not signed by {certs.common_name(ask.subject)}: {why}")
    if problems:
        raise InputError(f"{where} is not the VCEK asked for: {'; '.join(problems)}")
    return vcek


def check_crl(data: bytes, product: Product, where: str) -> x509.CertificateRevocationList:
    crl = certs.read_crl(data)
    ok, why = certs.crl_signed_by(crl, _pinned_ark(product))
    if not ok:
        raise InputError(f"{where} is not AMD's {product.value} CRL: {why}")
    return crl


# ---- the client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KdsClient:
    """Fetches from KDS (or a mirror) through an on-disk cache; see the module's contract."""

    base_url: str | None = None  # None: $KEEPSTACK_KDS_URL, else AMD's
    cache: Path | None = None  # None: the per-user cache directory
    offline: bool = False
    max_wait: float = 30.0  # the longest Retry-After honoured, in seconds
    attempts: int = 3
    timeout: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", kds_base_url(self.base_url))
        if self.attempts < 1 or self.max_wait < 0 or self.timeout <= 0:
            raise InputError("KDS client: attempts >= 1, max_wait >= 0 and timeout > 0 required")

    @property
    def url(self) -> str:
        """The base URL in use (resolved from the environment when none was given)."""
        return str(self.base_url)

    # -- cache --

    def _cache_path(self, *parts: str) -> Path:
        from toolchain.state import cache_dir

        root = self.cache if self.cache is not None else cache_dir("kds")
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PlatformError(f"cannot create cache directory {path.parent}: {exc}") from exc
        return path

    @staticmethod
    def _store(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PlatformError(f"cannot write the KDS cache {path}: {exc.strerror}") from exc

    # -- HTTP --

    def _retry_after(self, value: str | None) -> float:
        if value is None:
            return _DEFAULT_RETRY
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return _DEFAULT_RETRY
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())

    def get(self, url: str, what: str) -> bytes:
        """GET ``url``; 429 waits its Retry-After (bounded); anything else but 200 fails."""
        if self.offline:
            raise InputError(f"--offline: {what} is needed but fetching it is forbidden ({url})")
        from toolchain import __version__

        # http(s) only: kds_base_url refuses every other scheme.
        headers = {"User-Agent": f"keepstack/{__version__}"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    body: bytes = response.read(_BODY_LIMIT + 1)
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise PlatformError(
                        f"KDS answered HTTP {exc.code} ({exc.reason}) for {what}: {url}"
                    ) from exc
                wait = self._retry_after(exc.headers.get("Retry-After"))
                if wait > self.max_wait or attempt == self.attempts:
                    raise PlatformError(
                        f"KDS is rate-limiting requests (HTTP 429) for {what}: retry after "
                        f"{wait:.0f} s (this command waits at most {self.max_wait:.0f} s, "
                        f"{self.attempts} attempts): {url}",
                        hint="AMD limits VCEK requests per address; a fetched VCEK is cached",
                    ) from exc
                self.sleep(wait)
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise PlatformError(
                    f"cannot fetch {what} from {url}: {reason}",
                    hint="pass --vcek (and --crl), or use --offline with a filled cache",
                ) from exc
            if len(body) > _BODY_LIMIT:
                raise InputError(f"KDS sent more than {_BODY_LIMIT} bytes for {what}: {url}")
            return body
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- the three resources --

    def _cached_or_fetched(
        self, path: Path, url: str, what: str, check: Callable[[bytes, str], object]
    ) -> tuple[bytes, str]:
        """A cached body that still passes ``check``, else a fetched one that does (then cached)."""
        if path.is_file():
            data = path.read_bytes()
            try:
                check(data, f"the cached {what} {path}")
            except InputError:
                path.unlink(missing_ok=True)  # damaged or foreign: never used, fetched again
            else:
                return data, f"{what}: cache {path}"
        if self.offline:
            raise InputError(
                f"--offline: {what} is not in the cache ({path}) and fetching it is forbidden",
                hint=f"run once without --offline to fetch {url}, or pass the file yourself",
            )
        data = self.get(url, what)
        where = f"KDS's answer for {what} ({url})"
        try:
            check(data, where)
        except InputError as exc:
            if exc.message.startswith(where):
                raise
            raise InputError(f"{where} is unusable: {exc.message}") from exc
        self._store(path, data)
        return data, f"{what}: fetched {url}"

    def chain(self, product: Product, kind: str = "vcek") -> tuple[CertificateBundle, str]:
        path = self._cache_path(kind, product.value, "cert_chain.pem")
        what = f"the {product.value} {'ASVK' if kind == 'vlek' else 'ASK'}/ARK chain"
        data, note = self._cached_or_fetched(
            path,
            chain_url(self.url, product, kind),
            what,
            lambda body, where: check_chain(body, product, kind, where),
        )
        return check_chain(data, product, kind, what), note

    def vcek(
        self, product: Product, chip: bytes, tcb: TcbVersion, ask: x509.Certificate
    ) -> tuple[x509.Certificate, str]:
        path = self._cache_path("vcek", product.value, chip.hex(), f"{tcb.to_int():016x}.der")
        what = f"the VCEK of {product.value} chip {chip.hex()[:16]}… at TCB {tcb}"
        data, note = self._cached_or_fetched(
            path,
            vcek_url(self.url, product, chip, tcb),
            what,
            lambda body, where: check_vcek(
                body, product=product, chip=chip, tcb=tcb, ask=ask, where=where
            ),
        )
        return check_vcek(data, product=product, chip=chip, tcb=tcb, ask=ask, where=what), note

    def crl(self, product: Product, kind: str = "vcek") -> tuple[bytes, str]:
        path = self._cache_path(kind, product.value, "crl.der")
        if path.is_file() and not self.offline:
            # A CRL past its nextUpdate is fetched again, at most once an hour (a mirror may lag);
            # offline, or meanwhile, the verifier says it is stale.
            try:
                cached = certs.read_crl(path.read_bytes())
                stale = cached.next_update_utc is None or cached.next_update_utc < datetime.now(UTC)
                if stale and time.time() - path.stat().st_mtime > CRL_REFRESH:
                    path.unlink(missing_ok=True)
            except InputError:
                path.unlink(missing_ok=True)
        what = f"AMD's {product.value} CRL"
        return self._cached_or_fetched(
            path,
            crl_url(self.url, product, kind),
            what,
            lambda body, where: check_crl(body, product, where),
        )

    def for_report(
        self, report: AttestationReport, product: Product, *, with_crl: bool = True
    ) -> Fetched:
        """The VCEK, ASK, ARK (and CRL) that verify ``report``, from the cache or KDS."""
        if report.key_info.signing_key == SigningKey.VLEK:
            raise InputError(
                "the report is signed by a VLEK, which KDS hands only to the cloud provider",
                hint="pass the VLEK (or the provider's bundle) with --vcek",
            )
        report = report.with_layout(turin=product.turin_layout)
        chip = hwid(report, product)
        chain, chain_note = self.chain(product)
        if chain.intermediate is None:  # check_chain refuses such a chain; kept for the types
            raise InputError(f"the {product.value} chain has no ASK")
        vcek, vcek_note = self.vcek(product, chip, report.reported_tcb, chain.intermediate)
        notes = [vcek_note, chain_note]
        crl = None
        if with_crl:
            try:
                crl, crl_note = self.crl(product)
                notes.append(crl_note)
            except InputError as exc:
                if not self.offline:
                    raise
                notes.append(f"AMD's {product.value} CRL: not cached ({exc.message})")
        bundle = CertificateBundle(vcek, chain.intermediate, chain.ark, source="AMD KDS")
        return Fetched(bundle, crl, tuple(notes))
