"""The constraints of botocore service models, checked the way AWS's request validation checks them.

`check(service, operation, params)` walks the operation's input shape and returns every
`Violation`: required members, types, `min`/`max` length of strings (Unicode code points, as the
Smithy `length` trait defines; botocore counts the same way), blobs (bytes), lists and maps
(entries), `min`/`max` of numbers, `enum`, and `pattern` (Java regular expressions that must match
the whole value, see `java_regex`). `format_message(violations)` words them as AWS does:

    2 validation errors detected: Value 'a b' at 'modelName' failed to satisfy constraint: Member
    must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*; Value null at
    'executionRoleArn' failed to satisfy constraint: Member must not be null

Member paths are the model's member names with the first letter lower-cased; an element of a list
of structures is `name.N.member` (1-based) and a non-scalar map value `name.KEY.member`; the
scalar elements of a list or the keys/values of a map are judged together at the collection's path
("Member must satisfy constraint: [...]", "Map value must satisfy constraint: [...]", listing every
constraint of the element shape). Values of `sensitive` shapes and of blobs are not repeated
("Value at 'secretString'").
"""
from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from local.aws.strict import java_regex


class _Missing:
    def __repr__(self) -> str:
        return "null"


MISSING: Any = _Missing()  # the value of a Violation for a required member that was not sent


@dataclass(frozen=True)
class Violation:
    member_path: str  # e.g. "customerMetadataProperties" or "processingInputs.1.member.inputName"
    value: Any  # what was sent (MISSING when a required member was absent)
    constraint: str  # AWS's wording, e.g. "Member must have length less than or equal to 256"
    redacted: bool = False  # AWS does not echo values of sensitive shapes (or blobs)
    error_code: str | None = None  # a rule AWS answers with its own code (S3 KeyTooLongError, ...)
    details: tuple[tuple[str, Any], ...] = ()  # extra fields of that code's error (S3: Size, MaxSizeAllowed)

    def describe(self) -> str:
        if self.redacted:
            shown = "Value"
        elif self.value is MISSING:
            shown = "Value null"
        else:
            shown = f"Value '{java_string(self.value)}'"
        return f"{shown} at '{self.member_path}' failed to satisfy constraint: {self.constraint}"


def format_message(violations: list[Violation]) -> str:
    """AWS's message for a request refused by validation."""
    count = len(violations)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(v.describe() for v in violations)


def java_string(value: Any) -> str:
    """A value as Java's toString() writes it in AWS's messages: [a, b] for lists, {k=v} for maps."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(java_string(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{java_string(k)}={java_string(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return str(value)


@functools.lru_cache(maxsize=None)
def service_model(service: str) -> ServiceModel:
    return _botocore_session().get_service_model(service)


@functools.lru_cache(maxsize=1)
def _botocore_session():
    return botocore.session.get_session()


@functools.lru_cache(maxsize=None)
def operation_model(service: str, operation: str) -> OperationModel:
    return service_model(service).operation_model(operation)


def check(service: str, operation: str, params: Mapping[str, Any]) -> list[Violation]:
    """Every constraint of `operation`'s input shape that `params` (boto3-style names) breaks."""
    shape = operation_model(service, operation).input_shape
    if shape is None:
        return []
    violations: list[Violation] = []
    _check_structure(shape, params, "", violations)
    return violations


def lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "boolean": (bool,),
    "blob": (bytes, bytearray, str),
    "timestamp": (datetime.datetime, datetime.date, int, float, str),
    "list": (list, tuple),
    "map": (Mapping,),
    "structure": (Mapping,),
}


def _type_ok(shape: Shape, value: Any) -> bool:
    expected = _PYTHON_TYPES.get(shape.type_name)
    if expected is None:  # documents take any JSON value
        return True
    if isinstance(value, bool) and shape.type_name != "boolean":
        return False
    if shape.type_name == "blob" and hasattr(value, "read"):  # a streaming body
        return True
    return isinstance(value, expected)


def _is_scalar(shape: Shape) -> bool:
    return shape.type_name not in ("structure", "list", "map")


def _redacted(shape: Shape) -> bool:
    return bool(shape.metadata.get("sensitive")) or shape.type_name == "blob"


def _check_value(shape: Shape, value: Any, path: str, out: list[Violation]) -> None:
    if not _type_ok(shape, value):
        out.append(Violation(path, value, f"Member must be of type {shape.type_name}", _redacted(shape)))
        return
    if isinstance(shape, StructureShape):
        _check_structure(shape, value, path, out)
    elif isinstance(shape, ListShape):
        _check_list(shape, value, path, out)
    elif isinstance(shape, MapShape):
        _check_map(shape, value, path, out)
    else:
        for constraint in _scalar_failures(shape, value):
            out.append(Violation(path, value, constraint, _redacted(shape)))


