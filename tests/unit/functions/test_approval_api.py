"""The approval API against a moto server: links act once, only for listed approvers, only on POST,
only while the package is pending; every refusal is a 4xx page and changes nothing."""
from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from local.outbox import Outbox
from mlops_shared.approval_tokens import SLACK_ANY_APPROVER, issue_token
from mlops_shared.slack import compute_signature
from mlops_shared.approval_messages import fmt_number
from tests.approval_world import (API_BASE, APPROVERS, SLACK_SIGNING_SECRET, TOKEN_KEY, HandlerHttpServer, LambdaService,
                                  api_event, build_world, lambda_context, load_handler)
from tests.lambda_handlers import emitted_metrics

PENDING = "PendingManualApproval"


@pytest.fixture
def world(aws, monkeypatch, evaluation_outputs):
    return build_world(aws, monkeypatch, evaluation_outputs)


@pytest.fixture
def api():
    return load_handler("approval_api")


def token(world, action="approve", approver=APPROVERS[0], channel="email", key=TOKEN_KEY, ttl=3600,
          arn=None, now=None):
    return issue_token(key, model_package_arn=arn or world.model_package_arn, action=action,
                       approver=approver, channel=channel, ttl_seconds=ttl, now=now)


def call(api, method, path, body=None, headers=None):
    response = api.lambda_handler(api_event(method, path, body=body, headers=headers), lambda_context)
    headers = dict(response.get("headers") or {})
    headers.update({key: values[-1] for key, values in (response.get("multiValueHeaders") or {}).items()})
    return response["statusCode"], response["body"], headers


def post(api, tok):
    return call(api, "POST", f"/approvals/{tok}", body="confirm=yes")


def assert_untouched(world):
    assert world.status() == PENDING
    assert not world.description()
    assert world.nonce_items() == []


# -- email links -----------------------------------------------------------------------------------
def test_get_shows_a_confirmation_page_and_changes_nothing(world, api):
    status, body, headers = call(api, "GET", f"/approvals/{token(world)}")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    assert "Approve this model?" in body
    assert "alice@example.com" in body                       # who you are
    report = world.report
    assert fmt_number(report.rmse) in body and fmt_number(report.champion.rmse) in body  # model's and champion's RMSE
    assert "<form method='post'>" in body                     # posts back to the same URL
    assert "marked Approved" in body                          # what will happen
    assert "predicted vs actual" in body                      # plot links, freshly presigned
    assert_untouched(world)


@pytest.mark.parametrize("action,expected", [("approve", "Approved"), ("reject", "Rejected")])
def test_post_decides_once_and_records_who_how_when(world, api, action, expected):
    status, body, _ = post(api, token(world, action=action, approver=APPROVERS[1]))
    assert status == 200, body
    assert f"data-outcome='{expected.lower()}'" in body
    assert world.status() == expected
    description = world.description()
    assert description.startswith(f"{expected} by bob@example.com via email at ")
    assert description.endswith("Z")
    assert {item["id"]["S"].split("#")[0] for item in world.nonce_items()} == {"nonce", "decision"}


def test_replayed_token_is_refused_and_changes_nothing(world, api, capsys):
    tok = token(world)
    assert post(api, tok)[0] == 200
    first_description = world.description()
    status, body, _ = post(api, tok)
    assert status == 409
    assert "already used" in body
    assert world.status() == "Approved"
    assert world.description() == first_description
    # Decisions and refusals are counted for the dashboard and the refusals alarm.
    assert emitted_metrics(capsys.readouterr().out) == {"ModelPackagesApproved": 1, "ApprovalRefusals": 1}


def test_pages_cannot_be_framed(world, api):
    for method, body in (("GET", None), ("POST", "confirm=yes")):
        _, _, headers = call(api, method, f"/approvals/{token(world, action='reject')}", body=body)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"


def _forge(tok: str, **changes) -> str:
    payload_part, signature_part = tok.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)))
    payload.update(changes)
    new_part = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{new_part}.{signature_part}"


