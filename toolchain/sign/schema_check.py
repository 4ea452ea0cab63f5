"""A small JSON Schema (draft 2020-12) validator for the subset our predicate schema uses.

Supported keywords: type, enum, const, required, properties, additionalProperties, items,
minItems, maxItems, minLength, maxLength, pattern, minimum, maximum, and local ``$ref`` to
``#/$defs/NAME``. A schema using any other validation keyword is refused when it is loaded, so the
validator never silently ignores a constraint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from toolchain.errors import InputError

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "$comment", "examples"}
_VALIDATION = {
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "$ref",
}

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _check_supported(schema: object, where: str) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InputError(f"JSON schema {where}: not an object")
    unknown = set(schema) - _ANNOTATIONS - _VALIDATION
    if unknown:
        raise InputError(f"JSON schema {where}: unsupported keyword(s) {sorted(unknown)}")
    for name, sub in schema.get("properties", {}).items():
        _check_supported(sub, f"{where}/properties/{name}")
    for name, sub in schema.get("$defs", {}).items():
        _check_supported(sub, f"{where}/$defs/{name}")
    for key in ("items", "additionalProperties"):
        if key in schema:
            _check_supported(schema[key], f"{where}/{key}")


@cache
def load_schema(name: str) -> Mapping[str, Any]:
    """A schema shipped in ``toolchain/sign/schema/``."""
    text = resources.files("toolchain.sign").joinpath("schema", name).read_text(encoding="utf-8")
    schema = json.loads(text)
    _check_supported(schema, name)
    return schema  # type: ignore[no-any-return]


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # ECMA-262 "$" matches only at the very end; Python's also before a final newline.
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def _is_type(value: object, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES[name])


def _describe(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate(value: object, schema: Mapping[str, Any], *, root: str = "$") -> list[str]:
    """All violations of ``schema`` by ``value``, each as ``path: problem`` (empty if valid)."""
    errors: list[str] = []
    _validate(value, schema, schema, root, errors)
    return errors


def _validate(
    value: object, schema: object, top: Mapping[str, Any], path: str, errors: list[str]
) -> None:
    if schema is True:
        return
    if schema is False:
        errors.append(f"{path}: not allowed")
        return
    if not isinstance(schema, dict):  # excluded by _check_supported; kept for the type checker
        return
    if "$ref" in schema:
        ref = schema["$ref"]
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix) :] not in top.get("$defs", {}):
            errors.append(f"{path}: unresolvable schema reference {ref}")
            return
        _validate(value, top["$defs"][ref[len(prefix) :]], top, path, errors)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            errors.append(f"{path}: expected {' or '.join(types)}, found {_describe(value)}")
            return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(f"{path}: expected one of {allowed}, found {_describe(value)}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {json.dumps(schema['const'])}, found {_describe(value)}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            errors.append(f"{path}: {_describe(value)} does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} item(s)")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                _validate(item, schema["items"], top, f"{path}[{index}]", errors)
    if isinstance(value, dict):
        errors.extend(
            f"{path}: missing required property {name!r}"
            for name in schema.get("required", [])
            if name not in value
        )
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                _validate(item, properties[name], top, f"{path}.{name}", errors)
            elif "additionalProperties" in schema:
                extra = schema["additionalProperties"]
                if extra is False:
                    errors.append(f"{path}: unexpected property {name!r}")
                else:
                    _validate(item, extra, top, f"{path}.{name}", errors)
