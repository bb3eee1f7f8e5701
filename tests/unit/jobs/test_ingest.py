"""The ingest job against the moto server (S3, SageMaker feature groups), the local feature store
runtime served over HTTP, and a real local Ray."""
from __future__ import annotations

import csv
import io
import json
import threading

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

from jobs import common, ingest
from local.datagen import generate_housing
from local.featurestore import FeatureStoreRuntimeApp

DATA_BUCKET = "ingest-data"
STORE_BUCKET = "ingest-feature-store"
ROLE = "arn:aws:iam::123456789012:role/feature-store"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def container_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path / "opt-ml"))
    return tmp_path / "opt-ml"


@pytest.fixture
def buckets(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=DATA_BUCKET)
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket=STORE_BUCKET)
    return s3


@pytest.fixture
def feature_store(aws, monkeypatch):
    """Serves the local featurestore runtime and points the featurestore-runtime client at it."""
    started = []

    def start(replication_delay_seconds=0.0):
        app = FeatureStoreRuntimeApp(aws, replication_delay_seconds, flush_interval_seconds=0.2)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((app, server, thread))
        monkeypatch.setenv(
            "AWS_ENDPOINT_URL_SAGEMAKER_FEATURESTORE_RUNTIME", f"http://127.0.0.1:{server.server_port}"
        )
        return app

    yield start
    for app, server, thread in started:
        server.shutdown()
        thread.join(timeout=10)
        app.close()


def upload(s3, frame: pd.DataFrame, key="incoming/houses.csv") -> tuple[str, str]:
    body = frame.to_csv(index=False).encode()
    version = s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=body)["VersionId"]
    return f"s3://{DATA_BUCKET}/{key}", version


def argv(uri, version, **overrides):
    options = {
        "input-uri": uri,
        "dataset-version": version,
        "target-column": "PRICE",
        "feature-group-name": "fs-housing",
        "offline-store-s3-uri": f"s3://{STORE_BUCKET}/offline",
        "feature-store-role-arn": ROLE,
        "actors": "10",
        "actor-cpus": "0.5",
        "max-concurrency-per-actor": "8",
        "max-rejected-rows": "0",
        "offline-store-timeout-seconds": "60",
        "poll-interval-seconds": "0.3",
    }
    options.update({k.replace("_", "-"): str(v) for k, v in overrides.items()})
    return [part for key, value in options.items() for part in (f"--{key}", value)]


def read_offline(s3, offline_uri) -> pd.DataFrame:
    bucket, prefix = common.parse_s3_uri(offline_uri)
    frames = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            frames.append(pq.read_table(io.BytesIO(body)).to_pandas())
    return pd.concat(frames, ignore_index=True)


def latest_view(offline: pd.DataFrame, dataset_version: str) -> pd.DataFrame:
    rows = offline[(offline.dataset_version == dataset_version) & ~offline.is_deleted]
    return rows.sort_values(["event_time", "write_time"]).drop_duplicates("record_id", keep="last")


def failure_reason(root) -> str:
    return (root / "output" / "message").read_text().strip()


# --------------------------------------------------------------------------- Ray-backed runs
@pytest.mark.slow
def test_ingest_writes_every_row_and_a_manifest(ray_local, container_root, buckets, feature_store):
    feature_store()
    frame = generate_housing(300, seed=3).astype(str)
    frame.loc[17, "SQUARE_FEET"] = "n/a"  # one bad row, allowed by --max-rejected-rows 1
    uri, version = upload(buckets, frame)

    assert ingest.main(argv(uri, version, actors=2, max_rejected_rows=1)) == 0

    manifest = json.loads((container_root / "processing/output/manifest/manifest.json").read_text())
    assert manifest["dataset_version"] == version
    assert manifest["input_uri"] == uri
    assert manifest["feature_group_name"].startswith("fs-housing-")
    assert len(manifest["feature_group_name"]) == len("fs-housing-") + 8
    assert manifest["features"] == list(frame.columns)
    assert manifest["target"] == "PRICE"
    assert manifest["record_identifier"] == "record_id" and manifest["event_time_feature"] == "event_time"
    assert manifest["row_count"] == 299 and manifest["rejected_rows"] == 1
    desc = boto3.client("sagemaker").describe_feature_group(FeatureGroupName=manifest["feature_group_name"])
    assert manifest["offline_store_uri"] == desc["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"]
    assert manifest["offline_store_uri"].startswith(f"s3://{STORE_BUCKET}/offline/")

    offline = read_offline(buckets, manifest["offline_store_uri"])
    assert len(offline) == 299 and offline.record_id.is_unique
    assert set(offline.record_id) == {f"{version}-{n}" for n in range(300) if n != 17}
    assert (offline.event_time == manifest["event_time"]).all()
    expected = generate_housing(300, seed=3).drop(index=17)
    got = offline.assign(row=offline.record_id.str.rsplit("-", n=1).str[1].astype(int)).set_index("row").sort_index()
    assert (got.PRICE.to_numpy() == expected.PRICE.to_numpy()).all()
    assert got.SQUARE_FEET.to_numpy() == pytest.approx(expected.SQUARE_FEET.to_numpy())

    with (container_root / "processing/output/rejects/rejects.csv").open() as handle:
        rejects = list(csv.DictReader(handle))
    assert [(r["row_number"], r["record_id"]) for r in rejects] == [("17", f"{version}-17")]
    assert "SQUARE_FEET" in rejects[0]["reason"] and rejects[0]["SQUARE_FEET"] == "n/a"


