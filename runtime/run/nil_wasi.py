"""The keep's WASI (``runtime/guest/wasm/wasi.c``) for the ``nil`` backend, call for call.

The nil backend must behave like the keep (the reference), so it does not use wasmtime's own WASI,
which differs where WASI hosts may differ: it opens files, traps on a bad pointer, refuses exit
statuses from 126 up, and calls stdio pipes. This module answers exactly what ``wasi.c`` answers:

* args and environ from the launch arguments; realtime and monotonic clocks from the host (the
  CPU-time clocks are the monotonic one), resolution 1 ns; other clock ids EINVAL;
* ``random_get`` from the operating system (the keep uses RDRAND/RDSEED);
* descriptors 0-2 are the stdio streams: stdout/stderr writes and stdin reads (a short read ends
  a read), ``fd_close`` and ``fd_renumber`` among them, fdstat/filestat as character devices with
  wasmtime's rights, ESPIPE for seeking; descriptors 3, 4, ... are the preopened directories,
  and files and directories are ``runtime.run.nil_fs``'s (``wasi_fs.c``'s twin);
* ``poll_oneoff``: clocks (realtime and monotonic, relative and absolute; it waits for the
  earliest when no descriptor is ready) and stdio readiness (always ready, nbytes 1);
* ``sched_yield`` succeeds, ``proc_raise`` is ENOTSUP, sockets calls are ENOTSOCK on stdio;
* every pointer and length checked against linear memory first: a bad one is EFAULT; a value
  outside the spec's enums and flag sets is EINVAL (where wasmtime's own WASI traps);
* ``proc_exit`` with any 32-bit status.

Keep the two in step: ``tests/test_backend_parity.py`` runs the same programs on both.
"""

from __future__ import annotations

import secrets
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from runtime.run.nil_fs import FsCalls

if TYPE_CHECKING:
    from toolchain.measure.trees import Received

ESUCCESS, EBADF, EFAULT, EINVAL, EIO = 0, 8, 21, 28, 29
ENOTSOCK, ENOTSUP, ESPIPE = 57, 58, 70
FILETYPE_CHARACTER_DEVICE = 2
RIGHT_FD_READ, RIGHT_FD_WRITE = 1 << 1, 1 << 6
STDIN, STDOUT, STDERR = 0, 1, 2
MODULE = "wasi_snapshot_preview1"
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
FDFLAGS_ALL, RIFLAGS_ALL, SDFLAGS_ALL, FSTFLAGS_ALL = 0x1F, 0x3, 0x3, 0xF
SUBSCRIPTION_SIZE, EVENT_SIZE = 48, 32
EVENTTYPE_CLOCK, EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE = 0, 1, 2
SUBCLOCK_ABSTIME = 1

#: The file and path calls (runtime.run.nil_fs), as define() links them (i: i32, I: i64).
FS_CALLS = {
    "fd_advise": "iIIi",
    "fd_allocate": "iII",
    "fd_close": "i",
    "fd_datasync": "i",
    "fd_fdstat_set_flags": "ii",
    "fd_fdstat_set_rights": "iII",
    "fd_filestat_set_size": "iI",
    "fd_filestat_set_times": "iIIi",
    "fd_prestat_dir_name": "iii",
    "fd_prestat_get": "ii",
    "fd_readdir": "iiiIi",
    "fd_renumber": "ii",
    "fd_sync": "i",
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
}


