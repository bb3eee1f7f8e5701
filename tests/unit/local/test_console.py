"""The local console: DAG edges from the real pipeline definition, the data layer on moto behind the
gateway (the local executor answering the pipeline APIs), the pages' escaping and lineage, and the
server's read-only, same-origin rules."""
from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from local.aws.gateway import LocalGateway
from local.aws.sagemaker_pipelines.service import PipelineExecutor
from local.console import pages
from local.console.app import CSP, STATIC_DIR, ConsoleServer
from local.console.dag import pipeline_graph
from local.console.data import ConsoleData, NotFound

ROOT = Path(__file__).resolve().parents[3]
ROLE = "arn:aws:iam::123456789012:role/pipeline"
GROUP = "console-models"
BUCKET = "console-artifacts"
TABLE = "console-deployments"
OUTPUTS = {"ModelPackageGroupName": GROUP, "ArtifactsBucketName": BUCKET, "DeploymentsTableName": TABLE,
           "EndpointNameOutput": "console-endpoint"}


def edges(graph: dict) -> set[tuple[str, str, str]]:
    return {(e["source"], e["target"], e["kind"]) for e in graph["edges"]}


def test_the_dag_of_the_deployed_definition():
    graph = pipeline_graph(json.loads((ROOT / "jobs" / "pipeline_definition.json").read_text()))
    register = next(n["name"] for n in graph["nodes"] if n["type"] == "RegisterModel")
    assert [n["name"] for n in graph["nodes"]] == ["Ingest", "Preprocess", "HPTuning", "Evaluate", "CheckRMSE",
                                                    register, "RMSETooHigh"]
    assert edges(graph) == {
        ("Ingest", "Preprocess", "data"), ("Preprocess", "HPTuning", "data"), ("Preprocess", "Evaluate", "data"),
        ("HPTuning", "Evaluate", "data"), ("Evaluate", "CheckRMSE", "data"),  # the property file
        ("CheckRMSE", register, "if"), ("CheckRMSE", "RMSETooHigh", "else"),
        ("HPTuning", register, "data"), ("Evaluate", register, "data"), ("Evaluate", "RMSETooHigh", "data"),
    }


def test_depends_on_and_references_to_unknown_steps():
    graph = pipeline_graph({"Steps": [
        {"Name": "A", "Type": "Processing", "Arguments": {}},
        {"Name": "B", "Type": "Processing", "DependsOn": ["A"], "Arguments": {
            "X": {"Std:Join": {"On": "/", "Values": [{"Get": "Steps.A.ProcessingOutputConfig.Outputs['o'].S3Output.S3Uri"},
                                                      {"Get": "Parameters.P"}, {"Get": "Execution.PipelineExecutionId"}]}},
            "Y": {"Get": "Steps.Elsewhere.Property"}, "Z": "Steps.A as plain text is no reference"}},
    ]})
    assert edges(graph) == {("A", "B", "data")}  # a data reference says more than DependsOn


CONDITION_PIPELINE = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "Limit", "Type": "Float", "DefaultValue": 1.0}],
    "Steps": [{"Name": "Gate", "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "GreaterThan", "LeftValue": {"Get": "Parameters.Limit"}, "RightValue": 5.0}],
        "IfSteps": [{"Name": "Fine", "Type": "Fail", "Arguments": {"ErrorMessage": "never"}}],
        "ElseSteps": [{"Name": "TooLow", "Type": "Fail", "Arguments": {"ErrorMessage": {
            "Std:Join": {"On": " ", "Values": ["limit", {"Get": "Parameters.Limit"}, "<b>too low</b>"]}}}}]}}],
}


