"""Hyperparameter tuning the way SageMaker's Random strategy runs it, locally: a seeded random search
over the declared ranges, as many training jobs side by side as fit, each job's metrics scraped from
its log with the definition's MetricDefinitions (SageMaker's FinalMetricDataList), the summaries
sorted best first as DescribeHyperParameterTuningJob returns them."""
from __future__ import annotations

import logging
import math
import random
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from jobs.common import JOBS_PER_NODE_VARIABLE
from local.aws.sagemaker_pipelines.jobs import JobRuntime, StepFailed, StepStopped, arn, run_training_job

log = logging.getLogger(__name__)


TUNING_OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"


def sample_hyperparameters(ranges: dict, rng: random.Random) -> dict[str, str]:
    """One random draw from ParameterRanges (values as strings, as SageMaker passes them)."""
    values: dict[str, str] = {}
    for spec in ranges.get("IntegerParameterRanges", []):
        low, high = int(float(spec["MinValue"])), int(float(spec["MaxValue"]))
        if spec.get("ScalingType") in ("Logarithmic", "ReverseLogarithmic") and low > 0:
            values[spec["Name"]] = str(int(round(math.exp(rng.uniform(math.log(low), math.log(high))))))
        else:
            values[spec["Name"]] = str(rng.randint(low, high))
    for spec in ranges.get("ContinuousParameterRanges", []):
        low, high = float(spec["MinValue"]), float(spec["MaxValue"])
        if spec.get("ScalingType") == "Logarithmic" and low > 0:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        values[spec["Name"]] = repr(round(value, 6))
    for spec in ranges.get("CategoricalParameterRanges", []):
        values[spec["Name"]] = str(rng.choice(spec["Values"]))
    return values


@dataclass
class Trial:
    index: int
    name: str
    hyperparameters: dict[str, str]
    status: str = "InProgress"
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None


def run_tuning(step_name: str, args: dict, step_root: Path, log_dir: Path, runtime: JobRuntime,
               tuning_job: str, seed: int, max_parallel_trials: int,
               on_trial: Callable[[Trial], None] | None = None) -> dict:
    """A random-search tuning job over resolved CreateHyperParameterTuningJob arguments; returns
    DescribeHyperParameterTuningJob-shaped properties with summaries sorted best first."""
    config = args["HyperParameterTuningJobConfig"]
    definition = args["TrainingJobDefinition"]
    objective = config["HyperParameterTuningJobObjective"]
    minimize = objective.get("Type", "Minimize") == "Minimize"
    limits = config.get("ResourceLimits", {})
    max_jobs = int(limits.get("MaxNumberOfTrainingJobs", 1))
    if max_jobs < 1:
        raise StepFailed(f"MaxNumberOfTrainingJobs must be >= 1, got {max_jobs}")
    parallel = max(1, min(int(limits.get("MaxParallelTrainingJobs", 1)), max_parallel_trials, max_jobs))
    # The trials running side by side share this machine's Ray node: each is told so and trains on
    # its share of the CPUs (on SageMaker every trial has an instance of its own).
    runtime = replace(runtime, base_env={**runtime.base_env, JOBS_PER_NODE_VARIABLE: str(parallel)})
    rng = random.Random(seed)
    static = {k: str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
    # As SageMaker does: every training job of a tuning job is told the objective metric's name.
    static[TUNING_OBJECTIVE_HYPERPARAMETER] = objective["MetricName"]
    trials = []
    for index in range(1, max_jobs + 1):
        tuned = sample_hyperparameters(config.get("ParameterRanges", {}), rng)
        name = f"{tuning_job[:40]}-{index:03d}-{secrets.token_hex(4)}"
        trials.append(Trial(index=index, name=name, hyperparameters={**static, **tuned}))
    tuned_names = {s["Name"] for kind in config.get("ParameterRanges", {}).values() for s in kind}

    def run(trial: Trial) -> Trial:
        if runtime.stop_event.is_set():
            trial.status = "Stopped"
            return trial
        trial.start = datetime.now(timezone.utc)
        if on_trial:
            on_trial(trial)
        try:
            trial.metrics = run_training_job(trial.name, definition, trial.hyperparameters,
                                             step_root / trial.name, log_dir / f"{trial.name}.log", runtime)
            trial.status = "Completed"
        except StepStopped:
            trial.status = "Stopped"
        except StepFailed as exc:
            trial.status, trial.failure_reason = "Failed", str(exc)
        except Exception as exc:  # a local error (S3, disk) fails the trial, not the executor
            log.exception("training job %s failed", trial.name)
            trial.status, trial.failure_reason = "Failed", f"{type(exc).__name__}: {exc}"
        trial.end = datetime.now(timezone.utc)
        if on_trial:
            on_trial(trial)
        return trial

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"{step_name}-trial") as pool:
        list(pool.map(run, trials))
    if runtime.stop_event.is_set():
        raise StepStopped("stopped")

    metric = objective["MetricName"]
    scored = [t for t in trials if t.status == "Completed" and metric in t.metrics]
    if not scored:
        failed = [t for t in trials if t.failure_reason]
        if failed:
            raise StepFailed(f"All {len(trials)} training jobs failed; first: {failed[0].name}: {failed[0].failure_reason}"[:1024])
        raise StepFailed(f"No training job reported the objective metric {metric} "
                         f"(MetricDefinitions regex never matched the job logs)")
    scored.sort(key=lambda t: t.metrics[metric], reverse=not minimize)
    others = [t for t in trials if t not in scored]

    def summary(trial: Trial) -> dict:
        item = {
            "TrainingJobName": trial.name,
            "TrainingJobArn": arn("training-job", trial.name),
            "TuningJobName": tuning_job,
            "CreationTime": (trial.start or datetime.now(timezone.utc)).isoformat(),
            "TrainingStartTime": trial.start.isoformat() if trial.start else None,
            "TrainingEndTime": trial.end.isoformat() if trial.end else None,
            "TrainingJobStatus": trial.status,
            "TunedHyperParameters": {k: v for k, v in trial.hyperparameters.items() if k in tuned_names},
            "ObjectiveStatus": "Succeeded" if trial in scored else "Failed",
        }
        if trial in scored:
            item["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": objective.get("Type", "Minimize"), "MetricName": metric, "Value": trial.metrics[metric]}
        if trial.failure_reason:
            item["FailureReason"] = trial.failure_reason
        return item

    summaries = [summary(t) for t in scored + others]
    counters = {
        "Completed": sum(t.status == "Completed" for t in trials),
        "InProgress": 0,
        "RetryableError": 0,
        "NonRetryableError": sum(t.status == "Failed" for t in trials),
        "Stopped": sum(t.status == "Stopped" for t in trials),
    }
    return {
        **args,
        "HyperParameterTuningJobName": tuning_job,
        "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", tuning_job),
        "HyperParameterTuningJobStatus": "Completed",
        "TrainingJobStatusCounters": counters,
        "TrainingJobSummaries": summaries,
        "BestTrainingJob": summaries[0],
    }
