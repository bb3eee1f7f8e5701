"""What IAM authorizes for each API call the product makes: operation -> `AuthorizationRequest`s.

    authorization_requests("s3", "CopyObject", {"Bucket": ..., "Key": ..., "CopySource": ...},
                           region="us-east-1", account="123456789012")
    -> [s3:GetObject(Version) on the source object, s3:PutObject on the target object]

`service` is the botocore service name, `operation` the API operation name and `params` the decoded
request members as botocore names them. Each request carries the IAM action, the resource ARN
(formats from the IAM service authorization reference, `iam_reference.json`) and the condition
context the service supplies. The caller's own keys (`aws:PrincipalArn`, ...) come from the
principal at evaluation; request-wide keys (`aws:SecureTransport`, `aws:SourceIp`,
`aws:CurrentTime`) from `global_context`; `aws:SourceArn`/`aws:SourceAccount` from the service
acting (`source_arn`, `source_account`). An operation not in the table raises `UnmappedOperation`:
the strict face never allows by default.

The table lives in `authorization_s3`, `authorization_sagemaker` and `authorization_services`;
each entry lists who calls it (`call_sites`). `python -m local.aws.strict.authorization` prints the
(principal, operation) pairs.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from local.aws.strict import authorization_s3, authorization_sagemaker, authorization_services  # noqa: F401 (register)
from local.aws.strict.iam_policy import AuthorizationRequest
from local.aws.strict.operation_table import OPERATIONS, OperationEntry, ResourceLookup, Scope, UnmappedOperation

__all__ = ["UnmappedOperation", "authorization_requests", "entry", "global_context", "missing_object_request",
           "operations_by_principal", "requested_actions"]


def entry(service: str, operation: str) -> OperationEntry:
    try:
        return OPERATIONS[(service, operation)]
    except KeyError:
        raise UnmappedOperation(service, operation) from None


def authorization_requests(service: str, operation: str, params: dict, *, region: str, account: str,
                           lookup: ResourceLookup | None = None, source_arn: str | None = None,
                           source_account: str | None = None) -> list[AuthorizationRequest]:
    """Every authorization IAM makes for this call (all must be allowed)."""
    found = entry(service, operation)
    source: dict[str, str] = {}
    if source_arn:
        source["aws:SourceArn"] = source_arn
    if source_account:
        source["aws:SourceAccount"] = source_account
    scope = Scope(service, operation, region, account, frozenset(found.actions), lookup, source)
    return found.build(params, scope)


def missing_object_request(params: dict, *, region: str, account: str) -> AuthorizationRequest:
    """The request S3 evaluates before answering that a key does not exist (GetObject/HeadObject):
    without s3:ListBucket on the bucket the answer is 403 AccessDenied instead of 404."""
    scope = Scope("s3", "ListObjectsV2", region, account, frozenset({"s3:ListBucket"}))
    return authorization_s3.missing_object_request(params, scope)


def global_context(*, secure_transport: bool, source_ip: str | None = None,
                   now: datetime | None = None, requested_region: str | None = None) -> dict[str, Any]:
    """The request-wide condition keys. Locally the gateway answers for AWS's TLS endpoints, so it
    should report `secure_transport=True` (the loopback hop being HTTP is an artifact); otherwise
    every `DenyInsecureTransport` bucket and queue policy of the template refuses everything."""
    moment = now or datetime.now(timezone.utc)
    context: dict[str, Any] = {
        "aws:SecureTransport": secure_transport,
        "aws:CurrentTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:EpochTime": int(moment.timestamp()),
    }
    if source_ip:
        context["aws:SourceIp"] = source_ip
    if requested_region:
        context["aws:RequestedRegion"] = requested_region
    return context


def requested_actions() -> set[str]:
    """Every IAM action any table entry may request (what `iam_reference.json` must describe)."""
    return {action for found in OPERATIONS.values() for action in found.actions}


def operations_by_principal() -> Mapping[str, list[tuple[str, str, str]]]:
    """principal -> [(component, "service:Operation", where)], from the table's caller lists."""
    pairs: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for (service, operation), found in sorted(OPERATIONS.items()):
        for caller in found.callers:
            pairs[caller.principal].append((caller.component, f"{service}:{operation}", caller.where))
    return {principal: sorted(items) for principal, items in sorted(pairs.items())}


def _print_pairs() -> None:
    for principal, items in operations_by_principal().items():
        print(principal)
        for component, operation, where in items:
            print(f"    {operation:58} {component}  ({where})")


if __name__ == "__main__":
    _print_pairs()
    sys.exit(0)

