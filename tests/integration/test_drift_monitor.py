"""The drift monitor pipeline on the strict local cloud provisioned from template.yaml: a registered
package with a baseline serving behind the endpoint, SageMaker-format capture files of its traffic
with one feature shifted in half of it, one execution of `DriftMonitorPipeline` (the local executor
running `python -m jobs.drift` in the jobs image with the jobs role): exactly that feature drifted,
its plot, the metrics in CloudWatch — and the job's calls authorized by the template's statements."""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from tests import drift_world

NAMESPACE = "RaySageMakerMLOps/DataDrift"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.deploy_cloud import DeployCloud

    world = DeployCloud(tmp_path_factory.mktemp("drift"))
    try:
        yield world
    finally:
        world.close()


def _served_with_baseline(world) -> tuple[str, str]:
    """A package whose DriftCheckBaselines names a baseline of the reference data, on the endpoint."""
    trained = world.package("drift-model")
    baseline_key = "pipeline/drift-model/Evaluate/evaluation/baseline_statistics.json"
    world.s3.put_object(Bucket=world.bucket, Key=baseline_key,
                        Body=json.dumps(drift_world.baseline_document(drift_world.housing(6000, seed=0))).encode())
    baseline_uri = f"s3://{world.bucket}/{baseline_key}"
    arn = world.sm.create_model_package(
        ModelPackageGroupName=world.group,
        InferenceSpecification={
            "Containers": [{"Image": "local/jobs:latest", "ModelDataUrl": trained["model_data_url"]}],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        DriftCheckBaselines={"ModelDataQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": baseline_uri}}},
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    world.serve({"arn": arn})
    return arn, baseline_uri


def test_the_monitor_pipeline_reports_exactly_the_shifted_feature(world):
    cloud, outputs = world.cloud, world.cloud.stack.outputs
    arn, baseline_uri = _served_with_baseline(world)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    start = now - dt.timedelta(minutes=10)
    traffic = pd.concat([drift_world.housing(400, seed=5), drift_world.housing(400, seed=6, square_feet_shift=1500)])
    records = drift_world.traffic_records(traffic.sample(frac=1, random_state=1), start)
    drift_world.write_capture(world.s3, world.bucket, world.endpoint, "AllTraffic", records, start)

    sagemaker = cloud.client("sagemaker")
    execution = sagemaker.start_pipeline_execution(
        PipelineName=cloud.stack.ref("DriftMonitorPipeline"),
        PipelineParameters=[{"Name": k, "Value": v} for k, v in {
            "EndpointName": world.endpoint, "WindowMinutes": "30", "CaptureS3Uri": outputs["CaptureS3Uri"],
            "MonitoringS3Uri": outputs["MonitoringS3Uri"]}.items()],
    )["PipelineExecutionArn"]
    status = world.wait_for(
        lambda: (s := sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution)["PipelineExecutionStatus"])
        not in ("Executing", "Stopping") and s, "the drift monitor to finish", timeout=180)
    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution)["PipelineExecutionSteps"]
    assert status == "Succeeded", steps

    listed = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"monitoring/{world.endpoint}/")["Contents"]
    [report_key] = [o["Key"] for o in listed if o["Key"].endswith("/drift_report.json")]
    report = json.loads(world.s3.get_object(Bucket=world.bucket, Key=report_key)["Body"].read())
    assert report["drifted_features"] == ["SQUARE_FEET"] and report["status"] == "ok"
    assert report["model_package_arn"] == arn and report["baseline_uri"] == baseline_uri
    assert report["capture"]["rows"] == 800
    plot_key = report_key.replace("drift_report.json", "plots/SQUARE_FEET.png")
    assert sorted(o["Key"] for o in listed if "/plots/" in o["Key"]) == [plot_key]
    assert world.s3.get_object(Bucket=world.bucket, Key=plot_key)["Body"].read().startswith(b"\x89PNG")

    cloudwatch = cloud.client("cloudwatch")
    end = dt.datetime.fromisoformat(report["window"]["end"].replace("Z", "+00:00"))

    def maximum(name: str, **dimensions) -> list[float]:
        answer = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE, MetricName=name, StartTime=end - dt.timedelta(minutes=5),
            EndTime=end + dt.timedelta(minutes=5), Period=60, Statistics=["Maximum"],
            Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()])
        return [p["Maximum"] for p in answer["Datapoints"]]

    assert maximum("DriftedFeatures", EndpointName=world.endpoint) == [1.0]
    assert maximum("PSI", EndpointName=world.endpoint, Feature="SQUARE_FEET")[0] >= 0.2
    assert maximum("PSI", EndpointName=world.endpoint, Feature="DECK")[0] < 0.2