def test_forged_and_tampered_tokens_are_refused(world, api):
    other_arn = world.register_package()
    cases = {
        "wrong key": token(world, key="another-secret-key-of-32-bytes!!"),
        "tampered arn": _forge(token(world, arn=world.model_package_arn), p=other_arn),
        "tampered action": _forge(token(world, action="reject"), a="approve"),
        "tampered approver": _forge(token(world, approver="mallory@example.com"), u=APPROVERS[0]),
        "garbage": "not-a-token",
    }
    for name, tok in cases.items():
        for method in ("GET", "POST"):
            status, body, _ = call(api, method, f"/approvals/{tok}", body="confirm=yes" if method == "POST" else None)
            assert status in (400, 403), (name, method, status)
            assert "Nothing was changed" in body, name
    assert_untouched(world)
    assert world.status(other_arn) == PENDING


def test_expired_token_is_refused(world, api):
    tok = token(world, ttl=60, now=time.time() - 3600)
    status, body, _ = post(api, tok)
    assert status == 410
    assert "expired" in body
    assert_untouched(world)


def test_unknown_or_removed_approver_is_refused_without_consuming_the_link(world, api, monkeypatch):
    status, body, _ = post(api, token(world, approver="mallory@example.com"))
    assert status == 403 and "not (or no longer) an allowed approver" in body

    tok = token(world, approver=APPROVERS[1])
    monkeypatch.setenv("APPROVER_EMAILS", APPROVERS[0])  # bob removed after the email went out
    assert post(api, tok)[0] == 403
    assert_untouched(world)

    monkeypatch.setenv("APPROVER_EMAILS", ",".join(APPROVERS))  # a refusal consumed nothing
    assert post(api, tok)[0] == 200
    assert world.status() == "Approved"


def test_package_no_longer_pending_is_refused(world, api):
    world.client("sagemaker").update_model_package(ModelPackageArn=world.model_package_arn,
                                                   ModelApprovalStatus="Rejected",
                                                   ApprovalDescription="Rejected in the console")
    for tok in (token(world), token(world, action="reject")):
        status, body, _ = post(api, tok)
        assert status == 409
        assert "no longer waiting for approval: it is Rejected" in body
    assert world.status() == "Rejected"
    assert world.description() == "Rejected in the console"
    assert world.nonce_items() == []


def test_a_second_approvers_link_is_refused_after_a_decision(world, api):
    assert post(api, token(world, action="reject", approver=APPROVERS[0]))[0] == 200
    status, body, _ = post(api, token(world, action="approve", approver=APPROVERS[1]))
    assert status == 409
    assert world.status() == "Rejected"


def test_slack_token_cannot_be_used_as_an_email_link(world, api):
    status, _, _ = post(api, token(world, approver=SLACK_ANY_APPROVER, channel="slack"))
    assert status == 403
    assert_untouched(world)


def _http(url, data=None):
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_twenty_concurrent_posts_of_one_token_make_exactly_one_transition(world, api):
    server = HandlerHttpServer(api.lambda_handler)
    base = server.start()
    try:
        url = f"{base}/approvals/{token(world)}"
        assert _http(url)[0] == 200  # a person opens the page first
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda _: _http(url, data=b"confirm=approve"), range(20)))
    finally:
        server.stop()
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == 1, statuses
    assert all(status == 409 for status in statuses if status != 200), statuses
    assert world.status() == "Approved"
    assert [item["id"]["S"].split("#")[0] for item in world.nonce_items()].count("decision") == 1


def test_concurrent_competing_decisions_make_exactly_one_transition(world, api):
    server = HandlerHttpServer(api.lambda_handler)
    base = server.start()
    try:
        urls = [f"{base}/approvals/{token(world, action=action, approver=approver)}"
                for action in ("approve", "reject") for approver in APPROVERS for _ in range(3)]
        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            results = list(pool.map(lambda url: _http(url, data=b"confirm=yes"), urls))
    finally:
        server.stop()
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 1, statuses
    assert all(400 <= status < 500 for status in statuses if status != 200), statuses
    winner = next(body for status, body in results if status == 200)
    expected = "Approved" if "data-outcome='approved'" in winner else "Rejected"
    assert world.status() == expected


# -- Slack interactivity ---------------------------------------------------------------------------
TEAM, APP = "T0TEAM", "A0APP"


