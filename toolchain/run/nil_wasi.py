"""The keep's WASI (``runtime/wasm/wasi.c``) for the ``nil`` backend, call for call.

The nil backend must behave like the keep (the reference), so it does not use wasmtime's own WASI,
which differs where WASI hosts may differ: it opens files, traps on a bad pointer, refuses exit
statuses from 126 up, and calls stdio pipes. This module answers exactly what ``wasi.c`` answers:

* args and environ from the launch arguments; realtime and monotonic clocks from the host (the
  CPU-time clocks are the monotonic one), resolution 1 ns; other clock ids EINVAL;
* ``random_get`` from the operating system (the keep uses RDRAND/RDSEED);
* stdout/stderr writes and stdin reads (a short read ends a read), stdio described as
  character devices; every other descriptor EBADF; no preopened directories;
* every pointer and length checked against linear memory first: a bad one is EFAULT;
* ``proc_exit`` with any 32-bit status; every other call ENOSYS.

Keep the two in step: ``tests/test_backend_parity.py`` runs the same programs on both.
"""

from __future__ import annotations

import secrets
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

ESUCCESS, EBADF, EFAULT, EINVAL, EIO, ENOSYS = 0, 8, 21, 28, 29, 52
FILETYPE_CHARACTER_DEVICE = 2
RIGHT_FD_READ, RIGHT_FD_WRITE, RIGHT_POLL_FD_READWRITE = 1 << 1, 1 << 6, 1 << 27
MODULE = "wasi_snapshot_preview1"
U32 = 0xFFFFFFFF

#: The calls the keep answers ENOSYS, with their parameter types (i: i32, I: i64).
ENOSYS_CALLS = {
    "fd_advise": "iIIi",
    "fd_allocate": "iII",
    "fd_close": "i",
    "fd_datasync": "i",
    "fd_fdstat_set_flags": "ii",
    "fd_fdstat_set_rights": "iII",
    "fd_filestat_get": "ii",
    "fd_filestat_set_size": "iI",
    "fd_filestat_set_times": "iIIi",
    "fd_pread": "iiiIi",
    "fd_pwrite": "iiiIi",
    "fd_readdir": "iiiIi",
    "fd_renumber": "ii",
    "fd_seek": "iIii",
    "fd_sync": "i",
    "fd_tell": "ii",
    "path_create_directory": "iii",
    "path_filestat_get": "iiiii",
    "path_filestat_set_times": "iiiiIIi",
    "path_link": "iiiiiii",
    "path_open": "iiiiiIIii",
    "path_readlink": "iiiiii",
    "path_remove_directory": "iii",
    "path_rename": "iiiiii",
    "path_symlink": "iiiii",
    "path_unlink_file": "iii",
    "poll_oneoff": "iiii",
    "proc_raise": "i",
    "sched_yield": "",
    "sock_accept": "iii",
    "sock_recv": "iiiiii",
    "sock_send": "iiiii",
    "sock_shutdown": "ii",
}


