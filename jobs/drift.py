"""Drift monitor: the endpoint's captured requests of the last window against the serving model's
baseline (docs/monitoring.md, "Drift monitoring").

    python -m jobs.drift --endpoint-name E --window-minutes 60 \
        --capture-s3-uri s3://<ArtifactsBucket>/capture --monitoring-s3-uri s3://<ArtifactsBucket>/monitoring

1. The serving package: DescribeEndpoint (the variant with the largest current weight: during a
   canary the one taking most of the traffic) → its endpoint config's model → the model's
   `ModelPackageName` → DescribeModelPackage → `DriftCheckBaselines.ModelDataQuality.Statistics`
   (the baseline Preprocess wrote, `jobs/baseline.py`).
2. The capture of the window `(end − WindowMinutes, end]`: SageMaker's data-capture JSON Lines under
   `<capture>/<endpoint>/<variant>/yyyy/mm/dd/hh/`, only the hour folders the window touches, each
   object streamed line by line; records are kept by `eventMetadata.inferenceTime`. Request bodies
   (CSV or JSON text, or BASE64 of any body: a binary `application/x-npy` one always is) are read by
   `jobs.serve.FeatureSchema.matrix_from_body` — the endpoint's own content-type dispatch and parsers,
   so a record reads here as the model read it; a body the endpoint refused is counted as
   unreadable and left out.
3. Per feature, values are sorted into the baseline's bins file by file (counts only: memory is one
   capture file's rows plus features × bins, whatever the window holds, which is why this job needs
   no Ray; about 20,000 rows/s measured on the shared 2-core machine): PSI over the
   bins, missing-share change (window − baseline) and out-of-range share (present values outside
   the baseline's min..max). A feature drifts when any statistic reaches its threshold.
4. Writes `<monitoring>/<endpoint>/<window end YYYY/MM/DD/HHMMSS>/drift_report.json` and, per drifted
   feature, `plots/<feature>.png` (baseline vs window share per bin), then CloudWatch metrics in
   `RaySageMakerMLOps/DataDrift`: `PSI`, `MissingShareChange`, `OutOfRangeShare` (dimensions
   `EndpointName`, `Feature`) and `DriftedFeatures` (dimension `EndpointName`), at the window end.

With fewer than `--min-rows` readable rows in the window (none, too) the report says so
(`status` `no_data` / `insufficient_data`) and no metric is published: no traffic is not "no drift";
the alarm treats the missing data as not breaching (docs/monitoring.md).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from jobs import baseline, common, ray_cluster
from jobs.serve import FeatureSchema, RequestError
from mlops_shared.aws import parse_s3_uri

log = logging.getLogger("jobs.drift")

METRIC_NAMESPACE = "RaySageMakerMLOps/DataDrift"
REPORT_FILE = "drift_report.json"
PSI_THRESHOLD = 0.2  # the usual convention: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 shifted
MISSING_SHARE_THRESHOLD = 0.1  # absolute change of the share of missing values
OUT_OF_RANGE_THRESHOLD = 0.05  # share of present values outside the baseline's min..max
MIN_ROWS = 100
METRICS_PER_CALL = 20


class DriftError(common.JobFailure):
    pass


@dataclass(frozen=True)
class Thresholds:
    psi: float = PSI_THRESHOLD
    missing_share_change: float = MISSING_SHARE_THRESHOLD
    out_of_range_share: float = OUT_OF_RANGE_THRESHOLD
    min_rows: int = MIN_ROWS

    def __post_init__(self) -> None:
        for name in ("psi", "missing_share_change", "out_of_range_share"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise DriftError(f"the {name} threshold must be a positive number, got {value}")
        if self.min_rows < 1:
            raise DriftError(f"min rows must be at least 1, got {self.min_rows}")


# --------------------------------------------------------------------------- serving package
@dataclass(frozen=True)
class ServingPackage:
    endpoint_name: str
    variant_name: str
    model_name: str
    model_package_arn: str
    baseline_uri: str


def serving_package(sagemaker: Any, endpoint_name: str) -> ServingPackage:
    """The package behind the endpoint's main variant and its registered baseline."""
    from botocore.exceptions import ClientError

    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as err:
        raise DriftError(f"endpoint {endpoint_name} cannot be described: {err}") from None
    variants = endpoint.get("ProductionVariants") or []
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    models = {v["VariantName"]: v["ModelName"] for v in config.get("ProductionVariants") or []}
    if not models:
        raise DriftError(f"endpoint {endpoint_name}'s config {endpoint['EndpointConfigName']} has no variant")
    weights = {v["VariantName"]: float(v.get("CurrentWeight", v.get("DesiredWeight", 0)) or 0) for v in variants}
    variant = max(models, key=lambda name: (weights.get(name, 0.0), name == next(iter(models))))
    model = sagemaker.describe_model(ModelName=models[variant])
    containers = [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]
    package_arn = next((c["ModelPackageName"] for c in containers if c.get("ModelPackageName")), None)
    if not package_arn:
        raise DriftError(f"model {models[variant]} of endpoint {endpoint_name} comes from no model package: "
                         "no registered baseline to compare with")
    package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    uri = (((package.get("DriftCheckBaselines") or {}).get("ModelDataQuality") or {}).get("Statistics") or {}).get("S3Uri")
    if not uri:
        raise DriftError(f"model package {package_arn} has no DriftCheckBaselines.ModelDataQuality.Statistics "
                         "(registered before baselines existed?): nothing to compare with")
    return ServingPackage(endpoint_name, variant, models[variant], package_arn, uri)


