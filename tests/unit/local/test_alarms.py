"""The local alarm evaluator over what moto's CloudWatch received: states, actions, events."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from local.aws.alarms import AlarmEvaluator, UnsupportedAlarm, evaluate_expression


def test_metric_math_of_the_template():
    assert evaluate_expression("FILL(f, 0) + FILL(t, 0) + FILL(a, 0)", {"f": None, "t": 2.0, "a": None}) == 2.0
    assert evaluate_expression("a / b", {"a": 1.0, "b": 0.0}) is None
    assert evaluate_expression("a - 2 * b", {"a": 5.0, "b": 1.0}) == 3.0
    with pytest.raises(UnsupportedAlarm):
        evaluate_expression("ANOMALY_DETECTION_BAND(a)", {"a": 1.0})


@pytest.fixture
def world(aws):
    sns, sqs, events, cloudwatch = (boto3.client(s) for s in ("sns", "sqs", "events", "cloudwatch"))
    topic = sns.create_topic(Name="notifications")["TopicArn"]

    def queue(name: str) -> tuple[str, str]:
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    mail, mail_arn = queue("mail")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=mail_arn, Attributes={"RawMessageDelivery": "true"})
    bus, bus_arn = queue("bus")
    events.put_rule(Name="alarm-changes", EventPattern=json.dumps({"source": ["aws.cloudwatch"],
                                                                   "detail-type": ["CloudWatch Alarm State Change"]}))
    events.put_targets(Rule="alarm-changes", Targets=[{"Id": "q", "Arn": bus_arn}])

    def received(url: str) -> list[str]:
        return [m["Body"] for m in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
                .get("Messages", [])]

    return type("World", (), {"cloudwatch": cloudwatch, "topic": topic, "mail": mail, "bus": bus,
                              "received": staticmethod(received), "evaluator": AlarmEvaluator(aws)})


def drift_alarm(world, treat: str = "ignore") -> None:
    world.cloudwatch.put_metric_alarm(
        AlarmName="stack-data-drift", AlarmDescription="drift", Namespace="RaySageMakerMLOps/DataDrift",
        MetricName="DriftedFeatures", Dimensions=[{"Name": "EndpointName", "Value": "houses"}], Statistic="Maximum",
        Period=300, EvaluationPeriods=1, DatapointsToAlarm=1, Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData=treat, AlarmActions=[world.topic])


def put(world, namespace: str, name: str, dimensions: dict, value: float, ago: float = 5) -> None:
    world.cloudwatch.put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()], "Value": value,
        "Timestamp": datetime.now(timezone.utc) - timedelta(seconds=ago)}])


def test_a_breaching_datapoint_alarms_once_with_actions_and_an_event(world):
    drift_alarm(world)
    assert world.evaluator.evaluate_now() == []  # no data, TreatMissingData ignore: the state stays
    put(world, "RaySageMakerMLOps/DataDrift", "DriftedFeatures", {"EndpointName": "houses"}, 2)
    [change] = world.evaluator.evaluate_now()
    assert (change.old_state, change.new_state, change.actions) == ("INSUFFICIENT_DATA", "ALARM", (world.topic,))
    [state] = world.cloudwatch.describe_alarms(AlarmNames=["stack-data-drift"])["MetricAlarms"]
    assert state["StateValue"] == "ALARM" and "Threshold Crossed" in state["StateReason"]
    [mail] = world.received(world.mail)
    message = json.loads(mail)
    assert message["NewStateValue"] == "ALARM" and message["OldStateValue"] == "INSUFFICIENT_DATA"
    assert message["Trigger"]["MetricName"] == "DriftedFeatures"
    assert message["Trigger"]["Dimensions"] == [{"value": "houses", "name": "EndpointName"}]
    [event] = [json.loads(body) for body in world.received(world.bus)]
    assert event["source"] == "aws.cloudwatch" and event["detail-type"] == "CloudWatch Alarm State Change"
    assert event["resources"] == [state["AlarmArn"]]
    detail = event["detail"]
    assert detail["state"]["value"] == "ALARM" and detail["previousState"]["value"] == "INSUFFICIENT_DATA"
    assert detail["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] == {"EndpointName": "houses"}
    assert world.evaluator.evaluate_now() == []  # unchanged: nothing is sent twice
    assert world.received(world.mail) == []


def test_not_breaching_data_settles_quietly_then_alarms(world):
    world.cloudwatch.put_metric_alarm(
        AlarmName="deploy-failed", AlarmDescription="failed", EvaluationPeriods=1, Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching",
        AlarmActions=[world.topic], OKActions=[world.topic],
        Metrics=[{"Id": "failed", "Expression": "FILL(f, 0) + FILL(t, 0)", "Label": "failed"},
                 *[{"Id": i, "ReturnData": False, "MetricStat": {"Metric": {
                     "Namespace": "AWS/States", "MetricName": m,
                     "Dimensions": [{"Name": "StateMachineArn", "Value": "arn:sm"}]}, "Period": 300, "Stat": "Sum"}}
                   for i, m in (("f", "ExecutionsFailed"), ("t", "ExecutionsTimedOut"))]])
    [settled] = world.evaluator.evaluate_now()
    assert (settled.new_state, settled.actions) == ("OK", ())  # a new alarm's first OK: no mail
    assert world.received(world.mail) == []
    put(world, "AWS/States", "ExecutionsTimedOut", {"StateMachineArn": "arn:sm"}, 1)
    [alarmed] = world.evaluator.evaluate_now()
    assert alarmed.new_state == "ALARM" and alarmed.actions == (world.topic,)
    assert json.loads(world.received(world.mail)[0])["NewStateValue"] == "ALARM"


def test_missing_data_is_insufficient_and_datapoints_to_alarm_counts(world):
    world.cloudwatch.put_metric_alarm(
        AlarmName="latency", AlarmDescription="slow", Namespace="AWS/SageMaker", MetricName="ModelLatency",
        Dimensions=[{"Name": "EndpointName", "Value": "houses"}], Statistic="Average", Period=60,
        EvaluationPeriods=3, DatapointsToAlarm=2, Threshold=100, ComparisonOperator="GreaterThanThreshold")
    world.evaluator.evaluate_now()
    assert world.cloudwatch.describe_alarms(AlarmNames=["latency"])["MetricAlarms"][0]["StateValue"] == "INSUFFICIENT_DATA"
    put(world, "AWS/SageMaker", "ModelLatency", {"EndpointName": "houses"}, 500)
    [change] = world.evaluator.evaluate_now()
    assert change.new_state == "OK"  # one breaching datapoint of the two needed
    put(world, "AWS/SageMaker", "ModelLatency", {"EndpointName": "houses"}, 700, ago=70)
    [change] = world.evaluator.evaluate_now()
    assert change.new_state == "ALARM"