def slack_request(world, *, action="approve", user="U0ALICE", response_url="", secret=SLACK_SIGNING_SECRET,
                  timestamp=None, tok=None, team=TEAM, app=APP):
    tok = tok or token(world, action=action, approver=SLACK_ANY_APPROVER, channel="slack")
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
               "team": {"id": team, "domain": "houses"}, "api_app_id": app,
               "actions": [{"action_id": action, "block_id": "approval", "value": tok, "type": "button"}],
               "response_url": response_url}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time() if timestamp is None else timestamp))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": compute_signature(secret, ts, body)}
    return body, headers


@pytest.fixture
def outbox(tmp_path, monkeypatch):
    with Outbox(tmp_path) as box:
        # The outbox plays Slack's response_url host (the stack allows https://hooks.slack.com/ only).
        monkeypatch.setenv("SLACK_RESPONSE_URL_PREFIXES", f"{box.url}/")
        yield box


@pytest.fixture
def slack(world, api, outbox, monkeypatch):
    """Slack configured (workspace, app), and Lambda's Invoke API for the function's hand-off."""
    monkeypatch.setenv("SLACK_TEAM_ID", TEAM)
    monkeypatch.setenv("SLACK_APP_ID", APP)
    service = LambdaService(api.lambda_handler)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", service.start())
    yield service
    service.stop()


def press(api, slack, world, outbox, **kwargs):
    """Slack's request: its answer, then what the hand-off did and what the person was told."""
    body, headers = slack_request(world, response_url=kwargs.pop("response_url", outbox.slack_response_url), **kwargs)
    started = time.monotonic()
    status, answer, _ = call(api, "POST", "/slack/interactions", body=body, headers=headers)
    answered_in = time.monotonic() - started
    handed_off = slack.drain()
    told = [json.loads(path.read_text()) for path in outbox.slack_messages()]
    return status, answer, answered_in, handed_off, told


def test_slack_press_is_answered_at_once_then_decided_and_the_message_replaced(world, api, slack, outbox):
    status, answer, answered_in, handed_off, told = press(api, slack, world, outbox, action="reject", user="U0BOB")
    assert (status, answer) == (200, "")
    assert answered_in < 3, answered_in
    assert slack.requests == [{"function": "arn:aws:lambda:us-east-1:123456789012:function:approval-api", "type": "Event"}]
    [(event, result)] = handed_off
    assert event["slack_interaction"]["user_id"] == "U0BOB"
    assert result == {"decided": True, "status": "Rejected", "model_package_arn": world.model_package_arn}
    assert world.status() == "Rejected"
    assert world.description().startswith("Rejected by bob@example.com via slack at ")
    [update] = told
    assert update["replace_original"] is True
    assert "Rejected by bob@example.com via slack" in update["text"]


def test_the_answer_does_not_wait_for_the_decision(world, api, slack, outbox, monkeypatch):
    """The decision is slow (a cold start, a busy registry): Slack still gets its answer at once."""
    from mlops_shared import approvals

    real_decide = approvals.decide

    def slow_decide(*args, **kwargs):
        time.sleep(4)
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(approvals, "decide", slow_decide)
    status, _, answered_in, handed_off, told = press(api, slack, world, outbox, action="approve", user="U0ALICE")
    assert status == 200 and answered_in < 3, answered_in
    assert handed_off[0][1]["decided"] is True and world.status() == "Approved"
    assert "Approved by alice@example.com" in told[0]["text"]


def test_slack_retries_are_acknowledged_without_acting_again(world, api, slack, outbox):
    body, headers = slack_request(world, response_url=outbox.slack_response_url)
    assert call(api, "POST", "/slack/interactions", body=body, headers={**headers, "X-Slack-Retry-Num": "1"})[0] == 200
    assert slack.drain() == [] and slack.requests == []
    assert_untouched(world)


@pytest.mark.parametrize("case", ["bad signature", "stale timestamp", "missing headers"])
def test_unsigned_or_stale_slack_requests_are_refused(world, api, slack, outbox, case):
    kwargs = {"bad signature": {"secret": "not-the-signing-secret"},
              "stale timestamp": {"timestamp": time.time() - 6 * 60},
              "missing headers": {}}[case]
    body, headers = slack_request(world, response_url=outbox.slack_response_url, **kwargs)
    if case == "missing headers":
        headers = {"Content-Type": headers["Content-Type"]}
    status, _, _ = call(api, "POST", "/slack/interactions", body=body, headers=headers)
    assert status == 401
    assert slack.requests == []
    assert_untouched(world)
    assert outbox.slack_messages() == []  # not from Slack: nothing is said back


