"""API Gateway, locally: the template's `Api`/`HttpApi` function events served on 127.0.0.1.

Each request becomes an API Gateway Lambda proxy event (payload v1 for REST APIs, v2 for HTTP APIs:
path parameters, query string, headers, base64 body when binary) and runs the handler through the
lambda runtime; the handler's response becomes the HTTP response. A leading stage segment
(`/Prod/...`) is accepted and stripped, so the API URLs the template builds (which the provisioner
points here) work unchanged.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request, Response

from local.aws.stack.model import ACCOUNT_ID, ApiRoute
from local.aws.wsgi_server import WSGIServer

log = logging.getLogger(__name__)

TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml",
              "application/javascript", "application/x-amz-json")


@dataclass
class _CompiledRoute:
    route: ApiRoute
    pattern: re.Pattern
    specificity: tuple


def _compile(route: ApiRoute) -> _CompiledRoute:
    regex, literal_chars, greedy = "", 0, False
    for segment in route.path.strip("/").split("/") if route.path.strip("/") else []:
        greedy_match = re.fullmatch(r"\{([^}]+)\+\}", segment)
        param = re.fullmatch(r"\{([^}]+)\}", segment)
        if greedy_match:
            regex += f"/(?P<{_group(greedy_match.group(1))}>.+)"
            greedy = True
        elif param:
            regex += f"/(?P<{_group(param.group(1))}>[^/]+)"
        else:
            regex += "/" + re.escape(segment)
            literal_chars += len(segment)
    pattern = re.compile((regex or "") + "/?\\Z")
    # Most specific first: no greedy, more literal text, a concrete method.
    return _CompiledRoute(route, pattern, (greedy, -literal_chars, route.method == "ANY"))


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name) + "_" + str(abs(hash(name)) % 10_000)


def _param_names(path: str) -> list[str]:
    return [m.rstrip("+") for m in re.findall(r"\{([^}]+)\}", path)]


class ApiServer:
    """One local HTTP server for every API in the stack (its port is known before provisioning)."""

    def __init__(self, lambda_runtime=None, host: str = "127.0.0.1", port: int = 0, strict=None):
        self.lambda_runtime = lambda_runtime
        # API Gateway invokes a function as apigateway.amazonaws.com: the function's resource policy
        # (SAM's Lambda permission for the route) must allow it (checked by the strict face).
        self.strict = strict
        self._routes: list[_CompiledRoute] = []
        self._server = WSGIServer(self, host, port, name="local-apigw")
        self.host, self.port = host, self._server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_routes(self, routes: list[ApiRoute]) -> None:
        self._routes.extend(_compile(r) for r in routes)
        self._routes.sort(key=lambda r: r.specificity)

    def start(self) -> "ApiServer":
        self._server.start()
        return self

    def stop(self) -> None:
        # The server is bound before it is started (the template's API URLs need its port); stop()
        # also releases one that a cloud failing in between never started.
        self._server.stop()

    # -- WSGI --------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def match(self, method: str, path: str) -> tuple[ApiRoute, dict[str, str], str] | None:
        for compiled in self._routes:
            route = compiled.route
            candidates = [path]
            prefix = f"/{route.stage}"
            if path == prefix or path.startswith(prefix + "/"):
                candidates.insert(0, path[len(prefix):] or "/")
            for candidate in candidates:
                match = compiled.pattern.match(candidate)
                if match and route.method in ("ANY", method):
                    values = list(match.groups())
                    params = dict(zip(_param_names(route.path), values))
                    return route, params, candidate
        return None

    def handle(self, request: Request) -> Response:
        found = self.match(request.method, request.path)
        if found is None:
            return _json_response(404 if request.method != "OPTIONS" else 200, {"message": "Not Found"})
        route, path_params, path = found
        refusal = self._refused(route, request.method, path)
        if refusal:
            log.error("API %s %s: API Gateway may not invoke %s: %s", request.method, request.path,
                      route.function_name, refusal)
            return _json_response(500, {"message": "Internal server error"})  # what API Gateway answers
        event = (build_v2_event if route.payload_version == "2.0" else build_v1_event)(request, route, path_params, path)
        result = self.lambda_runtime.invoke(route.function_name, event)
        if not result.ok:
            log.warning("API %s %s: handler %s failed: %s", request.method, request.path, route.function_name, result.payload)
            return _json_response(502, {"message": "Internal server error"})
        try:
            return to_http_response(result.payload, route.payload_version)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("API %s %s: malformed Lambda proxy response: %s", request.method, request.path, exc)
            return _json_response(502, {"message": "Internal server error"})


    def _refused(self, route: ApiRoute, method: str, path: str) -> str | None:
        if self.strict is None:
            return None
        from local.aws.strict.iam_policy import Principal

        spec = self.lambda_runtime.spec(route.function_name)
        source_arn = f"arn:aws:execute-api:{spec.arn.split(':')[3]}:{ACCOUNT_ID}:{route.api_id}/{route.stage}/{method}{path}"
        decision = self.strict.authorize(Principal.service("apigateway.amazonaws.com", ACCOUNT_ID), "lambda", "Invoke",
                                         {"FunctionName": spec.arn}, source_arn=source_arn, source_account=ACCOUNT_ID)
        return None if decision is None else decision.message()


def _body(request: Request) -> tuple[str | None, bool]:
    data = request.get_data()
    if not data:
        return None, False
    content_type = (request.headers.get("Content-Type") or "").lower()
    if content_type.startswith(TEXT_TYPES) or not content_type:
        try:
            return data.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode(), True


def _request_context_common(request: Request, route: ApiRoute) -> dict:
    now = datetime.now(timezone.utc)
    return {
        "accountId": ACCOUNT_ID,
        "apiId": route.api_id,
        "requestId": str(uuid.uuid4()),
        "stage": route.stage,
        "domainName": request.host,
        "domainPrefix": route.api_id,
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
    }


def build_v1_event(request: Request, route: ApiRoute, path_params: dict, path: str) -> dict:
    body, is_base64 = _body(request)
    headers = {k: v for k, v in request.headers.items()}
    multi_headers: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        multi_headers.setdefault(key, []).append(value)
    query = parse_qsl(request.query_string.decode(), keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for key, value in query:
        multi_query.setdefault(key, []).append(value)
    context = _request_context_common(request, route)
    context.update({
        "resourcePath": route.path,
        "httpMethod": request.method,
        "path": f"/{route.stage}{path}",
        "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "identity": {"sourceIp": request.remote_addr, "userAgent": request.headers.get("User-Agent")},
        "resourceId": route.api_id[:6],
    })
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": is_base64,
    }


def build_v2_event(request: Request, route: ApiRoute, path_params: dict, path: str) -> dict:
    body, is_base64 = _body(request)
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for key, value in request.headers.items():
        if key.lower() == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        key = key.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(request.query_string.decode(), keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    route_key = "$default" if route.path == "/{proxy+}" and route.method == "ANY" else f"{route.method} {route.path}"
    context = _request_context_common(request, route)
    context.pop("requestTimeEpoch")
    context.update({
        "http": {"method": request.method, "path": request.path, "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                 "sourceIp": request.remote_addr, "userAgent": request.headers.get("User-Agent", "")},
        "routeKey": route_key,
        "time": context.pop("requestTime"),
        "timeEpoch": int(time.time() * 1000),
    })
    event = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.query_string.decode(),
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": is_base64,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = path_params
    if body is not None:
        event["body"] = body
    return event


def to_http_response(payload, payload_version: str) -> Response:
    if payload_version == "2.0" and not (isinstance(payload, dict) and "statusCode" in payload):
        # HTTP API v2 infers a 200 JSON response from anything that is not a proxy response.
        return _json_response(200, payload) if not isinstance(payload, str) else Response(payload, 200, content_type="application/json")
    if not isinstance(payload, dict) or "statusCode" not in payload:
        raise ValueError("a REST API proxy response needs statusCode")
    body = payload.get("body")
    if payload.get("isBase64Encoded") and body:
        data = base64.b64decode(body)
    else:
        data = (body if body is not None else "").encode() if isinstance(body, str) or body is None else json.dumps(body).encode()
    response = Response(data, status=int(payload["statusCode"]))
    response.headers.remove("Content-Type")
    for key, value in (payload.get("headers") or {}).items():
        response.headers[key] = str(value)
    for key, values in (payload.get("multiValueHeaders") or {}).items():
        response.headers.remove(key)
        for value in values:
            response.headers.add(key, str(value))
    for cookie in payload.get("cookies") or []:
        response.headers.add("Set-Cookie", cookie)
    if "Content-Type" not in response.headers:
        response.headers["Content-Type"] = "application/json"
    return response


def _json_response(status: int, payload) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")
