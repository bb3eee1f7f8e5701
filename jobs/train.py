"""Training job: XGBoost on Ray (xgboost-ray) under the SageMaker training contract.

    python -m jobs.train [--max-depth 5 --eta 0.3 ...]       (the image's `train` command)

* Channels `<root>/input/data/{train,validation,preprocessor}`: scaled Parquet splits (target column
  kept) and `preprocessor.json`, as written by the preprocess step.
* Hyperparameters `<root>/input/config/hyperparameters.json` (SageMaker passes every value as a
  string): max_depth, eta, min_child_weight, subsample, num_round, objective, tree_method, seed,
  plus target_column, num_actors, cpus_per_actor, experiment_name. Command-line flags override them.
* Writes `<root>/model/model.json` (XGBoost JSON) and a copy of `preprocessor.json` — SageMaker
  tars `<root>/model` into model.tar.gz.
* Prints `METRIC validation:rmse=<float>` and `METRIC validation:mae=<float>` (final round) on
  stdout: the tuning job's metric definitions match exactly these lines.
* Logs the Ray node each xgboost-ray actor trained on (`xgboost-ray actors on Ray nodes: ...`):
  on several hosts, one actor per host (`default_ray_params`), placed apart by xgboost-ray.
* Records the run in SageMaker Experiments (best effort: tracking never fails a training).
* On failure writes the reason to `<root>/output/failure` and exits 1.

`train_model` is the only place that knows the training engine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import boto3
import pandas as pd
from xgboost.callback import TrainingCallback

from jobs import common, ray_cluster
from jobs.model_io import MODEL_FILE, PREPROCESSOR_FILE, read_preprocessor, write_preprocessor

log = logging.getLogger("jobs.train")

DEFAULT_EXPERIMENT = "ray-xgboost"
# name -> (type, default). None default: not passed to XGBoost unless given.
HYPERPARAMETERS: dict[str, tuple[type, Any]] = {
    "max_depth": (int, 6),
    "eta": (float, 0.3),
    "min_child_weight": (float, 1.0),
    "subsample": (float, 1.0),
    "num_round": (int, 100),
    "objective": (str, "reg:squarederror"),
    "tree_method": (str, "approx"),
    "seed": (int, 42),
    "target_column": (str, None),
    "num_actors": (int, None),
    "cpus_per_actor": (int, None),
    "experiment_name": (str, None),
    "model_package_group_name": (str, None),
}
# Not XGBoost parameters: they steer the job itself.
JOB_SETTINGS = {"num_round", "target_column", "num_actors", "cpus_per_actor", "experiment_name",
                "model_package_group_name"}


@dataclass
class TrainResult:
    booster: Any
    metrics: dict[str, float]
    evals_result: dict[str, Any]
    hyperparameters: dict[str, Any]
    rows: dict[str, int] = field(default_factory=dict)
    actor_nodes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs
def is_platform_hyperparameter(name: str) -> bool:
    """Names SageMaker adds itself, not ours: a tuning job injects `_tuning_objective_metric`, the
    SDK's framework estimators `sagemaker_*` (program, submit directory, region, ...)."""
    return name.startswith("_") or name.startswith("sagemaker_")


