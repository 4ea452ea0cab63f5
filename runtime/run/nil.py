"""The ``nil`` backend: no VM, the application runs in wasmtime in this process.

It gives **no isolation** from the host: it exists for machines without KVM, and so that the
attestation flow (the simulated firmware fed the same LaunchPlan, a report bound to the nonce,
the same verification) can be exercised anywhere. Its observable behaviour matches the keep's
runtime, which is the reference:

* its WASI is the keep's, call for call (``runtime.run.nil_wasi``): stdout/stderr stream
  through, stdio are character devices (so a libc line-buffers as in the keep), a bad pointer is
  EFAULT, a value outside the spec's sets EINVAL, and ``proc_exit`` takes any 32-bit status;
* a trap prints ``wasm trap: <name>`` and ends with status 134
  (``runtime/guest/wasm/keep_runtime.h``);
* linear memory is limited to what the keep's heap can hold (``memory_limit``,
  ``toolchain.measure.keep.linear_memory_limit`` of the launch plan, so ``--memory`` moves it
  on both backends alike): a module whose memory does not fit stops as the keep's runtime does
  (``keep: aborted ...``, status 125; the build refuses such a module first,
  ``toolchain.image.keep_build.check_app_memory``), and ``memory.grow`` past it fails;
* the time limit ends the application with the kvm backend's ``KeepTimeoutError``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtime.run.nil_wasi import KeepWasi, ProcExit, process_stdio
from toolchain.errors import InputError
from toolchain.measure.abi import FATAL_EXIT_STATUS, TRAP_EXIT_STATUS
from toolchain.measure.keep import WASM_PAGE

#: The line the keep's runtime prints, before it ends with ``FATAL_EXIT_STATUS``, when the
#: module's linear memory does not fit its heap (``abort()`` in runtime/guest/wasm/libc.c).
OUT_OF_MEMORY_LINE = "keep: aborted (out of memory for the module?)"

NIL_WARNING = (
    "backend nil: the application runs in wasmtime inside this process: NO isolation from the "
    "host and no memory encryption; the report comes from the simulated firmware"
)


def trap_names() -> dict[object, str]:
    """wasmtime trap code → the name the keep's runtime prints for that trap."""
    import wasmtime

    code = wasmtime.TrapCode
    # wasmtime's trap codes → the names the keep's runtime prints (runtime/guest/wasm/glue.c).
    return {
        code.STACK_OVERFLOW: "call stack exhausted",
        code.MEMORY_OUT_OF_BOUNDS: "out of bounds memory access",
        code.INTEGER_OVERFLOW: "integer overflow",
        code.INTEGER_DIVISION_BY_ZERO: "integer divide by zero",
        code.BAD_CONVERSION_TO_INTEGER: "invalid conversion to integer",
        code.UNREACHABLE: "unreachable",
        code.TABLE_OUT_OF_BOUNDS: "indirect call",
        code.INDIRECT_CALL_TO_NULL: "indirect call",
        code.BAD_SIGNATURE: "indirect call",
    }


def trap_name(trap_code: object) -> str:
    """The keep runtime's name for a wasmtime trap code."""
    return trap_names().get(trap_code, "unknown trap")


def _initial_memory(module: Any) -> int:
    """Bytes of linear memory the module asks for at instantiation (its exported memories)."""
    import wasmtime

    return sum(
        export.type.limits.min * WASM_PAGE
        for export in module.exports
        if isinstance(export.type, wasmtime.MemoryType)
    )


