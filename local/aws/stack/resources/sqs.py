"""AWS::SQS::Queue."""
from __future__ import annotations

from typing import TYPE_CHECKING

from local.aws.stack.template import json_text

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def queue(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    fifo = str(props.get("FifoQueue", "false")).lower() == "true"
    name = props.get("QueueName") or p.physical_name(logical_id, 80 - (5 if fifo else 0)) + (".fifo" if fifo else "")
    attributes = {}
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "MaximumMessageSize",
                "ReceiveMessageWaitTimeSeconds", "FifoQueue", "ContentBasedDeduplication"):
        if key in props:
            attributes[key] = str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json_text(props["RedrivePolicy"])
    sqs = p.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = p.arn("sqs", name)
    p.add(logical_id, definition["Type"], url, Arn=arn, QueueName=name, QueueUrl=url, Name=name)
