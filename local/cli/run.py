"""`mlops local run FILE.csv`: one dataset through the local cloud, as a user would drop it.

`run` behaves like a user: it uploads the file to `incoming/<file name>` (target column as object
metadata `target`), then only watches the local cloud through the AWS APIs: the quarantine reason
object start_pipeline writes, or the pipeline execution it starts, then that execution's outcome
(failed step and reason, or the registered model package and its evaluation metrics).

After registration, `--approve` / `--reject` go on with `local.cli.follow.decide`: it follows the
link of the approval email in the outbox like the approver would, then follows the deployment the
approval starts to `deployed` (with `endpoint_name`) or `failed` (with the deployment's reason).

The result lists the execution's `steps` with the `hosts` each ran on (`local.cli.step_hosts`: read
from the jobs' CloudWatch log streams, as on AWS). Progress goes to stderr (`local.cli.progress`: the
live step table on a terminal); a quarantine is reported with its fix, a failed step with its
reason and log locations (`local.cli.step_logs`); the exit code is `common.exit_code_for(result)`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from local.cli.common import (
    report_metrics,
    DEFAULT_STATE_DIR,
    EXIT_USAGE,
    LOCAL_DEPLOY_PARAMETERS,
    PIPELINE_STAGE,
    RunError,
    failure_of,
    parse_assignments,
    report_outcome,
    stderr,
)
from local.cli.follow import decide
from local.cli.progress import as_display, progress_for, watch_execution
from local.cli.step_hosts import step_summaries
from local.cli.step_logs import (
    LOCAL_PIPELINE_WORK,
    failed_step,
    failure_lines,
    step_failure_reason,
    step_log_locations,
)
from mlops_shared.artifacts import EvaluationReport
from mlops_shared.aws import is_not_found, parse_s3_uri
from mlops_shared.dataset_version import dataset_version
from mlops_shared.intake import input_data_uri_parameter

log = logging.getLogger(__name__)


@dataclass
class RunSession:
    """What a run knows about the cloud it uses; handed to every stage and hook."""

    endpoint_url: str
    state_dir: Path
    outputs: dict[str, Any]
    args: argparse.Namespace
    deadline: float
    progress: Callable[[str], None] = lambda message: None
    cloud: Any = None  # the LocalCloud when this process started it, else None
    api_url: str | None = None
    result: dict | None = None  # the result document so far (reported as it stands on a timeout)
    # boto3 keyword arguments of the person at the keyboard: the local administrator of cloud.json.
    credentials: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, endpoint_url=self.endpoint_url, region_name="us-east-1",
                config=Config(retries={"max_attempts": 3}), **self.credentials,
            )
        return self._clients[service]

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self, what: str) -> None:
        if self.remaining() <= 0:
            raise TimeoutError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------------------------
# Following one dataset
# ------------------------------------------------------------------------------------------------
def empty_result() -> dict:
    return {"status": None, "reason": None, "execution_arn": None, "model_package_arn": None,
            "metrics": {"rmse": None, "mae": None, "r2": None}, "endpoint_name": None, "steps": [],
            # What a person needs when it did not work: the quarantine's fix and docs page; the
            # stage (pipeline / deployment) and step that failed, and where that step logged.
            "fix": None, "docs": None, "failed_stage": None, "failed_step": None, "failed_step_logs": None}


def upload(session: RunSession, path: Path, target: str | None) -> dict:
    bucket = session.outputs["DataBucketName"]
    key = f"incoming/{path.name}"
    extra = {"Metadata": {"target": target}} if target else {}
    with path.open("rb") as body:
        response = session.client("s3").put_object(Bucket=bucket, Key=key, Body=body, **extra)
    version = dataset_version(response.get("VersionId"), response.get("ETag"))
    session.progress(f"uploaded s3://{bucket}/{key} (version {version})")
    return {"bucket": bucket, "key": key, "version": version, "version_id": response.get("VersionId")}


def _quarantine_reason(session: RunSession, dataset: dict) -> dict | None:
    reason_key = "quarantine/" + dataset["key"][len("incoming/"):] + ".reason.json"
    try:
        body = session.client("s3").get_object(Bucket=dataset["bucket"], Key=reason_key)["Body"].read()
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    reason = json.loads(body)
    source = reason.get("source") or {}
    if dataset["version"] != dataset_version(source.get("version_id"), source.get("etag")):
        return None  # an older upload of the same name
    return reason


def _execution_for(session: RunSession, dataset: dict, seen: set[str]) -> str | None:
    sagemaker = session.client("sagemaker")
    summaries = sagemaker.list_pipeline_executions(PipelineName=session.outputs["PipelineName"],
                                                   SortBy="CreationTime", SortOrder="Descending",
                                                   MaxResults=50).get("PipelineExecutionSummaries", [])
    uri = input_data_uri_parameter(f"s3://{dataset['bucket']}/{dataset['key']}")
    for summary in summaries:
        arn = summary["PipelineExecutionArn"]
        if arn in seen:
            continue
        try:
            parameters = {p["Name"]: p["Value"] for p in sagemaker.list_pipeline_parameters_for_execution(
                PipelineExecutionArn=arn)["PipelineParameters"]}
            matches = parameters.get("InputDataUri") == uri and parameters.get("DatasetVersion") == dataset["version"]
        except ClientError:
            description = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn).get(
                "PipelineExecutionDescription", "")
            matches = uri in description and dataset["version"] in description
        if matches:
            return arn
        seen.add(arn)
    return None


def _dead_letter_for(session: RunSession, dataset: dict, since: float) -> dict | None:
    for path in sorted((session.state_dir / "dlq").glob("*.json")):
        if path.stat().st_mtime < since:
            continue
        record = json.loads(path.read_text())
        if dataset["key"] in json.dumps(record.get("event")):
            return record
    return None


def wait_for_intake(session: RunSession, dataset: dict, started: float) -> dict:
    """start_pipeline's outcome: {"quarantined": reason} or {"execution_arn": arn}."""
    seen: set[str] = set()
    while True:
        reason = _quarantine_reason(session, dataset)
        if reason is not None:
            return {"quarantined": reason}
        arn = _execution_for(session, dataset, seen)
        if arn:
            return {"execution_arn": arn}
        dead = _dead_letter_for(session, dataset, started)
        if dead is not None:
            raise RunError(f"the upload event could not be processed: {json.dumps(dead.get('error'))[:2000]}")
        session.check_time("the upload to be validated")
        time.sleep(0.5)


