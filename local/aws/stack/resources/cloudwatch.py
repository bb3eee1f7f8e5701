"""AWS::CloudWatch::Alarm."""
from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def alarm(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("AlarmName") or p.physical_name(logical_id, 255)
    kwargs = {"AlarmName": name}
    numeric = {"Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold"}
    for key, value in props.items():
        if key in ("AlarmName",):
            continue
        if key in numeric:
            value = float(value) if key == "Threshold" else int(value)
        if key == "Metrics":
            value = [{**m, **({"ReturnData": str(m["ReturnData"]).lower() == "true"} if "ReturnData" in m else {})}
                     for m in value]
        if key == "ActionsEnabled":
            value = str(value).lower() == "true"
        kwargs[key] = value
    p.client("cloudwatch").put_metric_alarm(**kwargs)
    p.add(logical_id, definition["Type"], name, Arn=p.arn("cloudwatch", f"alarm:{name}"), Name=name)
