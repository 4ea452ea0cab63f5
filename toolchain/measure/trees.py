"""Directory trees for ``keep run --dir``: read on the host, encoded canonically, digested.

This is the host half of preopened directories (issue 14, slice 2). What it promises:

* ``DirSpec.parse("HOST[::GUEST][:rw]")`` takes wasmtime's syntax: ``HOST::GUEST`` preopens the
  host directory HOST as GUEST; ``HOST`` alone preopens it under its own name, as written. A
  final ``:rw`` asks for the application's changes back at exit (``DirSpec.rw``; the result
  blob below, written by ``runtime/run/writeback.py``); without it they are discarded.
* ``read_tree(spec)`` walks HOST once, never following a symbolic link: directories, regular
  files and symbolic links (stored as links, their target as written); anything else (a device,
  a socket, a FIFO) is refused, naming the path. Names and link targets must be UTF-8 (WASI
  paths are strings). A hard-linked file appears once per name.
* The size is bounded: ``TREES_MAX_BYTES`` over the encodings of all trees of one run. Reading
  stops as soon as the bound is passed and the run is refused before boot (``InputError``
  naming the tree, the size reached and the limit).
* The canonical encoding (``encode_tree``), the same bytes the keep receives and hashes:
  ``b"KEEPTREE1\\0"``, then one record per entry in ascending order of its path bytes (the root
  first, its path empty; a directory always before what it holds)::

      u8  type      3 directory, 4 regular file, 7 symbolic link (WASI filetype values)
      u16 mode      permission bits (st_mode & 0o777)
      u32 path_len  then the path: UTF-8, relative to the tree's root, "/"-separated
      u64 data_len  then the data: a file's contents, a link's target, nothing for a directory

  all integers little-endian. Timestamps, owners, inode numbers and the host path are not part
  of it: the same tree gives the same bytes on any host.
* ``tree_digest`` is SHA-512 of that encoding; ``bind_report_data(nonce, digests, rw)`` is
  SHA-512(nonce || digest_1 || ... || digest_n) over the trees in command-line order, and the
  nonce itself when there are none (a run without ``--dir`` binds what it always bound). When
  a tree is ``:rw`` the flags are bound too: SHA-512(nonce || digests || ``b"KEEPRW1\0"`` ||
  one byte per tree, 1 for ``:rw``), so the evidence proves which trees the keep was told to
  hand back (a run without ``:rw`` binds what it bound before).
* ``decode_tree`` is the one decoder of an encoding (the nil file system, the writer and the
  VMM's check of a result use it; ``keep_fs.c`` is its C twin): every length checked, the root
  first, types 3/4/7 only, no absolute path, no empty, ``.`` or ``..`` name, every entry after
  its directory, names of one directory in ascending order; ``encode_records`` is the one
  encoder (records sorted into the canonical order).
* ``transfer_blob(nonce, trees)`` is what the VMM's TREES call serves
  (``runtime/guest/ukernel/ABI.md``):
  ``b"KTREES2\0"``, the nonce, ``u32`` count, then per tree ``u32`` guest path length, the guest
  path (UTF-8), ``u32`` flags (bit 0: ``:rw``, the rest zero), ``u64`` encoding length, the
  encoding. ``accept_transfer_blob`` is the keep's check of it
  (``runtime/guest/wasm/keep_trees.c``, ported for the nil backend): it recomputes every digest
  and refuses the blob unless the binding (flags included) equals the REPORT_DATA that was
  attested: a host cannot mark a tree ``:rw`` behind the evidence's back.
* ``result_blob(trees)`` is what the keep hands back at the application's exit (call RESULT,
  ABI version 3): ``b"KRESULT\\0"``, ``u32`` count, then per tree ``u32`` index (its place in
  ``--dir`` order), ``u64`` encoding length, the canonical encoding of the tree as the
  application left it. ``accept_result_blob`` is the host's check (the VMM's and the runner's):
  at most ``RESULT_MAX_BYTES``, indices ascending and each one a tree marked ``:rw``, every
  encoding decodable; anything else is an ``EvidenceError`` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import EvidenceError, InputError

# The magics and bounds the keep checks too (keep_abi.h's KEEP_*): the ABI declares them.
from toolchain.measure.abi import (
    RESULT_MAGIC,
    RESULT_MAX_BYTES,
    RW_BINDING_TAG,
    TRANSFER_MAGIC,
    TREE_FLAG_RW,
    TREE_MAGIC,
    TREES_MAX_BYTES,
    TREES_MAX_COUNT,
)

FILETYPE_DIRECTORY = 3
FILETYPE_REGULAR_FILE = 4
FILETYPE_SYMBOLIC_LINK = 7
_RECORD_HEAD = struct.Struct("<BHI")  # type, mode, path length


@dataclass(frozen=True)
class DirSpec:
    """One ``--dir HOST[::GUEST][:rw]``: the host directory, the path the application sees,
    and whether its changes are written back at exit."""

    host: Path
    guest: str
    rw: bool = False

    def __post_init__(self) -> None:
        if not self.guest:
            raise InputError(f"--dir {self.host}: the guest path is empty")
        if "\0" in self.guest:
            raise InputError(f"--dir {self.host}: the guest path contains a NUL byte")

    @classmethod
    def parse(cls, text: str) -> DirSpec:
        rw = text.endswith(":rw")
        host, separator, guest = (text[:-3] if rw else text).partition("::")
        if not host:
            raise InputError(f"--dir {text!r}: no host directory (expected HOST[::GUEST][:rw])")
        if separator and not guest:
            raise InputError(f"--dir {text!r}: no guest path after '::' (expected HOST::GUEST)")
        return cls(Path(host), guest if separator else host, rw)


@dataclass(frozen=True)
class Tree:
    """A tree as read: where it came from, where the application sees it, its encoding."""

    spec: DirSpec
    encoding: bytes

    def __post_init__(self) -> None:
        if not self.encoding.startswith(TREE_MAGIC):
            raise InputError(f"--dir {self.spec.host}: not a canonical tree encoding")

    @property
    def digest(self) -> bytes:
        return tree_digest(self.encoding)


def tree_digest(encoding: bytes) -> bytes:
    """SHA-512 of a tree's canonical encoding (what the keep computes over what it received)."""
    return hashlib.sha512(encoding).digest()


