"""Deploy state machine: tell people how a deployment ended (SNS topic `NOTIFICATION_TOPIC_ARN`).

Input: `{"outcome": "deployed" | "failed" | "rolled_back" | "skipped", "plan": {...},
"error": {"Error", "Cause"} | null, "smoke": {...} | null}`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import boto3

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from mlops_shared.deployment import deployment_notification, endpoint_failure_reason, outcome_metric
from mlops_shared.lineage import record_deployment
from mlops_shared.observability import metrics_namespace
from mlops_shared.notifications import publish

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics(namespace=metrics_namespace())
TOPIC_ARN = os.environ.get("NOTIFICATION_TOPIC_ARN", "")


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reason = None
    if event.get("outcome") in ("failed", "rolled_back"):
        reason = endpoint_failure_reason((event.get("plan") or {}).get("endpoint_name"))
    notification = deployment_notification(event, reason)
    message_id = publish(notification, TOPIC_ARN) if TOPIC_ARN else None
    metrics.add_metric(name=outcome_metric(event.get("outcome")), unit=MetricUnit.Count, value=1)
    logger.info("deployment outcome", extra={"event_type": notification.event_type, "subject": notification.subject})
    result = {"event_type": notification.event_type, "subject": notification.subject, "message_id": message_id}
    if event.get("outcome") == "deployed":
        result["lineage"] = _record_deployment(event.get("plan") or {})
    return result


def _record_deployment(plan: dict[str, Any]) -> dict[str, Any]:
    """The lineage of the deployment (package -> deployment -> endpoint). People were told already;
    a lineage the API refused is logged as an error, not turned into a failed deployment."""
    try:
        return record_deployment(boto3.client("sagemaker"), plan["endpoint_name"], plan["model_package_arn"],
                                 plan["model_name"]).to_json()
    except Exception as err:
        logger.exception("the deployment's lineage was not recorded")
        return {"error": f"{type(err).__name__}: {err}"}
