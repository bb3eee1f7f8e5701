"""The local featurestore-runtime, served over real HTTP and driven by the real boto3 client, with
feature groups and the offline store on the moto server."""
from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
import pyarrow.parquet as pq
import pytest
from werkzeug.serving import make_server

from local.aws.featurestore_runtime.service import FeatureStoreRuntimeApp

ROLE = "arn:aws:iam::123456789012:role/feature-store"
BUCKET = "offline-bucket"


def serve(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def runtime_factory(aws):
    """Starts feature store apps (with the given replication delay) and stops them afterwards."""
    started = []

    def start(replication_delay_seconds=0.0, flush_interval_seconds=0.1):
        app = FeatureStoreRuntimeApp(aws, replication_delay_seconds, flush_interval_seconds)
        server, thread, url = serve(app)
        started.append((app, server, thread))
        client = boto3.client(
            "sagemaker-featurestore-runtime",
            endpoint_url=url,
            config=botocore.config.Config(max_pool_connections=32, retries={"max_attempts": 1}),
        )
        return app, client

    yield start
    for app, server, thread in started:
        server.shutdown()
        thread.join(timeout=10)
        app.close()


@pytest.fixture
def feature_group(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    sm = boto3.client("sagemaker")
    sm.create_feature_group(
        FeatureGroupName="houses",
        RecordIdentifierFeatureName="record_id",
        EventTimeFeatureName="event_time",
        FeatureDefinitions=[
            {"FeatureName": "record_id", "FeatureType": "String"},
            {"FeatureName": "event_time", "FeatureType": "Fractional"},
            {"FeatureName": "rooms", "FeatureType": "Integral"},
            {"FeatureName": "area", "FeatureType": "Fractional"},
        ],
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": f"s3://{BUCKET}/fs"}},
        RoleArn=ROLE,
    )
    desc = sm.describe_feature_group(FeatureGroupName="houses")
    return desc["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"]


def record(rid, event_time, rooms="3", area="120.5"):
    return [
        {"FeatureName": "record_id", "ValueAsString": rid},
        {"FeatureName": "event_time", "ValueAsString": str(event_time)},
        {"FeatureName": "rooms", "ValueAsString": rooms},
        {"FeatureName": "area", "ValueAsString": area},
    ]


def offline_objects(resolved_uri):
    bucket, _, prefix = resolved_uri[len("s3://"):].partition("/")
    s3 = boto3.client("s3")
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return bucket, keys


def read_offline(resolved_uri):
    bucket, keys = offline_objects(resolved_uri)
    s3 = boto3.client("s3")
    tables = [pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys]
    return keys, tables


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_put_get_and_latest_event_time_wins(runtime_factory, feature_group):
    _, client = runtime_factory()
    client.put_record(FeatureGroupName="houses", Record=record("a", 100.0, rooms="3"))
    client.put_record(FeatureGroupName="houses", Record=record("a", 200.0, rooms="5"))
    # An older event arrives late: the online view keeps the newer one.
    client.put_record(FeatureGroupName="houses", Record=record("a", 150.0, rooms="4"))

    got = client.get_record(FeatureGroupName="houses", RecordIdentifierValueAsString="a")
    assert {f["FeatureName"]: f["ValueAsString"] for f in got["Record"]} == {
        "record_id": "a", "event_time": "200.0", "rooms": "5", "area": "120.5",
    }
    only = client.get_record(
        FeatureGroupName="houses", RecordIdentifierValueAsString="a", FeatureNames=["rooms"]
    )
    assert only["Record"] == [{"FeatureName": "rooms", "ValueAsString": "5"}]
    missing = client.get_record(FeatureGroupName="houses", RecordIdentifierValueAsString="zzz")
    assert "Record" not in missing


def test_group_addressed_by_arn(runtime_factory, feature_group):
    _, client = runtime_factory()
    arn = "arn:aws:sagemaker:us-east-1:123456789012:feature-group/houses"
    client.put_record(FeatureGroupName=arn, Record=record("b", 1.0))
    assert client.get_record(FeatureGroupName=arn, RecordIdentifierValueAsString="b")["Record"]


@pytest.mark.parametrize(
    "bad_record, fragment",
    [
        (record("a", 1.0) + [{"FeatureName": "colour", "ValueAsString": "red"}], "colour"),
        (record("a", 1.0)[1:], "record_id"),
        ([f for f in record("a", 1.0) if f["FeatureName"] != "event_time"], "event_time"),
        (record("a", 1.0, rooms="3.5"), "Integral"),
        (record("a", 1.0, area="big"), "Fractional"),
        (record("a", "yesterday"), "event_time"),
    ],
    ids=["unknown-feature", "no-identifier", "no-event-time", "integral", "fractional", "event-time"],
)
def test_invalid_records_are_rejected(runtime_factory, feature_group, bad_record, fragment):
    _, client = runtime_factory()
    with pytest.raises(client.exceptions.ValidationError) as err:
        client.put_record(FeatureGroupName="houses", Record=bad_record)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fragment in err.value.response["Error"]["Message"]
    assert "Record" not in client.get_record(FeatureGroupName="houses", RecordIdentifierValueAsString="a")


def test_unknown_group_is_not_found(runtime_factory, feature_group):
    _, client = runtime_factory()
    with pytest.raises(client.exceptions.ResourceNotFound) as err:
        client.put_record(FeatureGroupName="no-such-group", Record=record("a", 1.0))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    batch = client.batch_get_record(
        Identifiers=[
            {"FeatureGroupName": "no-such-group", "RecordIdentifiersValueAsString": ["a"]},
        ]
    )
    assert batch["Errors"][0]["ErrorCode"] == "ResourceNotFound"


def test_batch_get_and_delete(runtime_factory, feature_group):
    _, client = runtime_factory()
    for rid in ("r1", "r2", "r3"):
        client.put_record(FeatureGroupName="houses", Record=record(rid, 10.0))
    client.delete_record(FeatureGroupName="houses", RecordIdentifierValueAsString="r2", EventTime="11.0")
    batch = client.batch_get_record(
        Identifiers=[
            {
                "FeatureGroupName": "houses",
                "RecordIdentifiersValueAsString": ["r1", "r2", "r3"],
                "FeatureNames": ["record_id", "rooms"],
            }
        ]
    )
    assert sorted(r["RecordIdentifierValueAsString"] for r in batch["Records"]) == ["r1", "r3"]
    assert batch["Records"][0]["Record"] == [
        {"FeatureName": "record_id", "ValueAsString": batch["Records"][0]["RecordIdentifierValueAsString"]},
        {"FeatureName": "rooms", "ValueAsString": "3"},
    ]
    assert batch["Errors"] == [] and batch["UnprocessedIdentifiers"] == []


def test_offline_store_layout_and_columns(runtime_factory, feature_group):
    app, client = runtime_factory()
    event_time = 1_700_000_000.25  # 2023-11-14 22:13:20 UTC
    client.put_record(FeatureGroupName="houses", Record=record("x1", event_time, rooms="4", area="99.5"))
    client.put_record(FeatureGroupName="houses", Record=record("x2", event_time))
    client.delete_record(FeatureGroupName="houses", RecordIdentifierValueAsString="x2", EventTime=str(event_time + 1))

    wait_for(lambda: app.rows_written == 3)
    keys, tables = read_offline(feature_group)
    assert feature_group.endswith("/data")
    prefix = feature_group.split("/", 3)[3]
    for key in keys:
        assert key.startswith(prefix + "/year=2023/month=11/day=14/hour=22/"), key
        name = key.rsplit("/", 1)[1]
        assert name.endswith(".parquet") and name[8] == "T" and name[15] == "Z", name
    rows = [r for t in tables for r in t.to_pylist()]
    assert tables[0].schema.names == [
        "record_id", "event_time", "rooms", "area", "write_time", "api_invocation_time", "is_deleted",
    ]
    by_id = {(r["record_id"], r["is_deleted"]): r for r in rows}
    assert by_id[("x1", False)]["rooms"] == 4 and by_id[("x1", False)]["area"] == 99.5
    assert by_id[("x1", False)]["event_time"] == event_time
    assert by_id[("x2", True)]["rooms"] is None
    assert by_id[("x1", False)]["write_time"] >= by_id[("x1", False)]["api_invocation_time"]


def test_offline_rows_appear_only_after_replication_delay(runtime_factory, feature_group):
    app, client = runtime_factory(replication_delay_seconds=1.5, flush_interval_seconds=0.1)
    started = time.monotonic()
    client.put_record(FeatureGroupName="houses", Record=record("late", 5.0))
    time.sleep(0.7)
    assert offline_objects(feature_group)[1] == []
    assert app.pending_offline_rows == 1
    wait_for(lambda: offline_objects(feature_group)[1], timeout=10)
    assert time.monotonic() - started >= 1.5


def test_target_store_online_only_skips_offline(runtime_factory, feature_group):
    app, client = runtime_factory()
    client.put_record(FeatureGroupName="houses", Record=record("on", 5.0), TargetStores=["OnlineStore"])
    app.close()
    assert offline_objects(feature_group)[1] == []
    assert client.get_record(FeatureGroupName="houses", RecordIdentifierValueAsString="on")["Record"]


def test_many_concurrent_puts_are_all_kept_and_batched(runtime_factory, feature_group):
    app, client = runtime_factory(flush_interval_seconds=0.2)
    count = 600

    def put(i):
        client.put_record(FeatureGroupName="houses", Record=record(f"c{i}", 1000.0 + i, rooms=str(i)))

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    elapsed = time.monotonic() - started
    app.close()  # flushes what is still queued
    _, tables = read_offline(feature_group)
    ids = [r for t in tables for r in t.column("record_id").to_pylist()]
    assert sorted(ids) == sorted(f"c{i}" for i in range(count))
    assert app.files_written < count / 10  # rows are batched into files, not one file per row
    print(f"{count / elapsed:.0f} PutRecord/s over HTTP")
