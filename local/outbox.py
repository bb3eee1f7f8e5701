"""The local outbox: every email and Slack message the system sends, as one file per message.

* Slack: an HTTP server on 127.0.0.1 plays Slack's incoming webhook and `response_url` endpoints;
  each JSON payload posted to it is written to ``<state>/outbox/<timestamp>-slack-<n>.json``.
* Email: moto (running in this process, behind the local gateway) keeps what SES "sent"; a poller
  writes each new message to ``<state>/outbox/<timestamp>-<n>.eml`` (RFC 822, opens in any mail
  reader; its links lead to the local approval API).

A person (or a test) opens these files and follows their links like real mail and chat.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/slack/webhook"
RESPONSE_PATH = "/slack/response"


def _timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


class Outbox:
    def __init__(self, state_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0,
                 poll_interval: float = 0.5):
        self.dir = Path(state_dir) / "outbox"
        self.host = host
        self.port = port
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._counter = 0
        self._seen_email_ids: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Outbox":
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        self._server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="outbox-slack", daemon=True),
            threading.Thread(target=self._poll_forever, name="outbox-ses", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        self.collect_emails()  # nothing sent before stop() is lost

    def __enter__(self) -> "Outbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def slack_webhook_url(self) -> str:
        """Put this in the Slack webhook secret: the approval message lands in the outbox."""
        return self.url + WEBHOOK_PATH

    @property
    def slack_response_url(self) -> str:
        """A `response_url` for simulated Slack interactions: message updates land in the outbox."""
        return self.url + RESPONSE_PATH

    # -- files --------------------------------------------------------------------------------
    def _next_path(self, kind: str, suffix: str) -> Path:
        with self._lock:
            self._counter += 1
            name = f"{_timestamp()}-{kind}{self._counter}{suffix}"
        return self.dir / name

    def write_slack(self, payload: dict | str) -> Path:
        path = self._next_path("slack-", ".json")
        text = json.dumps(payload, indent=2, ensure_ascii=False) if isinstance(payload, dict) else payload
        path.write_text(text + "\n", encoding="utf-8")
        return path

    def write_email(self, raw: str | bytes) -> Path:
        path = self._next_path("", ".eml")
        path.write_bytes(raw.encode("utf-8") if isinstance(raw, str) else raw)
        return path

    def emails(self) -> list[Path]:
        return sorted(self.dir.glob("*.eml"))

    def slack_messages(self) -> list[Path]:
        return sorted(self.dir.glob("*-slack-*.json"))

    # -- SES (moto, in this process) ----------------------------------------------------------
    def collect_emails(self) -> list[Path]:
        """Writes every SES message moto received since the last call; returns the new files."""
        from moto.ses.models import ses_backends

        written = []
        for regions in list(dict.values(ses_backends)):
            for backend in list(dict.values(regions)):
                for message in list(getattr(backend, "sent_messages", [])):
                    message_id = getattr(message, "id", None)
                    if message_id is None or message_id in self._seen_email_ids:
                        continue
                    raw = _as_rfc822(message)
                    if raw is None:
                        continue  # templated messages carry no body to show
                    self._seen_email_ids.add(message_id)
                    written.append(self.write_email(raw))
        return written

    def _poll_forever(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            try:
                self.collect_emails()
            except Exception:  # keep polling: one odd message must not stop the outbox
                log.exception("outbox: could not collect SES messages")

    # -- Slack sink ---------------------------------------------------------------------------
    def _handler_class(self):
        outbox = self

        class SlackSink(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", errors="replace")
                if not (self.path.startswith(WEBHOOK_PATH) or self.path.startswith(RESPONSE_PATH)):
                    self._reply(404, "no_service")
                    return
                try:
                    payload = _slack_payload(body, self.headers.get("Content-Type", ""))
                except ValueError:
                    self._reply(400, "invalid_payload")
                    return
                outbox.write_slack(payload)
                self._reply(200, "ok")  # what Slack answers

            def _reply(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet: the files are the record
                pass

        return SlackSink


def _slack_payload(body: str, content_type: str) -> dict:
    if "application/x-www-form-urlencoded" in content_type:
        form = parse_qs(body)
        if "payload" not in form:
            raise ValueError("form without payload")
        body = form["payload"][0]
    payload = json.loads(body)
    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    return payload


def _as_rfc822(message) -> str | None:
    raw = getattr(message, "raw_data", None)
    if raw is not None:
        return raw
    body = getattr(message, "body", None)
    if body is None:
        return None
    email = EmailMessage()
    email["From"] = message.source
    destinations = getattr(message, "destinations", {}) or {}
    for header, key in (("To", "ToAddresses"), ("Cc", "CcAddresses")):
        if destinations.get(key):
            email[header] = ", ".join(destinations[key])
    email["Subject"] = getattr(message, "subject", "") or ""
    email["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    subtype = "html" if body.lstrip().lower().startswith(("<!doctype", "<html")) else "plain"
    email.set_content(body, subtype=subtype)
    return email.as_string()
