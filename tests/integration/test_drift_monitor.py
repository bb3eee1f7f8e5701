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


def _serve_with_baseline(world) -> tuple[str, str]:
    """A package whose DriftCheckBaselines names a baseline of the reference data, on the endpoint with
    data capture on (the DataCaptureConfig the deploy plan gives: every request and response)."""
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
    name = f"drift-{arn.rsplit('/', 1)[1]}"
    world.sm.create_model(ModelName=name, ExecutionRoleArn=world.cloud.stack.outputs["ModelExecutionRoleArn"],
                          Containers=[{"ModelPackageName": arn}])
    world.sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                           "DestinationS3Uri": world.cloud.stack.outputs["CaptureS3Uri"],
                           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                           "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"],
                                                        "JsonContentTypes": ["application/json"]}})
    world.sm.create_endpoint(EndpointName=world.endpoint, EndpointConfigName=name)
    world.wait_for(lambda: world.endpoint_status() not in ("Creating", None), "the endpoint to come up")
    assert world.endpoint_status() == "InService"
    return arn, baseline_uri


@pytest.fixture(scope="module")
def served(world) -> tuple[str, str]:
    return _serve_with_baseline(world)


@pytest.fixture(scope="module")
def loop_world(tmp_path_factory):
    """A cloud of its own for the loop through the endpoint: the other test's metrics and capture
    files would otherwise sit in its window and in the drift alarm's period."""
    from tests.deploy_cloud import DeployCloud

    world = DeployCloud(tmp_path_factory.mktemp("drift-loop"))
    try:
        arn, _ = _serve_with_baseline(world)
        yield world, arn
    finally:
        world.close()


ROWS_PER_PHASE = 600
ROWS_PER_REQUEST = 20


def _send_traffic(world, seed: int, square_feet_shift: float = 0.0) -> None:
    """ROWS_PER_PHASE rows of the reference data to the endpoint, alternately JSON records and headed CSV."""
    features = drift_world.housing(ROWS_PER_PHASE, seed, square_feet_shift=square_feet_shift)[drift_world.FEATURES]
    for number, first in enumerate(range(0, len(features), ROWS_PER_REQUEST)):
        chunk = features.iloc[first:first + ROWS_PER_REQUEST]
        if number % 2:
            body, content_type = chunk.to_csv(index=False), "text/csv"
        else:
            body, content_type = json.dumps({"instances": json.loads(chunk.to_json(orient="records"))}), "application/json"
        answer = world.runtime.invoke_endpoint(EndpointName=world.endpoint, Body=body.encode(), ContentType=content_type)
        assert len(json.loads(answer["Body"].read())["predictions"]) == len(chunk)


def _monitor_now(world) -> dict:
    """Writes the buffered capture, fires the template's schedule now, waits for the drift monitor's
    execution it started, returns the report that execution wrote."""
    cloud, sagemaker = world.cloud, world.cloud.client("sagemaker")
    cloud.endpoints.flush_capture()
    fired = cloud.run_schedule(cloud.stack.outputs["DriftMonitorScheduleName"])
    assert fired.status == "succeeded", fired.error
    execution = fired.response["PipelineExecutionArn"]
    status = world.wait_for(
        lambda: (s := sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution)["PipelineExecutionStatus"])
        not in ("Executing", "Stopping") and s, "the scheduled drift monitor to finish", timeout=180)
    assert status == "Succeeded", sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution)
    reports = sorted(o["Key"] for o in world.s3.list_objects_v2(
        Bucket=world.bucket, Prefix=f"monitoring/{world.endpoint}/").get("Contents", [])
        if o["Key"].endswith("/drift_report.json"))
    return json.loads(world.s3.get_object(Bucket=world.bucket, Key=reports[-1])["Body"].read())


def test_endpoint_traffic_shifted_in_half_drifts_that_feature_and_the_alarm_notifies(loop_world):
    """Issue 16's loop: real requests to the endpoint, captured by it, the schedule fired now, the
    drift monitor, DriftedFeatures, DataDriftAlarm evaluated by the local alarm evaluator, its
    notification on the topic people subscribe to."""
    world, arn = loop_world
    cloud, outputs = world.cloud, world.cloud.stack.outputs
    sqs = cloud.client("sqs")
    inbox = sqs.create_queue(QueueName="drift-people")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    cloud.client("sns").subscribe(TopicArn=outputs["NotificationTopicArn"], Protocol="sqs", Endpoint=inbox_arn,
                                  Attributes={"RawMessageDelivery": "true"})
    alarm_name = outputs["DataDriftAlarmName"]
    # Unshifted traffic: no drift, and the alarm does not fire.
    _send_traffic(world, seed=101)
    calm = _monitor_now(world)
    assert calm["status"] == "ok" and calm["drifted_features"] == [], calm
    assert calm["model_package_arn"] == arn and calm["capture"]["rows"] == ROWS_PER_PHASE
    cloud.evaluate_alarms([alarm_name])
    [alarm] = cloud.client("cloudwatch").describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
    assert alarm["StateValue"] != "ALARM", alarm

    # As much again with SQUARE_FEET shifted: the window holds it shifted in half of its rows.
    _send_traffic(world, seed=102, square_feet_shift=1500)
    shifted = _monitor_now(world)
    assert shifted["capture"]["rows"] == 2 * ROWS_PER_PHASE
    assert shifted["drifted_features"] == ["SQUARE_FEET"], shifted
    square_feet = {f["feature"]: f for f in shifted["features"]}["SQUARE_FEET"]
    plot = world.s3.get_object(Bucket=world.bucket, Key=square_feet["plot"].split("/", 3)[3])["Body"].read()
    assert plot.startswith(b"\x89PNG") and len(plot) > 5000

    end = dt.datetime.fromisoformat(shifted["window"]["end"].replace("Z", "+00:00"))
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace=NAMESPACE, MetricName="DriftedFeatures", StartTime=end - dt.timedelta(minutes=5),
        EndTime=end + dt.timedelta(minutes=5), Period=60, Statistics=["Maximum"],
        Dimensions=[{"Name": "EndpointName", "Value": world.endpoint}])["Datapoints"]
    assert max(p["Maximum"] for p in points) == 1.0  # (the calm run's 0 may share its minute)

    cloud.evaluate_alarms([alarm_name])  # (or the evaluator's own round got there first)
    messages = []
    for _ in range(10):
        messages += [json.loads(m["Body"]) for m in sqs.receive_message(
            QueueUrl=inbox, WaitTimeSeconds=2, MaxNumberOfMessages=10).get("Messages", [])
            if m["Body"].startswith("{")]
        if messages:
            break
    assert [(m["AlarmName"], m["NewStateValue"]) for m in messages] == [(alarm_name, "ALARM")], messages


def test_the_monitor_pipeline_reports_exactly_the_shifted_feature(world, served):
    cloud, outputs = world.cloud, world.cloud.stack.outputs
    arn, baseline_uri = served
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
