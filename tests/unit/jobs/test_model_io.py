"""jobs.model_io: `ServingModel.predict_raw` / `check_raw` on DataFrames and records — the numeric
fast path and the per-column path give the same values, and bad input keeps its precise message."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.model_io import ModelInputError, load_model_dir
from tests.model_artifacts import FEATURES, expected_predictions, train_model_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    result = train_model_dir(model_dir)
    result["model"] = load_model_dir(model_dir)
    return result


def test_numeric_frames_records_and_text_frames_predict_the_same(trained):
    model, rows = trained["model"], trained["test"]  # ints and floats, plus the PRICE target
    expected = expected_predictions(trained, rows)
    as_text = rows[FEATURES].astype(str)  # the per-column path: pd.to_numeric on every column
    for raw in (rows, rows[list(reversed(FEATURES))], rows.to_dict(orient="records"), as_text):
        np.testing.assert_allclose(model.predict_raw(raw), expected, rtol=1e-6)


def test_check_raw_keeps_the_index_and_gives_float_columns_in_feature_order(trained):
    model = trained["model"]
    rows = trained["test"].iloc[:7].set_index(pd.Index(list("abcdefg")))
    checked = model.check_raw(rows[list(reversed(FEATURES))])
    assert list(checked.columns) == FEATURES
    assert list(checked.index) == list("abcdefg")
    assert all(dtype == np.float64 for dtype in checked.dtypes)
    np.testing.assert_array_equal(checked.to_numpy(), rows[FEATURES].to_numpy(dtype=float))


def test_bool_and_nullable_integer_columns_are_numbers(trained):
    model, rows = trained["model"], trained["test"].iloc[:20].copy()
    rows["DECK"] = rows["DECK"].astype(bool)
    rows["GARAGE_SPACES"] = rows["GARAGE_SPACES"].astype("Int64")
    np.testing.assert_allclose(model.predict_raw(rows), expected_predictions(trained, rows.astype({"DECK": float})),
                               rtol=1e-6)


@pytest.mark.parametrize("column, bad, shown", [
    ("LOT_ACRES", np.inf, r"np.float64\(inf\)"),
    ("SQUARE_FEET", "big", "'big'"),
    ("SQUARE_FEET", "inf", "'inf'"),
])
def test_a_bad_value_in_a_frame_names_its_field_and_record(trained, column, bad, shown):
    model = trained["model"]
    rows = trained["test"].iloc[:50].copy()
    if isinstance(bad, str):
        rows[column] = rows[column].astype(object)
    rows.loc[rows.index[37], column] = bad
    with pytest.raises(ModelInputError,
                       match=f"field {column} must be a finite number or missing \\(null\\); record 37 has {shown}"):
        model.predict_raw(rows)


@pytest.mark.parametrize("column, missing", [
    ("LOT_ACRES", np.nan), ("GARAGE_SPACES", pd.NA), ("SQUARE_FEET", None), ("SQUARE_FEET", ""), ("SQUARE_FEET", "NA"),
])
def test_a_missing_value_is_scored_as_xgboost_scores_missing(trained, column, missing):
    """XGBoost learned a default direction for missing values: the model scores them, exactly as
    the booster does for NaN."""
    model = trained["model"]
    rows = trained["test"].iloc[:50].copy()
    if missing is pd.NA:
        rows[column] = rows[column].astype("Int64")
    elif not isinstance(missing, float):
        rows[column] = rows[column].astype(object)
    rows.loc[rows.index[37], column] = missing
    predictions = model.predict_raw(rows)
    assert np.isfinite(predictions).all()
    as_nan = trained["test"].iloc[:50].copy().astype({column: float})
    as_nan.loc[as_nan.index[37], column] = np.nan
    np.testing.assert_allclose(predictions, expected_predictions(trained, as_nan), rtol=1e-6)


def test_predict_scaled_in_place_is_the_dmatrix_prediction_bit_for_bit(trained):
    """`predict_scaled` predicts in place (no DMatrix); score, evaluate and the endpoint rely on it
    answering exactly what `Booster.predict` on a DMatrix answers, missing values included."""
    import xgboost as xgb

    model = trained["model"]
    scaled = model.preprocessor.scale_frame(trained["test"]).to_numpy(dtype=float, copy=True)
    scaled[::7, 2] = np.nan
    reference = model.booster.predict(xgb.DMatrix(scaled, feature_names=model.booster.feature_names))
    for label, matrix in {"C order": scaled, "Fortran order": np.asfortranarray(scaled),
                          "a column selection": scaled[:, ::-1][:, ::-1], "one row": scaled[:1]}.items():
        predicted = model.predict_scaled(matrix)
        assert predicted.dtype == reference.dtype, label
        assert predicted.tobytes() == reference[:len(matrix)].tobytes(), label
    frame = pd.DataFrame(scaled, columns=FEATURES)[list(reversed(FEATURES))]
    assert model.predict_scaled(frame).tobytes() == reference.tobytes()


def test_predict_scaled_refuses_a_matrix_of_another_width(trained):
    model = trained["model"]
    with pytest.raises(ModelInputError, match=f"expected a matrix of {len(FEATURES)} feature columns"):
        model.predict_scaled(np.zeros((2, len(FEATURES) - 1)))
