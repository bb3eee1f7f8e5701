"""Local SageMaker endpoints: a real model server process per endpoint variant, behind the gateway.

moto keeps endpoint *bookkeeping* only (InService at once, `UpdateEndpoint` missing, canned
InvokeEndpoint). `LocalEndpoints.install()` routes these operations on the gateway:

* `SageMaker.CreateEndpoint`: moto records the endpoint, then a serving process (`python -m
  jobs.serve` in the jobs image's environment, `local.jobs_image`) is started in the background from the model artifact (endpoint config → model →
  `ModelDataUrl`, or its model package's container), downloaded from (local) S3 and extracted. The
  endpoint is `Creating` until `/ping` answers, then `InService`; a server that cannot start makes it
  `Failed` with the server's own reason as `FailureReason` (the processes: `local/endpoint_variants.py`).
* `SageMaker.UpdateEndpoint`: blue/green as SageMaker does it. The new variant's process must be
  up and healthy before it gets traffic; with `DeploymentConfig.BlueGreenUpdatePolicy` a canary
  share of requests goes to it for the (locally capped) bake time while recent requests are
  replayed to it; a server error there stands for the `AutoRollbackConfiguration` alarms firing.
  On success all traffic moves in one atomic switch and the old process is stopped once its
  in-flight requests have finished. On failure the old variant keeps serving, the endpoint returns
  to `InService` on its old config, and `FailureReason` says why (what AWS reports after a rollback).
  A canary larger than half the new variant's instances is refused, as SageMaker's
  `TrafficRoutingConfig.CanarySize` rule says (so one instance allows no canary at all).
* `SageMaker.DescribeEndpoint`: moto's answer with the live status, config and failure reason.
* `SageMaker.DeleteEndpoint`: stops the processes; the endpoint is `Deleting` for `deleting_seconds`
  (a name that is still Deleting cannot be created again: AWS's ValidationException), then moto
  forgets it.
* `end_next_change_in(name, status, reason)`: a test hook that makes the next create or update of an
  endpoint end in a state the local runtime does not reach by itself (`OutOfService`,
  `UpdateRollbackFailed`, `Failed`).
* `POST /endpoints/{name}/invocations` (sagemaker-runtime InvokeEndpoint): proxied to the variant
  that the traffic split picks, over pooled keep-alive connections, `CustomAttributes` passed on as
  the container header `X-Amzn-SageMaker-Custom-Attributes`. Container 4xx/5xx answers become
  `ModelError` (424) as on AWS. With the endpoint config's `DataCaptureConfig`, successful
  invocations are captured to S3 as SageMaker does (`local.aws.data_capture`, written off the
  request thread; `flush_capture()` writes what is buffered now).
"""
from __future__ import annotations

import collections
import http.client
import logging
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3

from local.aws.data_capture import DEFAULT_MAX_FILE_SECONDS, CaptureSettings, DataCapture
from local.aws.endpoint_variants import Variant, VariantStartError, fetch_model, start_model_server, tail
from local.aws.gateway import LocalGateway, aws_error, json_response, request_json
from local.aws.identities import aws_client
from local.jobs_image import JobsImage, default_image

log = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"/endpoints/([^/]+)/invocations")
BUSY_STATUSES = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}


@dataclass
class LocalEndpoint:
    name: str
    arn: str
    config_name: str
    status: str = "Creating"
    failure_reason: str | None = None
    live: Variant | None = None
    canary: Variant | None = None
    canary_fraction: float = 0.0
    # The config an update moves to, while it does (DescribeEndpoint's PendingDeploymentSummary).
    pending_config_name: str | None = None
    last_modified: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    recent_requests: collections.deque = field(default_factory=lambda: collections.deque(maxlen=5))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self) -> Variant | None:
        """The variant for the next request (canary share while baking); counts it as in flight."""
        with self.lock:
            variant = self.live
            if self.canary is not None and random.random() < self.canary_fraction:
                variant = self.canary
            if variant is not None:
                variant.inflight += 1
                variant.requests += 1
            return variant

    @staticmethod
    def release(variant: Variant) -> None:
        variant.inflight -= 1  # only read for draining, a momentary race is harmless there

    def touch(self, status: str, reason: str | None = None) -> None:
        self.status = status
        if status != "Updating":
            self.pending_config_name = None
        self.failure_reason = reason
        self.last_modified = datetime.now(timezone.utc)


