"""Who is calling and which policies apply, read from moto's in-process backends.

moto runs inside the gateway's process, so its IAM and STS state is the source of truth: access
keys of IAM users, STS role sessions, inline and attached policies, groups, trust policies, and
the resource policies moto stores. moto keeps checking signatures and keys; this module only
reads. AWS-managed policies (AdministratorAccess, ...) exist in moto only when it loads them
(`MOTO_IAM_LOAD_MANAGED_POLICIES=true` before the backends are created); attaching one otherwise
fails in moto itself.

Resource policies covered: S3 bucket policies, SQS queue policies, SNS topic policies, Lambda
function policies (AddPermission), Secrets Manager resource policies and IAM role trust policies
(the resource policy of `sts:AssumeRole`). Not stored by moto, so not covered: KMS key policies
(not evaluated at all), SageMaker model package group policies, EventBridge bus policies.
"""
from __future__ import annotations

import functools
import json
from typing import Any

from local.aws.strict.iam_patterns import split_arn
from local.aws.strict.iam_policy import Principal

DEFAULT_ACCOUNT = "123456789012"
PARTITION = "aws"


def _iam(account: str):
    from moto.iam.models import iam_backends

    return iam_backends[account][PARTITION]


def _sts(account: str):
    from moto.sts.models import sts_backends

    return sts_backends[account][PARTITION]


def _role(account: str, role_arn: str):
    from moto.iam.exceptions import NotFoundException

    try:
        return _iam(account).get_role_by_arn(role_arn)
    except NotFoundException:
        return None


def principal_for_access_key(access_key_id: str, account: str = DEFAULT_ACCOUNT) -> Principal | None:
    """The IAM user owning an active access key, or the role session of STS credentials; None
    for keys moto does not know (or a deactivated user key)."""
    iam = _iam(account)
    user = iam.get_user_from_access_key_id(access_key_id)
    if user is not None:
        key = next(k for k in user.access_keys if k.access_key_id == access_key_id)
        if key.status != "Active":
            return None
        tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(user.name)}
        return Principal(kind="user", arn=user.arn, account=account, name=user.name, unique_id=user.id,
                         tags=tags, access_key_id=access_key_id)
    session = _sts(account).get_assumed_role_from_access_key(access_key_id)
    if session is None:
        return None
    role = _role(account, session.role_arn)
    role_name = session.role_arn.rsplit("/", 1)[-1]
    role_id = role.id if role is not None else None
    return Principal(
        kind="assumed-role",
        arn=f"arn:{PARTITION}:sts::{account}:assumed-role/{role_name}/{session.session_name}",
        account=account, name=role_name, role_arn=session.role_arn, session_name=session.session_name,
        unique_id=f"{role_id}:{session.session_name}" if role_id else None,
        tags={t["Key"]: t["Value"] for t in (role.tags or [])} if role is not None else {},
        access_key_id=access_key_id)


@functools.lru_cache(maxsize=1024)
def _parsed_document(text: str) -> Any:
    """A policy document's JSON, parsed once per distinct text: the strict face reads the caller's
    policies on every request, and moto keeps them as text. A changed policy is a new text, so the
    cache never answers with an old version. Callers must not modify the result."""
    return json.loads(text)


def _document_of(document: Any) -> Any:
    return _parsed_document(document) if isinstance(document, str) else document


def _managed(policy) -> dict[str, Any]:
    version = next(v for v in policy.versions if v.is_default)
    return {"PolicyName": policy.name, "PolicyArn": policy.arn, "PolicyDocument": _document_of(version.document)}


def _inline(name: str, document: Any) -> dict[str, Any]:
    return {"PolicyName": name, "PolicyDocument": _document_of(document)}


