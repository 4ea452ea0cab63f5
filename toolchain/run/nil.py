"""The ``nil`` backend: no VM, the application runs in wasmtime in this process.

It gives **no isolation** from the host: it exists for machines without KVM, and so that the
attestation flow (the simulated firmware fed the same LaunchPlan, a report bound to the nonce,
the same verification) can be exercised anywhere. Its observable behaviour matches the keep's
runtime: stdout/stderr stream through, ``proc_exit`` becomes the exit status, and a trap prints
``wasm trap: <name>`` and ends with status 134 (``runtime/wasm/keep_runtime.h``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from toolchain.errors import InputError

TRAP_EXIT_STATUS = 134

NIL_WARNING = (
    "backend nil: the application runs in wasmtime inside this process: NO isolation from the "
    "host and no memory encryption; the report comes from the simulated firmware"
)


def trap_names() -> dict[object, str]:
    """wasmtime trap code → the name the keep's runtime prints for that trap."""
    import wasmtime

    code = wasmtime.TrapCode
    # wasmtime's trap codes → the names the keep's runtime prints (runtime/wasm/glue.c).
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


def run_wasi(
    wasm: Path,
    *,
    argv: Sequence[str],
    env: Sequence[tuple[str, str]],
) -> int:
    """Run a WASI command module with this process's stdio; return its exit status."""
    import wasmtime

    engine = wasmtime.Engine()
    try:
        module = wasmtime.Module.from_file(engine, str(wasm))
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
        raise InputError(f"{wasm}: not a valid WebAssembly module: {first}") from exc
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    config = wasmtime.WasiConfig()
    config.argv = list(argv)
    config.env = [[k, v] for k, v in env]
    config.inherit_stdin()
    config.inherit_stdout()
    config.inherit_stderr()
    store.set_wasi(config)
    try:
        instance = linker.instantiate(store, module)
    except wasmtime.WasmtimeError as exc:
        raise InputError(f"{wasm}: cannot instantiate: {exc}") from exc
    start = instance.exports(store).get("_start")
    if not isinstance(start, wasmtime.Func):
        raise InputError(f"{wasm}: no _start function: not a WASI command")
    sys.stdout.flush()
    try:
        start(store)
    except wasmtime.ExitTrap as exc:
        return int(exc.code)
    except wasmtime.Trap as exc:
        sys.stdout.flush()
        print(f"wasm trap: {trap_name(exc.trap_code)}", file=sys.stderr, flush=True)
        return TRAP_EXIT_STATUS
    return 0
