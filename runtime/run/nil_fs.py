"""The keep's file system (``runtime/guest/wasm/keep_fs.c`` and ``wasi_fs.c``) for the nil backend.

Call for call the same answers as the keep: an in-memory tree per preopened directory, built from
the same checked canonical encodings (``toolchain.measure.trees``), changed by the application and
discarded at exit; descriptors 3, 4, … are the preopens in ``--dir`` order and ``path_open`` takes
the lowest free one; inode numbers count from 1 in creation order (tree order first) and each tree
is its own device; paths never leave the directory they start from (``..`` above it, absolute
paths and links to absolute targets are EPERM, as wasmtime answers), more than 32 links in one
resolution is ELOOP. ``tests/test_wasi_fs_keep.py`` runs the same program on wasmtime, nil and
kvm; keep this module and the C in step.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolchain.measure.abi import FS_FILE_MAX, RESULT_MAX_BYTES

if TYPE_CHECKING:
    from toolchain.measure.trees import Received

ESUCCESS, EBADF, EBUSY, EEXIST, EFAULT, EFBIG, EINVAL = 0, 8, 10, 20, 21, 22, 28
EISDIR, ELOOP, EMFILE, ENAMETOOLONG, ENOENT, ENOSPC = 31, 32, 33, 37, 44, 51
ENOTDIR, ENOTEMPTY, ENOTSUP, EPERM, EXDEV, ENOTCAPABLE = 54, 55, 58, 63, 75, 76
DIRECTORY, REGULAR_FILE, SYMBOLIC_LINK = 3, 4, 7
U32 = 0xFFFFFFFF
FD_MAX, MAX_LINKS, MAX_DEPTH = 1024, 32, 512
FILE_MAX = FS_FILE_MAX  # the keep's bound (keep_abi.h)
#: The mode of what the application creates (keep_fs.c's fs_new; WASI preview 1 has no modes).
NEW_MODES = {DIRECTORY: 0o755, REGULAR_FILE: 0o644, SYMBOLIC_LINK: 0o777}


def _rights(*bits: int) -> int:
    return sum(1 << bit for bit in bits)


RIGHT_FD_READ, RIGHT_FD_WRITE = 1 << 1, 1 << 6
RIGHTS_ALL = (1 << 30) - 1
FILE_RIGHTS = _rights(0, 1, 2, 3, 4, 5, 6, 7, 8, 21, 22, 23, 27)
DIR_RIGHTS = _rights(0, 3, 4, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27)
WRITE_RIGHTS = RIGHT_FD_WRITE | _rights(8, 22)
OFLAGS_CREAT, OFLAGS_DIRECTORY, OFLAGS_EXCL, OFLAGS_TRUNC = 1, 2, 4, 8
FDFLAGS_APPEND, FDFLAGS_NONBLOCK, FDFLAGS_ALL = 1, 4, 0x1F
FST_ATIM, FST_ATIM_NOW, FST_MTIM, FST_MTIM_NOW = 1, 2, 4, 8


class FsError(Exception):
    """A WASI errno travelling out of a helper."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


@dataclass(eq=False)
class Node:
    """keep_fs.c's struct fs_node (mutable: the application changes it)."""

    type: int
    dev: int
    ino: int
    time: int
    nlink: int = 0
    data: bytearray = field(default_factory=bytearray)
    entries: dict[bytes, Node] = field(default_factory=dict)  # insertion order, as in C
    parent: Node | None = None
    mode: int = 0  # permission bits: in and out of the keep, never seen by the application

    def __post_init__(self) -> None:
        self.atim = self.mtim = self.ctim = self.time
        if self.type == DIRECTORY:
            self.nlink = 1  # its own "."


@dataclass(eq=False)
class Slot:
    kind: str  # "dir" or "file"
    node: Node
    base: int
    inheriting: int
    flags: int = 0
    offset: int = 0
    preopen: int = -1


