"""Fault injection for the local gateway: answer chosen AWS calls with an AWS error, N times.

The gateway asks `FaultInjector.respond` first thing for every request. A rule matches a JSON
protocol operation by its `X-Amz-Target` (`SageMaker.DescribeEndpoint`,
`DynamoDB_20120810.PutItem`) or any request by a path regex (`lambda_invoke_path("deploy_prepare")`),
lets the first `after` matching calls through (to reach, say, the third UpdateItem of a state machine),
and answers the next `times` matching calls with the error in the shape the protocol's clients parse
(botocore turns it into the same `ClientError` a real AWS answer would give). Later matching calls go
through untouched; the rule keeps counting them, so a test can tell how often a call was retried.

    faults = cloud.gateway.faults
    rule = faults.inject(target="SageMaker.DescribeEndpoint", code="ThrottlingException", status=400,
                         message="Rate exceeded", times=2)
    ...
    assert rule.served == 2 and rule.seen == 3

Thread-safe (the gateway serves requests on a thread pool); `clear()` between tests.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Iterable
from xml.sax.saxutils import escape

# How each protocol's clients expect an error. JSON APIs (awsJson1_0/1_1) carry the code in `__type`;
# rest-json in the x-amzn-ErrorType header; query and rest-xml in an XML document.
PROTOCOLS = ("json", "rest-json", "query", "rest-xml")
_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def lambda_invoke_path(function_name: str) -> str:
    """A path regex for Lambda Invoke of `function_name`, called by name or by ARN (as Step Functions does)."""
    return rf"/2015-03-31/functions/(arn:[^/]*:function:)?{re.escape(function_name)}(:[^/]+)?/invocations"


@dataclass
class FaultRule:
    code: str
    status: int
    message: str
    times: int
    target: str | None = None
    path: re.Pattern | None = None
    method: str | None = None
    protocol: str | None = None
    after: int = 0  # matching calls let through before the first error
    served: int = 0  # calls answered with the error
    seen: int = 0  # matching calls, answered or passed through

    def matches(self, environ: dict) -> bool:
        if self.target is not None and environ.get("HTTP_X_AMZ_TARGET") != self.target:
            return False
        if self.path is not None and not self.path.fullmatch(environ.get("PATH_INFO", "")):
            return False
        return self.method is None or environ.get("REQUEST_METHOD") == self.method

    def takes(self) -> bool:
        """Whether the call just counted in `seen` gets the error."""
        return self.seen > self.after and self.served < self.times


@dataclass
class FaultInjector:
    _rules: list[FaultRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, *, code: str, status: int, message: str = "", times: int = 1, after: int = 0,
               target: str | None = None, path: str | None = None, method: str | None = None,
               protocol: str | None = None) -> FaultRule:
        """Answer `times` calls matching `target` and/or `path` (and `method`) with this error, after
        letting the first `after` of them through.

        `protocol` defaults to `json` for target rules and must be given for path rules whose service
        is not rest-json (Lambda, the SageMaker runtime)."""
        if target is None and path is None:
            raise ValueError("a fault needs a target (X-Amz-Target) or a path to match")
        if times < 1 or after < 0:
            raise ValueError(f"times must be at least 1 and after at least 0, got times={times} after={after}")
        protocol = protocol or ("json" if target is not None else "rest-json")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        rule = FaultRule(code=code, status=status, message=message, times=times, target=target,
                         path=re.compile(path) if path is not None else None, method=method, protocol=protocol,
                         after=after)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def respond(self, environ: dict, start_response) -> Iterable[bytes] | None:
        """The error answer for this request if a rule takes it, else None (route it as usual)."""
        with self._lock:
            matching = [rule for rule in self._rules if rule.matches(environ)]
            for rule in matching:
                rule.seen += 1
            rule = next((r for r in matching if r.takes()), None)
            if rule is None:
                return None
            rule.served += 1
        status, headers, body = error_response(rule.protocol, rule.code, rule.status, rule.message)
        start_response(status, headers)
        return [body]


def error_response(protocol: str, code: str, status: int, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of an AWS error answer in the protocol's shape."""
    request_id = str(uuid.uuid4())
    if protocol == "json":
        content_type = "application/x-amz-json-1.1"
        body = json.dumps({"__type": code, "message": message}).encode()
        extra = [("x-amzn-ErrorType", code)]
    elif protocol == "rest-json":
        content_type = "application/json"
        body = json.dumps({"Type": "User" if status < 500 else "Service", "message": message}).encode()
        extra = [("x-amzn-ErrorType", code)]
    elif protocol == "query":
        content_type = "text/xml"
        body = (f"<ErrorResponse><Error><Type>{'Sender' if status < 500 else 'Receiver'}</Type><Code>{escape(code)}</Code>"
                f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode()
        extra = []
    else:
        content_type = "application/xml"
        body = (f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                f"<RequestId>{request_id}</RequestId></Error>").encode()
        extra = [("x-amz-request-id", request_id)]
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
               ("x-amzn-RequestId", request_id), *extra]
    return f"{status} {_REASONS.get(status, 'Error')}", headers, body
