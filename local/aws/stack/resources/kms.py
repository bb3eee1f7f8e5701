"""AWS::KMS::Key and AWS::KMS::Alias."""
from __future__ import annotations

from typing import TYPE_CHECKING

from local.aws.stack.template import json_text

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def key(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    kwargs = {"Description": props.get("Description", "")}
    if props.get("KeyPolicy"):
        kwargs["Policy"] = json_text(props["KeyPolicy"])
    key = p.client("kms").create_key(**kwargs)["KeyMetadata"]
    p.add(logical_id, definition["Type"], key["KeyId"], Arn=key["Arn"], KeyId=key["KeyId"])


def alias(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    p.client("kms").create_alias(AliasName=props["AliasName"], TargetKeyId=props["TargetKeyId"])
    p.add(logical_id, definition["Type"], props["AliasName"], Name=props["AliasName"])
