"""Deploy state machine, step 1 after the idempotency record: decide create / update / skip.

Input: `{"event": <EventBridge model package state change>, "execution_name": "..."}`.
Output: the plan (`mlops_shared.deployment.plan_deployment`). Raises `DeploymentInProgress` while the
endpoint is busy with another change; the state machine retries that with backoff.
"""
from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops_shared.deployment import DeploymentSettings, plan_deployment

logger = Logger()
settings = DeploymentSettings.from_env(os.environ)


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    plan = plan_deployment(event["event"], event.get("execution_name", ""), settings)
    logger.info("deployment planned", extra={"action": plan["action"], "reason": plan["reason"],
                                              "model_package_arn": plan.get("model_package_arn")})
    return plan
