"""The CSVs people really have, through the jobs' own code: human and odd column names, missing
cells, malformed rows far past the head, NA spellings, infinities, huge magnitudes, constant
targets. Ingest runs in bulk mode on the moto server (no Ray needed) and Preprocess on a real local
Ray against what Ingest wrote."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from jobs import common, dataset_schema, ingest, preprocess, scaling
from mlops_shared import csv_rules
from mlops_shared.artifacts import IngestManifest, PreprocessorDocument
from tests.artifact_contracts import assert_follows_contract
from tests.unit.jobs.test_ingest import DATA_BUCKET, argv, buckets, container_root, feature_store  # noqa: F401

HUMAN = ["Sale Price", "Square Feet", "Lot (acres)", "größe_m²", "year", "record_id", "Price", "price",
         "  Bedrooms  ", "a.b", "x" * 90, "x" * 90 + "y", "prediction"]


# --------------------------------------------------------------------------- names
def test_every_column_name_maps_to_one_valid_feature_store_name():
    names = csv_rules.feature_store_names(HUMAN)
    assert names[:9] == ["Sale_Price", "Square_Feet", "Lot_acres", "grosse_m2", "year_2", "record_id_2",
                         "Price", "price_2", "Bedrooms"]
    assert names[9] == "a_b" and names[12] == "prediction"
    assert all(csv_rules.FEATURE_NAME_PATTERN.fullmatch(n) for n in names)
    assert len({n.lower() for n in names}) == len(names)  # distinct without case, as Feature Store compares
    assert not {n.lower() for n in names} & set(csv_rules.RESERVED_FEATURE_NAMES)
    assert len(names[10]) == len(names[11]) == 64 and names[10] != names[11]  # cut names stay apart
    assert csv_rules.feature_store_names(HUMAN) == names  # deterministic
    assert csv_rules.feature_store_names(["!!!", "€"]) == ["column_1", "column_2"]
    # A name Feature Store takes keeps itself (existing groups keep their names).
    assert csv_rules.feature_store_names(["SQUARE_FEET", "PRICE"]) == ["SQUARE_FEET", "PRICE"]


def test_the_reserved_names_are_exactly_what_feature_store_and_the_pipeline_add():
    from jobs import feature_store_layout

    assert set(csv_rules.RESERVED_FEATURE_NAMES) == set(feature_store_layout.METADATA_COLUMNS)
    assert csv_rules.PIPELINE_FEATURES == len(feature_store_layout.PIPELINE_FEATURE_DEFINITIONS)


@pytest.mark.parametrize("header, code", [
    (["1", "2.5", "3"], "no_header_row"),
    (["a", "", "c"], "empty_column_name"),
    (["Price", " Price "], "duplicate_column_name"),
    ([f"c{i}" for i in range(csv_rules.MAX_CSV_COLUMNS + 1)], "too_many_columns"),
])
def test_headers_that_cannot_be_told_apart_are_refused_with_the_reason(header, code):
    problem = csv_rules.header_problem(header)
    assert problem is not None and problem.code == code and problem.fix


def test_names_equal_after_case_folding_are_two_columns():
    assert csv_rules.header_problem(["Price", "price", "PRICE"]) is None


# --------------------------------------------------------------------------- cells
@pytest.mark.parametrize("text, kind", [
    ("1", "number"), (" -2.5 ", "number"), ("1e3", "number"), (".5", "number"), ("+4", "number"),
    ("", "missing"), ("NaN", "missing"), ("nan", "missing"), ("NA", "missing"), ("null", "missing"),
    ("N/A", "missing"), ("  ", "missing"),
    ("inf", "bad"), ("-Infinity", "bad"), ("1e999", "bad"), ("1_000", "bad"), ("0x10", "bad"), ("3 m²", "bad"),
])
def test_a_cell_is_a_number_missing_or_bad(text, kind):
    assert csv_rules.parse_cell(text).kind == kind


# --------------------------------------------------------------------------- scaling
def test_the_scaler_ignores_missing_values_and_never_overflows():
    huge = np.array([[1e308, 1.0], [-1e308, np.nan], [1e308, 3.0], [np.nan, np.nan]])
    moments = [scaling.batch_moments(huge[:2]), scaling.batch_moments(huge[2:])]
    mean, scale, count = scaling.merge_moments(moments, 2)
    assert count.tolist() == [3, 2]
    assert np.isfinite(mean).all() and np.isfinite(scale).all()
    assert mean[0] == pytest.approx(1e308 / 3, rel=1e-9) and mean[1] == pytest.approx(2.0)
    assert scale[0] == pytest.approx(np.std([1e308 / 1e300, -1e308 / 1e300, 1e308 / 1e300]) * 1e300, rel=1e-9)
    scaled = scaling.standardize(huge, mean, scale)
    assert np.isfinite(scaled[~np.isnan(huge)]).all() and np.isnan(scaled[np.isnan(huge)]).all()
    # A feature with no value at all: mean 0, scale 1 (every cell stays missing).
    mean, scale, count = scaling.merge_moments([scaling.batch_moments(np.full((4, 1), np.nan))], 1)
    assert (mean.tolist(), scale.tolist(), count.tolist()) == ([0.0], [1.0], [0])


# --------------------------------------------------------------------------- ingest + preprocess
def messy_houses(rows: int = 600, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    feet = rng.uniform(800, 4000, rows).round(1)
    acres = rng.uniform(0.1, 2.0, rows).round(3)
    frame = pd.DataFrame({
        "Square Feet": feet.astype(str),
        "Lot (acres)": acres.astype(str),
        "größe_m²": (feet * 0.0929).round(2).astype(str),
        "year": rng.integers(1950, 2024, rows).astype(str),  # reserved by Feature Store's partitions
        "Huge Number": (rng.uniform(-1, 1, rows) * 1e300).astype(str),
        "prediction": rng.integers(0, 5, rows).astype(str),  # a name the smoke sample uses
        "Sale Price": (feet * 120 + acres * 20000).round(0).astype(int).astype(str),
    })
    frame.loc[frame.index[::7], "Lot (acres)"] = ""  # missing feature cells: data
    frame.loc[frame.index[::11], "Square Feet"] = "NaN"  # missing, spelled as pandas writes it
    frame.loc[3, "Sale Price"] = ""  # missing target: dropped
    frame.loc[17, "Sale Price"] = "NA"
    frame.loc[25, "größe_m²"] = "inf"  # a bad cell: rejected row
    return frame


def upload_text(s3, text: str, key: str) -> tuple[str, str]:
    version = s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=text.encode("utf-8"))["VersionId"]
    return f"s3://{DATA_BUCKET}/{key}", version


def malformed_text(frame: pd.DataFrame, row: int) -> str:
    """The CSV of `frame` with data row `row` given one field too many (far past any sample)."""
    lines = frame.to_csv(index=False).splitlines()
    lines[row + 1] += ",9"
    return "\n".join(lines) + "\n"


def test_a_messy_csv_ingests_in_chunks_and_preprocesses_under_its_own_names(
        ray_local, container_root, buckets, feature_store, monkeypatch):  # noqa: F811
    feature_store()
    frame = messy_houses()
    uri, version = upload_text(buckets, malformed_text(frame, 550), "incoming/My Houses (2024) #2 & co's, €.csv")
    # Small chunks: the schema pass and the row pass each read the file in many pieces.
    monkeypatch.setattr(dataset_schema, "DEFAULT_CHUNK_ROWS", 64)
    monkeypatch.setattr(dataset_schema.CsvFile.chunks, "__defaults__", (64,))
    assert ingest.main(argv(uri, version, target_column="Sale Price", ingestion_mode="OfflineStore",
                            max_rejected_rows=2)) == 0

    manifest = IngestManifest.from_json(
        json.loads((container_root / "processing/output/manifest/manifest.json").read_text()))
    assert manifest.column_names == list(frame.columns)
    assert manifest.features == ["Square_Feet", "Lot_acres", "grosse_m2", "year_2", "Huge_Number", "prediction",
                                 "Sale_Price"]
    assert manifest.target == "Sale_Price"
    assert (manifest.rejected_rows, manifest.dropped_rows, manifest.row_count) == (2, 2, 596)
    with (container_root / "processing/output/rejects/rejects.csv").open() as handle:
        rejects = {int(r["row_number"]): r for r in csv.DictReader(handle)}
    assert sorted(rejects) == [3, 17, 25, 550]
    assert rejects[550]["reason"] == "the row has 8 fields, the header has 7"
    assert rejects[25]["reason"] == "größe_m² value 'inf' is infinite, not a measurement"
    assert rejects[3]["outcome"] == "dropped" and rejects[17]["outcome"] == "dropped"

    # Preprocess reads what Ingest wrote and hands on the user's names.
    (container_root / "processing/input/manifest").mkdir(parents=True)
    (container_root / "processing/input/manifest/manifest.json").write_text(json.dumps(manifest.to_json()))
    with pytest.raises(SystemExit) as exit_info:
        preprocess.main(["--target-column", "Sale Price", "--seed", "3"])
        raise SystemExit(0)
    assert exit_info.value.code == 0
    text = (container_root / "processing/output/preprocessor/preprocessor.json").read_text()
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in preprocessor.json"))
    assert_follows_contract(PreprocessorDocument, document)
    features = [c for c in frame.columns if c != "Sale Price"]
    assert document["feature_order"] == features and document["target"] == "Sale Price"
    assert document["feature_store_names"] == manifest.features[:-1]
    assert document["dropped_rows"] == 2
    assert all(math.isfinite(v) for v in document["scaler"]["mean"] + document["scaler"]["scale"])
    train = pd.read_parquet(next((container_root / "processing/output/train").glob("*.parquet")))
    assert list(train.columns) == list(frame.columns)
    share = train["Lot (acres)"].isna().mean()
    assert 0.08 < share < 0.2 and document["missing_share"]["Lot (acres)"] == pytest.approx(share, abs=1e-6)
    assert np.isfinite(train["Huge Number"]).all() and train["Huge Number"].abs().max() < 10
    assert document["missing_share"]["Square Feet"] > 0.05


def test_a_constant_target_is_refused_before_anything_is_written(container_root, buckets, feature_store):  # noqa: F811
    feature_store()
    frame = messy_houses(200).assign(**{"Sale Price": "100000"})
    uri, version = upload_text(buckets, frame.to_csv(index=False), "incoming/constant.csv")
    with pytest.raises(SystemExit):
        ingest.main(argv(uri, version, target_column="Sale Price", max_rejected_rows=5))
    reason = (container_root / "output" / "message").read_text()
    assert "the target 'Sale Price' has one value (100000) in all 200 rows: there is nothing to learn" in reason
    assert not (container_root / "processing/output/manifest/manifest.json").exists()


def test_a_malformed_row_beyond_the_threshold_fails_the_step_naming_it(container_root, buckets, feature_store):  # noqa: F811
    feature_store()
    frame = messy_houses(400).drop(index=25).reset_index(drop=True)
    lines = frame.to_csv(index=False).splitlines()
    lines[350] = lines[350].rsplit(",", 2)[0]  # two fields short
    uri, version = upload_text(buckets, "\n".join(lines) + "\n", "incoming/short row.csv")
    with pytest.raises(SystemExit):
        ingest.main(argv(uri, version, target_column="Sale Price", ingestion_mode="OfflineStore"))
    reason = (container_root / "output" / "message").read_text()
    assert "ingest rejected 1 of 399 rows (at most 0 allowed" in reason
    assert "row 349 (line 351 if the file has no blank lines): the row has 5 fields, the header has 7" in reason


def test_no_header_row_is_named_as_such(container_root, buckets, feature_store):  # noqa: F811
    feature_store()
    uri, version = upload_text(buckets, "1,2,3\n4,5,6\n", "incoming/numbers.csv")
    with pytest.raises(SystemExit):
        ingest.main(argv(uri, version, target_column="PRICE"))
    assert "no header row" in (container_root / "output" / "message").read_text()


def test_a_streamed_file_is_never_read_whole(container_root, buckets, monkeypatch):  # noqa: F811
    """The object reaches disk in blocks and rows are read in chunks: no read of the whole body."""
    frame = messy_houses(300)
    uri, version = upload_text(buckets, frame.to_csv(index=False), "incoming/stream.csv")
    reads = []
    body = ingest.open_csv_object(buckets, uri, version)
    original = body.read

    def read(amount=None):
        reads.append(amount)
        return original(amount)

    body.read = read
    path = container_root / "spooled.csv"
    container_root.mkdir(parents=True)
    assert dataset_schema.spool(body, path, block=1000) == len(frame.to_csv(index=False).encode())
    assert None not in reads and len(reads) > 5
    chunks = list(dataset_schema.CsvFile(path, uri).chunks(rows=50))
    assert [len(c.frame) for c in chunks] == [50] * 6
    assert pd.concat([c.frame for c in chunks]).index.tolist() == list(range(300))


def test_rows_are_decided_alike_by_intake_rules_and_both_ingest_paths():
    frame = messy_houses(120)
    text = malformed_text(frame, 100)
    csv_file = dataset_schema.CsvFile(text.encode(), "s3://b/k.csv")
    schema, total = dataset_schema.infer_schema(csv_file, "Sale Price")
    assert total == 120
    chunk = next(csv_file.chunks())
    rows, by_row = dataset_schema.prepare_rows(chunk, schema)
    prepared, by_column = dataset_schema.prepare_columns(chunk, schema)
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    verdicts = [csv_rules.row_verdict(fields, header, header.index("Sale Price")) for fields in reader]
    assert {n for n, _, _ in by_row.rejected} == {n for n, v in enumerate(verdicts) if not v.kept and not v.dropped}
    assert {n for n, _, _ in by_row.dropped} == {n for n, v in enumerate(verdicts) if v.dropped}
    assert sorted(by_row.rejected) == sorted(by_column.rejected) and by_row.dropped == by_column.dropped
    assert [n for n, _ in rows] == prepared.row_numbers.tolist() == [n for n, v in enumerate(verdicts) if v.kept]


def test_a_column_of_only_missing_cells_is_still_a_feature():
    text = "PRICE,empty\n" + "".join(f"{i},\n" for i in range(10))
    schema, _ = dataset_schema.infer_schema(dataset_schema.CsvFile(text.encode(), "s3://b/k.csv"), "PRICE")
    assert schema.types == {"PRICE": "Integral", "empty": "Fractional"}


def test_a_text_column_is_refused_naming_it():
    text = "PRICE,City\n" + "".join(f"{i},Seattle\n" for i in range(10))
    with pytest.raises(common.JobFailure, match=r"text columns: 'City' \(e.g. 'Seattle'\)"):
        dataset_schema.infer_schema(dataset_schema.CsvFile(text.encode(), "s3://b/k.csv"), "PRICE")


TRICKY_CELLS = ["1", " -2.5 ", "1e3", ".5", "5.", "+3", "007", "1E5", "1e999", "-1e400", "inf", "NaN", " NA ", "",
                "\u3000 5 \u3000", "\x1f7\x1f", "\xa0", "٣", "1_000", "0x10", "12345678901234567890",
                "-9223372036854775808", "9223372036854775807", "9223372036854775808", "+0", "3 m²", "null", "#N/A"]


def test_the_column_kernels_read_every_cell_as_csv_rules_does():
    """The ingest step's Arrow kernels (CellKinds) and intake's csv_rules.parse_cell agree cell by cell."""
    cells = dataset_schema.CellKinds.of(pd.Series(TRICKY_CELLS, dtype=object))
    for index, text in enumerate(TRICKY_CELLS):
        cell = csv_rules.parse_cell(text)
        assert cells.missing[index] == (cell.kind == csv_rules.MISSING), text
        assert cells.numeric[index] == cell.is_number, text
        if cell.is_number:
            assert cells.values[index] == cell.value and cells.integral[index] == cell.integral, text
    integral = cells.integral.copy()
    assert cells.integers(integral).tolist() == [int(t.strip()) for t, i in zip(TRICKY_CELLS, integral) if i]
