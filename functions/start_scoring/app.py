"""Batch scoring by drop, both ends (docs/scoring.md):

* EventBridge "Object Created" under score/*.csv -> check the file against the serving package
  (`mlops_shared.serving`) and start the scoring pipeline, or quarantine it under quarantine/score/.
* The scoring pipeline's "Pipeline Execution Status Change" (Succeeded/Failed/Stopped) -> one
  notification with the predictions URI and the model package version, or the reason.

One function for both: the same settings, role and topic; the logic lives in `mlops_shared.scoring`.
A drop is processed once per bucket/key/version (redelivered events start no second execution).
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Callable

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from mlops_shared.observability import TRACED_MODULES
from mlops_shared.dataset_version import normalize_version_id
from mlops_shared.scoring import ScoringDrop, ScoringSettings, client_request_token, notify_done, process_drop

if TYPE_CHECKING:  # annotations only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics()

settings = ScoringSettings.from_env(os.environ)
IDEMPOTENCY_TABLE = os.environ["IDEMPOTENCY_TABLE"]

# Powertools' idempotency (its utility, the DynamoDB store and client) is loaded and made on the first
# drop, once per container, not at import: only drops use it (the end-of-execution notifications,
# the other half of this function's invocations, never do), and the first DynamoDB client of a
# process (its service model, the endpoint rules) was most of this function's cold import.


@functools.cache
def idempotency_config() -> IdempotencyConfig:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    return IdempotencyConfig(event_key_jmespath="[bucket, key, version_id, etag]",
                             raise_on_no_idempotency_key=True, expires_after_seconds=7 * 24 * 3600)


@functools.cache
def persistence_store() -> DynamoDBPersistenceLayer:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    # On boto3's default session, which the S3 and SageMaker clients of the logic share.
    return DynamoDBPersistenceLayer(table_name=IDEMPOTENCY_TABLE, boto3_client=boto3.client("dynamodb"))


def process_drop_ref(drop: dict[str, Any]) -> dict[str, Any]:
    ref = ScoringDrop(**drop)
    return process_drop(ref, settings, client_request_token=client_request_token(ref))


@functools.cache
def process_once() -> Callable[..., dict[str, Any]]:
    """`process_drop_ref`, idempotent on the drop's identity (built with the store, on first use)."""
    from aws_lambda_powertools.utilities.idempotency import idempotent_function

    return idempotent_function(process_drop_ref, data_keyword_argument="drop", persistence_store=persistence_store(),
                               config=idempotency_config(), key_prefix="start-scoring")


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = event["detail"]
    if event.get("detail-type") == "SageMaker Model Building Pipeline Execution Status Change":
        result = notify_done(detail, settings)
        logger.info("scoring execution ended", extra={"result": result})
        if result["status"] == "notified":
            metrics.add_metric(name=f"ScoringExecutions{result['execution_status']}", unit=MetricUnit.Count, value=1)
        return result
    idempotency_config().register_lambda_context(context)
    s3_object = detail["object"]
    drop = ScoringDrop(bucket=detail["bucket"]["name"], key=s3_object["key"],
                       version_id=normalize_version_id(s3_object.get("version-id")),
                       etag=s3_object.get("etag") or None, size=int(s3_object["size"]))
    logger.append_keys(drop=drop.s3_uri)
    result = process_once()(drop=drop.__dict__.copy())
    logger.info("scoring drop processed", extra={"result": result})
    metrics.add_metric(name="ScoringExecutionsStarted" if result["status"] == "started" else "ScoringFilesQuarantined",
                       unit=MetricUnit.Count, value=1)
    return result
