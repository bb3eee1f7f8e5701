"""A new CSV in ``incoming/``: validate it, then quarantine it or start the training pipeline.

``process_dataset`` is the whole decision; the Lambda handler only parses the event and makes the
call idempotent on the dataset identity (bucket, key, version or ETag).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

from . import csv_rules, notifications, quarantine
from .artifacts import DatasetConfigVersion, DatasetReference
from .aws import is_not_found
from .config import StartPipelineSettings
from .dataset_config import CONFIG_NAME, DatasetConfig, DatasetConfigError, read_dataset_config
from .dataset_config import config_key as dataset_config_key
from .dataset_reference import identity_digest, registry_label, write_reference
from .dataset_version import dataset_version, normalize_dataset_version, normalize_version_id
from .csv_validation import CsvProfile, ValidationIssue, validate_csv_sample

TARGET_METADATA_KEY = "target"  # S3 user metadata (x-amz-meta-target); S3 lower-cases metadata keys
DATASET_CONFIG_NAME = CONFIG_NAME


@dataclass(frozen=True)
class DatasetRef:
    """One version of one object: what a pipeline execution trains on, and the idempotency identity."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None
    event_time: str | None = None

    @property
    def version(self) -> str:
        """The S3 version id, or the ETag when the bucket is not versioned (the sequencer as a last resort)."""
        return dataset_version(self.version_id, self.etag, self.sequencer)

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def identity(self) -> dict[str, str]:
        # Never the event id: S3 sends one id per notification configuration and moto reuses one id
        # for every event, while bucket/key/version names exactly one piece of data.
        return {"bucket": self.bucket, "key": self.key, "version": self.version}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.identity()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRef:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TargetChoice:
    column: str
    source: str  # "metadata" | "dataset.json" | "default"
    config: DatasetConfig | None = None  # the dataset.json read, when one was


def client_request_token(dataset: DatasetRef) -> str:
    """A 64-character token derived from the dataset identity: retries of one upload share it."""
    return identity_digest(dataset.bucket, dataset.key, dataset.version)


def execution_display_name(key: str, when: datetime) -> str:
    """``incoming/My Houses 2024.csv`` at 2024-05-01T12:00:00Z -> ``My-Houses-2024-20240501-120000``."""
    stem = key.rsplit("/", 1)[-1]
    if stem.lower().endswith(".csv"):
        stem = stem[:-4]
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # Letters with accents keep their base letter (Häuser -> Hauser); other characters separate words.
    ascii_stem = unicodedata.normalize("NFKD", stem.replace("ß", "ss")).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_stem).strip("-") or "dataset"
    slug = slug[: 82 - len(stamp) - 1].rstrip("-")
    return f"{slug}-{stamp}"


def parse_event_time(value: str | None) -> datetime:
    if value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(timezone.utc)


def head_dataset(dataset: DatasetRef, s3: Any) -> tuple[DatasetRef, dict[str, Any]] | None:
    """HEADs the exact version; returns the (possibly key-corrected) reference and the response.

    S3 notifications may URL-encode keys, so the decoded form is tried when the key as received does
    not exist. When both spellings name an object (`a+b.csv` and `a b.csv`, unversioned), the one
    with the event's ETag is taken. ``None`` when the object is gone.
    """
    candidates = [dataset.key]
    if unquote_plus(dataset.key) != dataset.key:
        candidates.append(unquote_plus(dataset.key))
    found: list[tuple[str, dict[str, Any]]] = []
    for key in candidates:
        arguments: dict[str, str] = {"Bucket": dataset.bucket, "Key": key}
        if dataset.version_id:
            arguments["VersionId"] = dataset.version_id
        try:
            found.append((key, s3.head_object(**arguments)))
        except ClientError as error:
            if not is_not_found(error):
                raise
            continue
        # A version id names one object; without one, only the ETag can tell the spellings apart.
        if dataset.version_id or not dataset.etag:
            break
    if not found:
        return None
    key, head = found[0]
    if len(found) > 1:
        wanted = normalize_dataset_version(dataset.etag)
        key, head = next(((k, h) for k, h in found if normalize_dataset_version(h.get("ETag", "")) == wanted),
                         found[0])
    resolved = DatasetRef(
        bucket=dataset.bucket,
        key=key,
        version_id=dataset.version_id or normalize_version_id(head.get("VersionId")),
        etag=normalize_dataset_version(dataset.etag or head.get("ETag", "")),
        size=head.get("ContentLength", dataset.size),
        sequencer=dataset.sequencer,
        event_time=dataset.event_time,
    )
    return resolved, head


