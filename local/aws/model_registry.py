"""The SageMaker Model Registry's events: moto stores model packages but emits no event.

`ModelPackageEvents` routes `SageMaker.CreateModelPackage` and `SageMaker.UpdateModelPackage` to
moto, then puts the "SageMaker Model Package State Change" event AWS would emit on the default bus
(moto accepts `aws.*` sources from `put_events`), built from `DescribeModelPackage` as AWS builds it.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from local.aws.eventbridge import local_client
from local.aws.gateway import request_json

log = logging.getLogger(__name__)

MODEL_PACKAGE_DETAIL_TYPE = "SageMaker Model Package State Change"


def _epoch_ms(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return _epoch_ms(value)


def model_package_event_detail(description: dict) -> dict:
    """The event `detail` AWS emits, from a `DescribeModelPackage` response."""
    detail = {k: v for k, v in description.items() if k != "ResponseMetadata"}
    return _jsonable(detail)


class ModelPackageEvents:
    """Routes model-package writes through moto, then emits the state-change event AWS would."""

    def __init__(self, gateway, endpoint_url: str | None = None, credentials=None):
        self.gateway = gateway
        self.credentials = credentials  # SageMaker describing its own packages: the local runtime
        self.endpoint_url = endpoint_url or gateway.url
        self.emitted: list[dict] = []

    def install(self) -> None:
        self.gateway.route_target("SageMaker.CreateModelPackage", self.handle)
        self.gateway.route_target("SageMaker.UpdateModelPackage", self.handle)

    def handle(self, environ: dict, start_response):
        response = self.gateway.call_moto(environ, self._keeping_metadata(environ))
        if response.status_code < 300:
            body = response.json()
            arn = body.get("ModelPackageArn") or request_json(environ).get("ModelPackageArn")
            if arn:
                try:
                    self.emit(arn)
                except Exception:  # the write succeeded; a lost event must be visible, not a failed call
                    log.exception("could not emit the model package event for %s", arn)
        start_response(f"{response.status_code} {'OK' if response.status_code < 400 else 'Error'}", response.headers)
        return [response.body]

    def _keeping_metadata(self, environ: dict) -> bytes | None:
        """UpdateModelPackage without CustomerMetadataProperties leaves a package's metadata as it
        is on AWS; moto replaces it with nothing (an approval would erase `dataset_reference`). The
        request moto gets carries the current metadata then; None leaves the request as sent."""
        if environ.get("HTTP_X_AMZ_TARGET") != "SageMaker.UpdateModelPackage":
            return None
        request = request_json(environ)
        if "CustomerMetadataProperties" in request or not request.get("ModelPackageArn"):
            return None
        sagemaker = local_client("sagemaker", self.endpoint_url, self.credentials)
        try:
            current = sagemaker.describe_model_package(ModelPackageName=request["ModelPackageArn"])
        except Exception:  # moto answers the update itself (its not-found error included)
            return None
        kept = dict(current.get("CustomerMetadataProperties") or {})
        for key in request.get("CustomerMetadataPropertiesToRemove") or []:
            kept.pop(key, None)
        if not kept:
            return None
        return json.dumps({**request, "CustomerMetadataProperties": kept,
                           "CustomerMetadataPropertiesToRemove": []}).encode()

    def emit(self, model_package_arn: str) -> dict:
        sagemaker = local_client("sagemaker", self.endpoint_url, self.credentials)
        description = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
        detail = model_package_event_detail(description)
        entry = {
            "Source": "aws.sagemaker",
            "DetailType": MODEL_PACKAGE_DETAIL_TYPE,
            "Resources": [model_package_arn],
            "Detail": json.dumps(detail, default=str),
        }
        result = local_client("events", self.endpoint_url, self.credentials).put_events(Entries=[entry])
        if result.get("FailedEntryCount"):
            raise RuntimeError(f"put_events rejected the model package event: {result['Entries']}")
        self.emitted.append(detail)
        log.info("emitted %s for %s (%s)", MODEL_PACKAGE_DETAIL_TYPE, model_package_arn,
                 detail.get("ModelApprovalStatus"))
        return detail
