"""Ingest step: one CSV version → a SageMaker Feature Store feature group (offline store).

    python -m jobs.ingest --input-uri s3://bucket/incoming/data.csv --dataset-version V \
        --target-column PRICE --feature-group-name fs-housing \
        --offline-store-s3-uri s3://bucket/feature-store --feature-store-role-arn ARN

1. Streams the CSV object at exactly the given version (S3 version id, or the ETag of an object in
   an unversioned bucket, checked with If-Match) to local disk, so a later upload to the same key
   cannot leak in and memory stays bounded whatever the size.
2. Infers the schema in one pass over the file, by `mlops_shared.csv_rules` (the rules intake
   applied to a sample): Integral/Fractional per column, and each column's Feature Store name (the
   user's names are kept in the manifest and everywhere a person sees them). The feature group
   name gets a hash of the feature definitions, so a CSV with another schema gets its own group;
   the group is created if missing (offline store only).
3. Writes the rows in one of two ways (`--ingestion-mode`; `Auto` picks by size):
   * `PutRecord`: Ray actors, each running a bounded pool of concurrent PutRecord calls, retrying
     throttling and server errors with exponential backoff and jitter; then waits until the
     offline store (asynchronous replication to S3) holds every record of this run, because the
     next step reads the offline store.
   * `OfflineStore` (bulk, for data bigger than PutRecord carries in reasonable time): writes the
     offline store's Parquet files directly under the group's resolved S3 URI, in the format
     Feature Store itself writes (`jobs.feature_store_layout`), as the Feature Store Spark connector does
     for offline-only ingestion. Visible as soon as written; the online store is not involved
     (the group has none). The service did not write these files, so whatever it keeps about
     its own writes (e.g. the Glue catalog partitions Athena queries use) may need a refresh
     (`MSCK REPAIR TABLE`) before queries see them; this pipeline reads the S3 files directly.
   Rows are prepared a chunk at a time. Record ids are `<dataset version>-<row number>`, so a re-run
   overwrites instead of duplicating. A missing feature cell is left out of the record (null in the
   offline store). Rows without a target value are dropped and counted; malformed rows and bad
   cells are rejected and counted; both are kept in `rejects/rejects.csv` with the reason. More
   rejected rows than --max-rejected-rows fail the step (in bulk mode, chunks written before that
   stay in the offline store under this dataset version: nothing reads them, a re-run overwrites).
4. Writes `manifest/manifest.json` describing what the next steps should read.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import boto3
from botocore.exceptions import ClientError

from jobs import common, ray_cluster
from jobs.dataset_schema import (
    CsvFile,
    Outcome,
    Schema,
    effective_group_name,
    infer_schema,
    prepare_columns,
    prepare_rows,
    spool,
)
from jobs.feature_store_layout import EVENT_TIME_FEATURE, RECORD_IDENTIFIER, record_id
from jobs.feature_store_writers import (
    OfflineStoreWatcher,
    wait_for_offline_store,
    write_offline_store_directly,
    write_rows_with_ray,
)
from mlops_shared import csv_rules
from mlops_shared.artifacts import IngestManifest
from mlops_shared.dataset_reference import read_reference
from mlops_shared.aws import is_not_found, parse_s3_uri
from mlops_shared.dataset_version import is_etag, normalize_dataset_version

log = logging.getLogger("jobs.ingest")

PUT_RECORD, OFFLINE_STORE, AUTO = "PutRecord", "OfflineStore", "Auto"
INGESTION_MODES = (AUTO, PUT_RECORD, OFFLINE_STORE)
# Auto writes the offline store directly from this many rows on: PutRecord moves a few hundred to a
# few thousand rows a second, so 100k rows already take minutes that a bulk write does in seconds.
DEFAULT_DIRECT_WRITE_MIN_ROWS = 100_000
MAX_REJECT_REASONS_IN_MESSAGE = 3


# --------------------------------------------------------------------------- input
def open_csv_object(s3: Any, input_uri: str, dataset_version: str) -> Any:
    """The streaming body of the CSV object at exactly `dataset_version`.

    A version id is read with VersionId. An ETag (or "null", the version id of objects written
    before versioning was enabled) is read without VersionId; an ETag is enforced with If-Match so a
    newer upload to the same key fails loudly instead of being ingested under the old version.
    """
    bucket, key = parse_s3_uri(input_uri)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if is_etag(dataset_version):
        kwargs["IfMatch"] = '"' + dataset_version.strip('"') + '"'
    elif dataset_version and dataset_version != "null":
        kwargs["VersionId"] = dataset_version
    try:
        return s3.get_object(**kwargs)["Body"]
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412"):
            raise common.JobFailure(
                f"{input_uri} changed since it was uploaded: its ETag is no longer {dataset_version}"
            ) from None
        if is_not_found(err) or code == "InvalidArgument":  # InvalidArgument: a malformed version id
            raise common.JobFailure(
                f"cannot read {input_uri} at version {dataset_version}: {code}"
            ) from None
        raise


def resolve_dataset_reference(s3: Any, args: "IngestArgs", dataset_version: str) -> "IngestArgs":
    """`args` with `input_uri` set from the reference document; refuses a document that names
    another dataset version than the pipeline was started with."""
    try:
        reference = read_reference(s3, args.dataset_reference)
    except ClientError as err:
        raise common.JobFailure(f"cannot read the dataset reference {args.dataset_reference}: "
                                f"{err.response.get('Error', {}).get('Code', err)}") from None
    except ValueError as err:  # not JSON, or not the contract (ArtifactFormatError)
        raise common.JobFailure(f"the dataset reference {args.dataset_reference} is not valid: {err}") from None
    if normalize_dataset_version(reference.version) != dataset_version:
        raise common.JobFailure(f"the dataset reference {args.dataset_reference} names version {reference.version}, "
                                f"the pipeline was started for {dataset_version}")
    log.info("dataset %s (version %s) from %s", reference.s3_uri, reference.version, args.dataset_reference)
    return dataclasses.replace(args, input_uri=reference.s3_uri)


# --------------------------------------------------------------------------- schema


# --------------------------------------------------------------------------- feature group
def ensure_feature_group(
    sagemaker: Any,
    name: str,
    schema: Schema,
    offline_store_s3_uri: str,
    role_arn: str,
    timeout_seconds: float = 600.0,
    poll_seconds: float = 2.0,
) -> dict[str, Any]:
    """Creates the group if missing (offline store only) and waits until it is `Created`;
    returns its description."""
    definitions = schema.feature_definitions()
    try:
        sagemaker.create_feature_group(
            FeatureGroupName=name,
            RecordIdentifierFeatureName=RECORD_IDENTIFIER,
            EventTimeFeatureName=EVENT_TIME_FEATURE,
            FeatureDefinitions=definitions,
            OfflineStoreConfig={"S3StorageConfig": {"S3Uri": offline_store_s3_uri}},
            OnlineStoreConfig={"EnableOnlineStore": False},
            RoleArn=role_arn,
            Description="Rows of the uploaded CSV datasets, written by the ingest step",
        )
        log.info("created feature group %s", name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ResourceInUse":
            raise
        log.info("feature group %s exists", name)
    deadline = time.monotonic() + timeout_seconds
    while True:
        desc = sagemaker.describe_feature_group(FeatureGroupName=name)
        status = desc.get("FeatureGroupStatus")
        if status == "Created":
            break
        if status in ("CreateFailed", "Deleting", "DeleteFailed"):
            raise common.JobFailure(
                f"feature group {name} is {status}: {desc.get('FailureReason', 'no reason given')}"
            )
        if time.monotonic() > deadline:
            raise common.JobFailure(f"feature group {name} still {status} after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
    existing = {(d["FeatureName"], d["FeatureType"]) for d in desc["FeatureDefinitions"]}
    wanted = {(d["FeatureName"], d["FeatureType"]) for d in definitions}
    if not wanted <= existing:
        raise common.JobFailure(
            f"feature group {name} exists with other features than this CSV needs: "
            f"missing {sorted(wanted - existing)}"
        )
    if not (desc.get("OfflineStoreConfig") or {}).get("S3StorageConfig", {}).get("ResolvedOutputS3Uri"):
        raise common.JobFailure(f"feature group {name} has no offline store")
    return desc


# --------------------------------------------------------------------------- writing
def choose_ingestion_mode(requested: str, rows: int, direct_write_min_rows: int) -> str:
    """`PutRecord` or `OfflineStore` for `rows` rows; `Auto` goes direct from the threshold on."""
    if requested not in INGESTION_MODES:
        raise common.JobFailure(f"ingestion mode must be one of {', '.join(INGESTION_MODES)}, got {requested!r}")
    if requested != AUTO:
        return requested
    return OFFLINE_STORE if rows >= direct_write_min_rows else PUT_RECORD


# --------------------------------------------------------------------------- outputs
class RejectsFile:
    """`rejects/rejects.csv`, written as chunks are prepared: row number, record id, outcome
    (`rejected`: a bad row, counted against --max-rejected-rows; `dropped`: no target to learn
    from), reason, then the row's fields as they were in the CSV."""

    def __init__(self, schema: Schema, dataset_version: str):
        self.path = common.processing_output("rejects") / "rejects.csv"
        self.dataset_version = dataset_version
        self._handle = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(["row_number", RECORD_IDENTIFIER, "outcome", "reason", *schema.columns])
        self.rejected: list[tuple[int, str]] = []
        self.dropped = 0

    def add(self, outcome: Outcome) -> None:
        rows = [(n, "rejected", reason, fields) for n, reason, fields in outcome.rejected]
        rows += [(n, "dropped", reason, fields) for n, reason, fields in outcome.dropped]
        for number, kind, reason, fields in sorted(rows, key=lambda row: row[0]):
            self._writer.writerow([number, record_id(self.dataset_version, number), kind, reason, *fields])
        self.rejected += [(n, reason) for n, reason, _ in outcome.rejected]
        self.dropped += len(outcome.dropped)

    def close(self) -> None:
        self._handle.close()


