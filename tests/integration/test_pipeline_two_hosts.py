"""The real pipeline with every job on two hosts (ProcessingInstanceCount=2, TrainingInstanceCount=2,
as prod runs it): each job is two processes with their own container roots and loopback addresses
that form one Ray cluster through jobs/ray_cluster.py, the step runs once, on the head, and which
hosts ran it is read back from the jobs' CloudWatch log streams."""
from __future__ import annotations

import io
import json
import re

import boto3
import psutil
import pyarrow.parquet as pq
import pytest

from jobs.pipeline import definition_json
from local.aws.sagemaker_pipelines.job_logs import PROCESSING_LOG_GROUP, TRAINING_LOG_GROUP
from local.aws.sagemaker_pipelines.service import PipelineExecutor
from local.cli.datagen import generate_housing
from local.cli.step_hosts import step_summaries
from local.ray_head import RayHead
from mlops_shared.artifacts import DatasetReference
from mlops_shared.aws import parse_s3_uri
from mlops_shared.dataset_reference import registry_label, write_reference
from tests.pipeline_gateway import pipeline_gateway

pytestmark = pytest.mark.slow

ROLE = "arn:aws:iam::123456789012:role/pipeline-jobs"
PIPELINE = "ray-mlops-two-hosts"
GROUP = "ray-mlops-two-hosts"
ROWS = 1500
TWO_HOSTS = ["127.0.0.2", "127.0.0.3"]
HEAD_ROLE = re.compile(r"Ray role: head \((127\.0\.0\.\d+:\d+)\)")
ACTORS = re.compile(r"xgboost-ray actors on Ray nodes: (.+)")


@pytest.fixture(scope="module")
def two_host_run(tmp_path_factory):
    state = tmp_path_factory.mktemp("pipeline-two-hosts")
    with pipeline_gateway() as gateway:
        with RayHead(num_cpus=2, state_dir=state) as head:
            executor = PipelineExecutor(gateway, state / "work", head.address,
                                        substitutions={"PipelineJobsRoleArn": ROLE}).install()
            s3, sm = boto3.client("s3"), boto3.client("sagemaker")
            for bucket in ("two-data", "two-artifacts"):
                s3.create_bucket(Bucket=bucket)
            sm.create_model_package_group(ModelPackageGroupName=GROUP)
            sm.create_pipeline(PipelineName=PIPELINE, PipelineDefinition=definition_json(), RoleArn=ROLE)
            body = generate_housing(ROWS, 3, 0.0).to_csv(index=False).encode()
            s3.put_object(Bucket="two-data", Key="incoming/houses.csv", Body=body)
            etag = s3.head_object(Bucket="two-data", Key="incoming/houses.csv")["ETag"].strip('"')
            # The dataset reference written as intake writes it.
            reference = DatasetReference(bucket="two-data", key="incoming/houses.csv", version=etag,
                                         version_id=None, etag=etag, target_column="PRICE",
                                         target_source="default")
            uri = "s3://two-data/incoming/houses.csv"
            parameters = {
                "InputDataUri": uri, "DatasetLabel": registry_label(uri), "DatasetVersion": etag,
                "DatasetReferenceUri": write_reference(s3, "s3://two-artifacts/pipeline", reference),
                "TargetColumn": "PRICE", "FeatureGroupName": "two-houses", "ModelPackageGroupName": GROUP,
                "ArtifactsS3Uri": "s3://two-artifacts/pipeline", "RMSEThreshold": "60000",
                "MaxTuningJobs": "1", "MaxParallelTuningJobs": "1", "IngestActors": "4",
                "ProcessingInstanceCount": "2", "TrainingInstanceCount": "2",
            }
            arn = sm.start_pipeline_execution(
                PipelineName=PIPELINE, ClientRequestToken="two-hosts".ljust(32, "-"),
                PipelineParameters=[{"Name": k, "Value": v} for k, v in parameters.items()],
            )["PipelineExecutionArn"]
            try:
                described = executor.wait(arn, timeout=1200)
                steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn,
                                                         SortOrder="Ascending")["PipelineExecutionSteps"]
                yield {"arn": arn, "described": described, "steps": steps, "executor": executor,
                       "head": head, "s3": s3, "sm": sm, "logs": boto3.client("logs")}
            finally:
                executor.shutdown()


def stream_messages(logs, group: str, job: str, host: str) -> list[str]:
    (stream,) = [s["logStreamName"] for s in logs.describe_log_streams(
        logGroupName=group, logStreamNamePrefix=f"{job}/{host}-")["logStreams"]]
    messages, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True, **kwargs)
        messages += [e["message"] for e in page["events"]]
        if not page["events"] or page.get("nextForwardToken") == token:
            return messages
        token = page["nextForwardToken"]