def read_sample(dataset: DatasetRef, sample_bytes: int, s3: Any) -> bytes:
    if not dataset.size:
        return b""
    arguments: dict[str, str] = {"Bucket": dataset.bucket, "Key": dataset.key, "Range": f"bytes=0-{sample_bytes - 1}"}
    if dataset.version_id:
        arguments["VersionId"] = dataset.version_id
    return s3.get_object(**arguments)["Body"].read(sample_bytes)


def resolve_target(
    dataset: DatasetRef, metadata: dict[str, str], default_target: str, s3: Any
) -> TargetChoice:
    """Object metadata ``target`` -> ``dataset.json`` next to the file -> the stack default.
    DatasetConfigError when a dataset.json is there but cannot be used."""
    from_metadata = (metadata or {}).get(TARGET_METADATA_KEY, "").strip()
    if from_metadata:
        return TargetChoice(from_metadata, "metadata")
    config = read_dataset_config(dataset.bucket, dataset.key, s3)
    if config is None or config.target is None:
        return TargetChoice(default_target, "default", config)
    return TargetChoice(config.target, DATASET_CONFIG_NAME, config)


# StartPipelineExecution: a parameter value holds at most 1024 characters.
PARAMETER_VALUE_MAX = 1024


def input_data_uri_parameter(uri: str) -> str:
    """The `InputDataUri` parameter value for `uri` (for people; cut to what a parameter holds)."""
    return uri if len(uri) <= PARAMETER_VALUE_MAX else uri[:PARAMETER_VALUE_MAX - 3] + "..."


def dataset_reference(dataset: DatasetRef, target: TargetChoice) -> DatasetReference:
    config = None
    if target.source == DATASET_CONFIG_NAME and target.config is not None:
        config = DatasetConfigVersion(key=target.config.key, version_id=target.config.version_id,
                                      etag=target.config.etag)
    return DatasetReference(bucket=dataset.bucket, key=dataset.key, version=dataset.version,
                            version_id=dataset.version_id, etag=dataset.etag,
                            target_column=target.column, target_source=target.source, dataset_config=config)


def pipeline_parameters(
    dataset: DatasetRef, target: TargetChoice, header: list[str], settings: StartPipelineSettings,
    reference_uri: str,
) -> list[dict[str, str]]:
    uri = dataset.s3_uri
    values = {
        # For people (Studio, the CLI); the jobs and the registry use the reference.
        "InputDataUri": input_data_uri_parameter(uri),
        "DatasetReferenceUri": reference_uri,
        "DatasetLabel": registry_label(uri),
        "DatasetVersion": dataset.version,
        "TargetColumn": target.column,
        "TargetLabel": registry_label(target.column),
        # The ingest job derives the group for this schema (base name + schema hash): a group's
        # feature definitions are fixed, and only ingest knows the inferred feature types.
        "FeatureGroupName": settings.feature_group_base_name,
        "ArtifactsS3Uri": settings.artifacts_s3_uri,
        **settings.stack_parameters,
    }
    return [{"Name": name, "Value": str(value)} for name, value in values.items()]