def bind_report_data(nonce: bytes, digests: Sequence[bytes], rw: Sequence[bool] = ()) -> bytes:
    """REPORT_DATA for a run: the nonce alone without trees, else SHA-512(nonce || digests),
    followed by ``RW_BINDING_TAG`` and one byte per tree when any tree is ``:rw``."""
    if not digests:
        return nonce
    if len(rw) not in (0, len(digests)):
        raise InputError(f"{len(rw)} :rw flags for {len(digests)} trees")
    flags = RW_BINDING_TAG + bytes(int(bool(flag)) for flag in rw) if any(rw) else b""
    return hashlib.sha512(nonce + b"".join(digests) + flags).digest()


def transfer_blob(nonce: bytes, trees: Sequence[Tree]) -> bytes:
    """The bytes the TREES call serves; empty without trees (the keep then checks nothing)."""
    if not trees:
        return b""
    parts = [TRANSFER_MAGIC, nonce, struct.pack("<I", len(trees))]
    for tree in trees:
        guest = tree.spec.guest.encode()
        flags = TREE_FLAG_RW if tree.spec.rw else 0
        parts += [struct.pack("<I", len(guest)), guest, struct.pack("<I", flags)]
        parts += [struct.pack("<Q", len(tree.encoding)), tree.encoding]
    return b"".join(parts)


@dataclass(frozen=True)
class Received:
    """One tree as the keep accepted it from the transfer blob."""

    guest: str
    encoding: bytes
    rw: bool = False


