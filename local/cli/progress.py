"""How a command shows a pipeline execution while it runs.

On a terminal: a live table of the steps (status, elapsed time, cache hit, and the last line the
running step's job logged, e.g. "written 500 of 10000 rows"), with the story lines of the flow
("approval email: ...", "deployed to endpoint ...") printed above it. Not on a terminal, or with
`--json`: plain lines, one per step status change, as scripts and logs want them. With `--quiet`:
nothing. Everything is read through the AWS APIs (ListPipelineExecutionSteps, CloudWatch Logs), so
it shows an execution on AWS the same way.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from botocore.exceptions import ClientError

from local.cli.step_logs import last_line

TERMINAL_EXECUTION_STATUSES = ("Succeeded", "Failed", "Stopped")
# The last log line of a running step is read at most this often (two CloudWatch Logs calls).
TAIL_EVERY_SECONDS = 2.0
STATUS_STYLES = {"Executing": "bold yellow", "Succeeded": "green", "Failed": "bold red", "Stopped": "red",
                 "Starting": "yellow", "Stopping": "red"}


class PlainProgress:
    """Story lines and one line per step status change, through `write` (stderr by default)."""

    wants_log_tails = False

    def __init__(self, write: Callable[[str], None] | None = None):
        self.write = write or (lambda message: print(message, file=sys.stderr, flush=True))
        self._reported: dict[str, str] = {}

    def __call__(self, message: str) -> None:
        self.write(message)

    def steps(self, execution_arn: str, status: str, steps: list[dict], tails: dict[str, str]) -> None:
        for step in steps:
            if self._reported.get(step["StepName"]) != step["StepStatus"]:
                self._reported[step["StepName"]] = step["StepStatus"]
                self.write(f"  step {step['StepName']}: {step['StepStatus']}"
                           + (f" ({step['FailureReason']})" if step.get("FailureReason") else ""))

    def close(self) -> None:
        pass


class QuietProgress(PlainProgress):
    """`--quiet`: nothing at all."""

    def __init__(self):
        super().__init__(lambda message: None)


class LiveProgress(PlainProgress):
    """A rich live table of the steps on a terminal; story lines are printed above it."""

    wants_log_tails = True

    def __init__(self, console):
        super().__init__()
        self.console = console
        self._live = None

    def __call__(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def steps(self, execution_arn: str, status: str, steps: list[dict], tails: dict[str, str]) -> None:
        from rich.live import Live

        table = render_steps(execution_arn, status, steps, tails)
        if self._live is None:
            self._live = Live(table, console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._live.update(table, refresh=True)
        if status in TERMINAL_EXECUTION_STATUSES:
            self.close()  # the final table stays on screen; later lines go below it

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def progress_for(quiet: bool = False, as_json: bool = False, stream: TextIO | None = None) -> PlainProgress:
    """The display a command uses: nothing (`--quiet`), plain lines (`--json`, or `stream` — stderr
    by default — is not a terminal), or the live table."""
    stream = stream or sys.stderr
    if quiet:
        return QuietProgress()
    if as_json or not stream.isatty():
        return PlainProgress(lambda message: print(message, file=stream, flush=True))
    from rich.console import Console

    return LiveProgress(Console(file=stream))


def as_display(progress: Callable[[str], None]) -> PlainProgress:
    """A display for a plain `progress(message)` callable (e.g. tests' `list.append`)."""
    return progress if isinstance(progress, PlainProgress) else PlainProgress(progress)


def _elapsed(step: dict, now: datetime) -> float | None:
    start = step.get("StartTime")
    if not isinstance(start, datetime):
        return None
    end = step.get("EndTime") if isinstance(step.get("EndTime"), datetime) else now
    return max(0.0, (end - start).total_seconds())


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def render_steps(execution_arn: str, status: str, steps: list[dict], tails: dict[str, str],
                 now: datetime | None = None):
    """The rich Table of one execution's steps (ListPipelineExecutionSteps entries)."""
    from rich.table import Table
    from rich.text import Text

    now = now or datetime.now(timezone.utc)
    table = Table(title=f"pipeline execution {execution_arn.rsplit('/', 1)[-1]}: {status}", title_justify="left",
                  expand=False)
    table.add_column("step")
    table.add_column("status")
    table.add_column("elapsed", justify="right")
    table.add_column("cache")
    table.add_column("last log line / failure reason", overflow="fold")
    for step in steps:
        step_status = step["StepStatus"]
        cache = "hit" if step.get("CacheHitResult") else ""
        detail = step.get("FailureReason") or (tails.get(step["StepName"]) if step_status == "Executing" else "")
        table.add_row(step["StepName"], Text(step_status, style=STATUS_STYLES.get(step_status, "")),
                      format_seconds(_elapsed(step, now)), cache, Text(detail or ""))
    return table


def watch_execution(sagemaker: Any, logs: Any, execution_arn: str, display: PlainProgress,
                    check_time: Callable[[str], None], poll_seconds: float = 1.0) -> dict:
    """Follows an execution through the API until it ends, showing its steps on `display`.

    Returns {"description": DescribePipelineExecution, "steps": ListPipelineExecutionSteps}."""
    tails: dict[str, str] = {}
    tailed_at = 0.0
    while True:
        description = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        status = description["PipelineExecutionStatus"]
        try:
            steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution_arn,
                                                            SortOrder="Ascending").get("PipelineExecutionSteps", [])
        except ClientError:
            steps = []
        if display.wants_log_tails and time.monotonic() - tailed_at >= TAIL_EVERY_SECONDS:
            tailed_at = time.monotonic()
            for step in steps:
                if step["StepStatus"] == "Executing":
                    line = last_line(logs, step)
                    if line:
                        tails[step["StepName"]] = line
        display.steps(execution_arn, status, steps, tails)
        if status in TERMINAL_EXECUTION_STATUSES:
            return {"description": description, "steps": steps}
        check_time(f"execution {execution_arn}")
        time.sleep(poll_seconds)