class Tree:
    """Inode numbering and the trees, as keep_fs.c keeps them."""

    def __init__(self) -> None:
        self.next_ino = 1
        self.frozen: int | None = None

    def now(self) -> int:
        return self.frozen if self.frozen is not None else time.time_ns()

    def new(self, kind: int, dev: int, mode: int | None = None) -> Node:
        node = Node(kind, dev, self.next_ino, self.now())
        node.mode = NEW_MODES[kind] if mode is None else mode
        self.next_ino += 1
        return node

    def link(self, directory: Node, name: bytes, node: Node) -> None:
        directory.entries[name] = node
        node.nlink += 1
        if node.type == DIRECTORY:
            node.parent = directory
            directory.nlink += 1
        directory.mtim = directory.ctim = self.now()

    def unlink(self, directory: Node, name: bytes) -> None:
        node = directory.entries.pop(name)
        node.nlink -= 1
        if node.type == DIRECTORY:
            directory.nlink -= 1
            node.nlink = 0
        directory.mtim = directory.ctim = node.ctim = self.now()

    def build(self, encoding: bytes, dev: int) -> Node:
        """One tree from its canonical encoding (checked input, still decoded as untrusted)."""
        from toolchain.measure.trees import decode_tree

        records = decode_tree(encoding)  # the one decoder: every refusal is an EvidenceError
        root = self.new(DIRECTORY, dev, records[0].mode)
        directories = {b"": root}
        for record in records[1:]:
            node = self.new(record.kind, dev, record.mode)
            node.data = bytearray(record.data)
            parent, _slash, name = record.path.rpartition(b"/")
            self.link(directories[parent], name, node)  # decode_tree: the parent came first
            if record.kind == DIRECTORY:
                directories[record.path] = node
        return root


def encode(root: Node) -> bytes:
    """The canonical encoding of a tree as the application left it (what the keep hands back).

    Modes: a node keeps the mode it came in with; new files are 0644, new directories 0755,
    new links 0777 (``Tree.new``). A hard-linked file appears once per name, as ``read_tree``
    gives it.
    """
    from toolchain.measure.trees import Record, encode_records

    records, pending = [], [(b"", root)]
    while pending:  # no recursion: the application decides how deep the tree is
        path, node = pending.pop()
        records.append(Record(node.type, node.mode, path, bytes(node.data)))
        pending += [(path + b"/" + name if path else name, child)
                    for name, child in node.entries.items()]  # fmt: skip
    return encode_records(records)


def resize(node: Node, size: int) -> None:
    if size > FILE_MAX:
        raise FsError(EFBIG)
    if size > len(node.data):
        node.data.extend(bytes(size - len(node.data)))
    else:
        del node.data[size:]


def write_at(node: Node, at: int, data: bytes) -> None:
    if at > FILE_MAX or len(data) > FILE_MAX - at:
        raise FsError(EFBIG)
    if at + len(data) > len(node.data):
        resize(node, at + len(data))
    node.data[at : at + len(data)] = data


@dataclass
class Walk:
    """wasi_fs.c's struct walk: where a path ends."""

    directory: Node | None  # holds the last component (None for "." or "..")
    name: bytes
    node: Node | None
    slash: bool


