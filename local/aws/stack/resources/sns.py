"""AWS::SNS::Topic and AWS::SNS::Subscription (email is recorded, never sent; Lambda via a shadow queue)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from local.aws.stack.model import EventTarget
from local.aws.stack.resources import eventbridge
from local.aws.stack.template import json_text

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def topic(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("TopicName") or p.physical_name(logical_id, 256)
    arn = p.client("sns").create_topic(Name=name)["TopicArn"]
    p.add(logical_id, definition["Type"], arn, TopicArn=arn, TopicName=name, Arn=arn, Name=name)
    for index, subscription in enumerate(props.get("Subscription") or []):
        subscribe(p, f"{logical_id}Subscription{index}", arn, subscription["Protocol"], subscription["Endpoint"], {})


def subscription(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    extra = {k: props[k] for k in ("RawMessageDelivery", "FilterPolicy", "FilterPolicyScope") if k in props}
    subscribe(p, logical_id, props["TopicArn"], props["Protocol"], props["Endpoint"], extra)


def subscribe(p: Provisioner, logical_id: str, topic_arn: str, protocol: str, endpoint: str, extra: dict) -> None:
    protocol = protocol.lower()
    if protocol in ("email", "email-json", "sms"):
        # Recorded, never sent: a local run must not mail anyone.
        p.stack.email_subscriptions.append({"topic_arn": topic_arn, "protocol": protocol, "endpoint": endpoint})
        p.add(logical_id, "AWS::SNS::Subscription", f"{topic_arn}:{logical_id}")
        return
    if protocol == "lambda":
        queue_url, queue_arn = eventbridge.shadow_queue(p, f"sns-{logical_id}")
        attrs = {"FilterPolicy": json_text(extra["FilterPolicy"])} if "FilterPolicy" in extra else {}
        arn = p.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                                        Attributes=attrs)["SubscriptionArn"]
        p.stack.event_targets.append(EventTarget("sns", logical_id, "lambda", endpoint, queue_url, queue_arn))
        p.add(logical_id, "AWS::SNS::Subscription", arn)
        return
    attrs = {}
    if "RawMessageDelivery" in extra:
        attrs["RawMessageDelivery"] = str(extra["RawMessageDelivery"]).lower()
    if "FilterPolicy" in extra:
        attrs["FilterPolicy"] = json_text(extra["FilterPolicy"])
    arn = p.client("sns").subscribe(TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint,
                                    Attributes=attrs)["SubscriptionArn"]
    p.add(logical_id, "AWS::SNS::Subscription", arn)