def run_wasi(
    wasm: Path,
    *,
    argv: Sequence[str],
    env: Sequence[tuple[str, str]],
    memory_limit: int | None = None,
    timeout: float | None = None,
    trees: bytes = b"",
    attested: bytes = b"",
    on_result: Callable[[bytes], None] | None = None,
) -> int:
    """Run a WASI command module with this process's stdio; return its exit status.

    ``memory_limit`` is the most linear memory the keep gives the module, in bytes
    (``linear_memory_limit`` of its plan; None: no limit beyond wasmtime's);
    ``timeout`` ends the application with ``KeepTimeoutError`` after that many seconds.
    ``trees`` (the TREES blob) is checked against ``attested`` (the REPORT_DATA of the report)
    as the keep's runtime checks it (``keep_trees.c``): a mismatch ends the run before the
    application with the keep's line and status 125. When the application exits (``proc_exit``
    or a return from ``_start``, not a trap) and a tree was preopened ``:rw``, ``on_result``
    gets the result blob the keep would hand back (``nil_fs.FsCalls.result``).
    """
    import wasmtime

    from toolchain.errors import EvidenceError
    from toolchain.measure.trees import accept_transfer_blob

    stdin, stdout, stderr = process_stdio()
    try:
        checked = accept_transfer_blob(trees, attested)
        wasi = KeepWasi(argv, env, stdin=stdin, stdout=stdout, stderr=stderr, trees=checked)
    except EvidenceError as exc:
        print(f"keep: {exc.message}", file=sys.stderr, flush=True)
        return FATAL_EXIT_STATUS

    config = wasmtime.Config()
    config.epoch_interruption = timeout is not None
    engine = wasmtime.Engine(config)
    started = _instantiate(engine, wasm, wasi, memory_limit)
    if started is None:
        return FATAL_EXIT_STATUS
    store, start = started
    status = _run_start(engine, store, start, timeout)
    if status is None:
        return TRAP_EXIT_STATUS
    try:
        result = wasi.result()
    except EvidenceError as exc:  # as the keep's runtime ends it (keep_fs.c, fs_hand_back)
        print(f"keep: {exc.message}", file=sys.stderr, flush=True)
        return FATAL_EXIT_STATUS
    if result is not None and on_result is not None:
        on_result(result)
    return status


def _instantiate(
    engine: Any, wasm: Path, wasi: KeepWasi, memory_limit: int | None
) -> tuple[Any, Any] | None:
    """(store, ``_start``) of the module, its memory capped at the keep's heap (InputError for
    a module that is not a WASI command); None, after the keep's out-of-memory line, when its
    initial memory already exceeds that heap."""
    import wasmtime

    try:
        module = wasmtime.Module.from_file(engine, str(wasm))
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
        raise InputError(f"{wasm}: not a valid WebAssembly module: {first}") from exc
    linker = wasmtime.Linker(engine)
    wasi.define(linker)
    store = wasmtime.Store(engine)
    if memory_limit is not None:
        if _initial_memory(module) > memory_limit:
            print(OUT_OF_MEMORY_LINE, file=sys.stderr, flush=True)
            return None
        store.set_limits(memory_size=memory_limit)
    try:
        instance = linker.instantiate(store, module)
    except wasmtime.WasmtimeError as exc:
        raise InputError(f"{wasm}: cannot instantiate: {exc}") from exc
    start = instance.exports(store).get("_start")
    if not isinstance(start, wasmtime.Func):
        raise InputError(f"{wasm}: no _start function: not a WASI command")
    return store, start


def _run_start(engine: Any, store: Any, start: Any, timeout: float | None) -> int | None:
    """Call ``_start``: the application's exit status, or None after a trap (its line printed
    with the keep's name for it; the run ends with 134 and hands nothing back)."""
    import wasmtime

    from runtime.vmm.errors import GuestError, KeepTimeoutError

    timer: threading.Timer | None = None
    if timeout is not None:
        store.set_epoch_deadline(1)
        timer = threading.Timer(timeout, engine.increment_epoch)
        timer.daemon = True
        timer.start()
    sys.stdout.flush()
    try:
        start(store)
        status = 0
    except ProcExit as exc:
        status = exc.status
    except wasmtime.Trap as exc:
        sys.stdout.flush()
        if exc.trap_code == wasmtime.TrapCode.INTERRUPT and timeout is not None:
            raise KeepTimeoutError.after(timeout) from exc
        print(f"wasm trap: {trap_name(exc.trap_code)}", file=sys.stderr, flush=True)
        return None
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "unknown"
        raise GuestError(f"the application was stopped: {first}") from exc
    finally:
        if timer is not None:
            timer.cancel()
    return status
