"""`mlops status` against a moto server holding what a stack holds: dataset versions under
incoming/ (one quarantined: its reason document names that exact version), a pipeline execution,
model packages (one with an evaluation report) and the endpoint; read from the stack's outputs,
found through CloudFormation as with `--aws`."""
from __future__ import annotations

import argparse
import io
import json

import boto3
import pytest
from rich.console import Console

from local.cli.common import EXIT_OK, EXIT_USAGE
from local.cli.status import cmd_status, collect, default_stack_name, render

BUCKET, PIPELINE, GROUP, ENDPOINT = "status-data", "status-pipeline", "status-group", "status-endpoint"
ROLE = "arn:aws:iam::123456789012:role/status"
STACK_TEMPLATE = {
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {"DataBucketName": {"Value": BUCKET}, "PipelineName": {"Value": PIPELINE},
                "ModelPackageGroupName": {"Value": GROUP}, "EndpointNameOutput": {"Value": ENDPOINT}},
}


@pytest.fixture
def stack(aws, evaluation_outputs):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    good = s3.put_object(Bucket=BUCKET, Key="incoming/houses.csv", Body=b"PRICE,A\n1,2\n")
    bad_first = s3.put_object(Bucket=BUCKET, Key="incoming/bad.csv", Body=b"COST,A\n1,2\n")
    s3.put_object(Bucket=BUCKET, Key="incoming/bad.csv", Body=b"PRICE,A\n1,2\n")  # the corrected upload
    s3.put_object(Bucket=BUCKET, Key="quarantine/bad.csv.reason.json", Body=json.dumps({
        "code": "missing_target", "message": "no PRICE column", "fix": "name the target column PRICE",
        "source": {"bucket": BUCKET, "key": "incoming/bad.csv", "version_id": bad_first["VersionId"],
                   "etag": bad_first["ETag"]}}).encode())
    sm.create_pipeline(PipelineName=PIPELINE, RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": []}))
    execution = sm.start_pipeline_execution(PipelineName=PIPELINE)["PipelineExecutionArn"]
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    report_uri = evaluation_outputs.upload(s3, BUCKET, "evaluation/one")
    inference = {"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1"}],
                 "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]}
    first = sm.create_model_package(ModelPackageGroupName=GROUP, InferenceSpecification=inference,
                                    ModelApprovalStatus="PendingManualApproval",
                                    MetadataProperties={"GeneratedBy": execution},
                                    ModelMetrics={"ModelQuality": {"Statistics": {
                                        "ContentType": "application/json", "S3Uri": report_uri}}})["ModelPackageArn"]
    sm.create_model_package(ModelPackageGroupName=GROUP, InferenceSpecification=inference,
                            ModelApprovalStatus="Rejected")
    boto3.client("cloudformation").create_stack(StackName="status-stack", TemplateBody=json.dumps(STACK_TEMPLATE))
    return {"good": good, "execution": execution, "first": first, "rmse": evaluation_outputs.report.regression_metrics.rmse.value}


def test_status_lists_datasets_with_their_quarantine_executions_packages_and_endpoints(stack):
    outputs = {k: v["Value"] for k, v in STACK_TEMPLATE["Outputs"].items()}
    document = collect(boto3.client, outputs, limit=10, where="test")
    by_version = {(d["key"], d["latest"]): d for d in document["datasets"]}
    assert len(document["datasets"]) == 3
    assert by_version[("incoming/bad.csv", False)]["quarantined"] is True  # the version intake refused
    assert by_version[("incoming/bad.csv", False)]["quarantine"]["fix"] == "name the target column PRICE"
    assert by_version[("incoming/bad.csv", True)]["quarantined"] is False  # its corrected upload
    assert by_version[("incoming/houses.csv", True)]["version"] == stack["good"]["VersionId"]
    [execution] = document["executions"]
    assert execution["execution_arn"] == stack["execution"] and execution["status"]
    assert execution["started"] and execution["duration_seconds"] is not None
    packages = {p["model_package_arn"]: p for p in document["model_packages"]}
    assert len(packages) == 2
    first = packages[stack["first"]]
    assert first["approval_status"] == "PendingManualApproval" and first["execution_arn"] == stack["execution"]
    assert first["rmse"] == pytest.approx(stack["rmse"])
    assert [p["rmse"] for p in packages.values() if p is not first] == [None]  # no report: listed anyway
    assert document["endpoints"] == [{"endpoint_name": ENDPOINT, "status": "absent", "model_package_arn": None}]

    console = Console(file=io.StringIO(), record=True, width=200)
    render(document, console)
    text = console.export_text()
    assert "yes: missing_target" in text and "PendingManualApproval" in text and "absent" in text


def test_status_on_aws_reads_the_names_from_the_stack_outputs_and_prints_one_json_object(stack, capsys):
    args = argparse.Namespace(aws=True, stack_name="status-stack", region="us-east-1", state_dir="unused",
                              limit=1, json=True)
    assert cmd_status(args) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert document["where"] == "AWS stack status-stack (us-east-1)"
    assert len(document["datasets"]) == 1 and len(document["model_packages"]) == 1  # --limit
    assert document["executions"][0]["execution_arn"] == stack["execution"]


def test_status_says_what_is_missing(tmp_path, capsys):
    args = argparse.Namespace(aws=False, stack_name=None, region=None, state_dir=str(tmp_path), limit=5, json=True)
    assert cmd_status(args) == EXIT_USAGE
    assert "no local cloud is running" in capsys.readouterr().err
    assert cmd_status(argparse.Namespace(**{**vars(args), "aws": True})) == EXIT_USAGE
    assert "--aws needs --stack-name" in capsys.readouterr().err
    assert default_stack_name() == "ray-mlops-dev"  # samconfig.toml's deploy stack
