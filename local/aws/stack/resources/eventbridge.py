"""AWS::Events::Rule and the EventBridgeRule events of SAM functions and state machines; targets
moto cannot invoke get an SQS shadow queue (see local.aws.eventbridge)."""
from __future__ import annotations

import hashlib
import json
import re
import logging
from typing import TYPE_CHECKING

from local.aws.stack.model import EventTarget

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner

log = logging.getLogger(__name__)


# -- EventBridge ----------------------------------------------------------------------------
def rule(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("Name") or p.physical_name(logical_id, 64)
    targets = []
    for target in props.get("Targets") or []:
        targets.append({k: target[k] for k in ("Id", "Arn", "Input", "InputPath", "InputTransformer",
                                                "RetryPolicy", "DeadLetterConfig", "RoleArn") if k in target})
    arn = put_rule(p, name, props, targets, logical_id)
    p.add(logical_id, definition["Type"], name, Arn=arn, Name=name)


def put_rule(p: Provisioner, name: str, props: dict, targets: list[dict], owner: str) -> str:
    events = p.client("events")
    kwargs = {"Name": name, "State": props.get("State", "ENABLED")}
    if props.get("EventPattern") is not None:
        pattern = props["EventPattern"]
        kwargs["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
    if props.get("ScheduleExpression"):
        kwargs["ScheduleExpression"] = props["ScheduleExpression"]
        log.info("%s: schedule %s is recorded but never fires locally", owner, props["ScheduleExpression"])
    bus = props.get("EventBusName")
    if bus:
        kwargs["EventBusName"] = bus
    arn = events.put_rule(**kwargs)["RuleArn"]
    moto_targets = []
    for target in targets:
        kind = target["Arn"].split(":")[2]
        if kind == "sqs":
            moto_targets.append({k: v for k, v in target.items() if k in ("Id", "Arn", "Input", "InputPath", "InputTransformer")})
            continue
        if kind not in ("lambda", "states", "sns", "events"):
            log.info("%s: target %s not provisioned locally", owner, target["Arn"])
            continue
        queue_url, queue_arn = shadow_queue(p, f"rule-{name}-{target['Id']}")
        # The shadow queue receives the whole event; the dispatcher applies Input* itself.
        moto_targets.append({"Id": target["Id"], "Arn": queue_arn})
        # Retries are capped locally: a target that fails three times will fail the fourth.
        retry = int((target.get("RetryPolicy") or {}).get("MaximumRetryAttempts", 2))
        p.stack.event_targets.append(EventTarget(
            "rule", name, kind, target["Arn"], queue_url, queue_arn, target.get("Input"),
            target.get("InputPath"), target.get("InputTransformer"), retry_attempts=min(retry, 2),
            dead_letter_arn=(target.get("DeadLetterConfig") or {}).get("Arn"),
            role_arn=target.get("RoleArn"), rule_arn=arn))
    if moto_targets:
        put = {"Rule": name, "Targets": moto_targets}
        if bus:
            put["EventBusName"] = bus
        events.put_targets(**put)
    return arn


def shadow_queue(p: Provisioner, label: str) -> tuple[str, str]:
    digest = hashlib.sha1(f"{p.stack.name}/{label}".encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_-]", "-", f"local-shadow-{label}")[:70] + "-" + digest
    url = p.client("sqs").create_queue(QueueName=name, Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
    return url, p.arn("sqs", name)
