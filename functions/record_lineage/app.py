"""EventBridge "SageMaker Model Package State Change" (a package of our group registered, pending
approval) -> record what produced it through SageMaker's lineage API.

Thin handler: the entities and associations are written by ``mlops_shared.lineage``; recording is
idempotent, so EventBridge's and Lambda's retries (and a replay from the dead-letter queue) give
the same graph.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Tracer

from mlops_shared.observability import TRACED_MODULES
from mlops_shared.lineage import record_package_lineage

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
GROUP = os.environ.get("MODEL_PACKAGE_GROUP_NAME", "")


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The plain event, not Powertools' EventBridgeEvent: importing its data classes loads every event
    # type Powertools knows (tens of modules) at cold start to read one field.
    detail = event["detail"]
    arn, group = detail.get("ModelPackageArn"), detail.get("ModelPackageGroupName")
    logger.append_keys(model_package_arn=arn)
    # The rule already filters on the group; checking again keeps a misrouted event harmless.
    if not arn or (GROUP and group != GROUP):
        logger.info("event ignored", extra={"group": group})
        return {"recorded": False, "reason": "not a package of this group"}
    recorded = record_package_lineage(boto3.client("sagemaker"), boto3.client("s3"), arn)
    logger.info("lineage recorded", extra=recorded.to_json())
    return {"recorded": True, **recorded.to_json()}
