"""jobs.evaluate: metrics, evaluation.json, plots, and the champion comparison against model
packages registered in moto."""
from __future__ import annotations

import json
import math
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from jobs import evaluate
from jobs.model_io import create_model_tar, load_model_dir
from local.cli.datagen import TARGET, generate_housing

FEATURES = ["YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS", "NUM_BATHROOMS", "LOT_ACRES",
            "GARAGE_SPACES", "FRONT_PORCH", "DECK"]
GROUP = "housing-models"
BUCKET = "models"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path))
    return tmp_path


def build_model(model_dir: Path, data: pd.DataFrame, features=FEATURES, price_factor=1.0, rounds=60) -> dict:
    """A real booster trained on scaled features with names, as jobs.train writes it."""
    mean = data[features].mean().to_numpy()
    scale = data[features].std(ddof=0).to_numpy()
    scaled = pd.DataFrame((data[features].to_numpy(dtype=float) - mean) / scale, columns=features)
    booster = xgb.train({"objective": "reg:squarederror", "max_depth": 5, "eta": 0.3, "nthread": 1},
                        xgb.DMatrix(scaled, label=data[TARGET] * price_factor), num_boost_round=rounds)
    model_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / "model.json"))
    (model_dir / "preprocessor.json").write_text(json.dumps(
        {"feature_order": features, "target": TARGET, "scaler": {"mean": mean.tolist(), "scale": scale.tolist()}}
    ))
    return {"mean": mean, "scale": scale, "booster": booster}


@pytest.fixture
def challenger(root):
    """The trained model as model.tar.gz and the scaled test split, where the pipeline mounts them."""
    data = generate_housing(2500, seed=21)
    train, test = data.iloc[:2000], data.iloc[2000:].reset_index(drop=True)
    built = build_model(root / "build" / "challenger", train)
    create_model_tar(root / "build" / "challenger", root / "processing/input/model/model.tar.gz")
    scaled = test.copy()
    scaled[FEATURES] = (test[FEATURES].to_numpy(dtype=float) - built["mean"]) / built["scale"]
    (root / "processing/input/test").mkdir(parents=True)
    scaled.iloc[:300].to_parquet(root / "processing/input/test/part-00000.parquet", index=False)
    scaled.iloc[300:].to_parquet(root / "processing/input/test/part-00001.parquet", index=False)
    return {"raw_test": test, **built}


def register(root: Path, name: str, data: pd.DataFrame, status: str, **build_args) -> str:
    """Uploads a model.tar.gz and registers it in the group with the given approval status."""
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    build_model(root / "build" / name, data, **build_args)
    archive = create_model_tar(root / "build" / name, root / "build" / f"{name}.tar.gz")
    s3.upload_file(str(archive), BUCKET, f"{name}/model.tar.gz")
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:1",
                            "ModelDataUrl": f"s3://{BUCKET}/{name}/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    return arn


@pytest.fixture
def registry(aws):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)


def run(root: Path, group: str | None = GROUP, tolerance: str = "0.05") -> dict:
    argv = ["--target-column", TARGET, "--rmse-threshold", "15000", "--champion-tolerance", tolerance]
    if group:
        argv += ["--model-package-group-name", group]
    assert evaluate.main(argv) == 0
    return json.loads((root / "processing/output/evaluation/evaluation.json").read_text())


# --------------------------------------------------------------------------- metrics
def test_regression_metrics_match_their_definitions():
    actual = np.array([10.0, 20.0, 30.0, 40.0])
    predicted = np.array([12.0, 18.0, 33.0, 40.0])
    metrics = evaluate.regression_metrics(actual, predicted)
    squared = np.array([4.0, 4.0, 9.0, 0.0])
    rmse = math.sqrt(squared.mean())
    assert metrics.rmse.value == pytest.approx(rmse)
    assert metrics.rmse.standard_deviation == pytest.approx(squared.std() / (2 * rmse * 2))
    assert metrics.mae.value == pytest.approx(7 / 4)
    assert metrics.mae.standard_deviation == pytest.approx(np.array([2, 2, 3, 0]).std() / 2)
    assert metrics.r2.value == pytest.approx(1 - 17 / 500)


# --------------------------------------------------------------------------- the step
def test_without_a_group_there_is_no_champion_and_the_limit_is_open(root, challenger):
    document = run(root, group=None)
    test = challenger["raw_test"]
    scaled = (test[FEATURES].to_numpy(dtype=float) - challenger["mean"]) / challenger["scale"]
    expected = challenger["booster"].predict(xgb.DMatrix(pd.DataFrame(scaled, columns=FEATURES)))
    rmse = math.sqrt(np.mean((expected - test[TARGET].to_numpy()) ** 2))
    metrics = document["regression_metrics"]
    assert metrics["rmse"]["value"] == pytest.approx(rmse, rel=1e-6)
    assert metrics["rmse"]["standard_deviation"] > 0
    assert metrics["mae"]["value"] <= metrics["rmse"]["value"]
    assert 0.9 < metrics["r2"]["value"] <= 1
    assert document["rows"]["test"] == len(test)
    assert set(document["feature_importance"]) == set(FEATURES)
    assert sum(document["feature_importance"].values()) == pytest.approx(1)
    assert max(document["feature_importance"], key=document["feature_importance"].get) == "SQUARE_FEET"
    assert document["champion"] is None
    assert document["gate"]["champion_rmse_limit"] == 1e308
    assert document["gate"]["rmse_threshold"] == 15000
    out = root / "processing/output/evaluation"
    for name in evaluate.PLOTS:
        content = (out / name).read_bytes()
        assert content.startswith(PNG_MAGIC) and len(content) > 5000, name
    assert document["plots"] == list(evaluate.PLOTS)