def parse_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed hyperparameters from SageMaker's strings (defaults filled in). Names SageMaker adds are
    dropped (`is_platform_hyperparameter`); other unknown names are kept as given (passed on to
    XGBoost); a value of the wrong type fails clearly."""
    typed: dict[str, Any] = {}
    for name, (kind, default) in HYPERPARAMETERS.items():
        if default is not None:
            typed[name] = default
    for name, value in raw.items():
        if value is None:
            continue
        if is_platform_hyperparameter(name):
            log.info("ignoring hyperparameter %s=%s (set by SageMaker, not an XGBoost parameter)", name, value)
            continue
        kind = HYPERPARAMETERS.get(name, (str, None))[0]
        text = str(value).strip().strip('"')
        try:
            typed[name] = int(float(text)) if kind is int else kind(text)
        except ValueError:
            raise common.JobFailure(f"hyperparameter {name} must be {kind.__name__}, got {value!r}") from None
    for name in ("max_depth", "num_round"):
        if typed[name] < (1 if name == "num_round" else 0):
            raise common.JobFailure(f"hyperparameter {name} must be positive, got {typed[name]}")
    if not 0 < typed["subsample"] <= 1:
        raise common.JobFailure(f"hyperparameter subsample must be in (0, 1], got {typed['subsample']}")
    if typed["eta"] <= 0:
        raise common.JobFailure(f"hyperparameter eta must be > 0, got {typed['eta']}")
    return typed


def read_hyperparameters(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as err:
        raise common.JobFailure(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise common.JobFailure(f"{path} must hold a JSON object")
    return data


def read_split(channel: Path, name: str) -> pd.DataFrame:
    return common.read_parquet_dir(channel, f"the {name} channel")


def find_preprocessor(channel: Path) -> Path:
    candidates = sorted(channel.rglob(PREPROCESSOR_FILE)) if channel.is_dir() else []
    if not candidates:
        raise common.JobFailure(f"the preprocessor channel {channel} holds no {PREPROCESSOR_FILE}")
    return candidates[0]


# --------------------------------------------------------------------------- engine
def default_ray_params(alive_nodes: int, cluster_cpus: float, jobs_per_node: int = 1) -> dict[str, int]:
    """One actor per node with all of its node's CPUs as XGBoost threads (actors × threads =
    cores; the data is fed as pandas, so no Ray Data task needs a CPU the actors hold), or its
    share when `jobs_per_node` jobs share each node."""
    nodes = max(1, alive_nodes)
    per_node = max(1.0, cluster_cpus / nodes)
    return {"num_actors": nodes, "cpus_per_actor": max(1, int(per_node // max(1, jobs_per_node)))}


def jobs_per_node(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get(common.JOBS_PER_NODE_VARIABLE) or 1))
    except ValueError:
        raise common.JobFailure(f"{common.JOBS_PER_NODE_VARIABLE} must be an integer, got {env[common.JOBS_PER_NODE_VARIABLE]!r}") from None


class ReportActorNode(TrainingCallback):
    """Runs in every xgboost-ray actor: sends the driver the Ray node the actor trains on."""

    def before_training(self, model):
        import ray
        from xgboost_ray.session import get_actor_rank, put_queue

        put_queue({"actor_rank": get_actor_rank(), "node_ip": ray.util.get_node_ip_address()})
        return model


def actor_nodes(additional_results: Mapping[str, Any]) -> list[str]:
    """The node of each actor, by actor rank, from what `ReportActorNode` sent."""
    nodes = []
    for reports in additional_results.get("callback_returns") or []:
        ips = [r["node_ip"] for r in reports if isinstance(r, dict) and "node_ip" in r]
        nodes.append(ips[0] if ips else "unknown")
    return nodes


def train_model(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    target: str,
    params: Mapping[str, Any],
    num_round: int,
    ray_params: Mapping[str, Any],
) -> tuple[Any, dict[str, Any], list[str]]:
    """Trains a booster with xgboost-ray on pandas frames (never a Ray Dataset: the actors hold the
    CPUs a Dataset would need). Returns (xgboost.Booster, evals_result, actor nodes) where
    evals_result is `{"train": {"rmse": [...], "mae": [...]}, "validation": {...}}` and actor nodes
    the Ray node address of each actor, by rank."""
    from xgboost_ray import RayDMatrix, RayParams
    from xgboost_ray import train as ray_train

    features = [c for c in train_df.columns if c != target]
    # XGBoost refuses feature names with `[`, `]` or `<` and the CSV's names may have them: the
    # booster is trained on positional names (f0, f1, ...) and preprocessor.json keeps the real
    # ones in that order, which is how the model is scored.
    positional = {name: f"f{i}" for i, name in enumerate(features)}
    label = "label"
    train_df = train_df[[*features, target]].set_axis([*positional.values(), label], axis=1)
    valid_df = valid_df[[*features, target]].set_axis([*positional.values(), label], axis=1)
    dtrain = RayDMatrix(train_df, label=label)
    dvalid = RayDMatrix(valid_df, label=label)
    evals_result: dict[str, Any] = {}
    additional_results: dict[str, Any] = {}
    booster = ray_train(
        {**params, "eval_metric": ["rmse", "mae"]},
        dtrain,
        num_boost_round=num_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        evals_result=evals_result,
        additional_results=additional_results,
        callbacks=[ReportActorNode()],
        verbose_eval=False,
        ray_params=RayParams(**ray_params),
    )
    booster.feature_names = None  # positional: preprocessor.json names them
    return booster, evals_result, actor_nodes(additional_results)


# --------------------------------------------------------------------------- experiments
def job_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    name = env.get("TRAINING_JOB_NAME")
    if name:
        return name
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"ray-xgboost-{stamp}-{secrets.token_hex(3)}"


def _parameter_value(value: Any) -> dict[str, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"NumberValue": float(value)}
    return {"StringValue": str(value)}


def _ignore_exists(call, **kwargs) -> None:
    from botocore.exceptions import ClientError

    try:
        call(**kwargs)
    except ClientError as err:
        message = str(err.response.get("Error", {}).get("Message", ""))
        if "already exist" not in message.lower() and err.response["Error"]["Code"] != "ResourceInUse":
            raise


def record_experiment(
    *,
    experiment_name: str,
    run_name: str,
    hyperparameters: Mapping[str, Any],
    metrics: Mapping[str, float],
    status: str,
    started: datetime,
    ended: datetime,
    failure: str | None = None,
    sagemaker: Any = None,
) -> str | None:
    """Experiment `experiment_name` → trial `run_name` → trial component `<run_name>-ray-xgboost`
    with the hyperparameters and the final metrics (as `metric:<name>` parameters: the final value
    is what a reviewer compares). Returns the trial component name, or None when tracking failed
    (logged, never raised)."""
    component = f"{run_name[:108]}-ray-xgboost"
    try:
        sagemaker = sagemaker or boto3.client("sagemaker")
        _ignore_exists(sagemaker.create_experiment, ExperimentName=experiment_name,
                       Description="XGBoost on Ray training runs")
        _ignore_exists(sagemaker.create_trial, TrialName=run_name, ExperimentName=experiment_name)
        parameters = {k: _parameter_value(v) for k, v in hyperparameters.items() if v is not None}
        parameters.update({f"metric:{k}": _parameter_value(v) for k, v in metrics.items()})
        status_block = {"PrimaryStatus": status}
        if failure:
            status_block["Message"] = failure[:1024]
        _ignore_exists(
            sagemaker.create_trial_component,
            TrialComponentName=component,
            DisplayName=component,
            Status=status_block,
            StartTime=started,
            EndTime=ended,
            Parameters=parameters,
        )
        sagemaker.associate_trial_component(TrialComponentName=component, TrialName=run_name)
        log.info("recorded %s in experiment %s, trial %s", component, experiment_name, run_name)
        return component
    except Exception as err:  # noqa: BLE001 - tracking is best effort by design
        # Logged as an error so a missing permission shows in the job log (and its alarm), though
        # tracking never fails a training that produced a model.
        log.error("could not record the run in SageMaker Experiments: %s", err)
        return None


# --------------------------------------------------------------------------- step
def train(overrides: Mapping[str, Any] | None = None, cluster: ray_cluster.Cluster | None = None) -> TrainResult:
    """Runs the training (Ray must be connected); writes the model directory."""
    raw = read_hyperparameters(common.hyperparameters_path())
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hyperparameters = parse_hyperparameters(raw)

    preprocessor_path = find_preprocessor(common.training_channel("preprocessor"))
    preprocessor = read_preprocessor(preprocessor_path)
    target = hyperparameters.get("target_column") or preprocessor.target
    if target != preprocessor.target:
        raise common.JobFailure(
            f"target column {target!r} differs from the one the data was prepared for ({preprocessor.target!r})"
        )
    train_df = read_split(common.training_channel("train"), "train")
    valid_df = read_split(common.training_channel("validation"), "validation")
    columns = [*preprocessor.feature_order, target]
    for name, frame in (("train", train_df), ("validation", valid_df)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise common.JobFailure(f"the {name} split lacks the columns {', '.join(missing)}")
    train_df, valid_df = train_df[columns], valid_df[columns]

    if cluster is not None:
        ray_params = default_ray_params(len(cluster.alive_nodes()), cluster.cpus(), jobs_per_node())
    else:
        ray_params = {"num_actors": 1, "cpus_per_actor": 1}
    for name in ("num_actors", "cpus_per_actor"):
        if hyperparameters.get(name):
            ray_params[name] = hyperparameters[name]
    params = {k: v for k, v in hyperparameters.items() if k not in JOB_SETTINGS}
    log.info("training %d rounds on %d rows (%d validation), %s, ray %s",
             hyperparameters["num_round"], len(train_df), len(valid_df), params, ray_params)
    booster, evals_result, nodes = train_model(train_df, valid_df, target, params, hyperparameters["num_round"],
                                               ray_params)
    log.info("xgboost-ray actors on Ray nodes: %s",
             ", ".join(f"rank {rank} on {node}" for rank, node in enumerate(nodes)))

    metrics = {
        f"{split}:{metric}": float(values[-1])
        for split in ("train", "validation")
        for metric, values in evals_result.get(split, {}).items()
    }
    for name in ("validation:rmse", "validation:mae"):
        if name not in metrics:
            raise common.JobFailure(f"training produced no {name} metric")
    model_dir = common.model_dir()
    booster.save_model(str(model_dir / MODEL_FILE))
    write_preprocessor(model_dir / PREPROCESSOR_FILE, preprocessor)
    for name in ("train:rmse", "train:mae", "validation:rmse", "validation:mae"):
        if name in metrics:
            print(f"METRIC {name}={metrics[name]:.6f}", flush=True)
    return TrainResult(booster, metrics, evals_result, hyperparameters,
                       rows={"train": len(train_df), "validation": len(valid_df)}, actor_nodes=nodes)


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    for name in HYPERPARAMETERS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                            help=f"overrides the {name} hyperparameter")
    # SageMaker starts the image as `<image> train`; the word is not an argument.
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "train"]
    return vars(parser.parse_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    overrides = parse_args(argv)
    started = datetime.now(timezone.utc)
    run_name = job_name()
    result: TrainResult | None = None
    failure: str | None = None
    try:
        with ray_cluster.connect() as cluster:
            result = train(overrides, cluster)
    except common.JobFailure as err:
        failure = str(err)
    except Exception as err:  # noqa: BLE001 - any crash must leave a reason for SageMaker
        log.exception("training failed")
        failure = f"training failed: {type(err).__name__}: {err}"
    hyperparameters = result.hyperparameters if result else {k: v for k, v in overrides.items() if v is not None}
    experiment = (hyperparameters.get("experiment_name") or hyperparameters.get("model_package_group_name")
                  or DEFAULT_EXPERIMENT)
    record_experiment(
        experiment_name=experiment,
        run_name=run_name,
        hyperparameters={k: v for k, v in hyperparameters.items() if k != "experiment_name"},
        metrics=result.metrics if result else {},
        status="Completed" if result else "Failed",
        started=started,
        ended=datetime.now(timezone.utc),
        failure=failure,
    )
    if failure:
        common.fail(failure, kind="training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