class LocalEndpoints:
    """The endpoint runtime of the local cloud. `install()` registers its routes on the gateway."""

    def __init__(self, gateway: LocalGateway, work_dir: str | Path, image: JobsImage | None = None,
                 startup_timeout: float = 120.0, max_bake_seconds: float = 3.0, max_termination_wait: float = 1.0,
                 deleting_seconds: float = 1.0, identities: Any = None,
                 capture_file_seconds: float = DEFAULT_MAX_FILE_SECONDS):
        self.gateway = gateway
        # Who the stand-in acts as (local.aws.identities.Identities); None: whatever the environment holds.
        self.identities = identities
        self.work_dir = Path(work_dir)
        self.image = (image or default_image()).ensure()  # the jobs image also serves (`serve`)
        self.startup_timeout = startup_timeout
        # Canary bake and old-fleet termination waits are minutes on AWS; locally they are capped.
        self.max_bake_seconds = max_bake_seconds
        self.max_termination_wait = max_termination_wait
        # AWS keeps a deleted endpoint Deleting for a while; locally short, but long enough to race with.
        self.deleting_seconds = deleting_seconds
        self._forced_outcomes: dict[str, tuple[str, str]] = {}
        self.endpoints: dict[str, LocalEndpoint] = {}
        self._all_variants: list[Variant] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        # Capture files are written with the model's execution role, as SageMaker writes them.
        self.capture = DataCapture(self._model_s3, self.work_dir / "capture-unwritten",
                                   max_file_seconds=capture_file_seconds)

    # -- wiring -------------------------------------------------------------------------------
    def install(self) -> "LocalEndpoints":
        self.gateway.route_target("SageMaker.CreateEndpoint", self._create_endpoint)
        self.gateway.route_target("SageMaker.UpdateEndpoint", self._update_endpoint)
        self.gateway.route_target("SageMaker.DescribeEndpoint", self._describe_endpoint)
        self.gateway.route_target("SageMaker.DeleteEndpoint", self._delete_endpoint)
        self.gateway.route_path(INVOKE_PATH.pattern, self._invoke, methods=["POST"])
        return self

    def shutdown(self) -> None:
        """Stops every model server process this runtime started."""
        self._closed = True
        for thread in list(self._threads):
            thread.join(timeout=self.startup_timeout)
        for variant in list(self._all_variants):
            variant.stop()
        self._all_variants.clear()
        self.capture.close()  # after the servers: no invocation is captured after this

    def flush_capture(self, timeout: float = 30.0) -> None:
        """Writes the data capture buffered so far to S3 (tests and monitors need not wait for it)."""
        self.capture.flush(timeout)

    def __enter__(self) -> "LocalEndpoints":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _clients(self):
        """SageMaker reading its own resources (the runtime identity), and S3 as the bucket sees it."""
        if self.identities is not None:
            credentials = self.identities.runtime
            return (aws_client("sagemaker", self.gateway.url, credentials),
                    aws_client("s3", self.gateway.url, credentials))
        kwargs = dict(endpoint_url=self.gateway.url, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                      aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                      aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"))
        return boto3.client("sagemaker", **kwargs), boto3.client("s3", **kwargs)

    def _model_s3(self, role_arn: str | None):
        """S3 as the model's execution role (SageMaker downloads the artifact with it)."""
        if self.identities is None or not role_arn:
            return self._clients()[1]
        credentials = self.identities.role_credentials(role_arn, "sagemaker.amazonaws.com", "hosting")
        return aws_client("s3", self.gateway.url, credentials)

    def end_next_change_in(self, endpoint_name: str, status: str, reason: str) -> None:
        """The next create or update of `endpoint_name` ends in `status` with `reason` as FailureReason."""
        if status not in ("OutOfService", "UpdateRollbackFailed", "Failed"):
            raise ValueError(f"end_next_change_in is for end states the runtime does not reach itself, got {status!r}")
        self._forced_outcomes[endpoint_name] = (status, reason)

    def _forced_outcome(self, endpoint: LocalEndpoint) -> tuple[str, str] | None:
        return self._forced_outcomes.pop(endpoint.name, None)

    def _background(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"endpoint-{target.__name__}")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    # -- SageMaker control plane --------------------------------------------------------------
    def _create_endpoint(self, environ, start_response):
        request = request_json(environ)
        name = request.get("EndpointName", "")
        existing = self.endpoints.get(name)
        if existing is not None:
            return aws_error(start_response, 400, "ValidationException",
                             f'Cannot create already existing endpoint "{existing.arn}".')
        response = self.gateway.call_moto(environ)
        if response.status_code >= 400:
            return json_response(start_response, response.status_code, response.json(), headers=_error_type(response))
        endpoint = LocalEndpoint(name=name, arn=response.json()["EndpointArn"], config_name=request["EndpointConfigName"])
        self.endpoints[name] = endpoint
        self._mirror(endpoint)
        self._background(self._bring_up, endpoint)
        return json_response(start_response, 200, {"EndpointArn": endpoint.arn})

    def _bring_up(self, endpoint: LocalEndpoint) -> None:
        try:
            variant = self._start_variant(endpoint.name, endpoint.config_name)
        except VariantStartError as exc:
            endpoint.touch("Failed", str(exc))
            log.warning("endpoint %s failed: %s", endpoint.name, exc)
        else:
            with endpoint.lock:
                endpoint.live = variant
            forced = self._forced_outcome(endpoint)
            endpoint.touch(*(forced or ("InService",)))
        self._mirror(endpoint)

    def _update_endpoint(self, environ, start_response):
        request = request_json(environ)
        name = request.get("EndpointName", "")
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return aws_error(start_response, 400, "ValidationException", f"Could not find endpoint \"{name}\".")
        if endpoint.status in BUSY_STATUSES:
            return aws_error(start_response, 400, "ValidationException", f'Cannot update in-progress endpoint "{endpoint.arn}".')
        if endpoint.status != "InService":
            return aws_error(start_response, 400, "ValidationException",
                             f'Cannot update endpoint "{endpoint.arn}" in status {endpoint.status}.')
        config_name = request.get("EndpointConfigName", "")
        sagemaker, _ = self._clients()
        try:
            config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        except sagemaker.exceptions.ClientError as exc:
            return aws_error(start_response, 400, "ValidationException", exc.response["Error"]["Message"])
        problem = _invalid_traffic_routing(request.get("DeploymentConfig") or {}, config["ProductionVariants"])
        if problem:
            return aws_error(start_response, 400, "ValidationException", problem)
        endpoint.touch("Updating")
        endpoint.pending_config_name = config_name
        self._mirror(endpoint)
        self._background(self._blue_green, endpoint, config_name, request.get("DeploymentConfig") or {})
        return json_response(start_response, 200, {"EndpointArn": endpoint.arn})

    def _blue_green(self, endpoint: LocalEndpoint, config_name: str, deployment_config: dict) -> None:
        old = endpoint.live
        try:
            new = self._start_variant(endpoint.name, config_name)
        except VariantStartError as exc:
            return self._roll_back(endpoint, None, f"the new variant could not start: {exc}")
        forced = self._forced_outcome(endpoint)
        if forced is not None:  # the old variant keeps answering, as in AWS's mixed UpdateRollbackFailed state
            with endpoint.lock:
                endpoint.config_name = config_name
            endpoint.touch(*forced)
            self._mirror(endpoint)
            return self._retire(new, 0.0)
        policy = deployment_config.get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {"Type": "ALL_AT_ONCE"}
        fraction = _first_step_fraction(routing)
        if fraction < 1.0 and old is not None:
            bake = min(float(routing.get("WaitIntervalInSeconds", 0)), self.max_bake_seconds)
            with endpoint.lock:
                endpoint.canary, endpoint.canary_fraction = new, fraction
            problem = self._bake(endpoint, new, bake)
            if problem:
                return self._roll_back(endpoint, new, f"canary traffic failed, auto-rollback: {problem}")
        with endpoint.lock:  # the switch: every request from here on goes to the new variant
            endpoint.live, endpoint.canary, endpoint.canary_fraction = new, None, 0.0
            endpoint.config_name = config_name
        endpoint.touch("InService")
        self._mirror(endpoint)
        if old is not None:
            wait = min(float(policy.get("TerminationWaitInSeconds", 0)), self.max_termination_wait)
            self._retire(old, wait)

    def _bake(self, endpoint: LocalEndpoint, variant: Variant, seconds: float) -> str | None:
        """Watches the canary like the rollback alarms would; returns what went wrong, if anything."""
        deadline = time.monotonic() + seconds
        replayed = False
        while True:
            if not variant.alive():
                return f"the new model server exited ({tail(variant.log_path)})"
            if not replayed:
                # The recent requests the old variant answered must be answered by the new one too.
                for content_type, accept, body in list(endpoint.recent_requests):
                    try:
                        status, _, data = variant.post(body, content_type, accept)
                    except (OSError, http.client.HTTPException) as exc:
                        return f"request to the new variant failed: {exc}"
                    if status >= 500:
                        variant.server_errors += 1
                replayed = True
            if variant.server_errors:
                return f"{variant.server_errors} server error(s) from the new variant"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _roll_back(self, endpoint: LocalEndpoint, new: Variant | None, reason: str) -> None:
        with endpoint.lock:
            endpoint.canary, endpoint.canary_fraction = None, 0.0
        log.warning("update of endpoint %s rolled back: %s", endpoint.name, reason)
        # AWS: the endpoint stays InService on its old config and the failure is reported.
        endpoint.touch("InService" if endpoint.live is not None else "Failed",
                       f"Update rolled back to endpoint config {endpoint.config_name}: {reason}")
        self._mirror(endpoint)
        if new is not None:
            self._retire(new, 0.0)

    def _retire(self, variant: Variant, wait: float) -> None:
        """Stops a variant once it no longer has requests in flight (nothing in flight is dropped)."""
        time.sleep(wait)
        deadline = time.monotonic() + 60
        while variant.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        variant.stop()

    def _describe_endpoint(self, environ, start_response):
        response = self.gateway.call_moto(environ)
        if response.status_code >= 400:
            return json_response(start_response, response.status_code, response.json(), headers=_error_type(response))
        body = response.json()
        endpoint = self.endpoints.get(body.get("EndpointName", ""))
        if endpoint is not None:
            body["EndpointStatus"] = endpoint.status
            body["EndpointConfigName"] = endpoint.config_name
            body["LastModifiedTime"] = endpoint.last_modified.timestamp()
            if endpoint.pending_config_name:
                body["PendingDeploymentSummary"] = {"EndpointConfigName": endpoint.pending_config_name}
            else:
                body.pop("PendingDeploymentSummary", None)
            if endpoint.failure_reason:
                body["FailureReason"] = endpoint.failure_reason
            else:
                body.pop("FailureReason", None)
        return json_response(start_response, 200, body)

    def _delete_endpoint(self, environ, start_response):
        name = request_json(environ).get("EndpointName", "")
        endpoint = self.endpoints.get(name)
        if endpoint is None:  # moto's own answer: not found, or an endpoint this runtime never served
            response = self.gateway.call_moto(environ)
            if response.status_code >= 400:
                return json_response(start_response, response.status_code, response.json(), headers=_error_type(response))
            return json_response(start_response, 200, {})
        if endpoint.status == "Deleting":
            return aws_error(start_response, 400, "ValidationException", f'Cannot delete endpoint "{endpoint.arn}": it is being deleted.')
        with endpoint.lock:
            variants = [v for v in (endpoint.live, endpoint.canary) if v is not None]
            endpoint.live = endpoint.canary = None
        endpoint.touch("Deleting")
        self._mirror(endpoint)
        for variant in variants:
            self._retire(variant, 0.0)
        self._background(self._forget, endpoint)
        return json_response(start_response, 200, {})

    def _forget(self, endpoint: LocalEndpoint) -> None:
        """The end of Deleting: the name is free again."""
        from moto.sagemaker.models import sagemaker_backends

        time.sleep(self.deleting_seconds)
        _, _, _, region, account, _ = endpoint.arn.split(":", 5)
        with self._lock:
            if self.endpoints.get(endpoint.name) is endpoint:
                del self.endpoints[endpoint.name]
                sagemaker_backends[account][region].endpoints.pop(endpoint.name, None)

    def _mirror(self, endpoint: LocalEndpoint) -> None:
        """Keeps moto's own record (list_endpoints, search) in step with the live endpoint."""
        from moto.sagemaker.models import sagemaker_backends

        _, _, _, region, account, _ = endpoint.arn.split(":", 5)
        record = sagemaker_backends[account][region].endpoints.get(endpoint.name)
        if record is not None:
            record.endpoint_status = endpoint.status
            record.failure_reason = endpoint.failure_reason
            record.endpoint_config_name = endpoint.config_name
            record.last_modified_time = endpoint.last_modified

    # -- model servers ------------------------------------------------------------------------
    def _start_variant(self, endpoint_name: str, config_name: str) -> Variant:
        sagemaker, _ = self._clients()
        model_dir, variant_name, log_path = fetch_model(sagemaker, self._model_s3, config_name,
                                                        self.work_dir / "endpoints" / endpoint_name)
        capture = self._capture_settings(sagemaker, endpoint_name, config_name)
        variant = start_model_server(model_dir, config_name, variant_name, log_path, self.image, self.startup_timeout,
                                     started=self._track, stopping=lambda: self._closed)
        variant.capture = capture
        return variant

    @staticmethod
    def _capture_settings(sagemaker, endpoint_name: str, config_name: str):
        """The config's DataCaptureConfig with the role its files are written with (the model's)."""
        try:
            config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
            if not (config.get("DataCaptureConfig") or {}).get("EnableCapture"):
                return None
            model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
            return CaptureSettings.from_config(endpoint_name, config["DataCaptureConfig"], model.get("ExecutionRoleArn"))
        except Exception as exc:
            raise VariantStartError(f"cannot read the data capture config of {config_name}: {exc}") from exc

    def _track(self, variant: Variant) -> None:
        with self._lock:
            self._all_variants.append(variant)

    # -- data plane -----------------------------------------------------------------------------
    def _invoke(self, environ, start_response):
        name = INVOKE_PATH.match(environ.get("PATH_INFO", "")).group(1)
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return aws_error(start_response, 400, "ValidationError", f"Endpoint {name} of account 123456789012 not found.")
        body = environ.get("gateway.body", b"")
        content_type = environ.get("CONTENT_TYPE") or "application/json"
        accept = environ.get("HTTP_ACCEPT")
        custom_attributes = environ.get("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES")
        for attempt in range(2):
            variant = endpoint.pick()
            if variant is None:
                return aws_error(start_response, 400, "ValidationError",
                                 f"Endpoint {name} is not in service (status {endpoint.status}).")
            try:
                status, response_type, data = variant.post(body, content_type, accept, custom_attributes)
            except (OSError, http.client.HTTPException) as exc:
                variant.server_errors += 1
                if attempt == 0:
                    continue  # the variant went away under us: the next pick is the live one
                return aws_error(start_response, 500, "InternalFailure", f"model server unreachable: {exc}")
            finally:
                endpoint.release(variant)
            break
        if status >= 500:
            variant.server_errors += 1
        if status >= 400:
            kind = "client" if status < 500 else "server"
            message = f"Received {kind} error ({status}) from primary with message \"{data.decode(errors='replace')}\"."
            payload = {"__type": "ModelError", "message": message, "Message": message,
                       "OriginalStatusCode": status, "OriginalMessage": data.decode(errors="replace")}
            return json_response(start_response, 424, payload, headers=[("x-amzn-ErrorType", "ModelError")])
        if variant is endpoint.live:
            endpoint.recent_requests.append((content_type, accept, body))
        if variant.capture is not None:
            self.capture.record(variant.capture, variant.variant_name, content_type, body, response_type, data)
        start_response("200 OK", [("Content-Type", response_type), ("Content-Length", str(len(data))),
                                  ("x-Amzn-Invoked-Production-Variant", variant.variant_name)])
        return [data]


def _invalid_traffic_routing(deployment_config: dict, variants: list[dict]) -> str | None:
    """SageMaker's rule for a canary / linear step: at most half of the variant's instances
    (TrafficRoutingConfig.CanarySize in the service model); a step is whole instances."""
    routing = (deployment_config.get("BlueGreenUpdatePolicy") or {}).get("TrafficRoutingConfiguration") or {}
    step = routing.get("CanarySize") if routing.get("Type") == "CANARY" else (
        routing.get("LinearStepSize") if routing.get("Type") == "LINEAR" else None)
    if not step:
        return None
    instances = sum(int(v.get("InitialInstanceCount", 1)) for v in variants)
    value = int(step.get("Value", 0))
    step_instances = value if step.get("Type") == "INSTANCE_COUNT" else math.ceil(instances * value / 100)
    if 1 <= step_instances <= instances / 2:
        return None
    return (f"{routing['Type']} step {step.get('Type')} {value} is {step_instances} instance(s) of {instances}: "
            f"the step must be at least one instance and at most 50% of the variant's instance count.")


def _first_step_fraction(routing: dict) -> float:
    """Share of traffic the first blue/green step sends to the new fleet (1.0 = all at once)."""
    kind = routing.get("Type", "ALL_AT_ONCE")
    step = routing.get("CanarySize") if kind == "CANARY" else routing.get("LinearStepSize") if kind == "LINEAR" else None
    if not step:
        return 1.0
    if step.get("Type") == "CAPACITY_PERCENT":
        return max(0.0, min(1.0, float(step["Value"]) / 100.0))
    return 0.5  # INSTANCE_COUNT: locally one process per fleet, a share in between


def _error_type(response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers if k.lower() == "x-amzn-errortype"]
