"""The console's HTML. Everything shown is escaped here (`esc`); the page loads its script and
style from the console itself only (CSP in `app.py`), so nothing inline."""
from __future__ import annotations

import json
import urllib.parse
from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable

STATUS_CLASSES = {"Succeeded": "ok", "Approved": "ok", "InService": "ok", "Executing": "running",
                  "Starting": "running", "Updating": "running", "Creating": "running", "Failed": "bad",
                  "Rejected": "bad", "Stopped": "bad", "PendingManualApproval": "waiting"}


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def status(value: Any) -> str:
    return f"<span class='status {STATUS_CLASSES.get(str(value), 'other')}' data-status='{esc(value)}'>{esc(value)}</span>"


def link(href: str, text: Any) -> str:
    return f"<a href='{esc(href)}'>{esc(text)}</a>"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    """A table of already-rendered cells (render each with `esc`/`status`/`link`)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class='{esc(css)}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def layout(title: str, body: str, scripts: Iterable[str] = ()) -> str:
    # Deferred: they run once the document (the #dag element) exists, in order.
    tags = "".join(f"<script defer src='{esc(src)}'></script>" for src in scripts)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(title)} · mlops console</title><link rel='stylesheet' href='/static/console.css'>"
            f"{tags}</head><body><header><a class='home' href='/'>mlops console</a>"
            "<span class='note'>read-only · local administrator</span></header>"
            f"<main><h1>{esc(title)}</h1>{body}</main></body></html>")


def _when(value: Any) -> str:
    return esc(value.replace("T", " ")[:19] if isinstance(value, str) else value)


def index_page(executions: list[dict], packages: list[dict], endpoint: dict | None, pipeline: str, group: str) -> str:
    runs = table(["execution", "status", "started"], (
        [link(f"/executions/{e['id']}", e["display_name"] or e["id"]), status(e["status"]), _when(e["started"])]
        for e in executions), "executions")
    registry = table(["version", "approval", "created"], (
        [link(f"/packages/{p['version']}", p["version"]), status(p["approval_status"]), _when(p["created"])]
        for p in packages), "packages")
    return layout("What happened", (
        f"<section><h2>Pipeline executions <small>{esc(pipeline)}</small></h2>{runs}</section>"
        f"<section><h2>Model registry <small>{esc(group)}</small></h2>{registry}</section>"
        f"<section><h2>Endpoint</h2>{endpoint_block(endpoint)}</section>"))


def endpoint_block(endpoint: dict | None) -> str:
    if endpoint is None:
        return "<p>no endpoint in this stack</p>"
    rows = [[esc(v["name"]), esc(v["weight"]), esc(v["instances"])] for v in endpoint.get("variants", [])]
    return (f"<p class='endpoint'>{esc(endpoint['name'])} {status(endpoint['status'])} "
            f"{esc(endpoint.get('config') or '')} {esc(endpoint.get('failure_reason') or '')}</p>"
            + (table(["variant", "weight", "instances"], rows) if rows else ""))


def execution_page(execution: dict, live_url: str) -> str:
    """The DAG and the step table are drawn by /static/console.js from `live_url` (polled), so what
    the page shows is always the API's current answer."""
    body = (f"<p>{status(execution['status'])} started {_when(execution['started'])} "
            f"<span class='note'>{esc(execution['arn'])}</span></p>"
            + (f"<p class='failure'>{esc(execution['failure_reason'])}</p>" if execution.get("failure_reason") else "")
            + f"<section><h2>Steps</h2><div id='dag' data-live='{esc(live_url)}' "
              f"data-execution='{esc(execution['id'])}'></div>"
              "<div id='steps'></div><p id='updated' class='note'></p></section>")
    return layout(f"Execution {execution['display_name'] or execution['id']}", body,
                  ["/static/vendor/dagre/dagre.min.js", "/static/console.js"])


def log_page(execution: dict, log: dict) -> str:
    step = log["step"]
    parts = [f"<p>{link('/executions/' + execution['id'], 'back to the execution')} · {status(step['status'])}</p>"]
    if step.get("failure_reason"):
        parts.append(f"<p class='failure'>{esc(step['failure_reason'])}</p>")
    if not log["streams"]:
        parts.append("<p>no log: this step runs no job, or its job has not written yet</p>")
    for stream in log["streams"]:
        lines = "\n".join(f"{_ms(e['timestamp'])}  {e['message']}" for e in stream["events"])
        parts.append(f"<h2>{esc(stream['log_group'])} <small>{esc(stream['name'])}</small></h2>"
                     f"<pre class='log'>{esc(lines)}</pre>")
    return layout(f"Log of {step['name']}", "".join(parts))


def _ms(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp / 1000, tz=timezone.utc).strftime("%H:%M:%S")


def plot_url(plot: dict) -> str:
    return "/plots?" + urllib.parse.urlencode({"bucket": plot["bucket"], "key": plot["key"]})


