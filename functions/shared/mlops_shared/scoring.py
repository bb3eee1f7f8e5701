"""Batch scoring by drop: a CSV under `score/…` is checked against the serving package's features,
then scored by the scoring pipeline into `predictions/<same path>` (docs/scoring.md).

The check here is the cheap, early one (header + a sample, with the same cell rules as training
files: `csv_rules`); the job checks every row again and rejects the whole file, naming the rows,
when one cannot be scored. A refused file is COPIED to `quarantine/score/<same path>` with a
`.reason.json` next to it (like training quarantine, in its own prefix so the two never mix); the
original stays where it was dropped.
"""
from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import boto3

from mlops_shared import csv_rules, notifications, quarantine
from mlops_shared.environment import required_env
from mlops_shared.csv_validation import ValidationIssue
from mlops_shared.serving import ServingPackage, serving_package

SCORE_PREFIX = "score/"
PREDICTIONS_PREFIX = "predictions/"
SCORE_QUARANTINE_PREFIX = "quarantine/score/"
# Drops under score/explain/… also get per-feature contributions (docs/scoring.md).
EXPLAIN_PREFIX = "score/explain/"
PREDICTION_COLUMN = "prediction"
MANIFEST_SUFFIX = ".manifest.json"
DOCS_PAGE = "docs/scoring.md"
SAMPLE_BYTES = 256 * 1024
# The object metadata the predictions carry (S3 user metadata: x-amz-meta-…).
PACKAGE_ARN_METADATA = "model-package-arn"
PACKAGE_VERSION_METADATA = "model-package-version"
_ARGUMENT_MAX = 256  # a SageMaker processing job's container argument holds at most 256 characters


@dataclass(frozen=True)
class ScoringSettings:
    pipeline_name: str
    data_bucket: str
    notification_topic_arn: str
    model_package_group: str
    endpoint_name: str | None
    job_image_uri: str = ""
    processing_instance_type: str = ""
    docs_base_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "ScoringSettings":
        return cls(
            pipeline_name=required_env(environ, "SCORING_PIPELINE_NAME"),
            data_bucket=required_env(environ, "DATA_BUCKET"),
            notification_topic_arn=required_env(environ, "NOTIFICATION_TOPIC_ARN"),
            model_package_group=required_env(environ, "MODEL_PACKAGE_GROUP_NAME"),
            endpoint_name=environ.get("ENDPOINT_NAME", "").strip() or None,
            job_image_uri=environ.get("JOB_IMAGE_URI", "").strip(),
            processing_instance_type=environ.get("PROCESSING_INSTANCE_TYPE", "").strip(),
            docs_base_url=environ.get("DOCS_BASE_URL", "").strip(),
        )

    def docs_link(self) -> str:
        return f"{self.docs_base_url.rstrip('/')}/{DOCS_PAGE}" if self.docs_base_url else DOCS_PAGE


# -- names ------------------------------------------------------------------------------------
def predictions_key(score_key: str) -> str:
    """`score/a/b.csv` -> `predictions/a/b.csv` (the same path under predictions/)."""
    if not score_key.startswith(SCORE_PREFIX):
        raise ValueError(f"{score_key!r} is not under {SCORE_PREFIX}")
    return PREDICTIONS_PREFIX + score_key[len(SCORE_PREFIX):]


def manifest_key(score_key: str) -> str:
    return predictions_key(score_key) + MANIFEST_SUFFIX


def wants_explanations(score_key: str) -> bool:
    return score_key.startswith(EXPLAIN_PREFIX)


def prediction_column(header: Sequence[str]) -> str:
    """`prediction`, or — when the input already has a column of that name — the first of
    `prediction_1`, `prediction_2`, … that collides with no input column."""
    taken = {name.strip() for name in header}
    if PREDICTION_COLUMN not in taken:
        return PREDICTION_COLUMN
    number = 1
    while f"{PREDICTION_COLUMN}_{number}" in taken:
        number += 1
    return f"{PREDICTION_COLUMN}_{number}"


