"""The approval API against a moto server: links act once, only for listed approvers, only on POST,
only while the package is pending; every refusal is a 4xx page and changes nothing."""
from __future__ import annotations

import base64
import json
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
from tests.approval_world import (APPROVERS, SLACK_SIGNING_SECRET, TOKEN_KEY, HandlerHttpServer, api_event,
                                  build_world, lambda_context, load_handler)
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
def slack_request(world, *, action="approve", user="U0ALICE", response_url="", secret=SLACK_SIGNING_SECRET,
                  timestamp=None, tok=None):
    tok = tok or token(world, action=action, approver=SLACK_ANY_APPROVER, channel="slack")
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()},
               "actions": [{"action_id": action, "block_id": "approval", "value": tok, "type": "button"}],
               "response_url": response_url}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time() if timestamp is None else timestamp))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": compute_signature(secret, ts, body)}
    return body, headers


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path) as box:
        yield box


def test_slack_button_decides_and_replaces_the_message(world, api, outbox):
    body, headers = slack_request(world, action="reject", user="U0BOB", response_url=outbox.slack_response_url)
    status, _, _ = call(api, "POST", "/slack/interactions", body=body, headers=headers)
    assert status == 200
    assert world.status() == "Rejected"
    assert world.description().startswith("Rejected by bob@example.com via slack at ")
    [update] = outbox.slack_messages()
    message = json.loads(update.read_text())
    assert message["replace_original"] is True
    assert "Rejected by bob@example.com via slack" in message["text"]


@pytest.mark.parametrize("case", ["bad signature", "stale timestamp", "missing headers"])
def test_unsigned_or_stale_slack_requests_are_refused(world, api, outbox, case):
    kwargs = {"bad signature": {"secret": "not-the-signing-secret"},
              "stale timestamp": {"timestamp": time.time() - 6 * 60},
              "missing headers": {}}[case]
    body, headers = slack_request(world, response_url=outbox.slack_response_url, **kwargs)
    if case == "missing headers":
        headers = {"Content-Type": headers["Content-Type"]}
    status, _, _ = call(api, "POST", "/slack/interactions", body=body, headers=headers)
    assert status == 401
    assert_untouched(world)
    assert outbox.slack_messages() == []  # not from Slack: nothing is said back


@pytest.mark.parametrize("user", ["U0STRANGER", "U0GONE"])  # unmapped / mapped but not an approver
def test_slack_user_who_is_not_an_approver_is_refused(world, api, outbox, user):
    body, headers = slack_request(world, user=user, response_url=outbox.slack_response_url)
    status, _, _ = call(api, "POST", "/slack/interactions", body=body, headers=headers)
    assert status == 403
    assert_untouched(world)
    [reply] = outbox.slack_messages()
    reply = json.loads(reply.read_text())
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False


def test_slack_button_whose_action_does_not_match_its_token_is_refused(world, api):
    reject_token = token(world, action="reject", approver=SLACK_ANY_APPROVER, channel="slack")
    body, headers = slack_request(world, action="approve", tok=reject_token)
    assert call(api, "POST", "/slack/interactions", body=body, headers=headers)[0] == 400
    assert_untouched(world)


def test_email_token_cannot_be_used_from_slack(world, api):
    body, headers = slack_request(world, tok=token(world))
    assert call(api, "POST", "/slack/interactions", body=body, headers=headers)[0] == 403
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
