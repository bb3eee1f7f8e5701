"""P3 — training 100 rounds at 1M rows: `jobs.train.train_model` (xgboost-ray) vs `xgboost.train`.

Both sides get the same scaled frames (1M training rows, 200k validation rows of the housing data),
the same parameters (the train job's defaults: `reg:squarederror`, tree_method approx, max_depth 6,
eta 0.3, ...; eval metrics rmse and mae on train and validation) and 100 rounds.

Ours: `train_model` with the Ray parameters a lone training job picks on this machine
(`default_ray_params(alive nodes, cluster CPUs)`: one actor per node with all of its CPUs as
XGBoost threads), on a Ray head started beforehand (not counted: the local executor shares one
head across steps). The note records the load average at the start: the target holds when the
machine gives both cores. Baseline: plain single-process `xgboost.train`
on a `DMatrix` (XGBoost's own threads, all cores), DMatrix construction included on both sides.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bench.harness import RATIO_AT_MOST, Row, Target, not_measured
from bench.support import housing, ray_cluster, timed

KEY = "P3"
TARGET = Target(RATIO_AT_MOST, 1.6)
TARGET_COLUMN = "PRICE"
ROUNDS = 100


def scaled_frames(train_rows: int, validation_rows: int):
    frame = housing(train_rows + validation_rows)
    features = [c for c in frame.columns if c != TARGET_COLUMN]
    train = frame.iloc[:train_rows].reset_index(drop=True)
    valid = frame.iloc[train_rows:].reset_index(drop=True)
    mean = train[features].mean()
    std = train[features].std(ddof=0).replace(0, 1.0)
    for part in (train, valid):
        part[features] = (part[features] - mean) / std
    return train, valid


def plain_xgboost(train, valid, params: dict, rounds: int):
    import xgboost as xgb

    features = [c for c in train.columns if c != TARGET_COLUMN]
    dtrain = xgb.DMatrix(train[features], label=train[TARGET_COLUMN])
    dvalid = xgb.DMatrix(valid[features], label=valid[TARGET_COLUMN])
    evals_result: dict = {}
    booster = xgb.train({**params, "eval_metric": ["rmse", "mae"]}, dtrain, num_boost_round=rounds,
                        evals=[(dtrain, "train"), (dvalid, "validation")], evals_result=evals_result,
                        verbose_eval=False)
    return booster, evals_result


def job_params() -> dict:
    """The XGBoost parameters the train job uses when given no hyperparameters."""
    from jobs import train as job

    typed = job.parse_hyperparameters({})
    return {k: v for k, v in typed.items() if k not in job.JOB_SETTINGS}


def run(quick: bool, workdir: Path, report: Callable[[Row], None]) -> None:
    train_rows = 100_000 if quick else 1_000_000
    validation_rows = train_rows // 5
    measure = f"training, {train_rows:,} rows × {ROUNDS} rounds (s)"
    try:
        from jobs import train as job
    except ImportError as error:
        report(not_measured(KEY, measure, "s", TARGET, f"jobs.train cannot be imported: {error}"))
        return
    params = job_params()
    load = "/".join(f"{value:.2f}" for value in __import__("os").getloadavg())
    train, valid = scaled_frames(train_rows, validation_rows)
    base_seconds, (_, base_evals) = timed(plain_xgboost, train, valid, params, ROUNDS)

    with ray_cluster(workdir) as _head:
        import ray

        cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
        ray_params = job.default_ray_params(len([n for n in ray.nodes() if n.get("Alive")]), cluster_cpus)
        ours_seconds, (_, ours_evals, _) = timed(job.train_model, train, valid, TARGET_COLUMN, params, ROUNDS, ray_params)

    ours_rmse = float(ours_evals["validation"]["rmse"][-1])
    base_rmse = float(base_evals["validation"]["rmse"][-1])
    if not np.isfinite(ours_rmse) or abs(ours_rmse - base_rmse) > 0.05 * base_rmse:
        raise RuntimeError(f"the two sides trained different models: validation rmse {ours_rmse} vs {base_rmse}")
    report(Row(
        KEY, measure, ours_seconds, base_seconds, "s", TARGET,
        notes=(f"tree_method {params.get('tree_method')}, max_depth {params.get('max_depth')}; ours xgboost-ray "
               f"{ray_params['num_actors']} actor × {ray_params['cpus_per_actor']} CPU (the job's choice for "
               f"{cluster_cpus:.0f} CPUs), baseline xgboost with all {_cores()} cores; validation rmse "
               f"{ours_rmse:,.0f} vs {base_rmse:,.0f}; Ray head start-up not counted; load average at the start {load}"),
        details={"ray_params": ray_params, "params": params, "ours_rmse": ours_rmse, "baseline_rmse": base_rmse},
    ))


def _cores() -> int:
    import os

    return os.cpu_count() or 0