# -- the model's features ----------------------------------------------------------------------
def read_preprocessor(model_data_url: str, s3: Any) -> dict[str, Any]:
    """preprocessor.json of a model.tar.gz, read as a stream (the archive is never held whole)."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", model_data_url)
    if not match:
        raise ValueError(f"model data URL {model_data_url!r} is not an s3:// URI")
    body = s3.get_object(Bucket=match.group(1), Key=match.group(2))["Body"]
    with tarfile.open(fileobj=body, mode="r|gz") as archive:
        for member in archive:
            if member.name.lstrip("./") == "preprocessor.json":
                return json.loads(archive.extractfile(member).read())
    raise ValueError(f"{model_data_url} holds no preprocessor.json")


# -- validation --------------------------------------------------------------------------------
def validate_scoring_sample(sample: bytes, whole_file: bool, feature_order: Sequence[str]) -> ValidationIssue | None:
    """Why the file cannot be scored by a model with `feature_order`, judged on its first bytes,
    or None. Extra columns (ids, the target) are allowed and copied to the output."""
    try:
        text = sample.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if whole_file or error.start < len(sample) - 4:  # a cut multi-byte character at the end is fine
            return ValidationIssue("not_utf8", f"The file is not UTF-8 text (byte {error.start}).",
                                   "Save the CSV as UTF-8.")
        text = sample[:error.start].decode("utf-8-sig")
    if not whole_file:  # the last line of a sample may be cut
        text = text[: text.rfind("\n") + 1] if "\n" in text else text
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        return ValidationIssue("empty_file", "The file has no header and no rows.",
                               "Drop a CSV with a header row and at least one row to score.")
    header = [name.strip() for name in rows[0]]
    problem = csv_rules.header_problem(rows[0], rows[1] if len(rows) > 1 else None)
    if problem:
        return ValidationIssue(problem.code, problem.message, problem.fix)
    missing = [name for name in feature_order if name not in header]
    if missing:
        return ValidationIssue(
            "missing_features",
            f"The file lacks the model's feature column(s) {', '.join(missing)}.",
            f"Give the file a header with every feature the model was trained on: {', '.join(feature_order)}.",
            {"missing": missing, "expected": list(feature_order), "header": header},
        )
    if len(rows) < 2:
        return ValidationIssue("no_rows", "The file has a header but no rows to score.",
                               "Add the rows to score below the header.")
    bad = bad_rows(header, rows[1:], feature_order, first_line=2)
    if bad:
        return rows_issue(bad)
    return None


def bad_rows(header: Sequence[str], rows: Sequence[Sequence[str]], feature_order: Sequence[str],
             first_line: int, limit: int = 20) -> list[dict[str, Any]]:
    """Rows that cannot be scored (wrong field count, a feature cell that is not a number or
    missing), as {line, reason}; at most `limit`."""
    index = {name: header.index(name) for name in feature_order}
    found = []
    for offset, row in enumerate(rows):
        reason = None
        if len(row) != len(header):
            reason = f"{len(row)} fields, the header has {len(header)}"
        else:
            for name, column in index.items():
                if csv_rules.parse_cell(row[column]).kind == csv_rules.BAD:
                    reason = csv_rules.bad_cell_reason(name, row[column])
                    break
        if reason:
            found.append({"line": first_line + offset, "reason": reason})
            if len(found) >= limit:
                break
    return found


def rows_issue(bad: list[dict[str, Any]]) -> ValidationIssue:
    lines = ", ".join(str(item["line"]) for item in bad[:10])
    return ValidationIssue(
        "unscorable_rows",
        f"{len(bad)}{'+' if len(bad) >= 20 else ''} row(s) cannot be scored (lines {lines}): {bad[0]['reason']}.",
        "Fix or remove those rows (a feature may be a number or empty), then drop the file again.",
        {"rows": bad},
    )


# -- the drop ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoringDrop:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def quarantine_drop(drop: ScoringDrop, issue: ValidationIssue, settings: ScoringSettings, s3: Any, sns: Any,
                    package: ServingPackage | None = None) -> dict[str, Any]:
    location = quarantine.QuarantineLocation(
        drop.bucket, quarantine.quarantine_key(drop.key, SCORE_PREFIX, SCORE_QUARANTINE_PREFIX))
    reason = quarantine.build_reason(
        issue, bucket=drop.bucket, key=drop.key, version_id=drop.version_id, etag=drop.etag, profile=None,
        location=location, docs=settings.docs_link(),
        shortened=quarantine.is_shortened(drop.key, location.key, SCORE_PREFIX, SCORE_QUARANTINE_PREFIX))
    reason["model_package_arn"] = package.model_package_arn if package else None
    quarantine.quarantine_object(bucket=drop.bucket, key=drop.key, version_id=drop.version_id, reason=reason,
                                 location=location, s3=s3)
    message_id = notifications.publish(notifications.Notification(
        event_type="scoring_quarantined",
        subject=f"File not scored ({issue.code}): {drop.key.rsplit('/', 1)[-1]}",
        body="\n".join([
            f"The file {drop.s3_uri} was not scored: {issue.message}",
            "", f"How to fix it: {issue.fix}", "",
            f"The file is unchanged where you dropped it; a copy is in {location.uri}",
            f"and the full diagnosis in {location.reason_uri}.",
            f"Batch scoring is described in {settings.docs_link()}.",
        ])), settings.notification_topic_arn, sns=sns)
    return {"status": "quarantined", "reason": issue.code, "message": issue.message, "fix": issue.fix,
            "input_uri": drop.s3_uri, "quarantine_uri": location.uri, "reason_uri": location.reason_uri,
            "model_package_arn": package.model_package_arn if package else None,
            "notification_message_id": message_id}


def pipeline_parameters(drop: ScoringDrop, package: ServingPackage, settings: ScoringSettings) -> list[dict[str, str]]:
    values = {
        "InputBucket": drop.bucket,
        "InputKey": drop.key,
        "InputVersionId": drop.version_id or "",
        "ModelPackageArn": package.model_package_arn,
        "ModelPackageVersion": str(package.model_package_version),
        "ModelDataUrl": package.model_data_url,
        "Explain": "true" if wants_explanations(drop.key) else "false",
    }
    if settings.job_image_uri:
        values["JobImageUri"] = settings.job_image_uri
    if settings.processing_instance_type:
        values["ProcessingInstanceType"] = settings.processing_instance_type
    return [{"Name": name, "Value": value} for name, value in values.items()]


def too_long_issue(drop: ScoringDrop, package: ServingPackage) -> ValidationIssue | None:
    """The job takes the drop and the package as container arguments, which SageMaker limits to
    256 characters each."""
    values = {"key": drop.key, "version id": drop.version_id or "", "model data URL": package.model_data_url,
              "bucket": drop.bucket, "model package ARN": package.model_package_arn}
    too_long = [name for name, value in values.items() if len(value) > _ARGUMENT_MAX]
    if not too_long:
        return None
    return ValidationIssue("name_too_long", f"The file's {', '.join(too_long)} is longer than the {_ARGUMENT_MAX} "
                           "characters a SageMaker job argument holds.",
                           "Drop the file under a shorter key (folders and name together).")


def process_drop(drop: ScoringDrop, settings: ScoringSettings, *, s3: Any = None, sagemaker: Any = None,
                 sns: Any = None, client_request_token: str) -> dict[str, Any]:
    """Check the dropped file against the serving package and start the scoring pipeline, or
    quarantine it with the reason."""
    s3 = s3 or boto3.client("s3")
    sagemaker = sagemaker or boto3.client("sagemaker")
    sns = sns or boto3.client("sns")
    package = serving_package(settings.model_package_group, settings.endpoint_name, sagemaker=sagemaker)
    if package is None:
        return quarantine_drop(drop, ValidationIssue(
            "no_serving_model", f"No model serves yet: no endpoint and no Approved package in {settings.model_package_group}.",
            "Approve a model (or wait for the deployment), then drop the file again."), settings, s3, sns)
    feature_order = read_preprocessor(package.model_data_url, s3)["feature_order"]
    arguments = {"Bucket": drop.bucket, "Key": drop.key, "Range": f"bytes=0-{SAMPLE_BYTES - 1}"}
    if drop.version_id:
        arguments["VersionId"] = drop.version_id
    sample = s3.get_object(**arguments)["Body"].read() if drop.size else b""
    issue = too_long_issue(drop, package) or validate_scoring_sample(
        sample, whole_file=drop.size <= SAMPLE_BYTES, feature_order=feature_order)
    if issue:
        return quarantine_drop(drop, issue, settings, s3, sns, package)
    started = sagemaker.start_pipeline_execution(
        PipelineName=settings.pipeline_name,
        PipelineExecutionDisplayName=execution_display_name(drop.key),
        PipelineParameters=pipeline_parameters(drop, package, settings),
        ClientRequestToken=client_request_token,
    )
    return {"status": "started", "execution_arn": started["PipelineExecutionArn"], "input_uri": drop.s3_uri,
            "predictions_uri": f"s3://{drop.bucket}/{predictions_key(drop.key)}",
            "model_package_arn": package.model_package_arn,
            "model_package_version": package.model_package_version, "package_source": package.source}


def execution_display_name(key: str) -> str:
    """`score-<file stem>-<time>` within SageMaker's display-name pattern and 82 characters."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", key.rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip("-")[:40] or "file"
    return f"score-{stem}-{datetime.now(timezone.utc):%Y%m%d%H%M%S}"


