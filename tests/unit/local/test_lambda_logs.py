"""Handler logs in CloudWatch Logs, as Lambda writes them: one stream per execution environment in
`/aws/lambda/<function>`, START/END/REPORT around each invocation, the local file kept too."""
from __future__ import annotations

import re
import textwrap
import time

import boto3

from local.aws.lambda_runtime import LambdaRuntime
from local.aws.sagemaker_pipelines import job_logs
from local.aws.stack.model import FunctionSpec

HANDLER = """
import sys, time

def lambda_handler(event, context):
    print("handling", event["n"], "in", context.log_stream_name)
    if event.get("big"):
        print("x" * event["big"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    print("to stderr", event["n"], file=sys.stderr)
    return event["n"]
"""
STREAM = re.compile(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}")


def _function(tmp_path, name: str, timeout: float = 5) -> FunctionSpec:
    code = tmp_path / name
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(HANDLER))
    return FunctionSpec(name, name, f"arn:aws:lambda:us-east-1:123456789012:function:{name}", code,
                        "app.lambda_handler", {}, [], timeout, 128, "python3.13")


def _events(logs, group: str, stream: str) -> list[str]:
    return [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream,
                                                      startFromHead=True)["events"]]


def test_each_worker_writes_its_own_lambda_stream_and_the_local_file(aws, tmp_path, monkeypatch):
    spec = _function(tmp_path, "logging-fn", timeout=1.5)
    # Small limits, so the batching shared with the job logs is exercised: a call per 3 events.
    monkeypatch.setattr(job_logs, "MAX_BATCH_EVENTS", 3)
    runtime = LambdaRuntime({spec.name: spec}, aws, log_dir=tmp_path / "logs", cloudwatch_logs=True)
    try:
        results = [runtime.invoke(spec.name, {"n": n}) for n in (1, 2)]
        assert [r.payload for r in results] == [1, 2]
        timed_out = runtime.invoke(spec.name, {"n": 3, "sleep": 10})  # kills the worker
        assert timed_out.payload["errorType"] == "Sandbox.Timedout"
        assert runtime.invoke(spec.name, {"n": 4}).payload == 4  # a fresh worker: a new stream
    finally:
        runtime.close()

    logs = boto3.client("logs")
    group = "/aws/lambda/logging-fn"
    streams = [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]]
    assert len(streams) == 2 and all(STREAM.fullmatch(name) for name in streams), streams
    by_stream = {name: _events(logs, group, name) for name in streams}
    first = next(events for events in by_stream.values() if any("handling 1 " in e for e in events))
    second = next(events for events in by_stream.values() if events is not first)

    # The first environment: two invocations, then the one that timed out, in order.
    ids = [r.request_id for r in results] + [timed_out.request_id]
    starts = [e for e in first if e.startswith("START RequestId:")]
    assert starts == [f"START RequestId: {rid} Version: $LATEST" for rid in ids]
    assert [e.split()[2] for e in first if e.startswith("END RequestId:")] == ids
    reports = [e for e in first if e.startswith("REPORT RequestId:")]
    assert len(reports) == 3
    assert re.fullmatch(r"REPORT RequestId: \S+\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB\t"
                        r"Max Memory Used: \d+ MB\tInit Duration: [\d.]+ ms\t", reports[0]), reports[0]
    assert "Init Duration" not in reports[1]  # warm
    assert reports[2].endswith("Status: timeout\t") and "Task timed out after 1.50 seconds" in "\n".join(first)
    handling = first.index(next(e for e in first if e.startswith("handling 1 in ")))
    assert first[handling - 1].startswith(f"START RequestId: {ids[0]}")
    assert first[handling + 1] == "to stderr 1" and first[handling + 2] == f"END RequestId: {ids[0]}"
    # The handler sees the stream it writes to (context.log_stream_name).
    assert first[handling].endswith(next(name for name, events in by_stream.items() if events is first))
    assert any(e.startswith("handling 4 in ") for e in second)

    local = (tmp_path / "logs" / "logging-fn.log").read_text()
    assert "handling 1 in" in local and "to stderr 4" in local and local.count("REPORT RequestId:") == 4


def test_an_event_longer_than_cloudwatch_takes_is_cut_and_a_broken_endpoint_fails_nothing(aws, tmp_path):
    spec = _function(tmp_path, "chatty-fn")
    runtime = LambdaRuntime({spec.name: spec}, aws, cloudwatch_logs=True)
    try:
        assert runtime.invoke(spec.name, {"n": 1, "big": 300_000}).payload == 1
    finally:
        runtime.close()
    logs = boto3.client("logs")
    [stream] = logs.describe_log_streams(logGroupName="/aws/lambda/chatty-fn")["logStreams"]
    messages = _events(logs, "/aws/lambda/chatty-fn", stream["logStreamName"])
    [big] = [m for m in messages if m.startswith("xxx")]
    assert len(big) == job_logs.MAX_EVENT_BYTES

    unreachable = LambdaRuntime({spec.name: spec}, "http://127.0.0.1:1", cloudwatch_logs=True)
    try:
        started = time.monotonic()
        assert unreachable.invoke(spec.name, {"n": 2}).payload == 2
    finally:
        unreachable.close()
    assert time.monotonic() - started < 30


def test_without_cloudwatch_logs_nothing_is_written(aws, tmp_path):
    spec = _function(tmp_path, "quiet-fn")
    runtime = LambdaRuntime({spec.name: spec}, aws)
    try:
        assert runtime.invoke(spec.name, {"n": 1}).payload == 1
    finally:
        runtime.close()
    assert boto3.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"] == []


def test_a_function_with_a_logging_config_logs_to_its_log_group(aws, tmp_path):
    """LoggingConfig.LogGroup names where Lambda sends the output (the handler sees it too)."""
    spec = _function(tmp_path, "configured-fn")
    spec.log_group_name = "/custom/configured-fn"
    runtime = LambdaRuntime({spec.name: spec}, aws, log_dir=tmp_path / "logs", cloudwatch_logs=True)
    try:
        assert runtime.invoke(spec.name, {"n": 7}).payload == 7
    finally:
        runtime.close()
    logs = boto3.client("logs")
    [stream] = logs.describe_log_streams(logGroupName="/custom/configured-fn")["logStreams"]
    assert any("handling 7 " in e for e in _events(logs, "/custom/configured-fn", stream["logStreamName"]))
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/configured-fn")["logGroups"] == []

