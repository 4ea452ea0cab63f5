"""Fetching from AMD's KDS, against a real HTTP server on 127.0.0.1 that serves tests/data.

Nothing here reaches the internet: every client is pointed at the loopback server (and proxies
from the environment are switched off). The server records every request, so the tests see the
exact URLs (Turin's 8-byte hwID and fmcSPL included), the retries after a 429 and the cache hits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from keep.cli import main
from toolchain.errors import InputError, PlatformError
from toolchain.snp import certs
from toolchain.snp.kds import KdsClient, chain_url, kds_base_url, vcek_url
from toolchain.snp.report import load_report
from toolchain.snp.tcb import Product, TcbVersion

SNP = Path("vectors") / "snp-reports"
# enarx/steward's v2 Milan report (README: VALID) and the Milan CRL, current on 2023-01-01.
ENARX_AT = "2023-01-01T00:00:00Z"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Kds:
    """What the loopback KDS serves (path+query -> replies, the last one repeats) and saw."""

    url: str
    routes: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)


@pytest.fixture
def kds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kds]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    state = Kds(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            replies = state.routes.get(self.path) or [Reply(404, b"not found")]
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty KDS cache (the session's is shared between tests)."""
    monkeypatch.setenv("KEEPSTACK_CACHE_DIR", str(tmp_path / "own-cache"))
    monkeypatch.delenv("KEEPSTACK_KDS_URL", raising=False)


@pytest.fixture
def vectors(data_dir: Path) -> Path:
    return data_dir / SNP


def _path(url: str, base: str) -> str:
    return url.removeprefix(base)


def _milan_routes(kds: Kds, vectors: Path, data_dir: Path) -> str:
    """Serve enarx's Milan VCEK, AMD's Milan chain and CRL; return the VCEK's path."""
    report, _ = load_report((vectors / "enarx-steward/report.bin").read_bytes())
    path = _path(vcek_url(kds.url, Product.MILAN, report.chip_id, report.reported_tcb), kds.url)
    kds.serve(path, Reply(200, (vectors / "enarx-steward/vcek.der").read_bytes()))
    chain = (data_dir / "amd-certs/milan_ask.pem").read_bytes()
    chain += (data_dir / "amd-certs/milan_ark.pem").read_bytes()
    kds.serve("/vcek/v1/Milan/cert_chain", Reply(200, chain))
    crl = (vectors / "enarx-steward/milan_vcek_crl_2022-05-09.der").read_bytes()
    kds.serve("/vcek/v1/Milan/crl", Reply(200, crl))
    return path


def _enarx_args(vectors: Path, kds: Kds, *extra: str) -> list[str]:
    report = str(vectors / "enarx-steward/report.bin")
    return ["verify-report", report, "--product", "milan", "--at", ENARX_AT, *extra]


