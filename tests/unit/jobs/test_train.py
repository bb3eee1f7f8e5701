"""jobs.train: hyperparameter parsing, the Ray role's defaults, and real xgboost-ray training under
the SageMaker training contract, with the run recorded in SageMaker Experiments (moto)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import numpy as np
import pytest

from jobs import common, train
from jobs.model_io import load_model_dir
from local.cli.datagen import TARGET, generate_housing

FEATURES = ["YEAR_BUILT", "SQUARE_FEET", "NUM_BEDROOMS", "NUM_BATHROOMS", "LOT_ACRES",
            "GARAGE_SPACES", "FRONT_PORCH", "DECK"]
METRIC_LINE = re.compile(r"METRIC validation:(rmse|mae)=([0-9.eE+-]+)")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TRAINING_JOB_NAME", "ray-mlops-train-0001")
    return tmp_path


def write_channels(root: Path, rows: int, hyperparameters: dict[str, str], seed: int = 5) -> dict:
    """Scaled train/validation Parquet + preprocessor.json, laid out as SageMaker mounts channels."""
    data = generate_housing(rows, seed)
    cut = int(rows * 0.8)
    train_raw, valid_raw = data.iloc[:cut], data.iloc[cut:]
    mean = train_raw[FEATURES].mean().to_numpy()
    scale = train_raw[FEATURES].std(ddof=0).to_numpy()
    for name, frame in (("train", train_raw), ("validation", valid_raw)):
        scaled = frame.copy()
        scaled[FEATURES] = (frame[FEATURES].to_numpy(dtype=float) - mean) / scale
        channel = root / "input" / "data" / name
        channel.mkdir(parents=True)
        scaled.to_parquet(channel / "part-00000.parquet", index=False)
    preprocessor = {"feature_order": FEATURES, "target": TARGET,
                    "scaler": {"mean": mean.tolist(), "scale": scale.tolist()}, "dataset_version": "v1"}
    (root / "input" / "data" / "preprocessor").mkdir(parents=True)
    (root / "input" / "data" / "preprocessor" / "preprocessor.json").write_text(json.dumps(preprocessor))
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return {"valid_raw": valid_raw.reset_index(drop=True)}


def run_main(argv) -> int:
    try:
        return train.main(argv)
    except SystemExit as exit_:
        return exit_.code


def printed_metrics(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in METRIC_LINE.findall(text)}


# --------------------------------------------------------------------------- pure parts
def test_hyperparameters_arrive_as_strings_and_are_typed():
    typed = train.parse_hyperparameters({
        "max_depth": "5", "eta": "0.25", "min_child_weight": "3", "subsample": "0.8",
        "num_round": "100", "objective": '"reg:squarederror"', "tree_method": "approx", "seed": "7",
        "target_column": "PRICE", "colsample_bytree": "0.9",
    })
    assert typed["max_depth"] == 5 and typed["num_round"] == 100 and typed["seed"] == 7
    assert typed["eta"] == 0.25 and typed["subsample"] == 0.8 and typed["min_child_weight"] == 3.0
    assert typed["objective"] == "reg:squarederror" and typed["target_column"] == "PRICE"
    assert typed["colsample_bytree"] == "0.9"  # unknown: passed on to XGBoost as given


def test_what_sagemaker_adds_to_the_hyperparameters_never_reaches_xgboost():
    """A tuning job adds `_tuning_objective_metric` (the local executor does too); framework
    estimators add `sagemaker_*`. XGBoost would warn about or reject them."""
    typed = train.parse_hyperparameters({"max_depth": "4", "_tuning_objective_metric": "validation:rmse",
                                         "sagemaker_program": "train.py", "sagemaker_region": '"us-east-1"'})
    assert typed["max_depth"] == 4
    assert not [name for name in typed if name.startswith(("_", "sagemaker_"))]


def test_missing_hyperparameters_get_the_reference_defaults():
    typed = train.parse_hyperparameters({})
    assert typed["num_round"] == 100 and typed["objective"] == "reg:squarederror"
    assert typed["tree_method"] == "approx"


@pytest.mark.parametrize("raw, message", [
    ({"max_depth": "deep"}, "max_depth must be int"),
    ({"subsample": "1.5"}, "subsample must be in"),
    ({"num_round": "0"}, "num_round must be positive"),
    ({"eta": "-1"}, "eta must be > 0"),
])
def test_bad_hyperparameters_fail_clearly(raw, message):
    with pytest.raises(common.JobFailure, match=message):
        train.parse_hyperparameters(raw)


@pytest.mark.parametrize("nodes, cpus, sharing, expected", [
    (1, 2, 1, {"num_actors": 1, "cpus_per_actor": 2}),  # a lone job uses the whole machine
    (1, 2, 2, {"num_actors": 1, "cpus_per_actor": 1}),  # two trials side by side: half each
    (1, 8, 2, {"num_actors": 1, "cpus_per_actor": 4}),
    (3, 12, 1, {"num_actors": 3, "cpus_per_actor": 4}),
    (0, 0, 1, {"num_actors": 1, "cpus_per_actor": 1}),
])
def test_default_ray_params_put_one_actor_per_node_with_its_cpus(nodes, cpus, sharing, expected):
    assert train.default_ray_params(nodes, cpus, sharing) == expected


def test_jobs_per_node_comes_from_the_executor_and_fails_clearly():
    assert train.jobs_per_node({}) == 1
    assert train.jobs_per_node({common.JOBS_PER_NODE_VARIABLE: "2"}) == 2
    with pytest.raises(common.JobFailure, match="must be an integer"):
        train.jobs_per_node({common.JOBS_PER_NODE_VARIABLE: "two"})


class _no_ray:
    """Stands in for `ray_cluster.connect` where the job must fail before it needs Ray."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_missing_channel_fails_with_a_reason_and_a_failed_trial_component(aws, root, monkeypatch):
    # Ray is not needed to find out that the data is missing.
    monkeypatch.setattr(train.ray_cluster, "connect", _no_ray)
    code = run_main([])
    assert code == 1
    reason = (root / "output" / "failure").read_text()
    assert "preprocessor channel" in reason and "preprocessor.json" in reason
    sm = boto3.client("sagemaker")
    component = sm.describe_trial_component(TrialComponentName="ray-mlops-train-0001-ray-xgboost")
    assert component["Status"]["PrimaryStatus"] == "Failed"



