"""The ONE definition of "the serving package": which registered model answers for this stack now.

Batch scoring scores with it, and retraining on drift reads the dataset it was trained on from it.

1. The endpoint exists and is being updated (blue/green with a canary, or all at once): the package
   the endpoint is MOVING TO (`PendingDeploymentSummary.EndpointConfigName`). A batch started now
   finishes after the update in the normal case, and a rolled-back update is rare and visible
   (the manifest names the package used).
2. The endpoint exists: the package behind its current endpoint config (endpoint -> config ->
   model -> `ModelPackageName`), read from the endpoint itself like the deployment does, so it is
   the truth even after a hand-made change.
3. No endpoint, a Failed one, or one whose model was not made from a package of the registry: the
   newest Approved package of our group (`mlops_shared.champion`).
4. None of these: None (nothing is approved yet).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from mlops_shared.aws import is_not_found
from mlops_shared.champion import champion_summary

FROM_ENDPOINT = "endpoint"
FROM_ENDPOINT_UPDATE = "endpoint-update"  # the package an in-progress update moves the endpoint to
FROM_NEWEST_APPROVED = "newest-approved"


@dataclass(frozen=True)
class ServingPackage:
    model_package_arn: str
    model_package_version: int
    model_package_group: str
    model_data_url: str
    image_uri: str
    approval_status: str
    source: str  # FROM_ENDPOINT | FROM_ENDPOINT_UPDATE | FROM_NEWEST_APPROVED
    endpoint_name: str | None
    # The registry's customer metadata of the package (dataset_uri, ... written by RegisterModel).
    metadata: dict[str, str]

    @property
    def dataset_uri(self) -> str | None:
        """The dataset the package was trained on, as RegisterModel recorded it."""
        return self.metadata.get("dataset_uri") or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _package_of_config(config_name: str, sagemaker: Any) -> str | None:
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    except ClientError as exc:
        if is_not_found(exc) or exc.response.get("Error", {}).get("Code") == "ValidationException":
            return None
        raise
    containers = [model.get("PrimaryContainer") or {}] + list(model.get("Containers") or [])
    return next((c["ModelPackageName"] for c in containers if c.get("ModelPackageName")), None)


def _endpoint_package(endpoint_name: str, sagemaker: Any) -> tuple[str, str] | None:
    """(package ARN, source) the endpoint serves or moves to, or None."""
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        if is_not_found(exc) or exc.response.get("Error", {}).get("Code") == "ValidationException":
            return None  # SageMaker answers ValidationException "Could not find endpoint"
        raise
    if endpoint.get("EndpointStatus") == "Failed":
        return None  # a Failed endpoint serves nothing
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    if pending:
        arn = _package_of_config(pending, sagemaker)
        if arn:
            return arn, FROM_ENDPOINT_UPDATE
    arn = _package_of_config(endpoint["EndpointConfigName"], sagemaker)
    return (arn, FROM_ENDPOINT) if arn else None


def serving_package(group: str, endpoint_name: str | None, sagemaker: Any = None) -> ServingPackage | None:
    """The serving package of the stack (module docstring), or None when there is none."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    found = _endpoint_package(endpoint_name, sagemaker) if endpoint_name else None
    if found is None:
        summary = champion_summary(group, sagemaker=sagemaker)
        if summary is None:
            return None
        found = (summary["ModelPackageArn"], FROM_NEWEST_APPROVED)
    arn, source = found
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    container = (package.get("InferenceSpecification") or {}).get("Containers", [{}])[0]
    return ServingPackage(
        model_package_arn=package["ModelPackageArn"],
        model_package_version=int(package.get("ModelPackageVersion") or 0),
        model_package_group=package.get("ModelPackageGroupName") or group,
        model_data_url=container.get("ModelDataUrl", ""),
        image_uri=container.get("Image", ""),
        approval_status=package.get("ModelApprovalStatus", ""),
        source=source,
        endpoint_name=endpoint_name if source != FROM_NEWEST_APPROVED else None,
        metadata=dict(package.get("CustomerMetadataProperties") or {}),
    )