def walk(base: Node, path: bytes, follow: bool) -> Walk:
    """wasi_fs.c's walk(), step for step; raises FsError."""
    if not path:
        raise FsError(ENOENT)
    if b"\0" in path:
        raise FsError(EINVAL)
    stack, links, buf, at = [base], 0, path, 0
    while True:
        if at == 0 and buf.startswith(b"/"):
            raise FsError(EPERM)
        start = at
        while at < len(buf) and buf[at] != 0x2F:
            at += 1
        component = buf[start:at]
        slash = False
        while at < len(buf) and buf[at] == 0x2F:
            at += 1
            slash = True
        last = at == len(buf)
        current = stack[-1]
        if component in (b".", b".."):
            if component == b"..":
                if len(stack) == 1:
                    raise FsError(EPERM)
                stack.pop()
            if last:
                return Walk(None, component, stack[-1], slash)
            continue
        child = current.entries.get(component)
        if child is not None and child.type == SYMBOLIC_LINK and (not last or follow or slash):
            links += 1
            if links > MAX_LINKS:
                raise FsError(ELOOP)
            if not child.data:
                raise FsError(ENOENT)
            rest = buf[at:]
            buf = bytes(child.data) if not rest and not slash else bytes(child.data) + b"/" + rest
            if len(buf) > 1 << 20:
                raise FsError(ENAMETOOLONG)
            at = 0
            continue
        if last:
            if slash and child is not None and child.type != DIRECTORY:
                raise FsError(ENOTDIR)
            return Walk(current, component, child, slash)
        if child is None:
            raise FsError(ENOENT)
        if child.type != DIRECTORY:
            raise FsError(ENOTDIR)
        stack.append(child)
        if len(stack) == MAX_DEPTH + 1:
            raise FsError(ENAMETOOLONG)


def filestat(node: Node) -> bytes:
    size = 4096 if node.type == DIRECTORY else len(node.data)
    return struct.pack(
        "<QQB7xQQQQQ", node.dev, node.ino, node.type, node.nlink, size,
        node.atim, node.mtim, node.ctim,
    )  # fmt: skip


def set_times(tree: Tree, node: Node, atim: int, mtim: int, flags: int) -> int:
    if flags & ~0xF or (flags & FST_ATIM and flags & FST_ATIM_NOW):
        return EINVAL
    if flags & FST_MTIM and flags & FST_MTIM_NOW:
        return EINVAL
    now = tree.now()
    if flags & (FST_ATIM | FST_ATIM_NOW):
        node.atim = atim if flags & FST_ATIM else now
    if flags & (FST_MTIM | FST_MTIM_NOW):
        node.mtim = mtim if flags & FST_MTIM else now
    node.ctim = now
    return ESUCCESS


def is_ancestor(directory: Node, node: Node | None) -> bool:
    while node is not None:
        if node is directory:
            return True
        node = node.parent
    return False


def rename_check(source: Walk, target: Walk) -> int:
    if source.node is None:
        return ENOENT
    if source.directory is None or target.directory is None:
        return EBUSY
    if source.directory.dev != target.directory.dev:
        return EXDEV
    is_dir = source.node.type == DIRECTORY
    if not is_dir and (source.slash or target.slash):
        return ENOTDIR
    if is_dir and is_ancestor(source.node, target.directory):
        return EINVAL
    if target.node is None or target.node is source.node:
        return ESUCCESS
    target_dir = target.node.type == DIRECTORY
    if is_dir and not target_dir:
        return ENOTDIR
    if not is_dir and target_dir:
        return EISDIR
    if target_dir and target.node.entries:
        return ENOTEMPTY
    return ESUCCESS


def readdir_bytes(directory: Node, cookie: int, buf_len: int) -> bytes:
    """``.``, ``..``, then the entries in creation order; the last one cut at the buffer's end."""
    listing: list[tuple[bytes, Node]] = [
        (b".", directory),
        (b"..", directory.parent if directory.parent is not None else directory),
        *directory.entries.items(),
    ]
    out = bytearray()
    for index in range(cookie, len(listing)):
        if len(out) >= buf_len:
            break
        name, node = listing[index]
        out += struct.pack("<QQIB3x", index + 1, node.ino, len(name), node.type) + name
    return bytes(out[:buf_len])


