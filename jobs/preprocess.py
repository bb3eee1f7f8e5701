"""Preprocess step: the ingested dataset version in the offline store → scaled train/validation/test.

    python -m jobs.preprocess --target-column PRICE --train-fraction 0.6 \
        --validation-fraction 0.2 --test-fraction 0.2 --seed 42

Input: `processing/input/manifest/manifest.json`, written by the ingest step.

1. Checks the split fractions (each > 0, summing to 1 within 1e-6) before touching any data.
2. Copies the offline store's Parquet files to local disk (boto3) and reads them with pyarrow,
   keeping only this dataset version.
3. Keeps the latest write per record id that is not a delete (a re-run of the ingest step rewrites
   records, and the offline store keeps every write), orders the records by their deterministic id
   and refuses to go on unless exactly the manifest's row count remains: a partial table must never
   be trained on.
4. Drops the Feature Store columns and gives the others back the CSV's own names (the manifest
   maps them; from here on nobody sees a Feature Store name), shuffles with Ray Data
   (`Dataset.random_shuffle(seed)`: `random_shuffle` below) and splits (rounded sizes), fits a StandardScaler
   on the train split only (one pass; missing values ignored and kept missing, any finite magnitude
   kept finite: `jobs.scaling`), applies it to every feature but the target.
5. Writes `processing/output/{train,validation,test}/part-*.parquet` (target column kept under its
   CSV name), `processing/output/preprocessor/preprocessor.json` and the drift monitor's
   `baseline_statistics.json` (`jobs.baseline`).

It runs as a Ray job (connected like every step, `jobs.ray_cluster`). The shuffle is Ray Data's:
the driver hands the record-id ordered feature columns to `ray.data.from_arrow` in one block per
Ray CPU (at least 1000 rows each), Ray Data's `random_shuffle(seed=...)` runs as its map and reduce
tasks, and the shuffled blocks come back to the driver from Ray's shared memory. The rest is on the
driver with pyarrow and numpy: the read, the dedupe and the record-id order need every record id at
once anyway, and at the sizes that went through the Feature Store (1M rows: bench P2) the fit, the
scaling and the writing are a few vectorised passes, cheaper than scheduling Ray Data operators for
them (moments per shuffled block, merged in block order, so the numbers are those of a Ray Data pass
over the same blocks). The outputs of a dataset version and seed are byte for byte those of the
all-Ray-Data implementation this step had before
(`test_the_outputs_are_byte_for_byte_those_of_the_ray_data_implementation`).
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from jobs import baseline, common, feature_store_layout, ray_cluster, scaling
from mlops_shared.artifacts import ArtifactFormatError, IngestManifest, PreprocessorDocument, ScalerParameters
from mlops_shared.aws import parse_s3_uri

# Ray workers import this module to run the batch functions below: the driver-only dependencies
# (boto3; xgboost through jobs.model_io) are imported where they are used, not here.

log = logging.getLogger("jobs.preprocess")

SPLITS = ("train", "validation", "test")
FRACTION_TOLERANCE = 1e-6
METADATA_COLUMNS = feature_store_layout.METADATA_COLUMNS


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


def read_manifest(path: Path) -> IngestManifest:
    try:
        return IngestManifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise common.JobFailure(f"ingest manifest {path} is missing") from None
    except json.JSONDecodeError as err:
        raise common.JobFailure(f"ingest manifest {path} is not valid JSON: {err}") from None
    except ArtifactFormatError as err:
        raise common.JobFailure(f"ingest manifest {path} does not follow its contract: {err}") from None


# --------------------------------------------------------------------------- offline store
def download_offline_store(s3: Any, offline_store_uri: str, dest: Path) -> list[Path]:
    """Copies every Parquet file under the URI into `dest`, keeping the relative paths (so the
    `year=/month=/…` partition folders survive)."""
    bucket, prefix = parse_s3_uri(offline_store_uri)
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


def read_dataset_version(files: Sequence[Path], dataset_version: str) -> Any:
    """The rows of `dataset_version` in the downloaded offline-store files, as one pyarrow table
    (the files in path order, each file's rows in their order, as Ray Data's reader gave them).
    pyarrow reads and filters each file without the GIL, side by side on a few threads."""
    import pyarrow.parquet as pq

    def read(path: Path) -> Any:
        return pq.read_table(path, filters=[("dataset_version", "=", dataset_version)], partitioning=None)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
        return _concat(list(pool.map(read, sorted(files, key=str))))


def _cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def has_rewrites_or_deletes(table: Any, record_identifier: str = "record_id") -> bool:
    """True unless every record id occurs once and no row is a delete: the check that lets the usual
    table (one write per record) skip the deduplication `latest_records` does."""
    if table.num_rows == 0 or record_identifier not in table.column_names:
        return _any_deleted(table)
    return unique_record_order(table, record_identifier) is None


def unique_record_order(table: Any, record_identifier: str = "record_id") -> np.ndarray | None:
    """The rows in record-id order (indices into `table`) when every record id occurs once and no
    row is a delete (the usual table); None when it holds rewrites or deletes (`latest_records`).
    One sort does both: repeated ids are neighbours once sorted (cheaper than hashing every id)."""
    import pyarrow.compute as pc

    if _any_deleted(table):
        return None
    ids = table[record_identifier]
    order = pc.sort_indices(ids)
    ordered = ids.take(order)
    repeated = ids.null_count > 1 or pc.any(pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))).as_py()
    return None if repeated else order.to_numpy()


def _any_deleted(table: Any) -> bool:
    import pyarrow.compute as pc

    return "is_deleted" in table.column_names and bool(pc.any(table["is_deleted"]).as_py())


def latest_records(table: Any, record_identifier: str = "record_id") -> Any:
    """The latest write of each record id (by `write_time`, then `api_invocation_time`; among equal
    times the later row), without the records whose latest write is a delete. A pyarrow table in,
    one out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0 or record_identifier not in table.column_names:
        return table
    keys = [c for c in (record_identifier, "write_time", "api_invocation_time") if c in table.column_names]
    # A stable sort: rows with the same keys keep their order, so the last one wins.
    order = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in keys])
    ids = table[record_identifier].take(order).combine_chunks()
    # The last row of each run of equal record ids is the latest write of that record.
    last_of_run = pa.concat_arrays([
        pc.fill_null(pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1)), True),
        pa.array([True]),
    ])
    latest = table.take(pc.filter(order, last_of_run))
    if "is_deleted" in latest.column_names:
        latest = latest.filter(pc.invert(pc.fill_null(latest["is_deleted"], False)))
    return latest