@pytest.fixture
def console_aws(tmp_path, monkeypatch):
    """moto behind the gateway, the local executor serving the pipeline APIs, and a stack's worth of
    resources: a registered package with its evaluation and plots, a deployment record, logs."""
    with LocalGateway() as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        urllib.request.urlopen(urllib.request.Request(f"{gateway.url}/moto-api/reset", method="POST")).read()
        executor = PipelineExecutor(gateway, tmp_path / "work", "127.0.0.1:6379", emit_events=False).install()
        try:
            sm, s3, logs, dynamodb = (boto3.client(s) for s in ("sagemaker", "s3", "logs", "dynamodb"))
            sm.create_pipeline(PipelineName="console-pipeline", PipelineDefinition=json.dumps(CONDITION_PIPELINE),
                               RoleArn=ROLE)
            yield gateway, executor, ConsoleData(sm, s3, logs, dynamodb, OUTPUTS, "console-pipeline")
        finally:
            executor.shutdown()


def _publish_package(data: ConsoleData) -> str:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    data.s3.create_bucket(Bucket=BUCKET)
    evaluation = {"regression_metrics": {"rmse": {"value": 12345.678, "standard_deviation": 12.5},
                                         "mae": {"value": 9876.5, "standard_deviation": 1.0}},
                  "gate": {"champion_rmse_limit": 13000.0}}
    data.s3.put_object(Bucket=BUCKET, Key="evaluation/e1/evaluation.json", Body=json.dumps(evaluation).encode())
    for name in ("predicted_vs_actual.png", "residuals.png", "nested/other.png"):
        data.s3.put_object(Bucket=BUCKET, Key=f"evaluation/e1/{name}", Body=png)
    data.sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    arn = data.sagemaker.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/i:1",
                                                "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": f"s3://{BUCKET}/evaluation/e1/evaluation.json"}}},
        CustomerMetadataProperties={"dataset_uri": "s3://data/incoming/houses.csv"})["ModelPackageArn"]
    data.sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                        ApprovalDescription="Approved by alice@example.com via email at 2026-12-01T10:00:00Z")
    data.dynamodb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                               AttributeDefinitions=[{"AttributeName": "DeploymentId", "AttributeType": "S"}],
                               KeySchema=[{"AttributeName": "DeploymentId", "KeyType": "HASH"}])
    data.dynamodb.put_item(TableName=TABLE, Item={"DeploymentId": {"S": f"Approved#{arn}"},
                                                  "Outcome": {"S": "deployed"}, "EndpointName": {"S": "console-endpoint"}})
    return arn


def test_executions_steps_and_graph_through_the_pipeline_apis(console_aws):
    _, executor, data = console_aws
    arn = data.sagemaker.start_pipeline_execution(PipelineName="console-pipeline",
                                                  ClientRequestToken="console-test-token-0000000000000")["PipelineExecutionArn"]
    executor.wait(arn, timeout=60)
    [listed] = data.executions()
    assert (listed["arn"], listed["status"]) == (arn, "Failed")
    assert data.execution_arn(listed["id"]) == arn
    with pytest.raises(NotFound):
        data.execution_arn("no-such-execution")
    live = data.live(arn)
    assert live["execution"]["status"] == "Failed"
    assert edges(live["graph"]) == {("Gate", "Fine", "if"), ("Gate", "TooLow", "else")}
    steps = {s["name"]: s for s in live["steps"]}
    assert steps["Gate"]["status"] == "Succeeded" and "Fine" not in steps
    assert steps["TooLow"]["status"] == "Failed"
    assert steps["TooLow"]["failure_reason"] == "limit 1.0 <b>too low</b>"
    assert steps["TooLow"]["duration_seconds"] is not None and steps["TooLow"]["cache_hit"] is None
    assert data.step_log(arn, "TooLow") == {"step": steps["TooLow"], "streams": []}  # no job, no log


