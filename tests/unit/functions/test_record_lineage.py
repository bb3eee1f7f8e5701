"""record_lineage and deploy_notify write the lineage of a package; `lineage_of` reads it back.

Behind a gateway with the local lineage service and the local job descriptions (moto serves the
registry, S3 and endpoints): the executions and jobs of one pipeline run are given as the local
executor keeps them, so the recorder reads them through the same API it reads on AWS.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import boto3
import pytest

from local.aws.gateway import LocalGateway, json_response
from local.aws.lineage import LineageService
from local.aws.lineage_jobs import LocalJobDescriptions, local_image_digest
from mlops_shared.artifacts import DatasetReference
from mlops_shared.dataset_reference import write_reference
from tests.lambda_handlers import LambdaContext, load_handler



def _reader():
    """local/cli/lineage.py on its own: importing the `local.cli` package loads every command's
    dependencies (numpy, the SageMaker SDK), which the functions' environment does not have; the
    reader imports nothing at module level."""
    path = Path(__file__).resolve().parents[3] / "local" / "cli" / "lineage.py"
    spec = importlib.util.spec_from_file_location("lineage_reader_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_READER = _reader()
lineage_of, NotAModelPackage = _READER.lineage_of, _READER.NotAModelPackage
GROUP = "ray-mlops-models"
ART = "lineage-artifacts"
DATA = "lineage-data"
SM = "arn:aws:sagemaker:us-east-1:123456789012"
EXECUTION = f"{SM}:pipeline/ray-mlops-training/execution/abcdef123456"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ray-sagemaker-mlops-jobs:local"
FINGERPRINT = "0123456789abcdef"
EVENT = json.loads((Path(__file__).resolve().parents[2] / "events" / "model_package_pending.json").read_text())
TUNED = {"max_depth": "5", "eta": "0.31", "min_child_weight": "7", "subsample": "0.8"}
STATIC = {"objective": "reg:squarederror", "num_round": "100", "tree_method": "approx"}


class RecordedExecutions:
    """The executor's bookkeeping the job descriptions read: step properties per execution."""

    def __init__(self, steps: dict[str, dict]):
        self._executions = {EXECUTION: None}
        self._steps = steps

    def step_properties(self, execution_arn: str) -> dict[str, dict]:
        return dict(self._steps) if execution_arn == EXECUTION else {}


def _steps() -> dict[str, dict]:
    ingest = {
        "ProcessingJobName": "pipelines-abcdef123456-Ingest-1", "ProcessingJobArn": f"{SM}:processing-job/pipelines-abcdef123456-ingest-1",
        "AppSpecification": {"ImageUri": IMAGE},
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "manifest", "S3Output": {"S3Uri": f"s3://{ART}/pipeline/abcdef123456/Ingest/manifest",
                                                   "LocalPath": "/opt/ml/processing/output/manifest", "S3UploadMode": "EndOfJob"}},
            {"OutputName": "rejects", "S3Output": {"S3Uri": f"s3://{ART}/pipeline/abcdef123456/Ingest/rejects",
                                                  "LocalPath": "/opt/ml/processing/output/rejects", "S3UploadMode": "EndOfJob"}}]},
    }
    summaries = [{"TrainingJobName": f"abcdef123456-HPTuning-{i:03d}-aa", "TrainingJobArn": f"{SM}:training-job/abcdef123456-hptuning-{i:03d}-aa",
                  "TrainingJobStatus": "Completed", "TunedHyperParameters": tuned}
                 for i, tuned in ((2, TUNED), (1, {**TUNED, "max_depth": "2"}))]
    tuning = {
        "HyperParameterTuningJobName": "abcdef123456-HPTuning", "HyperParameterTuningJobArn": f"{SM}:hyper-parameter-tuning-job/abcdef123456-hptuning",
        "HyperParameterTuningJobConfig": {"HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"}},
        "TrainingJobDefinition": {"StaticHyperParameters": STATIC, "AlgorithmSpecification": {"TrainingImage": IMAGE}},
        "TrainingJobSummaries": summaries, "BestTrainingJob": summaries[0],
    }
    return {"Ingest": ingest, "HPTuning": tuning}


