"""Checking a document against its `mlops_shared.artifacts` contract, field by field (tests only)."""
from __future__ import annotations

import copy
import dataclasses
import json
import typing

import pytest

from mlops_shared.artifacts import ArtifactFormatError, contract_fields, from_json


def _without(document: dict, path: str) -> dict:
    trimmed = copy.deepcopy(document)
    *parents, name = path.split(".")
    node = trimmed
    for part in parents:
        node = node[part]
    del node[name]
    return trimmed


def required_paths(cls: type, document: dict) -> list[str]:
    """The contract's field paths present in `document` whose removal the contract must notice
    (fields with a default, and fields inside a null optional block, may be absent)."""
    paths = []
    for path in contract_fields(cls):
        node, owner = document, cls
        present = True
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                present = False
                break
            field = next(f for f in dataclasses.fields(owner) if f.name == part)
            optional = field.default is not dataclasses.MISSING
            node = node[part]
            hint = typing.get_type_hints(owner)[part]
            inner = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
            owner = inner or owner
        if present and not optional:
            paths.append(path)
    return paths


def assert_follows_contract(cls: type, document: dict) -> None:
    """`document` parses as `cls`, every required contract field is in it, and removing any one of
    them is refused with that field named."""
    from_json(cls, json.loads(json.dumps(document)), cls.__name__)
    paths = required_paths(cls, document)
    top_level = {f for f in paths if "." not in f}
    declared = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
    assert declared <= top_level, f"the writer leaves out {sorted(declared - top_level)}"
    for path in paths:
        with pytest.raises(ArtifactFormatError, match=f"'{path.rsplit('.', 1)[-1]}' is missing"):
            from_json(cls, _without(document, path), cls.__name__)
