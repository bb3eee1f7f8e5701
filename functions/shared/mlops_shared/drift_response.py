"""What happens when the data drift alarm goes to ALARM: people are told, and (opt-in) a retraining starts.

The alarm (`DataDriftAlarm`, metric `RaySageMakerMLOps/DataDrift` `DriftedFeatures` per
`EndpointName`) sends EventBridge's "CloudWatch Alarm State Change" event. The response:

1. reads the newest drift report of that endpoint (`s3://<ArtifactsBucket>/monitoring/<EndpointName>/
   <YYYY/MM/DD/HHMMSS>/drift_report.json`, written by the drift job) and names the drifted features
   with their statistics and the report's location;
2. with `RetrainOnDrift=true`, starts the training pipeline on the newest *labelled* dataset version
   under the DataBucket's `incoming/` that is newer than the one the serving model was trained on
   (its package's `dataset_reference`). Captured traffic has no labels, so only uploaded training
   files count; a file is labelled when it passes the same checks intake makes (target column present,
   enough rows). The `ClientRequestToken` is derived from that dataset version, so the same alarm twice,
   or two alarms, start one run. A model trained on the newest labelled data that drifts again finds no
   newer version: the notification asks for fresh labelled data instead of retraining on the same data
   (never a loop).

Until the one definition of "serving package" (`mlops_shared.serving`, batch scoring) is merged, the
serving package is read here from the endpoint (`deployment.serving_state`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import boto3
from botocore.exceptions import ClientError

from .artifacts import DatasetReference
from .aws import is_not_found
from .config import StartPipelineSettings
from .csv_validation import validate_csv_sample
from .dataset_reference import identity_digest, read_reference, write_reference
from .dataset_version import normalize_version_id
from .deployment import serving_state
from .intake import (DatasetRef, dataset_reference, execution_display_name, head_dataset, pipeline_parameters,
                     read_sample, resolve_target, single_line)
from .notifications import Notification, publish

MONITORING_PREFIX = "monitoring"
REPORT_NAME = "drift_report.json"
DATASET_REFERENCE_PROPERTY = "dataset_reference"
# At most this many incoming/ versions are checked for labels (newest first) per alarm.
MAX_CANDIDATES = 20
# How many drifted features the notification lists one by one (the report has them all).
MAX_LISTED_FEATURES = 25


@dataclass(frozen=True)
class DriftResponseSettings:
    notification_topic_arn: str
    artifacts_bucket: str
    default_endpoint_name: str
    retrain_on_drift: bool
    # The training pipeline's settings (intake's), only needed to retrain.
    training: StartPipelineSettings | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DriftResponseSettings":
        env = os.environ if environ is None else environ
        retrain = env.get("RETRAIN_ON_DRIFT", "false").strip().lower() == "true"
        return cls(
            notification_topic_arn=env["NOTIFICATION_TOPIC_ARN"],
            artifacts_bucket=env["ARTIFACTS_BUCKET"],
            default_endpoint_name=env.get("ENDPOINT_NAME", ""),
            retrain_on_drift=retrain,
            training=StartPipelineSettings.from_env(env) if retrain else None,
        )


@dataclass(frozen=True)
class AlarmChange:
    alarm_name: str
    state: str
    previous_state: str | None
    reason: str
    endpoint_name: str
    time: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any], default_endpoint: str = "") -> "AlarmChange":
        """The documented "CloudWatch Alarm State Change" detail: alarmName, state, previousState, configuration."""
        detail = event.get("detail") or {}
        endpoint = default_endpoint
        for metric in (detail.get("configuration") or {}).get("metrics") or []:
            dimensions = ((metric.get("metricStat") or {}).get("metric") or {}).get("dimensions") or {}
            if dimensions.get("EndpointName"):
                endpoint = dimensions["EndpointName"]
                break
        return cls(
            alarm_name=detail.get("alarmName", ""),
            state=(detail.get("state") or {}).get("value", ""),
            previous_state=(detail.get("previousState") or {}).get("value"),
            reason=(detail.get("state") or {}).get("reason", ""),
            endpoint_name=endpoint,
            time=event.get("time", ""),
        )


# -- the drift report ---------------------------------------------------------------------------
def newest_report(s3: Any, bucket: str, endpoint_name: str) -> tuple[str, dict] | None:
    """(URI, report) of the newest drift report of the endpoint; window ends sort as their path."""
    prefix = f"{MONITORING_PREFIX}/{endpoint_name}/"
    newest = None
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/" + REPORT_NAME) and (newest is None or item["Key"] > newest):
                newest = item["Key"]
    if newest is None:
        return None
    body = s3.get_object(Bucket=bucket, Key=newest)["Body"].read()
    return f"s3://{bucket}/{newest}", json.loads(body)


def drifted_features(report: Mapping[str, Any]) -> list[dict]:
    """The report's features marked drifted, each with its name (the report keeps them as a list of
    objects with `feature`/`name`, or as a mapping from name to object)."""
    features = report.get("features") or []
    if isinstance(features, Mapping):
        features = [{"feature": name, **value} for name, value in features.items()]
    return [f for f in features if isinstance(f, Mapping) and f.get("drifted")]


def feature_line(feature: Mapping[str, Any]) -> str:
    name = feature.get("feature") or feature.get("name") or "?"
    statistics = feature.get("statistics") if isinstance(feature.get("statistics"), Mapping) else feature
    thresholds = feature.get("thresholds") if isinstance(feature.get("thresholds"), Mapping) else {}
    parts = []
    for key, value in statistics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            limit = thresholds.get(key)
            parts.append(f"{key} {value:.4g}" + (f" (threshold {limit:.4g})" if isinstance(limit, (int, float)) else ""))
    drifted_by = feature.get("drifted_by") or feature.get("reasons")
    if isinstance(drifted_by, list) and drifted_by:
        parts.append("drifted by " + ", ".join(map(str, drifted_by)))
    return f"- {name}: " + ("; ".join(parts) if parts else "drifted")


# -- the serving model's dataset and the labelled candidates -------------------------------------
def serving_dataset(endpoint_name: str, sagemaker: Any, s3: Any) -> tuple[str | None, DatasetReference | None]:
    """(serving package ARN, the dataset it was trained on); Nones when unknown."""
    state = serving_state(endpoint_name, sagemaker)
    if state is None or not state.model_package_arn:
        return None, None
    package = sagemaker.describe_model_package(ModelPackageName=state.model_package_arn)
    uri = (package.get("CustomerMetadataProperties") or {}).get(DATASET_REFERENCE_PROPERTY)
    if not uri:
        return state.model_package_arn, None
    try:
        return state.model_package_arn, read_reference(s3, uri)
    except ClientError as exc:
        if is_not_found(exc):
            return state.model_package_arn, None
        raise


@dataclass(frozen=True)
class Candidate:
    dataset: DatasetRef
    target: Any  # intake.TargetChoice
    profile: Any  # csv_validation.CsvProfile


def _versions_newest_first(s3: Any, bucket: str, prefix: str) -> list[dict]:
    versions = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        versions += [v for v in page.get("Versions", []) if v["Key"].lower().endswith(".csv")]
    return sorted(versions, key=lambda v: v["LastModified"], reverse=True)


def _same_version(version: Mapping[str, Any], reference: DatasetReference) -> bool:
    if version["Key"] != reference.key:
        return False
    version_id = normalize_version_id(version.get("VersionId"))
    if version_id and reference.version_id:
        return version_id == reference.version_id
    return version.get("ETag", "").strip('"') == (reference.etag or reference.version)


def newest_labelled_dataset(settings: StartPipelineSettings, trained_on: DatasetReference | None,
                            s3: Any) -> tuple[Candidate | None, list[str]]:
    """The newest labelled version under incoming/ newer than `trained_on`; and why newer ones were passed over."""
    passed_over: list[str] = []
    for version in _versions_newest_first(s3, settings.data_bucket, settings.incoming_prefix)[:MAX_CANDIDATES]:
        if trained_on is not None and version["Key"] == trained_on.key and _same_version(version, trained_on):
            break  # everything from here on is what the serving model saw, or older
        if trained_on is not None and trained_on.bucket == settings.data_bucket and _is_older(version, trained_on, s3):
            break
        dataset = DatasetRef(bucket=settings.data_bucket, key=version["Key"],
                             version_id=normalize_version_id(version.get("VersionId")),
                             etag=version.get("ETag", "").strip('"'), size=int(version.get("Size", 0)),
                             event_time=version["LastModified"].astimezone(timezone.utc).isoformat())
        found = head_dataset(dataset, s3)
        if found is None:
            continue
        dataset, head = found
        try:
            target = resolve_target(dataset, head.get("Metadata", {}), settings.default_target_column, s3)
        except Exception as exc:  # a dataset.json intake would have refused as well
            passed_over.append(f"{dataset.s3_uri} ({dataset.version}): {exc}")
            continue
        result = validate_csv_sample(read_sample(dataset, settings.sample_bytes, s3), object_size=dataset.size or 0,
                                     target_column=target.column, min_data_rows=settings.min_data_rows,
                                     max_rejected_rows=settings.max_rejected_rows)
        if result.issue:
            passed_over.append(f"{dataset.s3_uri} ({dataset.version}): {result.issue.code}")
            continue
        return Candidate(dataset, target, result.profile), passed_over
    return None, passed_over


def _is_older(version: Mapping[str, Any], trained_on: DatasetReference, s3: Any) -> bool:
    """True when `version` was written no later than the serving model's dataset (not newer data)."""
    arguments = {"Bucket": trained_on.bucket, "Key": trained_on.key}
    if trained_on.version_id:
        arguments["VersionId"] = trained_on.version_id
    try:
        trained_time = s3.head_object(**arguments)["LastModified"]
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return version["LastModified"] <= trained_time