def read_json_object(s3: Any, uri: str) -> Any:
    bucket, key = parse_s3_uri(uri)
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except json.JSONDecodeError as err:
        raise DriftError(f"{uri} is not JSON: {err}") from None


# --------------------------------------------------------------------------- capture
def hour_prefixes(start: dt.datetime, end: dt.datetime) -> list[str]:
    """`yyyy/mm/dd/hh/` of every hour the window (start, end] touches."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    prefixes = []
    while hour <= end:
        prefixes.append(hour.strftime("%Y/%m/%d/%H/"))
        hour += dt.timedelta(hours=1)
    return prefixes


def capture_objects(s3: Any, capture_uri: str, endpoint_name: str, start: dt.datetime,
                    end: dt.datetime) -> Iterator[tuple[str, str]]:
    """(bucket, key) of each capture file of the endpoint in the hours of the window, every variant."""
    bucket, prefix = parse_s3_uri(capture_uri)
    root = f"{prefix.strip('/')}/{endpoint_name}/" if prefix.strip("/") else f"{endpoint_name}/"
    paginator = s3.get_paginator("list_objects_v2")
    variants = [p["Prefix"] for page in paginator.paginate(Bucket=bucket, Prefix=root, Delimiter="/")
                for p in page.get("CommonPrefixes", [])]
    for variant in variants:
        for hour in hour_prefixes(start, end):
            for page in paginator.paginate(Bucket=bucket, Prefix=variant + hour):
                for item in page.get("Contents", []):
                    if item["Key"].endswith(".jsonl"):
                        yield bucket, item["Key"]


def parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def request_body(endpoint_input: Mapping[str, Any]) -> tuple[bytes, str]:
    """The request body and its content type from a capture record's `endpointInput`."""
    data = endpoint_input.get("data") or ""
    encoding = str(endpoint_input.get("encoding") or "").upper()
    body = base64.b64decode(data) if encoding == "BASE64" else str(data).encode("utf-8")
    return body, str(endpoint_input.get("observedContentType") or "")


def rows_of_record(schema: FeatureSchema, record: Mapping[str, Any]) -> np.ndarray:
    """The feature rows of one capture record, a float matrix in feature order (NaN where missing),
    read by the endpoint's own dispatch on the observed content type (`FeatureSchema.matrix_from_body`:
    JSON, CSV or .npy); raises RequestError or ValueError when unreadable."""
    body, content_type = request_body(record["captureData"]["endpointInput"])
    return schema.matrix_from_body(content_type, body)


