"""`mlops local up` and `mlops local run FILE.csv`: the local cloud, and one dataset through it.

`run` behaves like a user: it uploads the file to `incoming/<file name>` (target column as object
metadata `target`), then only watches the local cloud through the AWS APIs: the quarantine reason
object start_pipeline writes, or the pipeline execution it starts, then that execution's outcome
(failed step and reason, or the registered model package and its evaluation metrics).

Stages after registration plug in through `AFTER_REGISTRATION`: each hook takes (RunSession, result
dict) and returns the updated result. The one installed here (`local.flow.decide`) handles
`--approve` / `--reject`: it follows the link of the approval email in the outbox like the approver
would, then follows the deployment the approval starts to `deployed` (with `endpoint_name`) or
`failed` (with the deployment's reason).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from local.flow import RunError, decide

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = ".mlops-local"
TERMINAL_EXECUTION_STATUSES = ("Succeeded", "Failed", "Stopped")

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

# Template parameters of a cloud started by these commands: the template's defaults are sized for
# AWS (endpoint polls every 30 s, a 5-minute canary bake); locally an endpoint is up in seconds.
LOCAL_DEPLOY_PARAMETERS = {"EndpointPollSeconds": "2", "CanaryWaitSeconds": "10", "TerminationWaitSeconds": "0"}


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
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service, endpoint_url=self.endpoint_url, region_name="us-east-1",
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=Config(retries={"max_attempts": 3}),
            )
        return self._clients[service]

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self, what: str) -> None:
        if self.remaining() <= 0:
            raise TimeoutError(f"timed out waiting for {what}")


# Stages after "registered", in order.
AFTER_REGISTRATION: list[Callable[[RunSession, dict], dict]] = [decide]


def after_registration(session: RunSession, result: dict) -> dict:
    """Runs the post-registration stages; with none installed, asking for one is an error."""
    for hook in AFTER_REGISTRATION:
        result = hook(session, result)
    wanted = "approve" if getattr(session.args, "approve", False) else "reject" if getattr(session.args, "reject", False) else None
    if wanted and not AFTER_REGISTRATION:
        raise RunError(f"--{wanted} is not available in this build (no approval stage installed)")
    return result


# ------------------------------------------------------------------------------------------------
# Following one dataset
# ------------------------------------------------------------------------------------------------
def empty_result() -> dict:
    return {"status": None, "reason": None, "execution_arn": None, "model_package_arn": None,
            "metrics": {"rmse": None, "mae": None, "r2": None}, "endpoint_name": None}


def upload(session: RunSession, path: Path, target: str | None) -> dict:
    bucket = session.outputs["DataBucketName"]
    key = f"incoming/{path.name}"
    extra = {"Metadata": {"target": target}} if target else {}
    with path.open("rb") as body:
        response = session.client("s3").put_object(Bucket=bucket, Key=key, Body=body, **extra)
    version = response.get("VersionId") or response["ETag"].strip('"')
    session.progress(f"uploaded s3://{bucket}/{key} (version {version})")
    return {"bucket": bucket, "key": key, "version": version, "version_id": response.get("VersionId")}


def _quarantine_reason(session: RunSession, dataset: dict) -> dict | None:
    reason_key = "quarantine/" + dataset["key"][len("incoming/"):] + ".reason.json"
    try:
        body = session.client("s3").get_object(Bucket=dataset["bucket"], Key=reason_key)["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    reason = json.loads(body)
    source = reason.get("source") or {}
    if dataset["version"] not in (source.get("version_id"), (source.get("etag") or "").strip('"')):
        return None  # an older upload of the same name
    return reason


def _execution_for(session: RunSession, dataset: dict, seen: set[str]) -> str | None:
    sagemaker = session.client("sagemaker")
    summaries = sagemaker.list_pipeline_executions(PipelineName=session.outputs["PipelineName"],
                                                   SortBy="CreationTime", SortOrder="Descending",
                                                   MaxResults=50).get("PipelineExecutionSummaries", [])
    uri = f"s3://{dataset['bucket']}/{dataset['key']}"
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
    sagemaker = session.client("sagemaker")
    reported: dict[str, str] = {}
    while True:
        description = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        status = description["PipelineExecutionStatus"]
        try:
            steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution_arn,
                                                            SortOrder="Ascending").get("PipelineExecutionSteps", [])
        except ClientError:
            steps = []
        for step in steps:
            if reported.get(step["StepName"]) != step["StepStatus"]:
                reported[step["StepName"]] = step["StepStatus"]
                session.progress(f"  step {step['StepName']}: {step['StepStatus']}"
                                 + (f" ({step['FailureReason']})" if step.get("FailureReason") else ""))
        if status in TERMINAL_EXECUTION_STATUSES:
            return {"description": description, "steps": steps}
        session.check_time(f"execution {execution_arn}")
        time.sleep(1.0)


def _failure_reason(outcome: dict) -> str:
    failed = [s for s in outcome["steps"] if s.get("StepStatus") in ("Failed", "Stopped")]
    if failed:
        step = failed[-1]
        # A Fail step carries its message in its metadata; job steps carry FailureReason.
        reason = step.get("FailureReason") or ((step.get("Metadata") or {}).get("Fail") or {}).get("ErrorMessage")
        return f"{step['StepName']}: {reason or step['StepStatus'].lower()}"
    return outcome["description"].get("FailureReason") or outcome["description"]["PipelineExecutionStatus"]


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
    metrics = {"rmse": None, "mae": None, "r2": None}
    if not uri:
        return metrics
    bucket, key = uri[len("s3://"):].split("/", 1)
    report = json.loads(session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    for name in metrics:
        value = (report.get("regression_metrics") or {}).get(name)
        metrics[name] = value.get("value") if isinstance(value, dict) else value
    return metrics


def run_dataset(session: RunSession, path: Path, target: str | None) -> dict:
    """Uploads `path` and follows it to its outcome; returns the result document."""
    result = session.result = empty_result()
    started = time.time()
    dataset = upload(session, path, target)
    intake = wait_for_intake(session, dataset, started - 1)
    if "quarantined" in intake:
        reason = intake["quarantined"]
        session.progress(f"quarantined: {reason.get('message')}")
        result.update(status="quarantined", reason=f"{reason.get('code')}: {reason.get('message')}")
        return result
    execution_arn = intake["execution_arn"]
    result["execution_arn"] = execution_arn
    session.progress(f"pipeline execution {execution_arn}")
    outcome = follow_execution(session, execution_arn)
    status = outcome["description"]["PipelineExecutionStatus"]
    if status != "Succeeded":
        result.update(status="failed", reason=_failure_reason(outcome))
        session.progress(f"execution {status}: {result['reason']}")
        return result
    package = registered_package(session, execution_arn)
    if package is None:
        raise RunError(f"execution {execution_arn} succeeded but registered no model package")
    result.update(status="registered", model_package_arn=package["ModelPackageArn"],
                  metrics=evaluation_metrics(session, package))
    session.progress(f"registered {package['ModelPackageArn']} ({package.get('ModelApprovalStatus')}); "
                     f"metrics {result['metrics']}")
    session.result = after_registration(session, result)
    return session.result


# ------------------------------------------------------------------------------------------------
# The cloud a command uses
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def cloud_for(state_dir: Path, **cloud_options):
    """Yields (endpoint_url, outputs, api_url, LocalCloud | None): a running cloud, or one started now."""
    from local.cloud import LocalCloud, find_running_cloud

    info = find_running_cloud(state_dir)
    if info is not None:
        yield info["endpoint_url"], info["stack"]["outputs"], info.get("api_url"), None
        return
    with LocalCloud(state_dir, **cloud_options) as cloud:
        yield cloud.endpoint_url, cloud.stack.outputs, cloud.api_url, cloud


def parse_parameters(pairs: list[str] | None) -> dict[str, str]:
    """`NAME=VALUE` strings (from --parameter) as a dict; ValueError names the bad one."""
    parameters = {}
    for pair in pairs or []:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"--parameter expects NAME=VALUE, got {pair!r}")
        parameters[name.strip()] = value
    return parameters


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        _stderr(f"mlops local run: no such file: {path}")
        return 2
    state_dir = Path(args.state_dir)
    try:
        parameters = {**LOCAL_DEPLOY_PARAMETERS, **parse_parameters(args.parameter)}
    except ValueError as exc:
        _stderr(f"mlops local run: {exc}")
        return EXIT_USAGE
    from local.cloud import find_running_cloud

    if args.parameter and find_running_cloud(state_dir):
        _stderr(f"mlops local run: --parameter only applies to a cloud this command starts, and one is "
                f"already running for {state_dir} (pass them to `mlops local up` instead)")
        return EXIT_USAGE
    session: RunSession | None = None
    code = EXIT_OK
    try:
        with cloud_for(state_dir, parameters=parameters) as (endpoint_url, outputs, api_url, cloud):
            session = RunSession(endpoint_url, state_dir.resolve(), outputs, args,
                                 deadline=time.monotonic() + args.timeout,
                                 progress=_stderr if not args.quiet else (lambda m: None),
                                 cloud=cloud, api_url=api_url)
            run_dataset(session, path, args.target)
    except TimeoutError as exc:
        reason, code = str(exc), EXIT_TIMEOUT
    except RunError as exc:
        reason, code = str(exc), EXIT_INTERNAL_ERROR
    except Exception as exc:  # anything else is an internal error too, but say what it was
        log.exception("mlops local run failed")
        reason, code = f"{type(exc).__name__}: {exc}", EXIT_INTERNAL_ERROR
    # On an error the document shows how far the flow got (status, ARNs) and why it stopped.
    result = session.result if session is not None and session.result is not None else empty_result()
    if code != EXIT_OK:
        result["reason"] = reason
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return code


def cmd_up(args: argparse.Namespace) -> int:
    from local.cloud import LocalCloud, find_running_cloud

    state_dir = Path(args.state_dir)
    if find_running_cloud(state_dir):
        _stderr(f"a local cloud is already running with state dir {state_dir}")
        return 1
    try:
        parameters = {**LOCAL_DEPLOY_PARAMETERS, **parse_parameters(args.parameter)}
    except ValueError as exc:
        _stderr(f"mlops local up: {exc}")
        return EXIT_USAGE
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _stderr("starting the local cloud ...")
    with LocalCloud(state_dir, replication_delay_seconds=args.replication_delay,
                    max_concurrent_executions=args.max_concurrent_executions, parameters=parameters) as cloud:
        outputs = cloud.stack.outputs
        print(f"AWS endpoint:      {cloud.endpoint_url}   (export AWS_ENDPOINT_URL={cloud.endpoint_url})")
        stages = sorted({f"/{r.stage}" if r.kind == "rest" else "" for r in cloud.stack.api_routes})
        for stage in stages or [""]:
            print(f"Approval API:      {cloud.api_url}{stage}")
        print(f"Runtime endpoint:  {cloud.endpoint_url}/endpoints/<name>/invocations")
        print(f"Drop CSVs into:    s3://{outputs.get('DataBucketName')}/incoming/")
        print(f"State:             {cloud.state_dir}  (outbox: {cloud.outbox_dir})")
        print("Ctrl-C stops everything.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stderr("stopping the local cloud ...")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("local", help="run the stack on this machine (moto + local runtime)")
    commands = parser.add_subparsers(dest="local_command", required=True)

    up = commands.add_parser("up", help="start the local cloud in the foreground; Ctrl-C stops it")
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    up.add_argument("--replication-delay", type=float, default=0.0,
                    help="seconds before Feature Store records reach the offline store")
    up.add_argument("--max-concurrent-executions", type=int, default=1)
    up.add_argument("--parameter", action="append", metavar="NAME=VALUE",
                    help="template parameter override (repeatable), e.g. RMSEThreshold=20000")
    up.set_defaults(func=cmd_up)

    run = commands.add_parser("run", help="upload a CSV like a user and report what happened to it")
    run.add_argument("file", help="the CSV to upload to incoming/")
    run.add_argument("--target", help="target column (sent as object metadata 'target')")
    decision = run.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve the registered model")
    decision.add_argument("--reject", action="store_true", help="reject the registered model")
    run.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the outcome")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    run.add_argument("--parameter", action="append", metavar="NAME=VALUE",
                     help="template parameter override (repeatable) for the cloud this command starts "
                          "when none is running, e.g. MaxTuningJobs=2")
    run.set_defaults(func=cmd_run)
