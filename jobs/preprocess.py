"""Preprocess step: the ingested dataset version in the offline store → scaled train/validation/test.

    python -m jobs.preprocess --target-column PRICE --train-fraction 0.6 \
        --validation-fraction 0.2 --test-fraction 0.2 --seed 42

Input: `processing/input/manifest/manifest.json`, written by the ingest step.

1. Checks the split fractions (each > 0, summing to 1 within 1e-6) before touching any data.
2. Copies the offline store's Parquet files to local disk (boto3) and reads them with Ray Data,
   keeping only this dataset version.
3. Keeps the latest write per record id that is not a delete (a re-run of the ingest step rewrites
   records, and the offline store keeps every write), and refuses to go on unless exactly the
   manifest's row count remains: a partial table must never be trained on.
4. Drops the Feature Store columns, shuffles (seeded) and splits (rounded sizes) with Ray Data,
   fits a StandardScaler on the train split only (one pass), applies it to every feature but the
   target.
5. Writes `processing/output/{train,validation,test}/part-*.parquet` (target column kept under its
   CSV name) and `processing/output/preprocessor/preprocessor.json`.

The dedupe needs every record id at once, so it runs on the driver with pandas; the data went
through PutRecord one row at a time, so it fits a driver comfortably.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import boto3
import numpy as np
import pandas as pd

from jobs import common, ray_cluster
from jobs.model_io import PREPROCESSOR_FILE, write_preprocessor

log = logging.getLogger("jobs.preprocess")

SPLITS = ("train", "validation", "test")
FRACTION_TOLERANCE = 1e-6
METADATA_COLUMNS = common.FEATURE_STORE_METADATA_COLUMNS


@dataclass(frozen=True)
class PreprocessArgs:
    target_column: str
    train_fraction: float
    validation_fraction: float
    test_fraction: float
    seed: int = 42


# --------------------------------------------------------------------------- checks
def validate_fractions(train: Any, validation: Any, test: Any) -> tuple[float, float, float]:
    """Each fraction a number in (0, 1), together 1 within 1e-6; raises `JobFailure` otherwise."""
    values = []
    for name, raw in (("train", train), ("validation", validation), ("test", test)):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise common.JobFailure(f"{name} fraction must be a number, got {raw!r}") from None
        if not math.isfinite(value) or not 0 < value < 1:
            raise common.JobFailure(f"{name} fraction must be between 0 and 1 (exclusive), got {raw}")
        values.append(value)
    total = sum(values)
    if abs(total - 1.0) > FRACTION_TOLERANCE:
        raise common.JobFailure(
            f"train/validation/test fractions {values[0]}/{values[1]}/{values[2]} sum to {total:.6g}; "
            "they must sum to 1"
        )
    return values[0], values[1], values[2]


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise common.JobFailure(f"ingest manifest {path} is missing") from None
    except json.JSONDecodeError as err:
        raise common.JobFailure(f"ingest manifest {path} is not valid JSON: {err}") from None
    missing = [k for k in ("dataset_version", "offline_store_uri", "row_count") if k not in manifest]
    if missing:
        raise common.JobFailure(f"ingest manifest {path} lacks {', '.join(missing)}")
    return manifest


# --------------------------------------------------------------------------- offline store
def download_offline_store(s3: Any, offline_store_uri: str, dest: Path) -> list[Path]:
    """Copies every Parquet file under the URI into `dest`, keeping the relative paths (so the
    `year=/month=/…` partition folders survive)."""
    bucket, prefix = common.parse_s3_uri(offline_store_uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]

    def fetch(key: str) -> Path:
        target = dest / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        return target

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fetch, keys))


def read_dataset_version(local_dir: Path, dataset_version: str) -> pd.DataFrame:
    """Reads the downloaded offline store with Ray Data, keeping only `dataset_version`'s rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray

    def keep_version(batch: pa.Table) -> pa.Table:
        return batch.filter(pc.equal(batch["dataset_version"], dataset_version))

    # The files are on this node's disk only: read them here.
    this_node = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    dataset = ray.data.read_parquet(str(local_dir), label_selector=this_node)
    dataset = dataset.map_batches(keep_version, batch_format="pyarrow", batch_size=None)
    tables = [t for t in ray.get(dataset.to_arrow_refs()) if t.num_rows]
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def latest_records(frame: pd.DataFrame, record_identifier: str = "record_id") -> pd.DataFrame:
    """The latest write of each record id, without the records whose latest write is a delete."""
    if frame.empty:
        return frame
    order = [c for c in (record_identifier, "write_time", "api_invocation_time") if c in frame.columns]
    latest = frame.sort_values(order, kind="stable").drop_duplicates(record_identifier, keep="last")
    if "is_deleted" in latest.columns:
        latest = latest[~latest["is_deleted"].astype(bool)]
    return latest.reset_index(drop=True)


