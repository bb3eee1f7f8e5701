"""The local outbox (emails from moto's SES, Slack posts to a local sink, one file each) and
following an approval email's link like a person (GET the page, submit its form)."""
from __future__ import annotations

import email
import email.policy
import json
import time
import urllib.error
import urllib.request

import boto3
import pytest

from local.cli.approve import ApprovalEmailNotFound, follow_approval_link, press_slack_button
from local.outbox import Outbox
from tests.approval_world import (SLACK_SIGNING_SECRET, HandlerHttpServer, LambdaService, build_world, lambda_context,
                                  load_handler)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_slack_posts_become_json_files(tmp_path):
    with Outbox(tmp_path) as outbox:
        for n in range(3):
            request = urllib.request.Request(outbox.slack_webhook_url, data=json.dumps({"text": f"hello {n}"}).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.read() == b"ok"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(outbox.slack_webhook_url, data=b"not json",
                                                          method="POST"), timeout=10)
        assert refused.value.code == 400
        assert outbox.slack_webhook_url.startswith("http://127.0.0.1:")
    files = sorted((tmp_path / "outbox").glob("*-slack-*.json"))
    assert [json.loads(f.read_text())["text"] for f in files] == ["hello 0", "hello 1", "hello 2"]


def test_ses_messages_become_eml_files_once(aws, tmp_path):
    ses = boto3.client("ses")
    ses.verify_email_identity(EmailAddress="sender@example.com")
    ses.send_email(Source="sender@example.com", Destination={"ToAddresses": ["a@example.com"]},
                   Message={"Subject": {"Data": "plain one"}, "Body": {"Text": {"Data": "hello"}}})
    raw = ("From: sender@example.com\r\nTo: b@example.com\r\nSubject: raw one\r\n"
           "Content-Type: text/plain\r\n\r\nbody\r\n")
    ses.send_raw_email(Source="sender@example.com", Destinations=["b@example.com"], RawMessage={"Data": raw})
    with Outbox(tmp_path, poll_interval=0.1) as outbox:
        files = wait_for(lambda: len(outbox.emails()) == 2 and outbox.emails())
        time.sleep(0.3)  # a few more polls must not write duplicates
        assert len(outbox.emails()) == 2
    subjects = sorted(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Subject"] for f in files)
    assert subjects == ["plain one", "raw one"]


def test_follow_approval_link_approves_like_a_person(aws, tmp_path, monkeypatch, evaluation_outputs):
    world = build_world(aws, monkeypatch, evaluation_outputs)
    api = HandlerHttpServer(load_handler("approval_api").lambda_handler)
    base = api.start()
    try:
        monkeypatch.setenv("APPROVAL_API_BASE_URL", base)
        with Outbox(tmp_path, poll_interval=0.1) as outbox:
            load_handler("notify_approval").lambda_handler(_pending_event(world.model_package_arn), lambda_context)
            with pytest.raises(ApprovalEmailNotFound):
                follow_approval_link(outbox.dir, "arn:aws:sagemaker:us-east-1:123456789012:model-package/x/9",
                                     "approve", wait_seconds=0)
            result = follow_approval_link(outbox.dir, world.model_package_arn, "approve",
                                          approver="bob@example.com")
            assert result["status_code"] == 200, result
            assert result["outcome"] == "approved"
            assert "Approved by bob@example.com via email" in result["page_text"]
            assert world.status() == "Approved"

            again = follow_approval_link(outbox.dir, world.model_package_arn, "reject")
            assert again["status_code"] == 409 and again["outcome"] == "refused"
            assert "no longer waiting for approval" in again["page_text"]
            assert world.status() == "Approved"
    finally:
        api.stop()


def test_press_slack_button_rejects_like_slack_would(aws, tmp_path, monkeypatch, evaluation_outputs):
    world = build_world(aws, monkeypatch, evaluation_outputs)
    handler = load_handler("approval_api").lambda_handler
    api, lambda_service = HandlerHttpServer(handler), LambdaService(handler)
    base = api.start()
    # The approval function hands each press off to an asynchronous invocation of itself.
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", lambda_service.start())
    try:
        with Outbox(tmp_path) as outbox:
            monkeypatch.setenv("SLACK_RESPONSE_URL_PREFIXES", f"{outbox.url}/")  # the outbox plays Slack
            world.set_slack_webhook(outbox.slack_webhook_url)
            load_handler("notify_approval").lambda_handler(_pending_event(world.model_package_arn), lambda_context)
            common = dict(interactions_url=f"{base}/slack/interactions", signing_secret=SLACK_SIGNING_SECRET,
                          response_url=outbox.slack_response_url)
            refused = press_slack_button(outbox.dir, world.model_package_arn, "reject", slack_user_id="U0NOBODY",
                                         **common)
            assert refused["status_code"] == 200  # Slack is answered at once; the refusal is told after
            [(_, outcome)] = lambda_service.drain()
            assert outcome["status_code"] == 403
            assert world.status() == "PendingManualApproval"
            done = press_slack_button(outbox.dir, world.model_package_arn, "reject", slack_user_id="U0ALICE", **common)
            assert done["status_code"] == 200, done
            lambda_service.drain()
            assert world.status() == "Rejected"
            texts = [json.loads(path.read_text())["text"] for path in outbox.slack_messages()]
            assert texts[0].startswith("Approval needed:")
            assert texts[1].startswith("Not done:")
            assert "Rejected by alice@example.com via slack" in texts[2]
    finally:
        api.stop()
        lambda_service.stop()


def _pending_event(arn: str) -> dict:
    from tests.approval_world import EVENTS

    event = json.loads((EVENTS / "model_package_pending.json").read_text())
    event["detail"]["ModelPackageArn"] = arn
    return event
