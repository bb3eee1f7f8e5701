"""What approvers see: the approval email (text + HTML), the Slack Block Kit message, and the pages
of the approval API (confirmation, result, refusal).

Pure rendering from a `PackageReview`; nothing here talks to AWS. Every value that comes from
data (ARNs, URIs, metadata) is HTML-escaped.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.mime.multipart import MIMEMultipart

ACTION_VERB = {"approve": "Approve", "reject": "Reject"}
ACTION_STATUS = {"approve": "Approved", "reject": "Rejected"}
ACTION_CONSEQUENCE = {
    "approve": "The model package will be marked Approved. That starts its deployment to the "
               "real-time endpoint (with automatic rollback if it misbehaves).",
    "reject": "The model package will be marked Rejected. It will not be deployed; the model "
              "currently serving keeps serving.",
}
_COLOR = {"approve": "#1a7f37", "reject": "#cf222e"}


@dataclass
class Plot:
    name: str
    url: str


@dataclass
class PackageReview:
    """The facts an approver decides on."""

    model_package_arn: str
    group_name: str
    version: int | None
    approval_status: str
    created: str = ""
    rmse: float | None = None
    rmse_std: float | None = None
    mae: float | None = None
    r2: float | None = None
    rmse_threshold: float | None = None
    champion_rmse_limit: float | None = None
    champion: dict | None = None  # {"model_package_arn", "rmse", "mae", "r2"}
    rows: dict = field(default_factory=dict)
    dataset_uri: str = ""
    dataset_version: str = ""
    target_column: str = ""
    missing_share: dict = field(default_factory=dict)  # feature -> share of missing cells (train split)
    dropped_rows: int = 0  # rows without a target value
    evaluation_uri: str = ""
    plots: list[Plot] = field(default_factory=list)

    @property
    def title(self) -> str:
        version = f" version {self.version}" if self.version is not None else ""
        return f"{self.group_name}{version}"


# -- formatting ---------------------------------------------------------------------------------
MAX_BLANK_COLUMNS_SHOWN = 3

def fmt_number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1e300:  # the gate's "no champion" sentinel
        return "none"
    return f"{value:,.{digits}f}"


def _metric_rows(review: PackageReview) -> list[tuple[str, str, str]]:
    """(label, this model, champion) rows shared by every rendering."""
    champion = review.champion or {}
    rmse = fmt_number(review.rmse)
    if review.rmse_std is not None and review.rmse is not None:
        rmse += f" (± {fmt_number(review.rmse_std)})"
    return [
        ("RMSE", rmse, fmt_number(champion.get("rmse")) if champion else "no champion"),
        ("MAE", fmt_number(review.mae), fmt_number(champion.get("mae")) if champion else "—"),
        ("R²", fmt_number(review.r2, 4), fmt_number(champion.get("r2"), 4) if champion else "—"),
    ]


def _gate_text(review: PackageReview) -> str:
    parts = [f"RMSE threshold {fmt_number(review.rmse_threshold)}"]
    if review.champion_rmse_limit is not None and abs(review.champion_rmse_limit) < 1e300:
        parts.append(f"champion limit {fmt_number(review.champion_rmse_limit)}")
    return ", ".join(parts)


def _dataset_text(review: PackageReview) -> str:
    text = review.dataset_uri or "unknown dataset"
    if review.dataset_version:
        text += f" (version {review.dataset_version})"
    if review.target_column:
        text += f", target {review.target_column}"
    blanks = sorted(((share, name) for name, share in review.missing_share.items() if share > 0), reverse=True)
    if blanks:
        shown = ", ".join(f"{name} {share:.0%}" for share, name in blanks[:MAX_BLANK_COLUMNS_SHOWN])
        more = f" and {len(blanks) - MAX_BLANK_COLUMNS_SHOWN} more" if len(blanks) > MAX_BLANK_COLUMNS_SHOWN else ""
        text += f"; missing values: {shown}{more}"
    if review.dropped_rows:
        text += f"; {review.dropped_rows:,} rows without a target left out"
    return text


# -- email --------------------------------------------------------------------------------------
def email_subject(review: PackageReview) -> str:
    return f"Approval needed: {review.title} (RMSE {fmt_number(review.rmse)})"


def email_text(review: PackageReview, approver: str, approve_url: str, reject_url: str,
               expires_text: str) -> str:
    lines = [
        f"A new model is waiting for your approval: {review.title}",
        f"Model package: {review.model_package_arn}",
        f"Dataset: {_dataset_text(review)}",
        "",
        f"{'Metric':<6} {'This model':>24} {'Champion':>16}",
    ]
    for label, ours, theirs in _metric_rows(review):
        lines.append(f"{label:<6} {ours:>24} {theirs:>16}")
    lines += ["", f"Gate: {_gate_text(review)}"]
    if review.plots:
        lines += ["", "Plots (the confirmation page always has fresh links):"]
        lines += [f"  {plot.name}: {plot.url}" for plot in review.plots]
    lines += [
        "",
        f"Approve: {approve_url}",
        f"Reject:  {reject_url}",
        "",
        "Each link opens a confirmation page first; nothing changes until you confirm there.",
        f"The links are for {approver} only, work once, and expire {expires_text}.",
    ]
    return "\n".join(lines) + "\n"


def email_html(review: PackageReview, approver: str, approve_url: str, reject_url: str,
               expires_text: str) -> str:
    e = html.escape
    metric_rows = "".join(
        f'<tr><td style="padding:6px 12px;border-bottom:1px solid #d0d7de;">{e(label)}</td>'
        f'<td style="padding:6px 12px;border-bottom:1px solid #d0d7de;text-align:right;"><b>{e(ours)}</b></td>'
        f'<td style="padding:6px 12px;border-bottom:1px solid #d0d7de;text-align:right;">{e(theirs)}</td></tr>'
        for label, ours, theirs in _metric_rows(review)
    )
    plots = "".join(
        f'<li><a href="{e(plot.url)}" rel="noreferrer">{e(plot.name)}</a></li>' for plot in review.plots
    ) or "<li>No plots were produced.</li>"

    def button(action: str, url: str) -> str:
        return (f'<a href="{e(url)}" rel="noreferrer" style="display:inline-block;padding:12px 28px;'
                f'margin-right:12px;background:{_COLOR[action]};color:#ffffff;text-decoration:none;'
                f'font-weight:bold;border-radius:6px;">{ACTION_VERB[action]}</a>')

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<title>{e(email_subject(review))}</title></head>
<body style="margin:0;padding:24px;background:#f6f8fa;font-family:Helvetica,Arial,sans-serif;color:#1f2328;">
<table role="presentation" style="max-width:640px;margin:0 auto;background:#ffffff;border:1px solid #d0d7de;border-radius:8px;padding:24px;" width="100%">
<tr><td>
<h1 style="font-size:20px;margin:0 0 8px;">A new model is waiting for your approval</h1>
<p style="margin:0 0 16px;font-size:15px;"><b>{e(review.title)}</b></p>
<p style="margin:0 0 4px;font-size:13px;color:#59636e;">Model package: {e(review.model_package_arn)}</p>
<p style="margin:0 0 16px;font-size:13px;color:#59636e;">Dataset: {e(_dataset_text(review))}</p>
<table role="presentation" style="border-collapse:collapse;font-size:14px;margin:0 0 8px;">
<tr><th style="padding:6px 12px;text-align:left;border-bottom:2px solid #d0d7de;">Metric</th>
<th style="padding:6px 12px;text-align:right;border-bottom:2px solid #d0d7de;">This model</th>
<th style="padding:6px 12px;text-align:right;border-bottom:2px solid #d0d7de;">Champion</th></tr>
{metric_rows}
</table>
<p style="margin:0 0 16px;font-size:13px;color:#59636e;">Gate: {e(_gate_text(review))}</p>
<p style="margin:0 0 4px;font-size:14px;"><b>Plots</b> <span style="font-size:12px;color:#59636e;">(the confirmation page always has fresh links)</span></p>
<ul style="margin:0 0 20px;font-size:14px;">{plots}</ul>
<p style="margin:0 0 20px;">{button("approve", approve_url)}{button("reject", reject_url)}</p>
<p style="margin:0;font-size:12px;color:#59636e;">Each button opens a confirmation page first; nothing
changes until you confirm there. These links are for {e(approver)} only, work once, and expire
{e(expires_text)}.</p>
</td></tr></table>
</body></html>
"""


