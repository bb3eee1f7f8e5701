"""`mlops pipeline run FILE` (or `--csv FILE`): the training pipeline alone, on this machine, without
the event layer (no S3 event delivery, no approval flow).

It starts a local cloud with event delivery off, uploads the CSV to the data bucket like a user,
and hands that exact object version to the very function the start_pipeline Lambda runs
(`mlops_shared.intake.process_dataset`, with the function's settings from the stack): the same
validation, version normalisation, parameters and idempotency token. A file intake refuses is
reported as quarantined, with the reason and the fix (exit 4). It shows the steps on stderr (the
live table on a terminal, plain lines otherwise: `local.cli.progress`) and prints one JSON object
on stdout: status, failed_step, reason, metrics, model_package_arn, execution_arn, steps (`name`,
`status`, `hosts` it ran on, read from the jobs' CloudWatch log streams, and `cache_hit`); a failed
execution (exit 5) adds the failed step's reason and where its log is (`failed_step_logs`).

`--parameter ProcessingInstanceCount=2 --parameter TrainingInstanceCount=2` runs every job on two
hosts, as prod does.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from local.cli.common import (
    DEFAULT_STATE_DIR,
    EXIT_INTERNAL_ERROR,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PIPELINE_STAGE,
    exit_code_for,
    print_result,
    report_metrics,
    stderr,
)
from local.cli.progress import QuietProgress, as_display, progress_for, watch_execution
from local.cli.step_hosts import step_summaries
from local.cli.step_logs import failed_step, failure_lines, step_failure_reason, step_log_locations
from mlops_shared.artifacts import EvaluationReport

log = logging.getLogger(__name__)

START_PIPELINE_LOGICAL_ID = "StartPipelineFunction"
EVALUATE_STEP = "Evaluate"
EVALUATION_REPORT = "EvaluationReport"


def start_settings(cloud, parameter_overrides: dict[str, str] | None = None):
    """start_pipeline's settings, from the environment the stack gives that function; pipeline
    parameter overrides ride on its stack parameters (they are sent after the dataset's own)."""
    from mlops_shared.config import StartPipelineSettings

    spec = cloud.stack.function(START_PIPELINE_LOGICAL_ID)
    if spec is None:
        raise RuntimeError(f"the stack has no {START_PIPELINE_LOGICAL_ID}")
    settings = StartPipelineSettings.from_env(spec.environment)
    if parameter_overrides:
        settings = dataclasses.replace(
            settings, stack_parameters={**settings.stack_parameters, **parameter_overrides})
    return settings


def run_csv(cloud, csv_path: Path, target: str | None, progress=None, timeout: float = 3600.0,
            parameter_overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Uploads `csv_path`, starts the pipeline on it through intake, waits; returns the outcome.

    `progress` is a `local.cli.progress` display (the live table on a terminal) or any
    `progress(message)` callable (plain lines); None shows nothing."""
    from mlops_shared import intake
    from mlops_shared.dataset_version import normalize_version_id

    settings = start_settings(cloud, parameter_overrides)
    s3 = cloud.client("s3")
    key = f"{settings.incoming_prefix}{csv_path.name}"
    extra = {"Metadata": {intake.TARGET_METADATA_KEY: target}} if target else {}
    with csv_path.open("rb") as body:
        put = s3.put_object(Bucket=settings.data_bucket, Key=key, Body=body, **extra)
    dataset = intake.DatasetRef(bucket=settings.data_bucket, key=key,
                                version_id=normalize_version_id(put.get("VersionId")),
                                etag=put.get("ETag"), size=csv_path.stat().st_size)
    # The intake decision is made with the start_pipeline function's own role, as the Lambda makes it.
    as_function = _function_clients(cloud)
    decision = intake.process_dataset(dataset, settings, s3=as_function("s3"), sagemaker=as_function("sagemaker"),
                                      sns=as_function("sns"))
    display = as_display(progress) if progress is not None else QuietProgress()
    if decision["status"] == "quarantined":
        from local.cli.run import report_quarantine

        report_quarantine(display, {"code": decision.get("reason"), "message": decision.get("message"),
                                    "fix": decision.get("fix"), "docs": decision.get("docs"),
                                    "quarantined_copy": decision.get("quarantine_uri")})
        return {**empty_outcome(), "status": "quarantined", "fix": decision.get("fix"), "docs": decision.get("docs"),
                "reason": f"{decision.get('reason')}: {decision.get('message')} How to fix it: {decision.get('fix')}"}
    if decision["status"] != "started":
        return {**empty_outcome(), "status": decision["status"], "reason": decision.get("reason")}
    arn = decision["execution_arn"]
    display(f"started {arn}")
    deadline = time.monotonic() + timeout

    def check_time(what: str) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    # Watched through the API (as on AWS); the executor's own wait then makes sure its end is recorded.
    watch_execution(cloud.client("sagemaker"), cloud.client("logs"), arn, display, check_time)
    cloud.executor.wait(arn, timeout=max(deadline - time.monotonic(), 30.0))
    result = outcome(cloud, arn)
    if result["failed_step"]:
        for line in failure_lines(result["failed_step"], result["failed_step_reason"], result["failed_step_logs"]):
            display(line)
    return result


def _function_clients(cloud):
    """A client factory acting as the StartPipelineFunction's execution role (the administrator's
    clients when the cloud is not strict)."""
    spec = cloud.stack.function(START_PIPELINE_LOGICAL_ID)
    if not cloud.strict or spec is None:
        return cloud.client
    from local.aws.identities import aws_client

    credentials = cloud.identities.role_credentials(spec.role_arn, "lambda.amazonaws.com", spec.name)
    return lambda service: aws_client(service, cloud.endpoint_url, credentials)


def empty_outcome() -> dict[str, Any]:
    return {"status": "error", "failed_step": None, "reason": None, "metrics": {}, "model_package_arn": None,
            "execution_arn": None, "steps": [], "fix": None, "docs": None, "failed_stage": None,
            "failed_step_reason": None, "failed_step_logs": None}


def outcome(cloud, execution_arn: str) -> dict[str, Any]:
    """The result JSON of one execution, read through the API plus the evaluation report."""
    return execution_outcome(cloud.client("sagemaker"), cloud.client("logs"), execution_arn,
                             cloud.executor.property_file, cloud.executor.work_dir)


def execution_outcome(sagemaker, logs, execution_arn: str, property_file=None, work_dir: Path | None = None
                      ) -> dict[str, Any]:
    """`outcome` from the clients alone: `property_file(arn, step, name)` reads the evaluation report
    the execution used (the local executor's), `work_dir` (the executor's) finds the local log files."""
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution_arn,
                                                    SortOrder="Ascending")["PipelineExecutionSteps"]
    failed = failed_step(steps) if described["PipelineExecutionStatus"] != "Succeeded" else None
    package_arn = next((s["Metadata"]["RegisterModel"]["Arn"] for s in steps
                        if "RegisterModel" in s.get("Metadata", {})), None)
    document = property_file(execution_arn, EVALUATE_STEP, EVALUATION_REPORT) if property_file else None
    metrics = report_metrics(EvaluationReport.from_json(document)) if document else {}
    status = {"Succeeded": "registered" if package_arn else "succeeded"}.get(
        described["PipelineExecutionStatus"], described["PipelineExecutionStatus"].lower())
    failed_reason = step_failure_reason(failed) if failed else None
    return {
        "status": status,
        "failed_step": failed["StepName"] if failed else None,
        "reason": failed_reason or described.get("FailureReason"),
        "metrics": metrics,
        "model_package_arn": package_arn,
        "execution_arn": execution_arn,
        "steps": [{**summary, "cache_hit": "CacheHitResult" in step}
                  for summary, step in zip(step_summaries(logs, steps), steps)],
        "fix": None,
        "docs": None,
        "failed_stage": PIPELINE_STAGE if status in ("failed", "stopped") else None,
        "failed_step_reason": failed_reason,
        "failed_step_logs": step_log_locations(logs, failed, work_dir, execution_arn) if failed else None,
    }


def parse_parameters(items: list[str]) -> dict[str, str]:
    """`NAME=VALUE` pairs → pipeline parameter overrides; names must be the pipeline's own."""
    from local.cli.common import parse_assignments
    import jobs

    definition = json.loads((Path(jobs.__file__).parent / "pipeline_definition.json").read_text(encoding="utf-8"))
    known = {p["Name"] for p in definition["Parameters"]}
    overrides = parse_assignments(items)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown pipeline parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from local.cloud import LocalCloud

    if bool(args.csv) == bool(getattr(args, "file", None)):
        stderr("mlops pipeline run: give the CSV once, as FILE or as --csv FILE")
        return EXIT_USAGE
    csv_path = Path(args.csv or args.file)
    if not csv_path.is_file():
        stderr(f"mlops pipeline run: no such file: {csv_path}")
        return EXIT_USAGE
    try:
        overrides = parse_parameters(args.parameter or [])
    except ValueError as error:
        stderr(f"mlops pipeline run: {error}")
        return EXIT_USAGE
    result = empty_outcome()
    display = progress_for(quiet=args.quiet, as_json=args.json)
    try:
        display(f"starting the local cloud in {args.state_dir} (no event delivery)...")
        with LocalCloud(args.state_dir, dispatch_events=False, write_cloud_file=False,
                        strict=not args.no_strict) as cloud:
            result = run_csv(cloud, csv_path, args.target, progress=display, timeout=args.timeout,
                             parameter_overrides=overrides or None)
        code = exit_code_for(result)
    except TimeoutError as exc:
        result["reason"], code = str(exc), EXIT_TIMEOUT
    except Exception as exc:  # report, as JSON too: the caller may be a script
        log.debug("pipeline run failed", exc_info=True)
        result["reason"] = f"{type(exc).__name__}: {exc}"
        code = EXIT_INTERNAL_ERROR
    finally:
        display.close()
    print_result(result, args.json)
    return code


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="run the training pipeline locally, without the event layer")
    commands = parser.add_subparsers(dest="pipeline_command", required=True)
    run = commands.add_parser("run", help="train, tune, evaluate and register on one CSV")
    run.add_argument("file", nargs="?", help="the dataset (CSV with a header row)")
    run.add_argument("--csv", help="the dataset, as an option (same as FILE)")
    run.add_argument("--target", help="target column (default: the stack's default, PRICE)")
    run.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where the local cloud keeps its state")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the execution")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object on stdout (progress on stderr stays plain lines)")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.add_argument("--parameter", action="append", metavar="NAME=VALUE",
                     help="override a pipeline parameter (repeatable), e.g. IngestionMode=OfflineStore, "
                          "MaxTuningJobs=8 or ProcessingInstanceCount=2")
    run.add_argument("--no-strict", action="store_true",
                     help="debugging only: the local cloud neither authenticates, authorizes nor checks requests "
                          "against the services' constraints (default: strict, as AWS)")
    run.set_defaults(func=cmd_run)
