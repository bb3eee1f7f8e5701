"""The registry behind `authorization.authorization_requests`: one entry per API operation.

Each entry names the IAM actions it may request (checked against the committed IAM reference),
who calls the operation in this product (component, the principal it runs as, and the file), and
a function turning the decoded request members into `AuthorizationRequest`s. ARNs are built from
the reference's ARN formats, never typed by hand, and every context key a request carries must be
a condition key the reference lists for the action (or a global `aws:` key).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from local.aws.strict import iam_reference
from local.aws.strict.iam_policy import AuthorizationRequest

Params = Mapping[str, Any]

# botocore service name -> IAM service prefix
IAM_PREFIX = {
    "sagemaker-runtime": "sagemaker",
    "sagemaker-featurestore-runtime": "sagemaker",
    "stepfunctions": "states",
}


class UnmappedOperation(LookupError):
    """An API call the table does not know: the strict face refuses to guess (never allow by default)."""

    def __init__(self, service: str, operation: str):
        super().__init__(
            f"{service}:{operation} is not in the strict face's authorization table "
            "(local/aws/strict/authorization_*.py); add an entry with its IAM actions, resource ARNs "
            "and condition keys before calling it")
        self.service, self.operation = service, operation


class ResourceLookup(Protocol):
    """Facts about existing resources some ARNs need (the moto-backed one is `principals.MotoLookup`)."""

    def secret_arn(self, secret_id: str) -> str | None: ...

    def role_arn(self, role_name: str) -> str | None: ...

    def ses_identity(self, address: str) -> str | None: ...


@dataclass(frozen=True)
class Caller:
    """Who calls an operation: a component of the product, the principal it runs as, and where."""

    component: str
    principal: str
    where: str


@dataclass(frozen=True)
class Scope:
    """Everything a table entry needs besides the request members."""

    service: str
    operation: str
    region: str
    account: str
    allowed_actions: frozenset[str]
    lookup: ResourceLookup | None = None
    source_context: Mapping[str, str] = field(default_factory=dict)
    partition: str = "aws"

    def arn(self, prefix: str, resource_type: str, **names: str) -> str:
        """The ARN of `resource_type` from the reference's format, e.g. `arn("s3", "object",
        BucketName="b", ObjectName="k")`."""
        text = iam_reference.load().arn_format(prefix, resource_type)
        values = {"Partition": self.partition, "Region": self.region, "Account": self.account, **names}
        for name, value in values.items():
            text = text.replace("${" + name + "}", str(value))
        if "${" in text:
            raise ValueError(f"ARN format for {prefix}:{resource_type} needs more names than {sorted(names)}: {text}")
        return text

    def request(self, action: str, resource: str = "*", context: Mapping[str, Any] | None = None,
                shown_resource: str | None = None, resource_account: str | None = None,
                resource_type: str | None = None) -> AuthorizationRequest:
        if action not in self.allowed_actions:
            raise ValueError(f"{self.service}:{self.operation} does not declare the action {action}")
        reference = iam_reference.load().action(action)
        if resource == "*" and reference.required_resource_types:
            raise ValueError(f"{action} requires a {'/'.join(reference.required_resource_types)} resource")
        if resource_type is not None and resource_type not in reference.resource_types:
            raise ValueError(f"{action} takes no {resource_type} resource")
        merged = {**(context or {}), **self.source_context}
        unknown = [k for k in merged if not k.lower().startswith("aws:") and not reference.accepts_condition_key(k)]
        if unknown:
            raise ValueError(f"{action} has no condition keys {unknown} in the IAM reference")
        return AuthorizationRequest(action, resource, merged, resource_account, shown_resource)

    def resource(self, action: str, resource_type: str, context: Mapping[str, Any] | None = None,
                 shown_resource: str | None = None, **names: str) -> AuthorizationRequest:
        """`request` for the resource of `resource_type` named by `names`."""
        prefix = action.partition(":")[0]
        return self.request(action, self.arn(prefix, resource_type, **names), context, shown_resource,
                            resource_type=resource_type)


Builder = Callable[[Params, Scope], list[AuthorizationRequest]]


@dataclass(frozen=True)
class OperationEntry:
    service: str
    operation: str
    actions: tuple[str, ...]
    callers: tuple[Caller, ...]
    build: Builder


OPERATIONS: dict[tuple[str, str], OperationEntry] = {}


def operation(service: str, name: str, actions: Iterable[str], callers: Iterable[Caller]) -> Callable[[Builder], Builder]:
    """Registers the decorated builder as the table entry of `service:name`."""
    def register(build: Builder) -> Builder:
        key = (service, name)
        if key in OPERATIONS:
            raise ValueError(f"{service}:{name} is registered twice")
        OPERATIONS[key] = OperationEntry(service, name, tuple(actions), tuple(callers), build)
        return build
    return register


def iam_prefix(service: str) -> str:
    return IAM_PREFIX.get(service, service)
