"""Batch scoring job: one CSV under `score/…` -> `predictions/<same path>` + a manifest (docs/scoring.md).

    python -m jobs.score --input-bucket B --input-key score/a.csv [--input-version-id V] \
        --model-package-arn ARN --model-package-version N --model-data-url s3://…/model.tar.gz [--explain true]

The input is streamed (pyarrow's incremental CSV reader over the S3 body, a batch of rows at a
time) and the output goes to a local file, then to S3 as a multipart upload: memory stays bounded
by one batch whatever the file size. Each batch is parsed under the endpoint's CSV rules (a feature
cell is a number, or missing: empty or an NA spelling) and predicted exactly as `jobs.serve`'s
Predictor does (same scaler, same booster call), so a row scores the same here as at the endpoint.

Output: every input column as it was written (as text), then `prediction` (or, when the input has a
column of that name, the first free `prediction_<n>`; the manifest says which), and with
`--explain true` one `<feature>_contribution` column per feature plus `bias_contribution` (XGBoost
`pred_contribs`; they sum to the prediction). The predictions object carries the model package ARN
and version as object metadata; the manifest `<predictions key>.manifest.json` records the input
object and version, rows, package, column names and start/end times.

A row that cannot be scored (wrong number of fields, a feature that is neither a number nor
missing) rejects the whole file: no predictions are written, the file is copied to
`quarantine/score/<same path>` with a `.reason.json` listing the first bad rows (line numbers of
the file, the header being line 1; blank lines aside), and the job fails with that reason.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import xgboost as xgb

from jobs import common
from jobs.explain import contributions  # the endpoint's explanation: one definition of it
from jobs.scaling import standardize
from jobs.serve import Predictor
from mlops_shared import csv_rules, quarantine
from mlops_shared.scoring import (
    MANIFEST_SUFFIX,
    PACKAGE_ARN_METADATA,
    PACKAGE_VERSION_METADATA,
    SCORE_PREFIX,
    SCORE_QUARANTINE_PREFIX,
    bad_rows,
    prediction_column,
    predictions_key,
    rows_issue,
)

log = logging.getLogger("jobs.score")

BLOCK_BYTES = 8 * 1024 * 1024  # pyarrow reads this much text per batch (~150k rows of 9 columns)
HEADER_PEEK_BYTES = 64 * 1024
_NA = pa.array(sorted(csv_rules.NA_SPELLINGS), type=pa.string())


class UnscorableRows(common.JobFailure):
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        issue = rows_issue(rows)
        super().__init__(issue.message)


def unique_name(wanted: str, taken: set[str]) -> str:
    name, number = wanted, 1
    while name in taken:
        name, number = f"{wanted}_{number}", number + 1
    return name


@dataclass
class ScoreResult:
    rows: int = 0
    prediction_column: str = "prediction"
    contribution_columns: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def read_header(first_bytes: bytes) -> list[str]:
    text = first_bytes.decode("utf-8-sig", errors="replace")
    line = next(csv.reader(io.StringIO(text)), None)
    if not line:
        raise common.JobFailure("the file has no header row")
    header = [name.strip() for name in line]
    problem = csv_rules.header_problem(line)
    if problem:
        raise common.JobFailure(problem.message)
    return header


def _feature_matrix(batch: pa.RecordBatch, features: Sequence[str], header: Sequence[str], first_row: int) -> np.ndarray:
    """The batch's features as floats (NaN = missing), or UnscorableRows naming the bad rows."""
    columns = []
    for name in features:
        text = pc.utf8_trim_whitespace(batch.column(header.index(name)))
        text = pc.if_else(pc.is_in(text, value_set=_NA), pa.scalar(None, pa.string()), text)
        try:
            numbers = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            numbers = None
        if numbers is None or not np.isfinite(numbers[~np.isnan(numbers)]).all() or \
                np.isnan(numbers).sum() != text.null_count:
            # Something is not a number (or is infinite, or a NaN spelled otherwise): name the rows
            # with the same rules as intake.
            rows = [[str(v) if v is not None else "" for v in batch.column(i).to_pylist()] for i in range(len(header))]
            bad = bad_rows(header, list(zip(*rows)), features, first_line=first_row)
            if bad:
                raise UnscorableRows(bad)
            numbers = np.asarray([csv_rules.parse_cell(v).value if csv_rules.parse_cell(v).is_number else np.nan
                                  for v in rows[header.index(name)]], dtype=float)
        columns.append(numbers)
    return np.column_stack(columns)