@pytest.mark.slow
def test_rerun_of_the_same_version_overwrites(ray_local, container_root, buckets, feature_store):
    feature_store()
    uri, version = upload(buckets, generate_housing(120, seed=5))
    manifest_path = container_root / "processing/output/manifest/manifest.json"

    assert ingest.main(argv(uri, version, actors=1, actor_cpus=1)) == 0
    first = json.loads(manifest_path.read_text())
    assert ingest.main(argv(uri, version, actors=1, actor_cpus=1)) == 0
    second = json.loads(manifest_path.read_text())

    assert second["feature_group_name"] == first["feature_group_name"]
    assert second["event_time"] > first["event_time"]
    offline = read_offline(buckets, second["offline_store_uri"])
    assert len(offline) == 240  # the offline store is append-only: both runs are there
    latest = latest_view(offline, version)
    assert len(latest) == 120 and latest.record_id.is_unique
    assert (latest.event_time == second["event_time"]).all()


@pytest.mark.slow
def test_offline_store_that_never_catches_up_fails_clearly(ray_local, container_root, buckets, feature_store):
    feature_store(replication_delay_seconds=10_000)
    uri, version = upload(buckets, generate_housing(50, seed=9))

    with pytest.raises(SystemExit) as exit_info:
        ingest.main(argv(uri, version, actors=1, actor_cpus=1, offline_store_timeout_seconds=1.5))
    assert exit_info.value.code == 1
    reason = failure_reason(container_root)
    assert "offline store has 0 of 50 records after" in reason
    assert not (container_root / "processing/output/manifest/manifest.json").exists()


# --------------------------------------------------------------------------- failures before Ray
def test_too_many_bad_rows_fail_with_numbers_and_rejects(container_root, buckets, feature_store):
    feature_store()
    frame = generate_housing(40, seed=1).astype(str)
    for row in (3, 8, 21):
        frame.loc[row, "LOT_ACRES"] = "lots"
    frame.loc[30, "PRICE"] = ""
    uri, version = upload(buckets, frame)

    with pytest.raises(SystemExit) as exit_info:
        ingest.main(argv(uri, version, max_rejected_rows=2))
    assert exit_info.value.code == 1
    reason = failure_reason(container_root)
    assert "rejected 4 of 40 rows (at most 2 allowed)" in reason
    assert "row 3: LOT_ACRES value 'lots' is not a number" in reason
    with (container_root / "processing/output/rejects/rejects.csv").open() as handle:
        rejects = list(csv.DictReader(handle))
    assert [int(r["row_number"]) for r in rejects] == [3, 8, 21, 30]
    assert rejects[3]["reason"] == "PRICE is empty"


def test_missing_target_names_the_columns_found(container_root, buckets, feature_store):
    feature_store()
    uri, version = upload(buckets, generate_housing(10, seed=1).drop(columns=["PRICE"]))
    with pytest.raises(SystemExit):
        ingest.main(argv(uri, version))
    reason = failure_reason(container_root)
    assert "target column 'PRICE' is not in the CSV" in reason
    assert "columns found: YEAR_BUILT, SQUARE_FEET" in reason


def test_non_numeric_column_fails_clearly(container_root, buckets, feature_store):
    feature_store()
    frame = generate_housing(10, seed=1)
    frame["CITY"] = "Seattle"
    uri, version = upload(buckets, frame)
    with pytest.raises(SystemExit):
        ingest.main(argv(uri, version))
    assert "non-numeric columns: CITY (e.g. 'Seattle')" in failure_reason(container_root)


# --------------------------------------------------------------------------- pieces
def test_reads_the_exact_version(buckets):
    uri, old_version = upload(buckets, pd.DataFrame({"PRICE": [1], "A": [2]}))
    upload(buckets, pd.DataFrame({"PRICE": [9], "A": [9]}))
    assert ingest.read_csv_object(buckets, uri, old_version) == b"PRICE,A\n1,2\n"