class ProcExit(Exception):  # noqa: N818 - not an error: the application's chosen end
    """``proc_exit``: unwinds out of the application with its 32-bit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class KeepWasi:
    """One application's WASI, bound to this process's stdio."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]],
        *,
        stdin: IO[bytes] | None,
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> None:
        self.args = [arg.encode() + b"\0" for arg in argv]
        self.environ = [f"{key}={value}".encode() + b"\0" for key, value in env]
        self.stdin = stdin
        self.out = {1: stdout, 2: stderr}

    # --- linking ------------------------------------------------------------------------------
    def define(self, linker: Any) -> None:
        """Define every call the keep offers on a wasmtime ``Linker``."""
        import wasmtime

        types = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}

        def add(name: str, params: str, func: Callable[..., Any], result: bool = True) -> None:
            signature = wasmtime.FuncType(
                [types[p] for p in params], [types["i"]] if result else []
            )
            linker.define_func(MODULE, name, signature, func, access_caller=True)

        add("args_sizes_get", "ii", self.args_sizes_get)
        add("args_get", "ii", self.args_get)
        add("environ_sizes_get", "ii", self.environ_sizes_get)
        add("environ_get", "ii", self.environ_get)
        add("clock_res_get", "ii", self.clock_res_get)
        add("clock_time_get", "iIi", self.clock_time_get)
        add("random_get", "ii", self.random_get)
        add("fd_write", "iiii", self.fd_write)
        add("fd_read", "iiii", self.fd_read)
        add("fd_fdstat_get", "ii", self.fd_fdstat_get)
        add("fd_prestat_get", "ii", lambda _caller, _fd, _ptr: EBADF)
        add("fd_prestat_dir_name", "iii", lambda _caller, _fd, _ptr, _len: EBADF)
        add("proc_exit", "i", self.proc_exit, result=False)
        for name, params in ENOSYS_CALLS.items():
            add(name, params, lambda _caller, *_args: ENOSYS)

    # --- memory -------------------------------------------------------------------------------
    @staticmethod
    def _memory(caller: Any) -> Any:
        import wasmtime

        memory = caller.get("memory")
        return memory if isinstance(memory, wasmtime.Memory) else None

    @staticmethod
    def _ok(caller: Any, memory: Any, ptr: int, length: int) -> bool:
        return memory is not None and (ptr & U32) + length <= memory.data_len(caller)

    @staticmethod
    def _u32(caller: Any, memory: Any, ptr: int) -> int:
        return int(struct.unpack("<I", memory.read(caller, ptr, ptr + 4))[0])

    def _iovecs(self, caller: Any, memory: Any, iovs: int, count: int) -> list[tuple[int, int]]:
        """The (pointer, length) pairs, or [] after EFAULT-worthy input (checked by caller)."""
        return [
            (self._u32(caller, memory, iovs + 8 * i), self._u32(caller, memory, iovs + 8 * i + 4))
            for i in range(count)
        ]

    # --- args and environ ---------------------------------------------------------------------
    def _sizes(self, caller: Any, count_ptr: int, size_ptr: int, strings: list[bytes]) -> int:
        memory = self._memory(caller)
        count_ptr, size_ptr = count_ptr & U32, size_ptr & U32
        if not (self._ok(caller, memory, count_ptr, 4) and self._ok(caller, memory, size_ptr, 4)):
            return EFAULT
        memory.write(caller, struct.pack("<I", len(strings)), count_ptr)
        memory.write(caller, struct.pack("<I", sum(len(s) for s in strings)), size_ptr)
        return ESUCCESS

    def _strings(self, caller: Any, list_ptr: int, buf_ptr: int, strings: list[bytes]) -> int:
        memory = self._memory(caller)
        list_ptr, buf_ptr = list_ptr & U32, buf_ptr & U32
        size = sum(len(s) for s in strings)
        if not (
            self._ok(caller, memory, list_ptr, 4 * len(strings))
            and self._ok(caller, memory, buf_ptr, size)
        ):
            return EFAULT
        at = buf_ptr
        for index, text in enumerate(strings):
            memory.write(caller, struct.pack("<I", at), list_ptr + 4 * index)
            memory.write(caller, text, at)
            at += len(text)
        return ESUCCESS

    def args_sizes_get(self, caller: Any, count_ptr: int, size_ptr: int) -> int:
        return self._sizes(caller, count_ptr, size_ptr, self.args)

    def args_get(self, caller: Any, list_ptr: int, buf_ptr: int) -> int:
        return self._strings(caller, list_ptr, buf_ptr, self.args)

    def environ_sizes_get(self, caller: Any, count_ptr: int, size_ptr: int) -> int:
        return self._sizes(caller, count_ptr, size_ptr, self.environ)

    def environ_get(self, caller: Any, list_ptr: int, buf_ptr: int) -> int:
        return self._strings(caller, list_ptr, buf_ptr, self.environ)

    # --- clocks and random --------------------------------------------------------------------
    @staticmethod
    def _clock(clock_id: int) -> Callable[[], int] | None:
        # Realtime from the host; the CPU-time clocks are the monotonic one (one process).
        clock_id &= U32
        if clock_id == 0:
            return time.time_ns
        return time.monotonic_ns if clock_id in (1, 2, 3) else None

    def clock_res_get(self, caller: Any, clock_id: int, res_ptr: int) -> int:
        if self._clock(clock_id) is None:
            return EINVAL
        memory = self._memory(caller)
        if not self._ok(caller, memory, res_ptr & U32, 8):
            return EFAULT
        memory.write(caller, struct.pack("<Q", 1), res_ptr & U32)
        return ESUCCESS

    def clock_time_get(self, caller: Any, clock_id: int, _precision: int, time_ptr: int) -> int:
        clock = self._clock(clock_id)
        if clock is None:
            return EINVAL
        memory = self._memory(caller)
        if not self._ok(caller, memory, time_ptr & U32, 8):
            return EFAULT
        memory.write(caller, struct.pack("<Q", clock() & (1 << 64) - 1), time_ptr & U32)
        return ESUCCESS

    def random_get(self, caller: Any, buf_ptr: int, length: int) -> int:
        memory = self._memory(caller)
        buf_ptr, length = buf_ptr & U32, length & U32
        if not self._ok(caller, memory, buf_ptr, length):
            return EFAULT
        memory.write(caller, secrets.token_bytes(length), buf_ptr)
        return ESUCCESS

    # --- stdio --------------------------------------------------------------------------------
    def _checked_iovecs(
        self, caller: Any, iovs: int, count: int, result_ptr: int
    ) -> tuple[Any, list[tuple[int, int]]] | None:
        memory = self._memory(caller)
        iovs, count, result_ptr = iovs & U32, count & U32, result_ptr & U32
        if not (
            self._ok(caller, memory, iovs, 8 * count) and self._ok(caller, memory, result_ptr, 4)
        ):
            return None
        vectors = self._iovecs(caller, memory, iovs, count)
        if not all(self._ok(caller, memory, ptr, length) for ptr, length in vectors):
            return None
        return memory, vectors

    def fd_write(self, caller: Any, fd: int, iovs: int, count: int, nwritten_ptr: int) -> int:
        stream = self.out.get(fd & U32)
        if stream is None:
            return EBADF
        checked = self._checked_iovecs(caller, iovs, count, nwritten_ptr)
        if checked is None:
            return EFAULT
        memory, vectors = checked
        data = b"".join(memory.read(caller, ptr, ptr + length) for ptr, length in vectors)
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):
            return EIO
        memory.write(caller, struct.pack("<I", len(data) & U32), nwritten_ptr & U32)
        return ESUCCESS

    def fd_read(self, caller: Any, fd: int, iovs: int, count: int, nread_ptr: int) -> int:
        if fd & U32 != 0:
            return EBADF
        checked = self._checked_iovecs(caller, iovs, count, nread_ptr)
        if checked is None:
            return EFAULT
        memory, vectors = checked
        total = 0
        for ptr, length in vectors:
            if length == 0:
                continue
            try:
                data = self._read(length)
            except OSError:
                if total:
                    break
                return EIO
            memory.write(caller, data, ptr)
            total += len(data)
            if len(data) < length:
                break  # a short read: do not block for more
        memory.write(caller, struct.pack("<I", total), nread_ptr & U32)
        return ESUCCESS

    def _read(self, length: int) -> bytes:
        if self.stdin is None:
            return b""
        reader = getattr(self.stdin, "read1", self.stdin.read)
        return bytes(reader(length))[:length]

    def fd_fdstat_get(self, caller: Any, fd: int, stat_ptr: int) -> int:
        fd, stat_ptr = fd & U32, stat_ptr & U32
        if fd > 2:
            return EBADF
        memory = self._memory(caller)
        if not self._ok(caller, memory, stat_ptr, 24):
            return EFAULT
        rights = (RIGHT_FD_READ if fd == 0 else RIGHT_FD_WRITE) | RIGHT_POLL_FD_READWRITE
        memory.write(caller, struct.pack("<B7xQQ", FILETYPE_CHARACTER_DEVICE, rights, 0), stat_ptr)
        return ESUCCESS

    def proc_exit(self, _caller: Any, status: int) -> None:
        raise ProcExit(status & U32)


def process_stdio() -> tuple[IO[bytes] | None, IO[bytes], IO[bytes]]:
    """This process's stdin, stdout and stderr as byte streams (as the kvm backend uses them)."""
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    return stdin, sys.stdout.buffer, sys.stderr.buffer