@pytest.mark.parametrize("case", ["other workspace", "other app", "no workspace"])
def test_presses_from_another_workspace_or_app_are_refused_before_the_answer(world, api, slack, outbox, case):
    kwargs = {"other workspace": {"team": "T0OTHER"}, "other app": {"app": "A0OTHER"}, "no workspace": {"team": ""}}[case]
    status, answer, _, handed_off, told = press(api, slack, world, outbox, **kwargs)
    assert status == 403 and "may not decide these approvals" in answer
    assert handed_off == [] and slack.requests == [] and told == []
    assert_untouched(world)


@pytest.mark.parametrize("response_url", [
    "https://evil.example/hooks.slack.com/x", "https://hooks.slack.com.evil.example/actions/T/1/x",
    "https://hooks.slack.com@evil.example/actions/T/1/x", "http://hooks.slack.com/actions/T/1/x", "",
])
def test_response_urls_outside_slack_are_refused_and_never_posted_to(world, api, slack, outbox, monkeypatch,
                                                                      response_url):
    monkeypatch.delenv("SLACK_RESPONSE_URL_PREFIXES")  # the stack's setting: Slack's host only
    status, answer, _, handed_off, _ = press(api, slack, world, outbox, response_url=response_url)
    assert status == 400 and "not a Slack URL" in answer
    assert handed_off == [] and slack.requests == []
    assert_untouched(world)


def test_a_handed_off_press_posts_only_to_slack_even_if_the_invocation_is_forged(world, api, outbox, monkeypatch):
    monkeypatch.delenv("SLACK_RESPONSE_URL_PREFIXES")
    tok = token(world, approver=SLACK_ANY_APPROVER, channel="slack")
    forged = {"slack_interaction": {"user_id": "U0ALICE", "action_id": "approve", "token": tok,
                                    "response_url": f"{outbox.url}/elsewhere", "team_id": "", "app_id": ""}}
    result = api.lambda_handler(forged, lambda_context)
    assert result["decided"] is True  # a valid token and approver: only its invoker could send it
    assert outbox.slack_messages() == []  # the outbox would have received the post


@pytest.mark.parametrize("user", ["U0STRANGER", "U0GONE"])  # unmapped / mapped but not an approver
def test_slack_user_who_is_not_an_approver_is_refused(world, api, slack, outbox, user):
    status, _, _, handed_off, told = press(api, slack, world, outbox, user=user)
    assert status == 200
    assert handed_off[0][1]["decided"] is False and handed_off[0][1]["status_code"] == 403
    assert_untouched(world)
    [reply] = told
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert "not (or no longer) an allowed approver" in reply["text"]


def test_slack_button_whose_action_does_not_match_its_token_is_refused(world, api, slack, outbox):
    reject_token = token(world, action="reject", approver=SLACK_ANY_APPROVER, channel="slack")
    _, _, _, handed_off, told = press(api, slack, world, outbox, action="approve", tok=reject_token)
    assert handed_off[0][1]["status_code"] == 400
    assert "does not match" in told[0]["text"]
    assert_untouched(world)


def test_email_token_cannot_be_used_from_slack(world, api, slack, outbox):
    _, _, _, handed_off, _ = press(api, slack, world, outbox, tok=token(world))
    assert handed_off[0][1]["status_code"] == 403
    assert_untouched(world)


# -- a decider that dies between its claim and the status change --------------------------------------
DIE_AT_UPDATE = """
import os, sys, boto3
sys.path[:0] = [{root!r}, {shared!r}]
from tests.approval_world import api_event, lambda_context, load_handler

def die(**_):
    os._exit(17)  # what a Lambda timeout or crash does: no except/finally runs, nothing is released

boto3.setup_default_session()
boto3.DEFAULT_SESSION.events.register("before-call.sagemaker.UpdateModelPackage", die)
api = load_handler("approval_api")
api.lambda_handler(api_event("POST", "/approvals/{token}", body="confirm=yes"), lambda_context)
print("the decider did not die")
"""