def identity_policies(principal: Principal) -> list[dict]:
    """The principal's identity-based policies as `{"PolicyName", "PolicyDocument"}`: inline and
    attached managed policies of the user and of each of its groups, or of the session's role."""
    if principal.kind in ("service", "root"):
        return []
    iam = _iam(principal.account)
    if principal.kind == "user":
        user = iam.get_user(principal.name)
        policies = [_inline(n, d) for n, d in user.policies.items()]
        policies += [_managed(p) for p in user.managed_policies.values()]
        for group in iam.get_groups_for_user(user.name):
            policies += [_inline(f"{group.name}/{n}", d) for n, d in group.policies.items()]
            policies += [_managed(p) for p in group.managed_policies.values()]
        return policies
    role = _role(principal.account, principal.role_arn or "")
    if role is None:  # moto lets a session outlive (or precede) its role: nothing applies
        return []
    return [_inline(n, d) for n, d in role.policies.items()] + [_managed(p) for p in role.managed_policies.values()]


def _document(text: Any, name: str) -> dict | None:
    if not text:
        return None
    document = _document_of(text.decode() if isinstance(text, bytes) else text)
    return {"PolicyName": name, "PolicyDocument": document}


def resource_policy(service: str, resource_arn: str) -> dict | None:
    """The resource-based policy moto stores for `resource_arn` (IAM prefix `service`: s3, sqs,
    sns, lambda, secretsmanager, iam for role trust policies), or None."""
    parts = split_arn(resource_arn)
    if parts is None:
        return None
    _, _, _, region, account, resource = parts
    if service == "s3":
        from moto.s3.models import s3_backends

        bucket = s3_backends[account or DEFAULT_ACCOUNT][PARTITION].buckets.get(resource.split("/", 1)[0])
        return _document(bucket.policy, "bucket policy") if bucket else None
    if service == "sqs":
        from moto.sqs.models import sqs_backends

        queue = sqs_backends[account][region].queues.get(resource)
        return _document(queue.policy, "queue policy") if queue else None
    if service == "sns":
        from moto.sns.models import sns_backends

        topic = sns_backends[account][region].topics.get(resource_arn)
        return _document(topic._policy_json, "topic policy") if topic else None
    if service == "lambda":
        from moto.awslambda.exceptions import UnknownFunctionException
        from moto.awslambda.utils import get_backend  # the simple (no-Docker) backend when so configured

        name = resource.split(":")[1] if resource.startswith("function:") else resource
        try:
            function = get_backend(account, region).get_function(name)
        except UnknownFunctionException:
            return None
        statements = function.policy.statements
        return _document({"Version": "2012-10-17", "Statement": statements}, "function policy") if statements else None
    if service == "secretsmanager":
        from moto.secretsmanager.models import secretsmanager_backends

        secret = secretsmanager_backends[account][region].secrets.get(resource_arn)
        return _document(secret.policy, "secret policy") if secret is not None else None
    if service in ("iam", "sts") and resource.startswith("role/"):
        role = _role(account, resource_arn)
        return _document(role.assume_role_policy_document, "role trust policy") if role else None
    return None


class MotoLookup:
    """`operation_table.ResourceLookup` answered from moto's backends."""

    def __init__(self, account: str = DEFAULT_ACCOUNT, region: str = "us-east-1"):
        self.account, self.region = account, region

    def secret_arn(self, secret_id: str) -> str | None:
        from moto.secretsmanager.models import secretsmanager_backends

        secret = secretsmanager_backends[self.account][self.region].secrets.get(secret_id)
        return secret.arn if secret is not None else None

    def role_arn(self, role_name: str) -> str | None:
        from moto.iam.exceptions import NotFoundException

        try:
            return _iam(self.account).get_role(role_name).arn
        except NotFoundException:
            return None

    def ses_identity(self, address: str) -> str | None:
        from moto.ses.models import ses_backends

        identities = ses_backends[self.account][self.region].email_identities
        if address in identities:
            return address
        domain = address.rpartition("@")[2].lower()
        return domain if domain in identities else None
