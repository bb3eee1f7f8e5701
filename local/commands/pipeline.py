"""`mlops pipeline run --csv FILE`: the training pipeline alone, on this machine, without the event
layer (no S3 event, no start_pipeline Lambda, no approval flow).

It starts a local cloud with event delivery off, uploads the CSV to the data bucket, starts the
pipeline with the parameters start_pipeline would pass (same function, same settings), shows each
step on stderr, and prints one JSON object on stdout: status, failed_step, reason, metrics,
model_package_arn, execution_arn.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = ".mlops-local"
REPO_ROOT = Path(__file__).resolve().parents[2]
START_PIPELINE_LOGICAL_ID = "StartPipelineFunction"
EVALUATE_STEP = "Evaluate"
EVALUATION_REPORT = "EvaluationReport"


def _shared_package():
    """`mlops_shared` (the Lambda layer): the parameters are built by the very code start_pipeline runs."""
    from mlops_shared import intake
    from mlops_shared.config import StartPipelineSettings

    return intake, StartPipelineSettings


def read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError(f"{path} is empty: a CSV with a header row is needed")
    return [column.strip() for column in header]


def start_settings(cloud):
    """start_pipeline's settings, from the environment the stack gives that function."""
    _, settings_cls = _shared_package()
    spec = cloud.stack.function(START_PIPELINE_LOGICAL_ID)
    if spec is None:
        raise RuntimeError(f"the stack has no {START_PIPELINE_LOGICAL_ID}")
    return settings_cls.from_env(spec.environment)


def run_csv(cloud, csv_path: Path, target: str | None, progress=None, timeout: float = 3600.0,
            parameter_overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Uploads `csv_path`, runs the pipeline on it in `cloud` and returns the outcome."""
    intake, _ = _shared_package()
    settings = start_settings(cloud)
    header = read_header(csv_path)
    target_column = target or settings.default_target_column
    s3, sagemaker = cloud.client("s3"), cloud.client("sagemaker")

    key = f"{settings.incoming_prefix}{csv_path.name}"
    s3.upload_file(str(csv_path), settings.data_bucket, key, ExtraArgs={"Metadata": {"target": target_column}})
    head = s3.head_object(Bucket=settings.data_bucket, Key=key)
    dataset = intake.DatasetRef(bucket=settings.data_bucket, key=key, version_id=head.get("VersionId"),
                                etag=head.get("ETag"), size=head.get("ContentLength"))
    parameters = intake.pipeline_parameters(dataset, intake.TargetChoice(target_column, "cli"), header, settings)
    if parameter_overrides:
        parameters = [p for p in parameters if p["Name"] not in parameter_overrides]
        parameters += [{"Name": k, "Value": str(v)} for k, v in parameter_overrides.items()]

    executor = cloud.executor
    listener = None
    state: dict[str, str] = {}
    if progress is not None:
        started = time.monotonic()

        def listener(execution_arn, step, status):
            if execution_arn == state.get("arn") and step is not None:
                progress(f"[{time.monotonic() - started:6.1f}s] {step}: {status}")
        executor.add_progress_listener(listener)
    try:
        arn = sagemaker.start_pipeline_execution(
            PipelineName=settings.pipeline_name,
            PipelineExecutionDisplayName=intake.execution_display_name(key, intake.parse_event_time(None)),
            PipelineParameters=parameters,
            ClientRequestToken=intake.client_request_token(dataset),
        )["PipelineExecutionArn"]
        if progress is not None:
            state["arn"] = arn
            progress(f"started {arn}")
        executor.wait(arn, timeout=timeout)
    finally:
        if listener is not None:
            executor.remove_progress_listener(listener)
    return outcome(cloud, arn)


def outcome(cloud, execution_arn: str) -> dict[str, Any]:
    """The result JSON of one execution, read through the API plus the evaluation report."""
    sagemaker = cloud.client("sagemaker")
    described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution_arn,
                                                    SortOrder="Ascending")["PipelineExecutionSteps"]
    failed = next((s for s in steps if s["StepStatus"] == "Failed"), None)
    package_arn = next((s["Metadata"]["RegisterModel"]["Arn"] for s in steps
                        if "RegisterModel" in s.get("Metadata", {})), None)
    report = cloud.executor.property_file(execution_arn, EVALUATE_STEP, EVALUATION_REPORT) or {}
    regression = report.get("regression_metrics", {})
    metrics = {name: regression.get(name, {}).get("value") for name in ("rmse", "mae", "r2")}
    status = {"Succeeded": "registered" if package_arn else "succeeded"}.get(
        described["PipelineExecutionStatus"], described["PipelineExecutionStatus"].lower())
    return {
        "status": status,
        "failed_step": failed["StepName"] if failed else None,
        "reason": (failed.get("FailureReason") if failed else None) or described.get("FailureReason"),
        "metrics": metrics,
        "model_package_arn": package_arn,
        "execution_arn": execution_arn,
        "steps": [{"name": s["StepName"], "status": s["StepStatus"],
                   "cache_hit": "CacheHitResult" in s} for s in steps],
    }


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_parameters(items: list[str]) -> dict[str, str]:
    """`NAME=VALUE` pairs → pipeline parameter overrides; names must be the pipeline's own."""
    import jobs

    definition = json.loads((Path(jobs.__file__).parent / "pipeline_definition.json").read_text(encoding="utf-8"))
    known = {p["Name"] for p in definition["Parameters"]}
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--parameter wants NAME=VALUE, got {item!r}")
        if name not in known:
            raise ValueError(f"unknown pipeline parameter {name!r}; known: {', '.join(sorted(known))}")
        overrides[name] = value
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from local.cloud import LocalCloud

    csv_path = Path(args.csv)
    if not csv_path.is_file():
        _stderr(f"mlops pipeline run: no such file: {csv_path}")
        return 2
    try:
        overrides = parse_parameters(args.parameter or [])
    except ValueError as error:
        _stderr(f"mlops pipeline run: {error}")
        return 2
    result: dict[str, Any] = {"status": "error", "failed_step": None, "reason": None, "metrics": {},
                              "model_package_arn": None, "execution_arn": None}
    code = 0
    try:
        _stderr(f"starting the local cloud in {args.state_dir} (no event delivery)...")
        with LocalCloud(args.state_dir, dispatch_events=False, write_cloud_file=False) as cloud:
            if cloud.executor is None:
                raise RuntimeError("the local cloud has no pipeline executor")
            result = run_csv(cloud, csv_path, args.target, progress=_stderr, timeout=args.timeout,
                             parameter_overrides=overrides or None)
    except Exception as exc:  # report, as JSON too: the caller may be a script
        log.debug("pipeline run failed", exc_info=True)
        result["reason"] = f"{type(exc).__name__}: {exc}"
        code = 1
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return code


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="run the training pipeline locally, without the event layer")
    commands = parser.add_subparsers(dest="pipeline_command", required=True)
    run = commands.add_parser("run", help="train, tune, evaluate and register on one CSV")
    run.add_argument("--csv", required=True, help="the dataset (CSV with a header row)")
    run.add_argument("--target", help="target column (default: the stack's default, PRICE)")
    run.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the execution")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.add_argument("--parameter", action="append", metavar="NAME=VALUE",
                     help="override a pipeline parameter (repeatable), e.g. IngestionMode=OfflineStore "
                          "or MaxTuningJobs=8")
    run.set_defaults(func=cmd_run)
