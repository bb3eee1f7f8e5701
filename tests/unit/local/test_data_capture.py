"""The capture writer of local endpoints (local/aws/data_capture.py) against a fake S3 client:
SageMaker's record format and layout, sampling, options, encodings, batching, failures."""
from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime, timezone

import pytest

from local.aws.data_capture import CaptureSettings, DataCapture, capture_record

CONFIG = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": "s3://artifacts/capture",
          "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
          "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}}
ROLE = "arn:aws:iam::123456789012:role/model"


class FakeS3:
    """Records put_object calls; `fail` makes the next calls raise."""

    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.fail = False
        self.lock = threading.Lock()

    def put_object(self, **kwargs):
        if self.fail:
            raise ConnectionError("S3 is unreachable")
        with self.lock:
            self.objects[kwargs["Key"]] = kwargs

    def records(self) -> list[dict]:
        return [json.loads(line) for key in sorted(self.objects)
                for line in self.objects[key]["Body"].decode().splitlines()]


@pytest.fixture
def s3():
    return FakeS3()


@pytest.fixture
def capture(s3, tmp_path):
    roles = []

    def s3_for_role(role):
        roles.append(role)
        return s3

    writer = DataCapture(s3_for_role, tmp_path / "spill", max_file_seconds=60)
    writer.roles = roles
    yield writer
    writer.close()


def settings(**changes) -> CaptureSettings:
    return CaptureSettings.from_config("houses", {**CONFIG, **changes}, ROLE)


