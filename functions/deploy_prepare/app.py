"""Deploy state machine: decide create / update / wait / skip, and whether to wait for the endpoint lock.

Input, holding the endpoint lock: `{"event": <the state: EventBridge event, previous plan, created>,
"execution_name": "...", "execution_started": "<$$.Execution.StartTime>"}`. Output: the plan
(`mlops_shared.deployment.plan_deployment`).

Input when another execution holds the lock: `{"request": "lock", "lock": <GetItem of the lock item>,
"execution_id": "...", "execution_started": "..."}`. Output: `acquire`, `take_over` or `wait`
(`mlops_shared.deployment.decide_lock_wait`).

Both raise `EndpointBusy` once the execution has waited longer than the budget the settings allow.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mlops_shared.deployment import DeploymentSettings, decide_lock_wait, parse_time, plan_deployment

logger = Logger()
settings = DeploymentSettings.from_env(os.environ)


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    started = parse_time(event.get("execution_started"))
    if event.get("request") == "lock":
        decision = decide_lock_wait(event.get("lock"), event.get("execution_id", ""), settings, started, now)
        logger.info("endpoint lock decision", extra=decision)
        return decision
    plan = plan_deployment(event["event"], event.get("execution_name", ""), settings, started_at=started, now=now)
    logger.info("deployment planned", extra={"action": plan["action"], "reason": plan["reason"],
                                              "model_package_arn": plan.get("model_package_arn")})
    return plan
