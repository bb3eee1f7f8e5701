"""AWS::IAM::Role: the template's and those SAM generates (`sam_generated`), with their policies."""
from __future__ import annotations

from typing import TYPE_CHECKING

from local.aws.stack.model import ProvisionError
from local.aws.stack.template import json_text

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def create_role(p: Provisioner, logical_id: str, props: dict) -> None:
    name = props.get("RoleName") or p.physical_name(logical_id, 64)
    path = props.get("Path", "/")
    iam = p.client("iam")
    assume = props.get("AssumeRolePolicyDocument") or {"Version": "2012-10-17", "Statement": []}
    optional = {key: props[key] for key in ("Description", "MaxSessionDuration") if props.get(key)}
    try:
        role = iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json_text(assume), **optional)["Role"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=name)["Role"]
    for policy in props.get("Policies") or []:
        iam.put_role_policy(RoleName=name, PolicyName=policy["PolicyName"],
                            PolicyDocument=json_text(_versioned(policy["PolicyDocument"], logical_id)))
    # AWS-managed policies (SAM attaches AWSLambdaBasicExecutionRole, AWSXrayWriteOnlyAccess): moto
    # knows their documents when it loads AWS's managed policies (MOTO_IAM_LOAD_MANAGED_POLICIES).
    for policy_arn in props.get("ManagedPolicyArns") or []:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    p.add(logical_id, "AWS::IAM::Role", name, Arn=role["Arn"], RoleId=role["RoleId"], Name=name)


def _versioned(document, owner: str):
    """IAM takes a policy without `Version` (SAM writes some) as version 2008-10-17; moto refuses it.
    The versions differ only in policy variables, so such a document is stored as 2012-10-17 unless
    it holds `${`, where the meaning would change (then provisioning stops and says so)."""
    if not isinstance(document, dict) or "Version" in document:
        return document
    if "${" in json_text(document):
        raise ProvisionError(f"{owner}: a policy without Version (2008-10-17) uses policy variables; "
                             "the local face cannot store it with the same meaning")
    return {"Version": "2012-10-17", **document}


def role(p: Provisioner, logical_id: str, definition: dict) -> None:
    create_role(p, logical_id, p.props(definition))
