"""Deploy state machine: decide create / update / wait / skip, and whether to wait for the endpoint lock.

Input, holding the endpoint lock: `{"event": <the state: EventBridge event, previous plan, created>,
"execution_name": "...", "execution_started": "<$$.Execution.StartTime>"}`. Output: the plan
(`mlops_shared.deployment.plan_deployment`) with `data_capture`, the endpoint config's DataCaptureConfig.

Input when another execution holds the lock: `{"request": "lock", "lock": <GetItem of the lock item>,
"execution_id": "...", "execution_started": "..."}`. Output: `acquire`, `take_over` or `wait`
(`mlops_shared.deployment.decide_lock_wait`).

Both raise `EndpointBusy` once the execution has waited longer than the budget the settings allow.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from mlops_shared.environment import ConfigurationError, int_env, required_env
from mlops_shared.deployment import DeploymentSettings, decide_lock_wait, parse_time, plan_deployment

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
settings = DeploymentSettings.from_env(os.environ)


def data_capture_config(environ) -> dict[str, Any]:
    """The endpoint config's DataCaptureConfig (docs/monitoring.md): requests and responses, sampled
    at DATA_CAPTURE_SAMPLING_PERCENTAGE (0 turns capture off), to DATA_CAPTURE_DESTINATION in
    SageMaker's JSON Lines format; CSV and JSON bodies kept as text, not base64. Every other content
    type, `application/x-npy` among them, is base64 (`BASE64`): right for a binary .npy body, which
    the drift monitor decodes and reads with the endpoint's own parser."""
    percentage = int_env(environ, "DATA_CAPTURE_SAMPLING_PERCENTAGE", 100)
    if percentage > 100:
        raise ConfigurationError(f"DATA_CAPTURE_SAMPLING_PERCENTAGE must be at most 100, got {percentage}")
    destination = required_env(environ, "DATA_CAPTURE_DESTINATION")
    if not destination.startswith("s3://"):
        raise ConfigurationError(f"DATA_CAPTURE_DESTINATION must be an s3:// URI, got {destination!r}")
    config: dict[str, Any] = {
        "EnableCapture": percentage > 0,
        "InitialSamplingPercentage": percentage,
        "DestinationS3Uri": destination,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv", "application/csv"],
                                     "JsonContentTypes": ["application/json"]},
    }
    kms_key = environ.get("DATA_CAPTURE_KMS_KEY_ID", "").strip()
    if kms_key:
        config["KmsKeyId"] = kms_key
    return config


capture_config = data_capture_config(os.environ)


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    started = parse_time(event.get("execution_started"))
    if event.get("request") == "lock":
        decision = decide_lock_wait(event.get("lock"), event.get("execution_id", ""), settings, started, now)
        logger.info("endpoint lock decision", extra=decision)
        return decision
    plan = plan_deployment(event["event"], event.get("execution_name", ""), settings, started_at=started, now=now)
    plan["data_capture"] = capture_config  # CreateEndpointConfig's DataCaptureConfig
    logger.info("deployment planned", extra={"action": plan["action"], "reason": plan["reason"],
                                              "model_package_arn": plan.get("model_package_arn")})
    return plan