class FsCalls:
    """The file and path calls, mixed into ``KeepWasi`` (which owns stdio and linking)."""

    fd_stream: dict[int, int]  # the stdio descriptors (KeepWasi)
    slots: dict[int, Slot]
    tree: Tree
    guests: list[bytes]
    roots: list[tuple[Node, bool]]  # each tree's root and whether it is handed back (:rw)

    def init_fs(self, trees: Sequence[Received]) -> None:
        self.slots, self.tree, self.guests, self.roots = {}, Tree(), [], []
        self.tree.frozen = time.time_ns() or 1
        for index, received in enumerate(trees):
            root = self.tree.build(received.encoding, index + 1)
            self.slots[3 + index] = Slot("dir", root, DIR_RIGHTS, DIR_RIGHTS | FILE_RIGHTS,
                                         preopen=index)  # fmt: skip
            self.guests.append(received.guest.encode())
            self.roots.append((root, received.rw))
        self.tree.frozen = None

    def result(self) -> bytes | None:
        """keep_fs.c's fs_result: the ``:rw`` trees as the application left them, or None."""
        from toolchain.errors import EvidenceError
        from toolchain.measure.trees import result_blob

        handed = [(index, encode(root)) for index, (root, rw) in enumerate(self.roots) if rw]
        blob = result_blob(handed) if handed else None
        if blob is not None and len(blob) > RESULT_MAX_BYTES:
            raise EvidenceError(
                "the :rw trees are larger than a keep hands back (33 MiB); nothing was written back"
            )
        return blob

    # --- memory (KeepWasi's checks, for the calls here) -----------------------------------------
    @staticmethod
    def _mem(caller: Any) -> Any:
        import wasmtime

        memory = caller.get("memory")
        return memory if isinstance(memory, wasmtime.Memory) else None

    @staticmethod
    def _span(caller: Any, memory: Any, ptr: int, length: int) -> bool:
        return memory is not None and (ptr & U32) + length <= memory.data_len(caller)

    def _path(self, caller: Any, ptr: int, length: int) -> bytes:
        memory = self._mem(caller)
        ptr, length = ptr & U32, length & U32
        if not self._span(caller, memory, ptr, length):
            raise FsError(EFAULT)
        return bytes(memory.read(caller, ptr, ptr + length))

    def _put(self, caller: Any, ptr: int, data: bytes) -> None:
        memory = self._mem(caller)
        if not self._span(caller, memory, ptr & U32, len(data)):
            raise FsError(EFAULT)
        memory.write(caller, data, ptr & U32)

    def _vectors(self, caller: Any, iovs: int, count: int, result: int) -> list[tuple[int, int]]:
        memory = self._mem(caller)
        iovs, count, result = iovs & U32, count & U32, result & U32
        if not (
            self._span(caller, memory, iovs, 8 * count) and self._span(caller, memory, result, 4)
        ):
            raise FsError(EFAULT)
        raw = memory.read(caller, iovs, iovs + 8 * count)
        vectors = [struct.unpack_from("<II", raw, 8 * i) for i in range(count)]
        if not all(self._span(caller, memory, p, n) for p, n in vectors):
            raise FsError(EFAULT)
        return vectors

    # --- descriptors ----------------------------------------------------------------------------
    def _slot(self, fd: int) -> Slot | None:
        return self.slots.get(fd & U32)

    def _file(self, fd: int) -> Slot:
        """The file at ``fd``; EBADF for anything else (a directory too, as wasi.c answers)."""
        slot = self._slot(fd)
        if slot is None or slot.kind != "file":
            raise FsError(EBADF)
        return slot

    def _dir(self, fd: int) -> Slot:
        slot = self._slot(fd)
        if slot is None:
            raise FsError(EBADF)
        if slot.kind != "dir":
            raise FsError(ENOTDIR)
        return slot

    def _walk(self, caller: Any, fd: int, path: int, length: int, follow: bool) -> Walk:
        base = self._dir(fd).node
        return walk(base, self._path(caller, path, length), follow)

    def is_open(self, fd: int) -> bool:
        return (fd & U32) in self.fd_stream or (fd & U32) in self.slots

    def fs_ready(self, fd: int, for_write: bool) -> bool:
        slot = self._slot(fd)
        if slot is None or slot.kind != "file":
            return False
        return bool(slot.base & (RIGHT_FD_WRITE if for_write else RIGHT_FD_READ))

    def fs_read(  # noqa: PLR0917 - the WASI signature
        self, caller: Any, fd: int, iovs: int, count: int, result: int, offset: int | None = None
    ) -> int:
        try:
            slot = self._file(fd)
            if not slot.base & RIGHT_FD_READ:
                return EBADF
            vectors = self._vectors(caller, iovs, count, result)
        except FsError as error:
            return error.errno
        memory, data = self._mem(caller), slot.node.data
        at = slot.offset if offset is None else offset
        total = 0
        for ptr, length in vectors:
            chunk = bytes(data[at : at + length]) if at < len(data) else b""
            memory.write(caller, chunk, ptr)
            at += len(chunk)
            total += len(chunk)
        if offset is None:
            slot.offset = at
        memory.write(caller, struct.pack("<I", total & U32), result & U32)
        return ESUCCESS

    def fs_write(  # noqa: PLR0917 - the WASI signature
        self, caller: Any, fd: int, iovs: int, count: int, result: int, offset: int | None = None
    ) -> int:
        try:
            slot = self._file(fd)
            if not slot.base & RIGHT_FD_WRITE:
                return EBADF
            vectors = self._vectors(caller, iovs, count, result)
            memory = self._mem(caller)
            if offset is not None:
                at = offset
            else:
                at = len(slot.node.data) if slot.flags & FDFLAGS_APPEND else slot.offset
            total = 0
            for ptr, length in vectors:
                write_at(slot.node, at, bytes(memory.read(caller, ptr, ptr + length)))
                at += length
                total += length
        except FsError as error:
            return error.errno
        if offset is None:
            slot.offset = at
        if total:
            slot.node.mtim = slot.node.ctim = self.tree.now()
        memory.write(caller, struct.pack("<I", total & U32), result & U32)
        return ESUCCESS

    def fs_seek(self, caller: Any, fd: int, offset: int, whence: int, result: int) -> int:
        try:
            slot = self._file(fd)
            memory = self._mem(caller)
            if not self._span(caller, memory, result & U32, 8):
                return EFAULT
        except FsError as error:
            return error.errno
        offset = offset - (1 << 64) if offset >= 1 << 63 else offset
        start = (0, slot.offset, len(slot.node.data))[whence]
        if start + offset < 0 or start + offset >= 1 << 63:
            return EINVAL
        slot.offset = start + offset
        memory.write(caller, struct.pack("<Q", slot.offset), result & U32)
        return ESUCCESS

    def fs_filestat(self, caller: Any, fd: int, ptr: int) -> int:
        slot = self._slot(fd)
        if slot is None:
            return EBADF
        try:
            self._put(caller, ptr, filestat(slot.node))
        except FsError as error:
            return error.errno
        return ESUCCESS

    def fs_fdstat(self, caller: Any, fd: int, ptr: int) -> int:
        slot = self._slot(fd)
        if slot is None:
            return EBADF
        stat = struct.pack("<BxH4xQQ", slot.node.type, slot.flags, slot.base, slot.inheriting)
        try:
            self._put(caller, ptr, stat)
        except FsError as error:
            return error.errno
        return ESUCCESS

    def fd_close(self, _caller: Any, fd: int) -> int:
        fd &= U32
        if self.fd_stream.pop(fd, None) is None and self.slots.pop(fd, None) is None:
            return EBADF
        return ESUCCESS

    def fd_renumber(self, _caller: Any, fd_from: int, fd_to: int) -> int:
        fd_from, fd_to = fd_from & U32, fd_to & U32
        if not (self.is_open(fd_from) and self.is_open(fd_to)):
            return EBADF
        if fd_from != fd_to:
            moved: Any = self.fd_stream.pop(fd_from, None)
            slot = self.slots.pop(fd_from, None)
            self.fd_stream.pop(fd_to, None)
            self.slots.pop(fd_to, None)
            if slot is not None:
                self.slots[fd_to] = slot
            else:
                self.fd_stream[fd_to] = moved
        return ESUCCESS

    def fd_prestat_get(self, caller: Any, fd: int, ptr: int) -> int:
        slot = self._slot(fd)
        if slot is None or slot.preopen < 0:
            return EBADF
        try:
            self._put(caller, ptr, struct.pack("<II", 0, len(self.guests[slot.preopen])))
        except FsError as error:
            return error.errno
        return ESUCCESS

    def fd_prestat_dir_name(self, caller: Any, fd: int, ptr: int, length: int) -> int:
        slot = self._slot(fd)
        if slot is None or slot.preopen < 0:
            return EBADF
        name = self.guests[slot.preopen]
        if length & U32 < len(name):
            return ENAMETOOLONG
        try:
            self._put(caller, ptr, name)
        except FsError as error:
            return error.errno
        return ESUCCESS

    def fd_advise(self, _caller: Any, fd: int, _offset: int, _len: int, advice: int) -> int:
        if advice & U32 > 5:
            return EINVAL
        return ESUCCESS if self._is_file(fd) else EBADF

    def _is_file(self, fd: int) -> bool:
        slot = self._slot(fd)
        return slot is not None and slot.kind == "file"

    def fd_allocate(self, _caller: Any, fd: int, _offset: int, _len: int) -> int:
        return ENOTSUP if self._is_file(fd) else EBADF

    def fd_sync(self, _caller: Any, fd: int) -> int:
        return ESUCCESS if self._slot(fd) is not None else EBADF

    def fd_datasync(self, caller: Any, fd: int) -> int:
        return self.fd_sync(caller, fd)

    def fd_fdstat_set_flags(self, _caller: Any, fd: int, flags: int) -> int:
        if flags & ~FDFLAGS_ALL:
            return EINVAL
        slot = self._slot(fd)
        if slot is None:
            return EBADF
        if flags & ~(FDFLAGS_APPEND | FDFLAGS_NONBLOCK):
            return EINVAL
        slot.flags = flags
        return ESUCCESS

    def fd_fdstat_set_rights(self, _caller: Any, fd: int, base: int, inheriting: int) -> int:
        slot = self._slot(fd)
        if slot is None:
            return EBADF
        if base & ~slot.base or inheriting & ~slot.inheriting:
            return ENOTCAPABLE
        slot.base, slot.inheriting = base, inheriting
        return ESUCCESS

    def fd_filestat_set_size(self, _caller: Any, fd: int, size: int) -> int:
        try:
            slot = self._file(fd)
            if not slot.base & RIGHT_FD_WRITE:
                return EBADF
            resize(slot.node, size)
        except FsError as error:
            return error.errno
        slot.node.mtim = slot.node.ctim = self.tree.now()
        return ESUCCESS

    def fd_filestat_set_times(self, _caller: Any, fd: int, atim: int, mtim: int, flags: int) -> int:
        if flags & ~0xF:
            return EINVAL
        slot = self._slot(fd)
        return EBADF if slot is None else set_times(self.tree, slot.node, atim, mtim, flags)

    def fd_readdir(  # noqa: PLR0917 - the WASI signature
        self, caller: Any, fd: int, buf: int, buf_len: int, cookie: int, used: int
    ) -> int:
        slot = self._slot(fd)
        if slot is None or slot.kind != "dir":
            return EBADF
        memory, buf, buf_len = self._mem(caller), buf & U32, buf_len & U32
        if not (
            self._span(caller, memory, buf, buf_len) and self._span(caller, memory, used & U32, 4)
        ):
            return EFAULT
        data = readdir_bytes(slot.node, cookie, buf_len)
        memory.write(caller, data, buf)
        memory.write(caller, struct.pack("<I", len(data)), used & U32)
        return ESUCCESS

    # --- path calls -----------------------------------------------------------------------------
    def path_open(  # noqa: PLR0917 - the WASI signature
        self,
        caller: Any,
        dirfd: int,
        lookup: int,
        path: int,
        length: int,
        oflags: int,
        base: int,
        inheriting: int,
        fdflags: int,
        fd_ptr: int,
    ) -> int:
        if oflags & ~0xF or fdflags & ~FDFLAGS_ALL or lookup & ~1:
            return EINVAL
        if not self._span(caller, self._mem(caller), fd_ptr & U32, 4):
            return EFAULT  # before anything is created
        try:
            found = self._walk(caller, dirfd, path, length, bool(lookup & 1))
            node = found.node
            if node is None:
                if not oflags & OFLAGS_CREAT:
                    return ENOENT
                if oflags & OFLAGS_DIRECTORY:
                    return EINVAL
                if found.slash:
                    return EISDIR
                if found.directory is None:  # "." and ".." always exist: cannot happen
                    return EEXIST
                node = self.tree.new(REGULAR_FILE, found.directory.dev)
                self.tree.link(found.directory, found.name, node)
            elif oflags & OFLAGS_CREAT and oflags & OFLAGS_EXCL:
                return EEXIST
            elif node.type == SYMBOLIC_LINK:
                return ELOOP
            elif oflags & OFLAGS_DIRECTORY and node.type != DIRECTORY:
                return ENOTDIR
            elif node.type == DIRECTORY and (base & WRITE_RIGHTS or oflags & OFLAGS_TRUNC):
                return EISDIR
            elif oflags & OFLAGS_TRUNC:
                resize(node, 0)
        except FsError as error:
            return error.errno
        free = next((fd for fd in range(FD_MAX) if not self.is_open(fd)), None)
        if free is None:
            return EMFILE
        is_dir = node.type == DIRECTORY
        allowed = DIR_RIGHTS if is_dir else FILE_RIGHTS
        kind = "dir" if is_dir else "file"
        self.slots[free] = Slot(kind, node, base & allowed, inheriting & RIGHTS_ALL, fdflags)
        self._put(caller, fd_ptr, struct.pack("<I", free))
        return ESUCCESS

    def path_filestat_get(  # noqa: PLR0917 - the WASI signature
        self, caller: Any, fd: int, lookup: int, path: int, length: int, ptr: int
    ) -> int:
        try:
            found = self._walk(caller, fd, path, length, bool(lookup & 1))
            if found.node is None:
                return ENOENT
            self._put(caller, ptr, filestat(found.node))
        except FsError as error:
            return error.errno
        return ESUCCESS

    def path_filestat_set_times(  # noqa: PLR0917 - the WASI signature
        self,
        caller: Any,
        fd: int,
        lookup: int,
        path: int,
        length: int,
        atim: int,
        mtim: int,
        flags: int,
    ) -> int:
        if flags & ~0xF:
            return EINVAL
        if flags == 0:
            return ESUCCESS
        try:
            found = self._walk(caller, fd, path, length, bool(lookup & 1))
        except FsError as error:
            return error.errno
        if found.node is None:
            return ENOENT
        return set_times(self.tree, found.node, atim, mtim, flags)

    def path_create_directory(self, caller: Any, fd: int, path: int, length: int) -> int:
        try:
            found = self._walk(caller, fd, path, length, False)
        except FsError as error:
            return error.errno
        if found.node is not None or found.directory is None:
            return EEXIST
        self.tree.link(found.directory, found.name, self.tree.new(DIRECTORY, found.directory.dev))
        return ESUCCESS

    def path_remove_directory(self, caller: Any, fd: int, path: int, length: int) -> int:
        try:
            found = self._walk(caller, fd, path, length, False)
        except FsError as error:
            return error.errno
        if found.node is None:
            return ENOENT
        if found.directory is None or found.slash:
            return EINVAL
        if found.node.type != DIRECTORY:
            return ENOTDIR
        if found.node.entries:
            return ENOTEMPTY
        self.tree.unlink(found.directory, found.name)
        return ESUCCESS

    def path_unlink_file(self, caller: Any, fd: int, path: int, length: int) -> int:
        try:
            found = self._walk(caller, fd, path, length, False)
        except FsError as error:
            return error.errno
        if found.node is None:
            return ENOENT
        if found.directory is None or found.node.type == DIRECTORY:
            return EISDIR
        self.tree.unlink(found.directory, found.name)
        return ESUCCESS

    def path_symlink(  # noqa: PLR0917 - the WASI signature
        self, caller: Any, target: int, target_len: int, fd: int, path: int, length: int
    ) -> int:
        try:
            text = self._path(caller, target, target_len)
            if text.startswith(b"/"):
                return EPERM
            found = self._walk(caller, fd, path, length, False)
        except FsError as error:
            return error.errno
        if found.node is not None or found.directory is None:
            return EEXIST
        if found.slash:
            return ENOENT
        node = self.tree.new(SYMBOLIC_LINK, found.directory.dev)
        node.data = bytearray(text)
        self.tree.link(found.directory, found.name, node)
        return ESUCCESS

    def path_readlink(  # noqa: PLR0917 - the WASI signature
        self, caller: Any, fd: int, path: int, length: int, buf: int, buf_len: int, used: int
    ) -> int:
        try:
            found = self._walk(caller, fd, path, length, False)
            if found.node is None:
                return ENOENT
            if found.node.type != SYMBOLIC_LINK:
                return EINVAL
            memory = self._mem(caller)
            buf, buf_len = buf & U32, buf_len & U32
            if not (
                self._span(caller, memory, buf, buf_len)
                and self._span(caller, memory, used & U32, 4)
            ):
                return EFAULT
        except FsError as error:
            return error.errno
        data = bytes(found.node.data[:buf_len])
        memory.write(caller, data, buf)
        memory.write(caller, struct.pack("<I", len(data)), used & U32)
        return ESUCCESS

    def path_link(  # noqa: PLR0917 - the WASI signature
        self,
        caller: Any,
        old_fd: int,
        lookup: int,
        old_path: int,
        old_len: int,
        new_fd: int,
        new_path: int,
        new_len: int,
    ) -> int:
        try:
            source = self._walk(caller, old_fd, old_path, old_len, bool(lookup & 1))
            target = self._walk(caller, new_fd, new_path, new_len, False)
        except FsError as error:
            return error.errno
        if source.node is None:
            return ENOENT
        if source.node.type == DIRECTORY:
            return EPERM
        if target.node is not None or target.directory is None:
            return EEXIST
        if target.slash:
            return ENOENT
        if target.directory.dev != source.node.dev:
            return EXDEV
        self.tree.link(target.directory, target.name, source.node)
        source.node.ctim = self.tree.now()
        return ESUCCESS

    def path_rename(  # noqa: PLR0917 - the WASI signature
        self,
        caller: Any,
        old_fd: int,
        old_path: int,
        old_len: int,
        new_fd: int,
        new_path: int,
        new_len: int,
    ) -> int:
        try:
            source = self._walk(caller, old_fd, old_path, old_len, False)
            target = self._walk(caller, new_fd, new_path, new_len, False)
        except FsError as error:
            return error.errno
        err = rename_check(source, target)
        if err or target.node is source.node:
            return err
        node = source.node
        if node is None or source.directory is None or target.directory is None:
            return EINVAL  # rename_check refused these already
        if target.node is not None:
            self.tree.unlink(target.directory, target.name)
        self.tree.link(target.directory, target.name, node)
        self.tree.unlink(source.directory, source.name)
        if node.type == DIRECTORY:
            node.nlink = 2 + sum(child.type == DIRECTORY for child in node.entries.values())
            node.parent = target.directory
        return ESUCCESS