class _Reader:
    """Reads a blob front to back; every length is checked against what is left."""

    def __init__(self, blob: bytes, fail: Callable[[str], EvidenceError]) -> None:
        self.blob, self.at, self.fail = blob, 0, fail

    def take(self, size: int) -> bytes:
        if size > len(self.blob) - self.at:
            raise self.fail("malformed (truncated)")
        self.at += size
        return self.blob[self.at - size : self.at]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def end(self) -> None:
        if self.at != len(self.blob):
            raise self.fail("malformed (bytes after the last tree)")


def accept_transfer_blob(blob: bytes, attested: bytes) -> list[Received]:
    """keep_trees.c's check: each tree as received, or ``EvidenceError``."""
    if not blob:
        return []

    def fail(why: str) -> EvidenceError:
        return EvidenceError(f"the preopened trees are {why}")

    reader = _Reader(blob, fail)
    if reader.take(len(TRANSFER_MAGIC)) != TRANSFER_MAGIC:
        raise fail("malformed (header)")
    nonce = reader.take(64)
    count = reader.u32()
    if not 0 < count <= TREES_MAX_COUNT:
        raise fail("malformed (header)")
    trees, digests, flags_seen = [], [], []
    for _ in range(count):
        guest_len = reader.u32()
        guest = reader.take(guest_len) if guest_len else b""
        flags = reader.u32()
        encoding = reader.take(reader.u64())
        if not guest or flags & ~TREE_FLAG_RW or not encoding.startswith(TREE_MAGIC):
            raise fail("malformed (a tree)")
        trees.append(Received(guest.decode("utf-8", "replace"), encoding, bool(flags)))
        digests.append(tree_digest(encoding))
        flags_seen.append(bool(flags))
    reader.end()
    if bind_report_data(nonce, digests, flags_seen) != attested:
        raise fail("not the ones this keep attested (REPORT_DATA differs)")
    return trees


def result_blob(trees: Sequence[tuple[int, bytes]]) -> bytes:
    """What a keep hands back at exit: (index in --dir order, encoding) per ``:rw`` tree."""
    parts = [RESULT_MAGIC, struct.pack("<I", len(trees))]
    for index, encoding in trees:
        parts += [struct.pack("<IQ", index, len(encoding)), encoding]
    return b"".join(parts)


def accept_result_blob(
    blob: bytes, rw: Sequence[bool], *, limit: int = RESULT_MAX_BYTES
) -> dict[int, bytes]:
    """The host's check of a keep's result: {tree index: encoding}, or ``EvidenceError``.

    ``rw`` says, per tree in ``--dir`` order, whether the user asked for it back. Every
    encoding is decoded in full here, so a caller writes nothing unless all of them are sound.
    """

    def fail(why: str) -> EvidenceError:
        return EvidenceError(f"the keep's result is {why}; nothing was written back")

    if len(blob) > limit:
        raise fail(f"{len(blob)} bytes, over the limit of {limit} (RESULT_MAX_BYTES)")
    reader = _Reader(blob, fail)
    if reader.take(len(RESULT_MAGIC)) != RESULT_MAGIC:
        raise fail(f"malformed (magic {blob[:8]!r}, expected {RESULT_MAGIC!r})")
    count = reader.u32()
    if count > len(rw):
        raise fail(f"malformed ({count} trees, the run preopened {len(rw)})")
    found: dict[int, bytes] = {}
    for _ in range(count):
        index = reader.u32()
        if index >= len(rw) or not rw[index]:
            raise fail(f"refused: tree {index} was not preopened with :rw")
        if found and index <= max(found):
            raise fail(f"malformed (tree {index} out of order or repeated)")
        encoding = reader.take(reader.u64())
        try:
            decode_tree(encoding, what=f"tree {index} of the keep's result")
        except EvidenceError as exc:
            raise EvidenceError(f"{exc.message}; nothing was written back") from None
        found[index] = encoding
    reader.end()
    return found


