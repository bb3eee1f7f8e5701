"""notify_approval against a moto server: one email per approver (captured by moto's SES) with a
text and an HTML part and that approver's own links, and one Slack message posted to a local sink."""
from __future__ import annotations

import copy
import email
import email.policy
import json
import re
import time
import urllib.request

import pytest
from moto.ses.models import ses_backends

from local.outbox import Outbox
from mlops_shared.approval_tokens import SLACK_ANY_APPROVER, verify_token
from mlops_shared.approval_messages import fmt_number
from tests.approval_world import (API_BASE, APPROVERS, EVENTS, GROUP, SENDER, TOKEN_KEY, build_world,
                                  lambda_context, load_handler)


@pytest.fixture
def world(aws, monkeypatch, evaluation_outputs):
    return build_world(aws, monkeypatch, evaluation_outputs)


@pytest.fixture
def notify():
    return load_handler("notify_approval")


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path) as box:
        yield box


def pending_event(arn: str, status: str = "PendingManualApproval", group: str = GROUP) -> dict:
    event = copy.deepcopy(json.loads((EVENTS / "model_package_pending.json").read_text()))
    event["resources"] = [arn]
    event["detail"].update(ModelPackageArn=arn, ModelApprovalStatus=status, ModelPackageGroupName=group)
    return event


def sent_emails() -> list[email.message.EmailMessage]:
    backend = ses_backends["123456789012"]["us-east-1"]
    return [email.message_from_string(message.raw_data, policy=email.policy.default)
            for message in backend.sent_messages]