@dataclass
class WindowCounts:
    """What the window's rows add up to, per feature (in baseline order): never the rows themselves."""

    features: list[str]
    edges: list[list[float]]
    records: int = 0
    unreadable_records: int = 0
    rows: int = 0
    files: int = 0
    bins: list[np.ndarray] = field(default_factory=list)
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    out_of_range: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.bins = [np.zeros(max(1, len(e) - 1), dtype=np.int64) for e in self.edges]
        self.missing = np.zeros(len(self.features), dtype=np.int64)
        self.out_of_range = np.zeros(len(self.features), dtype=np.int64)

    def add(self, matrices: Sequence[np.ndarray]) -> None:
        if not matrices:
            return
        matrix = np.vstack([np.asarray(m, dtype=float).reshape(-1, len(self.features)) for m in matrices])
        self.rows += matrix.shape[0]
        for i, edges in enumerate(self.edges):
            column = matrix[:, i]
            present = column[np.isfinite(column)]
            self.missing[i] += column.size - present.size
            if edges:
                self.bins[i] += baseline.bin_counts(present, edges)
                self.out_of_range[i] += int(np.count_nonzero((present < edges[0]) | (present > edges[-1])))


def read_window(s3: Any, objects: Iterable[tuple[str, str]], schema: FeatureSchema, counts: WindowCounts,
                start: dt.datetime, end: dt.datetime) -> WindowCounts:
    """Streams each capture file, keeping the records of (start, end]."""
    for bucket, key in objects:
        counts.files += 1
        batch: list[np.ndarray] = []
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_lines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                when = parse_time(record["eventMetadata"]["inferenceTime"])
            except (ValueError, KeyError, TypeError):
                counts.unreadable_records += 1
                continue
            if not start < when <= end:
                continue
            counts.records += 1
            try:
                batch.append(rows_of_record(schema, record))
            except (RequestError, ValueError, KeyError, TypeError):
                counts.unreadable_records += 1
        counts.add(batch)
    return counts


# --------------------------------------------------------------------------- statistics
def feature_results(columns: Mapping[str, Mapping[str, Any]], counts: WindowCounts,
                    thresholds: Thresholds) -> list[dict[str, Any]]:
    results = []
    for i, name in enumerate(counts.features):
        column = columns[name]
        present = counts.rows - int(counts.missing[i])
        missing_share = counts.missing[i] / counts.rows if counts.rows else 0.0
        value_psi = baseline.psi(column["histogram"]["bin_counts"] or [0], counts.bins[i])
        change = float(missing_share - column["missing_share"])
        out_of_range = counts.out_of_range[i] / present if present else 0.0
        checks = {
            "psi": {"value": round(value_psi, 6), "threshold": thresholds.psi,
                    "drifted": bool(present and value_psi >= thresholds.psi)},
            "missing_share_change": {"value": round(change, 6), "threshold": thresholds.missing_share_change,
                                     "drifted": abs(change) >= thresholds.missing_share_change},
            "out_of_range_share": {"value": round(float(out_of_range), 6), "threshold": thresholds.out_of_range_share,
                                   "drifted": bool(out_of_range >= thresholds.out_of_range_share)},
        }
        results.append({
            "feature": name,
            "drifted": any(c["drifted"] for c in checks.values()),
            "statistics": checks,
            "window": {"count": present, "missing_share": round(float(missing_share), 6),
                       "bin_counts": counts.bins[i].tolist()},
            "baseline": {"count": column["count"], "missing_share": column["missing_share"],
                         "min": column["min"], "max": column["max"],
                         "bin_edges": column["histogram"]["bin_edges"],
                         "bin_counts": column["histogram"]["bin_counts"]},
        })
    return results


