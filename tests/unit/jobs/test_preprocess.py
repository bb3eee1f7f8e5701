"""jobs.preprocess: fraction checks, dedupe, scaler maths, and the whole step on real Ray against
offline-store Parquet files in the moto S3."""
from __future__ import annotations

import io
import json
from contextlib import contextmanager
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import common, preprocess, scaling
from local.cli.datagen import generate_housing
from mlops_shared.artifacts import IngestManifest, PreprocessorDocument
from tests.artifact_contracts import assert_follows_contract

FEATURES = ["YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS", "NUM_BATHROOMS", "LOT_ACRES",
            "GARAGE_SPACES", "FRONT_PORCH", "DECK"]
BUCKET = "artifacts"
STORE_PREFIX = "offline-store/123456789012/sagemaker/us-east-1/offline-store/fs-housing-1700000000"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


# --------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize("fractions", [("0.6", "0.2", "0.2"), ("0.7", "0.2", "0.1"), (0.8, 0.1, 0.1)])
def test_fractions_that_sum_to_one_pass(fractions):
    assert sum(preprocess.validate_fractions(*fractions)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "fractions, message",
    [
        (("0.5", "0.5", "0.1"), "sum to 1.1"),
        (("0.7", "0.2", "0.2"), "sum to 1.1"),
        (("0", "0.5", "0.5"), "train fraction must be between 0 and 1"),
        (("0.6", "-0.2", "0.6"), "validation fraction must be between 0 and 1"),
        (("0.6", "0.2", "abc"), "test fraction must be a number"),
        (("nan", "0.2", "0.2"), "train fraction"),
    ],
)
def test_bad_fractions_fail_clearly(fractions, message):
    with pytest.raises(common.JobFailure, match=message):
        preprocess.validate_fractions(*fractions)


def test_bad_fractions_fail_the_step_before_reading_anything(root):
    # No manifest, no S3, no Ray needed: the fractions are checked first.
    with pytest.raises(SystemExit) as exit_info:
        preprocess.main(["--target-column", "PRICE", "--train-fraction", "0.5",
                         "--validation-fraction", "0.5", "--test-fraction", "0.1"])
    assert exit_info.value.code == 1
    message = (root / "output" / "message").read_text()
    assert "0.5/0.5/0.1" in message and "sum to 1.1" in message


def _writes(record_ids, prices, write_seconds, deleted=None, api_seconds=None):
    t = pd.Timestamp("2024-01-01", tz="UTC")
    return pa.Table.from_pandas(pd.DataFrame({
        "record_id": record_ids,
        "PRICE": prices,
        "write_time": [t + pd.Timedelta(seconds=s) for s in write_seconds],
        "api_invocation_time": [t + pd.Timedelta(seconds=s) for s in (api_seconds or [0] * len(record_ids))],
        "is_deleted": deleted or [False] * len(record_ids),
    }), preserve_index=False)


def test_latest_records_keeps_the_last_write_and_drops_deletes():
    table = _writes(["a", "a", "b", "c", "c"], [1, 2, 3, 4, 5], [0, 1, 0, 5, 0],
                    deleted=[False, False, False, True, False])
    latest = preprocess.latest_records(table).to_pandas().set_index("record_id")["PRICE"].to_dict()
    assert latest == {"a": 2, "b": 3}  # c's latest write deleted it


def test_latest_records_breaks_ties_on_the_invocation_time_then_the_later_row():
    table = _writes(["a", "a", "b", "b", "a"], [1, 2, 3, 4, 5], [7, 7, 3, 3, 1], api_seconds=[2, 1, 0, 0, 9])
    latest = preprocess.latest_records(table).to_pandas().set_index("record_id")["PRICE"].to_dict()
    assert latest == {"a": 1, "b": 4}


def test_latest_records_equals_the_pandas_sort_and_drop_duplicates():
    rng = np.random.default_rng(3)
    n = 5000
    table = _writes([f"r{i}" for i in rng.integers(0, 1500, n)], list(range(n)), rng.integers(0, 50, n).tolist(),
                    deleted=(rng.random(n) < 0.1).tolist(), api_seconds=rng.integers(0, 3, n).tolist())
    frame = table.to_pandas()
    expected = frame.sort_values(["record_id", "write_time", "api_invocation_time"], kind="stable")
    expected = expected.drop_duplicates("record_id", keep="last")
    expected = expected[~expected["is_deleted"]]
    latest = preprocess.latest_records(table).to_pandas()
    assert sorted(latest["PRICE"]) == sorted(expected["PRICE"])


