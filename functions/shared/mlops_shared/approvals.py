"""Manual approval of registered models: who may decide, what they are shown, and the decision.

`notify_approvers` sends each approver an email with their own signed links and posts one Slack
message; `preview` checks a link without acting (the confirmation page); `decide` takes the
decision. A decision happens at most once per token and at most once per model package, even under
concurrent requests: both are claimed with one conditional DynamoDB transaction before the
package's status changes, and the claim is taken only once every other check has passed, so a
refused request consumes nothing.

A claim is a lease (`CLAIM_LEASE_SECONDS`), not a lock: when the function dies between the claim
and `UpdateModelPackage` (timeout, crash), nobody releases it, and a retry after the lease has run
out takes it over. Once the package's status has changed the claim is marked `decided` for good, so
a used link stays refused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import boto3
from botocore.exceptions import ClientError

from mlops_shared import approval_messages as messages
from mlops_shared import slack
from mlops_shared.approval_messages import PackageReview, Plot
from mlops_shared.approval_tokens import (
    SLACK_ANY_APPROVER,
    ApprovalToken,
    KeyRing,
    TokenError,
    TokenKey,
    issue_token,
    verify_token,
)
from mlops_shared.artifacts import PNG_HEADER_BYTES, EvaluationReport, png_dimensions
from mlops_shared.aws import parse_s3_uri

PENDING = "PendingManualApproval"
# Presigned S3 links cannot outlive 7 days (SigV4 limit).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# The per-package decision record is kept long after the tokens expire, as an audit trail.
DECISION_RECORD_TTL_SECONDS = 400 * 24 * 3600
# How long a claim stays another request's "being processed": longer than the approval function's
# timeout (29 s in template.yaml, the API Gateway limit), so a live decider always finishes within
# its lease, and short enough that a person retrying after a crash waits two minutes, not forever.
CLAIM_LEASE_SECONDS = 120
CLAIMED, DECIDED = "claimed", "decided"


class Refusal(Exception):
    """A request that must change nothing; `reason` is shown to the person, `status_code` is 4xx."""

    def __init__(self, status_code: int, reason: str):
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class ApprovalSettings:
    approver_emails: tuple[str, ...]
    slack_approvers: dict = field(default_factory=dict)  # Slack user id -> approver email
    sender_email: str = ""
    api_base_url: str = ""
    model_package_group_name: str = ""
    nonce_table: str = ""
    token_ttl_hours: float = 72.0
    token_secret_id: str = ""
    slack_webhook_secret_id: str = ""
    slack_signing_secret_id: str = ""
    slack_bot_token_secret_id: str = ""  # optional: plots are uploaded to Slack instead of linked
    slack_api_base_url: str = slack.API_BASE_URL
    slack_upload_url_prefixes: tuple[str, ...] = slack.UPLOAD_URL_PREFIXES
    slack_team_id: str = ""  # the workspace whose button presses count (payload `team.id`)
    slack_app_id: str = ""   # the Slack app that sent them (payload `api_app_id`)
    slack_response_url_prefixes: tuple[str, ...] = slack.RESPONSE_URL_PREFIXES
    notify_function_name: str = ""  # sends fresh links for the approval API

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "ApprovalSettings":
        env = os.environ if environ is None else environ
        return cls(
            approver_emails=parse_emails(env.get("APPROVER_EMAILS", "")),
            slack_approvers=parse_slack_approvers(env.get("SLACK_APPROVERS", "")),
            sender_email=env.get("SENDER_EMAIL", "").strip(),
            api_base_url=env.get("APPROVAL_API_BASE_URL", "").strip().rstrip("/"),
            model_package_group_name=env.get("MODEL_PACKAGE_GROUP_NAME", "").strip(),
            nonce_table=env.get("APPROVAL_NONCE_TABLE", "").strip(),
            token_ttl_hours=float(env.get("TOKEN_TTL_HOURS") or 72),
            token_secret_id=env.get("TOKEN_SECRET_ARN", "").strip(),
            slack_webhook_secret_id=env.get("SLACK_WEBHOOK_SECRET_ARN", "").strip(),
            slack_signing_secret_id=env.get("SLACK_SIGNING_SECRET_ARN", "").strip(),
            slack_bot_token_secret_id=env.get("SLACK_BOT_TOKEN_SECRET_ARN", "").strip(),
            # Only for a test double of Slack's Web API on the loopback; the stack never sets them.
            slack_api_base_url=env.get("SLACK_API_BASE_URL", "").strip() or slack.API_BASE_URL,
            slack_upload_url_prefixes=tuple(
                p.strip() for p in env.get("SLACK_UPLOAD_URL_PREFIXES", "").split(",") if p.strip()
            ) or slack.UPLOAD_URL_PREFIXES,
            slack_team_id=env.get("SLACK_TEAM_ID", "").strip(),
            slack_app_id=env.get("SLACK_APP_ID", "").strip(),
            notify_function_name=env.get("NOTIFY_APPROVAL_FUNCTION", "").strip(),
            # Only for a test double of Slack on the loopback; the stack never sets it.
            slack_response_url_prefixes=tuple(
                p.strip() for p in env.get("SLACK_RESPONSE_URL_PREFIXES", "").split(",") if p.strip()
            ) or slack.RESPONSE_URL_PREFIXES,
        )

    @property
    def token_ttl_seconds(self) -> int:
        return int(self.token_ttl_hours * 3600)

    def is_approver(self, email: str | None) -> bool:
        return bool(email) and email.strip().lower() in self.approver_emails


def parse_emails(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))


def parse_slack_approvers(value: str) -> dict:
    """`U0123=alice@example.com,U0456=bob@example.com` -> {"U0123": "alice@example.com", ...}."""
    mapping = {}
    for part in value.split(","):
        if not part.strip():
            continue
        user_id, sep, email = part.partition("=")
        if not sep or not user_id.strip() or not email.strip():
            raise ValueError(f"SLACK_APPROVERS entries must look like SLACKUSERID=email, got {part.strip()!r}")
        mapping[user_id.strip()] = email.strip().lower()
    return mapping


def utc_text(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- the signing key ---------------------------------------------------------------------------
def token_key_versions(secret_id: str, secretsmanager=None) -> tuple[str, ...]:
    """The link-signing key's AWSCURRENT value, then its AWSPREVIOUS one when there is one (a
    rotation keeps the links signed before it valid until they expire)."""
    secretsmanager = secretsmanager or boto3.client("secretsmanager")
    keys = [secretsmanager.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")["SecretString"]]
    try:
        keys.append(secretsmanager.get_secret_value(SecretId=secret_id, VersionStage="AWSPREVIOUS")["SecretString"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise  # never rotated: there is no previous version
    return tuple(keys)


def token_key_ring(secret_id: str, max_age: float = 300.0) -> KeyRing:
    return KeyRing(lambda: token_key_versions(secret_id), max_age=max_age)


# -- what approvers are shown -------------------------------------------------------------------
def load_package_review(model_package_arn: str, *, sagemaker=None, s3=None,
                        presign_seconds: int = MAX_PRESIGN_SECONDS, plot_content: bool = False) -> PackageReview:
    """Reads the package, its evaluation.json and the plots beside it (as presigned GET links, with
    their pixel size from each PNG's header; with `plot_content`, the PNGs themselves, to embed)."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    s3 = s3 or boto3.client("s3")
    package = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    metadata = package.get("CustomerMetadataProperties") or {}
    created = package.get("CreationTime")
    review = PackageReview(
        model_package_arn=package.get("ModelPackageArn", model_package_arn),
        group_name=package.get("ModelPackageGroupName", ""),
        version=package.get("ModelPackageVersion"),
        approval_status=package.get("ModelApprovalStatus", ""),
        created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
        dataset_uri=metadata.get("dataset_uri", ""),
        dataset_version=metadata.get("dataset_version", ""),
        target_column=metadata.get("target_column", ""),
    )
    statistics_uri = (((package.get("ModelMetrics") or {}).get("ModelQuality") or {})
                      .get("Statistics") or {}).get("S3Uri")
    if not statistics_uri:
        return review
    review.evaluation_uri = statistics_uri
    bucket, key = parse_s3_uri(statistics_uri)
    report = EvaluationReport.from_json(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    metrics = report.regression_metrics
    review.rmse = metrics.rmse.value
    review.rmse_std = metrics.rmse.standard_deviation
    review.mae = metrics.mae.value
    review.r2 = metrics.r2.value
    review.rmse_threshold = report.gate.rmse_threshold
    review.champion_rmse_limit = report.gate.champion_rmse_limit
    review.champion = dataclasses.asdict(report.champion) if report.champion else None
    review.rows = dataclasses.asdict(report.rows)
    # The exact target name as in the CSV (the registry holds a label that meets its pattern), and
    # the blanks the model was trained with.
    review.target_column = report.target or review.target_column
    review.missing_share = dict(report.missing_share or {})
    review.dropped_rows = report.dropped_rows or 0

    prefix = posixpath.dirname(key)
    prefix = f"{prefix}/" if prefix else ""
    paginator = s3.get_paginator("list_objects_v2")
    plot_sizes = {
        item["Key"]: item.get("Size")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if item["Key"].lower().endswith(".png") and "/" not in item["Key"][len(prefix):]
    }
    expires = max(60, min(int(presign_seconds), MAX_PRESIGN_SECONDS))
    # In the order the Evaluate step lists them (the most telling first), any others after them.
    listed = {name: index for index, name in enumerate(report.plots or [])}
    ordered = sorted(plot_sizes, key=lambda k: (listed.get(posixpath.basename(k), len(listed)), k))
    review.plots = [_read_plot(s3, bucket, plot_key, plot_sizes[plot_key], expires, plot_content) for plot_key in ordered]
    return review


def _read_plot(s3, bucket: str, key: str, size: int | None, expires: int, content: bool) -> Plot:
    """The plot at `key` as a presigned link, sized from its PNG header (the page's <img> gets width
    and height, so it does not jump while loading); a plot that cannot be read stays a bare link."""
    plot = Plot(name=posixpath.basename(key).rsplit(".", 1)[0].replace("_", " "),
                url=s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires),
                key=key, size=size)
    # A PNG larger than an email may carry is never downloaded (the email links it and says why).
    content = content and (size is None or size <= messages.INLINE_IMAGES_BUDGET_BYTES)
    try:
        if content:
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        else:  # the header is enough to size it
            data = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{PNG_HEADER_BYTES - 1}")["Body"].read()
    except ClientError:
        return plot
    dimensions = png_dimensions(data[:PNG_HEADER_BYTES])
    if dimensions:
        plot.width, plot.height = dimensions
        plot.content = data if content else None
    return plot


# -- notification -------------------------------------------------------------------------------
# A notification being sent blocks another attempt for this long: longer than the notify function's
# timeout (60 s), shorter than Lambda's asynchronous retries take (about 1 and 2 minutes apart), so a
# retry after a crash finds the lease run out. One that was sent blocks it for good.
NOTIFICATION_LEASE_SECONDS = 90
SENDING, SENT, SEND_FAILED = "sending", "sent", "failed"
SLACK_CHANNEL_RECIPIENT = "slack-channel"


@dataclass
class NotificationResult:
    model_package_arn: str
    emails_sent: list[str] = field(default_factory=list)
    email_failures: dict = field(default_factory=dict)  # recipient -> error text
    slack_posted: bool = False
    slack_error: str | None = None
    already_notified: list[str] = field(default_factory=list)  # recipients an earlier attempt reached

    @property
    def complete(self) -> bool:
        return not self.email_failures and self.slack_error is None


class NotificationLedger:
    """Who was told what, per recipient: EventBridge and Lambda retry a notification that failed for
    one approver, and the others must not get a second email with a second set of links.

    One item per (package, kind, recipient) in the approval table, claimed with a conditional put
    before sending (`sending`, a lease), then `sent` for good, or `failed` so a retry sends again."""

    def __init__(self, dynamodb, table: str, model_package_arn: str, kind: str, now: float, ttl_seconds: int):
        self.dynamodb, self.table, self.arn, self.kind = dynamodb, table, model_package_arn, kind
        self.now, self.ttl_seconds = now, ttl_seconds

    def _item(self, recipient: str, state: str) -> dict:
        item = {"id": {"S": f"notified#{self.arn}#{self.kind}#{recipient}"}, "state": {"S": state},
                "model_package_arn": {"S": self.arn}, "at": {"N": str(int(self.now))},
                "expires_at": {"N": str(int(self.now) + self.ttl_seconds + 24 * 3600)}}
        if state == SENDING:
            item["lease_expires_at"] = {"N": str(int(self.now) + NOTIFICATION_LEASE_SECONDS)}
        return item

    def claim(self, recipient: str) -> str:
        """`send` when this attempt should send to `recipient` (nobody did, or that attempt failed or
        died), `sent` when an earlier attempt did, `busy` while another attempt is sending it."""
        try:
            self.dynamodb.put_item(
                TableName=self.table, Item=self._item(recipient, SENDING),
                ConditionExpression="attribute_not_exists(id) OR #state = :failed OR "
                                    "(#state = :sending AND lease_expires_at <= :now)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":failed": {"S": SEND_FAILED}, ":sending": {"S": SENDING},
                                           ":now": {"N": str(int(self.now))}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return "send"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            state = ((exc.response.get("Item") or {}).get("state") or {}).get("S")
            return "sent" if state == SENT else "busy"

    def record(self, recipient: str, sent: bool) -> None:
        self.dynamodb.put_item(TableName=self.table, Item=self._item(recipient, SENT if sent else SEND_FAILED))


def approval_url(api_base_url: str, token: str) -> str:
    return f"{api_base_url.rstrip('/')}/approvals/{token}"


APPROVAL_REQUEST = "approval-request"
# Fresh links for an approver whose links expired: at most one email per approver, package and hour.
FRESH_LINKS_INTERVAL_SECONDS = 3600


def fresh_links_kind(now: float) -> str:
    return f"fresh-links-{int(now // FRESH_LINKS_INTERVAL_SECONDS)}"


def notify_approvers(model_package_arn: str, settings: ApprovalSettings, *, token_key: TokenKey,
                     slack_webhook_url: str | None, sagemaker=None, s3=None, ses=None, dynamodb=None,
                     now: float | None = None, logger=None, kind: str = APPROVAL_REQUEST,
                     recipients: tuple[str, ...] | None = None,
                     slack_bot_token: str | None = None) -> NotificationResult:
    """Emails every approver their own approve/reject links and posts one Slack message, each at
    most once per package and `kind` (`NotificationLedger`): a retry reaches only those not reached
    yet. With `recipients` (fresh links asked for), only those approvers are emailed and Slack is not.

    Every recipient is attempted even when another fails; the caller decides whether a partial
    result is an error (the handler raises so the event is retried / lands in the DLQ).
    """
    if recipients is not None:
        strangers = [r for r in recipients if not settings.is_approver(r)]
        if strangers:
            raise Refusal(403, f"{', '.join(strangers)} is not (or no longer) an allowed approver.")
        slack_webhook_url = None  # the channel's buttons were not asked for again
    if not settings.approver_emails and not slack.is_webhook_url(slack_webhook_url):
        raise ValueError("no approvers configured: set APPROVER_EMAILS and/or the Slack webhook secret")
    if settings.approver_emails and not (settings.sender_email and settings.api_base_url):
        raise ValueError("SENDER_EMAIL and APPROVAL_API_BASE_URL are required to email approvers")
    if not settings.nonce_table:
        raise ValueError("APPROVAL_NONCE_TABLE is required: it records who was notified")
    ses = ses or boto3.client("ses")
    dynamodb = dynamodb or boto3.client("dynamodb")
    issued_at = time.time() if now is None else now
    # The PNGs themselves are read when an email embeds them or Slack gets them as files; the
    # presigned links last as long as the approval links.
    review = load_package_review(model_package_arn, sagemaker=sagemaker, s3=s3,
                                 presign_seconds=settings.token_ttl_seconds,
                                 plot_content=bool(settings.approver_emails) or slack.is_configured_secret(slack_bot_token))
    expires_text = f"on {utc_text(issued_at + settings.token_ttl_seconds)}"
    result = NotificationResult(model_package_arn=review.model_package_arn)
    if recipients is not None and review.approval_status != PENDING:
        raise Refusal(409, f"This model package is no longer waiting for approval: it is {review.approval_status}.")
    ledger = NotificationLedger(dynamodb, settings.nonce_table, review.model_package_arn, kind,
                                issued_at, settings.token_ttl_seconds)

    def token_for(action: str, approver: str, channel: str) -> str:
        return issue_token(token_key, model_package_arn=review.model_package_arn, action=action,
                           approver=approver, channel=channel, ttl_seconds=settings.token_ttl_seconds,
                           now=issued_at)

    def already_handled(recipient: str) -> bool:
        claim = ledger.claim(recipient)
        if claim == "sent":
            result.already_notified.append(recipient)
        elif claim == "busy":  # left for the next retry, which finds it sent or its lease run out
            result.email_failures[recipient] = "another attempt is sending this notification right now"
        return claim != "send"

    for approver in (settings.approver_emails if recipients is None else tuple(r.strip().lower() for r in recipients)):
        if already_handled(approver):
            continue
        message = messages.build_email(
            sender=settings.sender_email, recipient=approver, review=review,
            approve_url=approval_url(settings.api_base_url, token_for("approve", approver, "email")),
            reject_url=approval_url(settings.api_base_url, token_for("reject", approver, "email")),
            expires_text=expires_text,
        )
        try:
            ses.send_raw_email(Source=settings.sender_email, Destinations=[approver],
                               RawMessage={"Data": message.as_bytes()})
            result.emails_sent.append(approver)
            ledger.record(approver, sent=True)
        except ClientError as exc:
            result.email_failures[approver] = exc.response.get("Error", {}).get("Message", str(exc))
            ledger.record(approver, sent=False)
            if logger:
                logger.error("approval email failed", extra={"recipient": approver,
                                                             "error": result.email_failures[approver]})

    if slack.is_webhook_url(slack_webhook_url) and already_handled(SLACK_CHANNEL_RECIPIENT):
        result.slack_error = result.email_failures.pop(SLACK_CHANNEL_RECIPIENT, None)
    elif slack.is_webhook_url(slack_webhook_url):
        payload = messages.slack_message(review, token_for("approve", SLACK_ANY_APPROVER, "slack"),
                                         token_for("reject", SLACK_ANY_APPROVER, "slack"), expires_text,
                                         uploaded=_upload_plots_to_slack(review, slack_bot_token, settings, logger))
        try:
            slack.post_json(slack_webhook_url, payload)
            result.slack_posted = True
            ledger.record(SLACK_CHANNEL_RECIPIENT, sent=True)
        except slack.SlackPostError as exc:
            result.slack_error = str(exc)
            ledger.record(SLACK_CHANNEL_RECIPIENT, sent=False)
            if logger:
                logger.error("approval Slack message failed", extra={"error": str(exc)})
    elif logger:
        logger.warning("Slack webhook secret holds no URL; Slack message skipped")
    return result


def _upload_plots_to_slack(review: PackageReview, bot_token: str | None, settings: ApprovalSettings,
                           logger=None) -> dict:
    """Plot index -> Slack file id of each plot uploaded with the bot token (none without one). A
    plot whose upload fails is shown from its presigned link instead: the message still goes out."""
    if not slack.is_configured_secret(bot_token):
        return {}
    uploaded = {}
    for index, plot in enumerate(review.plots):
        if plot.content is None:
            continue
        try:
            uploaded[index] = slack.upload_file(
                bot_token, posixpath.basename(plot.key) or f"plot{index}.png", plot.content,
                f"{review.title}: {plot.name}", api_base_url=settings.slack_api_base_url,
                upload_url_prefixes=settings.slack_upload_url_prefixes)
        except slack.SlackUploadError as exc:
            if logger:
                logger.warning("plot not uploaded to Slack; its link is shown", extra={"plot": plot.name, "error": str(exc)})
    return uploaded


# -- decision -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    model_package_arn: str
    review_title: str
    action: str
    approver: str
    channel: str
    status: str
    description: str


def _describe_package(sagemaker, arn: str) -> dict:
    try:
        return sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"ValidationException", "ResourceNotFound",
                                                           "ResourceNotFoundException"}:
            raise Refusal(404, "This model package no longer exists.") from None
        raise


def _title(package: dict) -> str:
    version = package.get("ModelPackageVersion")
    return f"{package.get('ModelPackageGroupName', '')}" + (f" version {version}" if version is not None else "")


def _not_pending_refusal(package: dict) -> Refusal:
    status = package.get("ModelApprovalStatus", "unknown")
    detail = package.get("ApprovalDescription")
    reason = f"This model package is no longer waiting for approval: it is {status}"
    return Refusal(409, reason + (f" ({detail})." if detail else "."))


def check_token(token: str, *, channel: str, settings: ApprovalSettings, token_key: TokenKey,
                acting_approver: str | None = None, sagemaker=None, dynamodb=None,
                now: float | None = None) -> tuple[ApprovalToken, dict, str]:
    """Every check short of acting; returns (claims, described package, acting approver email).

    `acting_approver` is the approver as identified by the channel itself (the Slack user mapped to
    an email); email links identify their approver in the token.
    """
    sagemaker = sagemaker or boto3.client("sagemaker")
    dynamodb = dynamodb or boto3.client("dynamodb")
    try:
        claims = verify_token(token_key, token, now=now)
    except TokenError as exc:
        status = 410 if "expired" in exc.reason else (403 if "signature" in exc.reason else 400)
        raise Refusal(status, exc.reason) from None
    if claims.channel != channel:
        raise Refusal(403, f"This approval was issued for {claims.channel}, not {channel}.")
    approver = claims.approver if channel == "email" else acting_approver
    if channel == "slack" and claims.approver != SLACK_ANY_APPROVER:
        raise Refusal(403, "This approval button is malformed.")
    if not settings.is_approver(approver):
        raise Refusal(403, f"{approver or 'This user'} is not (or no longer) an allowed approver.")
    package = _describe_package(sagemaker, claims.model_package_arn)
    if settings.model_package_group_name and package.get("ModelPackageGroupName") != settings.model_package_group_name:
        raise Refusal(403, "This model package does not belong to the group these approvals are for.")
    used = dynamodb.get_item(TableName=settings.nonce_table, Key={"id": {"S": f"nonce#{claims.nonce}"}},
                             ConsistentRead=True).get("Item")
    current = time.time() if now is None else now
    if used and not _lease_expired(used, current):
        raise _claimed_refusal(used, current, "This approval link")
    if package.get("ModelApprovalStatus") != PENDING:
        raise _not_pending_refusal(package)
    return claims, package, approver.strip().lower()


def check_fresh_links_request(token: str, *, settings: ApprovalSettings, token_key: TokenKey, sagemaker=None,
                              now: float | None = None) -> ApprovalToken:
    """A request for fresh links made with an email link (expired or not): the link must be one we
    signed, for email, for an approver still allowed, for a package still pending. The approver it
    names is the only address fresh links go to."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    try:
        claims = verify_token(token_key, token, now=now, allow_expired=True)
    except TokenError as exc:
        raise Refusal(403 if "signature" in exc.reason else 400, exc.reason) from None
    if claims.channel != "email":
        raise Refusal(403, "Fresh links are sent for email links only.")
    if not settings.is_approver(claims.approver):
        raise Refusal(403, f"{claims.approver} is not (or no longer) an allowed approver.")
    package = _describe_package(sagemaker, claims.model_package_arn)
    if settings.model_package_group_name and package.get("ModelPackageGroupName") != settings.model_package_group_name:
        raise Refusal(403, "This model package does not belong to the group these approvals are for.")
    if package.get("ModelApprovalStatus") != PENDING:
        raise _not_pending_refusal(package)
    return claims


def _lease_expired(item: dict, now: float) -> bool:
    """True for a claim whose decider stopped without deciding or releasing it (its lease ran out)."""
    return item.get("state", {}).get("S") == CLAIMED and float(item.get("lease_expires_at", {}).get("N", "0")) <= now


def _claimed_refusal(item: dict, now: float, what: str) -> Refusal:
    """Why an existing claim item stops this request: decided for good, or still being decided."""
    if item.get("state", {}).get("S") == CLAIMED:
        wait = max(1, int(float(item.get("lease_expires_at", {}).get("N", "0")) - now + 0.999))
        return Refusal(409, f"{what} is being processed right now; if that does not finish, retry in {wait} s.")
    # Items without a state were written before claims became leases: they are decisions.
    return Refusal(409, f"{what} was already used ({item.get('description', {}).get('S', 'earlier')}).")


def _claim_condition(now: float) -> dict:
    """Free, or claimed by a decider whose lease ran out."""
    return {"ConditionExpression": "attribute_not_exists(id) OR (#state = :claimed AND lease_expires_at <= :now)",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": {":claimed": {"S": CLAIMED}, ":now": {"N": str(int(now))}}}


def _claim_items(table: str, claims: ApprovalToken, arn: str, description: str, now: float, state: str) -> list:
    """The nonce item and the package's decision item, in `state`."""
    common = {"description": {"S": description}, "decided_at": {"N": str(int(now))}, "state": {"S": state}}
    if state == CLAIMED:
        common["lease_expires_at"] = {"N": str(int(now) + CLAIM_LEASE_SECONDS)}
    return [
        {"TableName": table, "Item": {"id": {"S": f"nonce#{claims.nonce}"}, "model_package_arn": {"S": arn},
                                      "expires_at": {"N": str(claims.expires_at + 24 * 3600)}, **common}},
        {"TableName": table, "Item": {"id": {"S": f"decision#{arn}"}, "action": {"S": claims.action},
                                      "expires_at": {"N": str(int(now) + DECISION_RECORD_TTL_SECONDS)}, **common}},
    ]


def _claim(dynamodb, table: str, claims: ApprovalToken, arn: str, description: str, now: float) -> None:
    """Leases the nonce and the package's decision together, each only if free or its lease ran out."""
    try:
        dynamodb.transact_write_items(TransactItems=[
            {"Put": {**item, **_claim_condition(now)}}
            for item in _claim_items(table, claims, arn, description, now, CLAIMED)])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
        token_taken = bool(reasons) and reasons[0] == "ConditionalCheckFailed"
        key = f"nonce#{claims.nonce}" if token_taken else f"decision#{arn}"
        item = dynamodb.get_item(TableName=table, Key={"id": {"S": key}}, ConsistentRead=True).get("Item")
        if token_taken:
            raise (_claimed_refusal(item, now, "This approval link") if item
                   else Refusal(409, "This approval link was already used.")) from None
        if item and item.get("state", {}).get("S") == CLAIMED:
            raise _claimed_refusal(item, now, "Another decision on this model package") from None
        raise Refusal(409, "Another decision on this model package was taken at the same moment; "
                           "it is no longer waiting for approval.") from None


def _record_decided(dynamodb, table: str, claims: ApprovalToken, arn: str, description: str, now: float) -> None:
    """The package's status changed: the claims become permanent (a replay is refused for good)."""
    dynamodb.transact_write_items(TransactItems=[
        {"Put": item} for item in _claim_items(table, claims, arn, description, now, DECIDED)])


def _release(dynamodb, table: str, claims: ApprovalToken, arn: str) -> None:
    for key in (f"nonce#{claims.nonce}", f"decision#{arn}"):
        dynamodb.delete_item(TableName=table, Key={"id": {"S": key}})


def decide(token: str, *, channel: str, settings: ApprovalSettings, token_key: TokenKey,
           acting_approver: str | None = None, sagemaker=None, dynamodb=None,
           now: float | None = None) -> Decision:
    """Approves or rejects the token's model package, once. Raises Refusal (nothing changed)."""
    sagemaker = sagemaker or boto3.client("sagemaker")
    dynamodb = dynamodb or boto3.client("dynamodb")
    current = time.time() if now is None else now
    claims, package, approver = check_token(token, channel=channel, settings=settings, token_key=token_key,
                                            acting_approver=acting_approver, sagemaker=sagemaker,
                                            dynamodb=dynamodb, now=current)
    status = messages.ACTION_STATUS[claims.action]
    when = datetime.fromtimestamp(current, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    description = f"{status} by {approver} via {channel} at {when}"
    arn = claims.model_package_arn
    _claim(dynamodb, settings.nonce_table, claims, arn, description, current)
    try:
        # The claim serialises deciders; this re-read catches a status changed outside this API
        # (console, CLI) between the first check and the claim.
        package = _describe_package(sagemaker, arn)
        if package.get("ModelApprovalStatus") != PENDING:
            raise _not_pending_refusal(package)
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status,
                                       ApprovalDescription=description)
    except BaseException:
        _release(dynamodb, settings.nonce_table, claims, arn)
        raise
    # Were this write lost (the function dies now), the package is no longer pending: a retry after
    # the lease is refused by the status check, so the decision still happens once.
    _record_decided(dynamodb, settings.nonce_table, claims, arn, description, current)
    return Decision(model_package_arn=arn, review_title=_title(package), action=claims.action,
                    approver=approver, channel=channel, status=status, description=description)


# -- Slack interactivity ------------------------------------------------------------------------
# Slack wants the HTTP answer within 3 seconds and retries otherwise, so a press is handled in two
# steps: `accept_slack_interaction` (signature, workspace, app, response_url: no AWS call) before
# the answer, `act_on_slack_interaction` (token, approver, decision, message update) after it, in an
# asynchronous invocation of the approval function (see functions/approval_api).
@dataclass(frozen=True)
class SlackInteraction:
    user_id: str
    action_id: str
    token: str
    response_url: str
    team_id: str = ""
    app_id: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SlackInteraction":
        return cls(**{f.name: str(data.get(f.name, "")) for f in dataclasses.fields(cls)})


def parse_slack_interaction(raw_body: str) -> SlackInteraction:
    """The button press in a `block_actions` interaction (form field `payload`, JSON)."""
    from urllib.parse import parse_qs

    try:
        payload = json.loads(parse_qs(raw_body, strict_parsing=True)["payload"][0])
        action = payload["actions"][0]
        interaction = SlackInteraction(user_id=str(payload["user"]["id"]), action_id=str(action["action_id"]),
                                       token=str(action["value"]), response_url=str(payload.get("response_url", "")),
                                       team_id=str((payload.get("team") or {}).get("id", "")),
                                       app_id=str(payload.get("api_app_id", "")))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise Refusal(400, "Malformed Slack interaction payload.") from exc
    if payload.get("type") != "block_actions" or interaction.action_id not in messages.ACTION_VERB:
        raise Refusal(400, "Unsupported Slack interaction.")
    return interaction


def _foreign_slack_origin(interaction: SlackInteraction, settings: ApprovalSettings) -> Refusal | None:
    """A refusal when the press comes from another workspace or app than configured.

    One signing secret belongs to one app, but an app can be installed in other workspaces too."""
    if settings.slack_team_id and interaction.team_id != settings.slack_team_id:
        return Refusal(403, "This Slack workspace may not decide these approvals.")
    if settings.slack_app_id and interaction.app_id != settings.slack_app_id:
        return Refusal(403, "This Slack app may not decide these approvals.")
    return None


def accept_slack_interaction(raw_body: str, *, timestamp: str | None, signature: str | None,
                             signing_secret: str | None, settings: ApprovalSettings,
                             now: float | None = None) -> SlackInteraction:
    """What is checked before Slack gets its answer: Slack signed it recently, for our workspace and
    app, and its `response_url` is Slack's. Raises slack.SlackSignatureError or Refusal."""
    slack.verify_request(signing_secret, timestamp=timestamp, signature=signature, raw_body=raw_body, now=now)
    interaction = parse_slack_interaction(raw_body)
    foreign = _foreign_slack_origin(interaction, settings)
    if foreign:
        raise foreign
    # The decision's outcome is posted there: never to a host the request chose.
    if not slack.is_response_url(interaction.response_url, settings.slack_response_url_prefixes):
        raise Refusal(400, "The Slack response_url is not a Slack URL.")
    return interaction


def act_on_slack_interaction(interaction: SlackInteraction, *, settings: ApprovalSettings, token_key: TokenKey,
                             sagemaker=None, dynamodb=None, post=slack.post_json, now: float | None = None,
                             logger=None) -> Decision | Refusal:
    """Maps the Slack user to an approver, decides, and tells the person through `response_url`
    (the message replaced by the outcome, or a private note saying why not). Returns the Decision,
    or the Refusal that was told (a refusal is an answer, not an error)."""

    def tell(payload: dict) -> None:
        # Checked again here: whoever may invoke the function could hand off any URL.
        if not slack.is_response_url(interaction.response_url, settings.slack_response_url_prefixes):
            if logger:
                logger.warning("Slack response_url refused; the outcome is not posted")
            return
        try:
            post(interaction.response_url, payload)
        except slack.SlackPostError as exc:
            if logger:
                logger.warning("could not update the Slack message", extra={"error": str(exc)})

    try:
        try:
            claimed_action = verify_token(token_key, interaction.token, now=now).action
        except TokenError:
            claimed_action = interaction.action_id  # decide() below reports the token's problem
        if claimed_action != interaction.action_id:
            raise Refusal(400, "The button pressed does not match its approval token.")
        decision = decide(interaction.token, channel="slack", settings=settings, token_key=token_key,
                          acting_approver=settings.slack_approvers.get(interaction.user_id),
                          sagemaker=sagemaker, dynamodb=dynamodb, now=now)
    except Refusal as refusal:
        tell(messages.slack_refusal_message(refusal.reason))
        return refusal
    except Exception:
        tell(messages.slack_refusal_message("Something went wrong on our side; nothing was changed. "
                                            "Please press the button again in a minute."))
        raise
    tell(messages.slack_decision_message(decision.review_title, decision.model_package_arn, decision.description))
    return decision
