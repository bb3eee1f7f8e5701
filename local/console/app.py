"""The console's WSGI app and its server on 127.0.0.1.

Read-only: GET and HEAD only (405 otherwise); a Host header other than the console's own is refused
(a web page elsewhere cannot reach it through DNS rebinding); every page carries a CSP that allows
scripts, styles, images and fetches from the console itself only.

    server = ConsoleServer(lambda: ConsoleData(...)).start(); server.url
"""
from __future__ import annotations

import json
import logging
import mimetypes
import re
import urllib.parse
from pathlib import Path
from typing import Callable

from local.aws.wsgi_server import WSGIServer
from local.console import pages
from local.console.data import ConsoleData, NotFound

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store")]


class ConsoleApp:
    def __init__(self, data: Callable[[], ConsoleData]):
        self.data = data  # a fresh ConsoleData per request is cheap; clients are shared inside
        self.allowed_hosts: set[str] = set()
        self.routes = [
            (re.compile(r"/"), self.index),
            (re.compile(r"/executions/(?P<execution>[A-Za-z0-9-]+)"), self.execution),
            (re.compile(r"/api/executions/(?P<execution>[A-Za-z0-9-]+)"), self.live),
            (re.compile(r"/executions/(?P<execution>[A-Za-z0-9-]+)/steps/(?P<step>[A-Za-z0-9_-]+)/log"), self.step_log),
            (re.compile(r"/packages/(?P<version>\d+)"), self.package),
            (re.compile(r"/plots"), self.plot),
            (re.compile(r"/static/(?P<path>[A-Za-z0-9_./-]+)"), self.static),
        ]

    def __call__(self, environ: dict, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._respond(start_response, "405 Method Not Allowed", b"read-only console: GET only\n",
                                 "text/plain; charset=utf-8", [("Allow", "GET, HEAD")], method)
        host = environ.get("HTTP_HOST", "")
        if self.allowed_hosts and host not in self.allowed_hosts:
            return self._respond(start_response, "403 Forbidden", b"unexpected Host header\n",
                                 "text/plain; charset=utf-8", [], method)
        path = environ.get("PATH_INFO", "/")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        for pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match:
                try:
                    status, body, content_type = handler(query=query, **match.groupdict())
                except NotFound as missing:
                    status, body, content_type = "404 Not Found", pages.error_page(404, str(missing)), "text/html"
                except Exception:  # the page says so; the details are in the cloud's log
                    log.exception("console: %s failed", path)
                    status, body = "500 Internal Server Error", pages.error_page(500, "the console could not "
                                                                                 "answer; see the local cloud's log")
                    content_type = "text/html"
                break
        else:
            status, body, content_type = "404 Not Found", pages.error_page(404, f"no page {path}"), "text/html"
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        if content_type in ("text/html", "application/json"):
            content_type += "; charset=utf-8"
        return self._respond(start_response, status, data, content_type, [], method)

    @staticmethod
    def _respond(start_response, status: str, data: bytes, content_type: str, extra: list, method: str):
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                                *SECURITY_HEADERS, *extra])
        return [b"" if method == "HEAD" else data]

    # -- pages ---------------------------------------------------------------------------------
    def index(self, query):
        data = self.data()
        return "200 OK", pages.index_page(data.executions(), data.packages(), data.endpoint(), data.pipeline_name,
                                          data.group), "text/html"

    def execution(self, query, execution):
        data = self.data()
        arn = data.execution_arn(execution)
        return "200 OK", pages.execution_page(data.execution(arn), f"/api/executions/{execution}"), "text/html"

    def live(self, query, execution):
        data = self.data()
        return "200 OK", json.dumps(data.live(data.execution_arn(execution))), "application/json"

    def step_log(self, query, execution, step):
        data = self.data()
        arn = data.execution_arn(execution)
        return "200 OK", pages.log_page(data.execution(arn), data.step_log(arn, step)), "text/html"

    def package(self, query, version):
        data = self.data()
        arn = data.package_arn(int(version))
        return "200 OK", pages.package_page(data.package(arn), pages.lineage_block(data.lineage(arn))), "text/html"

    def plot(self, query):
        bucket, key = (query.get("bucket") or [""])[0], (query.get("key") or [""])[0]
        return "200 OK", self.data().plot(bucket, key), "image/png"

    def static(self, query, path):
        file = (STATIC_DIR / path).resolve()
        if STATIC_DIR.resolve() not in file.parents or not file.is_file() or ".." in path:
            raise NotFound(f"no static file {path}")
        return "200 OK", file.read_bytes(), mimetypes.guess_type(file.name)[0] or "application/octet-stream"


class ConsoleServer:
    """The console on 127.0.0.1 (any free port unless given)."""

    def __init__(self, data: Callable[[], ConsoleData], port: int = 0):
        self.app = ConsoleApp(data)
        self.server = WSGIServer(self.app, "127.0.0.1", port, name="console", threads=4)
        self.app.allowed_hosts = {f"127.0.0.1:{self.server.port}", f"localhost:{self.server.port}"}

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "ConsoleServer":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