def test_the_smoke_sample_holds_raw_features_and_the_evaluated_predictions(root, challenger):
    document = run(root, group=None)
    sample = pd.read_csv(root / "processing/output/evaluation" / document["smoke_sample"])
    test = challenger["raw_test"].iloc[: len(sample)].reset_index(drop=True)
    assert len(sample) == min(evaluate.SMOKE_SAMPLE_ROWS, len(challenger["raw_test"]))
    # Raw units, as a caller of the endpoint sends them (not the scaled split).
    np.testing.assert_allclose(sample[FEATURES].to_numpy(), test[FEATURES].to_numpy(dtype=float), rtol=1e-9)
    scaled = (test[FEATURES].to_numpy(dtype=float) - challenger["mean"]) / challenger["scale"]
    expected = challenger["booster"].predict(xgb.DMatrix(pd.DataFrame(scaled, columns=FEATURES)))
    np.testing.assert_allclose(sample["prediction"].to_numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(sample[TARGET].to_numpy(), test[TARGET].to_numpy(dtype=float))


def test_a_group_without_approved_packages_or_a_missing_group_has_no_champion(root, challenger, registry):
    register(root, "pending", generate_housing(500, seed=2), "PendingManualApproval")
    assert run(root)["champion"] is None
    assert run(root, group="no-such-group")["champion"] is None


def test_the_latest_approved_package_is_scored_on_the_same_rows(root, challenger, registry):
    register(root, "old-champion", generate_housing(800, seed=31), "Approved")
    # A different scaler (other training rows) and a price 20% too high: a clearly worse model.
    champion_data = generate_housing(1500, seed=32)
    champion_arn = register(root, "champion", champion_data, "Approved", price_factor=1.2)
    register(root, "newer-but-rejected", generate_housing(500, seed=33), "Rejected")

    document = run(root, tolerance="0.1")
    champion = document["champion"]
    assert champion["model_package_arn"] == champion_arn
    assert champion["comparable"] is True

    # Independently: the champion's own artifact on the raw test rows.
    model = load_model_dir(root / "build" / "champion")
    test = challenger["raw_test"]
    expected = model.predict_raw(test[FEATURES])
    rmse = math.sqrt(np.mean((expected - test[TARGET].to_numpy()) ** 2))
    assert champion["rmse"] == pytest.approx(rmse, rel=1e-6)
    assert champion["rmse"] > document["regression_metrics"]["rmse"]["value"]
    assert document["gate"]["champion_rmse_limit"] == pytest.approx(rmse * 1.1, rel=1e-9)
    assert document["gate"]["passes_champion"] is True
    assert document["rows"]["champion_scored"] == len(test)


def test_a_champion_with_other_features_is_reported_but_does_not_gate(root, challenger, registry):
    data = generate_housing(800, seed=41)
    arn = register(root, "other-schema", data, "Approved", features=FEATURES[:-1])
    document = run(root)
    assert document["champion"]["model_package_arn"] == arn
    assert document["champion"]["comparable"] is False
    assert "DECK" in document["champion"]["reason"]
    assert document["gate"]["champion_rmse_limit"] == 1e308


def test_a_model_for_another_target_fails_the_step(root, challenger):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--target-column", "SALE_PRICE"])
    assert exit_info.value.code == 1
    assert "'PRICE'" in (root / "output/message").read_text()


# --------------------------------------------------------------------------- the shared model artifact
def test_predict_raw_checks_its_input_and_matches_the_scaled_path(root, challenger, tmp_path):
    from jobs.model_io import ModelInputError, extract_model_tar

    model = load_model_dir(extract_model_tar(root / "processing/input/model/model.tar.gz", tmp_path / "m"))
    test = challenger["raw_test"].iloc[:5]
    records = test[FEATURES].to_dict(orient="records")
    scaled = (test[FEATURES].to_numpy(dtype=float) - challenger["mean"]) / challenger["scale"]
    expected = challenger["booster"].predict(xgb.DMatrix(pd.DataFrame(scaled, columns=FEATURES)))
    np.testing.assert_allclose(model.predict_raw(records), expected, rtol=1e-6)
    np.testing.assert_allclose(model.predict_raw(test), expected, rtol=1e-6)  # target column ignored

    with pytest.raises(ModelInputError, match="missing fields: DECK"):
        model.predict_raw([{k: v for k, v in records[0].items() if k != "DECK"}])
    with pytest.raises(ModelInputError, match="unknown fields: POOL"):
        model.predict_raw([{**records[0], "POOL": 1}])
    with pytest.raises(ModelInputError, match=r"field LOT_ACRES must be a finite number or missing \(null\); record 1"):
        model.predict_raw([records[0], {**records[1], "LOT_ACRES": "big"}])
    with pytest.raises(ModelInputError, match="no records"):
        model.predict_raw([])


# --------------------------------------------------------------------------- the plots approvers read
@pytest.fixture
def drawn(monkeypatch):
    """The figures the step drew, by file name, read before they are saved and closed: each figure's
    axes as (title, x label, y label, legend labels, x tick labels, y tick labels, offset texts)."""
    seen: dict[str, list[dict]] = {}
    build = evaluate.build_figures

    def spy(*args, **kwargs):
        figures = build(*args, **kwargs)
        for name, fig in figures.items():
            fig.canvas.draw()  # tick labels and offset texts exist only once drawn
            seen[name] = [{
                "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
                "xticks": [t.get_text() for t in ax.get_xticklabels()],
                "yticks": [t.get_text() for t in ax.get_yticklabels()],
                "offsets": [ax.xaxis.get_offset_text().get_text(), ax.yaxis.get_offset_text().get_text()],
                "series": len(ax.collections) + len(ax.patches),
            } for ax in fig.axes]
        return figures

    monkeypatch.setattr(evaluate, "build_figures", spy)
    return seen


def legend_labels(drawn: dict, name: str) -> list[str]:
    return [label for ax in drawn[name] for label in ax["legend"]]


def test_the_plots_overlay_a_comparable_champion_labelled_with_both_rmses(root, challenger, registry, drawn):
    champion_arn = register(root, "champion", generate_housing(1500, seed=32), "Approved", price_factor=1.2)
    document = run(root)
    assert document["champion"]["model_package_arn"] == champion_arn
    version = boto3.client("sagemaker").describe_model_package(ModelPackageName=champion_arn)["ModelPackageVersion"]
    ours = evaluate.human_number(document["regression_metrics"]["rmse"]["value"])
    theirs = evaluate.human_number(document["champion"]["rmse"])
    for name in ("predicted_vs_actual.png", "residuals.png"):
        labels = legend_labels(drawn, name)
        assert f"challenger (RMSE {ours})" in labels, (name, labels)
        assert f"champion v{version} (RMSE {theirs})" in labels, (name, labels)
    assert not any("champion" in label for label in legend_labels(drawn, "feature_importance.png"))


def test_a_champion_that_is_not_comparable_is_not_drawn(root, challenger, registry, drawn):
    register(root, "other-schema", generate_housing(800, seed=41), "Approved", features=FEATURES[:-1])
    document = run(root)
    assert document["champion"]["comparable"] is False
    for name in evaluate.PLOTS:
        labels = legend_labels(drawn, name)
        assert labels and not any("champion" in label for label in labels), (name, labels)
    assert any(label.startswith("challenger (RMSE ") for label in legend_labels(drawn, "residuals.png"))


def test_the_plots_name_the_target_and_read_as_plain_numbers(root, challenger, drawn):
    run(root, group=None)
    scatter, = drawn["predicted_vs_actual.png"]
    assert scatter["xlabel"] == f"actual {TARGET}" and scatter["ylabel"] == f"predicted {TARGET}"
    assert TARGET in scatter["title"]
    residual_axes = drawn["residuals.png"]
    assert all(TARGET in ax["xlabel"] for ax in residual_axes)
    for name in ("predicted_vs_actual.png", "residuals.png"):
        for ax in drawn[name]:
            assert ax["offsets"] == ["", ""], "a 1e6-style offset above the axis"
            ticks = [t for t in ax["xticks"] + ax["yticks"] if t]
            assert ticks and not any("e+" in t or "e-" in t for t in ticks), ticks
    # Prices are hundreds of thousands: the value axes read in k (or M).
    assert any(t.endswith(("k", "M")) for t in scatter["xticks"] + scatter["yticks"])
    importance, = drawn["feature_importance.png"]
    assert any(t.endswith("%") for t in importance["xticks"])
    out = root / "processing/output/evaluation"
    for name in evaluate.PLOTS:
        assert 5000 < (out / name).stat().st_size < 150_000, name


def test_human_numbers():
    assert [evaluate.human_number(v) for v in (0, 5.5, 950, 12_345, 250_000, 1_234_567, -45_000)] == \
        ["0", "5.5", "950", "12.3k", "250k", "1.23M", "-45k"]


def test_many_rows_are_drawn_as_a_seeded_sample_and_the_png_stays_small(tmp_path):
    rng = np.random.default_rng(3)
    actual = rng.normal(500_000, 120_000, 50_000)
    predicted = actual + rng.normal(0, 15_000, actual.size)
    champion = evaluate.ChampionPredictions(predicted=actual + rng.normal(0, 25_000, actual.size), rmse=25_000.0,
                                            version=3)
    names = evaluate.write_plots(tmp_path, actual, predicted, {"A": 0.7, "B": 0.3}, "PRICE", champion)
    assert names == list(evaluate.PLOTS)
    for name in names:
        assert (tmp_path / name).stat().st_size < 150_000, name