def follow_execution(session: RunSession, execution_arn: str) -> dict:
    return watch_execution(session.client("sagemaker"), session.client("logs"), execution_arn,
                           as_display(session.progress), session.check_time)


def report_failure(session: RunSession, result: dict, outcome: dict) -> None:
    """Fills the failed step, its reason and its log locations into `result`, and says them."""
    step = failed_step(outcome["steps"])
    result["failed_stage"] = PIPELINE_STAGE
    if step is None:
        description = outcome["description"]
        result["reason"] = description.get("FailureReason") or description["PipelineExecutionStatus"]
        session.progress(f"execution {description['PipelineExecutionStatus']}: {result['reason']}")
        return
    reason = step_failure_reason(step)
    locations = step_log_locations(session.client("logs"), step, Path(session.state_dir) / LOCAL_PIPELINE_WORK,
                                   result["execution_arn"])
    result.update(reason=f"{step['StepName']}: {reason}", failed_step=step["StepName"], failed_step_logs=locations)
    for line in failure_lines(step["StepName"], reason, locations):
        session.progress(line)


def report_quarantine(progress, reason: dict) -> None:
    """The quarantine as a person needs it: what is wrong, how to fix it, where the rules are."""
    progress(f"quarantined: {reason.get('code')}: {reason.get('message')}")
    if reason.get("fix"):
        progress(f"how to fix it: {reason['fix']}")
    if reason.get("docs"):
        progress(f"what a CSV may look like, every reason code and its fix: {reason['docs']}")
    if reason.get("quarantined_copy"):
        progress(f"the file was copied to {reason['quarantined_copy']} (the original stays in incoming/)")


def registered_package(session: RunSession, execution_arn: str) -> dict | None:
    sagemaker = session.client("sagemaker")
    packages = sagemaker.list_model_packages(ModelPackageGroupName=session.outputs["ModelPackageGroupName"],
                                             SortBy="CreationTime", SortOrder="Descending",
                                             MaxResults=100).get("ModelPackageSummaryList", [])
    for summary in packages:
        description = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        if (description.get("MetadataProperties") or {}).get("GeneratedBy") == execution_arn:
            return description
    return None