def score_stream(source: Any, header: Sequence[str], predictor: Predictor, output_path: Path, *,
                 explain: bool = False, explainer: Callable[[xgb.Booster, np.ndarray], np.ndarray] = contributions,
                 block_bytes: int = BLOCK_BYTES) -> ScoreResult:
    """Scores the CSV read from the file-like `source` into the CSV file `output_path`."""
    features = list(predictor.schema.feature_order)
    missing = [name for name in features if name not in header]
    if missing:
        raise common.JobFailure(f"the file lacks the model's feature column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise common.JobFailure("the header names a column twice")
    result = ScoreResult(prediction_column=prediction_column(header))
    taken = set(header) | {result.prediction_column}
    if explain:
        for name in [*features, "bias"]:
            result.contribution_columns[name] = unique_name(f"{name}_contribution", taken)
            taken.add(result.contribution_columns[name])
    reader = pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(column_names=list(header), skip_rows=1, block_size=block_bytes),
        # Every column as text: the input columns are copied exactly as written.
        convert_options=pa_csv.ConvertOptions(column_types={name: pa.string() for name in header},
                                              strings_can_be_null=False, quoted_strings_can_be_null=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
    )
    mean, scale = predictor.model.preprocessor.mean, predictor.model.preprocessor.scale
    fields = [pa.field(name, pa.string()) for name in header] + [pa.field(result.prediction_column, pa.float64())]
    fields += [pa.field(name, pa.float64()) for name in result.contribution_columns.values()]
    schema = pa.schema(fields)
    started = time.perf_counter()
    with pa_csv.CSVWriter(str(output_path), schema,
                          write_options=pa_csv.WriteOptions(include_header=True, quoting_style="needed")) as writer:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as error:  # a row with the wrong number of fields, ...
                raise UnscorableRows([{"line": result.rows + 2,
                                       "reason": f"in the lines from {result.rows + 2} on: {error}"}]) from None
            if batch.num_rows == 0:
                continue
            # Line numbers of the file (the header is line 1), as intake's sample check gives them.
            scaled = standardize(_feature_matrix(batch, features, header, result.rows + 2), mean, scale)
            arrays = list(batch.columns) + [pa.array(predictor.model.predict_scaled(scaled).astype(np.float64))]
            if explain:
                contribs = explainer(predictor.model.booster, scaled)
                arrays += [pa.array(contribs[:, i].astype(np.float64)) for i in range(contribs.shape[1])]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            result.rows += batch.num_rows
    result.seconds = time.perf_counter() - started
    if result.rows == 0:
        raise common.JobFailure("the file has a header but no rows to score")
    return result


def _load_predictor(s3: Any, model_data_url: str, workdir: Path) -> Predictor:
    from jobs.model_io import ModelArtifactError, extract_model_tar

    bucket, key = model_data_url.removeprefix("s3://").split("/", 1)
    archive = workdir / "model.tar.gz"
    s3.download_file(bucket, key, str(archive))
    try:
        return Predictor(extract_model_tar(archive, workdir / "model"))
    except ModelArtifactError as error:
        raise common.JobFailure(f"the serving model {model_data_url} cannot be loaded: {error}") from None


def _quarantine(s3: Any, bucket: str, key: str, version_id: str | None, error: UnscorableRows,
                package_arn: str) -> str:
    location = quarantine.QuarantineLocation(bucket, quarantine.quarantine_key(key, SCORE_PREFIX, SCORE_QUARANTINE_PREFIX))
    reason = quarantine.build_reason(rows_issue(error.rows), bucket=bucket, key=key, version_id=version_id, etag=None,
                                     profile=None, location=location, docs="docs/scoring.md")
    reason["model_package_arn"] = package_arn
    quarantine.quarantine_object(bucket=bucket, key=key, version_id=version_id, reason=reason, location=location, s3=s3)
    return location.reason_uri


def run(*, input_bucket: str, input_key: str, input_version_id: str | None, model_package_arn: str,
        model_package_version: str, model_data_url: str, explain: bool, s3: Any = None,
        output_bucket: str | None = None) -> dict[str, Any]:
    s3 = s3 or boto3.client("s3")
    output_bucket = output_bucket or input_bucket
    out_key = predictions_key(input_key)
    started_at = datetime.now(timezone.utc)
    source_args = {"Bucket": input_bucket, "Key": input_key, **({"VersionId": input_version_id} if input_version_id else {})}
    with tempfile.TemporaryDirectory(prefix="score-") as tmp:
        workdir = Path(tmp)
        predictor = _load_predictor(s3, model_data_url, workdir)
        first = s3.get_object(**source_args, Range=f"bytes=0-{HEADER_PEEK_BYTES - 1}")["Body"].read()
        header = read_header(first)
        obj = s3.get_object(**source_args)
        version = input_version_id or obj.get("VersionId")
        output_path = workdir / "predictions.csv"
        try:
            result = score_stream(obj["Body"], header, predictor, output_path, explain=explain)
        except UnscorableRows as error:
            reason_uri = _quarantine(s3, input_bucket, input_key, version, error, model_package_arn)
            raise common.JobFailure(f"{error} Details: {reason_uri}") from None
        metadata = {PACKAGE_ARN_METADATA: model_package_arn, PACKAGE_VERSION_METADATA: str(model_package_version),
                    "prediction-column": result.prediction_column}
        s3.upload_file(str(output_path), output_bucket, out_key,
                       ExtraArgs={"ContentType": "text/csv", "Metadata": metadata})
    finished_at = datetime.now(timezone.utc)
    manifest = {
        "input": {"s3_uri": f"s3://{input_bucket}/{input_key}", "bucket": input_bucket, "key": input_key,
                  "version_id": version, "etag": obj.get("ETag", "").strip('"')},
        "predictions_uri": f"s3://{output_bucket}/{out_key}",
        "manifest_uri": f"s3://{output_bucket}/{out_key}{MANIFEST_SUFFIX}",
        "rows": result.rows,
        "model_package_arn": model_package_arn,
        "model_package_version": int(model_package_version) if str(model_package_version).isdigit() else model_package_version,
        "model_data_url": model_data_url,
        "prediction_column": result.prediction_column,
        # True when the input has a column named `prediction` and the output column took another name.
        "prediction_column_renamed": result.prediction_column != "prediction",
        "explain": explain,
        "contribution_columns": result.contribution_columns,
        "started": started_at.isoformat(timespec="seconds"),
        "finished": finished_at.isoformat(timespec="seconds"),
        "scoring_seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows / result.seconds, 1) if result.seconds else None,
    }
    s3.put_object(Bucket=output_bucket, Key=out_key + MANIFEST_SUFFIX, ContentType="application/json",
                  Body=json.dumps(manifest, indent=2).encode(), Metadata=metadata)
    log.info("scored %d rows in %.2f s -> %s", result.rows, result.seconds, manifest["predictions_uri"])
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-bucket", required=True)
    parser.add_argument("--input-key", required=True)
    parser.add_argument("--input-version-id", default="")
    parser.add_argument("--model-package-arn", required=True)
    parser.add_argument("--model-package-version", required=True)
    parser.add_argument("--model-data-url", required=True)
    parser.add_argument("--explain", default="false", choices=["true", "false"])
    args = parser.parse_args(argv)
    try:
        manifest = run(input_bucket=args.input_bucket, input_key=args.input_key,
                       input_version_id=args.input_version_id or None, model_package_arn=args.model_package_arn,
                       model_package_version=args.model_package_version, model_data_url=args.model_data_url,
                       explain=args.explain == "true")
    except common.JobFailure as failure:
        common.fail(str(failure), kind="processing")
    print(json.dumps({"predictions_uri": manifest["predictions_uri"], "rows": manifest["rows"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
