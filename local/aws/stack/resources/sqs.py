"""AWS::SQS::Queue and AWS::SQS::QueuePolicy."""
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


def queue_policy(p: Provisioner, logical_id: str, definition: dict) -> None:
    """The queues' resource policy (who may send: EventBridge for the dead-letter queues)."""
    props = p.props(definition)
    for url in props["Queues"]:
        p.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": json_text(props["PolicyDocument"])})
        name = url.rstrip("/").rsplit("/", 1)[-1]
        p.stack.resource_policies[p.arn("sqs", name)] = {"PolicyName": f"queue policy {logical_id}",
                                                          "PolicyDocument": props["PolicyDocument"]}
    p.add(logical_id, definition["Type"], ",".join(props["Queues"]))
