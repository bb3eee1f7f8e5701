"""The error each service returns when IAM refuses a call, in that service's wire format.

Codes and wording as AWS sends them (seen in refusals reported against each service):

* SageMaker and the other JSON services: `AccessDeniedException` (HTTP 400), the standard text
  `User: <arn> is not authorized to perform: <action> on resource: <arn> because no
  identity-based policy allows the <action> action`. Secrets Manager names the SecretId as given.
* S3: `AccessDenied` (403, XML), the resource in double quotes.
* SNS: `AuthorizationError` (403), the action spelled `SNS:Publish`.
* SQS: `AccessDenied` (403, JSON with the query-compatible error header), the action lower-cased
  (`sqs:sendmessage`).
* SES: `AccessDenied` (403) in SES's own phrasing: ``User `<arn>' is not authorized to perform
  `ses:SendRawEmail' on resource `<arn>'``.
* IAM, STS, CloudWatch: `AccessDenied` (403). Lambda: `AccessDeniedException` (403).
  Feature Store runtime: `AccessForbidden` (403), its modelled error.

HEAD requests carry no body; the gateway should drop the body of an S3 HEAD refusal.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from xml.sax.saxutils import escape

import botocore.session

from local.aws.strict.iam_policy import Decision


@dataclass(frozen=True)
class ServiceError:
    code: str
    status: int
    phrasing: str = "standard"  # standard, s3, sns, sqs, ses


_BY_SERVICE = {
    "s3": ServiceError("AccessDenied", 403, "s3"),
    "sns": ServiceError("AuthorizationError", 403, "sns"),
    "sqs": ServiceError("AccessDenied", 403, "sqs"),
    "ses": ServiceError("AccessDenied", 403, "ses"),
    "iam": ServiceError("AccessDenied", 403),
    "sts": ServiceError("AccessDenied", 403),
    "cloudwatch": ServiceError("AccessDenied", 403),
    "lambda": ServiceError("AccessDeniedException", 403),
    "sagemaker-featurestore-runtime": ServiceError("AccessForbidden", 403),
}
_DEFAULT = ServiceError("AccessDeniedException", 400)
_QUERY_NAMESPACES = {"sns": "http://sns.amazonaws.com/doc/2010-03-31/", "ses": "http://ses.amazonaws.com/doc/2010-12-01/",
                     "iam": "https://iam.amazonaws.com/doc/2010-05-08/", "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}


def _service_model(service: str):
    return botocore.session.get_session().get_service_model(service)


def message(service: str, decision: Decision) -> str:
    """The refusal text the service sends for `decision`."""
    phrasing = _BY_SERVICE.get(service, _DEFAULT).phrasing
    request = decision.request
    who = decision.principal.arn if decision.principal else "anonymous"
    resource = request.shown_resource or request.resource
    if phrasing == "ses":
        return f"User `{who}' is not authorized to perform `{request.action}' on resource `{resource}'"
    action = request.action
    if phrasing == "sns":
        action = "SNS:" + action.partition(":")[2]
    elif phrasing == "sqs":
        action = action.lower()
    if phrasing == "s3":
        resource = f'"{resource}"'
    return decision.phrased(action, resource)


@dataclass(frozen=True)
class Refusal:
    """A ready-to-send HTTP error: `status`, `headers` and `body` in the service's protocol."""

    service: str
    code: str
    message: str
    status: int
    protocol: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def status_line(self) -> str:
        return f"{self.status} {'Forbidden' if self.status == 403 else 'Bad Request'}"


def refusal(service: str, decision: Decision, request_id: str | None = None) -> Refusal:
    """The response the service sends when `decision` refuses a call to it (botocore service name)."""
    if decision.allowed:
        raise ValueError("an allowed request is not refused")
    error = _BY_SERVICE.get(service, _DEFAULT)
    text = message(service, decision)
    request_id = request_id or str(uuid.uuid4())
    model = _service_model(service)
    protocol = model.resolved_protocol
    headers: list[tuple[str, str]]
    if protocol == "rest-xml":
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + error.code + "</Code><Message>"
                + escape(text) + f"</Message><RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>")
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    elif protocol == "query":
        namespace = _QUERY_NAMESPACES.get(service, "")
        body = (f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{error.code}</Code>'
                f"<Message>{escape(text)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    elif protocol == "json":
        version = model.metadata.get("jsonVersion", "1.1")
        body = json.dumps({"__type": error.code, "message": text})
        headers = [("Content-Type", f"application/x-amz-json-{version}"), ("x-amzn-RequestId", request_id)]
        if "awsQueryCompatible" in model.metadata:
            headers.append(("x-amzn-query-error", f"{error.code};Sender"))
    elif protocol == "rest-json":
        body = json.dumps({"message": text})
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error.code),
                   ("x-amzn-RequestId", request_id)]
    else:
        raise ValueError(f"{service} speaks {protocol}, which the strict face cannot answer in")
    data = body.encode("utf-8")
    headers.append(("Content-Length", str(len(data))))
    return Refusal(service, error.code, text, error.status, protocol, tuple(headers), data)
