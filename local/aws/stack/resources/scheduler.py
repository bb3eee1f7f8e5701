"""AWS::Scheduler::Schedule: recorded in moto (bookkeeping); local.aws.scheduler fires them."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner

_PASSED = ("Description", "ScheduleExpression", "ScheduleExpressionTimezone", "State", "FlexibleTimeWindow",
           "Target", "GroupName", "StartDate", "EndDate", "KmsKeyArn", "ActionAfterCompletion")


def schedule(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("Name") or p.physical_name(logical_id, 64)
    kwargs = {"Name": name, **{k: props[k] for k in _PASSED if props.get(k) is not None}}
    window = dict(kwargs.get("FlexibleTimeWindow") or {"Mode": "OFF"})
    if "MaximumWindowInMinutes" in window:
        window["MaximumWindowInMinutes"] = int(window["MaximumWindowInMinutes"])
    kwargs["FlexibleTimeWindow"] = window
    target = dict(kwargs["Target"])
    if target.get("RetryPolicy"):
        target["RetryPolicy"] = {k: int(v) for k, v in target["RetryPolicy"].items()}
    kwargs["Target"] = target
    arn = p.client("scheduler").create_schedule(**kwargs)["ScheduleArn"]
    p.add(logical_id, definition["Type"], name, Arn=arn, Name=name)
