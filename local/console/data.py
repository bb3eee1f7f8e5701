"""What the console shows, gathered through the AWS APIs only (boto3 clients in, plain dicts out).

Nothing here knows the local cloud: given clients for AWS and the stack's outputs, it answers the
same questions there. Every call is a read; the strict face lists them under the local console
(`local/aws/strict/call_sites.py` CONSOLE).
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from local.aws.sagemaker_pipelines.job_logs import PROCESSING_LOG_GROUP, TRAINING_LOG_GROUP
from local.console.dag import pipeline_graph

MAX_LOG_EVENTS = 2000  # per stream: the tail a person reads in a page
PLOT_SUFFIX = ".png"


class NotFound(LookupError):
    """The thing asked for does not exist (the page answers 404)."""


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _seconds(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds(), 1)
    return None


def execution_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def step_job(step: dict) -> dict | None:
    """The job behind a ListPipelineExecutionSteps entry: `{"kind", "name", "log_group"}`."""
    metadata = step.get("Metadata") or {}
    for kind, group in (("ProcessingJob", PROCESSING_LOG_GROUP), ("TrainingJob", TRAINING_LOG_GROUP),
                        ("TuningJob", TRAINING_LOG_GROUP)):
        if kind in metadata and metadata[kind].get("Arn"):
            return {"kind": kind, "name": metadata[kind]["Arn"].rsplit("/", 1)[-1], "log_group": group}
    return None


@dataclass
class ConsoleData:
    """The console's questions, answered with these clients. `outputs` are the stack's outputs
    (bucket, table, group and endpoint names), `pipeline_name` the deployed pipeline."""

    sagemaker: Any
    s3: Any
    logs: Any
    dynamodb: Any
    outputs: dict
    pipeline_name: str | None

    # -- pipeline executions -----------------------------------------------------------------
    def executions(self, limit: int = 50) -> list[dict]:
        if not self.pipeline_name:
            return []
        page = self.sagemaker.list_pipeline_executions(PipelineName=self.pipeline_name, MaxResults=min(limit, 100),
                                                       SortBy="CreationTime", SortOrder="Descending")
        return [{"arn": s["PipelineExecutionArn"], "id": execution_id(s["PipelineExecutionArn"]),
                 "status": s.get("PipelineExecutionStatus"), "display_name": s.get("PipelineExecutionDisplayName"),
                 "started": _iso(s.get("StartTime"))}
                for s in page.get("PipelineExecutionSummaries", [])]

    def execution_arn(self, execution: str) -> str:
        """The ARN of an execution given by id (or ARN) — only executions of this pipeline."""
        for summary in self.executions(limit=100):
            if execution in (summary["id"], summary["arn"]):
                return summary["arn"]
        raise NotFound(f"no execution {execution} of pipeline {self.pipeline_name}")

    def execution(self, arn: str) -> dict:
        described = self.sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
        return {"arn": arn, "id": execution_id(arn), "status": described.get("PipelineExecutionStatus"),
                "display_name": described.get("PipelineExecutionDisplayName"),
                "failure_reason": described.get("FailureReason"),
                "started": _iso(described.get("CreationTime")), "last_modified": _iso(described.get("LastModifiedTime"))}

    def graph(self, arn: str) -> dict:
        """The DAG of the definition this execution ran (not the pipeline's current one)."""
        definition = self.sagemaker.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)
        return pipeline_graph(json.loads(definition["PipelineDefinition"]))

    def steps(self, arn: str) -> list[dict]:
        """Each step's status, timing, cache hit and failure reason, oldest first."""
        steps, token = [], None
        while True:
            kwargs = {"PipelineExecutionArn": arn, "SortOrder": "Ascending"}
            if token:
                kwargs["NextToken"] = token
            page = self.sagemaker.list_pipeline_execution_steps(**kwargs)
            steps += page.get("PipelineExecutionSteps", [])
            token = page.get("NextToken")
            if not token:
                break
        result = []
        for step in steps:
            metadata = step.get("Metadata") or {}
            failure = step.get("FailureReason") or (metadata.get("Fail") or {}).get("ErrorMessage")
            result.append({
                "name": step["StepName"], "type": step.get("StepType"), "status": step.get("StepStatus"),
                "started": _iso(step.get("StartTime")), "ended": _iso(step.get("EndTime")),
                "duration_seconds": _seconds(step.get("StartTime"), step.get("EndTime")),
                "cache_hit": (step.get("CacheHitResult") or {}).get("SourcePipelineExecutionArn"),
                "failure_reason": failure, "job": step_job(step),
                "model_package_arn": (metadata.get("RegisterModel") or {}).get("Arn"),
            })
        return result

    def live(self, arn: str) -> dict:
        """What the page polls: the execution, its graph and its steps."""
        return {"execution": self.execution(arn), "graph": self.graph(arn), "steps": self.steps(arn)}

    # -- logs --------------------------------------------------------------------------------
    def step_log(self, arn: str, step_name: str) -> dict:
        """The step's job log, one entry per CloudWatch Logs stream (a tuning step: its trials')."""
        step = next((s for s in self.steps(arn) if s["name"] == step_name), None)
        if step is None:
            raise NotFound(f"no step {step_name} in {arn}")
        job = step["job"]
        if job is None:
            return {"step": step, "streams": []}
        streams, kwargs = [], {"logGroupName": job["log_group"], "logStreamNamePrefix": f"{job['name']}"}
        try:
            while True:
                page = self.logs.describe_log_streams(**kwargs)
                streams += [s["logStreamName"] for s in page.get("logStreams", [])]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except self.logs.exceptions.ResourceNotFoundException:
            streams = []
        # `<job>/host-…` for the job itself; a tuning job's trials are `<job>-NNN-xxxxxxxx/host-…`.
        streams = [s for s in streams if s.startswith(job["name"] + ("-" if job["kind"] == "TuningJob" else "/"))]
        return {"step": step, "streams": [
            {"log_group": job["log_group"], "name": name, "events": self.log_events(job["log_group"], name)}
            for name in sorted(streams)]}

    def log_events(self, log_group: str, stream: str) -> list[dict]:
        page = self.logs.get_log_events(logGroupName=log_group, logStreamName=stream, startFromHead=False,
                                        limit=MAX_LOG_EVENTS)
        return [{"timestamp": e["timestamp"], "message": e["message"]} for e in page.get("events", [])]

    # -- model registry ----------------------------------------------------------------------
    @property
    def group(self) -> str | None:
        return self.outputs.get("ModelPackageGroupName")

    def packages(self, limit: int = 50) -> list[dict]:
        if not self.group:
            return []
        page = self.sagemaker.list_model_packages(ModelPackageGroupName=self.group, MaxResults=min(limit, 100),
                                                  SortBy="CreationTime", SortOrder="Descending")
        return [{"arn": p["ModelPackageArn"], "version": p.get("ModelPackageVersion"),
                 "approval_status": p.get("ModelApprovalStatus"), "created": _iso(p.get("CreationTime"))}
                for p in page.get("ModelPackageSummaryList", [])]

    def package_arn(self, version: int) -> str:
        for package in self.packages(limit=100):
            if package["version"] == version:
                return package["arn"]
        raise NotFound(f"no version {version} in model package group {self.group}")

    def package(self, arn: str) -> dict:
        """The package with its approval (who decided, when), metrics, plots and deployments."""
        described = self.sagemaker.describe_model_package(ModelPackageName=arn)
        modified_by = described.get("LastModifiedBy") or {}
        statistics = (((described.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {})
        evaluation_uri = statistics.get("S3Uri")
        evaluation, plots = (self.evaluation(evaluation_uri), self.plot_keys(evaluation_uri)) if evaluation_uri \
            else (None, [])
        return {
            "arn": arn, "group": described.get("ModelPackageGroupName"), "version": described.get("ModelPackageVersion"),
            "approval_status": described.get("ModelApprovalStatus"), "status": described.get("ModelPackageStatus"),
            # The approval API writes "<status> by <approver> via <channel> at <time>" here.
            "approval_description": described.get("ApprovalDescription"),
            "last_modified": _iso(described.get("LastModifiedTime")),
            "last_modified_by": modified_by.get("UserProfileName") or (modified_by.get("IamIdentity") or {}).get("Arn"),
            "created": _iso(described.get("CreationTime")),
            "metadata": described.get("CustomerMetadataProperties") or {},
            "evaluation_uri": evaluation_uri, "evaluation": evaluation, "plots": plots,
            "deployments": self.deployments(arn),
        }

    def evaluation(self, uri: str) -> dict | None:
        bucket, key = split_s3_uri(uri)
        try:
            return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def plot_keys(self, evaluation_uri: str) -> list[dict]:
        """The PNGs the evaluate step wrote beside evaluation.json."""
        bucket, key = split_s3_uri(evaluation_uri)
        prefix = posixpath.dirname(key) + "/"
        listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return [{"name": posixpath.basename(o["Key"])[:-len(PLOT_SUFFIX)].replace("_", " "), "bucket": bucket,
                 "key": o["Key"]}
                for o in sorted(listed, key=lambda o: o["Key"])
                if o["Key"].lower().endswith(PLOT_SUFFIX) and "/" not in o["Key"][len(prefix):]]

    def plot(self, bucket: str, key: str) -> bytes:
        """A plot's bytes, only a PNG in the stack's artifacts bucket."""
        if bucket != self.outputs.get("ArtifactsBucketName") or not key.lower().endswith(PLOT_SUFFIX):
            raise NotFound(f"s3://{bucket}/{key} is not a plot of this stack")
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            raise NotFound(f"no plot s3://{bucket}/{key}") from None

    # -- deployments -------------------------------------------------------------------------
    def deployments(self, arn: str) -> list[dict]:
        """The deploy state machine's records of this package (DeploymentsTable, one per decision)."""
        table = self.outputs.get("DeploymentsTableName")
        if not table:
            return []
        records = []
        for status in ("Approved", "Rejected"):
            item = self.dynamodb.get_item(TableName=table, ConsistentRead=True,
                                          Key={"DeploymentId": {"S": f"{status}#{arn}"}}).get("Item")
            if item:
                records.append({name: next(iter(value.values())) for name, value in sorted(item.items())})
        return records

    def endpoint(self) -> dict | None:
        name = self.outputs.get("EndpointNameOutput")
        if not name:
            return None
        try:
            described = self.sagemaker.describe_endpoint(EndpointName=name)
        except self.sagemaker.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                return {"name": name, "status": "not deployed"}
            raise
        variants = described.get("ProductionVariants") or []
        return {"name": name, "status": described.get("EndpointStatus"), "config": described.get("EndpointConfigName"),
                "failure_reason": described.get("FailureReason"), "last_modified": _iso(described.get("LastModifiedTime")),
                "variants": [{"name": v.get("VariantName"), "weight": v.get("CurrentWeight"),
                              "instances": v.get("CurrentInstanceCount")} for v in variants]}

    def lineage(self, arn: str) -> dict | None:
        """The package's lineage (`local.cli.lineage.lineage_of`), or None where none is recorded."""
        from botocore.exceptions import ClientError

        try:
            from local.cli.lineage import lineage_of
        except ImportError:
            return None
        try:
            return lineage_of(self.sagemaker, arn)
        except ClientError:
            return None