def test_reads_by_etag_and_refuses_a_changed_object(buckets):
    buckets.create_bucket(Bucket="unversioned-data")
    put = buckets.put_object(Bucket="unversioned-data", Key="d.csv", Body=b"PRICE,A\n1,2\n")
    etag = put["ETag"]
    assert ingest.is_etag_version(etag) and ingest.is_etag_version(etag.strip('"'))
    assert ingest.read_csv_object(buckets, "s3://unversioned-data/d.csv", etag.strip('"')) == b"PRICE,A\n1,2\n"
    assert ingest.read_csv_object(buckets, "s3://unversioned-data/d.csv", "null") == b"PRICE,A\n1,2\n"
    buckets.put_object(Bucket="unversioned-data", Key="d.csv", Body=b"PRICE,A\n5,5\n")
    with pytest.raises(common.JobFailure, match="changed since it was uploaded"):
        ingest.read_csv_object(buckets, "s3://unversioned-data/d.csv", etag)


def test_schema_and_group_name_follow_the_columns():
    frame = generate_housing(50, seed=2).astype(str)
    schema = ingest.infer_schema(frame, "PRICE")
    assert schema.types["YEAR_BUILT"] == "Integral" and schema.types["SQUARE_FEET"] == "Fractional"
    assert schema.types["NUM_BATHROOMS"] == "Fractional"
    name = ingest.effective_group_name("fs-housing", schema)
    assert name == ingest.effective_group_name("fs-housing", ingest.infer_schema(frame.copy(), "PRICE"))
    reordered = frame[list(reversed(frame.columns))]
    assert ingest.effective_group_name("fs-housing", ingest.infer_schema(reordered, "PRICE")) == name
    other = ingest.infer_schema(frame.drop(columns=["DECK"]), "PRICE")
    assert ingest.effective_group_name("fs-housing", other) != name
    long_name = ingest.effective_group_name("x" * 80, schema)
    assert len(long_name) == 64
    with pytest.raises(common.JobFailure, match="reserved name"):
        ingest.infer_schema(frame.rename(columns={"DECK": "event_time"}), "PRICE")


def test_retries_throttling_with_backoff_and_gives_up_on_validation():
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow down"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "PutRecord",
    )
    invalid = ClientError(
        {"Error": {"Code": "ValidationError", "Message": "bad"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "PutRecord",
    )
    outcomes = [throttled, throttled, "ok"]
    delays = []

    def call():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert ingest.call_with_retries(call, sleep=delays.append, rand=lambda: 1.0, base_delay=0.1) == "ok"
    assert delays == [0.1, 0.2]

    calls = []

    def always_invalid():
        calls.append(1)
        raise invalid

    with pytest.raises(ClientError):
        ingest.call_with_retries(always_invalid, sleep=delays.append)
    assert len(calls) == 1


def test_record_writer_counts_what_the_feature_store_refuses(buckets, feature_store):
    feature_store()
    frame = generate_housing(20, seed=4).astype(str)
    schema = ingest.infer_schema(frame, "PRICE")
    sagemaker = boto3.client("sagemaker")
    desc = ingest.ensure_feature_group(
        sagemaker, "writer-check", schema, f"s3://{STORE_BUCKET}/offline", ROLE
    )
    assert desc["FeatureGroupStatus"] == "Created"
    # A second call finds the group instead of failing.
    assert ingest.ensure_feature_group(sagemaker, "writer-check", schema, f"s3://{STORE_BUCKET}/offline", ROLE)
    rows, rejected = ingest.prepare_rows(frame, schema)
    assert rejected == [] and len(rows) == 20
    client = boto3.client("sagemaker-featurestore-runtime")

    good = ingest.RecordWriter("writer-check", schema.columns, "v1", 1.0, max_concurrency=4, client=client)
    assert good.write(rows[:5]) == {"written": [0, 1, 2, 3, 4], "rejected": []}
    good.close()

    renamed = ["AREA" if c == "SQUARE_FEET" else c for c in schema.columns]
    bad = ingest.RecordWriter("writer-check", renamed, "v1", 1.0, max_concurrency=4, client=client)
    result = bad.write(rows[5:8])
    bad.close()
    assert result["written"] == []
    assert [n for n, _ in result["rejected"]] == [5, 6, 7]
    assert result["rejected"][0][1].startswith("ValidationError: Feature AREA is not defined")


def test_actor_plan_fits_the_cluster():
    assert ingest.plan_actors(10, 0.5, 2.0) == (4, 0.5)
    assert ingest.plan_actors(10, 0.5, 8.0) == (10, 0.5)
    assert ingest.plan_actors(3, 4.0, 2.0) == (1, 2.0)