def build_email(*, sender: str, recipient: str, review: PackageReview, approve_url: str,
                reject_url: str, expires_text: str) -> MIMEMultipart:
    """The multipart/alternative message (plain text first, HTML preferred by mail readers)."""
    # Imported here: only notify_approval sends mail; the approval API renders pages from this module
    # on every request and never needs the MIME machinery (email.policy, header parsing, ...).
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.utils import formatdate, make_msgid

    message = MIMEMultipart("alternative")
    message["Subject"] = email_subject(review)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["X-Model-Package-Arn"] = review.model_package_arn
    message.attach(MIMEText(email_text(review, recipient, approve_url, reject_url, expires_text), "plain", "utf-8"))
    message.attach(MIMEText(email_html(review, recipient, approve_url, reject_url, expires_text), "html", "utf-8"))
    return message


# -- Slack --------------------------------------------------------------------------------------
def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _decision_button(action: str, style: str, token: str) -> dict:
    """An Approve/Reject button that asks for confirmation and carries its single-use token."""
    label = action.capitalize()
    return {"type": "button", "action_id": action, "style": style, "value": token,
            "text": {"type": "plain_text", "text": label},
            "confirm": {"title": {"type": "plain_text", "text": f"{label} this model?"},
                        "text": {"type": "plain_text", "text": ACTION_CONSEQUENCE[action]},
                        "confirm": {"type": "plain_text", "text": label},
                        "deny": {"type": "plain_text", "text": "Cancel"}}}


