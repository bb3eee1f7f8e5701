"""EventBridge "Object Created" in incoming/*.csv -> validate the CSV -> quarantine it or start training.

Thin handler: the decision lives in ``mlops_shared.intake``. Processing is idempotent on the dataset
identity (bucket, key, version id or ETag), so redelivered or duplicated events start one execution
and return the same result.
"""
from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent, event_source
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops_shared.config import StartPipelineSettings
from mlops_shared.intake import DatasetRef, normalize_version_id, process_dataset

logger = Logger()
tracer = Tracer()
metrics = Metrics()

settings = StartPipelineSettings.from_env()
persistence_store = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
# Only the identity is hashed; the rest of the reference (size, event time) rides along unhashed.
# A week covers every redelivery EventBridge makes (at most 24 h of retries).
idempotency_config = IdempotencyConfig(
    event_key_jmespath="[bucket, key, version]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=7 * 24 * 3600,
)


@idempotent_function(
    data_keyword_argument="dataset",
    persistence_store=persistence_store,
    config=idempotency_config,
    key_prefix="start-pipeline",
)
def process_once(dataset: dict[str, Any]) -> dict[str, Any]:
    return process_dataset(DatasetRef.from_dict(dataset), settings)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=S3EventBridgeNotificationEvent)
def lambda_handler(event: S3EventBridgeNotificationEvent, context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    detail = event.detail
    # The raw key (not the URL-decoded property): keys may legitimately contain "+" or "%", and
    # the logic tries the decoded form only when the raw one does not exist.
    dataset = DatasetRef(
        bucket=detail.bucket.name,
        key=detail.object["key"],
        version_id=normalize_version_id(detail.object.get("version-id")),
        etag=detail.object.get("etag") or detail.object.get("eTag") or None,
        size=detail.object.size,
        sequencer=detail.object.get("sequencer"),
        event_time=event.time,
    )
    logger.append_keys(dataset=dataset.s3_uri, dataset_version=dataset.version)
    result = process_once(dataset=dataset.to_dict())

    logger.info("dataset processed", extra={"result": result})
    metric = {"started": "PipelineExecutionsStarted", "quarantined": "DatasetsQuarantined"}.get(
        result["status"], "UploadsIgnored"
    )
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if result["status"] == "quarantined":
        metrics.add_metadata(key="reason", value=result["reason"])
    return result