@pytest.fixture
def world(aws, monkeypatch):
    steps = _steps()
    with LocalGateway() as gateway:
        LineageService(gateway).install()
        LocalJobDescriptions(gateway, RecordedExecutions(steps), lambda: FINGERPRINT).install()

        def list_steps(environ, start_response):
            return json_response(start_response, 200, {"PipelineExecutionSteps": [
                {"StepName": "Ingest", "StepStatus": "Succeeded", "Metadata": {"ProcessingJob": {"Arn": steps["Ingest"]["ProcessingJobArn"]}}},
                {"StepName": "HPTuning", "StepStatus": "Succeeded",
                 "Metadata": {"TuningJob": {"Arn": steps["HPTuning"]["HyperParameterTuningJobArn"]}}}]})

        gateway.route_target("SageMaker.ListPipelineExecutionSteps", list_steps)
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        monkeypatch.setenv("MODEL_PACKAGE_GROUP_NAME", GROUP)
        s3, sm = boto3.client("s3"), boto3.client("sagemaker")
        for bucket in (ART, DATA):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=DATA, VersioningConfiguration={"Status": "Enabled"})
        version = s3.put_object(Bucket=DATA, Key="incoming/house prices.csv", Body=b"PRICE,X\n1,2\n")["VersionId"]
        reference = write_reference(s3, f"s3://{ART}", DatasetReference(
            bucket=DATA, key="incoming/house prices.csv", version=version, version_id=version, etag="e",
            target_column="PRICE", target_source="default"))
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
        yield {"s3": s3, "sm": sm, "version": version, "reference": reference}


def _package(sm, reference: str | None, generated_by: str | None = EXECUTION) -> str:
    request = {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "PendingManualApproval",
               "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{ART}/model.tar.gz"}],
                                          "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]}}
    if reference:
        request["CustomerMetadataProperties"] = {"dataset_reference": reference}
    if generated_by:
        request["MetadataProperties"] = {"GeneratedBy": generated_by}
    return sm.create_model_package(**request)["ModelPackageArn"]


def _event(arn: str) -> dict:
    event = copy.deepcopy(EVENT)
    event["detail"].update(ModelPackageArn=arn, ModelPackageGroupName=GROUP)
    return event


def _graph(sm) -> tuple[int, int]:
    return (len(sm.list_artifacts(MaxResults=100)["ArtifactSummaries"]),
            len(sm.list_associations(MaxResults=100)["AssociationSummaries"]))