def test_records_are_sagemakers_format_in_sagemakers_layout(capture, s3):
    capture.record(settings(), "AllTraffic", "application/json", b'{"DECK": 1}', "application/json", b'{"predictions": [1.5]}')
    capture.record(settings(), "AllTraffic", "text/csv; charset=utf-8", b"1,2\n", "application/json", b'{"predictions": [2.5]}')
    capture.flush()
    [(key, put)] = s3.objects.items()
    assert put["Bucket"] == "artifacts" and "ServerSideEncryption" not in put
    now = datetime.now(timezone.utc)
    assert key.startswith(f"capture/houses/AllTraffic/{now:%Y/%m/%d/%H}/") and key.endswith(".jsonl")
    first, second = s3.records()
    assert first["eventVersion"] == "0" and set(first) == {"captureData", "eventMetadata", "eventVersion"}
    assert first["captureData"]["endpointInput"] == {"observedContentType": "application/json", "mode": "INPUT",
                                                     "data": '{"DECK": 1}', "encoding": "JSON"}
    assert first["captureData"]["endpointOutput"] == {"observedContentType": "application/json", "mode": "OUTPUT",
                                                      "data": '{"predictions": [1.5]}', "encoding": "JSON"}
    assert second["captureData"]["endpointInput"]["encoding"] == "CSV"
    assert second["captureData"]["endpointInput"]["data"] == "1,2\n"
    assert first["eventMetadata"]["eventId"] != second["eventMetadata"]["eventId"]
    datetime.strptime(first["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert capture.roles == [ROLE]  # written with the model's execution role


def test_without_content_type_headers_bodies_are_base64_and_options_select_the_sides():
    when = datetime(2026, 12, 1, 22, 5, 7, tzinfo=timezone.utc)
    plain = CaptureSettings.from_config("houses", {k: v for k, v in CONFIG.items() if k != "CaptureContentTypeHeader"}, ROLE)
    record = capture_record(plain, when, "text/csv", b"1,2", "application/json", b"{}")
    assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert base64.b64decode(record["captureData"]["endpointInput"]["data"]) == b"1,2"
    assert record["eventMetadata"]["inferenceTime"] == "2026-12-01T22:05:07Z"
    input_only = settings(CaptureOptions=[{"CaptureMode": "Input"}])
    assert list(capture_record(input_only, when, "text/csv", b"1", "application/json", b"{}")["captureData"]) == ["endpointInput"]
    # A body that claims to be text but is not UTF-8 is kept byte for byte.
    odd = capture_record(settings(), when, "text/csv", b"\xff\xfe", "application/json", b"{}")
    assert odd["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert settings().folder("AllTraffic", when) == "capture/houses/AllTraffic/2026/12/01/22"


def test_disabled_or_empty_configs_capture_nothing():
    assert CaptureSettings.from_config("houses", None, ROLE) is None
    assert CaptureSettings.from_config("houses", {**CONFIG, "EnableCapture": False}, ROLE) is None
    with pytest.raises(ValueError, match="s3://"):
        CaptureSettings.from_config("houses", {**CONFIG, "DestinationS3Uri": "https://example.com/x"}, ROLE)


def test_sampling_percentage_is_honoured(capture, s3):
    for _ in range(2000):
        capture.record(settings(InitialSamplingPercentage=20), "AllTraffic", "text/csv", b"1", "application/json", b"{}")
    for _ in range(50):
        capture.record(settings(InitialSamplingPercentage=0), "AllTraffic", "text/csv", b"1", "application/json", b"{}")
    capture.flush()
    assert 300 < len(s3.records()) < 500  # 400 expected; the bounds are > 5 standard deviations wide


def test_kms_key_asks_for_sse_kms(capture, s3):
    capture.record(settings(KmsKeyId="alias/capture"), "AllTraffic", "text/csv", b"1", "application/json", b"{}")
    capture.flush()
    [put] = s3.objects.values()
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == "alias/capture"


def test_files_are_cut_by_size_and_age(s3, tmp_path):
    writer = DataCapture(lambda role: s3, tmp_path / "spill", max_file_bytes=2000, max_file_seconds=0.3)
    try:
        for _ in range(30):  # ~300 bytes a record: several files by size alone
            writer.record(settings(), "AllTraffic", "text/csv", b"1" * 100, "application/json", b"{}")
        deadline = time.monotonic() + 5
        while len(s3.records()) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)  # the last, small file is written once it is 0.3 s old, without a flush
        assert len(s3.records()) == 30
        assert len(s3.objects) >= 4
        assert all(len(put["Body"]) < 2000 + 400 for put in s3.objects.values())
    finally:
        writer.close()


def test_the_request_thread_does_not_wait_for_s3(capture, s3):
    slow = threading.Event()
    original = s3.put_object
    s3.put_object = lambda **kwargs: (slow.wait(5), original(**kwargs))
    started = time.perf_counter()
    for _ in range(100):
        capture.record(settings(), "AllTraffic", "text/csv", b"1", "application/json", b"{}")
    assert time.perf_counter() - started < 0.5
    slow.set()
    capture.flush()
    assert len(s3.records()) == 100


def test_a_failed_write_is_retried_and_nothing_is_lost_at_shutdown(s3, tmp_path):
    writer = DataCapture(lambda role: s3, tmp_path / "spill", max_file_seconds=60)
    s3.fail = True
    writer.record(settings(), "AllTraffic", "text/csv", b"1", "application/json", b"{}")
    with pytest.raises(RuntimeError, match="could not be written"):
        writer.flush()
    s3.fail = False
    writer.flush()  # the kept batch goes out with the next flush
    assert len(s3.records()) == 1
    s3.fail = True
    writer.record(settings(), "AllTraffic", "text/csv", b"2", "application/json", b"{}")
    writer.close()  # S3 still refuses: the record is kept on local disk
    [spilled] = list((tmp_path / "spill").rglob("*.jsonl"))
    assert json.loads(spilled.read_text())["captureData"]["endpointInput"]["data"] == "2"
    assert "capture/houses/AllTraffic" in spilled.as_posix()


def test_close_writes_what_is_buffered(s3, tmp_path):
    writer = DataCapture(lambda role: s3, tmp_path / "spill", max_file_seconds=60)
    for _ in range(5):
        writer.record(settings(), "AllTraffic", "text/csv", b"1", "application/json", b"{}")
    writer.close()
    assert len(s3.records()) == 5
    writer.record(settings(), "AllTraffic", "text/csv", b"1", "application/json", b"{}")  # after close: ignored
    assert len(s3.records()) == 5


def test_the_strict_face_checks_what_capture_and_explanations_send():
    """botocore's constraints, as the strict face applies them: the capture config the deploy
    state machine sends, and CustomAttributes (at most 1024 ASCII characters)."""
    from local.aws.strict.service_constraints import check

    config = {**CONFIG, "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv", "application/csv"],
                                                      "JsonContentTypes": ["application/json"]}}
    assert check("sagemaker", "CreateEndpointConfig", {
        "EndpointConfigName": "houses-1", "DataCaptureConfig": config,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1,
                                "InstanceType": "ml.m5.large"}]}) == []
    invoke = {"EndpointName": "houses", "Body": b"1,2", "ContentType": "text/csv"}
    assert check("sagemaker-runtime", "InvokeEndpoint", {**invoke, "CustomAttributes": "explain=true"}) == []
    assert check("sagemaker-runtime", "InvokeEndpoint", {**invoke, "CustomAttributes": "x" * 1025})
    assert check("sagemaker-runtime", "InvokeEndpoint", {**invoke, "CustomAttributes": "explain=trüe"})
