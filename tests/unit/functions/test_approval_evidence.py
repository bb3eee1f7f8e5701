"""The evidence approvers decide on, where they decide: the plots inline in the email (raw MIME with
cid: images, sent through SES on moto), as image blocks in Slack (presigned links, or files uploaded
with a bot token to a Slack double on 127.0.0.1), and on the confirmation page, whose CSP allows
exactly those images."""
from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto.ses.models import ses_backends

from local.outbox import Outbox
from mlops_shared import slack
from mlops_shared.approval_messages import (PAGE_CSP, PackageReview, Plot, build_email, fmt_number, image_source,
                                            page_csp)
from tests.approval_world import APPROVERS, BUCKET, EVAL_PREFIX, SENDER, build_world, lambda_context, load_handler
from tests.unit.functions.test_approval_api import call, token
from tests.unit.functions.test_notify_approval import pending_event

PNG = b"\x89PNG\r\n\x1a\n"
SES_RAW_MESSAGE_LIMIT = 10 * 1024 * 1024


@pytest.fixture
def world(aws, monkeypatch, evaluation_outputs):
    return build_world(aws, monkeypatch, evaluation_outputs)


@pytest.fixture
def notify():
    return load_handler("notify_approval")


@pytest.fixture
def api():
    return load_handler("approval_api")


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path) as box:
        yield box


