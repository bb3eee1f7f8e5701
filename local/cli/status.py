"""`mlops status`: the recent datasets, pipeline executions, model packages and endpoints of a stack.

Of the running local cloud (`--state-dir`) or of AWS (`--aws`).

Read-only, through the AWS APIs with the caller's identity (locally: the local administrator that
`cloud.json` publishes; on AWS: the default credential chain). The names come from the stack's
outputs: cloud.json's locally, CloudFormation DescribeStacks on AWS (`--stack-name`, default the
samconfig.toml deploy stack). Datasets are the object versions under incoming/
(ListObjectVersions), each marked quarantined when the quarantine prefix holds a reason document
for that exact version; packages carry the RMSE of their evaluation report when they have one.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from local.cli.common import DEFAULT_STATE_DIR, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USAGE, stderr
from mlops_shared.artifacts import EvaluationReport
from mlops_shared.aws import is_not_found, parse_s3_uri
from mlops_shared.dataset_version import dataset_version
from mlops_shared.quarantine import REASON_SUFFIX

INCOMING_PREFIX = "incoming/"
QUARANTINE_PREFIX = "quarantine/"
DEFAULT_LIMIT = 10
SAMCONFIG = Path(__file__).resolve().parents[2] / "samconfig.toml"
TERMINAL = ("Succeeded", "Failed", "Stopped")


def default_stack_name(samconfig: Path = SAMCONFIG) -> str | None:
    """The stack `make deploy` deploys by default (samconfig.toml's default deploy stack_name)."""
    try:
        config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    default = config.get("default", {})
    return (default.get("deploy", {}).get("parameters", {}).get("stack_name")
            or default.get("global", {}).get("parameters", {}).get("stack_name"))


def _iso(value: Any) -> str | None:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds") if isinstance(value, datetime) else None


# ------------------------------------------------------------------------------------------------
# What the stack holds
# ------------------------------------------------------------------------------------------------
def quarantined_versions(s3, bucket: str, limit: int) -> dict[tuple[str, str], dict]:
    """(source key, dataset version) -> its quarantine reason, for the newest `limit` reasons."""
    reasons: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=QUARANTINE_PREFIX):
        reasons += [o for o in page.get("Contents", []) if o["Key"].endswith(REASON_SUFFIX)]
    found: dict[tuple[str, str], dict] = {}
    for item in sorted(reasons, key=lambda o: o["LastModified"], reverse=True)[:limit]:
        try:
            reason = json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        except (ClientError, ValueError):
            continue
        source = reason.get("source") or {}
        version = dataset_version(source.get("version_id"), source.get("etag"))
        found[(source.get("key"), version)] = {"code": reason.get("code"), "message": reason.get("message"),
                                               "fix": reason.get("fix"), "reason_uri": f"s3://{bucket}/{item['Key']}"}
    return found


def datasets(s3, bucket: str, limit: int) -> list[dict]:
    """The newest `limit` object versions under incoming/, each with its quarantine (or None)."""
    versions: list[dict] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=INCOMING_PREFIX):
        versions += page.get("Versions", [])
    versions = sorted(versions, key=lambda v: v["LastModified"], reverse=True)[:limit]
    quarantined = quarantined_versions(s3, bucket, max(limit * 2, limit + 5))
    listed = []
    for item in versions:
        version = dataset_version(item.get("VersionId"), item.get("ETag"))
        quarantine = quarantined.get((item["Key"], version))
        listed.append({"key": item["Key"], "version": version, "size": item.get("Size"),
                       "last_modified": _iso(item.get("LastModified")), "latest": item.get("IsLatest", True),
                       "quarantined": quarantine is not None, "quarantine": quarantine})
    return listed


