"""`mlops local score FILE.csv`: batch scoring by drop, as a user would do it (docs/scoring.md).

Uploads FILE to `score/<file name>` (`--explain`: `score/explain/<file name>`, which adds
per-feature contributions), then only watches the cloud through the AWS APIs: the quarantine reason
start_scoring or the job writes under `quarantine/score/`, the manifest the job writes next to the
predictions (for this very object version), or a failed scoring execution. Prints one result:
`status` (`succeeded`, `quarantined`, `failed`), `predictions_uri`, `manifest_uri`,
`model_package_arn`, `model_package_version`, `rows`, `prediction_column`, `reason`; the exit
code is `common.exit_code_for(result)` (0, 4 quarantined, 5 failed, 3 timed out, 1 internal).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from botocore.exceptions import ClientError

from local.cli.common import (
    DEFAULT_STATE_DIR,
    EXIT_USAGE,
    LOCAL_DEPLOY_PARAMETERS,
    failure_of,
    report_outcome,
    stderr,
)
from local.cli.run import RunSession, cloud_for
from mlops_shared.aws import is_not_found
from mlops_shared.quarantine import REASON_SUFFIX, quarantine_key
from mlops_shared.scoring import EXPLAIN_PREFIX, SCORE_PREFIX, SCORE_QUARANTINE_PREFIX, manifest_key

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


def empty_result() -> dict:
    return {"status": None, "reason": None, "input_uri": None, "predictions_uri": None, "manifest_uri": None,
            "model_package_arn": None, "model_package_version": None, "rows": None, "prediction_column": None,
            "execution_arn": None, "quarantine_uri": None, "fix": None}


def _read_json(session: RunSession, bucket: str, key: str) -> dict | None:
    try:
        return json.loads(session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if is_not_found(exc) or exc.response.get("Error", {}).get("Code") == "AccessDenied":
            return None
        raise


def _execution(session: RunSession, key: str, since: float) -> dict | None:
    """The newest scoring execution started for `key` since the upload."""
    sagemaker = session.client("sagemaker")
    name = session.outputs["ScoringPipelineName"]
    for summary in sagemaker.list_pipeline_executions(PipelineName=name, SortBy="CreationTime",
                                                      SortOrder="Descending").get("PipelineExecutionSummaries", []):
        started = summary.get("StartTime")
        if started is not None and started.timestamp() < since - 5:
            break
        parameters = sagemaker.list_pipeline_parameters_for_execution(
            PipelineExecutionArn=summary["PipelineExecutionArn"]).get("PipelineParameters", [])
        if {p["Name"]: p["Value"] for p in parameters}.get("InputKey") == key:
            return summary
    return None


def score_file(session: RunSession, path: Path, explain: bool) -> dict:
    result = session.result = empty_result()
    bucket = session.outputs["DataBucketName"]
    key = (EXPLAIN_PREFIX if explain else SCORE_PREFIX) + path.name
    started = time.time()
    with path.open("rb") as body:
        put = session.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    version = put.get("VersionId")
    result["input_uri"] = f"s3://{bucket}/{key}"
    session.progress(f"uploaded {result['input_uri']} (version {version})")
    reason_key = quarantine_key(key, SCORE_PREFIX, SCORE_QUARANTINE_PREFIX) + REASON_SUFFIX
    while True:
        session.check_time(f"the predictions of {result['input_uri']}")
        reason = _read_json(session, bucket, reason_key)
        if reason and reason.get("source", {}).get("version_id") in (version, None) and \
                reason.get("quarantined_at", "") >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1)):
            result.update(status="quarantined", reason=reason.get("message"), fix=reason.get("fix"),
                          quarantine_uri=reason.get("quarantined_copy"),
                          model_package_arn=reason.get("model_package_arn"))
            return result
        manifest = _read_json(session, bucket, manifest_key(key))
        if manifest and manifest.get("input", {}).get("version_id") == version:
            result.update(status="succeeded", **{name: manifest.get(name) for name in (
                "predictions_uri", "manifest_uri", "model_package_arn", "model_package_version", "rows",
                "prediction_column")})
            execution = _execution(session, key, started)
            result["execution_arn"] = execution["PipelineExecutionArn"] if execution else None
            return result
        execution = _execution(session, key, started)
        if execution:
            result["execution_arn"] = execution["PipelineExecutionArn"]
            if execution.get("PipelineExecutionStatus") in ("Failed", "Stopped"):
                # A job that found unscorable rows writes its reason first: give it a moment.
                if _read_json(session, bucket, reason_key) is None:
                    described = session.client("sagemaker").describe_pipeline_execution(
                        PipelineExecutionArn=execution["PipelineExecutionArn"])
                    result.update(status="failed" if execution["PipelineExecutionStatus"] == "Failed" else "stopped",
                                  reason=described.get("FailureReason") or "the scoring execution failed")
                    return result
        time.sleep(POLL_SECONDS)


def cmd_score(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        stderr(f"mlops local score: no such file: {path}")
        return EXIT_USAGE
    state_dir = Path(args.state_dir)
    session: RunSession | None = None
    failure = None
    progress = (lambda message: None) if args.quiet else stderr
    try:
        with cloud_for(state_dir, parameters=dict(LOCAL_DEPLOY_PARAMETERS), strict=True) as (
                endpoint_url, outputs, api_url, credentials, cloud):
            session = RunSession(endpoint_url, state_dir.resolve(), outputs, args,
                                 deadline=time.monotonic() + args.timeout, progress=progress,
                                 cloud=cloud, api_url=api_url, credentials=credentials)
            score_file(session, path, args.explain)
    except Exception as exc:  # each failure is an outcome: the document says how far the flow got
        failure = failure_of(exc, "mlops local score", log)
    result = session.result if session is not None and session.result is not None else empty_result()
    return report_outcome(result, failure, args.json)


def register(local_commands) -> None:
    """`mlops local score` (under the `local` group)."""
    score = local_commands.add_parser("score", help="drop a CSV into score/ and report its predictions")
    score.add_argument("file", help="the CSV to score (a header naming the model's features)")
    score.add_argument("--explain", action="store_true",
                       help="drop it under score/explain/: per-feature contributions in the output")
    score.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the predictions")
    score.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    score.add_argument("--quiet", action="store_true", help="no progress on stderr")
    score.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                       help="the local cloud's state dir (the running one's, or where to start one)")
    score.set_defaults(func=cmd_score)