def write_manifest(manifest: dict[str, Any]) -> str:
    path = common.processing_output("manifest") / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return str(path)


def rejection_message(rejected: list[tuple[int, str]], total: int, limit: int) -> str:
    examples = "; ".join(
        f"row {n} (line {n + 2} if the file has no blank lines): {reason}"
        for n, reason in sorted(rejected)[:MAX_REJECT_REASONS_IN_MESSAGE]
    )
    return (
        f"ingest rejected {len(rejected)} of {total} rows (at most {limit} allowed, the MaxRejectedRows "
        f"parameter); first: {examples}; every rejected row is in rejects/rejects.csv. Fix those rows, or "
        f"start the pipeline with a larger MaxRejectedRows to train without them (see {csv_rules.DOCS_PAGE})"
    )


# --------------------------------------------------------------------------- main
@dataclass
class IngestArgs:
    input_uri: str
    dataset_version: str
    target_column: str
    feature_group_name: str
    offline_store_s3_uri: str
    feature_store_role_arn: str
    actors: int = 10
    actor_cpus: float = 0.5
    max_concurrency_per_actor: int = 16
    max_rejected_rows: int = 0
    offline_store_timeout_seconds: float = 600.0
    poll_interval_seconds: float = 2.0
    ingestion_mode: str = AUTO
    direct_write_min_rows: int = DEFAULT_DIRECT_WRITE_MIN_ROWS
    dataset_reference: str | None = None  # when set, it names the object and input_uri is filled from it