def evaluation_metrics(session: RunSession, package: dict) -> dict:
    uri = (((package.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}).get("S3Uri")
    if not uri:
        return {"rmse": None, "mae": None, "r2": None}
    bucket, key = parse_s3_uri(uri)
    report = EvaluationReport.from_json(json.loads(session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()))
    return report_metrics(report)


def run_dataset(session: RunSession, path: Path, target: str | None) -> dict:
    """Uploads `path` and follows it to its outcome; returns the result document."""
    result = session.result = empty_result()
    started = time.time()
    dataset = upload(session, path, target)
    intake = wait_for_intake(session, dataset, started - 1)
    if "quarantined" in intake:
        reason = intake["quarantined"]
        report_quarantine(session.progress, reason)
        result.update(status="quarantined", reason=f"{reason.get('code')}: {reason.get('message')}",
                      fix=reason.get("fix"), docs=reason.get("docs"))
        return result
    execution_arn = intake["execution_arn"]
    result["execution_arn"] = execution_arn
    session.progress(f"pipeline execution {execution_arn}")
    outcome = follow_execution(session, execution_arn)
    result["steps"] = step_summaries(session.client("logs"), outcome["steps"])
    status = outcome["description"]["PipelineExecutionStatus"]
    if status != "Succeeded":
        result["status"] = "failed"
        report_failure(session, result, outcome)
        return result
    package = registered_package(session, execution_arn)
    if package is None:
        raise RunError(f"execution {execution_arn} succeeded but registered no model package")
    result.update(status="registered", model_package_arn=package["ModelPackageArn"],
                  metrics=evaluation_metrics(session, package))
    session.progress(f"registered {package['ModelPackageArn']} ({package.get('ModelApprovalStatus')}); "
                     f"metrics {result['metrics']}")
    session.result = decide(session, result)
    return session.result


# ------------------------------------------------------------------------------------------------
# The cloud a command uses
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def cloud_for(state_dir: Path, **cloud_options):
    """Yields (endpoint_url, outputs, api_url, credentials, LocalCloud | None): a running cloud, or one
    started now; `credentials` are the local administrator's (boto3 keyword arguments)."""
    from local.cloud import LocalCloud
    from local.cloud_file import find_running_cloud

    info = find_running_cloud(state_dir)
    if info is not None:
        yield (info["endpoint_url"], info["stack"]["outputs"], info.get("api_url"),
               administrator_credentials(info), None)
        return
    with LocalCloud(state_dir, **cloud_options) as cloud:
        yield cloud.endpoint_url, cloud.stack.outputs, cloud.api_url, cloud.client_kwargs(with_endpoint=False), cloud


def administrator_credentials(info: dict) -> dict[str, str]:
    """boto3 keyword arguments of the local administrator a running cloud publishes in cloud.json."""
    published = info.get("credentials") or {}
    if not published.get("aws_access_key_id"):
        raise RunError(f"the local cloud of {info.get('state_dir')} publishes no credentials in cloud.json "
                       "(started by an older version? restart it)")
    return {key: value for key, value in published.items() if value}


def cmd_run(args: argparse.Namespace) -> int:
    if bool(getattr(args, "csv", None)) == bool(args.file):
        stderr("mlops local run: give the CSV once, as FILE or as --csv FILE")
        return EXIT_USAGE
    path = Path(args.csv or args.file)
    if not path.is_file():
        stderr(f"mlops local run: no such file: {path}")
        return EXIT_USAGE
    state_dir = Path(args.state_dir)
    try:
        parameters = {**LOCAL_DEPLOY_PARAMETERS, **parse_assignments(args.parameter)}
    except ValueError as exc:
        stderr(f"mlops local run: {exc}")
        return EXIT_USAGE
    from local.cloud_file import find_running_cloud

    if args.parameter and find_running_cloud(state_dir):
        stderr(f"mlops local run: --parameter only applies to a cloud this command starts, and one is "
                f"already running for {state_dir} (pass them to `mlops local up` instead)")
        return EXIT_USAGE
    session: RunSession | None = None
    failure = None
    display = progress_for(quiet=args.quiet, as_json=args.json)
    try:
        with cloud_for(state_dir, parameters=parameters, strict=not args.no_strict) as (
                endpoint_url, outputs, api_url, credentials, cloud):
            session = RunSession(endpoint_url, state_dir.resolve(), outputs, args,
                                 deadline=time.monotonic() + args.timeout,
                                 progress=display,
                                 cloud=cloud, api_url=api_url, credentials=credentials)
            run_dataset(session, path, args.target)
    except Exception as exc:  # each failure is an outcome: the document says how far the flow got
        failure = failure_of(exc, "mlops local run", log)
    finally:
        display.close()
    result = session.result if session is not None and session.result is not None else empty_result()
    return report_outcome(result, failure, args.json)


def register(local_commands) -> None:
    """`mlops local run` (under the `local` group the CLI creates)."""
    run = local_commands.add_parser("run", help="upload a CSV like a user and report what happened to it")
    run.add_argument("file", nargs="?", help="the CSV to upload to incoming/")
    run.add_argument("--csv", help="the CSV, as an option (same as FILE)")
    run.add_argument("--target", help="target column (sent as object metadata 'target')")
    decision = run.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve the registered model")
    decision.add_argument("--reject", action="store_true", help="reject the registered model")
    run.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the outcome")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object on stdout (progress on stderr stays plain lines)")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                     help="the local cloud's state dir (the running one's, or where to start one)")
    run.add_argument("--parameter", action="append", metavar="NAME=VALUE",
                     help="template parameter override (repeatable) for the cloud this command starts "
                          "when none is running, e.g. MaxTuningJobs=2")
    run.add_argument("--no-strict", action="store_true",
                     help="debugging only: a cloud this command starts neither authenticates, authorizes nor "
                          "checks requests against the services' constraints (default: strict, as AWS)")
    run.set_defaults(func=cmd_run)
