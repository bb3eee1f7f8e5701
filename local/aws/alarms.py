"""The local face's one CloudWatch alarm evaluator: moto stores alarms and metric data but never
evaluates an alarm.

`AlarmEvaluator.evaluate_now()` reads every alarm moto holds (DescribeAlarms, as the local runtime:
CloudWatch does this itself on AWS) and evaluates it over the metric data moto received:

* a metric alarm: GetMetricStatistics of its Namespace/MetricName/Dimensions with its Statistic (or
  ExtendedStatistic) over the last EvaluationPeriods periods of Period seconds;
* a metric-math alarm (`Metrics`): each `MetricStat` query the same way, then the expression that
  returns data, with `+ - * /`, numbers, query ids and `FILL(id, value)` (what the template's alarms
  use; other functions are refused with a logged reason and the alarm is left as it is);
* a period breaches by ComparisonOperator against Threshold; DatapointsToAlarm of the
  EvaluationPeriods (default all) must breach for ALARM; TreatMissingData decides periods without
  data: `missing` (the default: all missing is INSUFFICIENT_DATA), `breaching`, `notBreaching`,
  `ignore` (all missing keeps the current state).

On a change only, the state is set in moto (SetAlarmState), the alarm's actions for the new state are
performed (ActionsEnabled; SNS topics get CloudWatch's JSON alarm message) and a "CloudWatch Alarm
State Change" event (source aws.cloudwatch, the documented detail) is put on the default bus, so
rules on it fire. One local liberty: a new alarm leaving INSUFFICIENT_DATA for OK (every quiet alarm,
right after provisioning) changes state and sends its event but performs no OKActions, so a local
stack does not mail "OK" for each alarm it creates.

The evaluator runs every `period_seconds` (10 s locally) and on `evaluate_now()`.
"""
from __future__ import annotations

import ast
import json
import logging
import operator
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from local.aws.periodic import PeriodicWork

log = logging.getLogger(__name__)

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
REGION_NAMES = {"us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)", "us-west-2": "US West (Oregon)",
                "eu-west-1": "EU (Ireland)", "eu-central-1": "EU (Frankfurt)"}


MOTO_INITIAL_REASON = "Unchecked: Initial alarm creation"


class UnsupportedAlarm(ValueError):
    pass


@dataclass(frozen=True)
class StateChange:
    alarm_name: str
    alarm_arn: str
    old_state: str
    new_state: str
    reason: str
    actions: tuple[str, ...]