def links(html_text: str) -> dict[str, str]:
    return {text: href for href, text in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', html_text)}


def test_each_approver_gets_an_email_with_their_own_links_and_slack_gets_one_message(world, notify, outbox):
    world.set_slack_webhook(outbox.slack_webhook_url)
    result = notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert result == {"notified": True, "model_package_arn": world.model_package_arn, "emails_sent": 2,
                      "email_failures": [], "slack_posted": True, "already_notified": []}

    messages = sent_emails()
    assert sorted(str(m["To"]) for m in messages) == sorted(APPROVERS)
    for message in messages:
        assert message["From"] == SENDER
        assert message.get_content_type() == "multipart/alternative"
        report = world.report
        assert f"RMSE {fmt_number(report.rmse)}" in message["Subject"]
        text = message.get_body(preferencelist=("plain",)).get_content()
        html_text = message.get_body(preferencelist=("html",)).get_content()
        for part in (text, html_text):
            metrics = report.regression_metrics
            assert fmt_number(metrics.rmse.value) in part and fmt_number(metrics.mae.value) in part
            assert fmt_number(metrics.r2.value, 4) in part                                    # R²
            assert fmt_number(report.gate.rmse_threshold) in part                             # threshold
            assert fmt_number(report.champion.rmse) in part                                   # champion
            assert "s3://data-bucket/incoming/house_pricing.csv" in part and "v-42" in part
        found = links(html_text)
        assert set(found) >= {"Approve", "Reject", "predicted vs actual", "residuals"}
        assert "ignored" not in html_text  # only the PNGs right next to evaluation.json
        for action, label in (("approve", "Approve"), ("reject", "Reject")):
            url = found[label].replace("&amp;", "&")
            assert url.startswith(f"{API_BASE}/approvals/")
            claims = verify_token(TOKEN_KEY, url.rsplit("/", 1)[1])
            assert (claims.model_package_arn, claims.action, claims.approver, claims.channel) == (
                world.model_package_arn, action, str(message["To"]), "email")
            assert url in text
        plot_url = found["residuals"].replace("&amp;", "&")
        with urllib.request.urlopen(plot_url, timeout=10) as response:  # presigned GET really works
            assert response.read().startswith(b"\x89PNG")

    [slack_file] = outbox.slack_messages()
    slack = json.loads(slack_file.read_text())
    assert fmt_number(world.report.rmse) in json.dumps(slack)
    [actions] = [block for block in slack["blocks"] if block["type"] == "actions"]
    buttons = {button["action_id"]: button["value"] for button in actions["elements"]}
    assert set(buttons) == {"approve", "reject"}
    for action, value in buttons.items():
        claims = verify_token(TOKEN_KEY, value)
        assert (claims.action, claims.approver, claims.channel) == (action, SLACK_ANY_APPROVER, "slack")


def test_slack_placeholder_is_skipped_and_email_still_goes_out(world, notify):
    result = notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert result["emails_sent"] == 2 and result["slack_posted"] is False


@pytest.mark.parametrize("status,group", [("Approved", GROUP), ("PendingManualApproval", "someone-elses-group")])
def test_other_events_are_ignored(world, notify, status, group):
    result = notify.lambda_handler(pending_event(world.model_package_arn, status, group), lambda_context)
    assert result["notified"] is False
    assert sent_emails() == []


def test_undeliverable_email_fails_the_invocation_after_trying_everyone(world, notify, monkeypatch, outbox):
    world.set_slack_webhook(outbox.slack_webhook_url)
    monkeypatch.setenv("APPROVER_EMAILS", f"{APPROVERS[0]},not-an-address")
    with pytest.raises(notify.NotificationIncomplete):
        notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert [str(m["To"]) for m in sent_emails()] == [APPROVERS[0]]
    assert len(outbox.slack_messages()) == 1  # the others were still told


def test_unreachable_slack_fails_the_invocation_but_emails_are_sent(world, notify):
    world.set_slack_webhook("http://127.0.0.1:9/slack/webhook")  # nothing listens on the discard port
    with pytest.raises(notify.NotificationIncomplete):
        notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert len(sent_emails()) == 2


def test_a_retried_notification_reaches_only_those_not_reached_yet(world, notify, monkeypatch, outbox):
    world.set_slack_webhook(outbox.slack_webhook_url)
    monkeypatch.setenv("APPROVER_EMAILS", f"{APPROVERS[0]},not-an-address")
    with pytest.raises(notify.NotificationIncomplete):
        notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert [str(m["To"]) for m in sent_emails()] == [APPROVERS[0]]

    # The address is fixed and the event retried: only the approver not reached yet gets an email.
    monkeypatch.setenv("APPROVER_EMAILS", f"{APPROVERS[0]},{APPROVERS[1]}")
    retried = notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert retried["emails_sent"] == 1 and retried["slack_posted"] is False
    assert retried["already_notified"] == sorted([APPROVERS[0], "slack-channel"])
    assert [str(m["To"]) for m in sent_emails()] == list(APPROVERS)
    assert len(outbox.slack_messages()) == 1

    # The same event delivered once more (EventBridge delivers at least once): nobody is told twice.
    again = notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert again["emails_sent"] == 0 and again["already_notified"] == sorted([*APPROVERS, "slack-channel"])
    assert len(sent_emails()) == 2 and len(outbox.slack_messages()) == 1


def test_a_notification_whose_sender_died_is_sent_by_a_retry_after_its_lease(world, notify, outbox):
    """A claim left `sending` (the function died before SES answered) is retried, not skipped: the
    attempt within the lease fails so EventBridge/Lambda try again, the one after it sends."""
    from mlops_shared.approvals import NOTIFICATION_LEASE_SECONDS, ApprovalSettings, notify_approvers

    world.set_slack_webhook(outbox.slack_webhook_url)
    settings = ApprovalSettings.from_env()
    dynamodb = world.client("dynamodb")
    dynamodb.put_item(TableName=world.table, Item={
        "id": {"S": f"notified#{world.model_package_arn}#approval-request#{APPROVERS[1]}"},
        "state": {"S": "sending"}, "lease_expires_at": {"N": str(int(time.time()) + NOTIFICATION_LEASE_SECONDS)}})
    first = notify_approvers(world.model_package_arn, settings, token_key=TOKEN_KEY,
                             slack_webhook_url=outbox.slack_webhook_url)
    assert not first.complete and list(first.email_failures) == [APPROVERS[1]]
    assert first.emails_sent == [APPROVERS[0]] and first.slack_posted
    later = notify_approvers(world.model_package_arn, settings, token_key=TOKEN_KEY,
                             slack_webhook_url=outbox.slack_webhook_url, now=time.time() + NOTIFICATION_LEASE_SECONDS + 1)
    assert later.complete and later.emails_sent == [APPROVERS[1]]
    assert sorted(later.already_notified) == sorted([APPROVERS[0], "slack-channel"])
    assert sorted(str(m["To"]) for m in sent_emails()) == sorted(APPROVERS)



def test_the_approver_reads_the_exact_target_name_and_the_blanks_the_model_learned_from():
    from mlops_shared.approval_messages import PackageReview, email_html, email_text

    review = PackageReview(model_package_arn="arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
                           group_name="g", version=1, approval_status="PendingManualApproval",
                           target_column="Lot (acres)",
                           missing_share={"Square Feet": 0.12, "Baths.": 0.0, "größe_m²": 0.3, "a": 0.01, "b": 0.02},
                           dropped_rows=1234)
    for render in (email_text, email_html):
        text = render(review, "alice@example.com", "https://approve", "https://reject", "in 7 days")
        assert "target Lot (acres)" in text
        assert "missing values: größe_m² 30%, Square Feet 12%, b 2% and 1 more" in text
        assert "1,234 rows without a target left out" in text