def parse_args(argv: Sequence[str] | None) -> IngestArgs:
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description="CSV → Feature Store")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input-uri", help="the CSV object, s3://bucket/key (the key taken verbatim)")
    source.add_argument("--dataset-reference",
                        help="s3:// URI of the dataset reference intake wrote (bucket, key, version verbatim); "
                             "what the pipeline passes, since a key may not fit a 256-character argument")
    parser.add_argument("--dataset-version", required=True)
    parser.add_argument("--target-column", required=True)
    parser.add_argument("--feature-group-name", required=True)
    parser.add_argument("--offline-store-s3-uri", required=True)
    parser.add_argument("--feature-store-role-arn", required=True)
    parser.add_argument("--actors", type=int, default=10)
    parser.add_argument("--actor-cpus", type=float, default=0.5)
    parser.add_argument("--max-concurrency-per-actor", type=int, default=16)
    parser.add_argument("--max-rejected-rows", type=int, default=0)
    parser.add_argument("--offline-store-timeout-seconds", type=float, default=600.0)
    parser.add_argument("--poll-interval-seconds", type=float, default=2.0)
    parser.add_argument(
        "--ingestion-mode", choices=INGESTION_MODES, default=AUTO,
        help=f"PutRecord (Ray actors), OfflineStore (bulk Parquet write), or Auto: OfflineStore from "
             f"--direct-write-min-rows rows on (default {DEFAULT_DIRECT_WRITE_MIN_ROWS:,})",
    )
    parser.add_argument("--direct-write-min-rows", type=int, default=DEFAULT_DIRECT_WRITE_MIN_ROWS)
    ns = parser.parse_args(list(argv) if argv is not None else None)
    if ns.actors < 1 or ns.actor_cpus <= 0 or ns.max_concurrency_per_actor < 1 or ns.max_rejected_rows < 0:
        parser.error("--actors, --actor-cpus, --max-concurrency-per-actor must be positive; --max-rejected-rows >= 0")
    if ns.direct_write_min_rows < 0:
        parser.error("--direct-write-min-rows must be >= 0")
    return IngestArgs(**{**vars(ns), "input_uri": ns.input_uri or ""})