class ProcExit(Exception):  # noqa: N818 - not an error: the application's chosen end
    """``proc_exit``: unwinds out of the application with its 32-bit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class KeepWasi(FsCalls):
    """One application's WASI, bound to this process's stdio and the checked preopened trees."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Sequence[tuple[str, str]],
        *,
        stdin: IO[bytes] | None,
        stdout: IO[bytes],
        stderr: IO[bytes],
        trees: Sequence[Received] = (),
    ) -> None:
        self.args = [arg.encode() + b"\0" for arg in argv]
        self.environ = [f"{key}={value}".encode() + b"\0" for key, value in env]
        self.stdin = stdin
        self.out = {STDOUT: stdout, STDERR: stderr}
        #: descriptor → stream (wasi.c's fd_stream): fd_close and fd_renumber change it.
        self.fd_stream: dict[int, int] = {0: STDIN, 1: STDOUT, 2: STDERR}
        self.init_fs(trees)  # descriptors 3, 4, ...: the preopened directories

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
        add("fd_filestat_get", "ii", self.fd_filestat_get)
        add("fd_seek", "iIii", self.fd_seek)
        add("fd_tell", "ii", self.fd_tell)
        add("fd_pread", "iiiIi", self.fd_pread)
        add("fd_pwrite", "iiiIi", self.fd_pwrite)
        add("poll_oneoff", "iiii", self.poll_oneoff)
        add("proc_exit", "i", self.proc_exit, result=False)
        add("sched_yield", "", lambda _caller: ESUCCESS)
        add("proc_raise", "i", lambda _caller, sig: EINVAL if sig & U32 > 30 else ENOTSUP)
        add("sock_accept", "iii", self.sock_accept)
        add("sock_recv", "iiiiii", self.sock_recv)
        add("sock_send", "iiiii", lambda _caller, fd, *_args: self._not_a_socket(fd))
        add("sock_shutdown", "ii", self.sock_shutdown)
        for name, params in FS_CALLS.items():
            add(name, params, getattr(self, name))

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

    def _stream(self, fd: int) -> int | None:
        """The stdio stream behind ``fd``, or None (closed or never open)."""
        return self.fd_stream.get(fd & U32)

    def fd_write(self, caller: Any, fd: int, iovs: int, count: int, nwritten_ptr: int) -> int:
        stream_id = self._stream(fd)
        if stream_id is None:
            return self.fs_write(caller, fd, iovs, count, nwritten_ptr)
        stream = self.out.get(stream_id)
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
        if self._stream(fd) is None:
            return self.fs_read(caller, fd, iovs, count, nread_ptr)
        if self._stream(fd) != STDIN:
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
        stream, stat_ptr = self._stream(fd), stat_ptr & U32
        if stream is None:
            return self.fs_fdstat(caller, fd, stat_ptr)
        memory = self._memory(caller)
        if not self._ok(caller, memory, stat_ptr, 24):
            return EFAULT
        rights = RIGHT_FD_READ if stream == STDIN else RIGHT_FD_WRITE
        memory.write(
            caller, struct.pack("<B7xQQ", FILETYPE_CHARACTER_DEVICE, rights, rights), stat_ptr
        )
        return ESUCCESS

    def fd_filestat_get(self, caller: Any, fd: int, stat_ptr: int) -> int:
        stat_ptr = stat_ptr & U32
        if self._stream(fd) is None:
            return self.fs_filestat(caller, fd, stat_ptr)
        memory = self._memory(caller)
        if not self._ok(caller, memory, stat_ptr, 64):
            return EFAULT
        memory.write(caller, struct.pack("<16xB47x", FILETYPE_CHARACTER_DEVICE), stat_ptr)
        return ESUCCESS

    def fd_seek(self, caller: Any, fd: int, offset: int, whence: int, result: int) -> int:
        if whence & U32 > 2:
            return EINVAL
        if self._stream(fd) is None:
            return self.fs_seek(caller, fd, offset & U64, whence & U32, result)
        return ESPIPE

    def fd_tell(self, caller: Any, fd: int, result: int) -> int:
        return self.fs_seek(caller, fd, 0, 1, result) if self._stream(fd) is None else ESPIPE

    def fd_pread(self, caller: Any, fd: int, iovs: int, count: int, offset: int, n: int) -> int:  # noqa: PLR0917 - the WASI signature
        stream = self._stream(fd)
        if stream is None:
            return self.fs_read(caller, fd, iovs, count, n, offset & U64)
        return ESPIPE if stream == STDIN else EBADF

    def fd_pwrite(self, caller: Any, fd: int, iovs: int, count: int, offset: int, n: int) -> int:  # noqa: PLR0917 - the WASI signature
        stream = self._stream(fd)
        if stream is None:
            return self.fs_write(caller, fd, iovs, count, n, offset & U64)
        return ESPIPE if stream in (STDOUT, STDERR) else EBADF

    # --- poll ---------------------------------------------------------------------------------
    def _clock_deadline(self, caller: Any, memory: Any, sub: int, start: int) -> int:
        """The monotonic deadline of the clock subscription at ``sub``; raises _Errno."""
        fields = struct.unpack("<I4xQ8xH", memory.read(caller, sub + 16, sub + 42))
        clock_id, timeout, flags = (int(field) for field in fields)
        if flags & ~SUBCLOCK_ABSTIME or clock_id not in (0, 1):
            raise _Errno(EINVAL)  # the CPU-time clocks too, as in wasmtime
        if not flags & SUBCLOCK_ABSTIME:
            return min(start + timeout, U64)
        if clock_id == 1:
            return int(timeout)
        return min(start + max(timeout - time.time_ns(), 0), U64)

    def poll_oneoff(self, caller: Any, sub_ptr: int, event_ptr: int, count: int, n_ptr: int) -> int:
        """wasi.c's poll_oneoff: check all, wait for the earliest clock if no fd is ready."""
        sub_ptr, event_ptr, count, n_ptr = sub_ptr & U32, event_ptr & U32, count & U32, n_ptr & U32
        if count == 0:
            return EINVAL
        memory = self._memory(caller)
        if not (
            self._ok(caller, memory, sub_ptr, count * SUBSCRIPTION_SIZE)
            and self._ok(caller, memory, event_ptr, count * EVENT_SIZE)
            and self._ok(caller, memory, n_ptr, 4)
        ):
            return EFAULT
        start = time.monotonic_ns()
        subs = [sub_ptr + i * SUBSCRIPTION_SIZE for i in range(count)]
        earliest, fd_ready = U64, False
        try:
            for sub in subs:
                tag = memory.read(caller, sub + 8, sub + 9)[0]
                if tag == EVENTTYPE_CLOCK:
                    earliest = min(earliest, self._clock_deadline(caller, memory, sub, start))
                elif tag in (EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE):
                    fd = self._u32(caller, memory, sub + 16)
                    wanted = (STDIN,) if tag == EVENTTYPE_FD_READ else (STDOUT, STDERR)
                    if self._stream(fd) not in wanted and not self.fs_ready(
                        fd, tag == EVENTTYPE_FD_WRITE
                    ):
                        return EBADF
                    fd_ready = True
                else:
                    return EINVAL
            now = start
            # No descriptor ready: wait for the earliest clock (the keep asks the host's clock).
            while not fd_ready and now < earliest:
                time.sleep(min((earliest - now) / 1e9, 1.0))
                now = time.monotonic_ns()
            events = []
            for sub in subs:
                userdata = memory.read(caller, sub, sub + 8)
                tag = memory.read(caller, sub + 8, sub + 9)[0]
                if tag != EVENTTYPE_CLOCK:
                    events.append(userdata + struct.pack("<2xB5xQ8x", tag, 1))
                elif self._clock_deadline(caller, memory, sub, start) <= now:
                    events.append(userdata + struct.pack("<2xB5xQ8x", EVENTTYPE_CLOCK, 0))
        except _Errno as error:
            return error.errno
        for index, event in enumerate(events):
            memory.write(caller, event, event_ptr + index * EVENT_SIZE)
        memory.write(caller, struct.pack("<I", len(events)), n_ptr)
        return ESUCCESS

    # --- sockets: none ------------------------------------------------------------------------
    def _not_a_socket(self, fd: int) -> int:
        return ENOTSOCK if self.is_open(fd) else EBADF

    def sock_accept(self, _caller: Any, fd: int, flags: int, _fd_ptr: int) -> int:
        return EINVAL if flags & ~FDFLAGS_ALL else self._not_a_socket(fd)

    def sock_recv(
        self, _caller: Any, fd: int, _iovs: int, _n: int, riflags: int, *_ptrs: int
    ) -> int:
        return EINVAL if riflags & ~RIFLAGS_ALL else self._not_a_socket(fd)

    def sock_shutdown(self, _caller: Any, fd: int, how: int) -> int:
        return EINVAL if how & ~SDFLAGS_ALL else self._not_a_socket(fd)

    def proc_exit(self, _caller: Any, status: int) -> None:
        raise ProcExit(status & U32)


class _Errno(Exception):  # noqa: N818 - a WASI errno travelling out of a helper
    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


def process_stdio() -> tuple[IO[bytes] | None, IO[bytes], IO[bytes]]:
    """This process's stdin, stdout and stderr as byte streams (as the kvm backend uses them)."""
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    return stdin, sys.stdout.buffer, sys.stderr.buffer
