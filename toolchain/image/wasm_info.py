"""What a WebAssembly module imports and exports, read from its binary (no compilation).

Only the type, import, function and export sections are decoded; the rest is skipped by length.
The module is validated separately (by wasmtime) before this runs, so a decoding failure here
means a construct this reader does not know (it becomes ``InputError``).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.errors import InputError

_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
_VALTYPES.update({0x70: "funcref", 0x6F: "externref"})
_KIND_NAMES = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True)
class FuncType:
    params: tuple[str, ...]
    results: tuple[str, ...]

    def __str__(self) -> str:
        return f"({', '.join(self.params)}) -> ({', '.join(self.results)})"


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str
    type: FuncType | None  # for functions


@dataclass(frozen=True)
class Export:
    name: str
    kind: str
    type: FuncType | None  # for functions


@dataclass(frozen=True)
class ModuleInfo:
    imports: tuple[Import, ...]
    exports: tuple[Export, ...]
    memories: int = 0  # declared in the memory section (imported ones are among ``imports``)

    def export(self, name: str) -> Export | None:
        return next((e for e in self.exports if e.name == name), None)


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise InputError("truncated WebAssembly module")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise InputError("malformed LEB128 integer in WebAssembly module")

    def name(self) -> str:
        length = self.uleb()
        if self.pos + length > self.end:
            raise InputError("truncated WebAssembly module")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("a WebAssembly name is not UTF-8") from None

    def valtype(self) -> str:
        code = self.byte()
        if code not in _VALTYPES:
            raise InputError(f"unsupported WebAssembly value type 0x{code:02x}")
        return _VALTYPES[code]

    def limits(self) -> None:
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()


def read_module_info(wasm: bytes) -> ModuleInfo:
    """Imports and exports (with function types) of a binary module."""
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise InputError("not a WebAssembly binary module (bad magic or version)")
    reader = _Reader(wasm, 8)
    types: list[FuncType] = []
    func_types: list[FuncType] = []  # imported functions first, then defined ones
    imports: list[Import] = []
    raw_exports: list[tuple[str, int, int]] = []
    memories = 0
    while reader.pos < reader.end:
        section_id = reader.byte()
        size = reader.uleb()
        body = _Reader(wasm, reader.pos, reader.pos + size)
        if body.end > len(wasm):
            raise InputError("truncated WebAssembly module")
        reader.pos += size
        if section_id == 1:
            for _ in range(body.uleb()):
                form = body.byte()
                if form != 0x60:
                    raise InputError(f"unsupported WebAssembly type form 0x{form:02x}")
                params = tuple(body.valtype() for _ in range(body.uleb()))
                results = tuple(body.valtype() for _ in range(body.uleb()))
                types.append(FuncType(params, results))
        elif section_id == 2:
            for _ in range(body.uleb()):
                module, name, kind = body.name(), body.name(), body.byte()
                ftype: FuncType | None = None
                if kind == 0:
                    ftype = _type_at(types, body.uleb())
                    func_types.append(ftype)
                elif kind == 1:
                    body.byte()
                    body.limits()
                elif kind == 2:
                    body.limits()
                elif kind == 3:
                    body.valtype()
                    body.byte()
                else:
                    raise InputError(f"unsupported WebAssembly import kind {kind}")
                imports.append(Import(module, name, _KIND_NAMES[kind], ftype))
        elif section_id == 3:
            func_types.extend(_type_at(types, body.uleb()) for _ in range(body.uleb()))
        elif section_id == 5:
            memories = body.uleb()
        elif section_id == 7:
            for _ in range(body.uleb()):
                name, kind = body.name(), body.byte()
                raw_exports.append((name, kind, body.uleb()))
    exports = []
    for name, kind, index in raw_exports:
        etype = None
        if kind == 0:
            if index >= len(func_types):
                raise InputError(f"export {name!r} names function {index}, which does not exist")
            etype = func_types[index]
        exports.append(Export(name, _KIND_NAMES.get(kind, f"kind{kind}"), etype))
    return ModuleInfo(tuple(imports), tuple(exports), memories)


def _type_at(types: list[FuncType], index: int) -> FuncType:
    if index >= len(types):
        raise InputError(f"WebAssembly type index {index} out of range")
    return types[index]