def job_of(step: dict) -> str:
    metadata = step["Metadata"]
    return next(iter(metadata.values()))["Arn"].rsplit("/", 1)[1]


def test_every_job_step_ran_on_both_hosts_and_registered_a_model(two_host_run):
    run = two_host_run
    assert run["described"]["PipelineExecutionStatus"] == "Succeeded", (
        run["described"].get("FailureReason"), [(s["StepName"], s.get("FailureReason")) for s in run["steps"]])
    summaries = step_summaries(run["logs"], run["steps"])
    assert [s["name"] for s in summaries] == ["Ingest", "Preprocess", "HPTuning", "Evaluate", "CheckRMSE",
                                              "RegisterModel-RegisterModel"]
    for summary in summaries[:4]:
        assert summary == {"name": summary["name"], "status": "Succeeded", "hosts": TWO_HOSTS}
    assert summaries[4]["hosts"] == [] and summaries[5]["hosts"] == []
    package_arn = run["steps"][-1]["Metadata"]["RegisterModel"]["Arn"]
    assert run["sm"].describe_model_package(ModelPackageName=package_arn)["ModelApprovalStatus"] == "PendingManualApproval"


def test_each_record_is_written_once_by_the_head_host_only(two_host_run):
    run = two_host_run
    s3, steps = run["s3"], {s["StepName"]: s for s in run["steps"]}
    execution_id = run["arn"].rsplit("/", 1)[1]
    manifest = json.loads(s3.get_object(Bucket="two-artifacts",
                                        Key=f"pipeline/{execution_id}/Ingest/manifest/manifest.json")["Body"].read())
    bucket, prefix = parse_s3_uri(manifest["offline_store_uri"])
    record_ids = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()))
            record_ids += table.column("record_id").to_pylist()
    assert len(record_ids) == ROWS and len(set(record_ids)) == ROWS
    job = job_of(steps["Ingest"])
    head_log = stream_messages(run["logs"], PROCESSING_LOG_GROUP, job, TWO_HOSTS[0])
    worker_log = stream_messages(run["logs"], PROCESSING_LOG_GROUP, job, TWO_HOSTS[1])
    assert any("ingested 1500 rows" in m for m in head_log)
    assert any("Ray role: worker" in m for m in worker_log)
    assert not any(" jobs.ingest:" in m for m in worker_log)  # the step logs nothing there


def test_training_used_the_actors_of_both_hosts(two_host_run):
    run = two_host_run
    tuning = run["executor"].step_properties(run["arn"])["HPTuning"]
    best = tuning["BestTrainingJob"]["TrainingJobName"]
    head_log = stream_messages(run["logs"], TRAINING_LOG_GROUP, best, TWO_HOSTS[0])
    (actors,) = [m.group(1) for m in map(ACTORS.search, head_log) if m]
    assert sorted(re.findall(r"on (127\.0\.0\.\d+)", actors)) == TWO_HOSTS, actors


def test_evaluate_ran_once_and_only_the_head_wrote_outputs(two_host_run):
    run = two_host_run
    steps = {s["StepName"]: s for s in run["steps"]}
    job = job_of(steps["Evaluate"])
    worker_log = stream_messages(run["logs"], PROCESSING_LOG_GROUP, job, TWO_HOSTS[1])
    assert any("Ray role: worker" in m for m in worker_log)
    assert not any(" jobs.evaluate:" in m for m in worker_log)  # the step logs nothing there
    execution_dir = run["executor"].execution_dir(run["arn"])
    assert not any((execution_dir / "Evaluate" / TWO_HOSTS[1] / "processing" / "output").rglob("*.*"))
    assert any((execution_dir / "Evaluate" / TWO_HOSTS[0] / "processing" / "output").rglob("evaluation.json"))


def test_the_jobs_stopped_their_own_ray_nodes_and_left_the_shared_head_running(two_host_run):
    run = two_host_run
    assert run["head"].running
    heads = set()
    for step in run["steps"][:4]:
        group = TRAINING_LOG_GROUP if step["StepName"] == "HPTuning" else PROCESSING_LOG_GROUP
        if group == TRAINING_LOG_GROUP:
            jobs = [s["TrainingJobName"] for s in run["executor"].step_properties(run["arn"])["HPTuning"]["TrainingJobSummaries"]]
        else:
            jobs = [job_of(step)]
        for job in jobs:
            heads |= {m.group(1) for m in map(HEAD_ROLE.search, stream_messages(run["logs"], group, job, TWO_HOSTS[0])) if m}
    assert len(heads) == 4  # ingest, preprocess, the training job, evaluate: one cluster each
    leftovers = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                 if any(address in " ".join(p.info["cmdline"] or []) for address in heads)]
    assert leftovers == []