def slack_message(review: PackageReview, approve_token: str, reject_token: str, expires_text: str) -> dict:
    """One Block Kit message for the approvers' channel; buttons carry single-use tokens."""
    s = _mrkdwn_escape
    fields = []
    for label, ours, theirs in _metric_rows(review):
        fields.append({"type": "mrkdwn", "text": f"*{label}*\n{s(ours)} (champion: {s(theirs)})"})
    fields.append({"type": "mrkdwn", "text": f"*Gate*\n{s(_gate_text(review))}"})
    plots = "  ".join(f"<{plot.url}|{s(plot.name)}>" for plot in review.plots) or "No plots were produced."
    text = f"Approval needed: {review.title} (RMSE {fmt_number(review.rmse)})"
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"Approval needed: {review.title}"[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text":
                f"Model package `{s(review.model_package_arn)}`\nDataset: {s(_dataset_text(review))}"}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Plots*: {plots}"}},
            {"type": "actions", "block_id": "approval", "elements": [
                _decision_button("approve", "primary", approve_token),
                _decision_button("reject", "danger", reject_token),
            ]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text":
                f"Only listed approvers can decide. The buttons work once and expire {s(expires_text)}."}]},
        ],
    }


def slack_decision_message(review_title: str, model_package_arn: str, description: str) -> dict:
    """Replaces the original message once a decision is taken (no buttons left to press)."""
    return {
        "replace_original": True,
        "text": f"{review_title}: {description}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text":
                f"*{_mrkdwn_escape(review_title)}*\n{_mrkdwn_escape(description)}\n"
                f"`{_mrkdwn_escape(model_package_arn)}`"}},
        ],
    }


def slack_refusal_message(reason: str) -> dict:
    """Shown only to the person who pressed the button; the original message stays."""
    return {"response_type": "ephemeral", "replace_original": False, "text": f"Not done: {reason}"}