def process_dataset(
    dataset: DatasetRef,
    settings: StartPipelineSettings,
    *,
    s3: Any = None,
    sagemaker: Any = None,
    sns: Any = None,
) -> dict[str, Any]:
    """Validates ``dataset`` and either quarantines it (and says why) or starts one pipeline execution."""
    s3 = s3 or boto3.client("s3")
    if not (dataset.key.startswith(settings.incoming_prefix) and dataset.key.lower().endswith(".csv")):
        return {"status": "ignored", "reason": "not_an_incoming_csv", "input_data_uri": dataset.s3_uri}

    found = head_dataset(dataset, s3)
    if found is None:
        return {"status": "ignored", "reason": "object_not_found", "input_data_uri": dataset.s3_uri,
                "dataset_version": dataset.version}
    dataset, head = found

    if (dataset.size or 0) > settings.max_dataset_bytes:
        return _quarantine(dataset, file_too_large(dataset.size or 0, settings.max_dataset_bytes), None, None,
                           settings, s3, sns, copy=False)

    try:
        target = resolve_target(dataset, head.get("Metadata", {}), settings.default_target_column, s3)
    except DatasetConfigError as exc:
        issue = ValidationIssue(
            "invalid_dataset_config",
            str(exc),
            'Make dataset.json a small UTF-8 JSON object with only the key "target", such as '
            '{"target": "PRICE"} (or delete it to use the default target, or name the target in the upload\'s '
            "metadata), then upload the CSV again.",
            {"dataset_config_key": dataset_config_key(dataset.key)},
        )
        return _quarantine(dataset, issue, None, None, settings, s3, sns)

    issue = target_name_issue(target)
    if issue:
        return _quarantine(dataset, issue, None, target, settings, s3, sns)

    sample = read_sample(dataset, settings.sample_bytes, s3)
    result = validate_csv_sample(
        sample, object_size=dataset.size or 0, target_column=target.column, min_data_rows=settings.min_data_rows,
        max_rejected_rows=settings.max_rejected_rows,
    )
    if result.issue:
        return _quarantine(dataset, result.issue, result.profile, target, settings, s3, sns)
    return _start(dataset, target, result.profile, settings, sagemaker, s3)


# The result is stored by the idempotency layer (DynamoDB: 400 KB an item) and the notice goes
# through SNS (256 KB): a message quoting column names, which may be of any length, is cut there
# (reason.json keeps it whole), and the result names at most this many renamed columns.
MESSAGE_MAX = 4000
RESULT_RENAMED_MAX = 100


_CUT_NOTE = " ... (the whole message is in reason.json)"


def brief(text: str, limit: int = MESSAGE_MAX) -> str:
    return text if len(text) <= limit else text[:limit - len(_CUT_NOTE)] + _CUT_NOTE


def renamed_columns(profile: CsvProfile) -> dict[str, str]:
    return {column: feature for column, feature in profile.feature_names.items() if column != feature}


# Characters a `.*` pattern (SageMaker's, Java regular expressions) does not match: an S3 key may
# hold them, a pipeline execution description may not.
_LINE_BREAKS = re.compile(r"[\n\r\u0085\u2028\u2029]")


def single_line(text: str) -> str:
    """`text` as a value SageMaker's `.*` fields take: each line break written as its escape (`\\n`)."""
    return _LINE_BREAKS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


# The target name is a job argument (ContainerArguments: at most 256 characters, `.*`).
TARGET_NAME_MAX = 256


def target_name_issue(target: TargetChoice) -> ValidationIssue | None:
    if len(target.column) <= TARGET_NAME_MAX and not _LINE_BREAKS.search(target.column):
        return None
    return ValidationIssue(
        "unusable_target_name",
        f"The target column name (from {target.source}) has {len(target.column)} characters"
        f"{' and a line break' if _LINE_BREAKS.search(target.column) else ''}; the pipeline's jobs take a "
        f"target name of at most {TARGET_NAME_MAX} characters on one line.",
        f"Rename the target column to a shorter name on one line (at most {TARGET_NAME_MAX} characters) in the "
        "file and where you name it (metadata `target` or dataset.json), then upload the file again.",
        {"target_length": len(target.column), "target_source": target.source},
    )


def human_bytes(size: int) -> str:
    """1536 -> "1.5 KiB", 10737418240 -> "10 GiB"."""
    value, unit = float(size), "bytes"
    for next_unit in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f}".removesuffix(".0") + f" {unit}"


def file_too_large(size: int, limit: int) -> ValidationIssue:
    return ValidationIssue(
        "file_too_large",
        f"The file is {human_bytes(size)} ({size} bytes); this stack trains on files of at most "
        f"{human_bytes(limit)} ({limit} bytes, stack parameter MaxDatasetBytes).",
        f"Make the file smaller than {human_bytes(limit)} (drop columns the model does not need, keep a random "
        "sample of the rows, write fewer decimals) and upload it again, or ask the stack's operator to raise "
        "MaxDatasetBytes.",
        {"object_size": size, "max_dataset_bytes": limit},
    )