# --------------------------------------------------------------------------- outputs
def safe_key_part(name: str) -> str:
    """A feature name as one S3 key segment (characters outside [A-Za-z0-9._-] as `_`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def plot_feature(result: Mapping[str, Any]) -> bytes:
    """Baseline vs window share per baseline bin, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = result["baseline"]["bin_edges"]
    expected = np.asarray(result["baseline"]["bin_counts"], dtype=float)
    actual = np.asarray(result["window"]["bin_counts"], dtype=float)
    expected = expected / expected.sum() if expected.sum() else expected
    actual = actual / actual.sum() if actual.sum() else actual
    labels = ([f"≤{edges[1]:.4g}"] + [f"{a:.4g}–{b:.4g}" for a, b in zip(edges[1:-2], edges[2:-1])]
              + [f">{edges[-2]:.4g}"]) if len(edges) > 2 else [f"{edges[0]:.4g}" if edges else "all"]
    x = np.arange(len(expected))
    figure, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.bar(x - 0.2, expected, width=0.4, label="baseline (train split)", color="#1f77b4")
    ax.bar(x + 0.2, actual, width=0.4, label="window (captured requests)", color="#ff7f0e")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share of values")
    psi = result["statistics"]["psi"]["value"]
    ax.set_title(f"{result['feature']}: PSI {psi:.3f} (threshold {result['statistics']['psi']['threshold']})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def report_prefix(monitoring_uri: str, endpoint_name: str, end: dt.datetime) -> tuple[str, str]:
    bucket, prefix = parse_s3_uri(monitoring_uri)
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return bucket, f"{base}{endpoint_name}/{end.strftime('%Y/%m/%d/%H%M%S')}/"


def metric_data(endpoint_name: str, results: Sequence[Mapping[str, Any]], end: dt.datetime) -> list[dict[str, Any]]:
    data = []
    for result in results:
        dimensions = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "Feature", "Value": result["feature"]}]
        for metric, key in (("PSI", "psi"), ("MissingShareChange", "missing_share_change"),
                            ("OutOfRangeShare", "out_of_range_share")):
            data.append({"MetricName": metric, "Dimensions": dimensions, "Timestamp": end,
                         "Value": float(result["statistics"][key]["value"]), "Unit": "None"})
    data.append({"MetricName": "DriftedFeatures", "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                 "Timestamp": end, "Value": float(sum(1 for r in results if r["drifted"])), "Unit": "Count"})
    return data


def publish_metrics(cloudwatch: Any, data: Sequence[Mapping[str, Any]]) -> None:
    for start in range(0, len(data), METRICS_PER_CALL):
        cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE, MetricData=list(data[start:start + METRICS_PER_CALL]))


# --------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class DriftArgs:
    endpoint_name: str
    window_minutes: float
    capture_s3_uri: str
    monitoring_s3_uri: str
    window_end: dt.datetime | None = None
    thresholds: Thresholds = Thresholds()


def run(args: DriftArgs, sagemaker: Any = None, s3: Any = None, cloudwatch: Any = None) -> dict[str, Any]:
    """Runs the monitor once; returns the report it wrote."""
    import boto3

    if not (math.isfinite(args.window_minutes) and args.window_minutes > 0):
        raise DriftError(f"the window must be a positive number of minutes, got {args.window_minutes}")
    sagemaker = sagemaker or boto3.client("sagemaker")
    s3 = s3 or boto3.client("s3")
    cloudwatch = cloudwatch or boto3.client("cloudwatch")
    end = (args.window_end or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).replace(microsecond=0)
    start = end - dt.timedelta(minutes=args.window_minutes)

    package = serving_package(sagemaker, args.endpoint_name)
    try:
        document = read_json_object(s3, package.baseline_uri)
        columns = baseline.parse_baseline(document)
    except baseline.BaselineError as err:
        raise DriftError(f"the baseline {package.baseline_uri} of {package.model_package_arn}: {err}") from None
    features = [name for name in document.get("feature_order") or [] if name in columns]
    if not features:
        raise DriftError(f"the baseline {package.baseline_uri} names no feature")
    schema = FeatureSchema(features, document.get("target"))
    counts = WindowCounts(features, [columns[name]["histogram"]["bin_edges"] for name in features])
    read_window(s3, capture_objects(s3, args.capture_s3_uri, args.endpoint_name, start, end), schema, counts, start, end)
    log.info("window %s..%s: %d capture files, %d records (%d unreadable), %d rows", start.isoformat(),
             end.isoformat(), counts.files, counts.records, counts.unreadable_records, counts.rows)

    if counts.rows == 0:
        status = "no_data"
    elif counts.rows < args.thresholds.min_rows:
        status = "insufficient_data"
    else:
        status = "ok"
    results = feature_results(columns, counts, args.thresholds) if counts.rows else []
    judged = status == "ok"
    if not judged:
        for result in results:  # statistics of a handful of rows are shown, never judged
            result["drifted"] = False
            for check in result["statistics"].values():
                check["drifted"] = False
    drifted = [r["feature"] for r in results if r["drifted"]]

    bucket, prefix = report_prefix(args.monitoring_s3_uri, args.endpoint_name, end)
    plots = {}
    for result in results:
        if result["drifted"]:
            key = f"{prefix}plots/{safe_key_part(result['feature'])}.png"
            s3.put_object(Bucket=bucket, Key=key, Body=plot_feature(result), ContentType="image/png")
            plots[result["feature"]] = f"s3://{bucket}/{key}"
            result["plot"] = plots[result["feature"]]
    report = {
        "endpoint_name": args.endpoint_name,
        "status": status,
        "message": {
            "ok": f"{len(drifted)} of {len(features)} features drifted" + (f": {', '.join(drifted)}" if drifted else ""),
            "no_data": "no captured request in the window: nothing compared, no metric published",
            "insufficient_data": f"{counts.rows} rows in the window, fewer than {args.thresholds.min_rows}: "
                                 "statistics shown but not judged, no metric published",
        }[status],
        "window": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "minutes": args.window_minutes},
        "model_package_arn": package.model_package_arn,
        "variant_name": package.variant_name,
        "baseline_uri": package.baseline_uri,
        "capture": {"uri": args.capture_s3_uri, "files": counts.files, "records": counts.records,
                    "unreadable_records": counts.unreadable_records, "rows": counts.rows},
        "thresholds": {"psi": args.thresholds.psi, "missing_share_change": args.thresholds.missing_share_change,
                       "out_of_range_share": args.thresholds.out_of_range_share,
                       "min_rows": args.thresholds.min_rows, "psi_epsilon": baseline.PSI_EPSILON},
        "drifted_features": drifted,
        "features": results,
        "metrics_published": judged,
    }
    report_key = f"{prefix}{REPORT_FILE}"
    s3.put_object(Bucket=bucket, Key=report_key, Body=json.dumps(report, indent=2, allow_nan=False).encode(),
                  ContentType="application/json")
    report["report_uri"] = f"s3://{bucket}/{report_key}"
    if judged:
        publish_metrics(cloudwatch, metric_data(args.endpoint_name, results, end))
    log.info("%s; report %s", report["message"], report["report_uri"])
    return report


