"""Acting on an approval email from the local outbox the way a person does: open the newest email
about a model package, click Approve or Reject, read the confirmation page, press its button."""
from __future__ import annotations

import email
import email.policy
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin

BUTTON_TEXT = {"approve": "Approve", "reject": "Reject"}


class ApprovalEmailNotFound(LookupError):
    pass


class _PageParser(HTMLParser):
    """Collects links (href + text), the first form, the outcome marker and the visible text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.form: dict | None = None
        self.outcome: str | None = None
        self.text_parts: list[str] = []
        self._href: str | None = None
        self._link_text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("script", "style", "title"):
            self._skip += 1
        if tag == "a" and "href" in attributes:
            self._href, self._link_text = attributes["href"], []
        if tag == "form" and self.form is None:
            self.form = {"method": (attributes.get("method") or "get").lower(),
                         "action": attributes.get("action"), "fields": {}}
        if tag == "input" and self.form is not None and attributes.get("name"):
            self.form["fields"][attributes["name"]] = attributes.get("value") or ""
        if "data-outcome" in attributes and self.outcome is None:
            self.outcome = attributes["data-outcome"]

    def handle_endtag(self, tag):
        if tag in ("script", "style", "title") and self._skip:
            self._skip -= 1
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._link_text).strip()))
            self._href = None

    def handle_data(self, data):
        if self._href is not None:
            self._link_text.append(data)
        if not self._skip and data.strip():
            self.text_parts.append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(self.text_parts)


def _parse(html_text: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html_text)
    parser.close()
    return parser


def _html_part(message) -> str | None:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None else None


def find_approval_email(outbox_dir: str | Path, model_package_arn: str, approver: str | None = None):
    """The newest email about this package (for this approver, if given), parsed."""
    for path in sorted(Path(outbox_dir).glob("*.eml"), reverse=True):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message.get("X-Model-Package-Arn", "").strip() != model_package_arn:
            continue
        if approver and approver.lower() not in str(message.get("To", "")).lower():
            continue
        return path, message
    raise ApprovalEmailNotFound(f"no approval email for {model_package_arn}"
                                + (f" to {approver}" if approver else "") + f" in {outbox_dir}")


def approval_link(message, action: str) -> str:
    html_text = _html_part(message)
    if html_text is None:
        raise ApprovalEmailNotFound("the approval email has no HTML part")
    for href, text in _parse(html_text).links:
        if text == BUTTON_TEXT[action]:
            return href
    raise ApprovalEmailNotFound(f"the approval email has no {BUTTON_TEXT[action]} link")


def _request(url: str, data: bytes | None = None, timeout: float = 60) -> tuple[int, str]:
    headers = {"User-Agent": "mlops-local-approver", "Accept": "text/html"}
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - local API URL from our email
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


def follow_approval_link(outbox_dir: str | Path, model_package_arn: str, action: str,
                         approver: str | None = None, *, wait_seconds: float = 30.0) -> dict:
    """Opens the newest approval email for the package, follows its `action` link, confirms.

    Returns {"status_code", "outcome" ("approved" | "rejected" | "refused"), "page_text",
    "approver", "email"}: the result page as a person would read it.
    """
    if action not in BUTTON_TEXT:
        raise ValueError(f"action must be 'approve' or 'reject', got {action!r}")
    deadline = time.monotonic() + wait_seconds
    while True:  # the email may still be on its way to the outbox
        try:
            path, message = find_approval_email(outbox_dir, model_package_arn, approver)
            break
        except ApprovalEmailNotFound:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)
    url = approval_link(message, action)
    status, page = _request(url)
    parsed = _parse(page)
    if status >= 400 or parsed.form is None:
        return {"status_code": status, "outcome": parsed.outcome or "refused", "page_text": parsed.text,
                "approver": str(message.get("To", "")), "email": str(path)}
    form = parsed.form
    target = urljoin(url, form["action"]) if form["action"] else url
    status, page = _request(target, data=urlencode(form["fields"]).encode())
    parsed = _parse(page)
    outcome = parsed.outcome or ("refused" if status >= 400 else "unknown")
    return {"status_code": status, "outcome": outcome, "page_text": parsed.text,
            "approver": str(message.get("To", "")), "email": str(path)}


def press_slack_button(outbox_dir: str | Path, model_package_arn: str, action: str, *, interactions_url: str,
                       signing_secret: str, slack_user_id: str, response_url: str | None = None) -> dict:
    """Plays Slack: takes the newest approval message for the package from the outbox and sends the
    signed `block_actions` callback Slack would send when `slack_user_id` presses `action`.

    Returns {"status_code", "body"}; the message update (or the private refusal) lands in the outbox
    when `response_url` is the outbox's `slack_response_url`.
    """
    import hashlib
    import hmac
    import json

    for path in sorted(Path(outbox_dir).glob("*-slack-*.json"), reverse=True):
        message = json.loads(path.read_text())
        if model_package_arn not in json.dumps(message):
            continue
        buttons = {element.get("action_id"): element.get("value")
                   for block in message.get("blocks", []) if block.get("type") == "actions"
                   for element in block.get("elements", [])}
        if action in buttons:
            break
    else:
        raise ApprovalEmailNotFound(f"no Slack approval message for {model_package_arn} in {outbox_dir}")
    payload = {"type": "block_actions", "user": {"id": slack_user_id},
               "actions": [{"action_id": action, "block_id": "approval", "type": "button", "value": buttons[action]}],
               "response_url": response_url or ""}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + body,
                                 hashlib.sha256).hexdigest()
    request = urllib.request.Request(interactions_url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - local API URL
            return {"status_code": response.status, "body": response.read().decode("utf-8", errors="replace")}
    except urllib.error.HTTPError as exc:
        return {"status_code": exc.code, "body": exc.read().decode("utf-8", errors="replace")}
