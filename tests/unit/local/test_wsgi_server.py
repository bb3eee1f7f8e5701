"""The local cloud's HTTP server: keep-alive, concurrency, clean stop."""
from __future__ import annotations

import http.client
import socket
import threading
import time

from local.aws.wsgi_server import WSGIServer


def hello_app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_one_connection_serves_many_requests():
    server = WSGIServer(hello_app).start()
    try:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
        connection.request("GET", "/")
        first = connection.getresponse()
        assert first.read() == b"hello"
        local_port = connection.sock.getsockname()[1]
        for n in range(20):
            connection.request("POST", "/", body=f"body-{n}".encode())
            response = connection.getresponse()
            assert response.status == 200 and response.read() == f"body-{n}".encode()
        # Still the same TCP connection: the server kept it alive.
        assert connection.sock.getsockname()[1] == local_port
        assert (first.getheader("Connection") or "").lower() != "close"
        connection.close()
    finally:
        server.stop()


def test_listens_on_loopback_and_knows_its_port_before_start():
    server = WSGIServer(hello_app)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()  # never started: still releases the socket
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def test_slow_requests_do_not_block_others():
    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            release.wait(10)
        return hello_app(environ, start_response)

    server = WSGIServer(app, threads=4).start()
    try:
        slow = threading.Thread(target=lambda: _get(server, "/slow"))
        slow.start()
        time.sleep(0.2)
        assert _get(server, "/fast") == b"hello"  # answered while /slow still holds a thread
        release.set()
        slow.join(10)
    finally:
        release.set()
        server.stop()


def test_stop_closes_the_port_and_is_idempotent():
    server = WSGIServer(hello_app).start()
    assert _get(server, "/") == b"hello"
    server.stop()
    server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def _get(server: WSGIServer, path: str) -> bytes:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def test_empty_body_with_expect_continue_is_answered():
    """botocore sends `Expect: 100-continue` with an empty S3 PutObject body."""
    server = WSGIServer(hello_app).start()
    try:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n")
            assert _read_until(sock, b"hello").startswith(b"HTTP/1.1 200 OK")
        # A request with a body still gets its go-ahead first.
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            assert _read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(b"abc")
            assert b"200 OK" in _read_until(sock, b"abc")
    finally:
        server.stop()


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {received!r}"
        received += chunk
    return received


def test_requests_that_call_back_into_the_server_never_starve_it():
    """A burst of requests that each call the same server while holding a thread (as the
    featurestore runtime's describe does through the gateway) must all finish, however few
    threads the server starts with."""
    holders = threading.Barrier(12, timeout=20)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/outer":
            holders.wait()  # all twelve hold a thread before any inner call is made
            inner = _get(server, "/inner")
            body = b"outer+" + inner
        else:
            body = b"inner"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    server = WSGIServer(app, threads=2).start()
    results: list[bytes] = []
    try:
        callers = [threading.Thread(target=lambda: results.append(_get(server, "/outer"))) for _ in range(12)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
        assert results == [b"outer+inner"] * 12
    finally:
        server.stop()


def test_user_metadata_header_names_go_out_lower_case_as_from_s3():
    """waitress capitalizes every header name; S3 sends `x-amz-meta-*` lower-case and botocore
    keeps the name as sent, so `Metadata["target"]` would be missing without the fix."""

    def app(environ, start_response):
        start_response("200 OK", [("x-amz-meta-target", "price"), ("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = WSGIServer(app).start()
    try:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = _read_until(sock, b"\r\n\r\n")
        assert b"\r\nx-amz-meta-target: price\r\n" in head
        assert b"\r\nContent-Type: text/plain\r\n" in head  # other names as waitress writes them
    finally:
        server.stop()