@dataclass(frozen=True)
class Record:
    """One entry of a tree encoding: WASI file type, permission bits, path, data."""

    kind: int
    mode: int
    path: bytes
    data: bytes = b""


def encode_records(records: Iterable[Record]) -> bytes:
    """The canonical encoding of these records: sorted by path bytes, the root (path b"") first."""
    parts = [TREE_MAGIC]
    for record in sorted(records, key=lambda r: r.path):
        head = _RECORD_HEAD.pack(record.kind, record.mode, len(record.path))
        parts += [head, record.path, struct.pack("<Q", len(record.data)), record.data]
    return b"".join(parts)


def decode_tree(encoding: bytes, *, what: str = "a preopened tree") -> list[Record]:
    """Every record of an encoding, checked as untrusted input (``keep_fs.c`` checks the same)."""

    def fail(why: str) -> EvidenceError:
        reason, colon, shown = why.partition(": ")
        return EvidenceError(f"{what} is malformed ({reason}){colon}{shown}")

    if not encoding.startswith(TREE_MAGIC):
        raise fail("not a canonical tree encoding")
    at, records = len(TREE_MAGIC), list[Record]()
    last_name: dict[bytes, bytes] = {}  # directory path -> the last name seen in it
    while at < len(encoding):
        if at + _RECORD_HEAD.size > len(encoding):
            raise fail("a record runs past its end")
        kind, mode, path_len = _RECORD_HEAD.unpack_from(encoding, at)
        at += _RECORD_HEAD.size
        path = encoding[at : at + path_len]
        at += path_len
        if len(path) != path_len or at + 8 > len(encoding):
            raise fail("a record runs past its end")
        (data_len,) = struct.unpack_from("<Q", encoding, at)
        data = encoding[at + 8 : at + 8 + data_len]
        at += 8 + data_len
        if len(data) != data_len:
            raise fail("a record runs past its end")
        if kind not in (FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SYMBOLIC_LINK) or (
            kind == FILETYPE_DIRECTORY and data
        ):
            raise fail("an entry's type")
        if not records:
            if kind != FILETYPE_DIRECTORY or path:
                raise fail("it does not start with its root")
        else:
            _check_path(path, last_name, fail)
        if kind == FILETYPE_DIRECTORY:
            last_name[path] = b""
        records.append(Record(kind, mode, path, data))
    if not records:
        raise fail("no root")
    return records


def _check_path(
    path: bytes, last_name: dict[bytes, bytes], fail: Callable[[str], EvidenceError]
) -> None:
    """A path's directory came first as a directory, and its name follows the previous one.

    The reasons are keep_fs.c's words (the nil and kvm backends print the same line); the path
    follows them, so a refusal shows what was wrong.
    """
    shown = f": {path[:80]!r}"
    if path.startswith(b"/"):
        raise fail("an absolute path" + shown)
    directory, _slash, name = path.rpartition(b"/")
    previous = last_name.get(directory)
    if previous is None:  # also every path through "..", ".", or an empty name
        raise fail("an entry before its directory" + shown)
    # ascending, so each name is new
    if name in (b"", b".", b"..") or b"\0" in name or previous >= name:
        raise fail("a name" + shown)
    last_name[directory] = name


def read_trees(specs: Sequence[DirSpec], *, limit: int = TREES_MAX_BYTES) -> list[Tree]:
    """Read every tree of one run; refuses (before boot) when together they pass ``limit``."""
    if len(specs) > TREES_MAX_COUNT:
        raise InputError(f"{len(specs)} --dir options: a keep takes at most {TREES_MAX_COUNT}")
    _refuse_overlapping_rw(specs)
    trees: list[Tree] = []
    used = 0
    for spec in specs:
        tree = read_tree(spec, limit=limit - used)
        used += len(tree.encoding)
        trees.append(tree)
    return trees