def _metrics(evaluation: dict | None) -> str:
    if not evaluation:
        return "<p>no evaluation.json</p>"
    rows = [[esc(name), esc(_number((value or {}).get("value"))), esc(_number((value or {}).get("standard_deviation")))]
            for name, value in (evaluation.get("regression_metrics") or {}).items()]
    gate = evaluation.get("gate") or {}
    extra = table(["gate", "value"], [[esc(k), esc(json.dumps(v) if isinstance(v, (dict, list)) else v)]
                                      for k, v in gate.items()]) if gate else ""
    return table(["metric", "value", "standard deviation"], rows, "metrics") + extra


def _number(value: Any) -> Any:
    return f"{value:,.4g}" if isinstance(value, float) and abs(value) < 10 else (
        f"{value:,.1f}" if isinstance(value, float) else value)


def package_page(package: dict, lineage_html: str) -> str:
    decided = package.get("approval_description") or "not decided yet"
    who = package.get("last_modified_by")
    approval = (f"<p>{status(package['approval_status'])} <span class='decision'>{esc(decided)}</span>"
                f" <span class='note'>last modified {_when(package['last_modified'])}"
                f"{' by ' + esc(who) if who else ''}</span></p>")
    plots = "".join(f"<figure><img src='{esc(plot_url(p))}' alt='{esc(p['name'])}'><figcaption>{esc(p['name'])}"
                    "</figcaption></figure>" for p in package["plots"]) or "<p>no plots</p>"
    deployments = table(["record", "value"], [[esc(k), esc(v)] for d in package["deployments"] for k, v in d.items()]) \
        if package["deployments"] else "<p>no deployment recorded</p>"
    metadata = table(["property", "value"], [[esc(k), esc(v)] for k, v in sorted(package["metadata"].items())])
    body = (f"<p class='note'>{esc(package['arn'])}</p><section id='approval'><h2>Approval</h2>{approval}</section>"
            f"<section id='metrics'><h2>Metrics</h2>{_metrics(package['evaluation'])}</section>"
            f"<section id='plots'><h2>Plots</h2><div class='plots'>{plots}</div></section>"
            f"<section id='deployments'><h2>Deployments</h2>{deployments}</section>"
            f"<section id='lineage'><h2>Lineage</h2>{lineage_html}</section>"
            f"<section><h2>Metadata</h2>{metadata}</section>")
    return layout(f"Model package {package['group']} v{package['version']}", body)


def lineage_block(lineage: dict | None) -> str:
    """The chain of a package (`local.cli.lineage.lineage_of`'s dict), or that none is recorded."""
    if lineage is None:
        return "<p class='lineage-missing'>lineage: not recorded</p>"
    dataset = lineage.get("dataset") or {}
    manifest = lineage.get("manifest") or {}
    code = lineage.get("code") or {}
    execution = lineage.get("pipeline_execution") or {}
    training = lineage.get("training") or {}
    rows = [
        ["dataset", esc(dataset.get("uri")) + (f" <span class='note'>version {esc(dataset.get('version_id'))}</span>"
                                              if dataset.get("version_id") else "")],
        ["manifest", esc(manifest.get("uri") or "—")],
        ["code", esc(code.get("image_uri") or "—") + (f" <span class='note'>{esc(code.get('image_digest'))}</span>"
                                                     if code.get("image_digest") else "")
         + (f" <span class='note'>code {esc(code.get('code_version'))}</span>" if code.get("code_version") else "")],
        ["pipeline execution", esc(execution.get("arn") or "—")],
        ["training", esc(training.get("training_job_name") or "—")
         + (f" <span class='note'>tuning {esc(training.get('tuning_job_name'))}</span>"
            if training.get("tuning_job_name") else "")],
        ["hyperparameters", esc(", ".join(f"{k}={v}" for k, v in sorted((training.get("hyperparameters") or {}).items()))
                                or "—")],
    ]
    endpoints = table(["endpoint", "since", "serving now"], [
        [esc(e.get("endpoint_name")), _when(e.get("since")), esc("yes" if e.get("current") else "no")]
        for e in lineage.get("endpoints") or []]) if lineage.get("endpoints") else "<p>not served by any endpoint</p>"
    associations = table(["source", "type", "association", "destination", "type"], [
        [esc(a.get("source_arn")), esc(a.get("source_type")), esc(a.get("association_type")),
         esc(a.get("destination_arn")), esc(a.get("destination_type"))] for a in lineage.get("associations") or []],
        "associations")
    missing = (f"<p class='failure'>not recorded: {esc(', '.join(lineage['missing']))}</p>"
               if lineage.get("missing") else "")
    return (table(["what", "which"], ([esc(a), b] for a, b in rows), "lineage") + missing
            + f"<h3>Endpoints</h3>{endpoints}<h3>Associations</h3>{associations}")


def error_page(code: int, message: str) -> str:
    return layout(f"{code}", f"<p class='failure'>{esc(message)}</p>")