def retraining_token(dataset: DatasetRef) -> str:
    """One retraining per dataset version, whichever alarm asks (64 hex characters); distinct from
    intake's token for the same upload, which names the run the upload itself started."""
    identity = identity_digest(dataset.bucket, dataset.key, dataset.version)
    return hashlib.sha256(f"retrain-on-drift/{identity}".encode()).hexdigest()


def start_retraining(candidate: Candidate, settings: StartPipelineSettings, endpoint_name: str,
                     sagemaker: Any, s3: Any) -> dict[str, Any]:
    dataset = candidate.dataset
    reference_uri = write_reference(s3, settings.artifacts_s3_uri, dataset_reference(dataset, candidate.target))
    parameters = pipeline_parameters(dataset, candidate.target, candidate.profile.header, settings, reference_uri)
    token = retraining_token(dataset)
    response = sagemaker.start_pipeline_execution(
        PipelineName=settings.pipeline_name,
        PipelineExecutionDisplayName=execution_display_name(dataset.key, datetime.now(timezone.utc)),
        PipelineExecutionDescription=single_line(
            f"Retraining on drift of endpoint {endpoint_name}: {dataset.s3_uri} version {dataset.version}; "
            f"target {candidate.target.column}")[:3072],
        PipelineParameters=parameters,
        ClientRequestToken=token,
    )
    return {"execution_arn": response["PipelineExecutionArn"], "input_data_uri": dataset.s3_uri,
            "dataset_version": dataset.version, "dataset_reference_uri": reference_uri, "client_request_token": token}


