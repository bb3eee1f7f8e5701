"""Slack: incoming-webhook posts and verification of signed interaction requests.

Only the standard library is used, so the Lambda layer needs no HTTP client package.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

# Slack's own guidance: reject requests whose timestamp is more than five minutes away from now,
# so a captured request cannot be replayed later.
MAX_REQUEST_AGE_SECONDS = 5 * 60
# Secrets the stack creates hold a placeholder until ops put the real value in.
PLACEHOLDER_VALUES = {"", "UNSET", "REPLACE_ME", "PLACEHOLDER"}
# Where Slack's interaction `response_url`s point (https://api.slack.com/interactivity/handling).
RESPONSE_URL_PREFIXES = ("https://hooks.slack.com/",)


class SlackSignatureError(ValueError):
    """The request does not come from Slack (or is too old); `reason` is safe to return."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SlackPostError(RuntimeError):
    pass


def is_configured_secret(value: str | None) -> bool:
    return value is not None and value.strip().upper() not in PLACEHOLDER_VALUES


def is_webhook_url(value: str | None) -> bool:
    """True when `value` is a URL that can receive a post (ops may have left the placeholder)."""
    return is_configured_secret(value) and value.strip().lower().startswith(("https://", "http://"))


def _origin(url: str) -> str | None:
    """`scheme://host[:port]/` of `url`, lower-case; None when it has user info or no host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc}/".lower()


def is_response_url(url: str | None, allowed_prefixes: tuple[str, ...] = RESPONSE_URL_PREFIXES) -> bool:
    """True when `url` lies under one of the allowed prefixes, judged on its parsed origin, so user
    info (`https://hooks.slack.com@evil.example/`) or a look-alike host
    (`https://hooks.slack.com.evil.example/`) does not pass."""
    if not url or any(c.isspace() for c in url):
        return False
    origin = _origin(url)
    return origin is not None and any(
        _origin(prefix) == origin and url.lower().startswith(prefix.lower()) for prefix in allowed_prefixes)


def compute_signature(signing_secret: str, timestamp: str, raw_body: bytes | str) -> str:
    body = raw_body.encode() if isinstance(raw_body, str) else raw_body
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def verify_request(signing_secret: str | None, *, timestamp: str | None, signature: str | None,
                   raw_body: bytes | str, now: float | None = None) -> None:
    """Raises SlackSignatureError unless the request is signed by Slack within the last 5 minutes."""
    if not is_configured_secret(signing_secret):
        raise SlackSignatureError("Slack interactivity is not configured.")
    if not timestamp or not signature:
        raise SlackSignatureError("Missing Slack signature headers.")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise SlackSignatureError("Malformed Slack request timestamp.") from exc
    current = time.time() if now is None else now
    if abs(current - sent_at) > MAX_REQUEST_AGE_SECONDS:
        raise SlackSignatureError("Stale Slack request: its timestamp is more than 5 minutes away from now.")
    expected = compute_signature(signing_secret, timestamp, raw_body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SlackSignatureError("Invalid Slack signature.")


def post_json(url: str, payload: dict, *, timeout: float = 10.0) -> int:
    """POST `payload` as JSON to a webhook or a `response_url`; returns the HTTP status.

    A webhook URL is itself a credential: it never appears in errors or logs.
    """
    if not is_webhook_url(url):
        raise SlackPostError("the Slack URL is not configured")
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url.strip(), data=data, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            return response.status
    except urllib.error.HTTPError as exc:
        raise SlackPostError(f"Slack answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SlackPostError(f"Slack could not be reached ({type(exc).__name__})") from None


# -- files uploaded with a bot token ------------------------------------------------------------
# Slack's Web API and the hosts its upload URLs point at (files.getUploadURLExternal).
API_BASE_URL = "https://slack.com/api/"
UPLOAD_URL_PREFIXES = ("https://files.slack.com/",)


class SlackUploadError(RuntimeError):
    pass


def _api_call(api_base_url: str, method: str, token: str, *, form: dict | None = None,
              payload: dict | None = None, timeout: float = 10.0) -> dict:
    """One Web API call; raises SlackUploadError unless Slack answers `ok`. The token never
    appears in errors or logs."""
    from urllib.parse import urlencode

    if payload is not None:
        data, content_type = json.dumps(payload).encode(), "application/json; charset=utf-8"
    else:
        data, content_type = urlencode(form or {}).encode(), "application/x-www-form-urlencoded"
    request = urllib.request.Request(f"{api_base_url.rstrip('/')}/{method}", data=data, method="POST",
                                     headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - https (or a test's loopback)
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise SlackUploadError(f"Slack {method} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise SlackUploadError(f"Slack {method} could not be reached ({type(exc).__name__})") from None
    if not answer.get("ok"):
        raise SlackUploadError(f"Slack {method} refused: {answer.get('error', 'unknown error')}")
    return answer


def upload_file(token: str, filename: str, content: bytes, title: str, *, api_base_url: str = API_BASE_URL,
                upload_url_prefixes: tuple[str, ...] = UPLOAD_URL_PREFIXES, timeout: float = 10.0) -> str:
    """Uploads `content` as a file of the bot (not shared in any channel: the message's image
    blocks show it) through files.getUploadURLExternal, the upload URL and
    files.completeUploadExternal; returns the file id."""
    if not is_configured_secret(token):
        raise SlackUploadError("the Slack bot token is not configured")
    ticket = _api_call(api_base_url, "files.getUploadURLExternal", token.strip(),
                       form={"filename": filename, "length": str(len(content))}, timeout=timeout)
    upload_url, file_id = ticket.get("upload_url", ""), ticket.get("file_id", "")
    # The file's bytes go only where Slack's own upload host is (judged on the parsed origin).
    if not file_id or not is_response_url(upload_url, upload_url_prefixes):
        raise SlackUploadError("Slack gave an upload URL outside its file host")
    request = urllib.request.Request(upload_url, data=content, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - checked above
            response.read()
    except urllib.error.HTTPError as exc:
        raise SlackUploadError(f"Slack's upload URL answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SlackUploadError(f"Slack's upload URL could not be reached ({type(exc).__name__})") from None
    _api_call(api_base_url, "files.completeUploadExternal", token.strip(),
              payload={"files": [{"id": file_id, "title": title}]}, timeout=timeout)
    return file_id
