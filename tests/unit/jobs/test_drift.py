"""The drift monitor (jobs/drift.py) on a moto server: a served package with its baseline, capture
files in SageMaker's format, the report, the plots and the CloudWatch metrics."""
from __future__ import annotations

import datetime as dt
import json

import boto3
import numpy as np
import pandas as pd
import pytest

from jobs import baseline, drift
from jobs.serve import FeatureSchema
from tests import drift_world as world

BUCKET = "artifacts"
ENDPOINT = "ray-mlops-endpoint"
GROUP = "ray-mlops-models"
END = dt.datetime(2026, 12, 1, 12, 30, tzinfo=dt.timezone.utc)


@pytest.fixture
def served(aws):
    s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET)
    document = world.baseline_document(world.housing(6000, seed=0))
    s3.put_object(Bucket=BUCKET, Key="pipeline/x/Evaluate/evaluation/baseline_statistics.json",
                  Body=json.dumps(document).encode())
    arn = world.serve_package(sagemaker, s3, bucket=BUCKET, group=GROUP, endpoint=ENDPOINT,
                              baseline_uri=f"s3://{BUCKET}/pipeline/x/Evaluate/evaluation/baseline_statistics.json")
    return {"s3": s3, "sagemaker": sagemaker, "cloudwatch": boto3.client("cloudwatch"), "arn": arn}


def _args(**thresholds) -> drift.DriftArgs:
    return drift.DriftArgs(endpoint_name=ENDPOINT, window_minutes=60, capture_s3_uri=f"s3://{BUCKET}/capture",
                           monitoring_s3_uri=f"s3://{BUCKET}/monitoring", window_end=END,
                           thresholds=drift.Thresholds(**thresholds))


def _traffic(served, frame: pd.DataFrame, start: dt.datetime) -> None:
    records = world.traffic_records(frame, start)
    # Two files in the window's two hours, as the capture buffers them.
    half = len(records) // 2
    world.write_capture(served["s3"], BUCKET, ENDPOINT, "AllTraffic", records[:half], start)
    world.write_capture(served["s3"], BUCKET, ENDPOINT, "AllTraffic", records[half:], start + dt.timedelta(minutes=40))


def _bar_pixels(png: bytes) -> dict[str, bool]:
    """Whether the plot holds a visible area of each histogram's colour."""
    import io

    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    colours = {"baseline": (0x1F, 0x77, 0xB4), "window": (0xFF, 0x7F, 0x0E)}
    return {name: int((np.abs(pixels - np.array(rgb) / 255).max(axis=-1) < 0.02).sum()) > 500
            for name, rgb in colours.items()}


def _run(served, **thresholds) -> dict:
    return drift.run(_args(**thresholds), served["sagemaker"], served["s3"], served["cloudwatch"])


def _metric(served, name: str, **dimensions) -> list[float]:
    answer = served["cloudwatch"].get_metric_statistics(
        Namespace=drift.METRIC_NAMESPACE, MetricName=name, StartTime=END - dt.timedelta(hours=1),
        EndTime=END + dt.timedelta(minutes=1), Period=60, Statistics=["Maximum"],
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()])
    return [point["Maximum"] for point in answer["Datapoints"]]


def test_npy_traffic_is_read_with_the_json_and_csv_traffic(served):
    """Requests sent as application/x-npy (captured as BASE64) count like the others: the shifted
    half of the traffic arrives as .npy only, and its shift is what drifts."""
    calm = world.traffic_records(world.housing(500, seed=13), END - dt.timedelta(minutes=50))
    shifted = world.traffic_records(world.housing(400, seed=14, square_feet_shift=1500), END - dt.timedelta(minutes=30),
                                    content_types=("application/x-npy",))
    assert {r["captureData"]["endpointInput"]["encoding"] for r in shifted} == {"BASE64"}
    world.write_capture(served["s3"], BUCKET, ENDPOINT, "AllTraffic", [*calm, *shifted], END - dt.timedelta(minutes=50))

    report = _run(served)

    assert report["capture"]["rows"] == 900 and report["capture"]["unreadable_records"] == 0
    assert report["drifted_features"] == ["SQUARE_FEET"]


