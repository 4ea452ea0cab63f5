"""The hypercall server without KVM: every call, every check, and hostile requests (fuzzed)."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.vmm import hypercalls as hc
from runtime.vmm.errors import GuestError
from runtime.vmm.memory import GuestMemory, RamRange, ram_ranges
from toolchain.errors import EvidenceError, InputError, PlatformError

PAGE, BUFFER, SIZE = 0x200000, 0x201000, 0x10000
LAYOUT = hc.HypercallLayout(PAGE, BUFFER, SIZE)
U64 = (1 << 64) - 1


@pytest.fixture(scope="module")
def memory() -> Iterator[GuestMemory]:
    with GuestMemory(ram_ranges(0x400000)) as ram:
        yield ram


def _server(memory: GuestMemory, **options: object) -> tuple[hc.HypercallServer, io.BytesIO]:
    out = io.BytesIO()
    options.setdefault("stderr", io.BytesIO())
    options.setdefault("require_attestation", False)
    return hc.HypercallServer(memory, LAYOUT, stdout=out, **options), out  # type: ignore[arg-type]


def _request(
    memory: GuestMemory,
    call: int,
    *args: int,
    magic: int = hc.HC_MAGIC,
    version: int = hc.ABI_VERSION,
) -> None:
    padded = (list(args) + [0] * 6)[:6]
    memory.write(PAGE, struct.pack("<IHHIi6Q2Q", magic, version, 0, call, 0, *padded, 0, 0))


def _reply(memory: GuestMemory) -> tuple[int, int, int]:
    status = struct.unpack("<i", memory.read(PAGE + 0x0C, 4))[0]
    ret0, ret1 = struct.unpack("<QQ", memory.read(PAGE + 0x40, 16))
    return status, ret0, ret1


def test_console_write(memory: GuestMemory) -> None:
    server, out = _server(memory)
    memory.write(BUFFER + 0x100, b"hello")
    _request(memory, hc.CONSOLE_WRITE, 1, 0x100, 5)
    assert server.serve() is None
    assert out.getvalue() == b"hello"
    assert _reply(memory) == (0, 5, 0)
    _request(memory, hc.CONSOLE_WRITE, 1, SIZE, 0)  # empty write at the very end: fine
    assert server.serve() is None


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ((3, 0, 1), "fd"),
        ((1, SIZE, 1), "offset"),
        ((1, SIZE + 1, 0), "offset"),
        ((1, 0, SIZE + 1), "length"),
        ((1, SIZE - 1, 2), "length"),
        ((1, U64, U64), "offset"),
        ((1, 1, U64), "length"),
    ],
)
def test_console_write_bounds(memory: GuestMemory, args: tuple[int, ...], argument: str) -> None:
    server, out = _server(memory)
    _request(memory, hc.CONSOLE_WRITE, *args)
    with pytest.raises(GuestError) as info:
        server.serve()
    assert (info.value.call, info.value.argument) == ("CONSOLE_WRITE", argument)
    assert out.getvalue() == b""


def test_output_limit(memory: GuestMemory) -> None:
    server, out = _server(memory, output_limit=10)
    _request(memory, hc.CONSOLE_WRITE, 1, 0, 6)
    server.serve()
    _request(memory, hc.CONSOLE_WRITE, 2, 0, 5)
    with pytest.raises(GuestError, match="limit of 10 bytes"):
        server.serve()
    assert len(out.getvalue()) == 6


def test_closed_stdout_ends_the_keep(memory: GuestMemory) -> None:
    out = io.BytesIO()
    out.close()
    server = hc.HypercallServer(memory, LAYOUT, stdout=out, stderr=out, require_attestation=False)
    _request(memory, hc.CONSOLE_WRITE, 1, 0, 1)
    with pytest.raises(GuestError, match="cannot write"):
        server.serve()


def test_stdin_read(memory: GuestMemory) -> None:
    server, _ = _server(memory, stdin=io.BytesIO(b"abcdef"))
    _request(memory, hc.STDIN_READ, 0x10, 4)
    server.serve()
    assert _reply(memory)[1] == 4
    assert memory.read(BUFFER + 0x10, 4) == b"abcd"
    server.serve()
    assert _reply(memory)[1] == 2
    server.serve()
    assert _reply(memory)[1] == 0  # end of file
    no_stdin, _ = _server(memory)
    no_stdin.serve()
    assert _reply(memory)[1] == 0
    _request(memory, hc.STDIN_READ, SIZE - 1, 2)
    with pytest.raises(GuestError, match=r"STDIN_READ\(max length\)"):
        no_stdin.serve()


def test_exit_status(memory: GuestMemory) -> None:
    server, _ = _server(memory)
    _request(memory, hc.EXIT, 3)
    assert server.serve() == 3
    _request(memory, hc.EXIT, U64)
    assert server.serve() == 0xFFFFFFFF


def test_exit_before_attestation_stops_the_keep(memory: GuestMemory) -> None:
    server, _ = _server(memory, require_attestation=True)
    _request(memory, hc.EXIT, 0)
    with pytest.raises(GuestError, match="exit status 0 asked for before the keep was attested"):
        server.serve()


def test_launch_args(memory: GuestMemory) -> None:
    server, _ = _server(memory, args=["a", "bc"], env=[("K", "V=1")])
    blob = struct.pack("<II", 2, 1) + b"a\0bc\0K=V=1\0"
    _request(memory, hc.LAUNCH_ARGS, 0x20, 0x100)
    server.serve()
    assert _reply(memory) == (0, len(blob), 0)
    assert memory.read(BUFFER + 0x20, len(blob)) == blob
    _request(memory, hc.LAUNCH_ARGS, 0x20, len(blob) - 1)
    server.serve()
    assert _reply(memory) == (-hc.E2BIG, len(blob), 0)
    with pytest.raises(InputError, match="NUL"):
        _server(memory, args=["a\0b"])


def test_report_data_and_attest_version_2(memory: GuestMemory) -> None:
    nonce = bytes(range(64))
    requests: list[tuple[bytes, int]] = []
    verdicts: list[bytes] = []

    def firmware(data: bytes, vmpl: int) -> bytes:
        requests.append((data, vmpl))
        return b"R" * hc.REPORT_SIZE

    server, _ = _server(
        memory,
        report_data=nonce,
        request_report=firmware,
        verify_report=verdicts.append,
        require_attestation=True,
        abi_version=2,
    )
    _request(memory, hc.REPORT_DATA, 0x40, version=2)
    server.serve()
    assert memory.read(BUFFER + 0x40, 64) == nonce
    _request(memory, hc.CONSOLE_WRITE, 1, 0, 1, version=2)
    with pytest.raises(GuestError, match="before the keep has been attested"):
        server.serve()
    _request(memory, hc.ATTEST, 0x40, 1, 0x1000, version=2)
    server.serve()
    assert requests == [(nonce, 1)]
    assert verdicts == [b"R" * hc.REPORT_SIZE]
    assert _reply(memory) == (0, hc.REPORT_SIZE, 0)
    assert memory.read(BUFFER + 0x1000, hc.REPORT_SIZE) == b"R" * hc.REPORT_SIZE
    assert server.attested


def test_attest_refusals_version_2(memory: GuestMemory) -> None:
    def firmware(_data: bytes, _vmpl: int) -> bytes:
        return bytes(hc.REPORT_SIZE)

    refusing, _ = _server(
        memory, request_report=firmware, verify_report=lambda _r: False, abi_version=2
    )
    _request(memory, hc.ATTEST, 0, 0, 0x100, version=2)
    with pytest.raises(EvidenceError, match="refused"):
        refusing.serve()
    no_verifier, _ = _server(memory, request_report=firmware, abi_version=2)
    with pytest.raises(EvidenceError, match="no verifier"):
        no_verifier.serve()
    no_firmware, _ = _server(memory, verify_report=bool, abi_version=2)
    with pytest.raises(GuestError, match="no firmware"):
        no_firmware.serve()
    short, _ = _server(
        memory, request_report=lambda _d, _v: b"x", verify_report=bool, abi_version=2
    )
    with pytest.raises(PlatformError, match="1-byte report"):
        short.serve()
    _request(memory, hc.ATTEST, 0, 4, 0x100, version=2)
    with pytest.raises(GuestError, match=r"ATTEST\(VMPL\)"):
        refusing.serve()


def test_attest_version_3_verifies_the_microkernels_own_report(memory: GuestMemory) -> None:
    """Version 4: the report came over the guest channel; the VMM asks the firmware nothing."""
    verdicts: list[bytes] = []

    def firmware(_data: bytes, _vmpl: int) -> bytes:
        raise AssertionError("a version-4 ATTEST must not ask the firmware")

    server, _ = _server(
        memory, request_report=firmware, verify_report=verdicts.append, require_attestation=True
    )
    memory.write(BUFFER + 0x100, b"G" * hc.REPORT_SIZE)
    _request(memory, hc.ATTEST, 0, 0, 0x100)
    server.serve()
    assert verdicts == [b"G" * hc.REPORT_SIZE]
    assert server.attested
    assert server.stats.report == b"G" * hc.REPORT_SIZE
    refusing, _ = _server(memory, verify_report=lambda _r: False, require_attestation=True)
    with pytest.raises(EvidenceError, match="refused"):
        refusing.serve()
    assert not refusing.attested


def test_exit_before_attestation_names_the_microkernels_reason(memory: GuestMemory) -> None:
    server, _ = _server(memory, require_attestation=True)
    _request(memory, hc.EXIT, 125, 10, 2, 1)
    with pytest.raises(GuestError, match=r"EXIT: .*MSG_SEQNO .*expected 0x2, found 0x1"):
        server.serve()
    _request(memory, hc.EXIT, 125, 99, 0, 0)
    with pytest.raises(GuestError, match="reason 99, unknown"):
        server.serve()
    _request(memory, hc.EXIT, 7)
    with pytest.raises(GuestError, match="exit status 7 asked for before"):
        server.serve()


def test_clock(memory: GuestMemory) -> None:
    server, _ = _server(memory)
    _request(memory, hc.CLOCK, 0)
    server.serve()
    assert _reply(memory)[1] > 1_700_000_000 * 10**9
    _request(memory, hc.CLOCK, 2)
    with pytest.raises(GuestError, match=r"CLOCK\(clock id\)"):
        server.serve()


def test_fault(memory: GuestMemory) -> None:
    server, _ = _server(memory)
    _request(memory, hc.FAULT, 13, 0, 0, 0xFFFF8000, 0x08, 0x1000)
    with pytest.raises(GuestError, match=r"#GP general protection.*ring 0"):
        server.serve()


def test_header_checks(memory: GuestMemory) -> None:
    server, _ = _server(memory)
    _request(memory, hc.EXIT, 0, magic=0)
    with pytest.raises(GuestError, match="bad magic"):
        server.serve()
    memory.write(PAGE, struct.pack("<IH", hc.HC_MAGIC, 1))  # another version than the plan's
    expected = f"ABI version 1, this keep's plan says version {hc.ABI_VERSION}"
    with pytest.raises(GuestError, match=expected):
        server.serve()
    _request(memory, 0)
    with pytest.raises(GuestError, match="unknown call number 0"):
        server.serve()


def test_memory_is_bounds_checked() -> None:
    with GuestMemory([RamRange(0, 0x2000), RamRange(0x3000, 0x1000)]) as ram:
        ram.write(0x1FFF, b"x")
        assert ram.read(0x1FFF, 1) == b"x"
        assert ram.read(0x4000, 0) == b""
        for gpa, length in ((0x1FFF, 2), (0x2000, 1), (-1, 1), (0, -1), (0x4000, 1), (U64, 1)):
            with pytest.raises(InputError, match=r"outside guest RAM|negative"):
                ram.read(gpa, length)
        assert ram.contains(0x3000, 0x1000)
        assert not ram.contains(0x2FFF, 2)
    with pytest.raises(InputError, match="closed"):
        ram.read(0, 1)
    with pytest.raises(InputError, match="overlaps"):
        GuestMemory([RamRange(0, 0x2000), RamRange(0x1000, 0x1000)])
    with pytest.raises(InputError, match="page aligned"):
        GuestMemory([RamRange(1, 0x1000)])
    assert ram_ranges(0x10000, ((0x4000, 0x1000),)) == [
        RamRange(0, 0x4000),
        RamRange(0x5000, 0xB000),
    ]


# ---- fuzz: whatever a guest writes into the page, only a clean keep error comes out ------------

_NUMBERS = st.one_of(
    st.integers(0, 0x20),
    st.integers(SIZE - 0x500, SIZE + 0x10),
    st.sampled_from([0, 1, 2, 3, 4, 64, hc.REPORT_SIZE, (1 << 63), U64, U64 - 63]),
    st.integers(0, U64),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    magic=st.sampled_from([hc.HC_MAGIC, hc.HC_MAGIC, hc.HC_MAGIC, 0, 0xFFFFFFFF]),
    version=st.sampled_from([hc.ABI_VERSION] * 3 + [1, 0, 0xFFFF]),
    call=st.one_of(st.integers(1, 10), st.integers(0, 0xFFFFFFFF)),
    args=st.lists(_NUMBERS, min_size=6, max_size=6),
    attested=st.booleans(),
    accept=st.booleans(),
    stdin=st.binary(max_size=64),
)
def test_fuzz_hostile_requests(
    memory: GuestMemory,
    magic: int,
    version: int,
    call: int,
    args: list[int],
    attested: bool,
    accept: bool,
    stdin: bytes,
) -> None:
    server, out = _server(
        memory,
        stdin=io.BytesIO(stdin),
        args=["app"],
        require_attestation=not attested,
        request_report=lambda _d, _v: bytes(hc.REPORT_SIZE),
        verify_report=lambda _r: accept,
        output_limit=0x8000,
        rw=(True,),  # so RESULT is served, not refused outright
    )
    memory.write(PAGE, struct.pack("<IHHIi6Q2Q", magic, version, 0, call, 0, *args, 0, 0))
    result: int | None = None
    stopped: GuestError | None = None
    refused = False
    try:
        result = server.serve()
    except GuestError as exc:
        stopped = exc
    except EvidenceError:
        refused = True
    if stopped is not None:
        assert stopped.call is not None
        assert stopped.explain().startswith("keep stopped: ")
        return
    if refused:
        assert call == hc.ATTEST
        return
    assert result is None or (call == hc.EXIT and 0 <= result <= 0xFFFFFFFF)
    assert len(out.getvalue()) <= 0x8000
