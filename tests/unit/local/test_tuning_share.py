"""Tuning trials side by side on one local Ray node are told how many share it, so each trains on
its share of the CPUs (jobs.train.default_ray_params) and a lone job on all of them."""
from __future__ import annotations

import threading
from pathlib import Path

from jobs.common import JOBS_PER_NODE_VARIABLE
from local.aws.sagemaker_pipelines import tuning
from local.aws.sagemaker_pipelines.jobs import JobRuntime


def _runtime() -> JobRuntime:
    return JobRuntime(python="python", workdir=Path("."), base_env={"KEEP": "1"}, shared_ray_env={},
                      cluster_ray_env={}, stop_event=threading.Event(), register_process=lambda p: None,
                      unregister_process=lambda p: None, s3_factory=lambda: None, logs_factory=lambda: None)


def _args(max_jobs: int, parallel: int) -> dict:
    return {
        "HyperParameterTuningJobConfig": {
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs, "MaxParallelTrainingJobs": parallel},
            "ParameterRanges": {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "8"}]},
        },
        "TrainingJobDefinition": {"StaticHyperParameters": {"num_round": "10"}},
    }


def _seen_shares(monkeypatch, tmp_path, max_jobs, parallel, max_parallel_trials):
    seen = []

    def fake_training_job(name, definition, hyperparameters, root, log_path, runtime):
        seen.append((runtime.base_env.get(JOBS_PER_NODE_VARIABLE), runtime.base_env["KEEP"]))
        return {"validation:rmse": float(hyperparameters["max_depth"])}

    monkeypatch.setattr(tuning, "run_training_job", fake_training_job)
    result = tuning.run_tuning("HPTuning", _args(max_jobs, parallel), tmp_path, tmp_path, _runtime(), "tj", seed=1,
                               max_parallel_trials=max_parallel_trials)
    assert result["TrainingJobStatusCounters"]["Completed"] == max_jobs
    return seen


def test_trials_side_by_side_are_told_they_share_the_node(monkeypatch, tmp_path):
    assert _seen_shares(monkeypatch, tmp_path, 4, 2, 2) == [("2", "1")] * 4


def test_trials_one_at_a_time_get_the_whole_node(monkeypatch, tmp_path):
    # MaxParallelTrainingJobs=1, or the machine fits one: each trial has the node to itself.
    assert _seen_shares(monkeypatch, tmp_path, 2, 1, 2) == [("1", "1")] * 2
    assert _seen_shares(monkeypatch, tmp_path, 2, 4, 1) == [("1", "1")] * 2
