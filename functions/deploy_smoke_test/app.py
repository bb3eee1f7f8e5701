"""Deploy state machine: smoke-test the endpoint with rows of the package's test split.

Input: `{"endpoint_name": "...", "model_package_arn": "..."}`. Returns the measured result; raises
`SmokeTestFailed` (the state machine catches it and cleans up or rolls back).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from mlops_shared.smoke_test import run_smoke_test

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = run_smoke_test(event["endpoint_name"], event["model_package_arn"]).as_dict()
    logger.info("smoke test passed", extra=result)
    return result