def test_registry_plots_deployments_and_logs(console_aws):
    _, _, data = console_aws
    arn = _publish_package(data)
    [summary] = data.packages()
    assert (summary["arn"], summary["approval_status"]) == (arn, "Approved")
    package = data.package(data.package_arn(summary["version"]))
    assert package["approval_description"].startswith("Approved by alice@example.com via email")
    assert package["evaluation"]["regression_metrics"]["rmse"]["value"] == 12345.678
    assert [p["name"] for p in package["plots"]] == ["predicted vs actual", "residuals"]  # not the nested one
    assert data.plot(BUCKET, package["plots"][0]["key"]).startswith(b"\x89PNG")
    for bucket, key in ((BUCKET, "evaluation/e1/evaluation.json"), ("other-bucket", "x.png")):
        with pytest.raises(NotFound):
            data.plot(bucket, key)
    assert package["deployments"] == [{"DeploymentId": f"Approved#{arn}", "EndpointName": "console-endpoint",
                                       "Outcome": "deployed"}]
    assert data.endpoint() == {"name": "console-endpoint", "status": "not deployed"}
    assert data.lineage(arn) is None or "dataset" in data.lineage(arn)

    # A job's log: the streams of its hosts, read back with GetLogEvents.
    logs = data.logs
    logs.create_log_group(logGroupName="/aws/sagemaker/ProcessingJobs")
    for stream in ("pipelines-abc-Prep/algo-1-1700000000", "pipelines-abc-Prep-other/algo-1-1"):
        logs.create_log_stream(logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName=stream)
        logs.put_log_events(logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName=stream,
                            logEvents=[{"timestamp": int(time.time() * 1000), "message": f"written 500 rows in {stream}"}])
    data.steps = lambda _arn: [{"name": "Prep", "status": "Succeeded",
                                "job": {"kind": "ProcessingJob", "name": "pipelines-abc-Prep",
                                        "log_group": "/aws/sagemaker/ProcessingJobs"}}]
    [stream] = data.step_log("arn", "Prep")["streams"]
    assert stream["name"] == "pipelines-abc-Prep/algo-1-1700000000"
    assert [e["message"] for e in stream["events"]] == ["written 500 rows in pipelines-abc-Prep/algo-1-1700000000"]


LINEAGE = {
    "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/3",
    "model_package_group": "g", "version": 3,
    "dataset": {"uri": "s3://data/incoming/houses.csv", "bucket": "data", "key": "incoming/houses.csv",
                "version_id": "v-<42>", "artifact_arn": "arn:aws:sagemaker:us-east-1:123456789012:artifact/d"},
    "manifest": {"uri": "s3://data/manifests/m.json", "artifact_arn": "arn:aws:sagemaker:us-east-1:123456789012:artifact/m"},
    "code": {"image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:local", "image_digest": "sha256:abc",
             "code_version": "1c86fe8", "artifact_arn": "arn:aws:sagemaker:us-east-1:123456789012:artifact/c"},
    "pipeline_execution": {"arn": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e1",
                           "context_arn": "arn:aws:sagemaker:us-east-1:123456789012:context/e1"},
    "training": {"tuning_job_name": "tune-1", "training_job_name": "tune-1-002-abcdef12",
                 "hyperparameters": {"max_depth": "6", "eta": "0.3"}, "arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/t"},
    "endpoints": [{"endpoint_name": "ep", "endpoint_arn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
                   "context_arn": "arn:aws:sagemaker:us-east-1:123456789012:context/ep", "since": "2026-12-01T10:00:00Z",
                   "current": True}],
    "associations": [{"source_arn": "arn:aws:sagemaker:us-east-1:123456789012:artifact/d", "source_type": "DataSet",
                      "destination_arn": "arn:aws:sagemaker:us-east-1:123456789012:context/e1",
                      "destination_type": "SageMakerPipelineExecution", "association_type": "ContributedTo"}],
    "missing": ["manifest <hash>"],
}


def test_lineage_renders_the_chain_escaped_and_says_when_none_is_recorded():
    html = pages.lineage_block(LINEAGE)
    for shown in ("s3://data/incoming/houses.csv", "version v-&lt;42&gt;", "sha256:abc", "code 1c86fe8",
                  "pipeline/p/execution/e1", "tune-1-002-abcdef12", "eta=0.3, max_depth=6", "ContributedTo",
                  "not recorded: manifest &lt;hash&gt;", "<td>ep</td>", "<td>yes</td>"):
        assert shown in html, shown
    assert "<42>" not in html and "<hash>" not in html
    assert pages.lineage_block(None) == "<p class='lineage-missing'>lineage: not recorded</p>"
    sparse = pages.lineage_block({**LINEAGE, "manifest": None, "code": None, "training": None, "endpoints": [],
                                  "pipeline_execution": None, "missing": []})
    assert "not served by any endpoint" in sparse and "not recorded" not in sparse