def _start(
    dataset: DatasetRef, target: TargetChoice, profile: CsvProfile, settings: StartPipelineSettings,
    sagemaker: Any, s3: Any = None,
) -> dict[str, Any]:
    sagemaker = sagemaker or boto3.client("sagemaker")
    display_name = execution_display_name(dataset.key, parse_event_time(dataset.event_time))
    s3 = s3 or boto3.client("s3")
    reference_uri = write_reference(s3, settings.artifacts_s3_uri, dataset_reference(dataset, target))
    parameters = pipeline_parameters(dataset, target, profile.header, settings, reference_uri)
    version = f" version {dataset.version_id}" if dataset.version_id else f" ETag {dataset.version}"
    description = single_line(
        f"Training on {dataset.s3_uri}{version}; target {target.column} (from {target.source}); "
        f"about {profile.estimated_rows} rows, {len(profile.feature_columns)} features."
    )
    token = client_request_token(dataset)
    response = sagemaker.start_pipeline_execution(
        PipelineName=settings.pipeline_name,
        PipelineExecutionDisplayName=display_name,
        PipelineExecutionDescription=description[:3072],
        PipelineParameters=parameters,
        ClientRequestToken=token,
    )
    return {
        "status": "started",
        "execution_arn": response["PipelineExecutionArn"],
        "display_name": display_name,
        "pipeline_name": settings.pipeline_name,
        "input_data_uri": dataset.s3_uri,
        "dataset_reference_uri": reference_uri,
        "dataset_version": dataset.version,
        "target_column": target.column,
        "target_source": target.source,
        "estimated_rows": profile.estimated_rows,
        # Columns stored in Feature Store under another name; people keep using the CSV's names.
        "renamed_columns": dict(list(renamed_columns(profile).items())[:RESULT_RENAMED_MAX]),
        "parameters": {p["Name"]: p["Value"] for p in parameters},
        "client_request_token": token,
    }


def _quarantine(
    dataset: DatasetRef,
    issue: ValidationIssue,
    profile: CsvProfile | None,
    target: TargetChoice | None,
    settings: StartPipelineSettings,
    s3: Any,
    sns: Any,
    *,
    copy: bool = True,
) -> dict[str, Any]:
    """Puts the file aside with the reason and says so once. `copy=False` writes the reason only: a file
    refused for its size is not copied (that copy could outlast the function), it stays unchanged where
    it was uploaded."""
    location = quarantine.QuarantineLocation(
        dataset.bucket,
        quarantine.quarantine_key(dataset.key, settings.incoming_prefix, settings.quarantine_prefix),
    )
    reason = quarantine.build_reason(
        issue,
        bucket=dataset.bucket,
        key=dataset.key,
        version_id=dataset.version_id,
        etag=dataset.etag,
        profile=profile,
        location=location,
        target_source=target.source if target else None,
        docs=settings.docs_link(csv_rules.DOCS_PAGE),
        copied=copy,
        shortened=quarantine.is_shortened(dataset.key, location.key, settings.incoming_prefix,
                                          settings.quarantine_prefix),
    )
    quarantine.quarantine_object(
        bucket=dataset.bucket, key=dataset.key, version_id=dataset.version_id, reason=reason, location=location, s3=s3,
        copy=copy,
    )
    file_name = dataset.key.rsplit("/", 1)[-1]
    message = brief(issue.message)
    body = "\n".join([
        f"The dataset {dataset.s3_uri} was not used for training: {message}",
        "",
        f"How to fix it: {issue.fix}",
        "",
        f"Reason code: {issue.code}",
        f"Checked version: {dataset.version}",
        (f"The file is unchanged where you uploaded it; a copy is in {location.uri}" if copy
         else "The file is unchanged where you uploaded it (too large to copy aside);"),
        f"and the full diagnosis in {location.reason_uri}.",
        "Upload the corrected file to the incoming/ folder again to start training.",
        f"What a CSV may look like, and every reason code with its fix: {settings.docs_link(csv_rules.DOCS_PAGE)}",
    ])
    message_id = notifications.publish(
        notifications.Notification(
            event_type="dataset_quarantined",
            subject=f"Dataset rejected ({issue.code}): {file_name}",
            body=body,
        ),
        settings.notification_topic_arn,
        sns=sns,
    )
    return {
        "status": "quarantined",
        "reason": issue.code,
        "message": message,
        "fix": issue.fix,
        "input_data_uri": dataset.s3_uri,
        "dataset_version": dataset.version,
        "quarantine_uri": location.uri if copy else None,
        "reason_uri": location.reason_uri,
        "notification_message_id": message_id,
        "docs": settings.docs_link(csv_rules.DOCS_PAGE),
    }
