"""What approvers see: the approval email (text + HTML), the Slack Block Kit message, and the pages
of the approval API (confirmation, result, refusal).

Pure rendering from a `PackageReview`; nothing here talks to AWS. Every value that comes from
data (ARNs, URIs, metadata) is HTML-escaped.
"""
from __future__ import annotations

import html
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from email.message import EmailMessage

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
    url: str  # a presigned GET link, valid as long as the links that come with it
    key: str = ""  # the S3 key (the notify function reads the PNG to embed it in the email)
    size: int | None = None  # bytes, as S3 lists it
    width: int | None = None  # pixels, from the PNG's header
    height: int | None = None
    content: bytes | None = None  # the PNG itself, loaded only to be embedded in an email

    def shown_size(self, max_width: int) -> tuple[int, int] | None:
        """(width, height) to show it at, at most `max_width` wide, its aspect ratio kept."""
        if not self.width or not self.height:
            return None
        width = min(self.width, max_width)
        return width, max(1, round(self.height * width / self.width))


# The widest an image is shown in the email and on the page (their content is 640 px wide, minus padding).
IMAGE_MAX_WIDTH = 590
# SES refuses a raw message over 10 MB (SendRawEmail; base64 grows each image by a third). Images
# are embedded up to this many bytes in all, the largest left out first, so the message stays far
# below the limit whatever else it carries.
INLINE_IMAGES_BUDGET_BYTES = 6 * 1024 * 1024


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


def _champion_heading(review: PackageReview) -> str:
    version = (review.champion or {}).get("model_package_version")
    return f"Champion v{version}" if version is not None else "Champion"


def _champion_note(review: PackageReview) -> str:
    """One sentence on what the champion column means (or why it is empty)."""
    champion = review.champion
    if not champion:
        return "There is no approved champion yet: only the RMSE threshold applies."
    if not champion.get("comparable", True):
        return (f"The champion {champion.get('model_package_arn', '')} could not be compared and does not "
                f"gate this model: {champion.get('reason') or 'no reason given'}.")
    rows = (review.rows or {}).get("champion_scored")
    on = f" on the same {rows:,} test rows" if rows else " on the same test rows"
    return f"The champion {champion.get('model_package_arn', '')} was scored{on}; the plots show both."


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
@dataclass(frozen=True)
class InlinePlots:
    """Which plots an email embeds (`cids`: plot index -> Content-ID without brackets) and which it
    leaves as links only, with why (`left_out`: plot index -> reason)."""

    cids: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)


def choose_inline_plots(plots: list[Plot], *, domain: str,
                        budget_bytes: int = INLINE_IMAGES_BUDGET_BYTES) -> InlinePlots:
    """Embeds every plot whose PNG was read, leaving out the largest until they fit `budget_bytes`."""
    from email.utils import make_msgid

    def too_large(size: int) -> str:
        return (f"at {size / 1e6:.1f} MB it would make the email too large "
                f"(images are embedded up to {budget_bytes / 1e6:.0f} MB in all)")

    loaded = {i: len(p.content) for i, p in enumerate(plots) if p.content is not None}
    left_out = {i: too_large(p.size) if p.size and p.size > budget_bytes else "it could not be read"
                for i, p in enumerate(plots) if p.content is None and p.key}
    for index, size in sorted(loaded.items(), key=lambda item: -item[1]):
        if sum(loaded.values()) <= budget_bytes:
            break
        left_out[index] = too_large(size)
        del loaded[index]
    cids = {i: make_msgid(idstring=f"plot{i}", domain=domain or None)[1:-1] for i in sorted(loaded)}
    return InlinePlots(cids=cids, left_out=left_out)


def email_subject(review: PackageReview) -> str:
    return f"Approval needed: {review.title} (RMSE {fmt_number(review.rmse)})"


def email_text(review: PackageReview, approver: str, approve_url: str, reject_url: str,
               expires_text: str, inline: InlinePlots | None = None) -> str:
    inline = inline or InlinePlots()
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
    if note := _champion_note(review):
        lines.append(note)
    if review.plots:
        lines += ["", "Plots (shown in the HTML version of this email; the confirmation page always has fresh links):"]
        for index, plot in enumerate(review.plots):
            lines.append(f"  {plot.name}: {plot.url}")
            if index in inline.left_out:
                lines.append(f"    (not embedded: {inline.left_out[index]})")
    lines += [
        "",
        f"Approve: {approve_url}",
        f"Reject:  {reject_url}",
        "",
        "Each link opens a confirmation page first; nothing changes until you confirm there.",
        f"The links are for {approver} only, work once, and expire {expires_text}.",
    ]
    return "\n".join(lines) + "\n"