def executions(sagemaker, pipeline_name: str, limit: int) -> list[dict]:
    """The newest `limit` executions of the pipeline: status, start, duration, failure reason."""
    summaries = sagemaker.list_pipeline_executions(PipelineName=pipeline_name, SortBy="CreationTime",
                                                   SortOrder="Descending",
                                                   MaxResults=limit).get("PipelineExecutionSummaries", [])
    now = datetime.now(timezone.utc)
    listed = []
    for summary in summaries[:limit]:
        described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=summary["PipelineExecutionArn"])
        status = described["PipelineExecutionStatus"]
        started = described.get("CreationTime") or summary.get("StartTime")
        ended = described.get("LastModifiedTime") if status in TERMINAL else now
        duration = (ended - started).total_seconds() if isinstance(started, datetime) and ended else None
        listed.append({"execution_arn": summary["PipelineExecutionArn"], "status": status,
                       "started": _iso(started), "duration_seconds": None if duration is None else round(duration, 1),
                       "failure_reason": described.get("FailureReason")})
    return listed


def _rmse(s3, package: dict) -> float | None:
    uri = (((package.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}).get("S3Uri")
    if not uri:
        return None
    try:
        bucket, key = parse_s3_uri(uri)
        report = EvaluationReport.from_json(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        return report.regression_metrics.rmse.value
    except (ClientError, ValueError, KeyError, TypeError):
        return None  # a report that moved or does not parse: the package is still listed


def packages(sagemaker, s3, group: str, limit: int) -> list[dict]:
    """The newest `limit` packages of the group: version, approval status, RMSE, the execution."""
    summaries = sagemaker.list_model_packages(ModelPackageGroupName=group, SortBy="CreationTime",
                                              SortOrder="Descending",
                                              MaxResults=limit).get("ModelPackageSummaryList", [])
    listed = []
    for summary in summaries[:limit]:
        package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        listed.append({"model_package_arn": package["ModelPackageArn"], "version": package.get("ModelPackageVersion"),
                       "approval_status": package.get("ModelApprovalStatus"), "created": _iso(package.get("CreationTime")),
                       "rmse": _rmse(s3, package),
                       "execution_arn": (package.get("MetadataProperties") or {}).get("GeneratedBy")})
    return listed


def endpoints(sagemaker, names: list[str]) -> list[dict]:
    """Each of the stack's endpoints: status and the model package it serves (absent if none)."""
    listed = []
    for name in names:
        try:
            endpoint = sagemaker.describe_endpoint(EndpointName=name)
        except ClientError as error:
            if is_not_found(error) or error.response.get("Error", {}).get("Code") == "ValidationException":
                listed.append({"endpoint_name": name, "status": "absent", "model_package_arn": None})
                continue
            raise
        served = None
        try:
            config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
            model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
            containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
            served = containers[0].get("ModelPackageName")
        except (ClientError, KeyError, IndexError):
            pass
        listed.append({"endpoint_name": name, "status": endpoint["EndpointStatus"], "model_package_arn": served,
                       "failure_reason": endpoint.get("FailureReason")})
    return listed


def collect(client: Callable[[str], Any], outputs: dict, limit: int, where: str) -> dict:
    """The status document of a stack, from its outputs and a client factory."""
    s3, sagemaker = client("s3"), client("sagemaker")
    endpoint_name = outputs.get("EndpointNameOutput")
    return {
        "where": where,
        "datasets": datasets(s3, outputs["DataBucketName"], limit) if outputs.get("DataBucketName") else [],
        "executions": executions(sagemaker, outputs["PipelineName"], limit) if outputs.get("PipelineName") else [],
        "model_packages": packages(sagemaker, s3, outputs["ModelPackageGroupName"], limit)
        if outputs.get("ModelPackageGroupName") else [],
        "endpoints": endpoints(sagemaker, [endpoint_name] if endpoint_name else []),
    }


# ------------------------------------------------------------------------------------------------
# Where to look
# ------------------------------------------------------------------------------------------------
def local_source(state_dir: str) -> tuple[Callable[[str], Any], dict, str]:
    from local.cloud_file import find_running_cloud
    from local.cli.run import administrator_credentials

    info = find_running_cloud(state_dir)
    if info is None:
        raise LookupError(f"no local cloud is running for state dir {state_dir}; start one with `mlops local up` "
                          "(or pass --aws)")
    credentials = administrator_credentials(info)
    return ((lambda service: boto3.client(service, endpoint_url=info["endpoint_url"], region_name="us-east-1",
                                          **credentials)),
            info["stack"]["outputs"], f"local cloud {info['endpoint_url']} ({Path(state_dir).resolve()})")


def aws_source(stack_name: str | None, region: str | None) -> tuple[Callable[[str], Any], dict, str]:
    if not stack_name:
        raise LookupError("--aws needs --stack-name (samconfig.toml names no default deploy stack)")
    session = boto3.session.Session(region_name=region)
    stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return session.client, outputs, f"AWS stack {stack_name} ({session.region_name})"


# ------------------------------------------------------------------------------------------------
# Printing
# ------------------------------------------------------------------------------------------------
def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    value = int(round(value))
    return f"{value // 60}m{value % 60:02d}s" if value >= 60 else f"{value}s"


def _short(arn: str | None) -> str:
    return (arn or "").rsplit("/", 1)[-1]


def render(document: dict, console) -> None:
    """The status document as four tables for people."""
    from rich.table import Table

    console.print(f"status of the {document['where']}", markup=False, highlight=False)
    sections = [
        ("datasets (incoming/)", ["key", "version", "uploaded", "quarantined"],
         [[d["key"], d["version"], d["last_modified"] or "",
           f"yes: {d['quarantine']['code']}" if d["quarantined"] else "no"] for d in document["datasets"]]),
        ("pipeline executions", ["execution", "status", "started", "duration", "failure reason"],
         [[_short(e["execution_arn"]), e["status"], e["started"] or "", _seconds(e["duration_seconds"]),
           e["failure_reason"] or ""] for e in document["executions"]]),
        ("model packages", ["version", "approval", "rmse", "created", "execution"],
         [[str(p["version"]), p["approval_status"] or "", "" if p["rmse"] is None else f"{p['rmse']:,.0f}",
           p["created"] or "", _short(p["execution_arn"])] for p in document["model_packages"]]),
        ("endpoints", ["endpoint", "status", "serving package"],
         [[e["endpoint_name"], e["status"], e["model_package_arn"] or ""] for e in document["endpoints"]]),
    ]
    for title, columns, rows in sections:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        if not rows:
            table.add_row("(none)", *[""] * (len(columns) - 1))
        console.print(table)


def cmd_status(args: argparse.Namespace) -> int:
    if args.limit < 1:
        stderr("mlops status: --limit must be at least 1")
        return EXIT_USAGE
    try:
        client, outputs, where = (aws_source(args.stack_name, args.region) if args.aws
                                  else local_source(args.state_dir))
    except LookupError as exc:
        stderr(f"mlops status: {exc}")
        return EXIT_USAGE
    except (ClientError, BotoCoreError) as exc:
        stderr(f"mlops status: cannot read the stack: {exc}")
        return EXIT_INTERNAL_ERROR
    try:
        document = collect(client, outputs, args.limit, where)
    except (ClientError, BotoCoreError) as exc:
        stderr(f"mlops status: {exc}")
        return EXIT_INTERNAL_ERROR
    if args.json:
        print(json.dumps(document), flush=True)
    else:
        from rich.console import Console

        # Piped output is read by grep and people's editors: wide rows rather than wrapped cells.
        render(document, Console(file=sys.stdout) if sys.stdout.isatty() else Console(file=sys.stdout, width=240))
    return EXIT_OK


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="recent datasets, executions, model packages and endpoints",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="the running local cloud's state dir")
    parser.add_argument("--aws", action="store_true", help="read the stack on AWS (current credentials) instead")
    parser.add_argument("--stack-name", default=default_stack_name(),
                        help="with --aws: the CloudFormation stack whose outputs name the buckets, pipeline, "
                             "group and endpoint")
    parser.add_argument("--region", help="with --aws: the stack's region (default: the credential chain's)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="entries shown per section")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=cmd_status)