# -- the notification when the scoring pipeline ends ------------------------------------------
def done_notification(status: str, parameters: Mapping[str, str], manifest: Mapping[str, Any] | None,
                      failure_reason: str | None = None) -> notifications.Notification:
    source = f"s3://{parameters.get('InputBucket')}/{parameters.get('InputKey')}"
    version = parameters.get("ModelPackageVersion")
    if status == "Succeeded" and manifest:
        return notifications.Notification(
            event_type="scoring_succeeded",
            subject=f"Scored {manifest.get('rows')} rows: {parameters.get('InputKey', '').rsplit('/', 1)[-1]}",
            body="\n".join([
                f"{source} was scored by model package version {version}.",
                f"Predictions: {manifest.get('predictions_uri')} (column {manifest.get('prediction_column')})",
                f"Rows: {manifest.get('rows')}",
                f"Model package: {parameters.get('ModelPackageArn')}",
                f"Manifest: {manifest.get('manifest_uri')}",
            ]))
    return notifications.Notification(
        event_type="scoring_failed",
        subject=f"Scoring {status.lower()}: {parameters.get('InputKey', '').rsplit('/', 1)[-1]}",
        body="\n".join([
            f"Scoring {source} with model package version {version} ended {status}.",
            f"Reason: {failure_reason or 'see the pipeline execution'}",
            f"Rows that cannot be scored put the file in s3://{parameters.get('InputBucket')}/"
            f"{quarantine.quarantine_key(parameters.get('InputKey', ''), SCORE_PREFIX, SCORE_QUARANTINE_PREFIX)}"
            f"{quarantine.REASON_SUFFIX} with their line numbers.",
        ]))


