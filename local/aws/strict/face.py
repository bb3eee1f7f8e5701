"""The strict face: every request through the gateway is refused where AWS would refuse it.

In order, as AWS does (DESIGN §8):

1. **Who** — the access key, session token and Signature V4 (`authentication`); an unknown key or a
   wrong signature is refused in the protocol's error shape.
2. **Service constraints** — the request against its operation's botocore model (required, length,
   pattern, enum, range) and S3's key/metadata rules (`constraint_refusals`).
3. **IAM** — the operation's authorization requests (`authorization`) evaluated against the caller's
   identity policies and the resource's policy (`iam_policy`); a refusal names action, resource and
   caller as AWS does (`access_denied`).

Only then does the gateway route the request (to moto or a local stand-in). The local runtime's own
identity (`identities.RUNTIME_USER`) skips step 3: those are the calls AWS makes on its own resources.
Local stand-ins that act as a service without an HTTP hop (the pipeline service creating a job, EventBridge
invoking a function) call `authorize` themselves. Every decision is kept in `decisions` (tests replay
them to show which template statement each call needs).
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

from local.aws.identities import Identities
from local.aws.strict import access_denied
from local.aws.strict.authentication import AuthenticationFailed, Caller, authenticate, refusal_code
from local.aws.strict.authorization import (
    UnmappedOperation,
    authorization_requests,
    global_context,
    missing_object_request,
)
from local.aws.strict.constraint_refusals import check_request, error_response
from local.aws.strict.iam_policy import AuthorizationRequest, Decision, Principal, evaluate
from local.aws.strict.operation_table import iam_prefix
from local.aws.strict.principals import MotoLookup, identity_policies, resource_policy
from local.aws.strict.request_decoder import ServiceRequest, decode
from local.aws.strict.service_constraints import service_model

log = logging.getLogger(__name__)
# One line per refusal (AccessDenied, failed constraint, bad signature): what a reader of a failed
# run looks for first. LocalCloud writes it to <state>/logs/strict-face.log.
refusals = logging.getLogger("local.aws.strict.refusals")

Response = tuple[int, list[tuple[str, str]], bytes]
ResourcePolicySource = Callable[[str, str], "dict | None"]  # (IAM service prefix, resource ARN) -> policy


@dataclass(frozen=True)
class RecordedDecision:
    """One authorization the strict face made (for tests and docs: which call needed what)."""

    principal_arn: str  # the role (or user) ARN
    service: str
    operation: str
    request: AuthorizationRequest
    allowed: bool
    identity_policies: tuple = field(repr=False, default=())
    resource_policy: dict | None = field(repr=False, default=None)
    principal: Principal | None = field(repr=False, default=None)


class ServiceConstraintsFace:
    """The part of the strict face that needs no identities: every request meets the service's
    own constraints (botocore's models, S3 key rules). What a bare gateway enforces by default;
    `StrictFace` adds authentication and IAM on top."""

    def check(self, environ: dict, body: bytes) -> Response | None:
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return None
        request = decode(environ, body)
        environ["mlops.request"] = request
        if request is None:
            return None
        violations = check_request(request)
        if not violations:
            return None
        refusals.warning("%s refused (constraints): %s", _operation_name(request, environ),
                         "; ".join(v.describe() for v in violations))
        return error_response(request, violations)

    def check_missing_object(self, environ: dict, status: int) -> Response | None:
        return None


class StrictFace:
    def __init__(self, identities: Identities, *, account: str, region: str,
                 extra_resource_policies: ResourcePolicySource | None = None, record_decisions: bool = False):
        self.identities = identities
        self.account, self.region = account, region
        # Resource policies moto does not store (Lambda permissions of functions it does not run).
        self.extra_resource_policies = extra_resource_policies
        # Every authorization with the policies that decided it, when asked for (the statement
        # coverage tests replay them); off by default, a long run makes many.
        self.record_decisions = record_decisions
        self.decisions: list[RecordedDecision] = []
        self._lock = threading.Lock()
        self._lookup = MotoLookup(account, region)

    # -- the gateway's check ------------------------------------------------------------------------
    def check(self, environ: dict, body: bytes) -> Response | None:
        """The refusal AWS would answer this request with, or None when it may go on."""
        if environ.get("PATH_INFO", "").startswith("/moto-api"):
            return None
        request = decode(environ, body)
        environ["mlops.request"] = request
        try:
            caller = authenticate(environ, body, account=self.account)
        except AuthenticationFailed as failure:
            refusals.warning("%s refused (%s): %s", _operation_name(request, environ), failure.kind, failure.message)
            return self._authentication_refusal(request, environ, failure)
        environ["mlops.caller"] = caller
        if request is not None:
            violations = check_request(request)
            if violations:
                refusals.warning("%s by %s refused (constraints): %s", _operation_name(request, environ),
                                 caller.principal.arn, "; ".join(v.describe() for v in violations))
                return error_response(request, violations)
        if self.identities.is_runtime(caller.principal):
            return None
        if request is None:
            return _plain_error(400, "UnknownOperationException",
                                f"the strict local face cannot tell which AWS operation {environ.get('REQUEST_METHOD')} "
                                f"{environ.get('PATH_INFO')} is, so it cannot authorize it")
        try:
            decision = self.authorize(caller.principal, request.service, request.operation, request.params,
                                      source_ip=environ.get("REMOTE_ADDR"))
        except UnmappedOperation as exc:
            # An operation the product never calls (a test or a person poking around): allowed only
            # to a caller allowed the action on every resource, which AWS would allow as well.
            anywhere = AuthorizationRequest(f"{iam_prefix(request.service)}:{request.operation}", "*")
            if self._evaluate(caller.principal, request.service, request.operation, anywhere,
                              environ.get("REMOTE_ADDR")).allowed:
                return None
            log.error("strict face: %s", exc)
            return _plain_error(500, "InternalFailure", f"the strict local face has no IAM mapping for {exc}")
        if decision is not None:
            refused = access_denied.refusal(request.service, decision)
            body_out = b"" if environ.get("REQUEST_METHOD") == "HEAD" else refused.body
            return refused.status, list(refused.headers), body_out
        return None

    def check_missing_object(self, environ: dict, status: int) -> Response | None:
        """S3 answers a missing key with 403, not 404, to a caller that may not list the bucket."""
        caller: Caller | None = environ.get("mlops.caller")
        if status != 404 or caller is None or self.identities.is_runtime(caller.principal):
            return None
        request = environ.get("mlops.request")
        if request is None or request.service != "s3" or request.operation not in ("GetObject", "HeadObject"):
            return None
        probe = missing_object_request(request.params, region=self.region, account=self.account)
        decision = self._evaluate(caller.principal, "s3", "ListObjectsV2", probe, environ.get("REMOTE_ADDR"))
        if decision.allowed:
            return None
        refused = access_denied.refusal("s3", decision)
        return refused.status, list(refused.headers), b"" if request.operation == "HeadObject" else refused.body

    # -- authorization, also for stand-ins acting as a service ----------------------------------------
    def authorize(self, principal: Principal, service: str, operation: str, params: dict, *,
                  source_arn: str | None = None, source_account: str | None = None,
                  source_ip: str | None = None) -> Decision | None:
        """None when every authorization of the call is allowed, else the first refusal."""
        requests = authorization_requests(service, operation, params, region=self.region, account=self.account,
                                          lookup=self._lookup, source_arn=source_arn, source_account=source_account)
        for request in requests:
            decision = self._evaluate(principal, service, operation, request, source_ip)
            if not decision.allowed:
                refusals.warning("%s:%s by %s refused (IAM): %s", service, operation, principal.arn, decision.message())
                return decision
        return None

    def _evaluate(self, principal: Principal, service: str, operation: str, request: AuthorizationRequest,
                  source_ip: str | None) -> Decision:
        context = {**global_context(secure_transport=True, source_ip=source_ip), **dict(request.context)}
        request = AuthorizationRequest(request.action, request.resource, context, request.resource_account,
                                       request.shown_resource)
        policies = tuple(identity_policies(principal))
        resource = self._resource_policy(request)
        decision = evaluate(request, list(policies), resource, principal)
        if not self.record_decisions:
            return decision
        with self._lock:
            self.decisions.append(RecordedDecision(principal.principal_arn, service, operation, request,
                                                   decision.allowed, policies, resource, principal))
        return decision

    def _resource_policy(self, request: AuthorizationRequest) -> dict | None:
        prefix = request.action.split(":", 1)[0].lower()
        if self.extra_resource_policies is not None:
            found = self.extra_resource_policies(prefix, request.resource)
            if found is not None:
                return found
        return resource_policy(prefix, request.resource)

    def _authentication_refusal(self, request: ServiceRequest | None, environ: dict,
                                failure: AuthenticationFailed) -> Response:
        protocol = request.protocol if request is not None else _protocol_of(environ)
        code, status = refusal_code(protocol, failure.kind)
        return _error_in_protocol(protocol, request.service if request else None, code, status, failure.message,
                                  head=environ.get("REQUEST_METHOD") == "HEAD")


def _operation_name(request: ServiceRequest | None, environ: dict) -> str:
    if request is not None:
        return f"{request.service}:{request.operation}"
    return f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"


def _protocol_of(environ: dict) -> str:
    if environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if "/s3/aws4_request" in authorization or "AWSAccessKeyId=" in environ.get("QUERY_STRING", ""):
        return "rest-xml"
    return "rest-json"


def _error_in_protocol(protocol: str, service: str | None, code: str, status: int, message: str,
                       head: bool = False) -> Response:
    request_id = str(uuid.uuid4())
    from xml.sax.saxutils import escape

    if protocol == "rest-xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}'
                f"</Message><RequestId>{request_id}</RequestId></Error>").encode()
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], b"" if head else body
    if protocol == "query":
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode()
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body
    if protocol == "json":
        version = service_model(service).metadata.get("jsonVersion", "1.1") if service else "1.1"
        body = json.dumps({"__type": code, "message": message}).encode()
        return status, [("Content-Type", f"application/x-amz-json-{version}"), ("x-amzn-RequestId", request_id),
                        ("x-amzn-ErrorType", code)], body
    body = json.dumps({"message": message}).encode()
    return status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
                    ("x-amzn-RequestId", request_id)], body


def _plain_error(status: int, code: str, message: str) -> Response:
    return _error_in_protocol("json", None, code, status, message)