def test_lineage_is_not_recorded_when_the_call_fails(console_aws, monkeypatch):
    import sys
    import types

    from botocore.exceptions import ClientError

    _, _, data = console_aws
    failing = types.ModuleType("local.cli.lineage")

    def lineage_of(sagemaker, arn):
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "no lineage"}}, "QueryLineage")
    failing.lineage_of = lineage_of
    monkeypatch.setitem(sys.modules, "local.cli.lineage", failing)
    assert data.lineage("arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1") is None
    failing.lineage_of = lambda sagemaker, arn: dict(LINEAGE, model_package_arn=arn)
    assert data.lineage("arn:x")["model_package_arn"] == "arn:x"


def _get(url: str, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode("utf-8", "replace")


def test_the_server_is_read_only_same_origin_escaped_and_on_loopback(console_aws):
    _, executor, data = console_aws
    arn = _publish_package(data)
    execution = data.sagemaker.start_pipeline_execution(
        PipelineName="console-pipeline", ClientRequestToken="console-test-token-1111111111111")["PipelineExecutionArn"]
    executor.wait(execution, timeout=60)
    server = ConsoleServer(lambda: data).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        status, headers, index = _get(server.url + "/")
        assert status == 200 and headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        execution_id = execution.rsplit("/", 1)[1]
        assert f"href='/executions/{execution_id}'" in index and "href='/packages/1'" in index
        assert "<script>" not in index and " style=" not in index  # nothing inline: the CSP allows none

        status, _, live = _get(f"{server.url}/api/executions/{execution_id}")
        assert status == 200 and json.loads(live)["steps"][-1]["failure_reason"] == "limit 1.0 <b>too low</b>"
        status, _, page = _get(f"{server.url}/executions/{execution_id}")
        assert status == 200 and "/static/console.js" in page and "/static/vendor/dagre/dagre.min.js" in page
        status, _, log_page = _get(f"{server.url}/executions/{execution_id}/steps/TooLow/log")
        assert status == 200 and "limit 1.0 &lt;b&gt;too low&lt;/b&gt;" in log_page and "<b>" not in log_page

        status, _, package = _get(server.url + "/packages/1")
        assert status == 200 and "Approved by alice@example.com via email" in package
        assert "12,345.7" in package and "lineage" in package
        [src] = re.findall(r"<img src='([^']+predicted_vs_actual[^']+)'", package)
        status, headers, _ = _get(server.url + src.replace("&amp;", "&"))
        assert status == 200 and headers["Content-Type"] == "image/png"

        for path in ("/packages/99", "/executions/nope", "/static/../app.py", "/static/%2e%2e/app.py", "/nowhere",
                     f"/plots?bucket={BUCKET}&key=evaluation/e1/evaluation.json"):
            assert _get(server.url + path)[0] == 404, path
        for method in ("POST", "PUT", "DELETE"):
            status, headers, _ = _get(server.url + "/", method)
            assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert _get(server.url + "/", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
        assert _get(server.url + "/static/console.js")[1]["Content-Type"] in ("text/javascript", "application/javascript")
        assert arn in package
    finally:
        server.stop()


def test_the_vendored_dagre_is_the_one_its_readme_names():
    vendor = STATIC_DIR / "vendor" / "dagre"
    readme = (vendor / "README.md").read_text()
    digest = hashlib.sha256((vendor / "dagre.min.js").read_bytes()).hexdigest()
    assert f"`package/dist/dagre.min.js`, sha256 `{digest}`" in readme
    assert (vendor / "LICENSE").read_text().startswith("Copyright") or "MIT" in (vendor / "LICENSE").read_text()


def test_a_stack_without_a_pipeline_or_group_lists_nothing_and_asks_nothing():
    data = ConsoleData(None, None, None, None, {}, None)  # any call would fail on None
    assert (data.executions(), data.packages(), data.endpoint(), data.deployments("arn")) == ([], [], None, [])
    assert "no endpoint in this stack" in pages.index_page([], [], None, "", "")