def _email_plot_html(index: int, plot: Plot, inline: InlinePlots) -> str:
    e = html.escape
    link = f'<a href="{e(plot.url)}" rel="noreferrer">{e(plot.name)}</a>'
    if index not in inline.cids:
        reason = inline.left_out.get(index)
        note = f' <span style="font-size:12px;color:#59636e;">(not embedded: {e(reason)})</span>' if reason else ""
        return f'<p style="margin:0 0 12px;font-size:14px;">{link}{note}</p>'
    size = plot.shown_size(IMAGE_MAX_WIDTH)
    dimensions = f' width="{size[0]}" height="{size[1]}"' if size else f' width="{IMAGE_MAX_WIDTH}"'
    return (f'<p style="margin:0 0 4px;font-size:14px;"><b>{e(plot.name.capitalize())}</b> '
            f'<span style="font-size:12px;">({link})</span></p>'
            f'<img src="cid:{e(inline.cids[index])}" alt="{e(plot.name)} plot"{dimensions} '
            f'style="display:block;max-width:100%;height:auto;border:1px solid #d0d7de;margin:0 0 16px;">')


def email_html(review: PackageReview, approver: str, approve_url: str, reject_url: str,
               expires_text: str, inline: InlinePlots | None = None) -> str:
    e = html.escape
    inline = inline or InlinePlots()
    metric_rows = "".join(
        f'<tr><td style="padding:6px 12px;border-bottom:1px solid #d0d7de;">{e(label)}</td>'
        f'<td style="padding:6px 12px;border-bottom:1px solid #d0d7de;text-align:right;"><b>{e(ours)}</b></td>'
        f'<td style="padding:6px 12px;border-bottom:1px solid #d0d7de;text-align:right;">{e(theirs)}</td></tr>'
        for label, ours, theirs in _metric_rows(review)
    )
    plots = "".join(_email_plot_html(i, plot, inline) for i, plot in enumerate(review.plots)) \
        or '<p style="margin:0 0 12px;font-size:14px;">No plots were produced.</p>'
    note = _champion_note(review)
    note_html = f'<p style="margin:0 0 16px;font-size:13px;color:#59636e;">{e(note)}</p>' if note else ""

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
<th style="padding:6px 12px;text-align:right;border-bottom:2px solid #d0d7de;">{e(_champion_heading(review))}</th></tr>
{metric_rows}
</table>
<p style="margin:0 0 16px;font-size:13px;color:#59636e;">Gate: {e(_gate_text(review))}</p>
{note_html}
<p style="margin:0 0 20px;">{button("approve", approve_url)}{button("reject", reject_url)}</p>
<p style="margin:0 0 8px;font-size:14px;"><b>Plots</b> <span style="font-size:12px;color:#59636e;">(the confirmation page always has fresh links)</span></p>
{plots}
<p style="margin:0;font-size:12px;color:#59636e;">Each button opens a confirmation page first; nothing
changes until you confirm there. These links are for {e(approver)} only, work once, and expire
{e(expires_text)}.</p>
</td></tr></table>
</body></html>
"""


def build_email(*, sender: str, recipient: str, review: PackageReview, approve_url: str,
                reject_url: str, expires_text: str,
                budget_bytes: int = INLINE_IMAGES_BUDGET_BYTES) -> EmailMessage:
    """multipart/alternative: the plain text first, then the HTML preferred by mail readers, as
    multipart/related with each plot that was read (`Plot.content`) as an inline image its `cid:`
    points at; plots over the size budget stay links, and the email says so."""
    # Imported here: only notify_approval sends mail; the approval API renders pages from this module
    # on every request and never needs the MIME machinery (email.policy, header parsing, ...).
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    domain = sender.rpartition("@")[2]
    inline = choose_inline_plots(review.plots, domain=domain, budget_bytes=budget_bytes)
    message = EmailMessage()
    message["Subject"] = email_subject(review)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=domain or None)
    message["X-Model-Package-Arn"] = review.model_package_arn
    message.set_content(email_text(review, recipient, approve_url, reject_url, expires_text, inline))
    message.add_alternative(email_html(review, recipient, approve_url, reject_url, expires_text, inline),
                            subtype="html")
    html_part = message.get_payload()[1]
    for index, cid in inline.cids.items():
        plot = review.plots[index]
        html_part.add_related(plot.content, maintype="image", subtype="png", cid=f"<{cid}>",
                              filename=posixpath.basename(plot.key) or f"plot{index}.png",
                              disposition="inline")
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


# Slack's limits on an image block (https://api.slack.com/reference/block-kit/blocks#image).
SLACK_IMAGE_URL_MAX = 3000
SLACK_ALT_TEXT_MAX = 2000


def slack_image_blocks(review: PackageReview, uploaded: dict | None = None) -> list[dict]:
    """One image block per plot: the file uploaded with the bot token (`uploaded`: plot index ->
    Slack file id) or else the presigned link, which Slack fetches to show it."""
    uploaded = uploaded or {}
    blocks = []
    for index, plot in enumerate(review.plots):
        alt = f"{plot.name} plot of {review.title}"[:SLACK_ALT_TEXT_MAX]
        title = {"type": "plain_text", "text": plot.name.capitalize()[:2000]}
        if index in uploaded:
            blocks.append({"type": "image", "slack_file": {"id": uploaded[index]}, "alt_text": alt, "title": title})
        elif len(plot.url) <= SLACK_IMAGE_URL_MAX:
            blocks.append({"type": "image", "image_url": plot.url, "alt_text": alt, "title": title})
    return blocks


def slack_message(review: PackageReview, approve_token: str, reject_token: str, expires_text: str,
                  uploaded: dict | None = None) -> dict:
    """One Block Kit message for the approvers' channel; buttons carry single-use tokens, and each
    plot is an image block (see `slack_image_blocks`)."""
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
            *slack_image_blocks(review, uploaded),
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


def _page_plot_html(plot: Plot) -> str:
    e = html.escape
    size = plot.shown_size(IMAGE_MAX_WIDTH)
    dimensions = f" width='{size[0]}' height='{size[1]}'" if size else f" width='{IMAGE_MAX_WIDTH}'"
    return (f"<figure style='margin:0 0 16px;'>"
            f"<img src='{e(plot.url)}' alt='{e(plot.name)} plot'{dimensions} "
            f"style='display:block;max-width:100%;height:auto;border:1px solid #d0d7de;'>"
            f"<figcaption style='font-size:13px;color:#59636e;'>{e(plot.name.capitalize())} "
            f"(<a href='{e(plot.url)}' rel='noreferrer'>full size</a>)</figcaption></figure>")


def _review_summary_html(review: PackageReview) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(label)}</td><td align='right'><b>{e(ours)}</b></td>"
                   f"<td align='right'>{e(theirs)}</td></tr>"
                   for label, ours, theirs in _metric_rows(review))
    limit = review.champion_rmse_limit
    rows += (f"<tr><td>RMSE limit</td><td align='right' colspan='2'>{e(fmt_number(review.rmse_threshold))} "
             f"(threshold)" + (f", {e(fmt_number(limit))} (champion + tolerance)"
                               if limit is not None and abs(limit) < 1e300 else "") + "</td></tr>")
    plots = "".join(_page_plot_html(p) for p in review.plots)
    status = {"PendingManualApproval": "waiting for approval"}.get(review.approval_status, review.approval_status)
    return (f"<p><b>{e(review.title)}</b> — {e(status)}</p>"
            f"<p style='font-size:13px;color:#59636e;'>Model package: {e(review.model_package_arn)}<br>"
            f"Dataset: {e(_dataset_text(review))}</p>"
            f"<table cellpadding='6' data-comparison='champion'><tr><th align='left'>Metric</th>"
            f"<th align='right'>Challenger (this model)</th><th align='right'>{e(_champion_heading(review))}</th></tr>"
            f"{rows}</table>"
            f"<p style='font-size:13px;color:#59636e;'>Gate: {e(_gate_text(review))}<br>{e(_champion_note(review))}</p>"
            + plots)


# The pages' Content-Security-Policy: nothing loads but inline styles, the form posts back to the
# page, no site may frame it (clickjacking); images only from the exact plot URLs a page shows.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
# What a path in a CSP source expression holds unescaped: RFC 3986 pchar less ';' and ',' (they end
# a directive or a source), quotes and parentheses (keyword-like); the rest is percent-encoded.
_CSP_PATH_SAFE = "/-._~!$&+=:@"


def image_source(url: str) -> str | None:
    """The CSP host-source that allows exactly `url`'s image: scheme, host (and port) and full path,
    without the query (CSP ignores it, so the presigned signature need not be in the policy). None
    for a URL that cannot be written as one (no http(s), user info, no host)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc or not parts.path:
        return None
    host = parts.netloc.lower()
    if any(c for c in host if not (c.isalnum() or c in ".-:[]")):
        return None
    # Browsers percent-decode both sides before comparing paths; re-encoding anything but pchar
    # keeps the policy well-formed whatever the key holds.
    return f"{parts.scheme}://{host}{quote(unquote(parts.path), safe=_CSP_PATH_SAFE)}"


def page_csp(image_urls: list[str] | tuple[str, ...] = ()) -> str:
    """`PAGE_CSP`, plus `img-src` listing each image the page shows and nothing else."""
    sources = sorted({source for url in image_urls if (source := image_source(url))})
    return PAGE_CSP + (f"; img-src {' '.join(sources)}" if sources else "")


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
