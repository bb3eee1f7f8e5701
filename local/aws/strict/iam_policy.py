"""A pure IAM policy evaluator: identity-based policies and one resource-based policy.

It follows IAM's documented evaluation logic for a request within one account (and the
cross-account rule where the resource's account differs):

1. An explicit Deny in any applicable policy decides: the request is refused.
2. Otherwise an Allow decides: in the resource's own account it may come from an identity-based
   policy *or* the resource-based policy; across accounts both must allow. A service principal
   (`events.amazonaws.com`) has no identity-based policies, so only a resource policy can allow it.
3. Otherwise the request is implicitly denied ("no allow").

A statement applies when its Effect, Action/NotAction, Resource/NotResource, (resource policies:)
Principal/NotPrincipal and Condition all match. Actions match case-insensitively, resources
case-sensitively; both take `*` and `?`. Not evaluated here: SCPs/RCPs, permissions boundaries,
session policies, KMS key policies and grants, VPC endpoint policies.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local.aws.strict import iam_patterns
from local.aws.strict.iam_conditions import InvalidPolicy, evaluate_condition

EXPLICIT_DENY = "explicit deny"
NO_ALLOW = "no allow"
ALLOWED = "allowed"
IDENTITY_BASED = "identity-based"
RESOURCE_BASED = "resource-based"
VARIABLES_VERSION = "2012-10-17"

__all__ = ["ALLOWED", "EXPLICIT_DENY", "NO_ALLOW", "AuthorizationRequest", "Decision", "InvalidPolicy",
           "Principal", "evaluate"]


@dataclass(frozen=True)
class Principal:
    """Who makes the request.

    `kind` is `user`, `assumed-role` (a role session), `root` or `service`. `arn` is how AWS names
    the caller in refusals (for a role session the `assumed-role` ARN), `principal_arn` what
    `aws:PrincipalArn` holds (for a role session: the role's ARN).
    """

    kind: str
    arn: str
    account: str
    name: str
    role_arn: str | None = None
    session_name: str | None = None
    unique_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    access_key_id: str | None = None

    @classmethod
    def service(cls, service_principal: str, account: str) -> "Principal":
        """An AWS service acting for the account (EventBridge delivering to a target, ...)."""
        return cls(kind="service", arn=service_principal, account=account, name=service_principal)

    @property
    def principal_arn(self) -> str:
        return self.role_arn if self.kind == "assumed-role" and self.role_arn else self.arn

    def context(self) -> dict[str, Any]:
        """The global condition keys IAM derives from the principal (lower-case names)."""
        if self.kind == "service":
            return {"aws:principalservicename": self.name, "aws:principalisawsservice": "true"}
        context: dict[str, Any] = {
            "aws:principalarn": self.principal_arn,
            "aws:principalaccount": self.account,
            "aws:principaltype": {"user": "User", "assumed-role": "AssumedRole", "root": "Account"}[self.kind],
            "aws:principalisawsservice": "false",
        }
        if self.unique_id:
            context["aws:userid"] = self.unique_id
        if self.kind == "user":
            context["aws:username"] = self.name
        for key, value in self.tags.items():
            context[f"aws:principaltag/{key.lower()}"] = value
        return context


@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization IAM makes for an API call: an action on one resource, with its context.

    `context` holds the condition keys the service supplies (`s3:prefix`, `iam:PassedToService`,
    `aws:SourceArn`, ...); a list value is a multivalued key. `resource_account` is the owner of
    the resource when the ARN does not say (S3); `shown_resource` is how the service names the
    resource in its refusal when that is not the ARN (Secrets Manager shows the SecretId given).
    """

    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)
    resource_account: str | None = None
    shown_resource: str | None = None

    @property
    def owner_account(self) -> str | None:
        if self.resource_account:
            return self.resource_account
        parts = iam_patterns.split_arn(self.resource)
        return parts[4] or None if parts else None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # ALLOWED, EXPLICIT_DENY or NO_ALLOW
    request: AuthorizationRequest
    principal: Principal | None = None
    policy_type: str | None = None  # IDENTITY_BASED or RESOURCE_BASED: the deciding (or missing) kind
    policy_name: str | None = None
    statement_sid: str | None = None

    def message(self) -> str:
        """AWS's refusal text: `User: <arn> is not authorized to perform: <action> on resource:
        <resource> because no identity-based policy allows the <action> action` (or `with an
        explicit deny in a resource-based policy`)."""
        return self.phrased()

    def phrased(self, action: str | None = None, resource: str | None = None) -> str:
        """`message()` with the action and resource written as a service writes them (SNS's
        `SNS:Publish`, SQS's lower case, S3's quoted resource: `access_denied.message`)."""
        who = self.principal.arn if self.principal else "anonymous"
        action = action or self.request.action
        resource = resource or self.request.shown_resource or self.request.resource
        text = f"User: {who} is not authorized to perform: {action} on resource: {resource}"
        kind = self.policy_type or IDENTITY_BASED
        if self.reason == EXPLICIT_DENY:
            return f"{text} with an explicit deny in {'an' if kind == IDENTITY_BASED else 'a'} {kind} policy"
        return f"{text} because no {kind} policy allows the {action} action"


