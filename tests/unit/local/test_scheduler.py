"""The local EventBridge Scheduler: expressions, due times, universal targets, retries, dead letters."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError

from local.aws.scheduler import Cron, LocalScheduler, ScheduleError, next_fire_time

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 10, 17, 30, tzinfo=UTC)


def test_rate_counts_from_its_anchor():
    anchor = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert next_fire_time("rate(1 hour)", T0, anchor=anchor) == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    assert next_fire_time("rate(5 minutes)", T0, anchor=anchor) == datetime(2026, 12, 1, 10, 20, tzinfo=UTC)
    assert next_fire_time("rate(2 days)", anchor, anchor=anchor) == anchor + timedelta(days=2)
    with pytest.raises(ScheduleError):
        next_fire_time("rate(1 fortnight)", T0, anchor=anchor)


def test_cron_in_eventbridge_fields_and_timezones():
    assert next_fire_time("cron(0 12 * * ? *)", T0, anchor=T0) == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert next_fire_time("cron(*/15 * * * ? *)", T0, anchor=T0) == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    # 1 = Sunday in EventBridge: 2026-12-06 is a Sunday
    assert next_fire_time("cron(30 8 ? * 1 *)", T0, anchor=T0) == datetime(2026, 12, 6, 8, 30, tzinfo=UTC)
    assert next_fire_time("cron(0 9 ? * MON-FRI *)", T0, anchor=T0) == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert next_fire_time("cron(0 0 L * ? *)", T0, anchor=T0) == datetime(2026, 12, 31, 0, 0, tzinfo=UTC)
    assert next_fire_time("cron(0 0 1 JAN ? 2027)", T0, anchor=T0) == datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    assert next_fire_time("cron(0 0 1 JAN ? 2025)", T0, anchor=T0) is None
    # 12:00 in Berlin (UTC+1 in December) is 11:00 UTC
    assert next_fire_time("cron(0 12 * * ? *)", T0, anchor=T0, tz="Europe/Berlin") == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    for bad in ("cron(0 12 * * *)", "cron(0 12 1 * MON *)", "cron(0 12 ? * 2#1 *)", "cron(61 * * * ? *)"):
        with pytest.raises(ScheduleError):
            next_fire_time(bad, T0, anchor=T0)
    assert Cron.parse("0 12 ? * 1 *").matches(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))


def test_at_fires_once():
    assert next_fire_time("at(2026-12-01T11:00:00)", T0, anchor=T0) == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    assert next_fire_time("at(2026-12-01T10:00:00)", T0, anchor=T0) is None


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(aws):
    sqs, scheduler = boto3.client("sqs"), boto3.client("scheduler")
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    dlq = sqs.create_queue(QueueName="schedule-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clock = Clock(T0)

    def schedule(name: str, target: str, request: dict, **extra):
        scheduler.create_schedule(
            Name=name, ScheduleExpression=extra.pop("expression", "rate(1 minute)"), FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": target, "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
                    "Input": json.dumps(request), "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 60},
                    "DeadLetterConfig": {"Arn": dlq_arn}}, **extra)

    def received(url: str) -> list[dict]:
        return sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"]).get("Messages", [])

    runtime = LocalScheduler(aws, clock=clock, retry_delay_seconds=0.0)
    return type("World", (), {"sqs": sqs, "inbox": inbox, "dlq": dlq, "clock": clock, "schedule": staticmethod(schedule),
                              "received": staticmethod(received), "runtime": runtime})


SEND = "arn:aws:scheduler:::aws-sdk:sqs:sendMessage"


def test_a_universal_target_is_called_with_its_input_when_due(world):
    world.schedule("every-minute", SEND, {"QueueUrl": world.inbox, "MessageBody": "run <aws.scheduler.execution-id> "
                                                                                   "at <aws.scheduler.scheduled-time>"})
    assert world.runtime.tick() == []  # first seen at 10:17:30: due at 10:18:30
    world.clock.now = T0 + timedelta(seconds=61)
    [fired] = world.runtime.tick()
    assert fired.status == "succeeded" and fired.attempts == 1 and fired.response["MessageId"]
    [message] = world.received(world.inbox)
    assert message["Body"] == f"run {fired.execution_id} at 2026-12-01T10:18:30Z"
    assert world.runtime.tick() == []  # not again before 10:19:30


def test_disabled_schedules_never_fire_and_cannot_be_run(world):
    world.schedule("off", SEND, {"QueueUrl": world.inbox, "MessageBody": "x"}, State="DISABLED")
    world.clock.now = T0 + timedelta(minutes=5)
    world.runtime.tick()
    world.clock.now = T0 + timedelta(minutes=10)
    assert world.runtime.tick() == []
    with pytest.raises(ScheduleError, match="DISABLED"):
        world.runtime.run_schedule("off")
    assert world.received(world.inbox) == []


def test_a_refused_run_goes_to_the_dead_letter_queue_without_retries(world):
    world.schedule("drift", "arn:aws:scheduler:::aws-sdk:sagemaker:startPipelineExecution",
                   {"PipelineName": "missing-drift-monitor", "ClientRequestToken": "<aws.scheduler.execution-id>"})
    result = world.runtime.run_schedule("drift")
    assert result.status == "failed" and result.attempts == 1 and result.dead_lettered
    [letter] = world.received(world.dlq)
    assert json.loads(letter["Body"])["ClientRequestToken"] == result.execution_id
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["EXECUTION_ID"] == result.execution_id and attributes["TARGET_ARN"].endswith("startPipelineExecution")
    assert attributes["ERROR_CODE"] and attributes["SCHEDULE_ARN"].endswith("/drift")


def test_a_failing_target_is_retried_as_the_policy_says(world, monkeypatch):
    world.schedule("flaky", SEND, {"QueueUrl": world.inbox, "MessageBody": "attempt <aws.scheduler.attempt-number>"})
    real = world.runtime._invoke
    calls = []

    def unavailable_twice(target, payload, schedule_arn):
        calls.append(payload)
        if len(calls) <= 2:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try later"},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "SendMessage")
        return real(target, payload, schedule_arn)

    monkeypatch.setattr(world.runtime, "_invoke", unavailable_twice)
    result = world.runtime.run_schedule("flaky")
    assert result.status == "succeeded" and result.attempts == 3
    assert [m["Body"] for m in world.received(world.inbox)] == ["attempt 3"]

    calls.clear()
    monkeypatch.setattr(world.runtime, "_invoke", lambda *a: (_ for _ in ()).throw(
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendMessage")))
    failed = world.runtime.run_schedule("flaky")
    assert failed.attempts == 3 and failed.dead_lettered  # 1 + MaximumRetryAttempts 2


def test_run_now_from_another_process_is_a_one_time_copy_the_runtime_fires_and_deletes(world):
    from local.cli.schedule import run_now

    world.schedule("hourly", SEND, {"QueueUrl": world.inbox, "MessageBody": "now"}, expression="rate(1 hour)")
    runtime = LocalScheduler(world.runtime.endpoint_url, poll_seconds=0.2).start()
    try:
        result = run_now(boto3.client("scheduler"), "hourly", wait=20)
    finally:
        runtime.stop()
    assert result["status"] == "fired" and result["one_time_schedule"].startswith("hourly-run-")
    assert [m["Body"] for m in world.received(world.inbox)] == ["now"]
    assert [s["Name"] for s in boto3.client("scheduler").list_schedules()["Schedules"]] == ["hourly"]
    [fired] = runtime.history
    assert fired.schedule == result["one_time_schedule"] and fired.status == "succeeded"