def test_rewrites_and_deletes_are_detected_and_a_clean_table_is_not():
    clean = _writes(["a", "b", "c"], [1, 2, 3], [0, 0, 0])
    assert not preprocess.has_rewrites_or_deletes(clean)
    assert preprocess.has_rewrites_or_deletes(_writes(["a", "b", "a"], [1, 2, 3], [0, 0, 1]))
    assert preprocess.has_rewrites_or_deletes(_writes(["a", "b", "c"], [1, 2, 3], [0, 0, 0], deleted=[False, True, False]))
    assert not preprocess.has_rewrites_or_deletes(clean.slice(0, 0))


def test_the_unique_record_order_is_the_record_id_order_or_none_for_rewrites_and_deletes():
    table = _writes(["c", "a", "b"], [1, 2, 3], [0, 0, 0])
    assert preprocess.unique_record_order(table).tolist() == [1, 2, 0]
    assert preprocess.unique_record_order(_writes(["a", "b", "a"], [1, 2, 3], [0, 0, 1])) is None
    assert preprocess.unique_record_order(_writes(["a", "b"], [1, 2], [0, 0], deleted=[False, True])) is None
    assert preprocess.unique_record_order(_writes([None, "b", None], [1, 2, 3], [0, 0, 0])) is None
    assert preprocess.unique_record_order(_writes(["a"], [1], [0])).tolist() == [0]


def test_merged_moments_equal_a_population_standard_scaler():
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(50, 7, (1000, 3)), columns=["x", "y", "z"])
    data["z"] = 4.0  # constant: scale 1, as sklearn does
    parts = [data[:10], pa.Table.from_pandas(data[10:600], preserve_index=False), data[600:], data[:0]]
    moments = [preprocess.batch_moments(part, ["x", "y", "z"]) for part in parts]
    mean, scale = preprocess.merge_moments({name: column[0] for name, column in m.items()} for m in moments)
    np.testing.assert_allclose(mean, data.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(scale, [data["x"].std(ddof=0), data["y"].std(ddof=0), 1.0], rtol=1e-10)


def test_scale_batch_scales_the_features_and_keeps_the_target_and_column_order():
    batch = pa.table({"PRICE": [100, 200], "x": [1, 3], "y": [2.0, None]})
    scaled = preprocess.scale_batch(batch, ["x", "y"], [2.0, 1.0], [1.0, 0.5])
    assert scaled.column_names == ["PRICE", "x", "y"]
    assert scaled["PRICE"].to_pylist() == [100, 200] and scaled.schema.field("PRICE").type == pa.int64()
    assert scaled["x"].to_pylist() == [-1.0, 1.0]
    assert scaled["y"].to_numpy(zero_copy_only=False)[0] == 2.0 and np.isnan(scaled["y"].to_numpy(zero_copy_only=False)[1])


# --------------------------------------------------------------------------- the whole step
def _offline_rows(data: pd.DataFrame, version: str, write_time: pd.Timestamp, start: int = 0) -> pd.DataFrame:
    rows = data.copy()
    rows.insert(0, "record_id", [f"{version}-{i}" for i in range(start, start + len(rows))])
    rows["event_time"] = 1_700_000_000.0
    rows["dataset_version"] = version
    rows["write_time"] = write_time
    rows["api_invocation_time"] = write_time
    rows["is_deleted"] = False
    return rows


def _put_parquet(s3, key: str, rows: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), buffer)
    s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


