"""Directory trees for ``keep run --dir``: read on the host, encoded canonically, digested.

This is the host half of preopened directories (issue 14, slice 2). What it promises:

* ``DirSpec.parse("HOST[::GUEST]")`` takes wasmtime's syntax: ``HOST::GUEST`` preopens the host
  directory HOST as GUEST; ``HOST`` alone preopens it under its own name, as written.
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
* ``tree_digest`` is SHA-512 of that encoding; ``bind_report_data(nonce, digests)`` is
  SHA-512(nonce || digest_1 || ... || digest_n) over the trees in command-line order, and the
  nonce itself when there are none (a run without ``--dir`` binds what it always bound).
* ``transfer_blob(nonce, trees)`` is what the VMM's TREES call serves
  (``runtime/guest/ukernel/ABI.md``):
  ``b"KTREES1\0"``, the nonce, ``u32`` count, then per tree ``u32`` guest path length, the guest
  path (UTF-8), ``u64`` encoding length, the encoding. ``accept_transfer_blob`` is the keep's
  check of it (``runtime/guest/wasm/keep_trees.c``, ported for the nil backend): it recomputes every
  digest and refuses the blob unless the binding equals the REPORT_DATA that was attested.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import EvidenceError, InputError

# The magics and bounds the keep checks too (keep_abi.h's KEEP_TREE*): the ABI declares them.
from toolchain.measure.abi import TRANSFER_MAGIC, TREE_MAGIC, TREES_MAX_BYTES, TREES_MAX_COUNT

FILETYPE_DIRECTORY = 3
FILETYPE_REGULAR_FILE = 4
FILETYPE_SYMBOLIC_LINK = 7
_RECORD_HEAD = struct.Struct("<BHI")  # type, mode, path length


@dataclass(frozen=True)
class DirSpec:
    """One ``--dir HOST[::GUEST]``: the host directory and the path the application sees."""

    host: Path
    guest: str

    def __post_init__(self) -> None:
        if not self.guest:
            raise InputError(f"--dir {self.host}: the guest path is empty")
        if "\0" in self.guest:
            raise InputError(f"--dir {self.host}: the guest path contains a NUL byte")

    @classmethod
    def parse(cls, text: str) -> DirSpec:
        host, separator, guest = text.partition("::")
        if not host:
            raise InputError(f"--dir {text!r}: no host directory (expected HOST[::GUEST])")
        if separator and not guest:
            raise InputError(f"--dir {text!r}: no guest path after '::' (expected HOST::GUEST)")
        return cls(Path(host), guest if separator else host)


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


def bind_report_data(nonce: bytes, digests: Sequence[bytes]) -> bytes:
    """REPORT_DATA for a run: the nonce alone without trees, else SHA-512(nonce || digests)."""
    if not digests:
        return nonce
    return hashlib.sha512(nonce + b"".join(digests)).digest()


def transfer_blob(nonce: bytes, trees: Sequence[Tree]) -> bytes:
    """The bytes the TREES call serves; empty without trees (the keep then checks nothing)."""
    if not trees:
        return b""
    parts = [TRANSFER_MAGIC, nonce, struct.pack("<I", len(trees))]
    for tree in trees:
        guest = tree.spec.guest.encode()
        parts += [struct.pack("<I", len(guest)), guest, struct.pack("<Q", len(tree.encoding))]
        parts.append(tree.encoding)
    return b"".join(parts)


def accept_transfer_blob(blob: bytes, attested: bytes) -> list[tuple[str, bytes]]:
    """keep_trees.c's check: (guest path, encoding) per tree, or ``EvidenceError``."""
    if not blob:
        return []

    def fail(why: str) -> EvidenceError:
        return EvidenceError(f"the preopened trees are {why}")

    at = 0

    def take(size: int) -> bytes:
        nonlocal at
        if size > len(blob) - at:
            raise fail("malformed (truncated)")
        at += size
        return blob[at - size : at]

    if take(len(TRANSFER_MAGIC)) != TRANSFER_MAGIC:
        raise fail("malformed (header)")
    nonce = take(64)
    (count,) = struct.unpack("<I", take(4))
    if not 0 < count <= TREES_MAX_COUNT:
        raise fail("malformed (header)")
    trees, digests = [], []
    for _ in range(count):
        (guest_len,) = struct.unpack("<I", take(4))
        guest = take(guest_len) if guest_len else b""
        (length,) = struct.unpack("<Q", take(8))
        encoding = take(length)
        if not guest or not encoding.startswith(TREE_MAGIC):
            raise fail("malformed (a tree)")
        trees.append((guest.decode("utf-8", "replace"), encoding))
        digests.append(tree_digest(encoding))
    if at != len(blob):
        raise fail("malformed (bytes after the last tree)")
    if hashlib.sha512(nonce + b"".join(digests)).digest() != attested:
        raise fail("not the ones this keep attested (REPORT_DATA differs)")
    return trees


def read_trees(specs: Sequence[DirSpec], *, limit: int = TREES_MAX_BYTES) -> list[Tree]:
    """Read every tree of one run; refuses (before boot) when together they pass ``limit``."""
    if len(specs) > TREES_MAX_COUNT:
        raise InputError(f"{len(specs)} --dir options: a keep takes at most {TREES_MAX_COUNT}")
    trees: list[Tree] = []
    used = 0
    for spec in specs:
        tree = read_tree(spec, limit=limit - used)
        used += len(tree.encoding)
        trees.append(tree)
    return trees


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
        self.records: list[tuple[bytes, bytes]] = []  # (path, record)

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
        head = _RECORD_HEAD.pack(filetype, stat.S_IMODE(mode) & 0o777, len(relative))
        record = head + relative + struct.pack("<Q", len(data)) + data
        self.size += len(record)
        self.records.append((relative, record))

    def finish(self) -> bytes:
        return TREE_MAGIC + b"".join(record for _path, record in sorted(self.records))


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
