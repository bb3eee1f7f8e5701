"""The steps of a pipeline execution and the hosts each ran on, for the result documents of
`mlops pipeline run` and `mlops local run`.

The hosts are read the way one reads them on AWS, through the AWS APIs only: a step's job
(`Metadata.ProcessingJob` / `TrainingJob` / `TuningJob` of ListPipelineExecutionSteps) wrote one
CloudWatch Logs stream per host, `<job name>/<host>-<epoch>`; a tuning step's hosts are those of its
training jobs. So a run that quietly used one host where two were asked for shows it, locally and
on AWS alike. Steps without a job (conditions, registration, Fail) list no hosts.
"""
from __future__ import annotations

from typing import Any

from local.aws.sagemaker_pipelines.job_logs import (
    PROCESSING_LOG_GROUP,
    TRAINING_LOG_GROUP,
    host_order,
    hosts_of_job,
    training_jobs_of_tuning_job,
)


def _name(job_arn: str) -> str:
    return job_arn.rsplit("/", 1)[-1]


def step_hosts(logs: Any, step: dict) -> list[str]:
    """The hosts the job of one ListPipelineExecutionSteps entry ran on."""
    metadata = step.get("Metadata") or {}
    if "ProcessingJob" in metadata:
        return hosts_of_job(logs, PROCESSING_LOG_GROUP, _name(metadata["ProcessingJob"]["Arn"]))
    if "TrainingJob" in metadata:
        return hosts_of_job(logs, TRAINING_LOG_GROUP, _name(metadata["TrainingJob"]["Arn"]))
    if "TuningJob" in metadata:
        trials = training_jobs_of_tuning_job(logs, _name(metadata["TuningJob"]["Arn"]))
        return sorted({host for hosts in trials.values() for host in hosts}, key=host_order)
    return []


def step_summaries(logs: Any, steps: list[dict]) -> list[dict]:
    """`[{"name", "status", "hosts"}]`, one per step, in the order given."""
    return [{"name": s["StepName"], "status": s["StepStatus"], "hosts": step_hosts(logs, s)} for s in steps]
