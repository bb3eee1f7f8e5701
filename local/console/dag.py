"""The DAG of a SageMaker pipeline definition (the SDK's JSON), as SageMaker Studio draws it.

An edge `A -> B` exists when B lists A in `DependsOn`, when anything in B's arguments refers to A's
properties (`{"Get": "Steps.A...."}`, also inside `Std:Join` / `Std:JsonGet` and property files), or
when B is in the `IfSteps`/`ElseSteps` of condition A. Steps nested in a condition are steps of
their own: ListPipelineExecutionSteps reports them by name.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

_STEP_REFERENCE = re.compile(r"Steps\.([^.\[]+)")
_BRANCHES = (("IfSteps", "if"), ("ElseSteps", "else"))


def _references(value: Any) -> Iterator[str]:
    """Names of the steps a piece of a step's arguments refers to."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Get" and isinstance(item, str):
                match = _STEP_REFERENCE.match(item)
                if match:
                    yield match.group(1)
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def pipeline_graph(definition: dict) -> dict:
    """`{"nodes": [{"name", "type"}], "edges": [{"source", "target", "kind"}]}`, kind one of
    `depends`, `data`, `if`, `else`; nodes in definition order, each edge once."""
    nodes: list[dict] = []
    edges: dict[tuple[str, str], str] = {}

    def add(source: str, target: str, kind: str) -> None:
        if source != target:
            # A branch says more than "uses its data", which says more than "after".
            rank = {"depends": 0, "data": 1, "if": 2, "else": 2}
            if rank[kind] >= rank.get(edges.get((source, target), "depends"), 0):
                edges[(source, target)] = kind

    def walk(steps: list[dict], parent: str | None = None, branch: str | None = None) -> None:
        for step in steps:
            name = step["Name"]
            nodes.append({"name": name, "type": step.get("Type", "")})
            if parent is not None:
                add(parent, name, branch)
            for dependency in step.get("DependsOn") or []:
                add(dependency, name, "depends")
            arguments = dict(step.get("Arguments") or {})
            nested = {key: arguments.pop(key, []) for key, _ in _BRANCHES}
            for source in _references([arguments, step.get("PropertyFiles") or []]):
                add(source, name, "data")
            for key, kind in _BRANCHES:
                walk(nested[key] or [], name, kind)

    walk(definition.get("Steps") or [])
    known = {node["name"] for node in nodes}
    return {"nodes": nodes,
            "edges": [{"source": s, "target": t, "kind": k} for (s, t), k in edges.items() if s in known]}
