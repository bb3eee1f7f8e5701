"""Notify approvers: a model package of our group is waiting for manual approval.

Triggered by EventBridge `SageMaker Model Package State Change` (ModelApprovalStatus
PendingManualApproval, our group). Emails each approver their own signed approve/reject links
(SES) and posts one Slack message with approve/reject buttons; each recipient at most once per
package, so a retried event reaches only those an earlier attempt did not.

Also invoked directly with `{"fresh_links": {"model_package_arn": ..., "recipient": email | null}}`
(the approval API's expired-link page, `mlops approvals resend`): fresh links by email to that
approver (or every approver), at most once per approver, package and hour.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities import parameters

from mlops_shared.approvals import PENDING, ApprovalSettings, Refusal, fresh_links_kind, notify_approvers
from mlops_shared.observability import TRACED_MODULES

if TYPE_CHECKING:  # an annotation only (postponed, never evaluated): nothing to load at cold start
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
tracer = Tracer(patch_modules=TRACED_MODULES)
SECRET_CACHE_SECONDS = 300


class NotificationIncomplete(RuntimeError):
    """Raised so EventBridge retries the event (and finally parks it in the DLQ)."""


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    settings = ApprovalSettings.from_env()
    if "fresh_links" in event:
        return send_fresh_links(event["fresh_links"], settings)
    # The plain event, not Powertools' EventBridgeEvent: importing its data classes loads every event
    # type Powertools knows (tens of modules) at cold start to read one field.
    detail = event["detail"]
    arn = detail.get("ModelPackageArn")
    status = detail.get("ModelApprovalStatus")
    group = detail.get("ModelPackageGroupName")
    logger.append_keys(model_package_arn=arn)
    # The rule already filters on these; checking again keeps a misrouted event harmless.
    if not arn or status != PENDING or (settings.model_package_group_name and group != settings.model_package_group_name):
        logger.info("event ignored", extra={"status": status, "group": group})
        return {"notified": False, "reason": "not a pending package of this group"}

    token_key = parameters.get_secret(settings.token_secret_id, max_age=SECRET_CACHE_SECONDS)
    webhook_url = (parameters.get_secret(settings.slack_webhook_secret_id, max_age=SECRET_CACHE_SECONDS)
                   if settings.slack_webhook_secret_id else None)
    # Optional: with a bot token the plots are uploaded to Slack (shown even where the channel's
    # members cannot reach S3); without one, Slack shows them from their presigned links.
    bot_token = (parameters.get_secret(settings.slack_bot_token_secret_id, max_age=SECRET_CACHE_SECONDS)
                 if settings.slack_bot_token_secret_id and webhook_url else None)
    result = notify_approvers(arn, settings, token_key=token_key, slack_webhook_url=webhook_url, logger=logger,
                              slack_bot_token=bot_token)
    summary = {"notified": True, "model_package_arn": result.model_package_arn,
               "emails_sent": len(result.emails_sent), "email_failures": sorted(result.email_failures),
               "slack_posted": result.slack_posted, "already_notified": sorted(result.already_notified)}
    logger.info("approvers notified", extra=summary)
    if not result.complete:
        raise NotificationIncomplete(f"approval notification incomplete: {summary}")
    return summary


def send_fresh_links(request: dict, settings: ApprovalSettings) -> dict:
    arn = request.get("model_package_arn") or ""
    recipient = request.get("recipient")
    logger.append_keys(model_package_arn=arn)
    recipients = (recipient,) if recipient else settings.approver_emails
    token_key = parameters.get_secret(settings.token_secret_id, max_age=SECRET_CACHE_SECONDS)
    try:
        result = notify_approvers(arn, settings, token_key=token_key, slack_webhook_url=None, logger=logger,
                                  kind=fresh_links_kind(time.time()), recipients=tuple(recipients))
    except Refusal as refusal:
        logger.info("fresh links refused", extra={"reason": refusal.reason})
        return {"fresh_links": False, "status_code": refusal.status_code, "reason": refusal.reason}
    summary = {"fresh_links": True, "model_package_arn": result.model_package_arn, "emails_sent": sorted(result.emails_sent),
               "already_sent": sorted(result.already_notified), "email_failures": sorted(result.email_failures)}
    logger.info("fresh links", extra=summary)
    if not result.complete:
        raise NotificationIncomplete(f"fresh links incomplete: {summary}")
    return summary