def ingest(args: IngestArgs, s3: Any = None, sagemaker: Any = None, featurestore: Any = None) -> dict[str, Any]:
    """Runs the whole step; returns the manifest. Raises `common.JobFailure` on a clear failure."""
    s3 = s3 or boto3.client("s3")
    sagemaker = sagemaker or boto3.client("sagemaker")
    featurestore = featurestore or boto3.client("sagemaker-featurestore-runtime")
    dataset_version = normalize_dataset_version(args.dataset_version)
    if not dataset_version:
        raise common.JobFailure("--dataset-version is empty")

    if args.dataset_reference:
        args = resolve_dataset_reference(s3, args, dataset_version)
    with tempfile.TemporaryDirectory(prefix="ingest-") as workdir:
        # Streamed to local disk once (bounded memory), then read twice: types, then rows.
        local_csv = Path(workdir) / "dataset.csv"
        size = spool(open_csv_object(s3, args.input_uri, args.dataset_version), local_csv)
        log.info("read %d bytes of %s", size, args.input_uri)
        csv_file = CsvFile(local_csv, args.input_uri)
        schema, total_rows = infer_schema(csv_file, args.target_column)
        return _ingest_rows(args, csv_file, schema, total_rows, dataset_version, s3, sagemaker, featurestore)


def _created_group(sagemaker: Any, group_name: str, schema: Schema, args: IngestArgs) -> tuple[str, dict[str, str]]:
    """The feature group for this schema, created if missing: its resolved offline store URI and
    its feature types (in definition order)."""
    desc = ensure_feature_group(sagemaker, group_name, schema, args.offline_store_s3_uri, args.feature_store_role_arn)
    return (desc["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"],
            {d["FeatureName"]: d["FeatureType"] for d in desc["FeatureDefinitions"]})


