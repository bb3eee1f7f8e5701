"""Job logs in CloudWatch Logs, where SageMaker writes them: one log stream per host of a job.

SageMaker sends each host's container output to the log group `/aws/sagemaker/ProcessingJobs` or
`/aws/sagemaker/TrainingJobs`, stream `<job name>/<host>-<epoch seconds of the host's start>`.
`HostLogStream` does the same for one local host: it follows the host's log file while the job runs
and puts its new lines into that stream (moto's CloudWatch Logs behind the gateway), and flushes the
rest when the host ends. The local log files stay where they are.

`hosts_of_job` reads the hosts back from the stream names, with the CloudWatch Logs API only, so it
answers for a job that ran on AWS too.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"

# CloudWatch Logs limits of one PutLogEvents call and one event.
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD_BYTES
FOLLOW_SECONDS = 1.0


def stream_name(job_name: str, host: str, started: float) -> str:
    return f"{job_name}/{host}-{int(started)}"


def host_of_stream(job_name: str, stream: str) -> str | None:
    """The host of a `<job name>/<host>-<epoch seconds>` stream of `job_name`, else None."""
    match = re.fullmatch(re.escape(job_name) + r"/(.+)-\d+", stream)
    return match.group(1) if match else None


def _stream_names(logs: Any, log_group: str, prefix: str) -> list[str]:
    names: list[str] = []
    kwargs = {"logGroupName": log_group, "logStreamNamePrefix": prefix}
    try:
        while True:
            page = logs.describe_log_streams(**kwargs)
            names += [stream["logStreamName"] for stream in page.get("logStreams", [])]
            if not page.get("nextToken"):
                return names
            kwargs["nextToken"] = page["nextToken"]
    except logs.exceptions.ResourceNotFoundException:  # no job has logged in this group yet
        return []


def hosts_of_job(logs: Any, log_group: str, job_name: str) -> list[str]:
    """The hosts a job ran on, in order, from its log streams ([] when it wrote none)."""
    hosts = {host_of_stream(job_name, name) for name in _stream_names(logs, log_group, f"{job_name}/")}
    return sorted((h for h in hosts if h is not None), key=host_order)


def training_jobs_of_tuning_job(logs: Any, tuning_job_name: str) -> dict[str, list[str]]:
    """Training job name -> hosts, for the training jobs a tuning job started. SageMaker names them
    `<tuning job name>-<3 digits>-<8 hex digits>`, so their streams are found by that prefix."""
    pattern = re.compile(re.escape(tuning_job_name) + r"-\d{3}-[0-9a-f]{8}")
    jobs: dict[str, list[str]] = {}
    for name in _stream_names(logs, TRAINING_LOG_GROUP, f"{tuning_job_name}-"):
        job, _, _ = name.partition("/")
        host = host_of_stream(job, name)
        if pattern.fullmatch(job) and host is not None:
            jobs.setdefault(job, [])
            if host not in jobs[job]:
                jobs[job].append(host)
    return {job: sorted(hosts, key=host_order) for job, hosts in sorted(jobs.items())}


def host_order(host: str) -> tuple:
    """algo-2 before algo-10, 127.0.0.2 before 127.0.0.10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", host))


def _ensure(call: Callable[..., Any], already_exists: type[Exception], **kwargs) -> None:
    try:
        call(**kwargs)
    except already_exists:
        pass


class HostLogStream:
    """Copies one host's log file into its CloudWatch Logs stream while the host runs.

    Writing logs never fails a job: a CloudWatch error is logged once and the file is kept.
    """

    def __init__(self, logs_factory: Callable[[], Any], log_group: str, job_name: str, host: str,
                 path: Path, started: float | None = None):
        self.logs_factory = logs_factory
        self.log_group = log_group
        self.stream = stream_name(job_name, host, time.time() if started is None else started)
        self.path = path
        self._offset = 0
        self._partial = b""
        self._client: Any = None
        self._broken = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "HostLogStream":
        try:
            self._client = self.logs_factory()
            _ensure(self._client.create_log_group, self._client.exceptions.ResourceAlreadyExistsException,
                    logGroupName=self.log_group)
            _ensure(self._client.create_log_stream, self._client.exceptions.ResourceAlreadyExistsException,
                    logGroupName=self.log_group, logStreamName=self.stream)
        except Exception:  # noqa: BLE001 - see the class docstring
            log.exception("cannot create the log stream %s %s; the job log stays in %s",
                          self.log_group, self.stream, self.path)
            self._broken = True
            return self
        self._thread = threading.Thread(target=self._follow, name=f"logs-{self.stream}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops following and puts what is left, the last unterminated line included."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._flush(final=True)

    def _follow(self) -> None:
        while not self._stop.wait(FOLLOW_SECONDS):
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        with self._lock:
            if self._broken or self._client is None:
                return
            lines = self._read_lines(final)
            if not lines:
                return
            timestamp = int(time.time() * 1000)
            try:
                for batch in _batches(lines):
                    self._client.put_log_events(logGroupName=self.log_group, logStreamName=self.stream,
                                                logEvents=[{"timestamp": timestamp, "message": m} for m in batch])
            except Exception:  # noqa: BLE001 - see the class docstring
                log.exception("cannot put the job log into %s %s; it stays in %s", self.log_group, self.stream, self.path)
                self._broken = True

    def _read_lines(self, final: bool) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        return [_event_message(line) for line in complete if line.strip()]


def _event_message(line: bytes) -> str:
    return line.rstrip(b"\r")[:MAX_EVENT_BYTES].decode("utf-8", errors="replace")


def _batches(messages: list[str]) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    size = 0
    for message in messages:
        cost = len(message.encode("utf-8")) + EVENT_OVERHEAD_BYTES
        if batches[-1] and (len(batches[-1]) >= MAX_BATCH_EVENTS or size + cost > MAX_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(message)
        size += cost
    return [batch for batch in batches if batch]