def _endpoint(sm, name: str) -> None:
    sm.create_model(ModelName=f"{name}-m", ExecutionRoleArn="arn:aws:iam::123456789012:role/model",
                    PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{ART}/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-c", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": f"{name}-m", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")


def test_a_registered_package_gets_its_whole_chain_once(world):
    sm = world["sm"]
    arn = _package(sm, world["reference"])
    handler = load_handler("record_lineage")
    first = handler.lambda_handler(_event(arn), LambdaContext(function_name="record-lineage"))
    assert first["recorded"] and first["missing"] == []
    graph = _graph(sm)
    again = handler.lambda_handler(_event(arn), LambdaContext(function_name="record-lineage"))
    assert again["arns"] == first["arns"] and _graph(sm) == graph  # the same event twice: the same graph

    lineage = lineage_of(sm, arn)
    assert lineage["dataset"]["bucket"] == DATA and lineage["dataset"]["key"] == "incoming/house prices.csv"
    assert lineage["dataset"]["version_id"] == world["version"]
    assert lineage["manifest"]["uri"] == f"s3://{ART}/pipeline/abcdef123456/Ingest/manifest/manifest.json"
    assert lineage["code"]["image_uri"] == f"{IMAGE}@{local_image_digest(FINGERPRINT)}"
    assert lineage["code"]["image_digest"] == local_image_digest(FINGERPRINT) and lineage["code"]["code_version"] == "local"
    assert lineage["pipeline_execution"]["arn"] == EXECUTION
    training = lineage["training"]
    assert training["training_job_name"] == "abcdef123456-HPTuning-002-aa"  # the best trial, not the first
    assert training["tuning_job_name"] == "abcdef123456-HPTuning"
    assert training["hyperparameters"] == {**STATIC, **TUNED, "_tuning_objective_metric": "validation:rmse"}
    assert lineage["endpoints"] == [] and lineage["missing"] == [
        "no endpoint has served this package (no ModelDeployment downstream of it)"]
    kinds = {(a["source_type"], a["destination_type"], a["association_type"]) for a in lineage["associations"]}
    assert kinds == {("DataSet", "Manifest", "ContributedTo"), ("Manifest", "ModelTraining", "ContributedTo"),
                     ("Image", "ModelTraining", "ContributedTo"), ("ModelTraining", "ModelPackage", "Produced"),
                     ("SageMakerPipelineExecution", "ModelPackage", "Produced")}


def test_deployments_say_which_endpoint_served_a_package_since_when_and_which_serves_now(world, monkeypatch):
    sm = world["sm"]
    first, second = _package(sm, world["reference"]), _package(sm, world["reference"])
    _endpoint(sm, "houses")
    notify = load_handler("deploy_notify")
    plan = {"endpoint_name": "houses", "action": "create", "reason": "deploy the Approved package"}
    result = notify.lambda_handler({"outcome": "deployed", "plan": {**plan, "model_package_arn": first,
                                                                    "model_name": "houses-first-m"}},
                                   LambdaContext(function_name="deploy-notify"))
    assert set(result["lineage"]["arns"]) == {"model_package", "endpoint", "deployment"}, result
    [served] = lineage_of(sm, first)["endpoints"]
    assert served["endpoint_name"] == "houses" and served["current"] is True
    assert served["endpoint_arn"] == sm.describe_endpoint(EndpointName="houses")["EndpointArn"]

    notify.lambda_handler({"outcome": "deployed", "plan": {**plan, "model_package_arn": second,
                                                           "model_name": "houses-second-m"}},
                          LambdaContext(function_name="deploy-notify"))
    [replaced] = lineage_of(sm, first)["endpoints"]
    [now] = lineage_of(sm, second)["endpoints"]
    assert replaced["current"] is False and replaced["since"] == served["since"]
    assert now["current"] is True and now["since"] > replaced["since"]
    # A retried notification of the same deployment records nothing new.
    before = _graph(sm)
    notify.lambda_handler({"outcome": "deployed", "plan": {**plan, "model_package_arn": second,
                                                           "model_name": "houses-second-m"}},
                          LambdaContext(function_name="deploy-notify"))
    assert _graph(sm) == before


def test_what_a_package_does_not_lead_to_is_named_not_invented(world):
    sm = world["sm"]
    arn = _package(sm, None, generated_by=None)
    result = load_handler("record_lineage").lambda_handler(_event(arn), LambdaContext(function_name="record-lineage"))
    assert result["missing"] == ["the package names no dataset_reference: the data object is unknown",
                                 "the package was not generated by a pipeline execution (MetadataProperties.GeneratedBy)"]
    lineage = lineage_of(sm, arn)
    assert lineage["dataset"] is None and lineage["training"] is None and lineage["code"] is None
    assert any("data object" in m for m in lineage["missing"])
    other_group = _event(arn)
    other_group["detail"]["ModelPackageGroupName"] = "someone-else"
    assert load_handler("record_lineage").lambda_handler(other_group, LambdaContext())["recorded"] is False
    with pytest.raises(NotAModelPackage):
        lineage_of(sm, f"{SM}:model-package/{GROUP}/99")
    with pytest.raises(NotAModelPackage):
        lineage_of(sm, "houses")