def _is_numeric(data_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_boolean(data_type)


def feature_columns(schema: Any, manifest: IngestManifest, target: str) -> tuple[list[str], list[str], str]:
    """The stored columns to read (features + target in CSV order, Feature Store names, checked
    against the table's pyarrow schema), their CSV names (what the model and everyone after this
    step use) and the target's CSV name. The Feature Store columns are left out."""
    csv_names = manifest.csv_names()
    target = target.strip()
    if target not in csv_names:
        raise common.JobFailure(
            f"target column {target!r} is not in the dataset; columns: {', '.join(map(str, csv_names))}"
        )
    stored = list(manifest.features)
    absent = [f for f in stored if f not in schema.names]
    if absent:
        raise common.JobFailure(f"the offline store lacks the columns {', '.join(absent)} named in the manifest")
    non_numeric = [name for name, f in zip(csv_names, stored) if not _is_numeric(schema.field(f).type)]
    if non_numeric:
        raise common.JobFailure(f"non-numeric columns cannot be scaled: {', '.join(non_numeric)}")
    if len(stored) < 2:
        raise common.JobFailure(f"the dataset has no feature besides the target {target!r}")
    return stored, csv_names, target


def _concat(blocks: list[Any]) -> Any:
    import pyarrow as pa

    return pa.concat_tables(blocks, promote_options="permissive") if blocks else pa.table({})


# --------------------------------------------------------------------------- scaler
def batch_moments(batch: Any, features: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-feature moments of one batch (a pyarrow table or a DataFrame; missing values left out),
    as a one-row batch (`jobs.scaling.batch_moments`)."""
    values = (np.column_stack([_floats(batch[c]) for c in features]) if len(batch)
              else np.zeros((0, len(features))))
    return scaling.batch_moments(values)


def merge_moments(moments: Iterable[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Merges per-batch moments; returns (mean, scale) like sklearn's StandardScaler (population
    std, 1 where a feature is constant), missing values ignored."""
    moments = list(moments)
    if not moments:
        raise common.JobFailure("cannot fit the scaler: the train split is empty")
    mean, scale, _ = scaling.merge_moments(moments, np.asarray(moments[0]["mean"]).size)
    return mean, scale


def head_rows(blocks: Sequence[Any], rows: int) -> list[Any]:
    """The first `rows` rows of a list of pyarrow blocks, as blocks (the last one sliced): the blocks
    `Dataset.split_at_indices` gives its first part."""
    head = []
    for block in blocks:
        if rows <= 0:
            break
        head.append(block.slice(0, min(rows, block.num_rows)))
        rows -= block.num_rows
    return head


def fit_scaler_on_blocks(blocks: Sequence[Any], features: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`fit_scaler` on the driver: moments per block, merged in block order; (mean, scale, present
    values per feature)."""
    moments = [{name: value[0] for name, value in batch_moments(block, features).items()} for block in blocks]
    if not moments:
        raise common.JobFailure("cannot fit the scaler: the train split is empty")
    return scaling.merge_moments(moments, len(features))


def scale_batch(batch: Any, features: list[str], mean: list[float], scale: list[float]) -> Any:
    """Standardises each feature of a pyarrow batch (as float64; missing stays NaN); other columns
    as they are."""
    import pyarrow as pa

    for name, mu, sigma in zip(features, mean, scale):
        batch = batch.set_column(
            batch.schema.get_field_index(name), name,
            pa.array(scaling.standardize(_floats(batch[name]), np.float64(mu), np.float64(sigma))),
        )
    return batch


def _floats(column: Any) -> np.ndarray:
    """A column as float64 (nulls as NaN), whether a pyarrow column or a pandas Series."""
    if hasattr(column, "to_numpy") and not isinstance(column, pd.Series):
        return column.to_numpy(zero_copy_only=False).astype(float, copy=False)
    return column.to_numpy(dtype=float)


# --------------------------------------------------------------------------- output
PART_FILE = "part-00000.parquet"


def write_splits(blocks: list[Any], bounds: Sequence[int], out_dirs: Sequence[Path]) -> None:
    """Writes the rows before bounds[0], between the bounds and after the last into one Parquet file
    per folder. The blocks are read from Ray's shared memory on this node; the folders are this
    node's disk, which SageMaker uploads."""
    import pyarrow.parquet as pq

    table = _concat(blocks)
    edges = [0, *bounds, table.num_rows]

    def write(index: int) -> None:
        out_dir = out_dirs[index]
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("part-*.parquet"):
            old.unlink()
        pq.write_table(table.slice(edges[index], edges[index + 1] - edges[index]), out_dir / PART_FILE)

    # pyarrow writes without the GIL: the files are written side by side.
    with ThreadPoolExecutor(max_workers=len(out_dirs)) as pool:
        list(pool.map(write, range(len(out_dirs))))


# --------------------------------------------------------------------------- shuffle
@contextmanager
def ray_data_settings() -> Iterator[None]:
    """Ray Data settings for the dataset the shuffle creates (a dataset keeps a copy of the settings
    current when it is created); the previous ones are restored on exit.

    * Block order is preserved: the splits are row ranges of the shuffled blocks in their order, and
      the scaler's moments are merged in that order.
    * No progress bars nor start-of-execution lines: the step's log is a file read by people, not a
      terminal.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start")
    saved = [getattr(context, name) for name in names], context.execution_options.preserve_order
    for name in names:
        setattr(context, name, False)
    context.execution_options.preserve_order = True
    try:
        yield
    finally:
        for name, value in zip(names, saved[0]):
            setattr(context, name, value)
        context.execution_options.preserve_order = saved[1]


def shuffle_block_count(rows: int) -> int:
    """How many blocks the rows are shuffled in: one per CPU of the Ray cluster, at least 1000 rows
    each (Ray Data's `random_shuffle` gives as many blocks as it gets, and which rows land where
    depends on the blocks: the splits of a seed depend on this)."""
    return max(1, min(_cpus(), rows // 1000))


def random_shuffle(table: Any, seed: int) -> list[Any]:
    """The rows of `table` shuffled by Ray Data's `random_shuffle(seed=seed)`, as the shuffled blocks
    (pyarrow tables, in order). The table goes to Ray Data cut into `shuffle_block_count` blocks of
    consecutive rows; the shuffled blocks come back to the driver from Ray's shared memory on this
    node (zero-copy) for the fit, the scaling and the writing."""
    import ray

    with ray_data_settings():
        dataset = ray.data.from_arrow(_slices(table, shuffle_block_count(table.num_rows)))
        # `to_arrow_refs` runs the shuffle itself: no separate materialise.
        return ray.get(dataset.random_shuffle(seed=seed).to_arrow_refs())


def _slices(table: Any, count: int) -> list[Any]:
    bounds = np.linspace(0, table.num_rows, max(1, count) + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------- step
def _split_and_scale(
    args: PreprocessArgs, fractions: tuple[float, float, float], manifest: IngestManifest, s3: Any
) -> tuple[dict[str, int], list[str], np.ndarray, np.ndarray, dict[str, float]]:
    """Steps 2-5 but the preprocessor document; returns (split sizes, features, mean, scale,
    missing share per feature in the train split)."""
    version = manifest.dataset_version
    store_uri = manifest.offline_store_uri
    workdir = Path(tempfile.mkdtemp(prefix="offline-store-"))
    try:
        files = download_offline_store(s3, store_uri, workdir)
        if not files:
            raise common.JobFailure(f"the offline store {store_uri} holds no Parquet file")
        log.info("read %d offline store files from %s", len(files), store_uri)
        table = read_dataset_version(files, version)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    record_identifier = manifest.record_identifier
    # `order`: the rows ordered by record id, as indices into `table` (None: `table` is in that order,
    # or has no record ids). The offline store's files hold the records in the order PutRecord calls
    # arrived (actors race), so the same CSV and seed would shuffle into different splits from run to
    # run. Ordered by the deterministic record id first, the same dataset version and seed give the
    # same splits, the same scaler and (seeded tuning) the same model.
    order = None
    if table.num_rows and record_identifier in table.column_names:
        order = unique_record_order(table, record_identifier)
        if order is None:
            read_rows = table.num_rows
            table = latest_records(table, record_identifier)  # (ordered by record id)
            log.info("kept the latest of the rewritten records: %d of %d rows", table.num_rows, read_rows)
    expected = manifest.row_count
    if table.num_rows != expected:
        raise common.JobFailure(
            f"the offline store {store_uri} holds {table.num_rows} records of dataset version {version}, "
            f"the ingest step wrote {expected}; refusing to train on a partial table"
        )
    stored, columns, target = feature_columns(table.schema, manifest, args.target_column)
    features = [c for c in columns if c != target]
    rows = table.num_rows
    # Rounded sizes (split_proportionately floors cumulative float products: 399 of 2000 for 0.2).
    train_rows = round(rows * fractions[0])
    validation_rows = round(rows * fractions[1])
    bounds = [train_rows, train_rows + validation_rows]
    counts = dict(zip(SPLITS, (train_rows, validation_rows, rows - train_rows - validation_rows)))
    empty = [name for name, n in counts.items() if n <= 0]
    if empty:
        raise common.JobFailure(
            f"{rows} rows are too few for the fractions {fractions}: the {', '.join(empty)} split "
            "would be empty"
        )

    # From here on the columns carry the CSV's own names (Feature Store's are storage only). The
    # feature columns go to the shuffle in record-id order (one `take`).
    features_table = table.select(stored)
    # The schema's metadata (e.g. pandas' of a file pandas wrote) is kept as Ray Data's renaming
    # kept it: pyarrow's rename_columns drops it, and the Parquet files would differ.
    features_table = features_table.rename_columns(columns).replace_schema_metadata(features_table.schema.metadata)
    if order is not None:
        features_table = features_table.take(order)
    del table, order
    shuffled_blocks = random_shuffle(features_table, args.seed)
    del features_table
    # The scaler's moments are taken per shuffled block and merged in block order.
    train_blocks = head_rows(shuffled_blocks, train_rows)
    mean, scale, present = fit_scaler_on_blocks(train_blocks, features)
    # The drift monitor's baseline: the raw train split (the same rows, a column at a time).
    baseline.write_baseline(common.processing_output("preprocessor"), baseline.baseline_statistics(
        train_blocks, columns, target, dataset_version=version))
    del train_blocks
    missing_share = {name: round(1 - int(n) / train_rows, 6) for name, n in zip(features, present)}
    # Scaling is row by row, so one pass over the shuffled rows scales all three splits; the splits
    # are then slices of it at the same bounds.
    scaled = [scale_batch(block, features, mean.tolist(), scale.tolist()) for block in shuffled_blocks]
    del shuffled_blocks
    write_splits(scaled, bounds, [common.processing_output(name) for name in SPLITS])

    return counts, features, mean, scale, missing_share


def preprocess(args: PreprocessArgs, s3: Any = None) -> dict[str, Any]:
    """Runs the step (Ray must be connected); returns the preprocessor document it wrote."""
    fractions = validate_fractions(args.train_fraction, args.validation_fraction, args.test_fraction)
    manifest = read_manifest(common.processing_input("manifest") / "manifest.json")
    if args.target_column.strip() not in manifest.csv_names():
        raise common.JobFailure(
            f"target column {args.target_column!r} is not in the dataset; columns: "
            + ", ".join(manifest.csv_names())
        )
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    counts, features, mean, scale, missing_share = _split_and_scale(args, fractions, manifest, s3)

    stored_name = dict(zip(manifest.csv_names(), manifest.features))
    target = args.target_column.strip()
    document = PreprocessorDocument(
        feature_order=features,
        target=target,
        scaler=ScalerParameters(mean=mean.tolist(), scale=scale.tolist()),
        dataset_version=manifest.dataset_version,
        feature_group_name=manifest.feature_group_name,
        input_uri=manifest.input_uri,
        rows=counts,
        fractions=dict(zip(SPLITS, fractions)),
        seed=args.seed,
        feature_store_names=[stored_name[name] for name in features],
        target_feature_store_name=stored_name[target],
        missing_share=missing_share,
        dropped_rows=manifest.dropped_rows,
    ).to_json()
    from jobs.model_io import PREPROCESSOR_FILE, write_preprocessor

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
