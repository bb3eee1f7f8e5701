"""Approval API (API Gateway REST, proxy integration).

GET  /approvals/{token}   confirmation page: the model, its metrics, who you are, what will happen.
                          Never acts: mail scanners and link previews fetch links unasked.
POST /approvals/{token}   takes the decision (once), shows the result.
POST /fresh-links/{token}  an expired link's "email me fresh links" (to the link's approver only).
POST /slack/interactions  Slack's signed button callback: checked and answered at once (Slack waits
                          3 s, then retries), decided in an asynchronous invocation of this same
                          function, which updates the message through Slack's response_url.

Every refusal is a 4xx page that says why; nothing is changed by a refused request.
"""
from __future__ import annotations

import functools
import json
import warnings
from typing import TYPE_CHECKING

import boto3

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from mlops_shared import approval_messages as messages
from mlops_shared import slack
from mlops_shared.approval_tokens import KeyRing
from mlops_shared.approvals import (ApprovalSettings, Decision, Refusal, SlackInteraction, accept_slack_interaction,
                                    act_on_slack_interaction, check_fresh_links_request, check_token, decide,
                                    load_package_review, token_key_ring, utc_text)
from mlops_shared.observability import TRACED_MODULES, metrics_namespace

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
metrics = Metrics(namespace=metrics_namespace())
# A confirmation page counts nothing; Powertools would warn about the empty flush on every GET.
warnings.filterwarnings("ignore", message="No application metrics to publish")
app = APIGatewayRestResolver()
SECRET_CACHE_SECONDS = 300
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never leak it to linked sites
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    # frame-ancestors: no other site may frame a page whose button decides (clickjacking);
    # X-Frame-Options says the same to browsers that predate CSP level 2.
    "Content-Security-Policy": messages.PAGE_CSP,
    "X-Frame-Options": "DENY",
}


def _page(status_code: int, body: str, image_urls: list[str] | None = None) -> Response:
    """An HTML page; its CSP allows exactly the images in `image_urls` (the plots it shows)."""
    headers = PAGE_HEADERS
    if image_urls:
        headers = {**PAGE_HEADERS, "Content-Security-Policy": messages.page_csp(image_urls)}
    return Response(status_code=status_code, content_type="text/html; charset=utf-8", body=body,
                    headers=headers)


@functools.cache
def _token_key() -> KeyRing:
    # Both versions of the key (current and previous), re-read when a rotation shows up.
    return token_key_ring(ApprovalSettings.from_env().token_secret_id, max_age=SECRET_CACHE_SECONDS)


def _count_refusal(refusal: Refusal) -> None:
    logger.info("approval refused", extra={"status_code": refusal.status_code, "reason": refusal.reason})
    # A burst of refusals is someone guessing or replaying links (alarm ApprovalRefusalsAlarm).
    metrics.add_metric(name="ApprovalRefusals", unit=MetricUnit.Count, value=1)


@app.exception_handler(Refusal)
def refused(refusal: Refusal) -> Response:
    _count_refusal(refusal)
    return _page(refusal.status_code, messages.refusal_page(refusal.status_code, refusal.reason))


@app.exception_handler(slack.SlackSignatureError)
def not_from_slack(error: slack.SlackSignatureError) -> Response:
    logger.warning("Slack request refused", extra={"reason": error.reason})
    metrics.add_metric(name="ApprovalRefusals", unit=MetricUnit.Count, value=1)
    return Response(status_code=401, content_type="text/plain; charset=utf-8", body=error.reason)


@app.exception_handler(Exception)
def failed(error: Exception) -> Response:
    # Claims are released when the status update fails, so the person can simply try again.
    logger.exception("approval request failed")
    return _page(500, messages.refusal_page(500, "Something went wrong on our side; nothing was changed. "
                                                 "Please try the link again in a minute."))


def _decided(decision) -> None:
    logger.info("model package decided", extra={"model_package_arn": decision.model_package_arn,
                                                "status": decision.status, "approver": decision.approver})
    metrics.add_metric(name=f"ModelPackages{decision.status}", unit=MetricUnit.Count, value=1)


@app.get("/approvals/<token>")
def confirm(token: str) -> Response:
    settings = ApprovalSettings.from_env()
    try:
        claims, _package, approver = check_token(token, channel="email", settings=settings, token_key=_token_key())
    except Refusal as refusal:
        if refusal.status_code != 410:
            raise
        # Expired: if the link is ours and the package still waits, offer fresh links to its approver.
        try:
            expired = check_fresh_links_request(token, settings=settings, token_key=_token_key())
        except Refusal:
            raise refusal from None
        _count_refusal(refusal)
        return _page(410, messages.expired_link_page(refusal.reason, expired.approver, f"../fresh-links/{token}"))
    review = load_package_review(claims.model_package_arn, presign_seconds=3600)
    page = messages.confirmation_page(review, claims.action, approver, f"on {utc_text(claims.expires_at)}")
    return _page(200, page, image_urls=[plot.url for plot in review.plots])


