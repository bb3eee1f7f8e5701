"""The local AWS gateway: one HTTP endpoint on 127.0.0.1 that every client of the local face uses.

It serves moto (in server mode, in this process) and routes the calls moto cannot serve to local
services registered by the rest of the local runtime: by path (featurestore-runtime, Lambda invoke,
endpoint invocations) or by JSON-protocol operation (`X-Amz-Target`, e.g. `SageMaker.StartPipelineExecution`).
All SageMaker-family APIs share the signing name `sagemaker`, so routing on the credential scope
would not tell them apart; path and target do.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from local.aws.fault_injection import FaultInjector
from local.aws.stepfunctions_errors import install as install_step_functions_errors
from local.aws.wsgi_server import WSGIServer

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass
class MotoResponse:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class _PathRoute:
    pattern: re.Pattern
    methods: frozenset[str] | None
    app: WSGIApp


def _constraints_face():
    from local.aws.strict.face import ServiceConstraintsFace

    return ServiceConstraintsFace()


@dataclass
class LocalGateway:
    host: str = "127.0.0.1"
    port: int = 0
    _path_routes: list[_PathRoute] = field(default_factory=list)
    _target_routes: dict[str, WSGIApp] = field(default_factory=dict)
    faults: FaultInjector = field(default_factory=FaultInjector)
    # Refuses what AWS would refuse, before any route: a bare gateway checks the services'
    # constraints (ServiceConstraintsFace); LocalCloud sets the whole strict face (signatures and
    # IAM too). None turns every check off (`--no-strict`, debugging only).
    strict: Any = field(default_factory=lambda: _constraints_face())

    def __post_init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self._moto_app = DomainDispatcherApplication(create_backend_app)
        self._server: WSGIServer | None = None

    # -- registration -------------------------------------------------------------------------
    def route_path(self, pattern: str, app: WSGIApp, methods: Iterable[str] | None = None) -> None:
        """Send requests whose path matches `pattern` (a regex, anchored) to `app`."""
        self._path_routes.append(
            _PathRoute(re.compile(pattern + r"\Z"), frozenset(methods) if methods else None, app)
        )

    def route_target(self, target: str, app: WSGIApp) -> None:
        """Send JSON-protocol calls with this `X-Amz-Target` (e.g. `SageMaker.UpdateEndpoint`) to `app`."""
        self._target_routes[target] = app

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "LocalGateway":
        import moto.core.config

        # moto's Step Functions runner really executes ASL (Task/Choice/Map/...); Lambda tasks are
        # sent back to this gateway, which runs the handler code without Docker.
        moto.core.config.default_user_config["stepfunctions"] = {"execute_state_machine": True}
        moto.core.config.default_user_config.setdefault("lambda", {})["use_docker"] = False
        install_step_functions_errors()  # the runner names task errors as AWS does
        self._server = WSGIServer(self, self.host, self.port, name="local-gateway")
        self.port = self._server.port
        # moto's Step Functions runner sends its SDK/Lambda task calls to localhost:$MOTO_PORT;
        # pointing it here makes those calls take the same routes as every other client.
        os.environ["MOTO_PORT"] = str(self.port)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "LocalGateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- WSGI ---------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response):
        injected = self.faults.respond(environ, start_response)
        if injected is not None:
            return injected
        if self.strict is not None:
            _buffer_body(environ)
            refusal = self.strict.check(environ, environ["gateway.body"])
            if refusal is not None:
                status, headers, body = refusal
                start_response(f"{status} Refused", headers + [("Content-Length", str(len(body)))])
                return [body]
        route = self._route_for(environ)
        if route is None:
            return self._moto(environ, start_response)
        _buffer_body(environ)
        try:
            return route(environ, start_response)
        except Exception as exc:  # a local service failing must look like an AWS 500, not a hang
            log.exception("local service failed for %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return json_response(start_response, 500, {"__type": "InternalFailure", "message": str(exc)})

    def _moto(self, environ: dict, start_response):
        """moto's answer, with what AWS does differently: a missing S3 key is 403 for a caller who
        may not list the bucket. (User metadata names go out lower-case: local.aws.wsgi_server.)"""
        captured: dict = {}

        def relay(status, headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            if self.strict is not None and captured["status"] == 404:
                refusal = self.strict.check_missing_object(environ, 404)
                if refusal is not None:
                    captured["refusal"] = refusal
                    return lambda data: None
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        chunks = self._moto_app(environ, relay)
        if "refusal" in captured:
            if hasattr(chunks, "close"):
                chunks.close()
            status, headers, body = captured["refusal"]
            start_response(f"{status} Refused", headers + [("Content-Length", str(len(body)))])
            return [body]
        return chunks

    def _route_for(self, environ: dict) -> WSGIApp | None:
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target and target in self._target_routes:
            return self._target_routes[target]
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        for route in self._path_routes:
            if route.pattern.match(path) and (route.methods is None or method in route.methods):
                return route.app
        return None

    def call_moto(self, environ: dict, body: bytes | None = None) -> MotoResponse:
        """Forward a (buffered) request to moto unchanged and return its response."""
        environ = dict(environ)
        payload = environ.get("gateway.body", b"") if body is None else body
        environ["wsgi.input"] = io.BytesIO(payload)
        environ["CONTENT_LENGTH"] = str(len(payload))
        captured: dict = {}

        def start_response(status, headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = headers
            return lambda data: None

        chunks = self._moto_app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return MotoResponse(captured["status"], captured["headers"], data)


def _buffer_body(environ: dict) -> None:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["gateway.body"] = body
    environ["wsgi.input"] = io.BytesIO(body)


def request_json(environ: dict) -> dict:
    body = environ.get("gateway.body", b"")
    return json.loads(body) if body else {}


def json_response(start_response, status: int, payload: dict | list, headers: list | None = None):
    data = json.dumps(payload, default=str).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict", 500: "Internal Server Error"}.get(status, "Status")
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))] + (headers or []),
    )
    return [data]


def aws_error(start_response, status: int, code: str, message: str):
    """An error in the JSON-protocol shape botocore parses into ClientError(code, message)."""
    return json_response(start_response, status, {"__type": code, "message": message, "Message": message},
                         headers=[("x-amzn-ErrorType", code)])


def moto_passthrough(gateway: LocalGateway, start_response, environ: dict):
    """Forward to moto and relay its response unchanged; returns (wsgi body, MotoResponse)."""
    response = gateway.call_moto(environ)
    start_response(f"{response.status_code} {'OK' if response.status_code < 400 else 'Error'}", response.headers)
    return [response.body], response