def client_request_token(drop: ScoringDrop) -> str:
    """Retries of one drop share it (StartPipelineExecution is idempotent on it)."""
    from mlops_shared.dataset_reference import identity_digest

    return identity_digest(drop.bucket, drop.key, drop.version_id or (drop.etag or "").strip('"'))


def notify_done(detail: Mapping[str, Any], settings: ScoringSettings, *, s3: Any = None, sagemaker: Any = None,
                sns: Any = None) -> dict[str, Any]:
    """The scoring pipeline's "Pipeline Execution Status Change" (Succeeded/Failed/Stopped) -> one
    notification with the predictions URI and package version (or the failure reason)."""
    s3 = s3 or boto3.client("s3")
    sagemaker = sagemaker or boto3.client("sagemaker")
    status = detail.get("currentPipelineExecutionStatus", "")
    if status not in ("Succeeded", "Failed", "Stopped"):
        return {"status": "ignored", "execution_status": status}
    execution_arn = detail["pipelineExecutionArn"]
    parameters = {p["Name"]: p["Value"] for p in sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution_arn).get("PipelineParameters", [])}
    manifest = failure_reason = None
    if status == "Succeeded":
        manifest = json.loads(s3.get_object(Bucket=parameters["InputBucket"],
                                            Key=manifest_key(parameters["InputKey"]))["Body"].read())
    else:
        failure_reason = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn).get("FailureReason")
    message_id = notifications.publish(done_notification(status, parameters, manifest, failure_reason),
                                       settings.notification_topic_arn, sns=sns)
    return {"status": "notified", "execution_status": status, "execution_arn": execution_arn,
            "predictions_uri": manifest.get("predictions_uri") if manifest else None,
            "model_package_version": parameters.get("ModelPackageVersion"), "notification_message_id": message_id}
