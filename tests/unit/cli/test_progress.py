"""The step display: the live table a terminal gets (rendered by rich on a recording console), and
the plain lines everything else gets."""
from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

from rich.console import Console

from local.cli.progress import LiveProgress, PlainProgress, QuietProgress, progress_for, render_steps

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/ray-mlops-training/execution/abc123def456"


def steps_at(stage: int) -> list[dict]:
    """ListPipelineExecutionSteps entries of an execution: Ingest done (from the cache), then
    Preprocess running, then Preprocess failed."""
    ingest = {"StepName": "Ingest", "StepStatus": "Succeeded", "StartTime": NOW - timedelta(seconds=95),
              "EndTime": NOW - timedelta(seconds=30), "CacheHitResult": {"SourcePipelineExecutionArn": ARN}}
    preprocess = {"StepName": "Preprocess", "StepStatus": "Executing", "StartTime": NOW - timedelta(seconds=12)}
    if stage == 2:
        preprocess = {**preprocess, "StepStatus": "Failed", "EndTime": NOW - timedelta(seconds=2),
                      "FailureReason": "TEST_FRACTION 1.1 is not between 0 and 1"}
    return [ingest] + ([preprocess] if stage else [])


def recording_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, record=True, width=160, color_system="truecolor")


def test_the_table_shows_status_elapsed_time_cache_hit_and_the_running_steps_last_log_line():
    console = recording_console()
    console.print(render_steps(ARN, "Executing", steps_at(1), {"Preprocess": "written 500 of 10000 rows"}, now=NOW))
    text = console.export_text()
    assert "pipeline execution abc123def456: Executing" in text
    ingest = next(line for line in text.splitlines() if "Ingest" in line)
    assert "Succeeded" in ingest and "1m05s" in ingest and "hit" in ingest
    preprocess = next(line for line in text.splitlines() if "Preprocess" in line)
    assert "Executing" in preprocess and "12s" in preprocess and "written 500 of 10000 rows" in preprocess
    assert "\x1b[" in console.file.getvalue()  # a terminal gets colours


def test_a_failed_step_shows_its_reason_not_its_last_log_line():
    console = recording_console()
    console.print(render_steps(ARN, "Failed", steps_at(2), {"Preprocess": "reading the dataset"}, now=NOW))
    row = next(line for line in console.export_text().splitlines() if "Preprocess" in line)
    assert "Failed" in row and "10s" in row and "TEST_FRACTION 1.1" in row and "reading the dataset" not in row


def test_the_live_display_prints_story_lines_above_the_table_and_leaves_the_last_table():
    console = recording_console()
    live = LiveProgress(console)
    live("pipeline execution " + ARN)
    for stage, status in [(0, "Executing"), (1, "Executing"), (2, "Failed")]:
        live.steps(ARN, status, steps_at(stage), {"Preprocess": "written 500 of 10000 rows"})
    assert live._live is None  # a terminal status stops the live region
    live("failed step Preprocess: TEST_FRACTION 1.1 is not between 0 and 1")
    text = console.export_text()
    assert text.index("pipeline execution arn:") < text.index("abc123def456: Failed") < text.index("failed step")


def test_not_a_terminal_or_json_gets_plain_lines_and_quiet_gets_nothing():
    stream = io.StringIO()  # not a TTY
    display = progress_for(stream=stream)
    assert type(display) is PlainProgress
    display("uploaded s3://data/incoming/houses.csv (version 1)")
    for stage in (0, 1, 1, 2):
        display.steps(ARN, "Executing", steps_at(stage), {"Preprocess": "written 500 of 10000 rows"})
    assert stream.getvalue().splitlines() == [
        "uploaded s3://data/incoming/houses.csv (version 1)",
        "  step Ingest: Succeeded",
        "  step Preprocess: Executing",
        "  step Preprocess: Failed (TEST_FRACTION 1.1 is not between 0 and 1)",
    ]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress_for(stream=Terminal()), LiveProgress)
    assert type(progress_for(as_json=True, stream=Terminal())) is PlainProgress
    assert isinstance(progress_for(quiet=True, stream=Terminal()), QuietProgress)
    quiet_stream = io.StringIO()
    quiet = progress_for(quiet=True, stream=quiet_stream)
    quiet("anything")
    quiet.steps(ARN, "Executing", steps_at(1), {})
    assert quiet_stream.getvalue() == ""