def test_a_captured_npy_request_reads_as_the_endpoint_read_it():
    """The local data capture, configured as deploy-prepare configures SageMaker's, stores a .npy
    request as BASE64; the drift job reads it back with the server's own npy reader, missing values
    included, and refuses what the endpoint refuses."""
    import base64
    import io

    from jobs.serve import RequestError
    from local.aws.data_capture import CaptureSettings, capture_record

    config = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": "s3://artifacts/capture",
              "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
              "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv", "application/csv"],
                                           "JsonContentTypes": ["application/json"]}}
    settings = CaptureSettings.from_config(ENDPOINT, config, role_arn=None)
    schema = FeatureSchema(world.FEATURES, world.TARGET)
    values = world.housing(30, seed=45)[world.FEATURES].to_numpy(dtype=float)
    values[4, 2] = np.nan
    body = io.BytesIO()
    np.save(body, values, allow_pickle=False)
    record = capture_record(settings, END, "application/x-npy", body.getvalue(), "application/json", b"{}")
    captured = record["captureData"]["endpointInput"]
    assert captured["encoding"] == "BASE64" and base64.b64decode(captured["data"]) == body.getvalue()
    rows = drift.rows_of_record(schema, record)
    np.testing.assert_array_equal(rows, values)
    np.testing.assert_array_equal(rows, schema.matrix_from_body("application/x-npy", body.getvalue()))

    values[7, 1] = np.inf
    refused = io.BytesIO()
    np.save(refused, values, allow_pickle=False)
    record = capture_record(settings, END, "application/x-npy", refused.getvalue(), "application/json", b"{}")
    with pytest.raises(RequestError, match="field SQUARE_FEET in record 7 must be finite"):
        drift.rows_of_record(schema, record)


def test_only_the_feature_shifted_in_half_of_the_traffic_drifts(served):
    calm = world.housing(500, seed=11)
    shifted = world.housing(500, seed=12, square_feet_shift=1500)
    _traffic(served, pd.concat([calm, shifted]).sample(frac=1, random_state=3), END - dt.timedelta(minutes=55))

    report = _run(served)

    assert report["status"] == "ok" and report["drifted_features"] == ["SQUARE_FEET"]
    assert report["capture"]["rows"] == 1000 and report["capture"]["files"] == 2
    assert report["model_package_arn"] == served["arn"] and report["baseline_uri"].endswith("baseline_statistics.json")
    by_feature = {f["feature"]: f for f in report["features"]}
    assert by_feature["SQUARE_FEET"]["statistics"]["psi"]["value"] >= 0.2
    assert all(by_feature[f]["statistics"]["psi"]["value"] < 0.1 for f in world.FEATURES if f != "SQUARE_FEET")

    key = f"monitoring/{ENDPOINT}/2026/12/01/123000/"
    stored = json.loads(served["s3"].get_object(Bucket=BUCKET, Key=key + "drift_report.json")["Body"].read())
    assert stored["drifted_features"] == ["SQUARE_FEET"] and stored["window"]["end"] == "2026-12-01T12:30:00Z"
    png = served["s3"].get_object(Bucket=BUCKET, Key=key + "plots/SQUARE_FEET.png")["Body"].read()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert _bar_pixels(png) == {"baseline": True, "window": True}  # both histograms are drawn, not a blank canvas
    listed = served["s3"].list_objects_v2(Bucket=BUCKET, Prefix=key + "plots/")["Contents"]
    assert [o["Key"] for o in listed] == [key + "plots/SQUARE_FEET.png"]

    assert _metric(served, "DriftedFeatures", EndpointName=ENDPOINT) == [1.0]
    psi = _metric(served, "PSI", EndpointName=ENDPOINT, Feature="SQUARE_FEET")
    assert psi == [pytest.approx(by_feature["SQUARE_FEET"]["statistics"]["psi"]["value"])]
    assert _metric(served, "OutOfRangeShare", EndpointName=ENDPOINT, Feature="DECK") == [0.0]


def test_unshifted_traffic_reports_no_drift(served):
    _traffic(served, world.housing(1000, seed=21), END - dt.timedelta(minutes=50))

    report = _run(served)

    assert report["status"] == "ok" and report["drifted_features"] == []
    assert not served["s3"].list_objects_v2(Bucket=BUCKET, Prefix=f"monitoring/{ENDPOINT}/2026/12/01/123000/plots/").get("Contents")
    assert _metric(served, "DriftedFeatures", EndpointName=ENDPOINT) == [0.0]


def test_missing_values_and_values_out_of_range_drift_on_their_own_statistics(served):
    frame = world.housing(600, seed=31)
    frame.loc[frame.index[:200], "LOT_ACRES"] = np.nan  # a third missing, none in training
    frame.loc[frame.index[200:260], "NUM_BEDROOMS"] = 12.0  # 10 % beyond the baseline's max of 6
    _traffic(served, frame, END - dt.timedelta(minutes=30))

    report = _run(served, psi=5.0)  # PSI out of the way: the other two statistics decide

    by_feature = {f["feature"]: f for f in report["features"]}
    lot, rooms = by_feature["LOT_ACRES"]["statistics"], by_feature["NUM_BEDROOMS"]["statistics"]
    assert lot["missing_share_change"]["value"] == pytest.approx(200 / 600, abs=1e-6) and lot["missing_share_change"]["drifted"]
    assert rooms["out_of_range_share"]["value"] == pytest.approx(60 / 600, abs=1e-6) and rooms["out_of_range_share"]["drifted"]
    assert sorted(report["drifted_features"]) == ["LOT_ACRES", "NUM_BEDROOMS"]


