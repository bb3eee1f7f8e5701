"""Which IAM statement of the template each recorded request needed.

Every statement of `template.yaml` (identity policies of its roles, SAM's generated roles included,
and its resource policies: bucket and queue policies, Lambda permissions) must be needed by
something the product does, or be listed in docs/strict-face.md with the reason the local face
cannot exercise it. The strict face records its authorizations (`StrictFace(record_decisions=True)`)
with the policies that decided them; replaying a recorded, allowed request with one statement
deleted from those policies answers whether that request needs the statement, with the refusal
AWS would then give (naming the action and the role). Replay instead of a run per statement: the
same evaluator decides both, and a statement costs microseconds, not a pipeline run.

`template_statement_keys` names the statements from the template itself (SAM's translator gives
the generated roles), so tests can be generated before any stack exists.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from local.aws.strict.iam_policy import Decision, evaluate

IDENTITY, RESOURCE = "identity", "resource"
# Resource types whose documents are resource policies of the stack's resources.
RESOURCE_POLICY_TYPES = {
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
}


@dataclass(frozen=True)
class StatementKey:
    """`<owner logical id>/<policy name>/<Sid or #index>`: a statement's name in tests and docs."""

    owner: str  # the role, policy or permission resource's logical id
    policy: str  # inline policy name; the resource type's policy property for resource policies
    statement: str  # Sid, else "#<index>"
    kind: str  # identity | resource

    def __str__(self) -> str:
        return f"{self.owner}/{self.policy}/{self.statement}"


def statement_label(statement: dict, index: int) -> str:
    sid = statement.get("Sid") if isinstance(statement, dict) else None
    return sid if isinstance(sid, str) and sid else f"#{index}"


def _statements(document: Any) -> list:
    if not isinstance(document, dict):
        return []
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def template_statement_keys(template: dict, generated: dict[str, dict]) -> list[StatementKey]:
    """Every statement of the template's roles (and SAM's generated ones, `generated`) and of its
    resource policies, in template order."""
    keys: list[StatementKey] = []
    resources = {**(template.get("Resources") or {}), **generated}
    for logical_id, resource in resources.items():
        kind, properties = resource.get("Type"), resource.get("Properties") or {}
        if kind == "AWS::IAM::Role":
            for policy in properties.get("Policies") or []:
                for index, statement in enumerate(_statements(policy.get("PolicyDocument"))):
                    keys.append(StatementKey(logical_id, policy.get("PolicyName", "?"),
                                             statement_label(statement, index), IDENTITY))
        elif kind in RESOURCE_POLICY_TYPES:
            prop = RESOURCE_POLICY_TYPES[kind]
            for index, statement in enumerate(_statements(properties.get(prop))):
                keys.append(StatementKey(logical_id, prop, statement_label(statement, index), RESOURCE))
        elif kind == "AWS::Lambda::Permission":
            keys.append(StatementKey(logical_id, "Permission", "#0", RESOURCE))
    return keys


# ------------------------------------------------------------------------------------------------
# Replay
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Need:
    """A recorded request that is refused once the statement is deleted."""

    key: StatementKey
    unit: str  # who made the request: the role session (function, pipeline, job, state machine)
    operation: str
    refusal: Decision

    def describe(self) -> str:
        return f"{self.key}: without it {self.unit} ({self.operation}) is refused: {self.refusal.message()}"


def without_statement(policies: Iterable[dict], policy_name: str, label: str) -> tuple[list[dict], bool]:
    """`policies` with the statement `label` of `policy_name` deleted; and whether it was there."""
    result, removed = [], False
    for policy in policies:
        if policy.get("PolicyName") != policy_name:
            result.append(policy)
            continue
        document = copy.deepcopy(policy["PolicyDocument"])
        statements = _statements(document)
        kept = [s for i, s in enumerate(statements) if statement_label(s, i) != label]
        removed = removed or len(kept) != len(statements)
        document["Statement"] = kept
        result.append({**policy, "PolicyDocument": document})
    return result, removed


def unit_of(decision) -> str:
    """The session of an assumed role names the unit (function name, `pipelines`, `<step>-<execution>`,
    `stepfunctions`, ...); a service principal acting on a resource policy is itself the unit."""
    arn = decision.principal.arn if decision.principal else decision.principal_arn
    match = re.match(r"arn:aws:sts::\d+:assumed-role/([^/]+)/(.+)", arn)
    if match:
        return f"{match.group(1)} as {match.group(2)}"
    return arn


def first_need(key: StatementKey, role_arn: str | None, policy_name: str | None, label: str,
               decisions: Iterable) -> Need | None:
    """The first recorded, allowed request that the statement's deletion turns into a refusal.

    Identity statements: requests of `role_arn` replayed with the statement `label` gone from its
    policy `policy_name`. Resource statements: requests whose resource policy is `policy_name`
    (any, when None) replayed with the statement `label` gone from it.
    """
    for decision in decisions:
        if not decision.allowed:
            continue
        if key.kind == IDENTITY:
            if decision.principal is None or decision.principal.role_arn != role_arn:
                continue
            policies, removed = without_statement(decision.identity_policies, policy_name, label)
            if not removed:
                continue
            outcome = evaluate(decision.request, policies, decision.resource_policy, decision.principal)
        else:
            resource = decision.resource_policy
            if not resource or (policy_name is not None and resource.get("PolicyName") != policy_name):
                continue
            trimmed, removed = without_statement([resource], resource.get("PolicyName"), label)
            if not removed:
                continue
            outcome = evaluate(decision.request, list(decision.identity_policies), trimmed[0], decision.principal)
        if not outcome.allowed:
            return Need(key, unit_of(decision), f"{decision.service}:{decision.operation}", outcome)
    return None


def locate(key: StatementKey, stack) -> tuple[str | None, str | None, str]:
    """(role ARN, recorded policy name, statement label) of `key` in a provisioned stack
    (local.aws.stack.model.Stack): how the strict face names what the template declared."""
    if key.kind == IDENTITY:
        return stack.resources[key.owner].attributes.get("Arn"), key.policy, key.statement
    kind = stack.resources[key.owner].type if key.owner in stack.resources else None
    if kind == "AWS::S3::BucketPolicy":
        return None, f"bucket policy {key.owner}", key.statement
    if kind == "AWS::SQS::QueuePolicy":
        return None, f"queue policy {key.owner}", key.statement
    # A Lambda permission is one statement of its function's policy, with its logical id as Sid.
    return None, None, key.owner


# ------------------------------------------------------------------------------------------------
# The documented exceptions
# ------------------------------------------------------------------------------------------------
DOCS_TABLE_HEADING = "### Statements the local face cannot exercise"


def documented_exceptions(markdown: str) -> dict[str, str]:
    """`statement key -> reason` from the table under DOCS_TABLE_HEADING in docs/strict-face.md."""
    section = markdown.split(DOCS_TABLE_HEADING, 1)
    if len(section) < 2:
        return {}
    rows: dict[str, str] = {}
    for line in section[1].splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[0].endswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def load_documented_exceptions(repo_root: Path) -> dict[str, str]:
    return documented_exceptions((repo_root / "docs" / "strict-face.md").read_text(encoding="utf-8"))


def dump(needs: Iterable[Need]) -> str:
    return json.dumps([n.describe() for n in needs], indent=2)
