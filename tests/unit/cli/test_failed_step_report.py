"""A failed step as the CLI reports it, on a real execution of the local executor (a tiny one-step
job on two hosts, one of which fails; tests.unit.local.test_job_hosts): the exit code of a failed
pipeline, the failed step and its reason, where its log is (the local files and the CloudWatch Logs
streams, each holding the failing host's lines), and the last line a running step's table row shows."""
from __future__ import annotations

from pathlib import Path

from local.aws.sagemaker_pipelines.job_logs import PROCESSING_LOG_GROUP
from local.cli.common import EXIT_PIPELINE_FAILED, exit_code_for
from local.cli.pipeline import execution_outcome
from local.cli.progress import PlainProgress, watch_execution
from local.cli.step_logs import failure_lines, last_line
from tests.unit.local.test_job_hosts import job_name_of, pipelines, run  # noqa: F401 - the fixture

REASON = "host 127.0.0.3 could not read its shard (host 127.0.0.3)"


def test_a_failed_step_reports_its_reason_log_files_and_streams_and_exits_pipeline_failed(pipelines):  # noqa: F811
    executor, sm, _, logs = pipelines
    arn, described, steps = run(executor, sm, "hosts", Count=2, FailOn="127.0.0.3")
    assert described["PipelineExecutionStatus"] == "Failed"

    result = execution_outcome(sm, logs, arn, work_dir=executor.work_dir)
    assert result["status"] == "failed" and exit_code_for(result) == EXIT_PIPELINE_FAILED
    assert result["failed_stage"] == "pipeline" and result["failed_step"] == "Hosts"
    assert result["reason"] == result["failed_step_reason"] == REASON
    locations = result["failed_step_logs"]
    job = job_name_of(steps[0])
    streams = {s["log_stream"].rsplit("-", 1)[0] for s in locations["cloudwatch"]}
    assert streams == {f"{job}/127.0.0.2", f"{job}/127.0.0.3"}
    assert {s["log_group"] for s in locations["cloudwatch"]} == {PROCESSING_LOG_GROUP}
    files = [Path(path) for path in locations["files"]]
    assert sorted(path.name for path in files) == ["Hosts-127.0.0.2.log", "Hosts-127.0.0.3.log"]
    assert all(path.is_relative_to(executor.work_dir) for path in files)
    assert "job on 127.0.0.3" in next(p for p in files if "127.0.0.3" in p.name).read_text()

    printed = failure_lines(result["failed_step"], result["failed_step_reason"], locations)
    assert printed[0] == f"failed step Hosts: {REASON}"
    assert any(line == f"  log file: {path}" for path in locations["files"] for line in printed)
    assert any(f"CloudWatch Logs: group {PROCESSING_LOG_GROUP} stream {job}/127.0.0.3-" in line for line in printed)

    # What the table shows for a step: its job's last logged line, read back from CloudWatch Logs.
    assert last_line(logs, steps[0]).startswith("job on 127.0.0.")

    # Following the ended execution through the API shows each step once, plain.
    lines: list[str] = []
    watched = watch_execution(sm, logs, arn, PlainProgress(lines.append), check_time=lambda what: None)
    assert watched["description"]["PipelineExecutionStatus"] == "Failed"
    assert lines == [f"  step Hosts: Failed ({REASON})"]