def _make_offline_store(root: Path, *, rewrites: bool) -> dict:
    """2000 rows of version v1 over two hourly files, plus 300 rows of an older version v0; with
    `rewrites`, 50 of the v1 rows written twice (the older write has a bogus price). Returns the
    manifest the ingest step would write, the source data and the manifest's path."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    data = generate_housing(2000, seed=11)
    t = pd.Timestamp("2024-05-01 10:00", tz="UTC")
    fresh = _offline_rows(data, "v1", t + pd.Timedelta("1h"))
    stale = _offline_rows(data.iloc[:50].assign(PRICE=-1), "v1", t)
    older_version = _offline_rows(generate_housing(300, seed=12).assign(PRICE=-2), "v0", t - pd.Timedelta("1d"))
    base = f"{STORE_PREFIX}/data/year=2024/month=05/day=01"
    first_hour = pd.concat([stale, fresh.iloc[:1000]]) if rewrites else fresh.iloc[:1000]
    _put_parquet(s3, f"{base}/hour=10/stale-and-first-half.parquet", first_hour)
    _put_parquet(s3, f"{base}/hour=11/second-half.parquet", fresh.iloc[1000:])
    _put_parquet(s3, f"{STORE_PREFIX}/data/year=2024/month=04/day=30/hour=10/v0.parquet", older_version)
    manifest = IngestManifest(
        dataset_version="v1",
        input_uri="s3://data/incoming/housing.csv",
        feature_group_name="fs-housing-abc",
        offline_store_uri=f"s3://{BUCKET}/{STORE_PREFIX}",
        record_identifier="record_id",
        event_time_feature="event_time",
        features=["PRICE", *FEATURES],
        feature_types={"PRICE": "Integral", **{name: "Fractional" for name in FEATURES}},
        target="PRICE",
        row_count=2000,
        rejected_rows=0,
        event_time=t.timestamp(),
        ingestion_mode="PutRecord",
    ).to_json()
    path = root / "processing" / "input" / "manifest" / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return {"data": data, "manifest": manifest, "manifest_path": path}


@pytest.fixture
def offline_store(aws, root):
    return _make_offline_store(root, rewrites=True)


@pytest.fixture
def clean_offline_store(aws, root):
    return _make_offline_store(root, rewrites=False)


def _read_split(root: Path, name: str) -> pd.DataFrame:
    files = sorted((root / "processing" / "output" / name).glob("part-*.parquet"))
    assert files, f"no part files for {name}"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        preprocess.main(argv)
        raise SystemExit(0)
    return exit_info.value.code


def _check_splits(root: Path, source: pd.DataFrame) -> dict[str, pd.DataFrame]:
    splits = {name: _read_split(root, name) for name in preprocess.SPLITS}
    assert {k: len(v) for k, v in splits.items()} == {"train": 1400, "validation": 400, "test": 200}
    for frame in splits.values():
        assert list(frame.columns) == ["PRICE", *FEATURES]  # CSV order, metadata dropped
        assert (frame["PRICE"] > 0).all()  # neither the stale writes nor version v0

    document = json.loads((root / "processing/output/preprocessor/preprocessor.json").read_text())
    assert_follows_contract(PreprocessorDocument, document)
    assert document["feature_order"] == FEATURES
    assert document["target"] == "PRICE"
    assert document["dataset_version"] == "v1"
    assert document["rows"] == {"train": 1400, "validation": 400, "test": 200}
    mean, scale = np.array(document["scaler"]["mean"]), np.array(document["scaler"]["scale"])

    # Fitted on train only: train's scaled features are exactly standardised, the others are not.
    train = splits["train"][FEATURES]
    np.testing.assert_allclose(train.mean().to_numpy(), 0, atol=1e-9)
    np.testing.assert_allclose(train.std(ddof=0).to_numpy(), 1, rtol=1e-9)
    assert not np.allclose(splits["test"][FEATURES].mean().to_numpy(), 0, atol=1e-3)

    # Unscaled, the three splits are exactly the source rows, each once.
    raw = pd.concat(splits.values(), ignore_index=True)
    raw[FEATURES] = raw[FEATURES].to_numpy() * scale + mean
    key = ["PRICE", "SQUARE_FEET"]
    restored = raw.sort_values(key).reset_index(drop=True)
    source = source.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(restored[FEATURES].to_numpy(), source[FEATURES].to_numpy(), rtol=1e-9, atol=1e-6)
    assert restored["PRICE"].tolist() == source["PRICE"].tolist()
    _check_baseline(root, splits["train"], mean, scale)
    # Shuffled: the train split is not the first rows of the store.
    assert splits["train"]["PRICE"].head(50).tolist() != source["PRICE"].head(50).tolist()
    return splits


def _check_baseline(root: Path, train: pd.DataFrame, mean: np.ndarray, scale: np.ndarray) -> None:
    """The drift baseline is the train split's, in the raw feature space, target included."""
    from jobs import baseline

    document = json.loads((root / "processing/output/preprocessor" / baseline.BASELINE_FILE).read_text())
    columns = baseline.parse_baseline(document)
    assert list(columns) == ["PRICE", *FEATURES] and document["rows"] == 1400 and document["target"] == "PRICE"
    raw = train.copy()
    raw[FEATURES] = raw[FEATURES].to_numpy() * scale + mean
    for name in ["PRICE", *FEATURES]:
        assert columns[name]["count"] == raw[name].notna().sum()
        assert columns[name]["min"] == pytest.approx(raw[name].min()) and columns[name]["max"] == pytest.approx(raw[name].max())
        assert columns[name]["mean"] == pytest.approx(raw[name].mean())
        assert sum(columns[name]["histogram"]["bin_counts"]) == columns[name]["count"]


