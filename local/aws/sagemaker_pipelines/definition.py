"""Reading a SageMaker Pipeline definition (the JSON the SDK writes): parameters, the step graph,
expression resolution (`Get`, `Std:Join`, `Std:JsonGet`), conditions and cache keys.

Pure functions over dicts, no I/O: the executor supplies a `Context` that knows parameter values,
execution variables, finished steps' properties and their property files.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator

SUPPORTED_PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")


class DefinitionError(ValueError):
    """The definition (or a value passed to it) cannot be interpreted; message says why."""


class ResolutionError(RuntimeError):
    """An expression refers to something that does not exist (yet): a step, output or JSON path."""


# -- parameters --------------------------------------------------------------------------------

def _coerce(name: str, kind: str, value: Any) -> Any:
    try:
        if kind == "Integer":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if kind == "Float":
            return float(value)
        if kind == "Boolean":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        return str(value)
    except (TypeError, ValueError):
        raise DefinitionError(f"Parameter {name} of type {kind} cannot take the value {value!r}") from None


def resolve_parameters(definition: dict, passed: list[dict] | dict | None) -> dict[str, Any]:
    """Defaults overlaid with passed values (`[{"Name", "Value"}]` as in the API, or a dict).

    Unknown names, missing values without default and values of the wrong type raise
    DefinitionError, which the API turns into a ValidationException.
    """
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    if isinstance(passed, dict):
        items = list(passed.items())
    else:
        items = [(p.get("Name"), p.get("Value")) for p in (passed or [])]
    unknown = sorted({name for name, _ in items if name not in declared})
    if unknown:
        raise DefinitionError(
            f"Pipeline parameters {unknown} are not defined in the pipeline definition "
            f"(defined: {sorted(declared)})"
        )
    values: dict[str, Any] = {}
    for name, param in declared.items():
        kind = param.get("Type", "String")
        if kind not in SUPPORTED_PARAMETER_TYPES:
            raise DefinitionError(f"Parameter {name} has unsupported type {kind}")
        if "DefaultValue" in param:
            values[name] = _coerce(name, kind, param["DefaultValue"])
    for name, value in items:
        values[name] = _coerce(name, declared[name].get("Type", "String"), value)
    missing = sorted(set(declared) - set(values))
    if missing:
        raise DefinitionError(f"Pipeline parameters {missing} have no default and were not passed")
    return values


# -- the step graph ----------------------------------------------------------------------------

@dataclass
class StepNode:
    name: str
    type: str
    spec: dict
    depends_on: set[str] = field(default_factory=set)
    branch_of: tuple[str, str] | None = None  # (condition step, "If" | "Else")


def iter_steps(steps: list[dict]) -> Iterator[tuple[dict, tuple[str, str] | None]]:
    """Every step, those in condition branches included, with the branch they belong to."""
    for step in steps:
        yield step, None
        if step.get("Type") == "Condition":
            for key, label in (("IfSteps", "If"), ("ElseSteps", "Else")):
                for inner, inner_branch in iter_steps(step.get("Arguments", {}).get(key, [])):
                    yield inner, inner_branch or (step["Name"], label)


_STEP_REF = re.compile(r"^Steps\.([^.\[]+)")


def referenced_steps(value: Any) -> set[str]:
    """Names of the steps an expression (any JSON value) reads from."""
    found: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"Get"} and isinstance(value["Get"], str):
            match = _STEP_REF.match(value["Get"])
            if match:
                found.add(match.group(1))
        for inner in value.values():
            found |= referenced_steps(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= referenced_steps(inner)
    return found


def build_graph(definition: dict) -> dict[str, StepNode]:
    """Steps by name with their dependencies: DependsOn, data references, and for a branch step
    the condition step that chooses it."""
    nodes: dict[str, StepNode] = {}
    for step, branch in iter_steps(definition.get("Steps", [])):
        name = step.get("Name")
        if not name or "Type" not in step:
            raise DefinitionError(f"Every step needs a Name and a Type: {json.dumps(step)[:200]}")
        if name in nodes:
            raise DefinitionError(f"Step name {name} is used twice")
        args = step.get("Arguments", {})
        if step["Type"] == "Condition":
            refs = referenced_steps(args.get("Conditions", []))
        else:
            refs = referenced_steps(args) | referenced_steps(step.get("PropertyFiles", []))
        deps = set(step.get("DependsOn", [])) | refs
        if branch is not None:
            deps.add(branch[0])
        deps.discard(name)
        nodes[name] = StepNode(name=name, type=step["Type"], spec=step, depends_on=deps, branch_of=branch)
    for node in nodes.values():
        unknown = node.depends_on - set(nodes)
        if unknown:
            raise DefinitionError(f"Step {node.name} depends on unknown steps {sorted(unknown)}")
    _check_acyclic(nodes)
    return nodes


def _check_acyclic(nodes: dict[str, StepNode]) -> None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise DefinitionError(f"Steps depend on each other in a cycle: {' -> '.join(path + [name])}")
        state[name] = 1
        for dep in sorted(nodes[name].depends_on):
            visit(dep, path + [name])
        state[name] = 2

    for name in nodes:
        visit(name, [])


def topological_order(nodes: dict[str, StepNode]) -> list[str]:
    """A deterministic order (definition order among ready steps)."""
    order: list[str] = []
    done: set[str] = set()
    remaining = list(nodes)
    while remaining:
        for name in remaining:
            if nodes[name].depends_on <= done:
                order.append(name)
                done.add(name)
                remaining.remove(name)
                break
        else:  # pragma: no cover - build_graph rejects cycles
            raise DefinitionError("cycle")
    return order


# -- expressions -------------------------------------------------------------------------------

@dataclass
class Context:
    """What expressions can read while an execution runs."""

    parameters: dict[str, Any]
    execution: dict[str, Any]
    step_properties: dict[str, dict] = field(default_factory=dict)
    property_files: dict[tuple[str, str], Any] = field(default_factory=dict)
    # Reads a JSON document from S3 (for `Std:JsonGet` with an `S3Uri`).
    read_json: Callable[[str], Any] | None = None


_PATH_TOKEN = re.compile(r"""\.?([A-Za-z_][A-Za-z0-9_:-]*)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")


