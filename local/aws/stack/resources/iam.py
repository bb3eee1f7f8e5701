"""AWS::IAM::Role (and the roles SAM generates for functions and state machines)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from local.aws.stack.template import json_text

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def create_role(p: Provisioner, logical_id: str, props: dict) -> None:
    name = props.get("RoleName") or p.physical_name(logical_id, 64)
    path = props.get("Path", "/")
    iam = p.client("iam")
    assume = props.get("AssumeRolePolicyDocument") or {"Version": "2012-10-17", "Statement": []}
    try:
        role = iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=json_text(assume))["Role"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=name)["Role"]
    for policy in props.get("Policies") or []:
        iam.put_role_policy(RoleName=name, PolicyName=policy["PolicyName"],
                            PolicyDocument=json_text(policy["PolicyDocument"]))
    p.add(logical_id, "AWS::IAM::Role", name, Arn=role["Arn"], RoleId=role["RoleId"], Name=name)


def role(p: Provisioner, logical_id: str, definition: dict) -> None:
    create_role(p, logical_id, p.props(definition))
