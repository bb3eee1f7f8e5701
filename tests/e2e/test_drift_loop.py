"""The drift loop end to end on the local cloud (issue 16, "Done when"): a CSV to a deployed endpoint,
traffic to the endpoint (JSON and CSV requests), the monitor triggered now — unshifted traffic
reports no drift and raises no alarm; then as much traffic again with SQUARE_FEET shifted, so that
the window holds it shifted in half of the rows: exactly that feature is reported as drifted with
its plot, the metric is published and the drift alarm's notification is in the outbox.

Written against the shared contracts before the parts it needs were merged; the names it assumes
from them (the integrator makes them meet):
* data capture (part A): `cloud.endpoints.flush_capture()` writes the buffered capture now; the
  capture is on for every request locally (a sampling parameter at 100 %, `CAPTURE_PARAMETERS`);
* the schedule (part B2): `cloud.schedules.fire_now(<schedule>)` starts the schedule's target at
  once, the schedule being the template's `DriftMonitorSchedule` (`trigger_monitor` below, the one
  place to adapt);
* the alarm (part B2): template `DataDriftAlarm` on `DriftedFeatures` ≥ 1, evaluated by the local
  alarm evaluator, its action the notification topic, whose email lands in `<state>/outbox/`.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from local.cli.datagen import generate_housing
from tests import drift_world
from tests.integration.test_event_flow import housing_csv, run_cli

pytestmark = pytest.mark.slow

NAMESPACE = "RaySageMakerMLOps/DataDrift"
CAPTURE_PARAMETERS = {"DataCaptureSamplingPercentage": "100"}
ROWS_PER_PHASE = 1000
ROWS_PER_REQUEST = 20


@pytest.fixture
def cloud(tmp_path, monkeypatch):
    """A local cloud on its own Ray head (as tests/integration's make_cloud and ray_head), stopped after."""
    from local.cloud import LocalCloud
    from local.ray_head import RayHead

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with RayHead(num_cpus=2, state_dir=tmp_path / "ray") as head:
        cloud = LocalCloud(tmp_path / "state", ray_address=head.address, start_ray=False,
                           parameters={"MaxTuningJobs": "2", "RMSEThreshold": "60000", **CAPTURE_PARAMETERS}).start()
        try:
            yield cloud
        finally:
            cloud.stop()


def trigger_monitor(cloud) -> None:
    """Fires the drift monitor's schedule now (B2's local scheduler)."""
    cloud.schedules.fire_now(cloud.stack.ref("DriftMonitorSchedule"))


def send_traffic(cloud, endpoint: str, seed: int, square_feet_shift: float = 0.0) -> None:
    """ROWS_PER_PHASE rows of the reference data as requests, alternately JSON records and headed CSV."""
    runtime = cloud.client("sagemaker-runtime")
    frame = generate_housing(ROWS_PER_PHASE, seed)
    frame["SQUARE_FEET"] = frame["SQUARE_FEET"] + square_feet_shift
    features = frame[drift_world.FEATURES]
    for number, first in enumerate(range(0, len(features), ROWS_PER_REQUEST)):
        chunk = features.iloc[first:first + ROWS_PER_REQUEST]
        if number % 2:
            body, content_type = chunk.to_csv(index=False), "text/csv"
        else:
            body, content_type = json.dumps({"instances": json.loads(chunk.to_json(orient="records"))}), "application/json"
        answer = runtime.invoke_endpoint(EndpointName=endpoint, Body=body.encode(), ContentType=content_type)
        assert len(json.loads(answer["Body"].read())["predictions"]) == len(chunk)


def monitor_once(cloud, known: set[str], timeout: float = 300) -> dict:
    """Triggers the monitor, waits for its new execution to succeed, returns the report it wrote."""
    sagemaker, s3 = cloud.client("sagemaker"), cloud.client("s3")
    pipeline = cloud.stack.ref("DriftMonitorPipeline")
    cloud.endpoints.flush_capture()
    trigger_monitor(cloud)
    deadline = time.monotonic() + timeout
    while True:
        executions = sagemaker.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]
        new = [e for e in executions if e["PipelineExecutionArn"] not in known]
        if new and new[0]["PipelineExecutionStatus"] not in ("Executing", "Stopping"):
            break
        assert time.monotonic() < deadline, "the drift monitor did not run"
        time.sleep(1)
    [execution] = new
    known.add(execution["PipelineExecutionArn"])
    assert execution["PipelineExecutionStatus"] == "Succeeded", sagemaker.list_pipeline_execution_steps(
        PipelineExecutionArn=execution["PipelineExecutionArn"])
    bucket = cloud.stack.outputs["ArtifactsBucketName"]
    keys = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="monitoring/")
                  for o in page.get("Contents", []) if o["Key"].endswith("/drift_report.json"))
    return json.loads(s3.get_object(Bucket=bucket, Key=keys[-1])["Body"].read())


def drift_alarm_messages(cloud, alarm_name: str) -> list[str]:
    messages = [p.read_text(errors="replace") for p in sorted((cloud.state_dir / "outbox").glob("*"))]
    return [m for m in messages if alarm_name in m]


def test_traffic_shifted_in_half_drifts_exactly_that_feature_and_notifies(cloud, tmp_path, capsys):
    path = tmp_path / "houses.csv"
    path.write_bytes(housing_csv(3000, seed=11))
    code, result = run_cli(capsys, cloud, path, "--target", "PRICE", "--approve", "--timeout", "1500")
    assert code == 0 and result["status"] == "deployed", result
    endpoint = result["endpoint_name"]
    known: set[str] = set()

    # Unshifted: no drift, DriftedFeatures 0, no alarm.
    send_traffic(cloud, endpoint, seed=101)
    calm = monitor_once(cloud, known)
    assert calm["status"] == "ok" and calm["drifted_features"] == [], calm
    assert calm["model_package_arn"] == result["model_package_arn"]
    assert calm["capture"]["rows"] == ROWS_PER_PHASE
    alarm_name = cloud.stack.ref("DataDriftAlarm")
    assert drift_alarm_messages(cloud, alarm_name) == []

    # As much again with SQUARE_FEET shifted: the window holds it shifted in half of the rows.
    send_traffic(cloud, endpoint, seed=102, square_feet_shift=1500)
    shifted = monitor_once(cloud, known)
    assert shifted["capture"]["rows"] == 2 * ROWS_PER_PHASE
    assert shifted["drifted_features"] == ["SQUARE_FEET"], shifted
    s3, bucket = cloud.client("s3"), cloud.stack.outputs["ArtifactsBucketName"]
    square_feet = {f["feature"]: f for f in shifted["features"]}["SQUARE_FEET"]
    plot = s3.get_object(Bucket=bucket, Key=square_feet["plot"].split("/", 3)[3])["Body"].read()
    assert plot.startswith(b"\x89PNG") and len(plot) > 5000

    end = dt.datetime.fromisoformat(shifted["window"]["end"].replace("Z", "+00:00"))
    points = cloud.client("cloudwatch").get_metric_statistics(
        Namespace=NAMESPACE, MetricName="DriftedFeatures", Dimensions=[{"Name": "EndpointName", "Value": endpoint}],
        StartTime=end - dt.timedelta(minutes=5), EndTime=end + dt.timedelta(minutes=5), Period=60,
        Statistics=["Maximum"])["Datapoints"]
    assert 1.0 in [p["Maximum"] for p in points]

    cloud.wait_for(lambda: drift_alarm_messages(cloud, alarm_name), timeout=180, interval=1,
                   description="the drift alarm's notification in the outbox")
    assert any("ALARM" in message for message in drift_alarm_messages(cloud, alarm_name))