ARGV = ["--target-column", "PRICE", "--train-fraction", "0.7", "--validation-fraction", "0.2",
        "--test-fraction", "0.1", "--seed", "42"]


@pytest.mark.slow
def test_preprocess_splits_dedupes_and_scales_with_train_statistics(ray_local, offline_store, root):
    assert _run(ARGV) == 0
    _check_splits(root, offline_store["data"])


@pytest.mark.slow
def test_preprocess_of_a_store_without_rewrites_is_the_same_and_reproducible(ray_local, clean_offline_store, root):
    assert _run(ARGV) == 0
    first = _check_splits(root, clean_offline_store["data"])
    assert _run(ARGV) == 0
    second = {name: _read_split(root, name) for name in preprocess.SPLITS}
    for name in preprocess.SPLITS:  # the same seed, the same rows in the same order
        pd.testing.assert_frame_equal(first[name], second[name])
    assert _run([*ARGV[:-1], "7"]) == 0
    assert _read_split(root, "train")["PRICE"].tolist() != first["train"]["PRICE"].tolist()


@pytest.mark.slow
def test_the_same_records_in_another_arrival_order_give_the_same_splits(ray_local, clean_offline_store, root):
    """PutRecord calls race, so the offline store holds a run's records in any order: the splits of a
    dataset version and seed must not depend on it (issue: warm and cold runs trained on different
    splits of the same CSV)."""
    assert _run(ARGV) == 0
    first = {name: _read_split(root, name) for name in preprocess.SPLITS}
    s3 = boto3.client("s3")
    base = f"{STORE_PREFIX}/data/year=2024/month=05/day=01"
    fresh = _offline_rows(clean_offline_store["data"], "v1", pd.Timestamp("2024-05-01 11:00", tz="UTC"))
    reordered = fresh.sample(frac=1, random_state=3)  # the same records, arrived in another order
    for key in (f"{base}/hour=10/stale-and-first-half.parquet", f"{base}/hour=11/second-half.parquet"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    _put_parquet(s3, f"{base}/hour=11/reordered-a.parquet", reordered.iloc[:700])
    _put_parquet(s3, f"{base}/hour=10/reordered-b.parquet", reordered.iloc[700:])
    assert _run(ARGV) == 0
    for name in preprocess.SPLITS:
        pd.testing.assert_frame_equal(first[name], _read_split(root, name))


@pytest.mark.slow
def test_partial_offline_store_fails_the_step(ray_local, offline_store, root):
    manifest = dict(offline_store["manifest"], row_count=2100)
    offline_store["manifest_path"].write_text(json.dumps(manifest))
    code = _run(["--target-column", "PRICE"])
    assert code == 1
    message = (root / "output" / "message").read_text()
    assert "holds 2000 records" in message and "wrote 2100" in message and "partial" in message
    assert not (root / "processing/output/preprocessor/preprocessor.json").exists()


@pytest.mark.slow
def test_missing_target_fails_the_step(ray_local, offline_store, root):
    code = _run(["--target-column", "NOT_A_COLUMN"])
    assert code == 1
    message = (root / "output" / "message").read_text()
    assert "NOT_A_COLUMN" in message and "SQUARE_FEET" in message


def test_a_manifest_that_breaks_its_contract_fails_the_step_naming_the_field(offline_store, root):
    manifest = dict(offline_store["manifest"])
    del manifest["features"]
    offline_store["manifest_path"].write_text(json.dumps(manifest))
    code = _run(["--target-column", "PRICE"])
    assert code == 1
    assert "manifest.json: the field 'features' is missing" in (root / "output" / "message").read_text()


@contextmanager
def _ordered_ray_data():
    """Ray Data keeping the order of blocks, as the step's splits (row ranges) need."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        yield
    finally:
        context.execution_options.preserve_order = saved


@pytest.mark.slow
def test_the_driver_side_scaler_fit_is_the_ray_data_fit_bit_for_bit(ray_local):
    """The step fits the scaler on the shuffled blocks on the driver; it must give exactly what a
    Ray Data pass over the train split gives (moments per block, merged in block order)."""
    import ray

    frame = generate_housing(5000, seed=3)
    frame.loc[::7, "LOT_ACRES"] = np.nan  # missing values are left out of the moments
    blocks = [pa.Table.from_pandas(frame.iloc[start:start + 1000], preserve_index=False) for start in range(0, 5000, 1000)]
    train_rows = 3333  # inside the fourth block: the last train block is a slice
    head = preprocess.head_rows(blocks, train_rows)
    assert [b.num_rows for b in head] == [1000, 1000, 1000, 333]
    with _ordered_ray_data():
        moments = ray.data.from_arrow(blocks).split_at_indices([train_rows])[0].map_batches(
            preprocess.batch_moments, fn_kwargs={"features": FEATURES}, batch_format="pyarrow", batch_size=None,
        ).take_all()
    expected = scaling.merge_moments(moments, len(FEATURES))
    actual = preprocess.fit_scaler_on_blocks(head, FEATURES)
    for ours, theirs in zip(actual, expected):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_the_shuffle_is_seeded_keeps_every_row_once_and_leaves_ray_datas_settings_as_they_were(ray_local):
    """`random_shuffle` hands the rows to Ray Data in one block per CPU (2 here) and gives back
    the shuffled blocks: every row once, the same order for the same seed, another for another."""
    import ray

    table = pa.table({"row": np.arange(2500)})
    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order, context.enable_progress_bars
    first = preprocess.random_shuffle(table, seed=42)
    assert len(first) == 2
    rows = np.concatenate([block["row"].to_numpy() for block in first])
    assert sorted(rows.tolist()) == list(range(2500)) and rows.tolist() != list(range(2500))
    again = np.concatenate([block["row"].to_numpy() for block in preprocess.random_shuffle(table, seed=42)])
    other = np.concatenate([block["row"].to_numpy() for block in preprocess.random_shuffle(table, seed=7)])
    np.testing.assert_array_equal(rows, again)
    assert rows.tolist() != other.tolist()
    assert (context.execution_options.preserve_order, context.enable_progress_bars) == before
    # Under 1000 rows per CPU the rows are shuffled as one block.
    assert len(preprocess.random_shuffle(table.slice(0, 1500), seed=42)) == 1


# --------------------------------------------------------------------------- outputs pinned byte for byte
# SHA-256 of every file the step writes, for fixed inputs and seed, as the Ray Data implementation
# (main before the driver-only rewrite for bench P2) wrote them with 2 CPUs: a rewrite that makes
# the step faster must not change a single byte of the splits, the scaler or the drift baseline.
# Parquet files name the pyarrow version that wrote them: a pyarrow upgrade changes these digests
# (check the files' contents are unchanged, then update them).
PINNED_OUTPUTS = {
    "rewrites": {
        "train/part-00000.parquet": "9cdab2caac1d7e31eba9f8f4aa9a3cd1cca241bcccd7f2acf465ea60d9df1539",
        "validation/part-00000.parquet": "7246cf8d7bdf8bbb6aea9dce2d26c472604ab3035cc231f4889ee3a539bc6d89",
        "test/part-00000.parquet": "20179f1e3415c323abadaaca4384408bcf95cd9a0b1ce0a04ebd274dbd26e46c",
        "preprocessor/preprocessor.json": "53b4e8c5edfb5bc89446a34a382eb2cab11998ec18237fb80f03582fa1cf40b4",
        "preprocessor/baseline_statistics.json": "0b618485e97fd89615a92e5d6bbebf67bdc323f21426fb67e748d1e1adb90c61",
    },
    "missing": {
        "train/part-00000.parquet": "6faf22d4f5321d116fa273d7a0233c0c467a06c67f72318b88681905b3a2d7c6",
        "validation/part-00000.parquet": "55388c1b06111cac4ef43cb2c6593ec9310adb1aab85854d5be958178a1006de",
        "test/part-00000.parquet": "948860e910e0dbb9f29de9643a7451714e0f8420682defcefc5d9eabaa49e738",
        "preprocessor/preprocessor.json": "8a315fde0a1e904d9389e8eb2a0c9155a1f88e09e2221816b9f9b55fec8a879b",
        "preprocessor/baseline_statistics.json": "f3a729dd7672c11c0d9fcfdf614d05333e718731c3ce2283f07ba3c1ce1a9361",
    },
    "small": {
        "train/part-00000.parquet": "eabe2b71412ad6e2300e2fc8ab9af4c929d1e87fafc53d96ede390886ae632af",
        "validation/part-00000.parquet": "fa108a2027e167c777413f17a2d2958f69e3f14e01ed4a51255d4f7cf5132b38",
        "test/part-00000.parquet": "800b40a763f44dd2451c2b7663771d84de1a7acf378f783df331166c50c18113",
        "preprocessor/preprocessor.json": "20111c9449bf384c4f91607e2b68ad9c41dfb8fd2b44f956973044ed8e5b296b",
        "preprocessor/baseline_statistics.json": "8db69f4541c52d5001b00e5e2cf06dbbbb6756252677eca71f2ae950ff32693e",
    },
}
OUTPUT_FILES = ("train/part-00000.parquet", "validation/part-00000.parquet", "test/part-00000.parquet",
                "preprocessor/preprocessor.json", "preprocessor/baseline_statistics.json")


def _pinned_store(root: Path, case: str) -> None:
    """The offline store of one pinned case: `rewrites` (the rewrites store above: stale writes, an
    older version), `missing` (2000 clean records over three files in a scrambled arrival order,
    a tenth of LOT_ACRES and a few prices missing) and `small` (600 records: a single shuffle block)."""
    if case == "rewrites":
        _make_offline_store(root, rewrites=True)
        return
    rows = 2000 if case == "missing" else 600
    data = generate_housing(rows, seed=21)
    if case == "missing":
        data["LOT_ACRES"] = data["LOT_ACRES"].mask(np.arange(rows) % 10 == 3)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    fresh = _offline_rows(data, "v1", pd.Timestamp("2024-05-01 11:00", tz="UTC"))
    arrived = fresh.sample(frac=1, random_state=5)
    base = f"{STORE_PREFIX}/data/year=2024/month=05/day=01/hour=11"
    for index, part in enumerate(np.array_split(np.arange(rows), 3)):
        _put_parquet(s3, f"{base}/part-{index}.parquet", arrived.iloc[part])
    manifest = IngestManifest(
        dataset_version="v1", input_uri="s3://data/incoming/housing.csv", feature_group_name="fs-housing-abc",
        offline_store_uri=f"s3://{BUCKET}/{STORE_PREFIX}", record_identifier="record_id",
        event_time_feature="event_time", features=["PRICE", *FEATURES],
        feature_types={"PRICE": "Integral", **{name: "Fractional" for name in FEATURES}}, target="PRICE",
        row_count=rows, rejected_rows=0, event_time=1_714_561_200.0, ingestion_mode="PutRecord",
    ).to_json()
    path = root / "processing" / "input" / "manifest" / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))


def _output_digests(root: Path) -> dict[str, str]:
    import hashlib

    out = root / "processing" / "output"
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in OUTPUT_FILES}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["rewrites", "missing", "small"])
def test_the_outputs_are_byte_for_byte_those_of_the_ray_data_implementation(ray_local, aws, root, case):
    _pinned_store(root, case)
    assert _run(ARGV) == 0
    assert _output_digests(root) == PINNED_OUTPUTS[case]