class AlarmEvaluator:
    def __init__(self, endpoint_url: str, credentials: Any = None, *, period_seconds: float = 10.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), account: str | None = None,
                 region: str | None = None):
        from local.aws.stack.model import ACCOUNT_ID, REGION

        self.endpoint_url = endpoint_url
        self.credentials = credentials  # the local runtime's (None: the environment's, bare gateway)
        self.period_seconds = period_seconds
        self.clock = clock
        self.account, self.region = account or ACCOUNT_ID, region or REGION
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._rounds = PeriodicWork("alarm-evaluator", self.evaluate_now, period_seconds, logger=log,
                                    failure_message="alarm evaluator: an evaluation round failed (the next one tries again)")
        self.changes: list[StateChange] = []

    def client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            keys = self.credentials.client_kwargs() if self.credentials is not None else {}
            self._clients[service] = boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region,
                                                  config=Config(retries={"max_attempts": 3}), **keys)
        return self._clients[service]

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "AlarmEvaluator":
        self._rounds.start()
        return self

    def stop(self) -> None:
        self._rounds.stop()

    # -- evaluation -----------------------------------------------------------------------------
    def alarms(self, names: list[str] | None = None) -> list[dict]:
        cloudwatch = self.client("cloudwatch")
        kwargs: dict[str, Any] = {"AlarmTypes": ["MetricAlarm"]}
        if names:
            kwargs["AlarmNames"] = names
        found, token = [], None
        while True:
            page = cloudwatch.describe_alarms(**kwargs, **({"NextToken": token} if token else {}))
            found += page.get("MetricAlarms", [])
            token = page.get("NextToken")
            if not token:
                return found

    def evaluate_now(self, names: list[str] | None = None) -> list[StateChange]:
        """Evaluates every alarm (or those named) once; returns the state changes it made."""
        with self._lock:  # one round at a time: a change is decided and acted on once
            changes = []
            now = self.clock()
            for alarm in self.alarms(names):
                try:
                    state, reason, data = self.decide(alarm, now)
                except UnsupportedAlarm as exc:
                    log.warning("alarm %s is not evaluated locally: %s", alarm["AlarmName"], exc)
                    continue
                if state is not None and state == current_state(alarm) != alarm.get("StateValue"):
                    # moto's new alarm says OK; the state AWS would show is written, nothing changed
                    self.client("cloudwatch").set_alarm_state(AlarmName=alarm["AlarmName"], StateValue=state,
                                                              StateReason=reason[:1023], StateReasonData=json.dumps(data))
                    continue
                if state is None or state == current_state(alarm):
                    continue
                changes.append(self._change(alarm, state, reason, data, now))
            self.changes += changes
            return changes

    def decide(self, alarm: dict, now: datetime) -> tuple[str | None, str, dict]:
        """(new state or None to keep it, reason, reason data) of `alarm` at `now`."""
        periods = int(alarm.get("EvaluationPeriods", 1))
        period = int(alarm.get("Period") or _math_period(alarm))
        # Up to and including this second: a datapoint stamped "now" counts.
        end = (now + timedelta(seconds=1)).replace(microsecond=0)
        start = end - timedelta(seconds=period * periods)
        values = self._values(alarm, start, end, period)  # one value (or None) per period, oldest first
        threshold = float(alarm.get("Threshold", 0))
        compare = COMPARISONS.get(alarm.get("ComparisonOperator", ""))
        if compare is None:
            raise UnsupportedAlarm(f"ComparisonOperator {alarm.get('ComparisonOperator')} (anomaly detection)")
        treat = alarm.get("TreatMissingData") or "missing"
        needed = int(alarm.get("DatapointsToAlarm") or periods)
        present = [v for v in values if v is not None]
        breaching = sum(1 for v in present if compare(v, threshold))
        missing = len(values) - len(present)
        if treat == "breaching":
            breaching += missing
        data = {"version": "1.0", "queryDate": _iso(now), "startDate": _iso(start), "period": period,
                "recentDatapoints": present, "threshold": threshold, "evaluatedDatapoints": [
                    {"timestamp": _iso(start + timedelta(seconds=period * i)), "value": v}
                    for i, v in enumerate(values) if v is not None]}
        operator_text = alarm.get("ComparisonOperator", "")
        if breaching >= needed:
            return "ALARM", (f"Threshold Crossed: {breaching} out of the last {periods} datapoints "
                             f"{present} were {_words(operator_text)} the threshold ({threshold})."), data
        if not present and treat == "ignore":
            return None, "", data
        if not present and treat == "missing":
            return "INSUFFICIENT_DATA", (f"Insufficient Data: {periods} datapoints were unknown."), data
        return "OK", (f"Threshold Crossed: {breaching} out of the last {periods} datapoints {present} "
                      f"were {_words(operator_text)} the threshold ({threshold}) (minimum {needed} "
                      "datapoints for OK -> ALARM transition)."), data

    def _values(self, alarm: dict, start: datetime, end: datetime, period: int) -> list[float | None]:
        if alarm.get("MetricName"):
            return self._series(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions") or [],
                                alarm.get("Statistic"), alarm.get("ExtendedStatistic"), start, end, period)
        queries = alarm.get("Metrics") or []
        if not queries:
            raise UnsupportedAlarm("no metric and no metric math")
        series: dict[str, list[float | None]] = {}
        for query in queries:
            stat = query.get("MetricStat")
            if stat:
                metric = stat["Metric"]
                series[query["Id"]] = self._series(metric["Namespace"], metric["MetricName"],
                                                   metric.get("Dimensions") or [], *_statistic(stat["Stat"]),
                                                   start, end, int(stat.get("Period") or period))
        returned = [q for q in queries if q.get("ReturnData", True) and q.get("Expression")] or \
            [q for q in queries if q.get("ReturnData", True)]
        if len(returned) != 1:
            raise UnsupportedAlarm("a metric-math alarm needs exactly one query that returns data")
        (result,) = returned
        if result.get("MetricStat"):
            return series[result["Id"]]
        count = len(next(iter(series.values()), []))
        return [evaluate_expression(result["Expression"], {k: v[i] for k, v in series.items()}) for i in range(count)]

    def _series(self, namespace: str, name: str, dimensions: list[dict], statistic: str | None,
                extended: str | None, start: datetime, end: datetime, period: int) -> list[float | None]:
        kwargs: dict[str, Any] = {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions,
                                  "StartTime": start, "EndTime": end, "Period": period}
        if extended:
            kwargs["ExtendedStatistics"] = [extended]
        else:
            kwargs["Statistics"] = [statistic or "Average"]
        points = self.client("cloudwatch").get_metric_statistics(**kwargs).get("Datapoints", [])
        count = max(1, round((end - start).total_seconds() / period))
        buckets: list[list[float]] = [[] for _ in range(count)]
        for point in points:
            index = int((point["Timestamp"] - start).total_seconds() // period)
            value = point["ExtendedStatistics"][extended] if extended else point[statistic or "Average"]
            buckets[min(max(index, 0), count - 1)].append(float(value))
        return [_combine(values, statistic) if values else None for values in buckets]

    # -- acting on a change ---------------------------------------------------------------------
    def _change(self, alarm: dict, state: str, reason: str, data: dict, now: datetime) -> StateChange:
        old = current_state(alarm)
        name, arn = alarm["AlarmName"], alarm["AlarmArn"]
        self.client("cloudwatch").set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason[:1023],
                                                  StateReasonData=json.dumps(data))
        log.info("alarm %s: %s -> %s (%s)", name, old, state, reason)
        actions: list[str] = []
        settling = old == "INSUFFICIENT_DATA" and state == "OK"  # see the module docstring
        if alarm.get("ActionsEnabled", True) and not settling:
            actions = list(alarm.get({"ALARM": "AlarmActions", "OK": "OKActions"}.get(state, "InsufficientDataActions"))
                           or [])
        message = self.alarm_message(alarm, old, state, reason, data, now)
        for action in actions:
            try:
                self._perform(action, alarm, state, message)
            except Exception:  # one failed action must not hide the state change or the others
                log.exception("alarm %s: action %s failed", name, action)
        self.client("events").put_events(Entries=[{
            "Source": "aws.cloudwatch", "DetailType": "CloudWatch Alarm State Change", "Resources": [arn],
            "Detail": json.dumps(self.event_detail(alarm, old, state, reason, data, now)), "Time": now}])
        return StateChange(name, arn, old, state, reason, tuple(actions))

    def _perform(self, action: str, alarm: dict, state: str, message: dict) -> None:
        service = action.split(":")[2]
        if service != "sns":
            raise UnsupportedAlarm(f"action {action}: the local evaluator performs SNS actions only")
        region = REGION_NAMES.get(self.region, self.region)
        self.client("sns").publish(TopicArn=action, Subject=f'{state}: "{alarm["AlarmName"]}" in {region}'[:100],
                                   Message=json.dumps(message))

    def alarm_message(self, alarm: dict, old: str, state: str, reason: str, data: dict, now: datetime) -> dict:
        """The JSON message CloudWatch publishes to an SNS action."""
        trigger: dict[str, Any] = {
            "Period": alarm.get("Period"), "EvaluationPeriods": alarm.get("EvaluationPeriods"),
            "DatapointsToAlarm": alarm.get("DatapointsToAlarm"), "ComparisonOperator": alarm.get("ComparisonOperator"),
            "Threshold": alarm.get("Threshold"), "TreatMissingData": alarm.get("TreatMissingData", "missing"),
            "EvaluateLowSampleCountPercentile": ""}
        if alarm.get("MetricName"):
            trigger.update({"MetricName": alarm["MetricName"], "Namespace": alarm["Namespace"],
                            "StatisticType": "ExtendedStatistic" if alarm.get("ExtendedStatistic") else "Statistic",
                            "Statistic": alarm.get("ExtendedStatistic") or str(alarm.get("Statistic", "")).upper(),
                            "Unit": alarm.get("Unit"),
                            "Dimensions": [{"value": d["Value"], "name": d["Name"]} for d in alarm.get("Dimensions", [])]})
        else:
            trigger["Metrics"] = alarm.get("Metrics")
        return {"AlarmName": alarm["AlarmName"], "AlarmDescription": alarm.get("AlarmDescription"),
                "AWSAccountId": self.account, "AlarmConfigurationUpdatedTimestamp": _iso(alarm.get("AlarmConfigurationUpdatedTimestamp") or now),
                "NewStateValue": state, "NewStateReason": reason, "StateChangeTime": _iso(now),
                "Region": REGION_NAMES.get(self.region, self.region), "AlarmArn": alarm["AlarmArn"],
                "OldStateValue": old, "OKActions": alarm.get("OKActions", []), "AlarmActions": alarm.get("AlarmActions", []),
                "InsufficientDataActions": alarm.get("InsufficientDataActions", []), "Trigger": trigger}

    def event_detail(self, alarm: dict, old: str, state: str, reason: str, data: dict, now: datetime) -> dict:
        """The documented detail of "CloudWatch Alarm State Change"."""
        if alarm.get("MetricName"):
            metrics = [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, alarm["AlarmArn"])), "returnData": True, "metricStat": {
                "metric": {"namespace": alarm["Namespace"], "name": alarm["MetricName"],
                           "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}},
                "period": alarm.get("Period"), "stat": alarm.get("ExtendedStatistic") or alarm.get("Statistic")}}]
        else:
            metrics = []
            for query in alarm.get("Metrics", []):
                entry: dict[str, Any] = {"id": query["Id"], "returnData": query.get("ReturnData", True)}
                if query.get("Expression"):
                    entry.update(expression=query["Expression"], label=query.get("Label"))
                if query.get("MetricStat"):
                    stat = query["MetricStat"]
                    entry["metricStat"] = {"metric": {"namespace": stat["Metric"]["Namespace"], "name": stat["Metric"]["MetricName"],
                                                      "dimensions": {d["Name"]: d["Value"] for d in stat["Metric"].get("Dimensions", [])}},
                                           "period": stat.get("Period"), "stat": stat.get("Stat")}
                metrics.append(entry)
        previous = {"value": old, "reason": alarm.get("StateReason", ""), "timestamp": _iso(alarm.get("StateUpdatedTimestamp") or now)}
        return {"alarmName": alarm["AlarmName"],
                "state": {"value": state, "reason": reason, "reasonData": json.dumps(data), "timestamp": _iso(now)},
                "previousState": previous,
                "configuration": {"description": alarm.get("AlarmDescription", ""), "metrics": metrics}}