@app.post("/approvals/<token>")
def act(token: str) -> Response:
    decision = decide(token, channel="email", settings=ApprovalSettings.from_env(), token_key=_token_key())
    _decided(decision)
    return _page(200, messages.result_page(decision.review_title, decision.model_package_arn,
                                           decision.action, decision.description))


@functools.cache
def lambda_client():
    return boto3.client("lambda")


@app.post("/fresh-links/<token>")
def resend(token: str) -> Response:
    """Fresh links for the approver the (expired) link names, sent by the notify function: to that
    address only, whatever the request says, at most once an hour."""
    settings = ApprovalSettings.from_env()
    claims = check_fresh_links_request(token, settings=settings, token_key=_token_key())
    response = lambda_client().invoke(
        FunctionName=settings.notify_function_name, InvocationType="RequestResponse",
        Payload=json.dumps({"fresh_links": {"model_package_arn": claims.model_package_arn,
                                            "recipient": claims.approver}}).encode())
    result = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError"):
        raise RuntimeError(f"the notify function failed: {result.get('errorMessage', result)}")
    if not result.get("fresh_links"):
        raise Refusal(result.get("status_code", 409), result.get("reason", "No fresh links could be sent."))
    sent = claims.approver in result.get("emails_sent", [])
    logger.info("fresh links requested", extra={"approver": claims.approver, "sent": sent})
    return _page(200, messages.fresh_links_page(claims.approver, sent))


@app.post("/slack/interactions")
def slack_interaction() -> Response:
    # Only Slack's button callbacks read the signing secret; the pages (most requests) never load
    # Powertools' parameters utility (its providers for SSM, AppConfig, DynamoDB and Secrets Manager).
    from aws_lambda_powertools.utilities import parameters

    settings = ApprovalSettings.from_env()
    event = app.current_event
    signing_secret = (parameters.get_secret(settings.slack_signing_secret_id, max_age=SECRET_CACHE_SECONDS)
                      if settings.slack_signing_secret_id else None)
    interaction = accept_slack_interaction(
        event.decoded_body or "",
        timestamp=event.get_header_value("X-Slack-Request-Timestamp"),
        signature=event.get_header_value("X-Slack-Signature"),
        signing_secret=signing_secret, settings=settings,
    )
    if event.get_header_value("X-Slack-Retry-Num"):
        # Slack resends a press it got no answer to within 3 s; the first delivery was handed off.
        logger.info("Slack retry acknowledged", extra={"retry": event.get_header_value("X-Slack-Retry-Num")})
        return Response(status_code=200, content_type="text/plain; charset=utf-8", body="")
    # Acknowledge first, act after: a cold start, the secrets and the decision itself can take longer
    # than the 3 s Slack waits. An asynchronous invocation of this function is the one hand-off that
    # needs no new resource (a queue would need its own consumer, DLQ and alarm); not retried by Lambda
    # (EventInvokeConfig), the person is told the outcome, or to press again.
    lambda_client().invoke(FunctionName=app.lambda_context.invoked_function_arn, InvocationType="Event",
                           Payload=json.dumps({"slack_interaction": interaction.to_dict()}).encode())
    logger.info("Slack interaction handed off", extra={"user_id": interaction.user_id, "action": interaction.action_id})
    return Response(status_code=200, content_type="text/plain; charset=utf-8", body="")


def act_on_slack(payload: dict) -> dict:
    """The asynchronous half of a Slack press (see `slack_interaction`)."""
    settings = ApprovalSettings.from_env()
    outcome = act_on_slack_interaction(SlackInteraction.from_dict(payload), settings=settings,
                                       token_key=_token_key(), logger=logger)
    if isinstance(outcome, Decision):
        _decided(outcome)
        return {"decided": True, "status": outcome.status, "model_package_arn": outcome.model_package_arn}
    _count_refusal(outcome)
    return {"decided": False, "status_code": outcome.status_code, "reason": outcome.reason}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
# Pages carry presigned plot links (temporary credentials): keep them out of traces.
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "slack_interaction" in event:
        return act_on_slack(event["slack_interaction"])
    return app.resolve(event, context)
