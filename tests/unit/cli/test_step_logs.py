"""The last line of a running step's job log, as its table row shows it: from the step's newest
CloudWatch Logs stream (a tuning step's: its newest trial's), without the jobs' logging prefix."""
from __future__ import annotations

import time

import boto3

from local.aws.sagemaker_pipelines.job_logs import PROCESSING_LOG_GROUP, TRAINING_LOG_GROUP
from local.cli.step_logs import last_line

JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:{kind}/{name}"


def put(logs, group: str, stream: str, *messages: str) -> None:
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)])


def test_the_last_line_is_the_newest_streams_last_message_without_the_logging_prefix(aws):
    logs = boto3.client("logs")
    put(logs, PROCESSING_LOG_GROUP, "ingest-1/algo-1-100",
        "2026-12-01 19:12:40,001 INFO jobs.ingest: reading s3://data/incoming/houses.csv",
        "2026-12-01 19:12:41,949 INFO jobs.feature_store_writers: written 500 of 10000 rows (0 rejected), 812 rows/s",
        "   ")
    ingest = {"StepName": "Ingest", "StepStatus": "Executing",
              "Metadata": {"ProcessingJob": {"Arn": JOB_ARN.format(kind="processing-job", name="ingest-1")}}}
    assert last_line(logs, ingest) == "written 500 of 10000 rows (0 rejected), 812 rows/s"

    put(logs, TRAINING_LOG_GROUP, "tune-1-001-0a1b2c3d/algo-1-100", "trial one: round 40")
    time.sleep(0.01)
    put(logs, TRAINING_LOG_GROUP, "tune-1-002-4e5f6a7b/algo-1-101", "x" * 400)
    tuning = {"StepName": "HPTuning", "StepStatus": "Executing",
              "Metadata": {"TuningJob": {"Arn": JOB_ARN.format(kind="hyper-parameter-tuning-job", name="tune-1")}}}
    line = last_line(logs, tuning)
    assert line.startswith("xxx") and line.endswith("...") and len(line) == 160  # shortened for the table

    assert last_line(logs, {"StepName": "Gate", "StepStatus": "Executing", "Metadata": {}}) is None
    missing = {"StepName": "Train", "StepStatus": "Executing",
               "Metadata": {"TrainingJob": {"Arn": JOB_ARN.format(kind="training-job", name="not-started")}}}
    assert last_line(logs, missing) is None
