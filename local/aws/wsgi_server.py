"""The HTTP server under the local cloud's WSGI services (the AWS gateway, the API Gateway face).

waitress rather than werkzeug's development server: werkzeug answers every request with
`Connection: close`, so each AWS SDK call paid for a new TCP connection and a new server thread
(a third of the gateway's CPU per PutRecord went there). waitress keeps HTTP/1.1 connections
alive and handles `Expect: 100-continue`.

waitress serves from a fixed pool of threads, which deadlocks here: requests call back into the
same server while they hold a thread (the featurestore runtime describes its group through the
gateway; Step Functions → Lambda invoke → a handler calling AWS), so a burst of such requests can
hold every thread while their inner calls wait in the queue. The pool therefore grows whenever a
request would wait (up to a high cap) and keeps its threads for reuse.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher, WSGITask

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

DEFAULT_THREADS = 8  # started up front; more are added on demand
MAX_THREADS = 2048
# Ray ingest actors keep up to 16 connections each open; waitress's default cap (100) would make
# the 101st wait for an idle one to time out.
DEFAULT_CONNECTION_LIMIT = 1000


class _Task(WSGITask):
    """waitress writes every response header name capitalized (`X-Amz-Meta-Target`). S3 sends user
    metadata names lower-case, and the SDKs hand them to the caller as sent, so a client reading
    `Metadata["target"]` would miss it here: those names go out lower-case, as from S3."""

    def build_response_header(self) -> bytes:
        lines = super().build_response_header().split(b"\r\n")
        for index, line in enumerate(lines):
            name, colon, value = line.partition(b":")
            if colon and name.lower().startswith(b"x-amz-meta-"):
                lines[index] = name.lower() + colon + value
        return b"\r\n".join(lines)


class _Channel(HTTPChannel):
    """waitress 3.0.2 answers `Expect: 100-continue` on a request with `Content-Length: 0` with a
    100 and then waits for a body that never comes (botocore sends exactly that for an empty S3
    PutObject). A body-less request needs no go-ahead: it is complete as it stands."""

    task_class = _Task

    def send_continue(self):
        if self.request is not None and self.request.content_length == 0:
            self.request.expect_continue = False
            return
        super().send_continue()


class _GrowingDispatcher(ThreadedTaskDispatcher):
    """waitress's dispatcher, plus: a task that finds no idle thread gets a new one."""

    def __init__(self, max_threads: int):
        super().__init__()
        self.max_threads = max_threads

    def add_task(self, task) -> None:
        with self.lock:
            self.queue.append(task)
            running = len(self.threads) - self.stop_count
            idle = running - self.active_count
            if len(self.queue) > idle and running < self.max_threads:
                # What set_thread_count() does for one thread, under the same lock as the check,
                # so two requests arriving together cannot both count on one idle thread.
                number = next(n for n in range(len(self.threads) + 1) if n not in self.threads)
                self.threads.add(number)
                self.active_count += 1
                self.start_new_thread(self.handler_thread, number)
            self.queue_cv.notify()


class WSGIServer:
    """A WSGI app served on `host:port` (port 0 = any free one) from a background thread.

    The socket is bound on construction, so the port is known before `start()` (the local cloud
    writes it into the template's URLs before it serves anything)."""

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0, *, name: str = "wsgi-server",
                 threads: int = DEFAULT_THREADS, connection_limit: int = DEFAULT_CONNECTION_LIMIT):
        self.name = name
        self._map: dict = {}
        dispatcher = _GrowingDispatcher(MAX_THREADS)
        dispatcher.set_thread_count(threads)
        self._server = create_server(
            app, map=self._map, _dispatcher=dispatcher, host=host, port=port, threads=threads,
            connection_limit=connection_limit, ident=name, clear_untrusted_proxy_headers=True,
            expose_tracebacks=False,
        )
        self._server.channel_class = _Channel
        self.host = host
        self.port = self._server.socket.getsockname()[1]
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()  # the loop closes the trigger that stop() pulls

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "WSGIServer":
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        # The socket loop, with a stop check between rounds: sockets are closed by this thread only,
        # never under a poll() running in another.
        try:
            while not self._stopping.is_set() and self._map:
                wasyncore.loop(timeout=0.5, map=self._map, use_poll=True, count=1)
        finally:
            self._close()

    def _close(self) -> None:
        self._server.task_dispatcher.shutdown()
        with self._close_lock:
            wasyncore.close_all(self._map)
            self._closed = True

    def stop(self) -> None:
        """Stops accepting, closes every connection and the worker threads; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is None:  # bound but never started
            self._close()
            return
        with self._close_lock:
            if not self._closed:
                self._server.pull_trigger()  # wake the loop now rather than at its next timeout
        self._thread.join(timeout=15)
        self._thread = None