def feature_table(frame: pd.DataFrame, manifest: dict[str, Any], target: str) -> tuple[pd.DataFrame, list[str]]:
    """Drops the Feature Store columns; returns (features + target in CSV order, feature names)."""
    data = frame.drop(columns=[c for c in METADATA_COLUMNS if c in frame.columns])
    if target not in data.columns:
        raise common.JobFailure(
            f"target column {target!r} is not in the dataset; columns: {', '.join(map(str, data.columns))}"
        )
    csv_columns = [c for c in manifest.get("features") or list(data.columns)]
    absent = [c for c in csv_columns if c not in data.columns]
    if absent:
        raise common.JobFailure(f"the offline store lacks the columns {', '.join(absent)} named in the manifest")
    if target not in csv_columns:
        csv_columns.append(target)
    non_numeric = [c for c in csv_columns if not pd.api.types.is_numeric_dtype(data[c])]
    if non_numeric:
        raise common.JobFailure(f"non-numeric columns cannot be scaled: {', '.join(non_numeric)}")
    features = [c for c in csv_columns if c != target]
    if not features:
        raise common.JobFailure(f"the dataset has no feature besides the target {target!r}")
    return data[csv_columns], features


# --------------------------------------------------------------------------- scaler
def batch_moments(batch: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Count, mean and sum of squared deviations of each feature in one batch."""
    values = batch[list(features)].to_numpy(dtype=float)
    count = len(values)
    mean = values.mean(axis=0) if count else np.zeros(len(features))
    m2 = ((values - mean) ** 2).sum(axis=0) if count else np.zeros(len(features))
    return pd.DataFrame({"count": [count], "mean": [mean.tolist()], "m2": [m2.tolist()]})


def merge_moments(moments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Merges per-batch moments (Chan et al.); returns (mean, scale) like sklearn's StandardScaler
    (population std, 1 where a feature is constant)."""
    count, mean, m2 = 0, None, None
    for row in moments.itertuples(index=False):
        n_b = int(row.count)
        if n_b == 0:
            continue
        mean_b, m2_b = np.asarray(row.mean, dtype=float), np.asarray(row.m2, dtype=float)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + delta**2 * count * n_b / total
        count = total
    if mean is None:
        raise common.JobFailure("cannot fit the scaler: the train split is empty")
    std = np.sqrt(m2 / count)
    scale = np.where(std > 0, std, 1.0)
    return mean, scale


def fit_scaler(train: Any, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One Ray Data pass over the train split."""
    moments = train.map_batches(
        batch_moments, fn_kwargs={"features": list(features)}, batch_format="pandas", batch_size=None
    ).to_pandas()
    return merge_moments(moments)


def scale_batch(batch: pd.DataFrame, features: list[str], mean: list[float], scale: list[float]) -> pd.DataFrame:
    batch = batch.copy()
    batch[features] = (batch[features].to_numpy(dtype=float) - np.asarray(mean)) / np.asarray(scale)
    return batch


# --------------------------------------------------------------------------- output
def _part_files():
    from ray.data.datasource import FilenameProvider

    class PartFiles(FilenameProvider):
        def __init__(self):
            super().__init__(file_format="parquet")

        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:05d}-{write_uuid}.parquet"

    return PartFiles()


def write_split(dataset: Any, out_dir: Path) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    for old in out_dir.glob("part-*.parquet"):
        old.unlink()
    # The output folder is this node's disk, which SageMaker uploads: write here.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    dataset.write_parquet(
        str(out_dir), filename_provider=_part_files(), ray_remote_args={"scheduling_strategy": here}
    )


# --------------------------------------------------------------------------- step
def preprocess(args: PreprocessArgs, s3: Any = None) -> dict[str, Any]:
    """Runs the step (Ray must be connected); returns the preprocessor document it wrote."""
    import ray

    fractions = validate_fractions(args.train_fraction, args.validation_fraction, args.test_fraction)
    manifest = read_manifest(common.processing_input("manifest") / "manifest.json")
    if manifest.get("features") and args.target_column not in manifest["features"]:
        raise common.JobFailure(
            f"target column {args.target_column!r} is not in the dataset; columns: "
            + ", ".join(manifest["features"])
        )
    s3 = s3 or boto3.client("s3")
    version = str(manifest["dataset_version"])
    store_uri = manifest["offline_store_uri"]

    workdir = Path(tempfile.mkdtemp(prefix="offline-store-"))
    try:
        files = download_offline_store(s3, store_uri, workdir)
        if not files:
            raise common.JobFailure(f"the offline store {store_uri} holds no Parquet file")
        log.info("read %d offline store files from %s", len(files), store_uri)
        rows = read_dataset_version(workdir, version)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    records = latest_records(rows, manifest.get("record_identifier", "record_id"))
    expected = int(manifest["row_count"])
    if len(records) != expected:
        raise common.JobFailure(
            f"the offline store {store_uri} holds {len(records)} records of dataset version {version}, "
            f"the ingest step wrote {expected}; refusing to train on a partial table"
        )
    data, features = feature_table(records, manifest, args.target_column)

    # A few blocks (one per CPU, at most one per 1000 rows) so shuffle and scaling run in parallel.
    blocks = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(data) // 1000))
    bounds = np.linspace(0, len(data), blocks + 1).astype(int)
    dataset = ray.data.from_pandas([data.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    dataset = dataset.random_shuffle(seed=args.seed)
    # Rounded sizes (split_proportionately floors cumulative float products: 399 of 2000 for 0.2).
    train_rows = round(len(data) * fractions[0])
    validation_rows = round(len(data) * fractions[1])
    train, validation, test = dataset.split_at_indices([train_rows, train_rows + validation_rows])
    counts = {"train": train.count(), "validation": validation.count(), "test": test.count()}
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise common.JobFailure(
            f"{len(data)} rows are too few for the fractions {fractions}: the {', '.join(empty)} split "
            "would be empty"
        )

    mean, scale = fit_scaler(train, features)
    scaler_args = {"features": features, "mean": mean.tolist(), "scale": scale.tolist()}
    for name, split in zip(SPLITS, (train, validation, test)):
        scaled = split.map_batches(scale_batch, fn_kwargs=scaler_args, batch_format="pandas")
        write_split(scaled, common.processing_output(name))

    document = {
        "feature_order": features,
        "target": args.target_column,
        "scaler": {"mean": mean.tolist(), "scale": scale.tolist()},
        "dataset_version": version,
        "feature_group_name": manifest.get("feature_group_name"),
        "input_uri": manifest.get("input_uri"),
        "rows": counts,
        "fractions": dict(zip(SPLITS, fractions)),
        "seed": args.seed,
    }
    write_preprocessor(common.processing_output("preprocessor") / PREPROCESSOR_FILE, document)
    log.info("wrote splits %s with %d features (target %s)", counts, len(features), args.target_column)
    return document


def parse_args(argv: Sequence[str] | None) -> PreprocessArgs:
    parser = argparse.ArgumentParser(prog="python -m jobs.preprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--target-column", required=True)
    # Kept as text: validate_fractions explains what is wrong with a bad value.
    parser.add_argument("--train-fraction", default="0.6")
    parser.add_argument("--validation-fraction", default="0.2")
    parser.add_argument("--test-fraction", default="0.2")
    parser.add_argument("--seed", type=int, default=42)
    ns = parser.parse_args(argv)
    return PreprocessArgs(
        target_column=ns.target_column,
        train_fraction=ns.train_fraction,
        validation_fraction=ns.validation_fraction,
        test_fraction=ns.test_fraction,
        seed=ns.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    args = parse_args(argv)
    try:
        # Bad fractions fail before Ray starts.
        validate_fractions(args.train_fraction, args.validation_fraction, args.test_fraction)
        with ray_cluster.connect():
            preprocess(args)
    except common.JobFailure as failure:
        common.fail(str(failure), kind="processing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
