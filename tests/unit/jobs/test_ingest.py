"""The ingest job against the moto server (S3, SageMaker feature groups), the local feature store
runtime served over HTTP, and a real local Ray."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

from jobs import common, dataset_schema, feature_store_writers, ingest
from mlops_shared.artifacts import DatasetReference
from mlops_shared.aws import parse_s3_uri
from mlops_shared.dataset_reference import write_reference
from mlops_shared.dataset_version import is_etag
from local.cli.datagen import generate_housing
from local.aws.featurestore_runtime.service import FeatureStoreRuntimeApp

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
    bucket, prefix = parse_s3_uri(offline_uri)
    frames = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            frames.append(pq.read_table(io.BytesIO(body)).to_pandas())
    return pd.concat(frames, ignore_index=True)


def latest_view(offline: pd.DataFrame, dataset_version: str) -> pd.DataFrame:
    rows = offline[(offline.dataset_version == dataset_version) & ~offline.is_deleted]
    return rows.sort_values(["event_time", "write_time"]).drop_duplicates("record_id", keep="last")


def csv_of(frame: pd.DataFrame) -> dataset_schema.CsvFile:
    return dataset_schema.CsvFile(frame.to_csv(index=False).encode("utf-8"), "s3://data/test.csv")


def schema_of(frame: pd.DataFrame, target: str = "PRICE") -> dataset_schema.Schema:
    return dataset_schema.infer_schema(csv_of(frame), target)[0]


def chunk_of(frame: pd.DataFrame) -> dataset_schema.Chunk:
    return next(csv_of(frame).chunks())


def failure_reason(root) -> str:
    return (root / "output" / "message").read_text().strip()


# --------------------------------------------------------------------------- Ray-backed runs
@pytest.mark.slow
def test_ingest_writes_every_row_and_a_manifest(ray_local, container_root, buckets, feature_store):
    feature_store()
    frame = generate_housing(300, seed=3).astype(str)
    frame.loc[17, "SQUARE_FEET"] = "lots"  # one bad row, allowed by --max-rejected-rows 1
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
    assert "SQUARE_FEET" in rejects[0]["reason"] and rejects[0]["SQUARE_FEET"] == "lots"


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
    # The row without a price is dropped (nothing to learn from), not counted as rejected.
    assert "rejected 3 of 40 rows (at most 2 allowed, the MaxRejectedRows parameter)" in reason
    assert "row 3 (line 5 if the file has no blank lines): LOT_ACRES value 'lots' is not a number" in reason
    assert "larger MaxRejectedRows" in reason and "docs/csv-format.md" in reason
    with (container_root / "processing/output/rejects/rejects.csv").open() as handle:
        rejects = list(csv.DictReader(handle))
    assert [int(r["row_number"]) for r in rejects] == [3, 8, 21, 30]
    assert [r["outcome"] for r in rejects] == ["rejected", "rejected", "rejected", "dropped"]
    assert rejects[3]["reason"] == "the target PRICE is missing"
    assert rejects[0]["LOT_ACRES"] == "lots"  # the row as it was in the CSV


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
    assert "text columns: 'CITY' (e.g. 'Seattle')" in failure_reason(container_root)


# --------------------------------------------------------------------------- pieces
def test_reads_the_exact_version(buckets):
    uri, old_version = upload(buckets, pd.DataFrame({"PRICE": [1], "A": [2]}))
    upload(buckets, pd.DataFrame({"PRICE": [9], "A": [9]}))
    assert ingest.open_csv_object(buckets, uri, old_version).read() == b"PRICE,A\n1,2\n"


def test_reads_by_etag_and_refuses_a_changed_object(buckets):
    buckets.create_bucket(Bucket="unversioned-data")
    put = buckets.put_object(Bucket="unversioned-data", Key="d.csv", Body=b"PRICE,A\n1,2\n")
    etag = put["ETag"]
    assert is_etag(etag) and is_etag(etag.strip('"'))
    assert ingest.open_csv_object(buckets, "s3://unversioned-data/d.csv", etag.strip('"')).read() == b"PRICE,A\n1,2\n"
    assert ingest.open_csv_object(buckets, "s3://unversioned-data/d.csv", "null").read() == b"PRICE,A\n1,2\n"
    buckets.put_object(Bucket="unversioned-data", Key="d.csv", Body=b"PRICE,A\n5,5\n")
    with pytest.raises(common.JobFailure, match="changed since it was uploaded"):
        ingest.open_csv_object(buckets, "s3://unversioned-data/d.csv", etag).read()


def test_schema_and_group_name_follow_the_columns():
    frame = generate_housing(50, seed=2).astype(str)
    schema = schema_of(frame)
    assert schema.types["YEAR_BUILT"] == "Integral" and schema.types["SQUARE_FEET"] == "Fractional"
    assert schema.types["NUM_BATHROOMS"] == "Fractional"
    name = dataset_schema.effective_group_name("fs-housing", schema)
    assert name == dataset_schema.effective_group_name("fs-housing", schema_of(frame.copy()))
    reordered = frame[list(reversed(frame.columns))]
    assert dataset_schema.effective_group_name("fs-housing", schema_of(reordered)) == name
    other = schema_of(frame.drop(columns=["DECK"]))
    assert dataset_schema.effective_group_name("fs-housing", other) != name
    long_name = dataset_schema.effective_group_name("x" * 80, schema)
    assert len(long_name) == 64
    # A column named like one of Feature Store's own is stored under another name, kept as written.
    reserved = schema_of(frame.rename(columns={"DECK": "event_time"}))
    assert "event_time" in reserved.columns
    assert reserved.feature_names[reserved.columns.index("event_time")] == "event_time_2"


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

    assert feature_store_writers.call_with_retries(call, sleep=delays.append, rand=lambda: 1.0, base_delay=0.1) == "ok"
    assert delays == [0.1, 0.2]

    calls = []

    def always_invalid():
        calls.append(1)
        raise invalid

    with pytest.raises(ClientError):
        feature_store_writers.call_with_retries(always_invalid, sleep=delays.append)
    assert len(calls) == 1


def test_record_writer_counts_what_the_feature_store_refuses(buckets, feature_store):
    feature_store()
    frame = generate_housing(20, seed=4).astype(str)
    schema = schema_of(frame)
    sagemaker = boto3.client("sagemaker")
    desc = ingest.ensure_feature_group(
        sagemaker, "writer-check", schema, f"s3://{STORE_BUCKET}/offline", ROLE
    )
    assert desc["FeatureGroupStatus"] == "Created"
    # A second call finds the group instead of failing.
    assert ingest.ensure_feature_group(sagemaker, "writer-check", schema, f"s3://{STORE_BUCKET}/offline", ROLE)
    rows, outcome = dataset_schema.prepare_rows(chunk_of(frame), schema)
    assert outcome.rejected == outcome.dropped == [] and len(rows) == 20
    client = boto3.client("sagemaker-featurestore-runtime")

    good = feature_store_writers.RecordWriter("writer-check", schema.feature_names, "v1", 1.0, max_concurrency=4, client=client)
    assert good.write(rows[:5]) == {"written": [0, 1, 2, 3, 4], "rejected": []}
    good.close()

    renamed = ["AREA" if c == "SQUARE_FEET" else c for c in schema.feature_names]
    bad = feature_store_writers.RecordWriter("writer-check", renamed, "v1", 1.0, max_concurrency=4, client=client)
    result = bad.write(rows[5:8])
    bad.close()
    assert result["written"] == []
    assert [n for n, _ in result["rejected"]] == [5, 6, 7]
    assert result["rejected"][0][1].startswith("ValidationError: Feature AREA is not defined")


def test_actor_plan_fits_the_cluster():
    assert feature_store_writers.plan_actors(10, 0.5, 2.0) == (2, 0.5)  # no more actor processes than CPUs
    assert feature_store_writers.plan_actors(10, 0.5, 8.0) == (8, 0.5)
    assert feature_store_writers.plan_actors(10, 0.5, 32.0) == (10, 0.5)
    assert feature_store_writers.plan_actors(4, 2.0, 5.0) == (2, 2.0)
    assert feature_store_writers.plan_actors(3, 4.0, 2.0) == (1, 2.0)


# --------------------------------------------------------------------------- bulk (offline store) mode
MESSY_CELLS = {
    # column: {row: cell}; every other cell comes from the generated houses
    "YEAR_BUILT": {2: ""},
    "NUM_BEDROOMS": {1: "three", 3: "+4", 4: " 5 ", 5: "99999999999999999999", 6: "1_2"},
    "SQUARE_FEET": {2: "abc", 7: "nan", 8: "-inf", 9: "1e3", 10: "1_000.5", 11: " 2500.25 ", 12: "0x10"},
    "PRICE": {13: "", 14: "-5", 15: "12abc"},
}


def messy_frame(rows: int = 20) -> pd.DataFrame:
    frame = generate_housing(rows, seed=6).astype(str)
    for column, cells in MESSY_CELLS.items():
        for row, cell in cells.items():
            frame.loc[row, column] = cell
    return frame


def test_bulk_preparation_decides_exactly_like_the_put_record_path():
    frame = messy_frame()
    schema = schema_of(frame)
    # An integer beyond 64 bits (row 5) is still a number: the column is Fractional.
    assert schema.types["NUM_BEDROOMS"] == "Fractional" and schema.types["YEAR_BUILT"] == "Integral"
    chunk = chunk_of(frame)
    rows, row_outcome = dataset_schema.prepare_rows(chunk, schema)
    prepared, column_outcome = dataset_schema.prepare_columns(chunk, schema)

    # Same rows dropped and refused, for the same first reason, with the same fields.
    assert sorted(column_outcome.rejected) == sorted(row_outcome.rejected)
    assert column_outcome.dropped == row_outcome.dropped
    rejected = {n: reason for n, reason, _ in row_outcome.rejected}
    assert sorted(rejected) == [1, 2, 6, 8, 10, 12, 15]
    assert rejected[2] == "SQUARE_FEET value 'abc' is not a number"  # YEAR_BUILT is only missing there
    assert rejected[8] == "SQUARE_FEET value '-inf' is infinite, not a measurement"
    assert rejected[10] == "SQUARE_FEET value '1_000.5' is not a number"
    assert rejected[15] == "PRICE value '12abc' is not a number"
    assert [(n, reason) for n, reason, _ in row_outcome.dropped] == [(13, "the target PRICE is missing")]

    # Same values: what PutRecord sends as text is what the bulk path writes as numbers; a missing
    # cell is left out of the record (None) and null in the bulk columns.
    assert prepared.row_numbers.tolist() == [n for n, _ in rows]
    for position, feature in enumerate(schema.feature_names):
        sent = [values[position] for _, values in rows]
        written = prepared.values[feature].to_pylist()
        if schema.types[feature] == "Integral":
            assert written == [None if v is None else int(v) for v in sent]
        else:
            assert written == [None if v is None else float(v) for v in sent]
    kept = prepared.row_numbers.tolist()
    assert prepared.values["NUM_BEDROOMS"][kept.index(3)].as_py() == 4
    assert prepared.values["SQUARE_FEET"][kept.index(7)].as_py() is None  # 'nan': missing
    assert prepared.values["SQUARE_FEET"][kept.index(9)].as_py() == 1000.0


def test_auto_mode_goes_direct_from_the_threshold():
    assert ingest.choose_ingestion_mode("Auto", 99_999, 100_000) == "PutRecord"
    assert ingest.choose_ingestion_mode("Auto", 100_000, 100_000) == "OfflineStore"
    assert ingest.choose_ingestion_mode("PutRecord", 5_000_000, 100_000) == "PutRecord"
    assert ingest.choose_ingestion_mode("OfflineStore", 3, 100_000) == "OfflineStore"
    with pytest.raises(common.JobFailure, match="ingestion mode must be one of Auto, PutRecord, OfflineStore"):
        ingest.choose_ingestion_mode("Spark", 3, 100_000)
    with pytest.raises(SystemExit):
        ingest.parse_args(argv("s3://b/k.csv", "v1", ingestion_mode="Spark"))


def test_bulk_mode_writes_the_offline_store_without_put_record(container_root, buckets, feature_store, monkeypatch):
    feature_store()
    frame = messy_frame(40)
    uri, version = upload(buckets, frame)

    def no_put_record(*args, **kwargs):
        raise AssertionError("the bulk mode must not call PutRecord")

    monkeypatch.setattr(ingest, "write_rows_with_ray", no_put_record)
    assert ingest.main(argv(uri, version, ingestion_mode="OfflineStore", max_rejected_rows=7)) == 0

    manifest = json.loads((container_root / "processing/output/manifest/manifest.json").read_text())
    assert manifest["ingestion_mode"] == "OfflineStore"
    assert manifest["row_count"] == 32 and manifest["rejected_rows"] == 7 and manifest["dropped_rows"] == 1
    bucket, prefix = parse_s3_uri(manifest["offline_store_uri"])
    keys = [o["Key"] for o in buckets.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert len(keys) == 1 and "/data/year=" in keys[0] and keys[0].endswith(".parquet")

    offline = read_offline(buckets, manifest["offline_store_uri"])
    assert len(offline) == 32 and offline.record_id.is_unique
    assert (offline.event_time == manifest["event_time"]).all() and not offline.is_deleted.any()
    assert str(offline.write_time.dtype) == "datetime64[us, UTC]"
    got = offline.assign(row=offline.record_id.str.rsplit("-", n=1).str[1].astype(int)).set_index("row").sort_index()
    good = [n for n in range(40) if n not in (1, 2, 6, 8, 10, 12, 13, 15)]
    assert got.index.tolist() == good
    assert got.loc[3, "NUM_BEDROOMS"] == 4 and got.loc[9, "SQUARE_FEET"] == 1000.0
    assert pd.isna(got.loc[7, "SQUARE_FEET"]) and not pd.isna(got.loc[22, "SQUARE_FEET"])
    with (container_root / "processing/output/rejects/rejects.csv").open() as handle:
        assert [int(r["row_number"]) for r in csv.DictReader(handle)] == [1, 2, 6, 8, 10, 12, 13, 15]


def test_the_dataset_reference_names_the_exact_object_whatever_its_key(container_root, buckets, feature_store,
                                                                       monkeypatch):
    """What the pipeline passes: the reference document. A key with `#`, `?`, spaces and brackets is
    read verbatim (URL parsing would read `incoming/house prices (2024)` instead), and a neighbour
    that URL parsing would land on is not touched."""
    feature_store()
    monkeypatch.setattr(ingest, "write_rows_with_ray", None)  # the bulk path below needs no Ray
    key = "incoming/house prices (2024)#draft?v=2.csv"
    frame = generate_housing(30, seed=5)
    _, version = upload(buckets, frame, key=key)
    upload(buckets, generate_housing(7, seed=6), key="incoming/house prices (2024)")  # the decoy
    reference = DatasetReference(bucket=DATA_BUCKET, key=key, version=version, version_id=version, etag=None,
                                 target_column="PRICE", target_source="default")
    reference_uri = write_reference(buckets, f"s3://{STORE_BUCKET}/pipeline", reference)
    arguments = argv("unused", version, ingestion_mode="OfflineStore")
    arguments[arguments.index("--input-uri"):arguments.index("--input-uri") + 2] = ["--dataset-reference", reference_uri]

    assert ingest.main(arguments) == 0
    manifest = json.loads((container_root / "processing/output/manifest/manifest.json").read_text())
    assert manifest["input_uri"] == f"s3://{DATA_BUCKET}/{key}" and manifest["row_count"] == 30


def test_a_reference_for_another_version_is_refused(container_root, buckets):
    _, version = upload(buckets, generate_housing(5, seed=1))
    reference = DatasetReference(bucket=DATA_BUCKET, key="incoming/houses.csv", version=version, version_id=version,
                                 etag=None, target_column="PRICE", target_source="default")
    reference_uri = write_reference(buckets, f"s3://{STORE_BUCKET}/pipeline", reference)
    args = ingest.IngestArgs(input_uri="", dataset_version="some-other-version", target_column="PRICE",
                             feature_group_name="fs", offline_store_s3_uri=f"s3://{STORE_BUCKET}/o",
                             feature_store_role_arn=ROLE, dataset_reference=reference_uri)
    with pytest.raises(common.JobFailure, match="names version .* started for some-other-version"):
        ingest.ingest(args, s3=buckets)
    missing = dataclasses.replace(args, dataset_reference=f"s3://{STORE_BUCKET}/pipeline/datasets/nope.json")
    with pytest.raises(common.JobFailure, match="cannot read the dataset reference .*nope.json: NoSuchKey"):
        ingest.ingest(missing, s3=buckets)


def test_input_uri_and_dataset_reference_are_either_or():
    with pytest.raises(SystemExit):
        ingest.parse_args(argv("s3://b/k.csv", "v1") + ["--dataset-reference", "s3://a/datasets/x.json"])


@pytest.mark.slow
def test_both_modes_write_the_same_offline_files(ray_local, container_root, buckets, feature_store):
    """Same CSV, once through PutRecord (replicated by the feature store) and once written directly:
    the Parquet files have the same schema and the rows the same values."""
    feature_store()
    frame = generate_housing(60, seed=8)
    uri, version = upload(buckets, frame)
    manifests = {}
    for mode in ("PutRecord", "OfflineStore"):
        assert ingest.main(argv(uri, version, ingestion_mode=mode, actors=1, actor_cpus=1)) == 0
        manifests[mode] = json.loads((container_root / "processing/output/manifest/manifest.json").read_text())
    assert manifests["PutRecord"]["offline_store_uri"] == manifests["OfflineStore"]["offline_store_uri"]

    bucket, prefix = parse_s3_uri(manifests["OfflineStore"]["offline_store_uri"])
    schemas, frames = {}, {}
    for obj in buckets.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        table = pq.read_table(io.BytesIO(buckets.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
        event_time = table.column("event_time")[0].as_py()
        mode = next(m for m, manifest in manifests.items() if manifest["event_time"] == event_time)
        schemas.setdefault(mode, table.schema)
        frames.setdefault(mode, []).append(table.to_pandas())
    assert schemas["PutRecord"].equals(schemas["OfflineStore"])
    put, direct = (pd.concat(frames[m]).set_index("record_id").sort_index() for m in ("PutRecord", "OfflineStore"))
    features = list(frame.columns) + ["dataset_version"]
    pd.testing.assert_frame_equal(put[features], direct[features])


def test_bulk_write_splits_big_data_into_files_and_fills_features_the_csv_lacks(buckets):
    frame = generate_housing(31, seed=10).astype(str)
    schema = schema_of(frame)
    prepared, outcome = dataset_schema.prepare_columns(chunk_of(frame), schema)
    assert outcome.rejected == outcome.dropped == []
    # The group was created from a CSV with one more column: this CSV leaves it empty.
    group_types = {d["FeatureName"]: d["FeatureType"] for d in schema.feature_definitions()}
    group_types["POOL"] = "Integral"
    uri = f"s3://{STORE_BUCKET}/direct/123456789012/sagemaker/us-east-1/offline-store/g-1/data"

    files = feature_store_writers.write_offline_store_directly(buckets, uri, group_types, prepared, "v7", 1700000000.5, file_rows=7)

    assert len(files) == 5 and len(set(files)) == 5
    assert all(f.startswith(uri + "/year=2023/month=11/day=14/hour=22/") for f in files)
    offline = read_offline(buckets, uri)
    assert sorted(offline.record_id) == sorted(f"v7-{n}" for n in range(31))
    assert offline.POOL.isna().all() and list(offline.columns)[-4:] == ["POOL", "write_time", "api_invocation_time", "is_deleted"]
