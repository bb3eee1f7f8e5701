"""P2 — the preprocess step at 1M rows vs one pandas process doing the same work.

Input (both sides): an offline store as the Feature Store writes it — Parquet files under
`year=/month=/day=/hour=` with `record_id, event_time, dataset_version`, the CSV columns and
`write_time, api_invocation_time, is_deleted` — holding `rows` records of one dataset version.

Ours: `jobs.preprocess.preprocess()` as the pipeline runs it (container root in a temp dir, the
ingest manifest as its input, the offline store in S3 served by moto), on a Ray head started
beforehand (the local executor shares one head across steps, so its start-up is not counted).
Timed: the whole step, including copying the offline store out of S3 and computing the drift
baseline (`baseline_statistics.json`), which the baseline does not do (the copy's share is measured
separately and given in the notes).

Baseline: a single-process pandas script: read the Parquet files, keep the latest write per
record id (and drop deletes), drop the metadata columns, shuffle with a seed, split 0.6/0.2/0.2,
fit a StandardScaler on train (numpy; population std, as scikit-learn), scale every split, write
three Parquet files and the scaler JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench.harness import RATIO_AT_MOST, Row, Target, not_measured
from bench.support import boto_client, housing, in_process_gateway, local_aws_env, patched_environ, ray_cluster, timed

KEY = "P2"
TARGET = Target(RATIO_AT_MOST, 2.0)
TARGET_COLUMN = "PRICE"
DATASET_VERSION = "bench-version-1"
FILES = 10
FRACTIONS = (0.6, 0.2, 0.2)
SEED = 42
METADATA_COLUMNS = ["record_id", "event_time", "dataset_version", "write_time", "api_invocation_time",
                    "is_deleted", "year", "month", "day", "hour"]
BUCKET = "bench-offline-store"
STORE_PREFIX = "offline/bench-group/data"


def write_offline_store(rows: int, root: Path) -> tuple[list[Path], list[str]]:
    """`rows` records in FILES Parquet files under a partition folder; returns (files, CSV columns)."""
    frame = housing(rows)
    columns = list(frame.columns)
    now = time.time()
    stamp = pd.Timestamp(now, unit="s", tz="UTC")
    frame.insert(0, "dataset_version", DATASET_VERSION)
    frame.insert(0, "event_time", round(now, 3))
    frame.insert(0, "record_id", [f"{DATASET_VERSION}-{i}" for i in range(rows)])
    frame["write_time"] = stamp
    frame["api_invocation_time"] = stamp
    frame["is_deleted"] = False
    partition = root / stamp.strftime("year=%Y/month=%m/day=%d/hour=%H")
    partition.mkdir(parents=True, exist_ok=True)
    files = []
    for index, chunk in enumerate(np.array_split(np.arange(rows), FILES)):
        path = partition / f"{stamp:%Y%m%dT%H%M%SZ}_{index:04d}.parquet"
        frame.iloc[chunk].to_parquet(path, index=False)
        files.append(path)
    return files, columns


def pandas_preprocess(store: Path, out: Path, features_and_target: list[str]) -> dict[str, int]:
    """The baseline: the same step in one pandas process."""
    frame = pd.concat([pd.read_parquet(p) for p in sorted(store.rglob("*.parquet"))], ignore_index=True)
    frame = frame[frame["dataset_version"] == DATASET_VERSION]
    frame = frame.sort_values(["record_id", "write_time", "api_invocation_time"], kind="stable")
    frame = frame.drop_duplicates("record_id", keep="last")
    frame = frame[~frame["is_deleted"]]
    data = frame.drop(columns=[c for c in METADATA_COLUMNS if c in frame.columns])[features_and_target]
    data = data.sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    train_rows = round(len(data) * FRACTIONS[0])
    validation_rows = round(len(data) * FRACTIONS[1])
    splits = {
        "train": data.iloc[:train_rows],
        "validation": data.iloc[train_rows:train_rows + validation_rows],
        "test": data.iloc[train_rows + validation_rows:],
    }
    features = [c for c in features_and_target if c != TARGET_COLUMN]
    train_values = splits["train"][features].to_numpy(dtype=float)
    mean = train_values.mean(axis=0)
    std = train_values.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    counts = {}
    for name, split in splits.items():
        split = split.copy()
        split[features] = (split[features].to_numpy(dtype=float) - mean) / scale
        (out / name).mkdir(parents=True, exist_ok=True)
        split.to_parquet(out / name / "part-00000.parquet", index=False)
        counts[name] = len(split)
    (out / "preprocessor.json").write_text(json.dumps(
        {"feature_order": features, "target": TARGET_COLUMN, "scaler": {"mean": mean.tolist(), "scale": scale.tolist()}}
    ))
    return counts


def run(quick: bool, workdir: Path, report: Callable[[Row], None]) -> None:
    rows = 100_000 if quick else 1_000_000
    measure = f"preprocess, {rows:,} rows (s)"
    try:
        from jobs import preprocess as job
    except ImportError as error:
        report(not_measured(KEY, measure, "s", TARGET, f"jobs.preprocess cannot be imported: {error}"))
        return

    store = workdir / "offline-store"
    files, columns = write_offline_store(rows, store)
    base_seconds, base_counts = timed(pandas_preprocess, store, workdir / "baseline-out", columns)

    container = workdir / "container"
    manifest_dir = container / "processing" / "input" / "manifest"
    manifest_dir.mkdir(parents=True, exist_ok=True)
    store_uri = f"s3://{BUCKET}/{STORE_PREFIX}"
    manifest = {
        "dataset_version": DATASET_VERSION,
        "offline_store_uri": store_uri,
        "record_identifier": "record_id",
        "event_time_feature": "event_time",
        "features": columns,
        "target": TARGET_COLUMN,
        "row_count": rows,
        "feature_group_name": "bench-group",
        "input_uri": "s3://bench-data/incoming/houses.csv",
        # What the bulk ingest mode records for these columns (the manifest's contract asks for them).
        "feature_types": {c: ("Integral" if c == TARGET_COLUMN else "Fractional") for c in columns},
        "rejected_rows": 0,
        "event_time": time.time(),
        "ingestion_mode": "OfflineStore",
    }
    (manifest_dir / "manifest.json").write_text(json.dumps(manifest))
    args = job.PreprocessArgs(TARGET_COLUMN, *FRACTIONS, seed=SEED)

    with patched_environ({**local_aws_env(), "SM_CONTAINER_ROOT": str(container)}), \
            in_process_gateway() as url, ray_cluster(workdir, num_cpus=None):
        s3 = boto_client("s3", url, max_pool_connections=16)
        s3.create_bucket(Bucket=BUCKET)
        for path in files:
            s3.upload_file(str(path), BUCKET, f"{STORE_PREFIX}/{path.relative_to(store).as_posix()}")
        download_seconds, _ = timed(job.download_offline_store, s3, store_uri, workdir / "download-probe")
        ours_seconds, document = timed(job.preprocess, args, s3=s3)

    if document["rows"] != base_counts:
        raise RuntimeError(f"the two sides split differently: ours {document['rows']}, baseline {base_counts}")
    report(Row(
        KEY, measure, ours_seconds, base_seconds, "s", TARGET,
        notes=(f"ours includes copying the offline store out of S3 (moto), {download_seconds:.1f} s of it "
               f"when measured alone, and writing the drift baseline (baseline_statistics.json), which "
               f"the script does not; Ray head start-up not counted; splits {document['rows']}"),
        details={"download_seconds": download_seconds, "rows": rows},
    ))
