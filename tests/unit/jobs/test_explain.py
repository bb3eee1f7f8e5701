"""Explanations on request: `CustomAttributes: explain=true` against a real model server on 127.0.0.1."""
from __future__ import annotations

import csv
import http.client
import io
import json
import threading

import numpy as np
import pytest
import xgboost as xgb

from jobs.explain import contributions, explanations, wants_explanation
from tests.model_artifacts import FEATURES, expected_predictions, train_model_dir

# The user's own column names, one of them `bias`: the bias term must not collide with it.
NAMES = ["Year built", "Square Feet", "bias", "Bathrooms", "Lot (acres)", "Garage", "Front porch", "Deck"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("explain-model")
    result = train_model_dir(model_dir)
    document = json.loads((model_dir / "preprocessor.json").read_text())
    document["feature_order"] = NAMES
    (model_dir / "preprocessor.json").write_text(json.dumps(document))
    result["model_dir"] = model_dir
    return result


@pytest.fixture(scope="module")
def server(trained):
    from jobs.serve import build_server

    srv = build_server(trained["model_dir"], "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()


def invoke(port, body: bytes, content_type: str, custom_attributes: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": content_type}
        if custom_attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        conn.request("POST", "/invocations", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def request_bodies(trained):
    """The same five rows (two with a missing value) as JSON records, CSV with a header, CSV without,
    and a .npy array (NaN where missing)."""
    rows = trained["test"].iloc[:5]
    records = [dict(zip(NAMES, (float(row[f]) for f in FEATURES))) for _, row in rows.iterrows()]
    records[1]["Square Feet"] = None
    records[3]["Lot (acres)"] = None
    with_header, without_header = io.StringIO(), io.StringIO()
    csv.writer(with_header).writerow(NAMES)
    for record in records:
        values = ["" if v is None else v for v in record.values()]
        csv.writer(with_header).writerow(values)
        csv.writer(without_header).writerow(values)
    as_nan = rows.copy()
    as_nan.loc[as_nan.index[1], "SQUARE_FEET"] = np.nan
    as_nan.loc[as_nan.index[3], "LOT_ACRES"] = np.nan
    npy = io.BytesIO()
    np.save(npy, as_nan[FEATURES].to_numpy(dtype=float), allow_pickle=False)
    bodies = {"json": (json.dumps(records).encode(), "application/json"),
              "csv-header": (with_header.getvalue().encode(), "text/csv"),
              "csv": (without_header.getvalue().encode(), "text/csv"),
              "npy": (npy.getvalue(), "application/x-npy")}
    return bodies, as_nan


@pytest.mark.parametrize("kind", ["json", "csv-header", "csv", "npy"])
def test_contributions_plus_bias_are_the_prediction(server, trained, kind):
    bodies, rows = request_bodies(trained)
    body, content_type = bodies[kind]
    status, answer = invoke(server, body, content_type, "explain=true")
    assert status == 200, answer
    expected = expected_predictions(trained, rows)
    assert answer["predictions"] == pytest.approx(expected.tolist(), rel=1e-5)
    assert len(answer["explanations"]) == len(expected)
    for prediction, explanation in zip(answer["predictions"], answer["explanations"]):
        assert list(explanation["contributions"]) == NAMES  # the user's names, the model's order
        total = explanation["bias"] + sum(explanation["contributions"].values())
        magnitude = max(abs(v) for v in [explanation["bias"], *explanation["contributions"].values()])
        assert total == pytest.approx(prediction, abs=1e-5 * magnitude)
    # Independent of the server: tree SHAP of the same scaled rows, computed here.
    scaled = (rows[FEATURES].to_numpy(dtype=float) - trained["mean"]) / trained["scale"]
    reference = trained["booster"].predict(xgb.DMatrix(scaled), pred_contribs=True)
    served = np.array([[*e["contributions"].values(), e["bias"]] for e in answer["explanations"]])
    np.testing.assert_allclose(served, reference, rtol=1e-5, atol=1e-3)


def test_the_plain_path_answers_predictions_only(server, trained):
    bodies, rows = request_bodies(trained)
    for attributes in (None, "explain=false", "trace=abc"):
        status, answer = invoke(server, *bodies["json"], attributes)
        assert status == 200 and list(answer) == ["predictions"]
        assert answer["predictions"] == pytest.approx(expected_predictions(trained, rows).tolist(), rel=1e-5)


def test_an_explained_bad_request_is_the_same_clear_400(server):
    status, answer = invoke(server, json.dumps({"Square Feet": 1}).encode(), "application/json", "explain=true")
    assert status == 400 and "missing field" in answer["error"]


@pytest.mark.parametrize("attributes, wanted", [
    ("explain=true", True), ("Explain=TRUE", True), ("trace=1;explain=true", True), ("a=b, explain = true", True),
    ("explain=false", False), ("explain", False), ("explainer=true", False), ("", False), (None, False),
])
def test_the_switch(attributes, wanted):
    assert wants_explanation(attributes) is wanted


def test_explanations_are_shaped_by_the_feature_order():
    values = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.5]])
    assert explanations(values, ["a", "bias"]) == [
        {"bias": 0.5, "contributions": {"a": 1.0, "bias": 2.0}},
        {"bias": 0.5, "contributions": {"a": 3.0, "bias": -1.0}},
    ]
    with pytest.raises(ValueError, match="3 features"):
        explanations(values, ["a", "b", "c"])


def test_scaling_does_not_change_the_contributions(trained):
    """Why the doc may call them raw-space contributions: a model trained on affinely scaled
    features splits the same rows the same way, so its SHAP values equal those of the model
    trained on the raw features."""
    data = trained["test"]
    raw = data[FEATURES].to_numpy(dtype=float)
    mean, scale = raw.mean(axis=0), raw.std(axis=0) + 1.0
    params = {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.3, "nthread": 1, "tree_method": "exact"}
    on_raw = xgb.train(params, xgb.DMatrix(raw, label=data["PRICE"]), num_boost_round=10)
    on_scaled = xgb.train(params, xgb.DMatrix((raw - mean) / scale, label=data["PRICE"]), num_boost_round=10)
    np.testing.assert_allclose(contributions(on_scaled, (raw - mean) / scale), contributions(on_raw, raw),
                               rtol=1e-4, atol=1e-2)