# -- the response -------------------------------------------------------------------------------
def respond(event: Mapping[str, Any], settings: DriftResponseSettings, *, s3: Any = None, sagemaker: Any = None,
            sns: Any = None) -> dict[str, Any]:
    change = AlarmChange.from_event(event, settings.default_endpoint_name)
    if change.state != "ALARM":
        return {"status": "ignored", "reason": f"alarm state {change.state or 'unknown'}", "alarm": change.alarm_name}
    s3 = s3 or boto3.client("s3")
    sagemaker = sagemaker or boto3.client("sagemaker")
    found = newest_report(s3, settings.artifacts_bucket, change.endpoint_name) if change.endpoint_name else None
    report_uri, report = found if found else (None, {})
    features = drifted_features(report)

    retraining: dict[str, Any] | None = None
    serving_arn = trained_on = None
    passed_over: list[str] = []
    if settings.retrain_on_drift and settings.training is not None:
        serving_arn, trained_on = serving_dataset(change.endpoint_name, sagemaker, s3)
        candidate, passed_over = newest_labelled_dataset(settings.training, trained_on, s3)
        if candidate is not None:
            retraining = start_retraining(candidate, settings.training, change.endpoint_name, sagemaker, s3)

    notification = drift_notification(change, report_uri, report, features, settings, retraining, trained_on,
                                      serving_arn, passed_over)
    message_id = publish(notification, settings.notification_topic_arn, sns=sns)
    return {
        "status": "retraining" if retraining else ("needs_labelled_data" if settings.retrain_on_drift else "notified"),
        "alarm": change.alarm_name,
        "endpoint_name": change.endpoint_name,
        "report_uri": report_uri,
        "drifted_features": [f.get("feature") or f.get("name") for f in features],
        "retraining": retraining,
        "serving_model_package_arn": serving_arn,
        "message_id": message_id,
        "event_type": notification.event_type,
    }