def parse_path(path: str) -> list[str | int]:
    """`A.B[0].C['name']` -> ["A", "B", 0, "C", "name"] (name lookups stay strings)."""
    tokens: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if not match or match.end() == pos:
            raise DefinitionError(f"Cannot parse property path {path!r} at {path[pos:]!r}")
        ident, index, quoted1, quoted2 = match.groups()
        if ident is not None:
            tokens.append(ident)
        elif index is not None:
            tokens.append(int(index))
        else:
            tokens.append(("[name]", quoted1 if quoted1 is not None else quoted2))  # type: ignore[arg-type]
        pos = match.end()
    return tokens


def walk_path(document: Any, tokens: list, description: str) -> Any:
    """Follows tokens through dicts and lists. A `['name']` token on a list picks the element whose
    `...Name` field (OutputName, ChannelName, InputName, ...) equals name; on a dict, the key."""
    current = document
    for token in tokens:
        if isinstance(token, tuple):  # ['name']
            key = token[1]
            if isinstance(current, list):
                matches = [item for item in current if isinstance(item, dict)
                           and any(k.endswith("Name") and v == key for k, v in item.items())]
                if not matches:
                    raise ResolutionError(f"{description}: no element named {key!r}")
                current = matches[0]
                continue
            token = key
        if isinstance(token, int):
            if not isinstance(current, list) or token >= len(current):
                raise ResolutionError(f"{description}: index [{token}] out of range")
            current = current[token]
        else:
            if not isinstance(current, dict) or token not in current:
                raise ResolutionError(f"{description}: no field {token!r}")
            current = current[token]
    return current


def json_get(document: Any, path: str) -> Any:
    """`Std:JsonGet` paths: dotted keys with `[i]` indexes (`regression_metrics.rmse.value`)."""
    tokens: list = []
    for part in path.split("."):
        match = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if not match:
            raise DefinitionError(f"Cannot parse JSON path {path!r}")
        if match.group(1):
            tokens.append(match.group(1))
        tokens.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return walk_path(document, tokens, f"JSON path {path!r}")


def _get(reference: str, ctx: Context) -> Any:
    head, _, rest = reference.partition(".")
    if head == "Parameters":
        if rest not in ctx.parameters:
            raise ResolutionError(f"Unknown parameter {rest!r}")
        return ctx.parameters[rest]
    if head == "Execution":
        if rest not in ctx.execution:
            raise ResolutionError(f"Unknown execution variable {rest!r}")
        return ctx.execution[rest]
    if head == "Steps":
        tokens = parse_path(rest)
        step = tokens[0]
        if step not in ctx.step_properties:
            raise ResolutionError(f"Step {step} has not run in this execution; cannot read {reference}")
        if len(tokens) >= 3 and tokens[1] == "PropertyFiles":
            key = (step, tokens[2])
            if key not in ctx.property_files:
                raise ResolutionError(f"Step {step} has no property file {tokens[2]!r}")
            return walk_path(ctx.property_files[key], tokens[3:], reference)
        return walk_path(ctx.step_properties[step], tokens[1:], reference)
    raise ResolutionError(f"Unsupported reference {reference!r}")