def parse_args(argv: Sequence[str] | None) -> DriftArgs:
    parser = argparse.ArgumentParser(prog="python -m jobs.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--window-minutes", type=float, required=True)
    parser.add_argument("--capture-s3-uri", required=True, help="s3://<ArtifactsBucket>/capture")
    parser.add_argument("--monitoring-s3-uri", required=True, help="s3://<ArtifactsBucket>/monitoring")
    parser.add_argument("--window-end", default="", help="ISO time (default: now); the window is (end - minutes, end]")
    parser.add_argument("--psi-threshold", type=float, default=PSI_THRESHOLD)
    parser.add_argument("--missing-share-threshold", type=float, default=MISSING_SHARE_THRESHOLD)
    parser.add_argument("--out-of-range-threshold", type=float, default=OUT_OF_RANGE_THRESHOLD)
    parser.add_argument("--min-rows", type=int, default=MIN_ROWS)
    ns = parser.parse_args(argv)
    return DriftArgs(
        endpoint_name=ns.endpoint_name, window_minutes=ns.window_minutes,
        capture_s3_uri=ns.capture_s3_uri, monitoring_s3_uri=ns.monitoring_s3_uri,
        window_end=parse_time(ns.window_end) if ns.window_end else None,
        thresholds=Thresholds(ns.psi_threshold, ns.missing_share_threshold, ns.out_of_range_threshold, ns.min_rows),
    )


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    try:
        args = parse_args(argv)
        with ray_cluster.head_only():
            run(args)
    except common.JobFailure as failure:
        common.fail(str(failure), kind="processing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
