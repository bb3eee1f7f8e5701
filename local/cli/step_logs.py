"""Where a pipeline step's job logged, and its last line: what the CLI shows for a running step
(its progress, e.g. "written 500 of 10000 rows") and for a failed one (where to read why).

Read through the CloudWatch Logs API, as on AWS: a step's job (`Metadata.ProcessingJob` /
`TrainingJob` / `TuningJob` of ListPipelineExecutionSteps) writes one stream per host,
`<job name>/<host>-<epoch>`, in `/aws/sagemaker/ProcessingJobs` or `/aws/sagemaker/TrainingJobs`
(`local.aws.sagemaker_pipelines.job_logs`); a tuning step's are its training jobs' streams,
`<tuning job name>-<nnn>-<hex>/...`. The local executor also keeps the same lines in files, under
`<its work dir>/<execution id>/logs/` (`<state>/work/pipelines/...` for a LocalCloud), which people
can open directly.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from local.aws.sagemaker_pipelines.job_logs import PROCESSING_LOG_GROUP, TRAINING_LOG_GROUP

# Where `local.cloud.LocalCloud` has the pipeline executor work (relative to the state dir).
LOCAL_PIPELINE_WORK = Path("work") / "pipelines"
MAX_LINE_CHARS = 160
TAIL_EVENTS = 20
# The jobs' logging prefix (`2026-12-01 19:12:41,949 INFO jobs.ingest: `): a table row has room for
# the message only, and the step's row already says which job it is and when.
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+[A-Z]+\s+[\w.]+:\s*")


def _name(job_arn: str) -> str:
    return job_arn.rsplit("/", 1)[-1]


def step_log_prefix(step: dict) -> tuple[str, str] | None:
    """(log group, stream name prefix) of the job of one ListPipelineExecutionSteps entry, or None
    for steps without a job (conditions, registration, Fail)."""
    metadata = step.get("Metadata") or {}
    if "ProcessingJob" in metadata:
        return PROCESSING_LOG_GROUP, _name(metadata["ProcessingJob"]["Arn"]) + "/"
    if "TrainingJob" in metadata:
        return TRAINING_LOG_GROUP, _name(metadata["TrainingJob"]["Arn"]) + "/"
    if "TuningJob" in metadata:
        return TRAINING_LOG_GROUP, _name(metadata["TuningJob"]["Arn"]) + "-"
    return None


def log_streams(logs: Any, step: dict) -> list[dict]:
    """`[{"log_group", "log_stream", "last_event"}]` of the step's job, most recently written last."""
    where = step_log_prefix(step)
    if where is None:
        return []
    group, prefix = where
    streams: list[dict] = []
    kwargs = {"logGroupName": group, "logStreamNamePrefix": prefix}
    try:
        while True:
            page = logs.describe_log_streams(**kwargs)
            streams += [{"log_group": group, "log_stream": s["logStreamName"],
                         "last_event": s.get("lastEventTimestamp") or s.get("creationTime") or 0}
                        for s in page.get("logStreams", [])]
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    except ClientError:  # no job has logged in this group yet, or the caller may not read it
        return []
    return sorted(streams, key=lambda s: (s["last_event"], s["log_stream"]))


def last_line(logs: Any, step: dict) -> str | None:
    """The last non-empty line the step's job logged (its latest stream), shortened for a table."""
    streams = log_streams(logs, step)
    if not streams:
        return None
    latest = streams[-1]
    try:
        events = logs.get_log_events(logGroupName=latest["log_group"], logStreamName=latest["log_stream"],
                                     startFromHead=False, limit=TAIL_EVENTS).get("events", [])
    except ClientError:
        return None
    for event in reversed(events):
        message = LOG_PREFIX.sub("", (event.get("message") or "").strip())
        if message:
            return message if len(message) <= MAX_LINE_CHARS else message[:MAX_LINE_CHARS - 3] + "..."
    return None


def local_log_files(work_dir: Path | None, execution_arn: str, step: dict) -> list[Path]:
    """The local executor's log files of the step (one per host; a tuning step's, one per trial);
    `work_dir` is the executor's (None on AWS: there are none)."""
    if work_dir is None:
        return []
    directory = Path(work_dir) / execution_arn.rsplit("/", 1)[-1] / "logs"
    if not directory.is_dir():
        return []
    name = step["StepName"]
    files = {directory / f"{name}.log", *directory.glob(f"{name}-*.log")}
    where = step_log_prefix(step)
    if where is not None and where[1].endswith("-"):  # a tuning step: its trials' logs
        files.update(directory.glob(f"{where[1]}*.log"))
    return sorted(path for path in files if path.is_file())


def step_log_locations(logs: Any, step: dict, work_dir: Path | None, execution_arn: str) -> dict:
    """`{"cloudwatch": [{"log_group", "log_stream"}], "files": [path]}`: where to read a step's log."""
    return {"cloudwatch": [{"log_group": s["log_group"], "log_stream": s["log_stream"]}
                           for s in log_streams(logs, step)],
            "files": [str(path) for path in local_log_files(work_dir, execution_arn, step)]}


def failed_step(steps: list[dict]) -> dict | None:
    """The step that failed the execution (the last Failed or Stopped one), or None."""
    failed = [s for s in steps if s.get("StepStatus") in ("Failed", "Stopped")]
    return failed[-1] if failed else None


def step_failure_reason(step: dict) -> str:
    # A Fail step carries its message in its metadata; job steps carry FailureReason.
    return (step.get("FailureReason") or ((step.get("Metadata") or {}).get("Fail") or {}).get("ErrorMessage")
            or step["StepStatus"].lower())


def failure_lines(step_name: str, reason: str, locations: dict) -> list[str]:
    """What a person needs after a failed step: which, why, and where its log is."""
    lines = [f"failed step {step_name}: {reason}"]
    lines += [f"  log file: {path}" for path in locations.get("files", [])]
    lines += [f"  CloudWatch Logs: group {s['log_group']} stream {s['log_stream']}"
              for s in locations.get("cloudwatch", [])]
    if not locations.get("files") and not locations.get("cloudwatch"):
        lines.append("  (the step wrote no job log: its reason above is all there is)")
    return lines