def stored_plots(world) -> dict[str, bytes]:
    """file name -> bytes of the PNGs the Evaluate step left next to evaluation.json."""
    s3 = world.client("s3")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{EVAL_PREFIX}/")["Contents"]
            if item["Key"].endswith(".png") and "/" not in item["Key"][len(EVAL_PREFIX) + 1:]]
    return {key.rsplit("/", 1)[1]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def sent_raw_emails() -> list[tuple[bytes, email.message.EmailMessage]]:
    backend = ses_backends["123456789012"]["us-east-1"]
    return [(m.raw_data.encode(), email.message_from_string(m.raw_data, policy=email.policy.default))
            for m in backend.sent_messages]


# -- email ------------------------------------------------------------------------------------------
def test_the_email_embeds_each_plot_as_an_inline_image_its_html_points_at(world, notify):
    result = notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert result["emails_sent"] == len(APPROVERS)
    plots = stored_plots(world)
    assert set(plots) == {"predicted_vs_actual.png", "residuals.png", "feature_importance.png"}

    for raw, message in sent_raw_emails():
        assert len(raw) < SES_RAW_MESSAGE_LIMIT
        assert message.get_content_type() == "multipart/alternative"
        text_part, related = message.get_payload()
        assert text_part.get_content_type() == "text/plain"
        assert related.get_content_type() == "multipart/related"
        html_part, *images = related.get_payload()
        assert html_part.get_content_type() == "text/html"
        html_text = html_part.get_content()

        referenced = re.findall(r'<img src="cid:([^"]+)" alt="([^"]+)" width="(\d+)" height="(\d+)"', html_text)
        assert len(referenced) == len(plots) == len(images)
        by_cid = {image["Content-ID"].strip("<>"): image for image in images}
        assert {cid for cid, *_ in referenced} == set(by_cid)         # every cid: has its part, and back
        for cid, alt, width, height in referenced:
            image = by_cid[cid]
            assert image.get_content_type() == "image/png"
            assert image.get_content_disposition() == "inline"
            content = image.get_content()
            assert content == plots[image.get_filename()]              # the very PNG in S3
            assert alt.endswith(" plot") and 0 < int(width) <= 590 and int(height) > 0
        # The text part still lists each plot with its link.
        text = text_part.get_content()
        for name in ("predicted vs actual", "residuals", "feature importance"):
            assert re.search(rf"  {name}: https?://\S+\.png\?\S*Signature=", text), name


def review_with_plots(*sizes: int) -> PackageReview:
    plots = [Plot(f"plot {i}", f"https://artifacts.s3.amazonaws.com/e/p{i}.png?X-Amz-Signature=s{i}",
                  key=f"e/p{i}.png", size=size, width=1100, height=450, content=PNG + bytes(size - len(PNG)))
             for i, size in enumerate(sizes)]
    return PackageReview(model_package_arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/g/3",
                         group_name="g", version=3, approval_status="PendingManualApproval", rmse=1.0, plots=plots)


def test_plots_over_the_size_budget_stay_links_and_the_email_says_so():
    message = build_email(sender=SENDER, recipient=APPROVERS[0], review=review_with_plots(40_000, 90_000, 30_000),
                          approve_url="https://a/approve", reject_url="https://a/reject", expires_text="soon",
                          budget_bytes=100_000)
    html_part, *images = message.get_payload()[1].get_payload()
    assert sorted(image.get_filename() for image in images) == ["p0.png", "p2.png"]   # the largest left out
    html_text, text = html_part.get_content(), message.get_payload()[0].get_content()
    assert html_text.count('<img src="cid:') == 2
    assert "p1.png?X-Amz-Signature=s1" in html_text and "not embedded: at 0.1 MB it would make the email too large" in html_text
    assert "(not embedded: at 0.1 MB" in text


def test_a_plot_larger_than_an_email_may_carry_is_never_downloaded(world, monkeypatch):
    from mlops_shared import approval_messages, approvals

    s3 = boto3.client("s3")
    residuals = f"{EVAL_PREFIX}/residuals.png"
    size = s3.head_object(Bucket=BUCKET, Key=residuals)["ContentLength"]
    monkeypatch.setattr(approval_messages, "INLINE_IMAGES_BUDGET_BYTES", size - 1)
    downloads = []
    # Requests really sent (presigning builds the same parameters but sends nothing).
    s3.meta.events.register("before-call.s3.GetObject", lambda params, **_: downloads.append(
        (params["url_path"].rsplit("/", 1)[1], params["headers"].get("Range"))))
    review = approvals.load_package_review(world.model_package_arn, s3=s3, plot_content=True)
    by_name = {plot.name: plot for plot in review.plots}
    assert by_name["residuals"].content is None and by_name["residuals"].width    # sized from its header only
    assert ("residuals.png", "bytes=0-23") in downloads and ("residuals.png", None) not in downloads
    assert ("predicted_vs_actual.png", None) in downloads
    message = build_email(sender=SENDER, recipient=APPROVERS[0], review=review, approve_url="https://a/1",
                          reject_url="https://a/2", expires_text="soon", budget_bytes=size - 1)
    assert "residuals.png" not in [part.get_filename() for part in message.get_payload()[1].get_payload()[1:]]
    assert "(not embedded: at " in message.get_payload()[0].get_content()


# -- Slack ------------------------------------------------------------------------------------------
def valid_for_seconds(url: str) -> float:
    """How long a presigned S3 link stays valid from now (SigV4's X-Amz-Expires or SigV2's Expires)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "X-Amz-Expires" in query:
        return float(query["X-Amz-Expires"][0])
    return float(query["Expires"][0]) - time.time()


def image_blocks(payload: dict) -> list[dict]:
    return [block for block in payload["blocks"] if block["type"] == "image"]


def test_slack_shows_each_plot_as_an_image_block_on_a_link_valid_as_long_as_the_buttons(world, notify, outbox):
    world.set_slack_webhook(outbox.slack_webhook_url)
    notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    [posted] = outbox.slack_messages()
    blocks = image_blocks(json.loads(posted.read_text()))
    plots = stored_plots(world)
    assert len(blocks) == len(plots)
    for block in blocks:
        assert block["alt_text"].endswith(" plot of ray-mlops-models version 1") and block["title"]["text"]
        url = block["image_url"]
        assert valid_for_seconds(url) == pytest.approx(72 * 3600, abs=120)  # TOKEN_TTL_HOURS, like the buttons
        with urllib.request.urlopen(url, timeout=10) as response:      # Slack can fetch it
            assert response.read() == plots[urllib.parse.urlsplit(url).path.rsplit("/", 1)[1]]


class FakeSlackApi:
    """Slack's Web API file upload on 127.0.0.1: getUploadURLExternal, the upload URL, completeUploadExternal."""

    def __init__(self, upload_host: str | None = None):
        self.uploads: dict[str, bytes] = {}
        self.completed: list[dict] = []
        self.authorizations: list[str] = []
        self.upload_host = upload_host
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/upload/"):
                    fake.uploads[self.path.rsplit("/", 1)[1]] = body
                    return self._answer(b"OK - 1")
                fake.authorizations.append(self.headers.get("Authorization", ""))
                if self.path == "/api/files.getUploadURLExternal":
                    form = dict(urllib.parse.parse_qsl(body.decode()))
                    file_id = f"F{len(fake.authorizations):04d}"
                    assert int(form["length"]) > 0 and form["filename"].endswith(".png")
                    host = fake.upload_host or fake.url
                    return self._answer(json.dumps({"ok": True, "file_id": file_id,
                                                    "upload_url": f"{host}/upload/{file_id}"}).encode())
                if self.path == "/api/files.completeUploadExternal":
                    fake.completed.append(json.loads(body))
                    return self._answer(b'{"ok": true}')
                self._answer(b'{"ok": false, "error": "unknown_method"}')

            def _answer(self, data: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_with_a_bot_token_the_plots_are_uploaded_and_the_blocks_show_those_files(world, notify, outbox, monkeypatch):
    world.set_slack_webhook(outbox.slack_webhook_url)
    secret = boto3.client("secretsmanager").create_secret(Name="approval/slack-bot-token", SecretString="xoxb-test-1")
    with FakeSlackApi() as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN_SECRET_ARN", secret["ARN"])
        monkeypatch.setenv("SLACK_API_BASE_URL", f"{fake.url}/api/")
        monkeypatch.setenv("SLACK_UPLOAD_URL_PREFIXES", f"{fake.url}/upload/")
        notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    [posted] = outbox.slack_messages()
    blocks = image_blocks(json.loads(posted.read_text()))
    plots = stored_plots(world)
    assert len(blocks) == len(plots) and all("image_url" not in block for block in blocks)
    file_ids = [block["slack_file"]["id"] for block in blocks]
    assert sorted(file_ids) == sorted(fake.uploads)
    assert sorted(fake.uploads.values()) == sorted(plots.values())    # the PNGs themselves went to Slack
    assert sorted(f["files"][0]["id"] for f in fake.completed) == sorted(file_ids)
    assert set(fake.authorizations) == {"Bearer xoxb-test-1"}


def test_an_upload_url_off_slacks_file_host_gets_no_bytes():
    with FakeSlackApi(upload_host="http://127.0.0.2:9") as fake:
        with pytest.raises(slack.SlackUploadError, match="outside its file host"):
            slack.upload_file("xoxb-test-1", "p.png", PNG, "p", api_base_url=f"{fake.url}/api/",
                              upload_url_prefixes=(f"{fake.url}/upload/",))
        assert fake.uploads == {} and fake.completed == []
    with pytest.raises(slack.SlackUploadError, match="not configured"):
        slack.upload_file("REPLACE_ME", "p.png", PNG, "p")


# -- the confirmation page --------------------------------------------------------------------------
def csp_directives(policy: str) -> dict[str, list[str]]:
    directives = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_the_confirmation_page_shows_the_plots_and_the_champion_and_its_csp_allows_exactly_them(world, api):
    status, body, headers = call(api, "GET", f"/approvals/{token(world)}")
    assert status == 200
    images = re.findall(r"<img src='([^']+)' alt='([^']+)' width='(\d+)' height='(\d+)'", body)
    plots = stored_plots(world)
    assert len(images) == len(plots)
    srcs = [src.replace("&amp;", "&") for src, *_ in images]
    for src, (_, alt, width, height) in zip(srcs, images):
        assert alt.endswith(" plot") and 0 < int(width) <= 590 and int(height) > 0
        with urllib.request.urlopen(src, timeout=10) as response:
            assert response.read() == plots[urllib.parse.urlsplit(src).path.rsplit("/", 1)[1]]

    policy = csp_directives(headers["Content-Security-Policy"])
    expected = {f"{p.scheme}://{p.netloc}{p.path}" for p in map(urllib.parse.urlsplit, srcs)}
    assert set(policy.pop("img-src")) == expected                       # exactly the plots shown
    assert policy == csp_directives(PAGE_CSP)                            # nothing else widened
    assert "*" not in headers["Content-Security-Policy"] and "data:" not in headers["Content-Security-Policy"]

    # The champion comparison: both models' metrics side by side, and the limit.
    report = world.report
    assert "Challenger (this model)" in body and f"Champion v{report.champion.model_package_version}" in body
    for value in (report.rmse, report.champion.rmse, report.regression_metrics.mae.value, report.champion.mae):
        assert fmt_number(value) in body
    assert f"{fmt_number(report.gate.champion_rmse_limit)} (champion + tolerance)" in body


def test_image_sources_name_scheme_host_and_path_only():
    url = "https://b.s3.us-east-1.amazonaws.com/runs/a%3Bb,c/p.png?X-Amz-Signature=x&X-Amz-Expires=60"
    assert image_source(url) == "https://b.s3.us-east-1.amazonaws.com/runs/a%3Bb%2Cc/p.png"
    assert image_source("http://127.0.0.1:4566/bucket/p.png?x=1") == "http://127.0.0.1:4566/bucket/p.png"
    for bad in ("javascript:alert(1)", "data:image/png;base64,AAAA", "https://user@host/p.png", "https:///p.png"):
        assert image_source(bad) is None, bad
    assert page_csp([]) == PAGE_CSP
    assert page_csp(["data:image/png;base64,AAAA"]) == PAGE_CSP
