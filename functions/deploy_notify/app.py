"""Deploy state machine: tell people how a deployment ended (SNS topic `NOTIFICATION_TOPIC_ARN`).

Input: `{"outcome": "deployed" | "failed" | "rolled_back" | "skipped", "plan": {...},
"error": {"Error", "Cause"} | null, "smoke": {...} | null}`.
"""
from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops_shared.deployment import deployment_notification, endpoint_failure_reason
from mlops_shared.notifications import publish

logger = Logger()
TOPIC_ARN = os.environ.get("NOTIFICATION_TOPIC_ARN", "")


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reason = None
    if event.get("outcome") in ("failed", "rolled_back"):
        reason = endpoint_failure_reason((event.get("plan") or {}).get("endpoint_name"))
    notification = deployment_notification(event, reason)
    message_id = publish(notification, TOPIC_ARN) if TOPIC_ARN else None
    logger.info("deployment outcome", extra={"event_type": notification.event_type, "subject": notification.subject})
    return {"event_type": notification.event_type, "subject": notification.subject, "message_id": message_id}
