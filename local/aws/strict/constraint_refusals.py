"""AWS's refusal of a request that breaks a service constraint, in the protocol's own error shape.

The gateway's face (local.aws.strict.face) decodes each request, then calls `check_request` and,
for a violation, `error_response`. `check_request` adds to the model's constraints the S3 rules the model does not carry (object keys
of at most 1024 bytes of UTF-8, user metadata of at most 2 KB); `error_response` answers in the
shape botocore parses into `ClientError` with the service's own error code.
"""
from __future__ import annotations

import json
import uuid
from xml.sax.saxutils import escape

from local.aws.strict.request_decoder import ServiceRequest
from local.aws.strict.service_constraints import Violation, check, format_message, service_model

# The code each service answers a constraint violation with (sources in docs/strict-face.md).
VALIDATION_ERROR_CODES = {
    "sagemaker": "ValidationException",
    "dynamodb": "ValidationException",
    "stepfunctions": "ValidationException",
    "secretsmanager": "ValidationException",
    "events": "ValidationException",
    "ssm": "ValidationException",
    "kms": "ValidationException",
    "lambda": "ValidationException",
    "logs": "InvalidParameterException",
    "ecr": "InvalidParameterException",
    "sagemaker-runtime": "ValidationError",
    "sagemaker-featurestore-runtime": "ValidationError",
    "sts": "ValidationError",
    "iam": "ValidationError",
    "ses": "ValidationError",
    "cloudformation": "ValidationError",
    "cloudwatch": "ValidationError",
    "sesv2": "BadRequestException",
    "sns": "InvalidParameter",
    "s3": "InvalidArgument",
}
# Services not in the table answer with their protocol's usual code.
_PROTOCOL_DEFAULT_CODES = {"json": "ValidationException", "rest-json": "ValidationException",
                           "query": "ValidationError", "rest-xml": "InvalidArgument"}

S3_MAX_KEY_BYTES = 1024
S3_MAX_USER_METADATA_BYTES = 2048  # the sum of the UTF-8 bytes of every key and value


def check_request(request: ServiceRequest) -> list[Violation]:
    """The model's constraints of the request's operation, and the service rules the model lacks."""
    violations = check(request.service, request.operation, request.params)
    if request.service == "s3":
        violations.extend(_s3_violations(request.params))
    return violations


def error_code(request: ServiceRequest, violations: list[Violation]) -> str:
    for violation in violations:
        if violation.error_code:
            return violation.error_code
    return VALIDATION_ERROR_CODES.get(request.service, _PROTOCOL_DEFAULT_CODES[request.protocol])


def error_response(request: ServiceRequest, violations: list[Violation]) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of AWS's refusal, in the error shape of the request's protocol."""
    code = error_code(request, violations)
    request_id = str(uuid.uuid4())
    if request.protocol == "rest-xml":
        return _s3_error(request, code, violations, request_id)
    message = format_message(violations)
    if request.protocol == "query":
        model = service_model(request.service)
        namespace = f"https://{model.metadata['endpointPrefix']}.amazonaws.com/doc/{model.api_version}/"
        body = (f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
                f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
                ).encode("utf-8")
        return 400, _headers("text/xml", body, request_id), body
    if request.protocol == "json":
        version = service_model(request.service).metadata.get("jsonVersion", "1.0")
        body = json.dumps({"__type": code, "message": message}).encode("utf-8")
        return 400, _headers(f"application/x-amz-json-{version}", body, request_id, code), body
    body = json.dumps({"message": message}).encode("utf-8")  # rest-json: the code travels in the header
    return 400, _headers("application/json", body, request_id, code), body


def _headers(content_type: str, body: bytes, request_id: str, code: str | None = None) -> list[tuple[str, str]]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("x-amzn-RequestId", request_id)]
    if code is not None:
        headers.append(("x-amzn-ErrorType", code))
    return headers


def _s3_error(request: ServiceRequest, code: str, violations: list[Violation], request_id: str):
    first = next((v for v in violations if v.error_code == code), violations[0])
    if first.error_code:
        message, details = first.constraint, first.details
    else:  # a model constraint: S3 names the argument it refuses
        message = format_message(violations)
        details = (("ArgumentName", first.member_path), ("ArgumentValue", "" if first.redacted else str(first.value)))
    fields = "".join(f"<{name}>{escape(str(value))}</{name}>" for name, value in details)
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code><Message>{escape(message)}'
            f"</Message>{fields}<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>").encode()
    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    if request.operation.startswith("Head"):  # S3 answers HEAD without a body; botocore reports the status
        return 400, headers + [("Content-Length", "0")], b""
    return 400, headers + [("Content-Length", str(len(body)))], body


def _s3_violations(params: dict) -> list[Violation]:
    """S3 rules that the model does not carry (https://docs.aws.amazon.com/AmazonS3/latest/userguide/)."""
    violations = []
    key = params.get("Key")
    if isinstance(key, str) and len(key.encode("utf-8")) > S3_MAX_KEY_BYTES:
        size = len(key.encode("utf-8"))
        violations.append(Violation("key", key, "Your key is too long", error_code="KeyTooLongError",
                                    details=(("Size", size), ("MaxSizeAllowed", S3_MAX_KEY_BYTES))))
    metadata = params.get("Metadata")
    if isinstance(metadata, dict):
        size = sum(len(str(k).encode("utf-8")) + len(str(v).encode("utf-8")) for k, v in metadata.items())
        if size > S3_MAX_USER_METADATA_BYTES:
            violations.append(Violation(
                "metadata", metadata, "Your metadata headers exceed the maximum allowed metadata size",
                error_code="MetadataTooLarge", details=(("Size", size), ("MaxSizeAllowed", S3_MAX_USER_METADATA_BYTES))))
    return violations
