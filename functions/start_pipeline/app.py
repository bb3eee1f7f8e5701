"""EventBridge "Object Created" in incoming/*.csv -> validate the CSV -> quarantine it or start training.

Thin handler: the decision lives in ``mlops_shared.intake``. Processing is idempotent on the dataset
identity (bucket, key, version id or ETag), so redelivered or duplicated events start one execution
and return the same result.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from mlops_shared.config import StartPipelineSettings
from mlops_shared.observability import TRACED_MODULES
from mlops_shared.dataset_version import normalize_version_id
from mlops_shared.intake import DatasetRef, process_dataset

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()

settings = StartPipelineSettings.from_env()
# Every invocation checks the idempotency table, so its client is made here, once per container, at
# init (which Lambda may run before an invocation arrives; start_scoring, whose notifications never
# use the table, makes its store on the first drop instead). On boto3's default session (Powertools
# would open a session of its own): the S3 and SageMaker clients the logic makes use that session
# too, and share the endpoint and model data it has already loaded.
persistence_store = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"],
                                             boto3_client=boto3.client("dynamodb"))
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
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    # The plain EventBridge event, not Powertools' S3EventBridgeNotificationEvent: importing its data
    # classes loads every event type Powertools knows (tens of modules) at cold start to read six fields.
    detail = event["detail"]
    s3_object = detail["object"]
    # The raw key (not URL-decoded): keys may legitimately contain "+" or "%", and the logic tries
    # the decoded form only when the raw one does not exist.
    dataset = DatasetRef(
        bucket=detail["bucket"]["name"],
        key=s3_object["key"],
        version_id=normalize_version_id(s3_object.get("version-id")),
        etag=s3_object.get("etag") or s3_object.get("eTag") or None,
        size=int(s3_object["size"]),
        sequencer=s3_object.get("sequencer"),
        event_time=event["time"],
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