def test_urls_are_amds_layout() -> None:
    chip = bytes(range(64))
    tcb = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert vcek_url("https://kdsintf.amd.com", Product.MILAN, chip, tcb) == (
        f"https://kdsintf.amd.com/vcek/v1/Milan/{chip.hex()}"
        "?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    )
    turin = TcbVersion(fmc=1, bootloader=1, tee=1, snp=4, microcode=81)
    assert vcek_url("https://m", Product.TURIN, chip[:8], turin) == (
        "https://m/vcek/v1/Turin/0001020304050607?fmcSPL=01&blSPL=01&teeSPL=01&snpSPL=04&ucodeSPL=81"
    )
    assert chain_url("https://m", Product.GENOA, "vlek") == "https://m/vlek/v1/Genoa/cert_chain"


def test_base_url_option_env_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEPSTACK_KDS_URL", raising=False)
    assert kds_base_url(None) == "https://kdsintf.amd.com"
    monkeypatch.setenv("KEEPSTACK_KDS_URL", "http://mirror.example/kds/")
    assert kds_base_url(None) == "http://mirror.example/kds"
    assert kds_base_url("https://other") == "https://other"
    for bad in ("ftp://x", "kdsintf.amd.com", "https://x/?a=1"):
        with pytest.raises(InputError, match="not an http"):
            kds_base_url(bad)


def test_fetch_verify_then_cache_hit(
    kds: Kds, vectors: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vcek_path = _milan_routes(kds, vectors, data_dir)
    argv = _enarx_args(vectors, kds, "--kds-url", kds.url)
    assert main(argv) == 0, capsys.readouterr()
    captured = capsys.readouterr()
    assert "=> VALID" in captured.out
    assert "✔ crl.signature" in captured.out
    assert "✔ ask.revocation" in captured.out
    assert f"fetched {kds.url}{vcek_path}" in captured.err
    assert sorted(kds.requests) == sorted(
        [vcek_path, "/vcek/v1/Milan/cert_chain", "/vcek/v1/Milan/crl"]
    )
    # the second run is served from the cache (keyed by product, chip ID and TCB): no request
    kds.requests.clear()
    assert main(argv) == 0
    assert kds.requests == []
    assert "VCEK of Milan chip" in capsys.readouterr().err
    # --offline with a filled cache works, and makes no request either
    assert main([*_enarx_args(vectors, kds), "--offline"]) == 0
    assert kds.requests == []


def test_env_var_names_the_mirror(
    kds: Kds, vectors: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KEEPSTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KEEPSTACK_KDS_URL", kds.url)
    _milan_routes(kds, vectors, data_dir)
    assert main(_enarx_args(vectors, kds)) == 0
    assert len(kds.requests) == 3


def test_offline_says_what_is_missing(
    vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KEEPSTACK_CACHE_DIR", str(tmp_path / "empty-cache"))
    # an unroutable base URL: were anything fetched, this would fail differently
    argv = [*_enarx_args(vectors, Kds("")), "--offline", "--kds-url", "http://192.0.2.1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--offline: the Milan ASK/ARK chain is not in the cache" in err
    assert "http://192.0.2.1/vcek/v1/Milan/cert_chain" in err


def test_429_retry_after_is_honoured(
    kds: Kds, vectors: Path, data_dir: Path, tmp_path: Path
) -> None:
    vcek_path = _milan_routes(kds, vectors, data_dir)
    vcek = (vectors / "enarx-steward/vcek.der").read_bytes()
    kds.serve(
        vcek_path,
        Reply(429, b"slow down", {"Retry-After": "2"}),
        Reply(429, b"slow down", {"Retry-After": "1"}),
        Reply(200, vcek),
    )
    waits: list[float] = []
    client = KdsClient(kds.url, cache=tmp_path, sleep=waits.append, max_wait=5, attempts=3)
    report, _ = load_report((vectors / "enarx-steward/report.bin").read_bytes())
    fetched = client.for_report(report, Product.MILAN)
    assert waits == [2.0, 1.0]
    assert kds.requests.count(vcek_path) == 3
    assert fetched.bundle.vek is not None
    assert certs.der_sha256(fetched.bundle.vek) == certs.der_sha256(certs.load_certificate(vcek))


def test_429_beyond_the_bound_fails_without_waiting(
    kds: Kds, vectors: Path, data_dir: Path, tmp_path: Path
) -> None:
    vcek_path = _milan_routes(kds, vectors, data_dir)
    kds.serve(vcek_path, Reply(429, b"", {"Retry-After": "3600"}))
    waits: list[float] = []
    client = KdsClient(kds.url, cache=tmp_path, sleep=waits.append, max_wait=30)
    report, _ = load_report((vectors / "enarx-steward/report.bin").read_bytes())
    with pytest.raises(PlatformError, match=r"HTTP 429.*retry after 3600 s"):
        client.for_report(report, Product.MILAN)
    assert waits == []
    # attempts are bounded too: a server that always says "1 s" is given up on
    kds.serve(vcek_path, Reply(429, b"", {"Retry-After": "1"}))
    with pytest.raises(PlatformError, match="3 attempts"):
        client.for_report(report, Product.MILAN)
    assert waits == [1.0, 1.0]


def test_404_and_garbage_fail_and_nothing_is_cached(
    kds: Kds, vectors: Path, data_dir: Path, tmp_path: Path
) -> None:
    vcek_path = _milan_routes(kds, vectors, data_dir)
    report, _ = load_report((vectors / "enarx-steward/report.bin").read_bytes())
    client = KdsClient(kds.url, cache=tmp_path)
    kds.serve(vcek_path, Reply(404, b"no such chip"))
    with pytest.raises(PlatformError, match="HTTP 404"):
        client.for_report(report, Product.MILAN)
    kds.serve(vcek_path, Reply(200, b"\x00garbage\xff" * 10))
    with pytest.raises(
        InputError, match=r"KDS's answer for the VCEK .* is unusable: truncated DER"
    ):
        client.for_report(report, Product.MILAN)
    # a real certificate, but another chip's VCEK: refused, not cached
    kds.serve(vcek_path, Reply(200, (vectors / "trustee/test-vcek.der").read_bytes()))
    with pytest.raises(InputError, match=r"is not the VCEK asked for: .*hwID"):
        client.for_report(report, Product.MILAN)
    assert not list(tmp_path.glob("vcek/Milan/*/*.der"))


def test_a_chain_that_is_not_amds_is_refused(
    kds: Kds, vectors: Path, data_dir: Path, tmp_path: Path
) -> None:
    _milan_routes(kds, vectors, data_dir)
    genoa = (data_dir / "amd-certs/genoa_ask.pem").read_bytes()
    genoa += (data_dir / "amd-certs/genoa_ark.pem").read_bytes()
    kds.serve("/vcek/v1/Milan/cert_chain", Reply(200, genoa))
    report, _ = load_report((vectors / "enarx-steward/report.bin").read_bytes())
    with pytest.raises(InputError, match="not AMD's pinned Milan ARK"):
        KdsClient(kds.url, cache=tmp_path).for_report(report, Product.MILAN)


def test_a_damaged_cache_entry_is_fetched_again(
    kds: Kds, vectors: Path, data_dir: Path, tmp_path: Path
) -> None:
    vcek_path = _milan_routes(kds, vectors, data_dir)
    report, _ = load_report((vectors / "enarx-steward/report.bin").read_bytes())
    client = KdsClient(kds.url, cache=tmp_path)
    client.for_report(report, Product.MILAN)
    (cached,) = tmp_path.glob("vcek/Milan/*/*.der")
    assert cached.parent.name == report.chip_id.hex()
    assert cached.name == f"{report.reported_tcb.to_int():016x}.der"
    # someone swaps in another chip's VCEK: it is never used, and is fetched again
    cached.write_bytes((vectors / "trustee/test-vcek.der").read_bytes())
    kds.requests.clear()
    fetched = client.for_report(report, Product.MILAN)
    assert kds.requests == [vcek_path]
    assert fetched.bundle.vek is not None
    assert fetched.bundle.vek == certs.load_certificate(cached.read_bytes())


@pytest.mark.parametrize("generation", ["genoa", "turin"])
def test_v3_reports_name_their_product_and_turin_uses_8_byte_hwid(
    kds: Kds,
    vectors: Path,
    data_dir: Path,
    tmp_path: Path,
    generation: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = vectors / "microsoft-tee-av"
    report_bytes = (folder / f"{generation}_attestation_report.bin").read_bytes()
    report, _ = load_report(report_bytes)
    product = Product.from_name(generation)
    chip = report.chip_id[:8] if product is Product.TURIN else report.chip_id
    expected = _path(
        vcek_url(
            kds.url, product, chip, report.with_layout(turin=product.turin_layout).reported_tcb
        ),
        kds.url,
    )
    if product is Product.TURIN:
        assert expected.startswith(f"/vcek/v1/Turin/{chip.hex()}?fmcSPL=01&blSPL=01&")
    kds.serve(expected, Reply(200, (folder / f"{generation}_vcek.pem").read_bytes()))
    chain = (data_dir / f"amd-certs/{generation}_ask.pem").read_bytes()
    chain += (data_dir / f"amd-certs/{generation}_ark.pem").read_bytes()
    kds.serve(f"/vcek/v1/{product.value}/cert_chain", Reply(200, chain))
    # (no CRL is served: its fetch fails and says so)
    path = str(folder / f"{generation}_attestation_report.bin")
    assert main(["verify-report", path, "--kds-url", kds.url]) == 3
    assert f"HTTP 404 (Not Found) for AMD's {product.value} CRL" in capsys.readouterr().err
    assert expected in kds.requests
    # with a CRL file given, nothing more is fetched, and the VCEK from the cache verifies
    kds.requests.clear()
    crl = str(vectors / "enarx-steward/genoa_vcek_crl_2022-10-31.der")
    main(["verify-report", path, "--kds-url", kds.url, "--crl", crl])
    out = capsys.readouterr().out
    assert kds.requests == []
    for check in (
        "report.signature",
        "vcek.signed-by-ask",
        "report.chip-id",
        "report.reported-tcb",
    ):
        assert f"✔ {check}" in out, out


def test_reports_kds_cannot_answer_for(vectors: Path, tmp_path: Path) -> None:
    client = KdsClient("http://192.0.2.1", cache=tmp_path, offline=True)
    vlek, _ = load_report((vectors / "trustee/test-vlek-report.bin").read_bytes())
    with pytest.raises(InputError, match="signed by a VLEK"):
        client.for_report(vlek, Product.MILAN)
    go, _ = load_report((vectors / "go-sev-guest/attestation.bin").read_bytes())
    masked = go.__class__.parse(go.to_bytes()[:0x1A0] + bytes(64) + go.to_bytes()[0x1E0:])
    with pytest.raises(InputError, match="CHIP_ID is zero"):
        client.for_report(masked, Product.MILAN)


def test_a_v2_report_needs_product(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = str(vectors / "enarx-steward/report.bin")
    assert main(["verify-report", report, "--offline"]) == 2
    assert "pass --product" in capsys.readouterr().err
