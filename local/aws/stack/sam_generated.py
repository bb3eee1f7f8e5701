"""What SAM adds to the stack that the local face must honour, taken from SAM's own translator.

`sam deploy` turns each `AWS::Serverless::*` resource into CloudFormation resources. Most of them the
local runtime provides itself (functions, state machines, APIs), but two kinds decide what may
happen and must be exactly what AWS creates: the **IAM roles** SAM generates (a function's role
with `AWSLambdaBasicExecutionRole`, X-Ray, the dead-letter queue statement, the expanded policy
templates such as `DynamoDBCrudPolicy` and the template's own statements; a state machine's role;
the role an EventBridge rule uses to start a state machine) and the **Lambda permissions** (the
resource policies that let EventBridge and API Gateway invoke a function). They are translated by
aws-sam-translator, the library `sam` itself uses, from a copy of the template (code locations
replaced by placeholder S3 URIs, as `sam package` would), so no rule of SAM is re-implemented here.
"""
from __future__ import annotations

import copy
import os
from typing import Any

GENERATED_TYPES = ("AWS::IAM::Role", "AWS::Lambda::Permission")
_CODE_LOCATIONS = ("CodeUri", "ContentUri", "DefinitionUri")


class _NoManagedPolicyNames:
    """SAM resolves managed policy *names* in `Policies` through IAM; the template uses none."""

    def load(self) -> dict:
        return {}


def sam_generated_resources(template: dict, parameters: dict[str, Any], region: str) -> dict[str, dict]:
    """Logical id -> CloudFormation definition of the roles and Lambda permissions SAM adds."""
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(template)
    for name, resource in (sam.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        for key in _CODE_LOCATIONS:
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://local-packaged-artifacts/{name}.zip"
    values = {name: (",".join(value) if isinstance(value, list) else value) for name, value in parameters.items()}
    previous = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region  # the translator asks boto3 for the region
    try:
        translated = transform(sam, values, _NoManagedPolicyNames())
    finally:
        if previous is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous
    declared = set(template.get("Resources") or {})
    return {logical_id: definition for logical_id, definition in translated["Resources"].items()
            if logical_id not in declared and definition.get("Type") in GENERATED_TYPES}