def _ingest_rows(
    args: IngestArgs, csv_file: CsvFile, schema: Schema, total_rows: int, dataset_version: str,
    s3: Any, sagemaker: Any, featurestore: Any,
) -> dict[str, Any]:
    log.info("%d rows, columns %s", total_rows,
             {c: f"{n} ({schema.types[n]})" for c, n in zip(schema.columns, schema.feature_names)})
    mode = choose_ingestion_mode(args.ingestion_mode, total_rows, args.direct_write_min_rows)
    log.info("ingestion mode %s (requested %s, %d rows)", mode, args.ingestion_mode, total_rows)
    group_name = effective_group_name(args.feature_group_name, schema)
    rejects = RejectsFile(schema, dataset_version)
    event_time = round(time.time(), 3)
    group: tuple[str, dict[str, str]] | None = None  # (resolved offline store URI, feature types), once created
    good_rows: list[tuple[int, list[str | None]]] = []
    written_count = 0
    # The first distinct target values among the rows kept: one value alone teaches nothing.
    targets: set[float] = set()
    try:
        for chunk in csv_file.chunks():
            if mode == OFFLINE_STORE:
                prepared, outcome = prepare_columns(chunk, schema)
                if len(targets) < csv_rules.MIN_DISTINCT_TARGET_VALUES:
                    targets.update(prepared.values[schema.target_feature].unique().to_pylist())
            else:
                rows, outcome = prepare_rows(chunk, schema)
                good_rows += rows
                for _, values in rows:
                    if len(targets) >= csv_rules.MIN_DISTINCT_TARGET_VALUES:
                        break
                    targets.add(float(values[schema.target_index]))
            rejects.add(outcome)
            if len(rejects.rejected) > args.max_rejected_rows:
                # Too many bad rows already: fail before (or without more) writing to the feature store.
                raise common.JobFailure(rejection_message(rejects.rejected, total_rows, args.max_rejected_rows))
            if mode == OFFLINE_STORE and len(prepared.row_numbers):
                group = group or _created_group(sagemaker, group_name, schema, args)
                write_offline_store_directly(s3, group[0], group[1], prepared, dataset_version, event_time)
                written_count += len(prepared.row_numbers)
    finally:
        rejects.close()
    kept = written_count if mode == OFFLINE_STORE else len(good_rows)
    if not kept:
        raise common.JobFailure(
            f"no row of {args.input_uri} can be trained on ({len(rejects.rejected)} rejected, {rejects.dropped} "
            f"without a target value); every one is in rejects/rejects.csv")
    if len(targets) < csv_rules.MIN_DISTINCT_TARGET_VALUES:
        raise common.JobFailure(
            f"the target {schema.target!r} has one value ({next(iter(targets)):g}) in all {kept} rows kept: there "
            f"is nothing to learn. Check that the right column is the target (see {csv_rules.DOCS_PAGE})")
    offline_uri = (group or _created_group(sagemaker, group_name, schema, args))[0]

    if mode == PUT_RECORD:
        written, write_rejected = write_rows_with_ray(
            good_rows,
            feature_group_name=group_name,
            feature_names=schema.feature_names,
            dataset_version=dataset_version,
            event_time=event_time,
            actors=args.actors,
            actor_cpus=args.actor_cpus,
            max_concurrency_per_actor=args.max_concurrency_per_actor,
            # Actors may run in processes that did not inherit this environment: give them the
            # endpoint the job resolved.
            endpoint_url=featurestore.meta.endpoint_url,
            region_name=featurestore.meta.region_name,
        )
        if write_rejected:
            fields = {n: values for n, values in good_rows}
            with rejects.path.open("a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                for number, reason in sorted(write_rejected):
                    writer.writerow([number, record_id(dataset_version, number), "rejected",
                                     f"the feature store refused the record: {reason}",
                                     *["" if v is None else v for v in fields[number]]])
            rejects.rejected += write_rejected
        if len(rejects.rejected) > args.max_rejected_rows:
            raise common.JobFailure(rejection_message(rejects.rejected, total_rows, args.max_rejected_rows))
        written_count = len(written)
        # Replication to the offline store is asynchronous; direct writes are visible once written.
        expected = {record_id(dataset_version, n) for n in written}
        watcher = OfflineStoreWatcher(s3, offline_uri, dataset_version, event_time)
        wait_for_offline_store(watcher, expected, args.offline_store_timeout_seconds, args.poll_interval_seconds)
    if rejects.dropped:
        log.info("dropped %d rows without a target value (in rejects/rejects.csv)", rejects.dropped)

    manifest = IngestManifest(
        dataset_version=dataset_version,
        input_uri=args.input_uri,
        feature_group_name=group_name,
        offline_store_uri=offline_uri,
        record_identifier=RECORD_IDENTIFIER,
        event_time_feature=EVENT_TIME_FEATURE,
        features=list(schema.feature_names),
        feature_types=dict(schema.types),
        target=schema.target_feature,
        column_names=list(schema.columns),
        row_count=written_count,
        rejected_rows=len(rejects.rejected),
        dropped_rows=rejects.dropped,
        event_time=event_time,
        ingestion_mode=mode,
    ).to_json()
    write_manifest(manifest)
    log.info("ingested %d rows into %s with %s (%d rejected, %d dropped)", written_count, group_name, mode,
             len(rejects.rejected), rejects.dropped)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    args = parse_args(argv)
    try:
        # Every host of a multi-instance job joins one Ray cluster and only the head runs the step,
        # so each record is written once (on a worker host `connect` returns when the head is gone).
        with ray_cluster.connect():
            ingest(args)
    except common.JobFailure as failure:
        common.fail(str(failure), kind="processing")
    except Exception as error:  # still leave a reason for the pipeline's FailureReason
        log.exception("ingest failed")
        common.fail(f"ingest failed unexpectedly: {type(error).__name__}: {error}", kind="processing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
