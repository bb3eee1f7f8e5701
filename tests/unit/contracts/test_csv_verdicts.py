"""Property: intake's verdict on a CSV equals what the pipeline then does with it.

Generated CSVs (odd names, NA spellings, infinities, text, huge numbers, ragged rows, blank
targets) are judged by intake (`mlops_shared.csv_validation`, on the whole file as its sample) and
carried through the jobs' own code in-process: the ingest step's reading, schema and row preparation
(`jobs.dataset_schema`), Preprocess's scaler (`jobs.scaling`) and a real XGBoost fit. Accepted ⇒
it trains to finite predictions and strict-JSON artifacts; refused ⇒ a step would have failed (or
the refusal is intake's own minimum row count, counted the same way). A full step run per example
would take ~30 s; tests/integration and tests/e2e carry examples through the real steps.
"""
from __future__ import annotations

import csv
import os
import io
import json

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import common, dataset_schema, scaling
from mlops_shared import csv_rules
from mlops_shared.csv_validation import validate_csv_sample

MIN_ROWS = 5
MAX_REJECTED = 2
EXAMPLES = int(os.environ.get("CSV_VERDICT_EXAMPLES", "150"))  # bounded in make test

NAMES = st.one_of(
    st.sampled_from(["PRICE", "Sale Price", "Lot (acres)", "größe_m²", "year", "record_id", "price", "Price",
                     " padded ", "a.b", "prediction", "x" * 70, "1", "2.5", ""]),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), min_size=1, max_size=12),
)
NUMBERS = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr))
ODD_CELLS = st.sampled_from(["", " ", "NaN", "NA", "null", "n/a", "inf", "-inf", "1e999", "1e300", "-1e300", "abc",
                             "1_000", "0x10", " 7 ", "+3", ".5", "1e39"])


@st.composite
def cells(draw):
    """Mostly numbers, now and then a cell people's files have (missing, infinite, text, huge)."""
    return draw(ODD_CELLS) if draw(st.integers(0, 11)) == 0 else draw(NUMBERS)


@st.composite
def csv_files(draw):
    width = draw(st.integers(2, 5))
    if draw(st.integers(0, 5)) == 0:  # now and then names that may collide or be empty
        header = draw(st.lists(NAMES, min_size=width, max_size=width))
    else:
        header = draw(st.lists(NAMES, min_size=width, max_size=width, unique_by=lambda name: name.strip())
                      .filter(lambda names: all(name.strip() for name in names)))
    target_index = draw(st.integers(0, width - 1))
    rows = []
    for _ in range(draw(st.integers(2, 30))):
        row = draw(st.lists(cells(), min_size=width, max_size=width))
        if draw(st.integers(0, 30)) == 0:  # now and then a row with a field too many or too few
            row = row[:-1] if draw(st.booleans()) else [*row, "1"]
        rows.append(row)
    if draw(st.integers(0, 7)) == 0:  # a target with one value
        for row in rows:
            if target_index < len(row):
                row[target_index] = "5"
    if draw(st.integers(0, 7)) == 0:  # a text column
        column = draw(st.integers(0, width - 1))
        for row in rows:
            if column < len(row):
                row[column] = "Seattle"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8"), header[target_index].strip() or "PRICE"


def pipeline_outcome(data: bytes, target: str) -> tuple[bool, str, int]:
    """(trains, why not, rows kept) by the jobs' own code."""
    try:
        csv_file = dataset_schema.CsvFile(data, "s3://b/k.csv")
        schema, _ = dataset_schema.infer_schema(csv_file, target)
        chunks = list(csv_file.chunks())
        prepared = [dataset_schema.prepare_columns(chunk, schema) for chunk in chunks]
        # The PutRecord path decides alike.
        for chunk, (columns, by_column) in zip(chunks, prepared):
            rows, by_row = dataset_schema.prepare_rows(chunk, schema)
            assert sorted(by_row.rejected) == sorted(by_column.rejected) and by_row.dropped == by_column.dropped
            assert [n for n, _ in rows] == columns.row_numbers.tolist()
    except common.JobFailure as failure:
        return False, str(failure), 0
    rejected = sum(len(outcome.rejected) for _, outcome in prepared)
    kept = sum(len(columns.row_numbers) for columns, _ in prepared)
    if rejected > MAX_REJECTED:
        return False, f"{rejected} rejected rows", kept
    if kept == 0:
        return False, "no row kept", 0
    # Preprocess: the user's names, the target apart, the scaler, then XGBoost on the scaled rows.
    features = [f for f in schema.feature_names if f != schema.target_feature]
    matrix = np.column_stack([
        np.concatenate([np.asarray(c.values[f].to_numpy(zero_copy_only=False), dtype=float) for c, _ in prepared])
        for f in features])
    label = np.concatenate([np.asarray(c.values[schema.target_feature].to_numpy(zero_copy_only=False), dtype=float)
                            for c, _ in prepared])
    if len(set(label.tolist())) < csv_rules.MIN_DISTINCT_TARGET_VALUES:
        return False, "constant target among kept rows", kept
    mean, scale, _ = scaling.merge_moments([scaling.batch_moments(matrix)], len(features))
    json.dumps({"mean": mean.tolist(), "scale": scale.tolist()}, allow_nan=False)  # strict JSON
    scaled = scaling.standardize(matrix, mean, scale)
    assert np.isfinite(scaled[~np.isnan(matrix)]).all()
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(scaled, label=label), num_boost_round=2)
    predictions = booster.predict(xgb.DMatrix(scaled))
    assert np.isfinite(predictions).all()
    return True, "", kept


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_intake_accepts_exactly_what_the_pipeline_trains_on(case):
    data, target = case
    verdict = validate_csv_sample(data, object_size=len(data), target_column=target, min_data_rows=MIN_ROWS,
                                  max_rejected_rows=MAX_REJECTED)
    trains, why, kept = pipeline_outcome(data, target)
    code = verdict.issue.code if verdict.issue else None
    if code == "too_few_rows":
        # Intake's own minimum, over the rows the pipeline would keep.
        assert kept < MIN_ROWS, (kept, why)
        return
    assert verdict.ok == trains, (code, verdict.issue and verdict.issue.message, why, data[:400])
    if verdict.issue:
        assert verdict.issue.fix and verdict.issue.message


@pytest.mark.parametrize("data, target", [
    (b"PRICE,x\n" + b"".join(b"%d,%d\n" % (i, i % 3) for i in range(20)), "PRICE"),
    (b"Sale Price,Lot (acres)\n" + b"".join(b"%d,\n" % i for i in range(20)), "Sale Price"),
    (b"1,2\n3,4\n", "PRICE"),
])
def test_the_property_holds_for_known_examples(data, target):
    test_intake_accepts_exactly_what_the_pipeline_trains_on.hypothesis.inner_test((data, target))