@dataclass(frozen=True)
class _Policy:
    name: str
    kind: str
    statements: tuple[Mapping[str, Any], ...]
    variables: bool


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _parse(policy: Mapping[str, Any] | str, kind: str, default_name: str) -> _Policy:
    """A policy document, or `{"PolicyName", "PolicyDocument"}` (document as object or JSON text)."""
    if isinstance(policy, str):
        policy = json.loads(policy)
    name = default_name
    if isinstance(policy, Mapping) and "PolicyDocument" in policy:
        name = policy.get("PolicyName") or policy.get("PolicyArn") or default_name
        policy = policy["PolicyDocument"]
        if isinstance(policy, str):
            policy = json.loads(policy)
    if not isinstance(policy, Mapping) or "Statement" not in policy:
        raise InvalidPolicy(f"{default_name} has no Statement element")
    statements = tuple(_as_list(policy["Statement"]))
    for statement in statements:
        if not isinstance(statement, Mapping) or statement.get("Effect") not in ("Allow", "Deny"):
            raise InvalidPolicy(f"{name}: every statement needs Effect Allow or Deny, got {statement!r}")
    return _Policy(name, kind, statements, policy.get("Version") == VARIABLES_VERSION)


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(iam_patterns.matches(p, action, ignore_case=True) for p in _as_list(statement["Action"]))
    if "NotAction" in statement:
        return not any(iam_patterns.matches(p, action, ignore_case=True) for p in _as_list(statement["NotAction"]))
    raise InvalidPolicy(f"statement {statement.get('Sid', '')!r} has neither Action nor NotAction")


def _resource_pattern_matches(pattern: str, resource: str, context: Mapping[str, Any], variables: bool) -> bool:
    return pattern == "*" or iam_patterns.matches(pattern, resource, context, variables=variables, arn_segments=True)


def _resource_matches(statement: Mapping[str, Any], resource: str, context: Mapping[str, Any],
                      variables: bool, resource_policy: bool) -> bool:
    if "Resource" in statement:
        return any(_resource_pattern_matches(p, resource, context, variables) for p in _as_list(statement["Resource"]))
    if "NotResource" in statement:
        return not any(_resource_pattern_matches(p, resource, context, variables)
                       for p in _as_list(statement["NotResource"]))
    # A resource-based policy may leave Resource out: it is about the resource it is attached to.
    return resource_policy


def _account_of(value: str) -> str | None:
    if value.isdigit() and len(value) == 12:
        return value
    parts = iam_patterns.split_arn(value)
    if parts and parts[2] == "iam" and parts[5] == "root":
        return parts[4]
    return None


def _principal_entry_matches(kind: str, value: str, principal: Principal, effect: str) -> bool:
    """Does one Principal entry name the caller? An account entry covers every identity of the
    account for a Deny, but for an Allow it only delegates to the account's own identity-based
    policies, so it grants nothing to a user or role by itself (IAM's account-principal rule)."""
    if value == "*":
        return kind in ("*", "aws") or kind == "service" and principal.kind == "service"
    if kind == "service":
        return principal.kind == "service" and value == principal.name
    if kind != "aws" or principal.kind == "service":
        return False
    account = _account_of(value)
    if account is not None:
        return account == principal.account and (effect == "Deny" or principal.kind == "root")
    if value == principal.arn:
        return True
    # A role ARN names every session of the role.
    return principal.kind == "assumed-role" and value == principal.role_arn