def current_state(alarm: dict) -> str:
    """The alarm's state; a new alarm is INSUFFICIENT_DATA, as on AWS (moto starts it as OK)."""
    if str(alarm.get("StateReason", "")).startswith(MOTO_INITIAL_REASON):
        return "INSUFFICIENT_DATA"
    return alarm.get("StateValue") or "INSUFFICIENT_DATA"


# -- metric math --------------------------------------------------------------------------------
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate_expression(expression: str, values: dict[str, float | None]) -> float | None:
    """A CloudWatch metric-math expression at one period: ids, numbers, + - * /, FILL(id, value)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise UnsupportedAlarm(f"expression {expression!r}: {exc}") from None

    def walk(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise UnsupportedAlarm(f"expression {expression!r} names {node.id}, which is no MetricStat query")
            return values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = walk(node.operand)
            return None if inner is None else -inner
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Div) and right == 0:
                return None
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "FILL" and len(node.args) == 2:
            value = walk(node.args[0])
            return walk(node.args[1]) if value is None else value
        raise UnsupportedAlarm(f"expression {expression!r}: only ids, numbers, + - * / and FILL(id, value) are evaluated locally")

    return walk(tree)


def _math_period(alarm: dict) -> int:
    periods = [q["MetricStat"].get("Period") for q in alarm.get("Metrics") or [] if q.get("MetricStat")]
    periods = [int(p) for p in periods if p]
    if not periods:
        raise UnsupportedAlarm("no Period")
    return max(periods)


def _statistic(stat: str) -> tuple[str | None, str | None]:
    return (stat, None) if stat in ("SampleCount", "Average", "Sum", "Minimum", "Maximum") else (None, stat)


def _combine(values: list[float], statistic: str | None) -> float:
    """Datapoints of sub-periods within one alarm period, combined as the statistic would."""
    if statistic == "Sum" or statistic == "SampleCount":
        return sum(values)
    if statistic == "Maximum":
        return max(values)
    if statistic == "Minimum":
        return min(values)
    return sum(values) / len(values)


def _words(comparison: str) -> str:
    return {"GreaterThanOrEqualToThreshold": "greater than or equal to", "GreaterThanThreshold": "greater than",
            "LessThanThreshold": "less than", "LessThanOrEqualToThreshold": "less than or equal to"}.get(comparison, comparison)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    return str(value)
