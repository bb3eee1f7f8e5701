"""AWS::Logs::LogGroup."""
from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def log_group(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("LogGroupName") or p.physical_name(logical_id, 512)
    logs = p.client("logs")
    logs.create_log_group(logGroupName=name)
    if props.get("RetentionInDays"):
        logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
    p.add(logical_id, definition["Type"], name, Arn=p.arn("logs", f"log-group:{name}:*"), Name=name)