def _principal_element_matches(element: Any, principal: Principal, effect: str) -> bool:
    if element == "*":
        return True
    if not isinstance(element, Mapping):
        raise InvalidPolicy(f"Principal must be \"*\" or an object, got {element!r}")
    return any(_principal_entry_matches(kind.lower(), str(value), principal, effect)
               for kind, values in element.items() for value in _as_list(values))


def _principal_matches(statement: Mapping[str, Any], principal: Principal | None) -> bool:
    effect = statement["Effect"]
    if "Principal" in statement:
        return principal is not None and _principal_element_matches(statement["Principal"], principal, effect)
    if "NotPrincipal" in statement:
        # The exclusion compares names exactly; the account-delegation rule does not apply to it.
        return principal is None or not _principal_element_matches(statement["NotPrincipal"], principal, "Deny")
    raise InvalidPolicy(f"resource-based statement {statement.get('Sid', '')!r} has no Principal")


def _applies(statement: Mapping[str, Any], policy: _Policy, request: AuthorizationRequest,
             principal: Principal | None, context: Mapping[str, Any]) -> bool:
    resource_policy = policy.kind == RESOURCE_BASED
    return (_action_matches(statement, request.action)
            and _resource_matches(statement, request.resource, context, policy.variables, resource_policy)
            and (not resource_policy or _principal_matches(statement, principal))
            and evaluate_condition(statement.get("Condition"), context, policy.variables))


def _first_match(policies: Iterable[_Policy], effect: str, request: AuthorizationRequest,
                 principal: Principal | None, context: Mapping[str, Any]) -> tuple[_Policy, Mapping[str, Any]] | None:
    for policy in policies:
        for statement in policy.statements:
            if statement["Effect"] == effect and _applies(statement, policy, request, principal, context):
                return policy, statement
    return None


def request_context(request: AuthorizationRequest, principal: Principal | None) -> dict[str, Any]:
    """Principal keys first, then the request's own keys (which win); all names lower-cased."""
    context = principal.context() if principal else {}
    context.update({key.lower(): value for key, value in request.context.items()})
    return context


def evaluate(request: AuthorizationRequest, identity_policies: list[dict], resource_policy: dict | None = None,
             principal: Principal | None = None) -> Decision:
    """IAM's decision for `request` made by `principal` (see the module docstring)."""
    identity = [_parse(p, IDENTITY_BASED, f"identity-based policy {i + 1}") for i, p in enumerate(identity_policies)]
    resource = [_parse(resource_policy, RESOURCE_BASED, "resource-based policy")] if resource_policy else []
    context = request_context(request, principal)

    def decision(allowed: bool, reason: str, kind: str | None, hit: tuple[_Policy, Mapping] | None = None):
        policy, statement = hit if hit else (None, {})
        return Decision(allowed, reason, request, principal, kind, policy.name if policy else None,
                        statement.get("Sid"))

    deny = _first_match(identity + resource, "Deny", request, principal, context)
    if deny:
        return decision(False, EXPLICIT_DENY, deny[0].kind, deny)
    if principal is not None and principal.kind == "root":
        return decision(True, ALLOWED, None)
    identity_allow = _first_match(identity, "Allow", request, principal, context) if principal else None
    resource_allow = _first_match(resource, "Allow", request, principal, context)
    owner = request.owner_account
    same_account = principal is not None and (owner is None or owner == principal.account)
    if principal is not None and principal.kind == "service":
        if resource_allow:
            return decision(True, ALLOWED, RESOURCE_BASED, resource_allow)
        return decision(False, NO_ALLOW, RESOURCE_BASED)
    if same_account and (identity_allow or resource_allow):
        return decision(True, ALLOWED, (identity_allow or resource_allow)[0].kind, identity_allow or resource_allow)
    if not same_account and identity_allow and resource_allow:
        return decision(True, ALLOWED, IDENTITY_BASED, identity_allow)
    missing = RESOURCE_BASED if (not same_account and identity_allow) else IDENTITY_BASED
    return decision(False, NO_ALLOW, missing)