def test_a_decider_that_died_after_its_claim_blocks_retries_only_for_the_lease(world, api):
    import subprocess
    import sys
    from pathlib import Path

    from mlops_shared import approvals
    from mlops_shared.approvals import CLAIM_LEASE_SECONDS, ApprovalSettings, decide
    from tests.approval_world import TOKEN_KEY as KEY

    root = Path(__file__).resolve().parents[3]
    tok = token(world)
    died = subprocess.run([sys.executable, "-c", DIE_AT_UPDATE.format(root=str(root), shared=str(root / "functions" / "shared"),
                                                                      token=tok)],
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == 17, (died.stdout, died.stderr)
    assert world.status() == PENDING
    states = {item["id"]["S"].split("#")[0]: item["state"]["S"] for item in world.nonce_items()}
    assert states == {"nonce": "claimed", "decision": "claimed"}  # the dead decider's claim stayed

    # Within the lease: refused, saying why and when to retry; the same for another approver's link.
    status, body, _ = post(api, tok)
    assert status == 409, body
    assert "being processed right now" in body
    wait = int(body.split("retry in ")[1].split(" s")[0])
    assert 0 < wait <= CLAIM_LEASE_SECONDS
    status, body, _ = post(api, token(world, action="reject", approver=APPROVERS[1]))
    assert status == 409 and "Another decision on this model package is being processed" in body
    assert world.status() == PENDING

    # After the lease: the same link decides, once; its replay is refused for good, also after a lease.
    after_lease = time.time() + CLAIM_LEASE_SECONDS + 1
    decision = decide(tok, channel="email", settings=ApprovalSettings.from_env(), token_key=KEY, now=after_lease)
    assert decision.status == "Approved" and world.status() == "Approved"
    states = {item["id"]["S"].split("#")[0]: item["state"]["S"] for item in world.nonce_items()}
    assert states == {"nonce": "decided", "decision": "decided"}
    for when in (None, after_lease + 2 * CLAIM_LEASE_SECONDS):
        with pytest.raises(approvals.Refusal, match="already used"):
            decide(tok, channel="email", settings=ApprovalSettings.from_env(), token_key=KEY, now=when)
    assert world.status() == "Approved"


def test_a_decider_that_died_after_the_status_change_leaves_the_package_decided_once(world, api, monkeypatch):
    """The status changed but the claim was never marked decided: after the lease, a retry of either
    link is refused by the package's status, which is what the claim protected."""
    from mlops_shared import approvals
    from mlops_shared.approvals import CLAIM_LEASE_SECONDS, ApprovalSettings, decide
    from tests.approval_world import TOKEN_KEY as KEY

    def died(*_args, **_kwargs):
        raise SystemExit("killed")  # stands for the process ending before this write

    tok = token(world, action="reject")
    with monkeypatch.context() as patched, pytest.raises(SystemExit):
        patched.setattr(approvals, "_record_decided", died)
        decide(tok, channel="email", settings=ApprovalSettings.from_env(), token_key=KEY)
    assert world.status() == "Rejected"
    after_lease = time.time() + CLAIM_LEASE_SECONDS + 1
    for retry in (tok, token(world, action="approve", approver=APPROVERS[1])):
        with pytest.raises(approvals.Refusal, match="no longer waiting for approval: it is Rejected"):
            decide(retry, channel="email", settings=ApprovalSettings.from_env(), token_key=KEY, now=after_lease)
    assert world.status() == "Rejected"


# -- rotation of the signing key ------------------------------------------------------------------
def test_links_minted_before_a_key_rotation_keep_working_until_they_expire(world, api):
    secrets = world.client("secretsmanager")
    before = token(world, approver=APPROVERS[0])
    new_key = "n" * 20 + "rotated-key-0123456789abcdef"
    secrets.put_secret_value(SecretId=world.token_secret_arn, SecretString=new_key)  # AWSPREVIOUS = the old key
    assert call(api, "GET", f"/approvals/{before}")[0] == 200
    after = token(world, action="reject", approver=APPROVERS[1], key=new_key)
    assert call(api, "GET", f"/approvals/{after}")[0] == 200
    expired_before = token(world, ttl=60, now=time.time() - 3600)
    status, body, _ = call(api, "GET", f"/approvals/{expired_before}")
    assert status == 410 and "expired" in body  # the old key never extends a link's life

    # Rotated twice, the first key signs nothing valid any more (a fresh execution environment).
    secrets.put_secret_value(SecretId=world.token_secret_arn, SecretString="z" * 20 + "third-key-0123456789abcdef")
    fresh = load_handler("approval_api")
    status, body, _ = call(fresh, "POST", f"/approvals/{before}", body="confirm=yes")
    assert status == 403 and "signature" in body
    assert call(fresh, "POST", f"/approvals/{after}", body="confirm=yes")[0] == 200
    assert world.status() == "Rejected"


def test_a_key_never_rotated_has_no_previous_version(world, api):
    from mlops_shared.approvals import token_key_versions

    assert token_key_versions(world.token_secret_arn, world.client("secretsmanager")) == (TOKEN_KEY,)


# -- fresh links for an expired one -----------------------------------------------------------------
NOTIFY_FUNCTION = "notify-approval"


@pytest.fixture
def fresh_links(world, api, monkeypatch):
    """The notify function behind Lambda's Invoke API, as the approval API calls it."""
    from moto.ses.models import ses_backends

    monkeypatch.setenv("NOTIFY_APPROVAL_FUNCTION", NOTIFY_FUNCTION)
    notify = load_handler("notify_approval")
    service = LambdaService(api.lambda_handler, functions={NOTIFY_FUNCTION: notify.lambda_handler})
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", service.start())
    backend = ses_backends["123456789012"]["us-east-1"]
    yield service, lambda: [m for m in backend.sent_messages]
    service.stop()


def _emails(sent):
    import email as email_lib
    import email.policy

    return [email_lib.message_from_string(m.raw_data, policy=email.policy.default) for m in sent()]


def test_an_expired_link_offers_fresh_links_sent_only_to_its_own_approver(world, api, fresh_links):
    from mlops_shared.approval_tokens import verify_token

    service, sent = fresh_links
    expired = token(world, approver=APPROVERS[1], ttl=60, now=time.time() - 3600)
    status, body, headers = call(api, "GET", f"/approvals/{expired}")
    assert status == 410 and "expired" in body
    assert f"action='../fresh-links/{expired}'" in body and "bob@example.com" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]

    # The request names another address: ignored, the link's approver is the only recipient.
    status, body, _ = call(api, "POST", f"/fresh-links/{expired}", body="resend=yes&to=mallory%40evil.example")
    assert status == 200 and "data-outcome='resent'" in body and "bob@example.com" in body
    [message] = _emails(sent)
    assert str(message["To"]) == APPROVERS[1]
    html_text = message.get_body(preferencelist=("html",)).get_content()
    fresh = re.findall(rf'href="{API_BASE}/approvals/([^"]+)"', html_text)
    assert fresh and all(verify_token(TOKEN_KEY, t).approver == APPROVERS[1] for t in fresh)
    assert world.status() == PENDING and not world.description()

    # Asked again (the button pressed twice, a script): no second email within the hour.
    status, body, _ = call(api, "POST", f"/fresh-links/{expired}", body="resend=yes")
    assert status == 200 and "data-outcome='already-resent'" in body
    assert len(sent()) == 1
    # The fresh link works.
    assert post(api, fresh[0])[0] == 200


@pytest.mark.parametrize("case", ["forged", "removed approver", "decided", "slack token"])
def test_fresh_links_are_refused_for_links_that_cannot_ask_for_them(world, api, fresh_links, monkeypatch, case):
    service, sent = fresh_links
    old = time.time() - 3600
    tok = {"forged": token(world, ttl=60, now=old, key="another-secret-key-of-32-bytes!!"),
           "removed approver": token(world, approver=APPROVERS[1], ttl=60, now=old),
           "decided": token(world, ttl=60, now=old),
           "slack token": token(world, approver=SLACK_ANY_APPROVER, channel="slack", ttl=60, now=old)}[case]
    if case == "removed approver":
        monkeypatch.setenv("APPROVER_EMAILS", APPROVERS[0])
    if case == "decided":
        assert post(api, token(world, action="reject"))[0] == 200
    status, body, _ = call(api, "GET", f"/approvals/{tok}")
    assert "resend" not in body  # no button offered
    status, body, _ = call(api, "POST", f"/fresh-links/{tok}", body="resend=yes")
    assert 400 <= status < 500 and "Nothing was changed" in body
    assert sent() == [] and service.requests == []
