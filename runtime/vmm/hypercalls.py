"""The VMM side of the keep hypercall ABI, every version of ``toolchain.measure.abi.ABI_VERSIONS``.

The ABI (call numbers, page layout, magics, which version has which call) is declared once in
``toolchain.measure.abi`` (``runtime/guest/ukernel/ABI.md``); this module serves it.

``HypercallServer.serve()`` is the doorbell handler: it reads the request from the hypercall
page, checks every guest-supplied number before it touches anything, does the call and writes the
reply. Payloads live in the 64 KiB data buffer and are named by offset and length, never by
pointer. A request that fails a check raises ``GuestError`` naming the call and the argument: the
keep ends, the VMM carries on.

Fail closed on attestation: with ``require_attestation`` (the default) the guest gets nothing from
outside (stdin, arguments, environment, console) until an ATTEST call has produced a report that
the runner's callback accepted, and an EXIT before that ends the keep as stopped, never with the
status it asked for. (The runner does not rely on this: it checks attestation itself.)

RESULT (version 3) takes the ``:rw`` trees back at the application's exit, in order, chunk by
chunk; the blob is refused (``GuestError``, the keep ends, nothing is kept) when it would pass
``RESULT_MAX_BYTES``, when a chunk is out of place, when no tree was preopened ``:rw``, or
when the whole does not pass ``toolchain.measure.trees.accept_result_blob`` (wrong magic, a
tree not marked ``:rw``, a malformed encoding). ``HypercallStats.result`` holds it once whole.

Version 4 changes ATTEST only: the microkernel obtained the report itself as an SNP guest message
(``runtime.vmm.ghcb``) and checked it; ATTEST hands it, at the report offset, to the runner's
verifier, and asks the firmware for nothing. Its EXIT before attestation names why it stopped.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from runtime.vmm.errors import GuestError
from runtime.vmm.ghcb import RUNTIME_REASONS, stop_message
from runtime.vmm.memory import GuestMemory
from toolchain.errors import EvidenceError, InputError, PlatformError
from toolchain.measure.abi import (
    ABI_VERSION,
    ABI_VERSIONS,
    ATTEST_FAILED_EXIT_STATUS,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    GUEST_MESSAGE_VERSION,
    HC_MAGIC,
    HC_PAGE,
    OFF_RET,
    OFF_STATUS,
    REPORT_DATA_SIZE,
    REPORT_SIZE,
    RESULT_MAX_BYTES,
    Hypercall,
    HypercallLayout,
    calls_of,
    since,
)

_HEADER = HC_PAGE.struct  # magic, version, reserved, call, status, args[6], ret[2]

# The call numbers by name (the table is ``Hypercall``).
CONSOLE_WRITE, STDIN_READ, EXIT = Hypercall.CONSOLE_WRITE, Hypercall.STDIN_READ, Hypercall.EXIT
FAULT, LAUNCH_ARGS, REPORT_DATA = Hypercall.FAULT, Hypercall.LAUNCH_ARGS, Hypercall.REPORT_DATA
ATTEST, CLOCK, TREES, RESULT = Hypercall.ATTEST, Hypercall.CLOCK, Hypercall.TREES, Hypercall.RESULT
CALL_NAMES = {call: call.name for call in Hypercall}

E2BIG = 7
#: Default cap on what one keep may write to stdout + stderr (flood protection).
DEFAULT_OUTPUT_LIMIT = 64 * 1024 * 1024

#: Called with REPORT_DATA and VMPL; returns the signed ATTESTATION_REPORT (the firmware).
ReportRequester = Callable[[bytes, int], bytes]
#: The runner's verdict on a report: return (or True) to accept; False or raising to refuse.
ReportVerifier = Callable[[bytes], "bool | None"]

_EXCEPTION_NAMES = {
    0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint", 4: "#OF overflow",
    5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM device not available",
    8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
    12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
    16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
    19: "#XM SIMD error", 20: "#VE virtualization", 21: "#CP control protection",
    29: "#VC VMM communication",
}  # fmt: skip


@dataclass
class HypercallStats:
    calls: dict[str, int] = field(default_factory=dict)
    output_bytes: int = 0
    first_output_at: float | None = None  # time.perf_counter() of the first console write
    attested_at: float | None = None
    report: bytes | None = None
    #: The ``:rw`` trees the keep handed back (RESULT), checked, once complete.
    result: bytes | None = None


class HypercallServer:
    """Serves one keep's hypercalls. Create one per keep."""

    def __init__(
        self,
        memory: GuestMemory,
        layout: HypercallLayout,
        *,
        stdout: BinaryIO,
        stderr: BinaryIO,
        stdin: BinaryIO | None = None,
        args: Sequence[str] = (),
        env: Sequence[tuple[str, str]] = (),
        report_data: bytes = bytes(REPORT_DATA_SIZE),
        request_report: ReportRequester | None = None,
        verify_report: ReportVerifier | None = None,
        require_attestation: bool = True,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        abi_version: int = ABI_VERSION,
        trees: bytes = b"",
        rw: Sequence[bool] = (),
    ) -> None:
        if len(report_data) != REPORT_DATA_SIZE:
            raise InputError(f"REPORT_DATA must be {REPORT_DATA_SIZE} bytes")
        self.memory = memory
        self.layout = layout
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.launch_args = _launch_args_blob(args, env)
        self.report_data = bytes(report_data)
        self.request_report = request_report
        self.verify_report = verify_report
        self.attested = not require_attestation
        self.output_limit = output_limit
        if abi_version not in ABI_VERSIONS:
            raise InputError(f"hypercall ABI {abi_version} is not one this VMM serves")
        self.calls = calls_of(abi_version)
        if trees and TREES not in self.calls:
            raise InputError(
                f"preopened trees need a keep of hypercall ABI {since(TREES)} or later"
            )
        if any(rw) and RESULT not in self.calls:
            raise InputError(f"--dir ...:rw needs a keep of hypercall ABI {since(RESULT)} or later")
        self.abi_version = abi_version
        self.trees = bytes(trees)
        self.rw = tuple(rw)  # per tree in --dir order: whether it may come back
        self._result = bytearray()
        self._result_total: int | None = None
        self.stats = HypercallStats()
        self._handlers: dict[int, Callable[[tuple[int, ...]], tuple[int, int, int] | int]] = {
            CONSOLE_WRITE: self._console_write,
            STDIN_READ: self._stdin_read,
            FAULT: self._fault,
            LAUNCH_ARGS: self._launch_args,
            REPORT_DATA: self._report_data,
            ATTEST: self._attest,
            CLOCK: self._clock,
            TREES: self._trees,
            RESULT: self._result_write,
        }
        self._call = "doorbell"

    # --- the doorbell -----------------------------------------------------------------------------
    def serve(self) -> int | None:
        """Handle one request. Returns the exit status after EXIT, else None (resume the guest)."""
        self._call = "doorbell"
        page = self.memory.read(self.layout.page, _HEADER.size)
        magic, version, _reserved, call, _status, *rest = _HEADER.unpack(page)
        args = tuple(rest[:6])
        if magic != HC_MAGIC:
            raise GuestError(
                f"bad magic {magic:#010x} (expected {HC_MAGIC:#010x})",
                call="doorbell",
                argument="magic",
            )
        if version != self.abi_version:
            raise GuestError(
                f"ABI version {version}, this keep's plan says version {self.abi_version}",
                call="doorbell",
                argument="version",
            )
        name = CALL_NAMES.get(call)
        if name is None or call not in self.calls:
            raise GuestError(f"unknown call number {call}", call="doorbell", argument="call")
        self._call = name
        self.stats.calls[name] = self.stats.calls.get(name, 0) + 1
        if call == EXIT:
            status = int(args[0]) & 0xFFFFFFFF
            stopped = status == ATTEST_FAILED_EXIT_STATUS
            version_4 = self.abi_version >= GUEST_MESSAGE_VERSION
            if stopped and version_4 and args[1] in RUNTIME_REASONS:
                # The microkernel stopped the keep (a #VC it does not handle, a host answer
                # out of protocol): say why, attested or not; ring 3's EXIT has reason 0.
                raise GuestError(stop_message(*args[1:5]), call=name)
            if self._result_total is not None and self.stats.result is None:
                raise GuestError(
                    f"exit with {len(self._result)} of the result's {self._result_total} bytes",
                    call="RESULT",
                    argument="total",
                )
            if not self.attested:
                # A keep that never proved what it is has no exit status worth passing on.
                if stopped and version_4:
                    raise GuestError(stop_message(*args[1:5]), call=name)
                raise GuestError(
                    f"exit status {status} asked for before the keep was attested",
                    call=name,
                )
            return status
        if not self.attested and call in (CONSOLE_WRITE, STDIN_READ, LAUNCH_ARGS, TREES, RESULT):
            raise GuestError(
                "refused before the keep has been attested (the runner releases nothing "
                "to a keep it has not verified)",
                call=name,
            )
        result = self._handlers[call](args)
        status, ret0, ret1 = (0, result, 0) if isinstance(result, int) else result
        self.memory.write(self.layout.page + OFF_STATUS, struct.pack("<i", status))
        self.memory.write(self.layout.page + OFF_RET, struct.pack("<QQ", ret0, ret1))
        return None

    # --- checks -----------------------------------------------------------------------------------
    def _fail(self, argument: str, message: str) -> GuestError:
        return GuestError(message, call=self._call, argument=argument)

    def _span(self, offset: int, length: int, *, offset_name: str, length_name: str) -> int:
        """Check ``[offset, offset + length)`` lies in the data buffer; returns its GPA."""
        size = self.layout.buffer_size
        if offset > size or (offset == size and length):
            raise self._fail(
                offset_name, f"offset {offset:#x} is outside the {size:#x}-byte buffer"
            )
        if length > size - offset:
            raise self._fail(
                length_name,
                f"length {length:#x} at offset {offset:#x} runs past the {size:#x}-byte buffer",
            )
        return self.layout.buffer + offset

    # --- calls ------------------------------------------------------------------------------------
    def _console_write(self, args: tuple[int, ...]) -> int:
        fd, offset, length = args[0], args[1], args[2]
        if fd not in (1, 2):
            raise self._fail("fd", f"fd {fd} is neither 1 (stdout) nor 2 (stderr)")
        gpa = self._span(offset, length, offset_name="offset", length_name="length")
        if self.stats.output_bytes + length > self.output_limit:
            raise self._fail(
                "length",
                f"console output would exceed this keep's limit of {self.output_limit} bytes",
            )
        data = self.memory.read(gpa, length)
        stream = self.stdout if fd == 1 else self.stderr
        if self.stats.first_output_at is None and length:
            self.stats.first_output_at = time.perf_counter()
        self.stats.output_bytes += length
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError) as exc:
            # The reader went away (closed pipe): the keep cannot report anything any more.
            raise self._fail("fd", f"cannot write to fd {fd}: {exc}") from exc
        return length

    def _stdin_read(self, args: tuple[int, ...]) -> int:
        offset, max_length = args[0], args[1]
        gpa = self._span(offset, max_length, offset_name="offset", length_name="max length")
        if self.stdin is None or max_length == 0:
            return 0
        reader = getattr(self.stdin, "read1", self.stdin.read)
        try:
            data = reader(max_length)
        except OSError as exc:
            raise self._fail("fd", f"cannot read stdin: {exc}") from exc
        data = data[:max_length]
        self.memory.write(gpa, data)
        return len(data)

    def _fault(self, args: tuple[int, ...]) -> int:
        vector, error_code, cr2, rip, cs, rsp = args
        what = _EXCEPTION_NAMES.get(vector, f"vector {vector}")
        ring = cs & 3
        raise GuestError(
            f"the guest faulted: {what} (error code {error_code:#x}) at RIP {rip:#x} "
            f"in ring {ring}, CR2 {cr2:#x}, RSP {rsp:#x}",
            call="FAULT",
            hint="a bad pointer or a bug in the application or runtime" if ring == 3 else None,
        )

    def _launch_args(self, args: tuple[int, ...]) -> tuple[int, int, int]:
        offset, max_length = args[0], args[1]
        gpa = self._span(offset, max_length, offset_name="offset", length_name="max length")
        blob = self.launch_args
        if len(blob) > max_length:
            return -E2BIG, len(blob), 0
        self.memory.write(gpa, blob)
        return 0, len(blob), 0

    def _report_data(self, args: tuple[int, ...]) -> int:
        gpa = self._span(args[0], REPORT_DATA_SIZE, offset_name="offset", length_name="offset + 64")
        self.memory.write(gpa, self.report_data)
        return REPORT_DATA_SIZE

    def _attest(self, args: tuple[int, ...]) -> int:
        data_offset, vmpl, report_offset = args[0], args[1], args[2]
        data_gpa = self._span(
            data_offset,
            REPORT_DATA_SIZE,
            offset_name="report data offset",
            length_name="offset + 64",
        )
        if vmpl > 3:
            raise self._fail("VMPL", f"VMPL {vmpl} does not exist (0-3)")
        report_gpa = self._span(
            report_offset, REPORT_SIZE, offset_name="report offset", length_name="offset + 0x4A0"
        )
        if self.abi_version >= GUEST_MESSAGE_VERSION:
            # The microkernel's own report, from the firmware over the guest channel.
            report = self.memory.read(report_gpa, REPORT_SIZE)
        else:
            report = self._request_report(self.memory.read(data_gpa, REPORT_DATA_SIZE), vmpl)
        self.stats.report = report
        # The runner decides; a keep it does not accept is stopped here, before ring 3.
        if self.verify_report is None:
            raise EvidenceError("no verifier was given for the keep's report: refusing to run it")
        verdict = self.verify_report(report)
        if verdict is False:
            raise EvidenceError("the runner refused the keep's attestation report")
        self.attested = True
        self.stats.attested_at = time.perf_counter()
        self.memory.write(report_gpa, report)
        return len(report)

    def _request_report(self, report_data: bytes, vmpl: int) -> bytes:
        """Versions 1 and 2: the VMM asks the firmware for the keep's report."""
        if self.request_report is None:
            raise self._fail("", "this keep has no firmware to ask for a report")
        report = self.request_report(report_data, vmpl)
        if len(report) != REPORT_SIZE:
            raise PlatformError(f"the firmware returned a {len(report)}-byte report")
        return report

    def _trees(self, args: tuple[int, ...]) -> tuple[int, int, int]:
        """Copy ``[position, position + max length)`` of the trees' blob; ret1 = its length."""
        offset, max_length, position = args[0], args[1], args[2]
        gpa = self._span(offset, max_length, offset_name="offset", length_name="max length")
        total = len(self.trees)
        if position > total:
            raise self._fail("position", f"position {position} is past the {total}-byte trees")
        data = self.trees[position : position + max_length]
        self.memory.write(gpa, data)
        return 0, len(data), total

    def _result_write(self, args: tuple[int, ...]) -> int:
        """Append ``[offset, offset + length)`` of the buffer at ``position`` of the result."""
        from toolchain.measure.trees import accept_result_blob

        offset, length, position, total = args[0], args[1], args[2], args[3]
        gpa = self._span(offset, length, offset_name="offset", length_name="length")
        if not any(self.rw):
            raise self._fail("", "no tree was preopened with :rw: there is nothing to take back")
        if self.stats.result is not None:
            raise self._fail("", "the result was already handed back (one per run)")
        if total > RESULT_MAX_BYTES:
            raise self._fail(
                "total", f"{total} bytes, over the limit of {RESULT_MAX_BYTES} (RESULT_MAX_BYTES)"
            )
        if self._result_total not in (None, total):
            raise self._fail("total", f"{total}, earlier chunks said {self._result_total}")
        if position != len(self._result) or length > total - position:
            raise self._fail(
                "position",
                f"{length} bytes at {position}: expected the next chunk at {len(self._result)} "
                f"of {total}",
            )
        self._result_total = total
        self._result += self.memory.read(gpa, length)
        if len(self._result) == total:
            try:
                accept_result_blob(bytes(self._result), self.rw)
            except EvidenceError as exc:
                raise self._fail("blob", exc.message) from None
            self.stats.result = bytes(self._result)
        return length

    def _clock(self, args: tuple[int, ...]) -> int:
        clock_id = args[0]
        if clock_id == CLOCK_REALTIME:
            return time.time_ns()
        if clock_id == CLOCK_MONOTONIC:
            return time.monotonic_ns()
        raise self._fail(
            "clock id", f"clock id {clock_id} is neither 0 (realtime) nor 1 (monotonic)"
        )


def _launch_args_blob(args: Sequence[str], env: Sequence[tuple[str, str]]) -> bytes:
    """u32 argc, u32 envc, then argc + envc NUL-terminated UTF-8 strings (env as K=V)."""
    strings = [arg.encode() for arg in args] + [f"{key}={value}".encode() for key, value in env]
    for text in strings:
        if b"\0" in text:
            raise InputError("arguments and environment may not contain NUL bytes")
    return struct.pack("<II", len(args), len(env)) + b"".join(s + b"\0" for s in strings)
