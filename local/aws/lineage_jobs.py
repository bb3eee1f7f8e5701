"""DescribeProcessingJob, DescribeHyperParameterTuningJob and DescribeTrainingJob of the jobs the
local pipeline executor ran: what the lineage recorder reads to name the image and the trial.

The executor runs each job itself and keeps its Describe*-shaped properties per execution (moto
never hears of these jobs); `LocalJobDescriptions.install()` answers the three Describe calls from
them, after the strict face has checked them (its IAM table names the callers), and forwards
every other name to moto.

The image: locally there is no registry and no image digest. The jobs run in the environment built
from `jobs/Dockerfile` (`.venv-jobs/env-<fingerprint>`, `local.jobs_image`), whose fingerprint
stands for the image's content. The answers pin the job's `ImageUri` (and a training job's
`TrainingImage`) to that environment as a digest reference, `<uri>@sha256:<sha256 of the
fingerprint>`, so a reader sees which build ran, in the form a digest-pinned image takes on AWS.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable

from local.aws.gateway import LocalGateway, aws_error, json_response, moto_passthrough, request_json

log = logging.getLogger(__name__)


def local_image_digest(fingerprint: str) -> str:
    return "sha256:" + hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()


def pinned(image_uri: str | None, digest: str) -> str | None:
    """`image_uri` with the local environment's digest (an already pinned URI is left alone)."""
    if not image_uri or "@" in image_uri:
        return image_uri
    return f"{image_uri}@{digest}"


class LocalJobDescriptions:
    def __init__(self, gateway: LocalGateway, executor: Any, image_fingerprint: Callable[[], str]):
        self.gateway = gateway
        self.executor = executor
        self.image_fingerprint = image_fingerprint

    def install(self) -> "LocalJobDescriptions":
        for target, find in (("DescribeProcessingJob", self.processing_job),
                             ("DescribeHyperParameterTuningJob", self.tuning_job),
                             ("DescribeTrainingJob", self.training_job)):
            self.gateway.route_target(f"SageMaker.{target}", self._app(find))
        return self

    def _app(self, find: Callable[[dict], dict | None]):
        def app(environ, start_response):
            try:
                found = find(request_json(environ))
            except Exception:  # a bookkeeping error must not look like a missing job
                log.exception("describing a local job failed")
                return aws_error(start_response, 500, "InternalFailure", "the local job description failed")
            if found is None:
                return moto_passthrough(self.gateway, start_response, environ)[0]
            return json_response(start_response, 200, found)
        return app

    def _all_properties(self):
        for execution_arn in list(self.executor._executions):
            for step, properties in self.executor.step_properties(execution_arn).items():
                yield step, properties

    @property
    def _digest(self) -> str:
        return local_image_digest(self.image_fingerprint())

    def processing_job(self, body: dict) -> dict | None:
        name = body.get("ProcessingJobName", "")
        for _, properties in self._all_properties():
            if properties.get("ProcessingJobName", "").lower() == name.lower():
                answer = dict(properties)
                application = dict(answer.get("AppSpecification") or {})
                application["ImageUri"] = pinned(application.get("ImageUri"), self._digest)
                answer["AppSpecification"] = application
                return answer
        return None

    def tuning_job(self, body: dict) -> dict | None:
        name = body.get("HyperParameterTuningJobName", "")
        for _, properties in self._all_properties():
            if properties.get("HyperParameterTuningJobName", "").lower() == name.lower():
                return properties
        return None

    def training_job(self, body: dict) -> dict | None:
        """A tuning job's training job: its hyperparameters are the definition's static ones, the
        objective metric SageMaker adds, and the values tuned for this trial."""
        name = body.get("TrainingJobName", "")
        for _, properties in self._all_properties():
            for summary in properties.get("TrainingJobSummaries") or []:
                if summary.get("TrainingJobName", "").lower() != name.lower():
                    continue
                definition = properties.get("TrainingJobDefinition") or {}
                config = properties.get("HyperParameterTuningJobConfig") or {}
                hyperparameters = {k: str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
                objective = (config.get("HyperParameterTuningJobObjective") or {}).get("MetricName")
                if objective:
                    hyperparameters["_tuning_objective_metric"] = objective
                hyperparameters.update({k: str(v) for k, v in (summary.get("TunedHyperParameters") or {}).items()})
                algorithm = dict(definition.get("AlgorithmSpecification") or {})
                if algorithm.get("TrainingImage"):
                    algorithm["TrainingImage"] = pinned(algorithm["TrainingImage"], self._digest)
                answer = {
                    "TrainingJobName": summary["TrainingJobName"],
                    "TrainingJobArn": summary["TrainingJobArn"],
                    "TuningJobArn": properties.get("HyperParameterTuningJobArn"),
                    "TrainingJobStatus": summary.get("TrainingJobStatus"),
                    "HyperParameters": hyperparameters,
                    "AlgorithmSpecification": algorithm,
                    "RoleArn": definition.get("RoleArn"),
                    "CreationTime": summary.get("CreationTime"),
                    "TrainingStartTime": summary.get("TrainingStartTime"),
                    "TrainingEndTime": summary.get("TrainingEndTime"),
                }
                if summary.get("FinalHyperParameterTuningJobObjectiveMetric"):
                    answer["FinalMetricDataList"] = [summary["FinalHyperParameterTuningJobObjectiveMetric"]]
                return {k: v for k, v in answer.items() if v is not None}
        return None