# --------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_training_writes_the_model_prints_metrics_and_records_the_run(ray_local, aws, root, capsys):
    written = write_channels(root, 2000, {"num_round": "30", "max_depth": "4", "eta": "0.3",
                                          "objective": "reg:squarederror", "tree_method": "approx",
                                          "model_package_group_name": "housing-models"})
    assert run_main(["--seed", "3"]) == 0
    metrics = printed_metrics(capsys.readouterr().out)
    assert set(metrics) == {"rmse", "mae"}
    assert 0 < metrics["mae"] <= metrics["rmse"]

    model = load_model_dir(root / "model")
    assert model.feature_order == FEATURES
    valid = written["valid_raw"]
    predictions = model.predict_raw(valid[FEATURES])
    rmse = float(np.sqrt(np.mean((predictions - valid[TARGET].to_numpy()) ** 2)))
    assert rmse == pytest.approx(metrics["rmse"], rel=1e-3)  # the printed metric is the model's

    sm = boto3.client("sagemaker")
    assert sm.describe_experiment(ExperimentName="housing-models")["ExperimentName"] == "housing-models"
    trial = sm.describe_trial(TrialName="ray-mlops-train-0001")
    assert trial["ExperimentName"] == "housing-models"
    component = sm.describe_trial_component(TrialComponentName="ray-mlops-train-0001-ray-xgboost")
    assert component["Status"]["PrimaryStatus"] == "Completed"
    parameters = component["Parameters"]
    assert parameters["max_depth"] == {"NumberValue": 4.0}
    assert parameters["seed"] == {"NumberValue": 3.0}  # the command-line flag won
    assert parameters["metric:validation:rmse"]["NumberValue"] == pytest.approx(metrics["rmse"], rel=1e-5)
    listed = sm.list_trial_components(TrialName="ray-mlops-train-0001")["TrialComponentSummaries"]
    assert [c["TrialComponentName"] for c in listed] == ["ray-mlops-train-0001-ray-xgboost"]


@pytest.mark.slow
def test_ten_thousand_housing_rows_train_well_below_the_rmse_threshold(ray_local, aws, root, capsys):
    write_channels(root, 10_000, {"num_round": "100", "max_depth": "6", "eta": "0.3", "subsample": "1",
                                  "min_child_weight": "1", "objective": "reg:squarederror",
                                  "tree_method": "approx"})
    assert run_main([]) == 0
    metrics = printed_metrics(capsys.readouterr().out)
    assert metrics["rmse"] < 10_000, metrics