def _check_structure(shape: StructureShape, value: Mapping, path: str, out: list[Violation]) -> None:
    required = shape.required_members
    for name, member in shape.members.items():
        member_path = _join(path, lower_camel(name))
        member_value = value.get(name)
        if member_value is None:
            if name in required:
                out.append(Violation(member_path, MISSING, "Member must not be null"))
            continue
        _check_value(member, member_value, member_path, out)


def _check_list(shape: ListShape, value: list, path: str, out: list[Violation]) -> None:
    out.extend(Violation(path, value, c, _redacted(shape.member)) for c in _length_failures(shape, len(value)))
    element = shape.member
    if _is_scalar(element):
        if any(item is None or not _type_ok(element, item) or _scalar_failures(element, item) for item in value):
            listed = ", ".join(_scalar_constraints(element) + ["Member must not be null"] * (None in value))
            out.append(Violation(path, value, f"Member must satisfy constraint: [{listed}]", _redacted(element)))
        return
    for index, item in enumerate(value, 1):
        item_path = f"{path}.{index}.member"
        if item is None:
            out.append(Violation(item_path, MISSING, "Member must not be null"))
        else:
            _check_value(element, item, item_path, out)


def _check_map(shape: MapShape, value: Mapping, path: str, out: list[Violation]) -> None:
    out.extend(Violation(path, value, c, _redacted(shape.value)) for c in _length_failures(shape, len(value)))
    key_shape, value_shape = shape.key, shape.value
    redact = _redacted(key_shape) or _redacted(value_shape)
    if any(not _type_ok(key_shape, key) or _scalar_failures(key_shape, key) for key in value):
        listed = ", ".join(_scalar_constraints(key_shape))
        out.append(Violation(path, value, f"Map key must satisfy constraint: [{listed}]", redact))
    if _is_scalar(value_shape):
        if any(item is None or not _type_ok(value_shape, item) or _scalar_failures(value_shape, item)
               for item in value.values()):
            listed = ", ".join(_scalar_constraints(value_shape))
            out.append(Violation(path, value, f"Map value must satisfy constraint: [{listed}]", redact))
        return
    for key, item in value.items():
        item_path = f"{path}.{key}.member"
        if item is None:
            out.append(Violation(item_path, MISSING, "Member must not be null"))
        else:
            _check_value(value_shape, item, item_path, out)


def _size(shape: Shape, value: Any) -> int | None:
    if shape.type_name == "string":
        return len(value)  # code points: the Smithy length trait counts Unicode scalar values
    if shape.type_name == "blob":
        if isinstance(value, str):
            return len(value.encode("utf-8"))
        return len(value) if isinstance(value, (bytes, bytearray)) else None
    return None


def _length_failures(shape: Shape, size: int | None) -> list[str]:
    failures = []
    if size is None:
        return failures
    maximum, minimum = shape.metadata.get("max"), shape.metadata.get("min")
    if maximum is not None and size > maximum:
        failures.append(f"Member must have length less than or equal to {_number(maximum)}")
    if minimum is not None and size < minimum:
        failures.append(f"Member must have length greater than or equal to {_number(minimum)}")
    return failures


def _range_failures(shape: Shape, value: float) -> list[str]:
    failures = []
    maximum, minimum = shape.metadata.get("max"), shape.metadata.get("min")
    floating = shape.type_name in ("float", "double")
    if maximum is not None and value > maximum:
        failures.append(f"Member must have value less than or equal to {_number(maximum, floating)}")
    if minimum is not None and value < minimum:
        failures.append(f"Member must have value greater than or equal to {_number(minimum, floating)}")
    return failures


def _number(bound: float, floating: bool = False) -> str:
    """A bound as Java prints it: 256 for integers, 1.0 for doubles."""
    if floating:
        return repr(float(bound))
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _scalar_failures(shape: Shape, value: Any) -> list[str]:
    """The constraints of a scalar shape that `value` breaks, in AWS's wording."""
    if shape.type_name in ("integer", "long", "float", "double"):
        return _range_failures(shape, value)
    failures = _length_failures(shape, _size(shape, value))
    if shape.type_name != "string":
        return failures
    pattern = shape.metadata.get("pattern")
    if pattern is not None and not java_regex.matches(pattern, value):
        failures.append(f"Member must satisfy regular expression pattern: {pattern}")
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        failures.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    return failures


def _scalar_constraints(shape: Shape) -> list[str]:
    """Every constraint of a scalar shape, as AWS lists them for the elements of a collection."""
    meta = shape.metadata
    listed = []
    if shape.type_name in ("integer", "long", "float", "double"):
        floating = shape.type_name in ("float", "double")
        if "max" in meta:
            listed.append(f"Member must have value less than or equal to {_number(meta['max'], floating)}")
        if "min" in meta:
            listed.append(f"Member must have value greater than or equal to {_number(meta['min'], floating)}")
        return listed
    if "max" in meta:
        listed.append(f"Member must have length less than or equal to {_number(meta['max'])}")
    if "min" in meta:
        listed.append(f"Member must have length greater than or equal to {_number(meta['min'])}")
    if "pattern" in meta:
        listed.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    if meta.get("enum"):
        listed.append(f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
    return listed