def _refuse_overlapping_rw(specs: Sequence[DirSpec]) -> None:
    """A ``:rw`` directory may not be, hold or lie in another ``--dir``: the write-back of one
    would change what the other was read as (or be overwritten by it)."""
    resolved = [spec.host.resolve() for spec in specs]
    for index, spec in enumerate(specs):
        if not spec.rw:
            continue
        here = resolved[index]
        for other, (there, where) in enumerate(zip(specs, resolved, strict=True)):
            if other != index and (here == where or here in where.parents or where in here.parents):
                raise InputError(
                    f"--dir {spec.host}:rw overlaps --dir {there.host}: a directory written "
                    "back may not be, hold or lie in another --dir"
                )


def read_tree(spec: DirSpec, *, limit: int = TREES_MAX_BYTES) -> Tree:
    """Walk ``spec.host`` (never following links) into its canonical encoding."""
    root = spec.host
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            raise InputError(f"--dir {root}: not a directory")
    except OSError as exc:
        raise InputError(f"--dir {root}: cannot read it: {exc.strerror}") from exc
    encoder = _Encoder(spec, limit)
    encoder.add(root, b"")
    return Tree(spec, encoder.finish())


def encode_tree(spec: DirSpec, *, limit: int = TREES_MAX_BYTES) -> bytes:
    """The canonical encoding of ``spec.host`` (``read_tree(spec).encoding``)."""
    return read_tree(spec, limit=limit).encoding


class _Encoder:
    """Collects records, sorted at the end, and stops as soon as the size passes the limit."""

    def __init__(self, spec: DirSpec, limit: int) -> None:
        self.spec = spec
        self.limit = limit
        self.size = len(TREE_MAGIC)
        self.records: list[Record] = []

    def add(self, host_path: Path, relative: bytes) -> None:
        try:
            info = os.lstat(host_path)
            if stat.S_ISDIR(info.st_mode):
                self._record(FILETYPE_DIRECTORY, info.st_mode, relative, b"")
                for entry in sorted(host_path.iterdir()):
                    child = _utf8(self.spec, entry, os.fsencode(entry.name))
                    self.add(entry, relative + b"/" + child if relative else child)
            elif stat.S_ISREG(info.st_mode):
                self._check(relative, info.st_size)
                self._record(FILETYPE_REGULAR_FILE, info.st_mode, relative, _read(host_path))
            elif stat.S_ISLNK(info.st_mode):
                target = _utf8(self.spec, host_path, os.fsencode(host_path.readlink()))
                self._record(FILETYPE_SYMBOLIC_LINK, info.st_mode, relative, target)
            else:
                raise InputError(
                    f"--dir {self.spec.host}: {host_path} is neither a directory, a regular "
                    "file nor a symbolic link"
                )
        except OSError as exc:
            raise InputError(
                f"--dir {self.spec.host}: cannot read {host_path}: {exc.strerror}"
            ) from exc

    def _check(self, relative: bytes, data_size: int) -> None:
        total = self.size + _RECORD_HEAD.size + len(relative) + 8 + data_size
        if total > self.limit:
            raise InputError(
                f"--dir {self.spec.host}: the preopened trees would take at least {total} bytes, "
                f"over the limit of {self.limit} bytes left for them "
                f"(TREES_MAX_BYTES = {TREES_MAX_BYTES})",
                hint="preopen a smaller directory",
            )

    def _record(self, filetype: int, mode: int, relative: bytes, data: bytes) -> None:
        self._check(relative, len(data))
        self.size += _RECORD_HEAD.size + len(relative) + 8 + len(data)
        self.records.append(Record(filetype, stat.S_IMODE(mode) & 0o777, relative, data))

    def finish(self) -> bytes:
        return encode_records(self.records)


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:  # one read: the bytes encoded are the bytes digested
        return handle.read()


def _utf8(spec: DirSpec, where: Path, name: bytes) -> bytes:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"--dir {spec.host}: {where!s} has a name or link target that is not UTF-8 "
            "(WASI paths are strings)"
        ) from None
    return name
