"""The champion of the model registry group: the one definition used by the Evaluate step (the
model a challenger must not be worse than) and by the deployment (what to redeploy when the serving
package is rejected).

The champion is the Approved package with the highest `ModelPackageVersion`. Versions are numbered
by the registry in registration order within a group, so they order packages exactly; creation
times can tie and are only a tie-breaker for safety.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import boto3
from botocore.exceptions import ClientError

from mlops_shared.aws import error_code, is_not_found

APPROVED = "Approved"


def champion_summary(group: str, *, exclude: Collection[str] = (), sagemaker: Any = None) -> dict | None:
    """The ListModelPackages summary of the champion of `group` (ignoring the package ARNs in
    `exclude`), or None when the group has no Approved package or does not exist."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    candidates = []
    try:
        for page in sagemaker.get_paginator("list_model_packages").paginate(
                ModelPackageGroupName=group, ModelApprovalStatus=APPROVED):
            candidates += [p for p in page.get("ModelPackageSummaryList", []) if p["ModelPackageArn"] not in exclude]
    except ClientError as err:
        # A group that does not exist yet has no champion (SageMaker: ValidationException).
        if is_not_found(err) or error_code(err) == "ValidationException":
            return None
        raise
    if not candidates:
        return None
    return max(candidates, key=lambda p: (int(p.get("ModelPackageVersion") or 0), str(p.get("CreationTime") or "")))


def champion_arn(group: str, *, exclude: Collection[str] = (), sagemaker: Any = None) -> str | None:
    summary = champion_summary(group, exclude=exclude, sagemaker=sagemaker)
    return summary["ModelPackageArn"] if summary else None
