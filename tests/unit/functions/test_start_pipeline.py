"""start_pipeline handler end to end against the moto server: S3, DynamoDB (idempotency), SNS -> SQS,
SageMaker pipelines. Every test uploads real objects and invokes the real handler with an EventBridge
event built from tests/events/."""
from __future__ import annotations

import copy
import gzip
import io
import json
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest

from tests.lambda_handlers import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[3]
EVENTS = ROOT / "tests" / "events"
DATA_BUCKET = "mlops-data-bucket"
ARTIFACTS_BUCKET = "mlops-artifacts-bucket"
PIPELINE_NAME = "ray-mlops-test-training"
TABLE_NAME = "ray-mlops-test-idempotency"
HEADER = ["PRICE", "YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS", "NUM_BATHROOMS", "LOT_ACRES",
          "GARAGE_SPACES", "FRONT_PORCH", "DECK"]


def house_rows(count: int, seed: int = 7) -> list[list[Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        year = min(2019, int(rng.gauss(1995, 10)))
        feet = rng.gauss(3000, 750)
        bedrooms, bathrooms = rng.randint(2, 6), rng.randint(2, 6) / 2
        acres, garage = round(rng.gauss(1, 0.25), 2), rng.randint(0, 3)
        price = int(150 * feet + 10000 * bedrooms + 15000 * bathrooms + 15000 * acres + 15000 * garage
                    - 5000 * (2019 - year))
        rows.append([price, year, round(feet, 1), bedrooms, bathrooms, acres, garage, rng.randint(0, 1),
                     rng.randint(0, 1)])
    return rows


def to_csv(header: list[str], rows: list[list[Any]], *, newline: str = "\n", delimiter: str = ",") -> str:
    lines = [delimiter.join(header)] + [delimiter.join(str(v) for v in row) for row in rows]
    return newline.join(lines) + newline


VALID_CSV = to_csv(HEADER, house_rows(150))


@dataclass
class Stack:
    s3: Any
    sagemaker: Any
    sqs: Any
    queue_url: str
    topic_arn: str
    handler: ModuleType

    def upload(self, key: str, body: bytes | str, *, target: str | None = None,
               event_file: str = "s3_object_created.json") -> dict[str, Any]:
        """Puts an object like a user would and returns the EventBridge event S3 would emit."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        extra = {"Metadata": {"target": target}} if target else {}
        put = self.s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=data, **extra)
        event = json.loads((EVENTS / event_file).read_text())
        event["detail"]["bucket"]["name"] = DATA_BUCKET
        event["resources"] = [f"arn:aws:s3:::{DATA_BUCKET}"]
        obj = event["detail"]["object"]
        obj.update(key=key, size=len(data), etag=put["ETag"].strip('"'))
        if "version-id" in obj:
            obj["version-id"] = put["VersionId"]
        return event

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.handler.lambda_handler(copy.deepcopy(event), LambdaContext(function_name="start-pipeline"))

    def executions(self) -> list[dict[str, Any]]:
        return self.sagemaker.list_pipeline_executions(PipelineName=PIPELINE_NAME)["PipelineExecutionSummaries"]

    def parameters(self, execution_arn: str) -> dict[str, str]:
        response = self.sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=execution_arn)
        return {p["Name"]: p["Value"] for p in response["PipelineParameters"]}

    def notifications(self) -> list[dict[str, Any]]:
        messages = []
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not batch.get("Messages"):
                return messages
            for message in batch["Messages"]:
                messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def keys(self, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read_json(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read())


@pytest.fixture
def stack(aws, monkeypatch) -> Stack:
    s3 = boto3.client("s3")
    for bucket in (DATA_BUCKET, ARTIFACTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    boto3.client("dynamodb").create_table(
        TableName=TABLE_NAME,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name="ray-mlops-test-notifications")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="notifications-reader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_pipeline(
        PipelineName=PIPELINE_NAME,
        PipelineDefinition=json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": []}),
        RoleArn="arn:aws:iam::123456789012:role/ray-mlops-test-pipeline",
    )
    for name, value in {
        "PIPELINE_NAME": PIPELINE_NAME,
        "IDEMPOTENCY_TABLE": TABLE_NAME,
        "NOTIFICATION_TOPIC_ARN": topic_arn,
        "DATA_BUCKET": DATA_BUCKET,
        "ARTIFACTS_BUCKET": ARTIFACTS_BUCKET,
        "DEFAULT_TARGET_COLUMN": "PRICE",
        "FEATURE_GROUP_BASE_NAME": "fs-ray-synthetic-housing-data",
        "MODEL_PACKAGE_GROUP_NAME": "ray-mlops-test-models",
        "JOB_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ray-mlops-jobs:latest",
        "RMSE_THRESHOLD": "15000",
        "CHAMPION_TOLERANCE": "0.05",
        "PROCESSING_INSTANCE_TYPE": "ml.m5.xlarge",
        "PROCESSING_INSTANCE_COUNT": "1",
        "TRAINING_INSTANCE_TYPE": "ml.m5.xlarge",
        "TRAINING_INSTANCE_COUNT": "1",
        "MAX_TUNING_JOBS": "4",
        "MAX_PARALLEL_TUNING_JOBS": "2",
        "AWS_LAMBDA_FUNCTION_NAME": "start-pipeline",
    }.items():
        monkeypatch.setenv(name, value)
    return Stack(s3, sagemaker, sqs, queue_url, topic_arn, load_handler("start_pipeline"))


def _zip(name: str, data: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


BAD_FILES = {
    "empty_file": ("empty.csv", b""),
    "gzip": ("houses.csv", gzip.compress(VALID_CSV.encode())),
    "zip": ("houses.csv", _zip("houses.csv", VALID_CSV)),
    "excel_xls": ("houses.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512),
    "random_binary": ("houses.csv", random.Random(1).randbytes(4096)),
    "html_page": ("houses.csv", b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>"),
    "utf16": ("houses.csv", VALID_CSV.encode("utf-16")),
    "latin1": ("houses.csv", (to_csv(HEADER + ["CITY"], [r + ["Montr\u00e9al"] for r in house_rows(150)])).encode("latin-1")),
    "semicolon": ("houses.csv", to_csv(HEADER, house_rows(150), delimiter=";")),
    "tab": ("houses.tsv.csv", to_csv(HEADER, house_rows(150), delimiter="\t")),
    "pipe": ("houses.csv", to_csv(HEADER, house_rows(150), delimiter="|")),
    "empty_column_name": ("houses.csv", to_csv([""] + HEADER, [[i] + r for i, r in enumerate(house_rows(150))])),
    "duplicate_column_name": ("houses.csv", to_csv(HEADER + ["DECK"], [r + [1] for r in house_rows(150)])),
    "missing_target": ("houses.csv", to_csv(["COST"] + HEADER[1:], house_rows(150))),
    "ragged_row": ("houses.csv", VALID_CSV + "100000,1990,2000\n"),
    "bad_cell": ("houses.csv", VALID_CSV + "100000,1990,2 000,3,2,1,1,0,0\n"),
    "non_numeric_value": ("houses.csv", to_csv(HEADER + ["POOL"], [r + ["yes"] for r in house_rows(150)])),
    "non_numeric_target": ("houses.csv", to_csv(HEADER, [[f"${r[0]}"] + r[1:] for r in house_rows(150)])),
    "no_header_row": ("houses.csv", to_csv([str(v) for v in house_rows(1, seed=3)[0]], house_rows(150))),
    "constant_target": ("houses.csv", to_csv(HEADER, [[100] + r[1:] for r in house_rows(250)])),
    "too_few_rows": ("houses.csv", to_csv(HEADER, house_rows(20))),
}
EXPECTED_CODE = {
    "empty_file": "empty_file", "gzip": "compressed_file", "zip": "compressed_file", "excel_xls": "binary_file",
    "random_binary": "binary_file", "html_page": "html_page", "utf16": "unsupported_encoding",
    "latin1": "unsupported_encoding", "semicolon": "wrong_delimiter", "tab": "wrong_delimiter",
    "pipe": "wrong_delimiter", "empty_column_name": "empty_column_name",
    "duplicate_column_name": "duplicate_column_name", "missing_target": "missing_target",
    "ragged_row": "rejected_rows", "bad_cell": "rejected_rows", "non_numeric_value": "non_numeric_value",
    "non_numeric_target": "non_numeric_target", "no_header_row": "no_header_row",
    "constant_target": "constant_target", "too_few_rows": "too_few_rows",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_quarantined_with_reason_and_notification(stack: Stack, case: str):
    file_name, body = BAD_FILES[case]
    key = f"incoming/team-a/{file_name}"
    event = stack.upload(key, body)
    version_id = event["detail"]["object"]["version-id"]

    result = stack.invoke(event)

    code = EXPECTED_CODE[case]
    assert result["status"] == "quarantined"
    assert result["reason"] == code
    # The original is untouched, the copy and its reason sit side by side.
    original = stack.s3.get_object(Bucket=DATA_BUCKET, Key=key)
    assert original["VersionId"] == version_id
    assert original["Body"].read() == (body if isinstance(body, bytes) else body.encode())
    quarantined = f"quarantine/team-a/{file_name}"
    assert stack.keys("quarantine/") == [quarantined, quarantined + ".reason.json"]
    copy_body = stack.s3.get_object(Bucket=DATA_BUCKET, Key=quarantined)["Body"].read()
    assert copy_body == original_bytes(body)
    reason = stack.read_json(quarantined + ".reason.json")
    assert reason["code"] == code
    assert reason["message"] and reason["fix"]
    assert reason["source"] == {
        "bucket": DATA_BUCKET, "key": key, "version_id": version_id, "etag": event["detail"]["object"]["etag"],
        "s3_uri": f"s3://{DATA_BUCKET}/{key}", "s3_uri_with_version": f"s3://{DATA_BUCKET}/{key}?versionId={version_id}",
    }
    assert "header" in reason["detected"]
    # People are told what is wrong and how to fix it.
    [notification] = stack.notifications()
    assert code in notification["Subject"] and file_name in notification["Subject"]
    assert reason["message"] in notification["Message"]
    assert reason["fix"] in notification["Message"]
    # And where the rules are: every reason and notice points at the page.
    assert reason["docs"] == "docs/csv-format.md"
    assert "docs/csv-format.md" in notification["Message"]
    assert notification["MessageAttributes"]["event_type"]["Value"] == "dataset_quarantined"
    # And no money was spent.
    assert stack.executions() == []


def original_bytes(body: bytes | str) -> bytes:
    return body if isinstance(body, bytes) else body.encode()


def test_wrong_delimiter_names_the_delimiter(stack: Stack):
    result = stack.invoke(stack.upload("incoming/houses.csv", to_csv(HEADER, house_rows(150), delimiter=";")))
    assert "semicolon" in result["message"]
    reason = stack.read_json("quarantine/houses.csv.reason.json")
    assert reason["details"]["detected_delimiter"] == ";"


HOSTILE_DATASET_CONFIGS = {
    "invalid_json": (b"{target: PRICE", "is not valid JSON"),
    "too_large": (b'{"target": "PRICE"' + b" " * (64 * 1024) + b"}", "at most 65536 bytes"),
    # Would make json.loads raise RecursionError; fits in the size limit.
    "deeply_nested": (b"[" * 30000 + b"]" * 30000, "nests 30000 levels deep"),
    "deep_inside_an_object": (b'{"target": ' + b"[" * 40 + b"]" * 40 + b"}", "nests 41 levels deep"),
    "array": (b'["PRICE"]', "is a JSON array; it must be an object"),
    "string": (b'"PRICE"', "is a JSON string"),
    "null": (b"null", "is a JSON null"),
    "target_number": (b'{"target": 5}', '"target": 5; it must be a column name'),
    "target_empty": (b'{"target": "  "}', "it must be a column name"),
    "target_list": (b'{"target": ["PRICE"]}', "it must be a column name"),
    "target_too_long": (b'{"target": "' + b"x" * 2000 + b'"}', "2000 characters"),
    "unknown_key": (b'{"traget": "PRICE"}', "unknown key(s) 'traget' (did you mean 'target'?)"),
    "duplicate_key": (b'{"target": "PRICE", "target": "VALUE"}', "gives the key 'target' more than once"),
    "huge_integer": (b'{"target": ' + b"9" * 5000 + b"}", "is not valid JSON"),
    "binary": (gzip.compress(b'{"target": "PRICE"}'), "is not UTF-8 text"),
    "utf16": ('{"target": "PRICE"}'.encode("utf-16"), "is not UTF-8 text"),
    "empty": (b"", "is empty"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DATASET_CONFIGS))
def test_unusable_dataset_config_is_quarantined_with_one_notification(stack: Stack, case: str):
    body, words = HOSTILE_DATASET_CONFIGS[case]
    stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/team-b/dataset.json", Body=body)
    result = stack.invoke(stack.upload("incoming/team-b/houses.csv", VALID_CSV))
    assert result["status"] == "quarantined", result
    assert result["reason"] == "invalid_dataset_config"
    assert f"s3://{DATA_BUCKET}/incoming/team-b/dataset.json" in result["message"]
    assert words in result["message"]
    assert '{"target": "PRICE"}' in result["fix"]
    assert stack.keys("quarantine/") == ["quarantine/team-b/houses.csv", "quarantine/team-b/houses.csv.reason.json"]
    [notification] = stack.notifications()
    assert "invalid_dataset_config" in notification["Subject"]
    assert stack.executions() == []


def test_dataset_config_version_read_is_recorded_in_the_dataset_reference(stack: Stack):
    body = to_csv(["VALUE"] + HEADER[1:], house_rows(150))
    put = stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/team-e/dataset.json", Body=b'{"target": "VALUE"}')
    result = stack.invoke(stack.upload("incoming/team-e/houses.csv", body))
    assert result["status"] == "started", result
    # Replaced after the run started: the reference still names the version that chose the target.
    stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/team-e/dataset.json", Body=b'{"target": "PRICE"}')
    bucket, key = result["dataset_reference_uri"].removeprefix("s3://").split("/", 1)
    reference = json.loads(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert reference["target_source"] == "dataset.json"
    assert reference["dataset_config"] == {"key": "incoming/team-e/dataset.json", "version_id": put["VersionId"],
                                           "etag": put["ETag"].strip('"')}


def test_dataset_config_in_an_unversioned_bucket_is_pinned_by_etag(stack: Stack):
    stack.s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    body = to_csv(["VALUE"] + HEADER[1:], house_rows(150))
    put = stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/team-f/dataset.json", Body=b'{"target": "VALUE"}')
    result = stack.invoke(stack.upload("incoming/team-f/houses.csv", body, event_file="s3_object_created_unversioned.json"))
    assert result["status"] == "started", result
    bucket, key = result["dataset_reference_uri"].removeprefix("s3://").split("/", 1)
    reference = json.loads(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert reference["dataset_config"] == {"key": "incoming/team-f/dataset.json", "version_id": None,
                                           "etag": put["ETag"].strip('"')}


def test_a_default_target_records_no_dataset_config(stack: Stack):
    stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/team-g/dataset.json", Body=b"{}")
    result = stack.invoke(stack.upload("incoming/team-g/houses.csv", VALID_CSV))
    assert result["status"] == "started" and result["target_source"] == "default"
    bucket, key = result["dataset_reference_uri"].removeprefix("s3://").split("/", 1)
    assert json.loads(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())["dataset_config"] is None


VALID_EDGE_CASES = {
    "plain": VALID_CSV.encode(),
    "utf8_bom": b"\xef\xbb\xbf" + VALID_CSV.encode(),
    "crlf": to_csv(HEADER, house_rows(150), newline="\r\n").encode(),
    "quoted_numbers": to_csv([f'"{h}"' for h in HEADER],
                             [[f'"{v}"' for v in r] for r in house_rows(150)]).encode(),
    "reordered_columns": to_csv(HEADER[::-1], [r[::-1] for r in house_rows(150)]).encode(),
    "trailing_blank_lines": (VALID_CSV + "\n\n\r\n\n").encode(),
    "exactly_minimum_rows": to_csv(HEADER, house_rows(100)).encode(),
    # Missing feature cells are data (any NA spelling); a row without a target is dropped, not refused.
    "missing_feature_cells": to_csv(HEADER, [r[:2] + [["", "NA", "null"][i % 3]] + r[3:] if i % 10 == 3 else r
                                             for i, r in enumerate(house_rows(150))]).encode(),
    "rows_without_target": to_csv(HEADER, house_rows(150) + [[""] + r[1:] for r in house_rows(5, seed=9)]).encode(),
}


@pytest.mark.parametrize("case", sorted(VALID_EDGE_CASES))
def test_valid_file_starts_one_execution(stack: Stack, case: str):
    key = "incoming/House Pricing (2024).csv"
    event = stack.upload(key, VALID_EDGE_CASES[case])
    version_id = event["detail"]["object"]["version-id"]

    result = stack.invoke(event)

    assert result["status"] == "started", result
    [execution] = stack.executions()
    assert execution["PipelineExecutionArn"] == result["execution_arn"]
    assert execution["PipelineExecutionDisplayName"] == "House-Pricing-2024-20240501-123045"
    assert f"s3://{DATA_BUCKET}/{key}" in execution["PipelineExecutionDescription"]
    assert version_id in execution["PipelineExecutionDescription"]
    parameters = stack.parameters(result["execution_arn"])
    assert parameters["InputDataUri"] == f"s3://{DATA_BUCKET}/{key}"
    assert parameters["DatasetVersion"] == version_id
    assert parameters["TargetColumn"] == "PRICE"
    assert parameters["ArtifactsS3Uri"] == f"s3://{ARTIFACTS_BUCKET}/pipeline"
    assert parameters["ModelPackageGroupName"] == "ray-mlops-test-models"
    assert parameters["RMSEThreshold"] == "15000"
    # The base name: the ingest job derives one group per schema from it.
    assert parameters["FeatureGroupName"] == "fs-ray-synthetic-housing-data"
    assert stack.keys("quarantine/") == []
    assert stack.notifications() == []


def test_large_file_is_checked_from_a_sample_and_rows_are_estimated(stack: Stack, monkeypatch):
    monkeypatch.setenv("VALIDATION_SAMPLE_BYTES", "4096")
    stack.handler = load_handler("start_pipeline")
    big = to_csv(HEADER, house_rows(3000))
    result = stack.invoke(stack.upload("incoming/big.csv", big))
    assert result["status"] == "started"
    assert 2000 < result["estimated_rows"] < 4000

    # A file whose sample looks fine but which is too small overall is caught by the estimate too.
    monkeypatch.setenv("MIN_DATA_ROWS", "5000")
    stack.handler = load_handler("start_pipeline")
    result = stack.invoke(stack.upload("incoming/big-but-not-enough.csv", big))
    assert result["status"] == "quarantined" and result["reason"] == "too_few_rows"
    assert "about" in result["message"]


def test_same_event_ten_times_starts_one_execution(stack: Stack):
    event = stack.upload("incoming/houses.csv", VALID_CSV)
    results = [stack.invoke(event) for _ in range(10)]
    assert len(stack.executions()) == 1
    assert {r["execution_arn"] for r in results} == {stack.executions()[0]["PipelineExecutionArn"]}
    assert all(r == results[0] for r in results)


def test_same_bad_event_twice_notifies_once(stack: Stack):
    event = stack.upload("incoming/houses.csv", b"")
    assert stack.invoke(event) == stack.invoke(event)
    assert len(stack.notifications()) == 1


def test_new_version_of_same_key_starts_a_new_execution(stack: Stack):
    first = stack.invoke(stack.upload("incoming/houses.csv", VALID_CSV))
    second = stack.invoke(stack.upload("incoming/houses.csv", VALID_CSV))
    assert first["execution_arn"] != second["execution_arn"]
    assert first["dataset_version"] != second["dataset_version"]
    assert first["client_request_token"] != second["client_request_token"]
    assert len(stack.executions()) == 2


def test_unversioned_bucket_is_keyed_on_etag(stack: Stack):
    stack.s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    event = stack.upload("incoming/houses.csv", VALID_CSV, event_file="s3_object_created_unversioned.json")
    first, again = stack.invoke(event), stack.invoke(event)
    assert first == again
    assert first["dataset_version"] == event["detail"]["object"]["etag"]
    assert stack.parameters(first["execution_arn"])["DatasetVersion"] == event["detail"]["object"]["etag"]
    changed = stack.invoke(stack.upload("incoming/houses.csv", to_csv(HEADER, house_rows(120)),
                                        event_file="s3_object_created_unversioned.json"))
    assert changed["execution_arn"] != first["execution_arn"]
    assert len(stack.executions()) == 2


def test_fifty_distinct_keys_start_fifty_executions(stack: Stack):
    events = [stack.upload(f"incoming/batch/houses-{i:02d}.csv", VALID_CSV) for i in range(50)]
    arns = {stack.invoke(event)["execution_arn"] for event in events}
    assert len(arns) == 50
    assert len(stack.executions()) == 50


def test_target_from_object_metadata(stack: Stack):
    rows = house_rows(150)
    body = to_csv(["VALUE"] + HEADER[1:], rows)
    stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/dataset.json", Body=b'{"target": "SOMETHING_ELSE"}')
    result = stack.invoke(stack.upload("incoming/houses.csv", body, target="VALUE"))
    assert result["status"] == "started", result
    assert result["target_source"] == "metadata"
    assert stack.parameters(result["execution_arn"])["TargetColumn"] == "VALUE"


def test_target_from_dataset_json_next_to_the_file(stack: Stack):
    body = to_csv(["VALUE"] + HEADER[1:], house_rows(150))
    stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/team-c/dataset.json", Body=b'{"target": "VALUE"}')
    result = stack.invoke(stack.upload("incoming/team-c/houses.csv", body))
    assert result["status"] == "started", result
    assert result["target_source"] == "dataset.json"
    assert stack.parameters(result["execution_arn"])["TargetColumn"] == "VALUE"


def test_target_defaults_to_stack_setting(stack: Stack):
    result = stack.invoke(stack.upload("incoming/team-d/houses.csv", VALID_CSV))
    assert result["target_source"] == "default"
    assert stack.parameters(result["execution_arn"])["TargetColumn"] == "PRICE"


def test_target_from_metadata_missing_in_file_is_explained(stack: Stack):
    result = stack.invoke(stack.upload("incoming/houses.csv", VALID_CSV, target="price"))
    assert result["status"] == "quarantined" and result["reason"] == "missing_target"
    assert "'PRICE'" in result["message"]  # the near match is pointed out
    reason = stack.read_json("quarantine/houses.csv.reason.json")
    assert reason["detected"]["target_source"] == "metadata"
    assert reason["detected"]["header"] == HEADER


def test_objects_outside_incoming_are_ignored(stack: Stack):
    result = stack.invoke(stack.upload("quarantine/houses.csv", VALID_CSV))
    assert result["status"] == "ignored"
    assert stack.executions() == []


def events_from_moto(stack: Stack, uploads: list[tuple[str, bytes | str]]) -> list[dict[str, Any]]:
    """Uploads through S3 with EventBridge enabled and returns the events moto itself emitted."""
    events = boto3.client("events")
    stack.s3.put_bucket_notification_configuration(
        Bucket=DATA_BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    queue_url = stack.sqs.create_queue(QueueName="s3-events")["QueueUrl"]
    queue_arn = stack.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="all-s3", EventPattern=json.dumps({"source": ["aws.s3"], "detail-type": ["Object Created"]}))
    events.put_targets(Rule="all-s3", Targets=[{"Id": "capture", "Arn": queue_arn}])
    for key, body in uploads:
        stack.s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=body)
    received: list[dict[str, Any]] = []
    while len(received) < len(uploads):
        batch = stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        assert batch.get("Messages"), f"only {len(received)} of {len(uploads)} events arrived"
        received += [json.loads(m["Body"]) for m in batch["Messages"]]
    return received


def test_events_emitted_by_s3_itself_start_the_pipeline(stack: Stack):
    key = "incoming/my houses+2024 \u00e9t\u00e9.csv"  # spaces, '+' and non-ASCII survive the trip
    [event] = events_from_moto(stack, [(key, VALID_CSV)])
    result = stack.invoke(event)
    assert result["status"] == "started", result
    assert stack.parameters(result["execution_arn"])["InputDataUri"] == f"s3://{DATA_BUCKET}/{key}"
    assert stack.invoke(event)["execution_arn"] == result["execution_arn"]
    assert len(stack.executions()) == 1


def test_events_emitted_by_unversioned_s3_are_told_apart_by_etag(stack: Stack):
    stack.s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    first, second = events_from_moto(stack, [("incoming/houses.csv", VALID_CSV),
                                             ("incoming/houses.csv", to_csv(HEADER, house_rows(130)))])
    results = [stack.invoke(first), stack.invoke(second), stack.invoke(first)]
    assert results[0]["dataset_version"] != results[1]["dataset_version"]
    assert results[2] == results[0]
    assert len(stack.executions()) == 2


def test_every_parameter_sent_is_declared_by_the_pipeline_definition(stack: Stack):
    definition = json.loads((ROOT / "jobs" / "pipeline_definition.json").read_text())
    declared = {parameter["Name"] for parameter in definition["Parameters"]}
    result = stack.invoke(stack.upload("incoming/houses.csv", VALID_CSV))
    assert set(result["parameters"]) <= declared, set(result["parameters"]) - declared
    assert {"InputDataUri", "DatasetVersion", "TargetColumn", "FeatureGroupName", "ModelPackageGroupName",
            "ArtifactsS3Uri", "JobImageUri", "RMSEThreshold"} <= set(result["parameters"])


def test_rejected_rows_up_to_max_rejected_rows_start_the_run(stack: Stack, monkeypatch):
    body = VALID_CSV + "100000,1990,2000\n" + "100000,1990,2 000,3,2,1,1,0,0\n"
    refused = stack.invoke(stack.upload("incoming/refused.csv", body))
    assert refused["status"] == "quarantined" and refused["reason"] == "rejected_rows"
    assert "line 152" in refused["message"] and "line 153" in refused["message"]
    reason = stack.read_json("quarantine/refused.csv.reason.json")
    assert [row["line"] for row in reason["details"]["rows"]] == [152, 153]

    monkeypatch.setenv("MAX_REJECTED_ROWS", "2")
    stack.handler = load_handler("start_pipeline")
    result = stack.invoke(stack.upload("incoming/accepted.csv", body))
    assert result["status"] == "started", result
    # The run gets the limit intake applied.
    assert stack.parameters(result["execution_arn"])["MaxRejectedRows"] == "2"


def test_intake_applies_the_pipelines_default_max_rejected_rows():
    from mlops_shared.config import DEFAULT_MAX_REJECTED_ROWS

    definition = json.loads((ROOT / "jobs" / "pipeline_definition.json").read_text())
    [declared] = [p for p in definition["Parameters"] if p["Name"] == "MaxRejectedRows"]
    assert declared["DefaultValue"] == DEFAULT_MAX_REJECTED_ROWS


def test_renamed_columns_are_reported_and_kept_in_the_reason(stack: Stack):
    header = ["Sale Price", "Year Built"] + HEADER[2:]
    result = stack.invoke(stack.upload("incoming/named.csv", to_csv(header, house_rows(150)), target="Sale Price"))
    assert result["status"] == "started", result
    assert result["renamed_columns"] == {"Sale Price": "Sale_Price", "Year Built": "Year_Built"}
    assert stack.parameters(result["execution_arn"])["TargetColumn"] == "Sale Price"

    stack.invoke(stack.upload("incoming/named-few.csv", to_csv(header, house_rows(20)), target="Sale Price"))
    reason = stack.read_json("quarantine/named-few.csv.reason.json")
    assert reason["code"] == "too_few_rows"
    assert reason["detected"]["feature_names"]["Year Built"] == "Year_Built"


def test_docs_link_follows_the_docs_base_url(stack: Stack, monkeypatch):
    monkeypatch.setenv("DOCS_BASE_URL", "https://example.com/org/repo/blob/main/")
    stack.handler = load_handler("start_pipeline")
    result = stack.invoke(stack.upload("incoming/empty.csv", b""))
    link = "https://example.com/org/repo/blob/main/docs/csv-format.md"
    assert result["docs"] == link
    assert stack.read_json("quarantine/empty.csv.reason.json")["docs"] == link
    [notification] = stack.notifications()
    assert link in notification["Message"]


def test_file_larger_than_max_dataset_bytes_is_refused_before_reading_it(stack: Stack, monkeypatch):
    monkeypatch.setenv("MAX_DATASET_BYTES", str(len(VALID_CSV) - 1))
    stack.handler = load_handler("start_pipeline")
    key = "incoming/huge.csv"
    event = stack.upload(key, VALID_CSV)
    result = stack.invoke(event)
    assert result["status"] == "quarantined" and result["reason"] == "file_too_large"
    assert f"{len(VALID_CSV)} bytes" in result["message"] and "MaxDatasetBytes" in result["message"]
    assert "smaller than" in result["fix"]
    # The original stays; only the reason is written (a copy of a huge file could outlast the function).
    assert stack.keys("quarantine/") == ["quarantine/huge.csv.reason.json"]
    reason = stack.read_json("quarantine/huge.csv.reason.json")
    assert reason["quarantined_copy"] is None
    assert reason["details"] == {"object_size": len(VALID_CSV), "max_dataset_bytes": len(VALID_CSV) - 1}
    assert stack.s3.get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read() == VALID_CSV.encode()
    [notification] = stack.notifications()
    assert "file_too_large" in notification["Subject"]
    assert stack.executions() == []

    monkeypatch.setenv("MAX_DATASET_BYTES", str(len(VALID_CSV)))
    stack.handler = load_handler("start_pipeline")
    assert stack.invoke(stack.upload("incoming/just-fits.csv", VALID_CSV))["status"] == "started"


def test_sizes_read_as_people_write_them():
    from mlops_shared.intake import human_bytes

    assert [human_bytes(n) for n in (0, 1023, 1536, 10 * 1024**3, 5 * 1024**4 + 1)] == [
        "0 bytes", "1023 bytes", "1.5 KiB", "10 GiB", "5 TiB"]


def _key_of_bytes(prefix: str, total: int) -> str:
    """A key of exactly `total` UTF-8 bytes: `prefix`, two-byte letters, one ASCII letter if odd, `.csv`."""
    room = total - len(prefix.encode()) - len(".csv")
    return prefix + "ä" * (room // 2) + "x" * (room % 2) + ".csv"


ORDINARY_KEYS = {
    "spaces": "incoming/house prices 2024.csv",
    "parentheses": "incoming/House Pricing (v2).csv",
    "punctuation": "incoming/Häuser & Preise, 'Q1' #3.csv",
    "unicode": "incoming/données/日本の住宅価格.csv",
    "plus_and_percent": "incoming/a+b 100%.csv",
    "longest": _key_of_bytes("incoming/team ä/", 1024),
}
DISPLAY_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}")


@pytest.mark.parametrize("encoded", [True, False], ids=["url-encoded", "raw"])
@pytest.mark.parametrize("case", sorted(ORDINARY_KEYS))
def test_any_key_s3_allows_trains_and_quarantines(stack: Stack, case: str, encoded: bool):
    key = ORDINARY_KEYS[case]
    assert len(key.encode()) <= 1024
    event = stack.upload(key, VALID_CSV)
    if encoded:  # S3 notifications: `+` for a space, %XX for the rest of UTF-8
        event["detail"]["object"]["key"] = quote_plus(key, safe="/")
    result = stack.invoke(event)
    assert result["status"] == "started", result
    assert DISPLAY_NAME.fullmatch(result["display_name"])
    parameters = stack.parameters(result["execution_arn"])
    uri = f"s3://{DATA_BUCKET}/{key}"
    assert parameters["InputDataUri"] == (uri if len(uri) <= 1024 else uri[:1021] + "...")
    assert len(parameters["DatasetLabel"]) <= 256
    bucket, reference_key = result["dataset_reference_uri"].removeprefix("s3://").split("/", 1)
    reference = json.loads(stack.s3.get_object(Bucket=bucket, Key=reference_key)["Body"].read())
    assert reference["key"] == key  # the exact object, whatever the parameters could carry

    bad = b"PRICE;YEAR\n1;2\n"
    refused = stack.invoke(stack.upload(key, bad))
    assert refused["status"] == "quarantined" and refused["reason"] == "wrong_delimiter"
    copy_key = refused["quarantine_uri"].removeprefix(f"s3://{DATA_BUCKET}/")
    reason_key = refused["reason_uri"].removeprefix(f"s3://{DATA_BUCKET}/")
    assert stack.keys("quarantine/") == sorted([copy_key, reason_key])
    assert len(reason_key.encode()) <= 1024
    assert stack.s3.get_object(Bucket=DATA_BUCKET, Key=copy_key)["Body"].read() == bad
    reason = stack.read_json(reason_key)
    assert reason["source"]["key"] == key
    assert reason["quarantine_key_shortened"] == (case == "longest")
    if case != "longest":
        assert copy_key == "quarantine/" + key.removeprefix("incoming/")


def test_a_key_too_long_for_quarantine_is_cut_deterministically_and_kept_apart():
    from mlops_shared.quarantine import REASON_SUFFIX, quarantine_key

    first, second = _key_of_bytes("incoming/a/", 1024), _key_of_bytes("incoming/a/", 1023)
    cut_first, cut_second = quarantine_key(first), quarantine_key(second)
    assert cut_first == quarantine_key(first) and cut_first != cut_second
    for cut in (cut_first, cut_second):
        assert cut.startswith("quarantine/a/ää") and cut.endswith(".csv")
        assert len((cut + REASON_SUFFIX).encode()) <= 1024
        cut.encode().decode("utf-8")  # cut between characters, never inside one
    assert quarantine_key("incoming/a/b.csv") == "quarantine/a/b.csv"


def test_the_event_etag_tells_apart_two_spellings_of_one_encoded_key(stack: Stack):
    stack.s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Suspended"})
    stack.s3.put_object(Bucket=DATA_BUCKET, Key="incoming/a+b.csv", Body=b"not the uploaded file")
    event = stack.upload("incoming/a b.csv", VALID_CSV, event_file="s3_object_created_unversioned.json")
    event["detail"]["object"]["key"] = "incoming/a+b.csv"  # how S3 encodes "a b.csv"
    result = stack.invoke(event)
    assert result["status"] == "started", result
    assert stack.parameters(result["execution_arn"])["InputDataUri"] == f"s3://{DATA_BUCKET}/incoming/a b.csv"


def test_a_target_name_no_job_can_take_is_refused_before_the_run(stack: Stack):
    target = "P" * 300
    result = stack.invoke(stack.upload("incoming/houses.csv", to_csv([target] + HEADER[1:], house_rows(150)),
                                       target=target))
    assert result["status"] == "quarantined" and result["reason"] == "unusable_target_name"
    assert "300 characters" in result["message"] and "at most 256" in result["fix"]
    assert stack.executions() == []


def test_display_names_and_descriptions_take_any_key():
    from datetime import datetime, timezone

    from mlops_shared.intake import execution_display_name, single_line

    when = datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc)
    assert execution_display_name("incoming/Häuser & Preise, 'Q1'.csv", when) == "Hauser-Preise-Q1-20240501-123045"
    assert execution_display_name("incoming/日本.csv", when) == "dataset-20240501-123045"
    assert single_line("s3://b/incoming/a\nb\u2028c.csv") == "s3://b/incoming/a\\nb\\u2028c.csv"


def test_a_message_quoting_huge_column_names_is_cut_in_the_notice_not_in_the_reason(stack: Stack):
    names = [f"{'C' * 60_000}{i}" for i in range(3)]
    body = to_csv(HEADER + names, [r + ["text"] * 3 for r in house_rows(150)])
    result = stack.invoke(stack.upload("incoming/wide.csv", body))
    assert result["status"] == "quarantined" and result["reason"] == "non_numeric_value"
    assert len(result["message"]) <= 4000
    reason = stack.read_json("quarantine/wide.csv.reason.json")
    assert len(reason["message"]) > 180_000
    [notification] = stack.notifications()
    assert len(notification["Message"]) < 10_000


def test_max_rejected_rows_comes_from_what_the_run_is_sent():
    from dataclasses import replace

    from mlops_shared.config import ConfigurationError, StartPipelineSettings

    settings = StartPipelineSettings("p", "d", "a", "t", "PRICE", "fs")
    assert settings.max_rejected_rows == 0
    # `mlops pipeline run --parameter MaxRejectedRows=7` rides on the stack parameters.
    assert replace(settings, stack_parameters={"MaxRejectedRows": "7"}).max_rejected_rows == 7
    for wrong in ("seven", "-1"):
        with pytest.raises(ConfigurationError, match="MaxRejectedRows"):
            replace(settings, stack_parameters={"MaxRejectedRows": wrong}).max_rejected_rows