def to_text(value: Any) -> str:
    """How a value reads when joined into a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def resolve(value: Any, ctx: Context) -> Any:
    """Resolves every expression inside a JSON value; plain values come back unchanged."""
    if isinstance(value, list):
        return [resolve(item, ctx) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Get"} and isinstance(value["Get"], str):
        return _get(value["Get"], ctx)
    if set(value) == {"Std:Join"}:
        spec = value["Std:Join"]
        return str(spec.get("On", "")).join(to_text(resolve(item, ctx)) for item in spec.get("Values", []))
    if set(value) == {"Std:JsonGet"}:
        spec = value["Std:JsonGet"]
        if "PropertyFile" in spec:
            document = resolve(spec["PropertyFile"], ctx)
        elif "S3Uri" in spec:
            if ctx.read_json is None:
                raise ResolutionError("Std:JsonGet on an S3Uri needs an S3 reader")
            document = ctx.read_json(resolve(spec["S3Uri"], ctx))
        else:
            raise DefinitionError(f"Std:JsonGet needs PropertyFile or S3Uri: {spec}")
        return json_get(document, spec["Path"])
    return {key: resolve(inner, ctx) for key, inner in value.items()}


# -- conditions --------------------------------------------------------------------------------

def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    def number(x: Any) -> float | None:
        if isinstance(x, bool):
            return None
        if isinstance(x, (int, float)):
            return float(x)
        if isinstance(x, str):
            try:
                return float(x)
            except ValueError:
                return None
        return None

    left_n, right_n = number(left), number(right)
    if left_n is not None and right_n is not None:
        return left_n, right_n
    return to_text(left), to_text(right)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanOrEqualTo": lambda a, b: a >= b,
    "LessThan": lambda a, b: a < b,
    "LessThanOrEqualTo": lambda a, b: a <= b,
}


def evaluate_condition(condition: dict, ctx: Context) -> bool:
    kind = condition.get("Type")
    if kind in _COMPARISONS:
        left, right = _comparable(resolve(condition["LeftValue"], ctx), resolve(condition["RightValue"], ctx))
        return _COMPARISONS[kind](left, right)
    if kind == "In":
        query = resolve(condition["QueryValue"], ctx)
        for candidate in condition.get("Values", []):
            a, b = _comparable(query, resolve(candidate, ctx))
            if a == b:
                return True
        return False
    if kind == "Not":
        return not evaluate_condition(condition["Condition"], ctx)
    if kind == "Or":
        return any(evaluate_condition(inner, ctx) for inner in condition.get("Conditions", []))
    raise DefinitionError(f"Unsupported condition type {kind!r}")


def evaluate_conditions(conditions: list[dict], ctx: Context) -> bool:
    """A condition step's list: all must hold."""
    return all(evaluate_condition(condition, ctx) for condition in conditions)


# -- caching -----------------------------------------------------------------------------------

# The request attributes AWS compares to decide a cache hit, per step type
# (SageMaker "Default cache key attributes by pipeline step type"); outputs are not among them.
CACHE_KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig", "DebugRuleConfigurations",
                 "Environment", "HyperParameters", "InputDataConfig"),
    "Transform": ("DataProcessing", "Environment", "ModelName", "TransformInput"),
}
TUNING_DEFINITION_ATTRIBUTES = ("AlgorithmSpecification", "Environment", "HyperParameterRanges",
                                "InputDataConfig", "StaticHyperParameters", "TuningObjective")


def cache_key(pipeline_name: str, step_name: str, step_type: str, resolved_arguments: dict) -> str:
    """A digest of the attributes that decide a cache hit, after expressions are resolved."""
    if step_type in CACHE_KEY_ATTRIBUTES:
        material = {k: resolved_arguments.get(k) for k in CACHE_KEY_ATTRIBUTES[step_type]}
    elif step_type == "Tuning":
        definition = resolved_arguments.get("TrainingJobDefinition", {})
        material = {
            "HyperParameterTuningJobConfig": resolved_arguments.get("HyperParameterTuningJobConfig"),
            "TrainingJobDefinition": {k: definition.get(k) for k in TUNING_DEFINITION_ATTRIBUTES},
        }
    else:
        material = resolved_arguments
    canonical = json.dumps([pipeline_name, step_name, step_type, material], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_ISO_DURATION = re.compile(
    r"^P?(?:(?P<years>\d+)[yY])?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)[wW])?(?:(?P<days>\d+)[dD])?"
    r"(?:T(?:(?P<hours>\d+)[hH])?(?:(?P<minutes>\d+)[mM])?(?:(?P<seconds>\d+)[sS])?)?$"
)


def parse_expire_after(text: str | None) -> timedelta | None:
    """ISO 8601 durations as SageMaker accepts them (`PT12H`, `30d`, `T16m`, `30dT5h`, `P1Y`)."""
    if not text:
        return None
    match = _ISO_DURATION.match(text.strip())
    if not match or not any(match.groupdict().values()):
        raise DefinitionError(f"Cannot parse CacheConfig ExpireAfter {text!r}")
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    return timedelta(days=parts["years"] * 365 + parts["months"] * 30 + parts["weeks"] * 7 + parts["days"],
                     hours=parts["hours"], minutes=parts["minutes"], seconds=parts["seconds"])


def substitute(text: str, substitutions: dict[str, str]) -> str:
    """Replaces `${Name}` placeholders (e.g. the role ARN the SDK cannot parameterise)."""
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    return text
