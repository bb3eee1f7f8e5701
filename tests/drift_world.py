"""What the drift monitor's tests set up: a training split and its baseline, a registered package with
that baseline serving behind an endpoint, and SageMaker-format data capture files of its traffic
(the layout and record format of docs/monitoring.md / the shared contract)."""
from __future__ import annotations

import base64
import datetime as dt
import io
import json
import uuid
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from jobs import baseline

FEATURES = ["YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS", "NUM_BATHROOMS", "LOT_ACRES", "GARAGE_SPACES",
            "FRONT_PORCH", "DECK"]
TARGET = "PRICE"


def housing(rows: int, seed: int, *, square_feet_shift: float = 0.0) -> pd.DataFrame:
    """Rows of the reference sample (`mlops local datagen`), SQUARE_FEET moved by `square_feet_shift`."""
    from local.cli.datagen import generate_housing

    frame = generate_housing(rows, seed)
    frame["SQUARE_FEET"] = frame["SQUARE_FEET"] + square_feet_shift
    return frame[[TARGET, *FEATURES]]


def baseline_document(train: pd.DataFrame) -> dict[str, Any]:
    return baseline.baseline_statistics(train, [*FEATURES, TARGET], TARGET, dataset_version="test")


def capture_record(rows: pd.DataFrame, when: dt.datetime, *, content_type: str = "application/json",
                   encoding: str | None = None) -> dict[str, Any]:
    """One SageMaker data-capture record of a request holding `rows` (JSON records, headed CSV, or a
    .npy array of its columns in their order, which SageMaker always stores as BASE64)."""
    if content_type == "application/x-npy":
        buffer = io.BytesIO()
        np.save(buffer, rows.to_numpy(dtype=float), allow_pickle=False)
        body = buffer.getvalue()
        encoding = "BASE64"
    elif content_type == "text/csv":
        body = rows.to_csv(index=False).encode()
    else:
        body = json.dumps({"instances": json.loads(rows.to_json(orient="records"))}).encode()
    encoding = encoding or ("CSV" if content_type == "text/csv" else "JSON")
    data = base64.b64encode(body).decode() if encoding == "BASE64" else body.decode()
    return {
        "captureData": {
            "endpointInput": {"observedContentType": content_type, "mode": "INPUT", "data": data, "encoding": encoding},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": json.dumps({"predictions": [0.0] * len(rows)}), "encoding": "JSON"},
        },
        "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "eventVersion": "0",
    }


def write_capture(s3, bucket: str, endpoint: str, variant: str, records: Sequence[dict[str, Any]],
                  when: dt.datetime, prefix: str = "capture") -> str:
    """One capture file at SageMaker's key for `when`; returns its key."""
    key = f"{prefix}/{endpoint}/{variant}/{when:%Y/%m/%d/%H}/{when:%M-%S}-{uuid.uuid4().hex[:8]}.jsonl"
    body = "\n".join(json.dumps(r) for r in records) + "\n"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    return key


def traffic_records(frame: pd.DataFrame, start: dt.datetime, per_request: int = 20,
                    content_types: Iterable[str] = ("application/json", "text/csv")) -> list[dict[str, Any]]:
    """The frame as requests of `per_request` rows, a second apart, cycling through `content_types`."""
    kinds = list(content_types)
    records = []
    for number, first in enumerate(range(0, len(frame), per_request)):
        chunk = frame.iloc[first:first + per_request][FEATURES]
        records.append(capture_record(chunk, start + dt.timedelta(seconds=number),
                                      content_type=kinds[number % len(kinds)]))
    return records


def serve_package(sagemaker, s3, *, bucket: str, group: str, endpoint: str, baseline_uri: str | None,
                  image: str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:test") -> str:
    """A registered package (with `baseline_uri` as its drift baseline) behind an InService endpoint,
    as the deploy state machine leaves it; returns the package ARN."""
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    s3.put_object(Bucket=bucket, Key="models/model.tar.gz", Body=b"not read by the monitor")
    request = {
        "ModelPackageGroupName": group,
        "ModelApprovalStatus": "Approved",
        "InferenceSpecification": {
            "Containers": [{"Image": image, "ModelDataUrl": f"s3://{bucket}/models/model.tar.gz"}],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    }
    if baseline_uri:
        request["DriftCheckBaselines"] = {
            "ModelDataQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": baseline_uri}}}
    arn = sagemaker.create_model_package(**request)["ModelPackageArn"]
    role = "arn:aws:iam::123456789012:role/model"
    sagemaker.create_model(ModelName=f"{endpoint}-model", ExecutionRoleArn=role,
                           PrimaryContainer={"ModelPackageName": arn})
    sagemaker.create_endpoint_config(EndpointConfigName=f"{endpoint}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{endpoint}-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-config")
    return arn