def drift_notification(change: AlarmChange, report_uri: str | None, report: Mapping[str, Any], features: list[dict],
                       settings: DriftResponseSettings, retraining: dict | None, trained_on: DatasetReference | None,
                       serving_arn: str | None, passed_over: list[str]) -> Notification:
    endpoint = change.endpoint_name or "(unknown endpoint)"
    names = [str(f.get("feature") or f.get("name")) for f in features]
    lines = [f"The data the endpoint {endpoint} receives has drifted from the data its model was trained on "
             f"(alarm {change.alarm_name}: {change.reason})." if change.reason else
             f"The data the endpoint {endpoint} receives has drifted (alarm {change.alarm_name}).", ""]
    if report_uri:
        window = report.get("window")
        lines.append(f"Drift report: {report_uri}" + (f" (window {json.dumps(window, default=str)})" if window else ""))
        if report.get("model_package_arn"):
            lines.append(f"Model package: {report['model_package_arn']}")
        if report.get("baseline_uri"):
            lines.append(f"Baseline: {report['baseline_uri']}")
        lines.append(f"Drifted features ({len(features)}):" if features else "The newest report lists no drifted feature.")
        lines += [feature_line(f) for f in features[:MAX_LISTED_FEATURES]]
        if len(features) > MAX_LISTED_FEATURES:
            lines.append(f"... and {len(features) - MAX_LISTED_FEATURES} more in the report.")
        report_prefix = report_uri.rsplit("/", 1)[0]
        if features:
            lines.append(f"Plots: {report_prefix}/plots/<feature>.png")
    else:
        lines.append(f"No drift report was found under s3://{settings.artifacts_bucket}/{MONITORING_PREFIX}/{endpoint}/.")
    lines.append("")
    if retraining:
        event_type = "data_drift_retraining"
        lines.append(f"Retraining started on {retraining['input_data_uri']} (version {retraining['dataset_version']}), "
                     f"the newest labelled dataset the serving model was not trained on: {retraining['execution_arn']}.")
        lines.append("The new model goes through evaluation and approval like any other.")
    elif settings.retrain_on_drift:
        event_type = "data_drift_needs_labels"
        seen = f" (it was trained on {trained_on.s3_uri} version {trained_on.version})" if trained_on else ""
        lines.append(f"No retraining started: there is no labelled dataset newer than the serving model's{seen}. "
                     "Captured traffic has no labels. Upload fresh labelled data (a CSV with the target column) "
                     "to the data bucket's incoming/ folder to train on it.")
        if serving_arn:
            lines.append(f"Serving model package: {serving_arn}")
        lines += [f"Not labelled or not usable: {line}" for line in passed_over[:10]]
    else:
        event_type = "data_drift"
        lines.append("Retraining on drift is off (stack parameter RetrainOnDrift). To retrain, upload fresh labelled "
                     "data (a CSV with the target column) to the data bucket's incoming/ folder.")
    shown = ", ".join(names[:5]) + ("..." if len(names) > 5 else "")
    subject = f"Data drift on {endpoint}" + (f": {shown}" if shown else "")
    return Notification(event_type=event_type, subject=subject, body="\n".join(lines))
