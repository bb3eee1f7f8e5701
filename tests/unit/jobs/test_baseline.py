"""Baseline statistics and the drift statistics computed against them (jobs/baseline.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jobs import baseline


def test_psi_matches_a_hand_computed_value():
    expected = [25, 25, 25, 25]
    actual = [10, 20, 30, 40]
    shares_e = np.array([0.25] * 4)
    shares_a = np.array([0.1, 0.2, 0.3, 0.4])
    by_hand = float(np.sum((shares_a - shares_e) * np.log(shares_a / shares_e)))
    assert baseline.psi(expected, actual) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.2282, abs=1e-4)


def test_psi_is_zero_for_equal_shares_and_symmetric():
    assert baseline.psi([10, 20, 30], [100, 200, 300]) == pytest.approx(0.0)
    assert baseline.psi([1, 2, 7], [5, 3, 2]) == pytest.approx(baseline.psi([5, 3, 2], [1, 2, 7]))


def test_an_empty_bin_counts_as_epsilon_not_infinity():
    value = baseline.psi([50, 50], [100, 0])
    a, e = np.array([1.0, baseline.PSI_EPSILON]), np.array([0.5, 0.5])
    assert math.isfinite(value)
    assert value == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_psi_of_an_empty_side_is_zero_and_mismatched_bins_are_refused():
    assert baseline.psi([1, 2], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        baseline.psi([1, 2], [1, 2, 3])


def test_continuous_columns_get_decile_bins_of_about_a_tenth_each():
    values = np.random.default_rng(0).normal(3000, 750, 20_000)
    edges = baseline.bin_edges(values)
    counts = baseline.bin_counts(values, edges)
    assert len(edges) == 11 and edges[0] == values.min() and edges[-1] == values.max()
    assert counts.sum() == values.size
    assert np.all(np.abs(counts / values.size - 0.1) < 0.002)


def test_few_distinct_values_keep_a_bin_each():
    values = np.array([2, 3, 4, 5, 6] * 100 + [2] * 50, dtype=float)
    edges = baseline.bin_edges(values)
    assert edges == [2.0, 2.5, 3.5, 4.5, 5.5, 6.0]
    assert baseline.bin_counts(values, edges).tolist() == [150, 100, 100, 100, 100]


def test_values_outside_the_range_fall_into_the_outer_bins():
    edges = [0.0, 1.0, 2.0, 3.0]
    assert baseline.bin_counts(np.array([-5, 0.5, 1.0, 2.5, 99, np.nan]), edges).tolist() == [3, 0, 2]


def test_shifted_data_has_a_large_psi_and_unshifted_a_small_one():
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, 10_000)
    edges = baseline.bin_edges(train)
    reference = baseline.bin_counts(train, edges)
    same = baseline.bin_counts(rng.normal(0, 1, 2_000), edges)
    shifted = baseline.bin_counts(rng.normal(1, 1, 2_000), edges)
    assert baseline.psi(reference, same) < 0.05
    assert baseline.psi(reference, shifted) > 0.5


def test_the_document_covers_every_column_with_missing_values_and_the_target():
    frame = pd.DataFrame({
        "Lot (acres)": [1.0, None, 3.0, 4.0],
        "flag": [0, 1, 1, 0],
        "PRICE": [10.0, 20.0, 30.0, 40.0],
    })
    document = baseline.baseline_statistics(frame, list(frame.columns), "PRICE", dataset_version="v1")
    assert document["schema"] == baseline.SCHEMA and document["version"] == baseline.SCHEMA_VERSION
    assert document["rows"] == 4 and document["target"] == "PRICE" and document["dataset_version"] == "v1"
    assert document["feature_order"] == ["Lot (acres)", "flag"]
    columns = baseline.parse_baseline(json.loads(json.dumps(document, allow_nan=False)))
    lot = columns["Lot (acres)"]
    assert (lot["count"], lot["missing"], lot["missing_share"]) == (3, 1, 0.25)
    assert (lot["min"], lot["max"]) == (1.0, 4.0)
    assert sum(lot["histogram"]["bin_counts"]) == 3
    assert columns["flag"]["histogram"] == {"bin_edges": [0.0, 0.5, 1.0], "bin_counts": [2, 2]}
    assert columns["PRICE"]["quantiles"]["0.5"] == pytest.approx(25.0)


def test_blocks_of_pyarrow_tables_read_like_one_frame():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(size=500)})
    whole = baseline.baseline_statistics(frame, ["x", "y"], "y")
    blocks = [pa.Table.from_pandas(frame.iloc[:200]), pa.Table.from_pandas(frame.iloc[200:])]
    assert baseline.baseline_statistics(blocks, ["x", "y"], "y") == whole


def test_a_column_without_values_and_a_constant_column():
    frame = pd.DataFrame({"empty": [np.nan, np.nan], "constant": [7.0, 7.0], "t": [1.0, 2.0]})
    columns = baseline.parse_baseline(baseline.baseline_statistics(frame, ["empty", "constant", "t"], "t"))
    assert columns["empty"]["missing_share"] == 1.0 and columns["empty"]["histogram"]["bin_edges"] == []
    assert columns["constant"]["histogram"] == {"bin_edges": [7.0, 7.0], "bin_counts": [2]}


def test_documents_that_break_the_schema_are_refused():
    with pytest.raises(baseline.BaselineError, match="not a baseline"):
        baseline.parse_baseline({"columns": []})
    good = baseline.baseline_statistics(pd.DataFrame({"x": [1.0, 2.0, 3.0], "t": [1.0, 2.0, 3.0]}), ["x", "t"], "t")
    good["columns"][0]["histogram"]["bin_counts"].append(1)
    with pytest.raises(baseline.BaselineError, match="bin edges but"):
        baseline.parse_baseline(good)


def test_evaluate_puts_the_baseline_next_to_evaluation_json(tmp_path, monkeypatch):
    from jobs import common, evaluate

    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path))
    out = common.processing_output("evaluation")
    assert evaluate.copy_baseline(out) is None  # a definition without the input: nothing to copy
    source = tmp_path / "processing" / "input" / "preprocessor"
    source.mkdir(parents=True)
    with pytest.raises(common.JobFailure, match="holds no baseline_statistics.json"):
        evaluate.copy_baseline(out)
    document = baseline.baseline_statistics(pd.DataFrame({"x": [1.0, 2.0], "t": [3.0, 4.0]}), ["x", "t"], "t")
    baseline.write_baseline(source, document)
    copied = evaluate.copy_baseline(out)
    assert copied == out / baseline.BASELINE_FILE and json.loads(copied.read_text()) == document