def test_records_outside_the_window_and_unreadable_ones_are_left_out(served):
    s3 = served["s3"]
    inside = world.traffic_records(world.housing(200, seed=41), END - dt.timedelta(minutes=10))
    before = world.traffic_records(world.housing(200, seed=42, square_feet_shift=6000), END - dt.timedelta(minutes=70))
    bad = world.capture_record(world.housing(1, seed=43)[world.FEATURES], END - dt.timedelta(minutes=5))
    bad["captureData"]["endpointInput"]["data"] = '{"instances": [{"NOT_A_FEATURE": 1}]}'
    base64_record = world.capture_record(world.housing(20, seed=44)[world.FEATURES], END - dt.timedelta(minutes=4),
                                         content_type="text/csv", encoding="BASE64")
    world.write_capture(s3, BUCKET, ENDPOINT, "AllTraffic", [*inside, bad, base64_record], END - dt.timedelta(minutes=10))
    world.write_capture(s3, BUCKET, ENDPOINT, "AllTraffic", before, END - dt.timedelta(minutes=70))

    report = _run(served)

    assert report["capture"]["rows"] == 220 and report["capture"]["unreadable_records"] == 1
    assert report["drifted_features"] == []


def test_no_capture_reports_so_and_publishes_nothing(served):
    report = _run(served)

    assert report["status"] == "no_data" and report["features"] == [] and not report["metrics_published"]
    assert served["s3"].get_object(Bucket=BUCKET, Key=f"monitoring/{ENDPOINT}/2026/12/01/123000/drift_report.json")
    assert _metric(served, "DriftedFeatures", EndpointName=ENDPOINT) == []


def test_too_few_rows_are_shown_but_not_judged(served):
    _traffic(served, world.housing(40, seed=51, square_feet_shift=6000), END - dt.timedelta(minutes=20))

    report = _run(served)

    assert report["status"] == "insufficient_data" and report["drifted_features"] == []
    assert report["capture"]["rows"] == 40 and {f["feature"]: f for f in report["features"]}["SQUARE_FEET"]["statistics"]["psi"]["value"] > 1
    assert _metric(served, "DriftedFeatures", EndpointName=ENDPOINT) == []


def test_a_package_without_a_baseline_fails_with_the_reason(aws):
    s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket=BUCKET)
    world.serve_package(sagemaker, s3, bucket=BUCKET, group=GROUP, endpoint=ENDPOINT, baseline_uri=None)
    with pytest.raises(drift.DriftError, match="no DriftCheckBaselines.ModelDataQuality.Statistics"):
        drift.run(_args(), sagemaker, s3, boto3.client("cloudwatch"))
    with pytest.raises(drift.DriftError, match="cannot be described"):
        drift.run(drift.DriftArgs("no-such-endpoint", 60, f"s3://{BUCKET}/capture", f"s3://{BUCKET}/monitoring", END),
                  sagemaker, s3, boto3.client("cloudwatch"))


def test_hour_prefixes_cover_the_window():
    start = dt.datetime(2026, 12, 31, 23, 10, tzinfo=dt.timezone.utc)
    assert drift.hour_prefixes(start, start + dt.timedelta(minutes=60)) == ["2026/12/31/23/", "2027/01/01/00/"]


def test_thresholds_must_be_positive_and_args_parse():
    with pytest.raises(drift.DriftError, match="psi threshold"):
        drift.Thresholds(psi=0)
    args = drift.parse_args(["--endpoint-name", "e", "--window-minutes", "15", "--capture-s3-uri", "s3://b/capture",
                             "--monitoring-s3-uri", "s3://b/monitoring", "--window-end", "2026-12-01T12:30:00Z",
                             "--psi-threshold", "0.25"])
    assert args.window_end == END and args.thresholds.psi == 0.25 and args.thresholds.min_rows == drift.MIN_ROWS


def test_capture_bodies_read_as_the_endpoint_reads_them():
    schema = FeatureSchema(["a", "b"], "t")
    frame = pd.DataFrame({"a": [1.0, None], "b": [2.0, 3.0]})
    when = END
    for content_type, encoding in (("application/json", "JSON"), ("text/csv", "CSV"), ("text/csv", "BASE64"),
                                   ("application/x-npy", "BASE64")):
        record = {"captureData": {"endpointInput": {"observedContentType": content_type, "encoding": encoding,
                                                    "data": world.capture_record(frame, when, content_type=content_type,
                                                                                 encoding=encoding)
                                                    ["captureData"]["endpointInput"]["data"]}}}
        matrix = drift.rows_of_record(schema, record)
        assert matrix[0].tolist() == [1.0, 2.0] and np.isnan(matrix[1][0]) and matrix[1][1] == 3.0
    assert baseline.PSI_EPSILON == 1e-4