# -- approval API pages -------------------------------------------------------------------------
def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title></head>
<body style="margin:0;padding:24px;background:#f6f8fa;font-family:Helvetica,Arial,sans-serif;color:#1f2328;">
<main style="max-width:640px;margin:0 auto;background:#ffffff;border:1px solid #d0d7de;border-radius:8px;padding:24px;">
{body}
</main></body></html>
"""


def _review_summary_html(review: PackageReview) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(label)}</td><td><b>{e(ours)}</b></td><td>{e(theirs)}</td></tr>"
                   for label, ours, theirs in _metric_rows(review))
    plots = "".join(f'<li><a href="{e(p.url)}" rel="noreferrer">{e(p.name)}</a></li>' for p in review.plots)
    status = {"PendingManualApproval": "waiting for approval"}.get(review.approval_status, review.approval_status)
    return (f"<p><b>{e(review.title)}</b> — {e(status)}</p>"
            f"<p style='font-size:13px;color:#59636e;'>Model package: {e(review.model_package_arn)}<br>"
            f"Dataset: {e(_dataset_text(review))}</p>"
            f"<table cellpadding='6'><tr><th align='left'>Metric</th><th align='left'>This model</th>"
            f"<th align='left'>Champion</th></tr>{rows}</table>"
            f"<p style='font-size:13px;color:#59636e;'>Gate: {e(_gate_text(review))}</p>"
            + (f"<ul>{plots}</ul>" if plots else ""))


def confirmation_page(review: PackageReview, action: str, approver: str, expires_text: str) -> str:
    """GET never acts: this page explains and offers the one button that does (a POST)."""
    e = html.escape
    verb = ACTION_VERB[action]
    body = (f"<h1 style='font-size:20px;'>{verb} this model?</h1>"
            f"{_review_summary_html(review)}"
            f"<p>You are acting as <b>{e(approver)}</b>.</p>"
            f"<p>{e(ACTION_CONSEQUENCE[action])}</p>"
            # No action attribute: the form posts back to this very URL (token included).
            f"<form method='post'><input type='hidden' name='confirm' value='{e(action)}'>"
            f"<button type='submit' style='padding:12px 28px;background:{_COLOR[action]};color:#fff;"
            f"border:0;border-radius:6px;font-weight:bold;font-size:15px;'>Confirm: {verb}</button></form>"
            f"<p style='font-size:12px;color:#59636e;'>This link works once and expires {e(expires_text)}.</p>")
    return _page(f"{verb} {review.title}?", body)


def result_page(review_title: str, model_package_arn: str, action: str, description: str) -> str:
    e = html.escape
    body = (f"<h1 style='font-size:20px;' data-outcome='{e(ACTION_STATUS[action].lower())}'>"
            f"{e(ACTION_STATUS[action])}</h1>"
            f"<p><b>{e(review_title)}</b></p><p>{e(description)}.</p>"
            f"<p style='font-size:13px;color:#59636e;'>Model package: {e(model_package_arn)}</p>")
    return _page(f"{ACTION_STATUS[action]}: {review_title}", body)


def refusal_page(status_code: int, reason: str) -> str:
    e = html.escape
    body = (f"<h1 style='font-size:20px;' data-outcome='refused'>Nothing was changed</h1>"
            f"<p>{e(reason)}</p>"
            f"<p style='font-size:13px;color:#59636e;'>HTTP {status_code}. If you believe this is wrong, "
            f"ask the model owners for a new approval request.</p>")
    return _page("Nothing was changed", body)


def expired_link_page(reason: str, approver: str, resend_action: str) -> str:
    """The refusal of an expired link, with a button that asks for fresh links for this approver
    (sent to the address in the link, never one typed in)."""
    e = html.escape
    body = (f"<h1 style='font-size:20px;' data-outcome='refused'>Nothing was changed</h1>"
            f"<p>{e(reason)}</p>"
            f"<form method='post' action='{e(resend_action)}'>"
            f"<p>The model is still waiting for a decision. Fresh approve/reject links can be emailed to "
            f"<b>{e(approver)}</b> (at most once an hour).</p>"
            f"<button type='submit' name='resend' value='yes'>Email me fresh links</button></form>"
            f"<p style='font-size:13px;color:#59636e;'>HTTP 410.</p>")
    return _page("This approval link expired", body)


def fresh_links_page(approver: str, sent: bool) -> str:
    e = html.escape
    text = (f"Fresh approve/reject links were emailed to {e(approver)}." if sent else
            f"Fresh links were already emailed to {e(approver)} within the last hour; please check your inbox "
            f"(and spam folder), or ask again later.")
    body = (f"<h1 style='font-size:20px;' data-outcome='{'resent' if sent else 'already-resent'}'>"
            f"{'Fresh links sent' if sent else 'Fresh links already sent'}</h1><p>{text}</p>")
    return _page("Fresh approval links", body)
