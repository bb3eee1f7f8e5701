"""Settings the handlers read from their environment (set by template.yaml, or by the local runtime).

Nothing else in the handlers reads ``os.environ``: a missing required variable fails at start-up with
a message naming it, instead of a ``KeyError`` deep inside the logic.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# The environment readers and the tracer's patch list and metrics namespace, named here too (their
# homes, `environment` and `observability`, are light enough for a handler that needs nothing else
# of this module: no settings classes to build at cold start).
from .environment import ConfigurationError, int_env, required_env  # noqa: F401
from .observability import DEFAULT_METRICS_NAMESPACE, TRACED_MODULES, metrics_namespace  # noqa: F401

DEFAULT_MIN_DATA_ROWS = 100
DEFAULT_SAMPLE_BYTES = 256 * 1024
# jobs/pipeline.py ParameterInteger("MaxRejectedRows", default_value=0): what a run gets when the
# stack sends no value (a test keeps the two equal).
DEFAULT_MAX_REJECTED_ROWS = 0
# The largest object intake starts a run on: beyond it a file is quarantined (file_too_large) before
# any paid step. Template parameter MaxDatasetBytes.
DEFAULT_MAX_DATASET_BYTES = 10 * 1024**3

# Pipeline parameters that come straight from the stack configuration, in the order they are sent.
# Keys are the parameter names agreed in docs/contracts.md; values the environment variables holding
# them. A variable that is unset or empty is not sent, so the pipeline's own default applies.
STACK_PIPELINE_PARAMETERS: dict[str, str] = {
    "ModelPackageGroupName": "MODEL_PACKAGE_GROUP_NAME",
    "JobImageUri": "JOB_IMAGE_URI",
    "RMSEThreshold": "RMSE_THRESHOLD",
    "ChampionTolerance": "CHAMPION_TOLERANCE",
    "ProcessingInstanceType": "PROCESSING_INSTANCE_TYPE",
    "ProcessingInstanceCount": "PROCESSING_INSTANCE_COUNT",
    "TrainingInstanceType": "TRAINING_INSTANCE_TYPE",
    "TrainingInstanceCount": "TRAINING_INSTANCE_COUNT",
    "MaxTuningJobs": "MAX_TUNING_JOBS",
    "MaxParallelTuningJobs": "MAX_PARALLEL_TUNING_JOBS",
    "EvaluateInstanceType": "EVALUATE_INSTANCE_TYPE",
    "IngestionMode": "INGESTION_MODE",
    # Intake applies it to the sample too (StartPipelineSettings.max_rejected_rows).
    "MaxRejectedRows": "MAX_REJECTED_ROWS",
}


@dataclass(frozen=True)
class StartPipelineSettings:
    """Configuration of the function that validates a new CSV and starts the training pipeline."""

    pipeline_name: str
    data_bucket: str
    artifacts_bucket: str
    notification_topic_arn: str
    default_target_column: str
    feature_group_base_name: str
    stack_parameters: dict[str, str] = field(default_factory=dict)
    min_data_rows: int = DEFAULT_MIN_DATA_ROWS
    sample_bytes: int = DEFAULT_SAMPLE_BYTES
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    # Where docs/csv-format.md is published (e.g. the repository's web address); empty: quarantine
    # messages name the page by its path in the repository.
    docs_base_url: str = ""
    incoming_prefix: str = "incoming/"
    quarantine_prefix: str = "quarantine/"
    artifacts_prefix: str = "pipeline"

    @property
    def artifacts_s3_uri(self) -> str:
        return f"s3://{self.artifacts_bucket}/{self.artifacts_prefix}"

    @property
    def max_rejected_rows(self) -> int:
        """The MaxRejectedRows the run gets: the value sent (stack or `mlops pipeline run --param`),
        else the pipeline's default."""
        return int_env(self.stack_parameters, "MaxRejectedRows", DEFAULT_MAX_REJECTED_ROWS, 0, kind="pipeline parameter")

    def docs_link(self, page: str) -> str:
        """`page` (a path in the repository, e.g. docs/csv-format.md) as a link a person can follow."""
        if not self.docs_base_url:
            return page
        return f"{self.docs_base_url.rstrip('/')}/{page}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StartPipelineSettings:
        env = os.environ if environ is None else environ
        stack_parameters = {
            parameter: env[variable].strip()
            for parameter, variable in STACK_PIPELINE_PARAMETERS.items()
            if env.get(variable, "").strip()
        }
        return cls(
            pipeline_name=required_env(env, "PIPELINE_NAME"),
            data_bucket=required_env(env, "DATA_BUCKET"),
            artifacts_bucket=required_env(env, "ARTIFACTS_BUCKET"),
            notification_topic_arn=required_env(env, "NOTIFICATION_TOPIC_ARN"),
            default_target_column=env.get("DEFAULT_TARGET_COLUMN", "").strip() or "PRICE",
            feature_group_base_name=required_env(env, "FEATURE_GROUP_BASE_NAME"),
            stack_parameters=stack_parameters,
            min_data_rows=int_env(env, "MIN_DATA_ROWS", DEFAULT_MIN_DATA_ROWS, 1),
            sample_bytes=int_env(env, "VALIDATION_SAMPLE_BYTES", DEFAULT_SAMPLE_BYTES, 1),
            max_dataset_bytes=int_env(env, "MAX_DATASET_BYTES", DEFAULT_MAX_DATASET_BYTES, 1),
            docs_base_url=env.get("DOCS_BASE_URL", "").strip(),
        )


@dataclass(frozen=True)
class PipelineStatusSettings:
    """Configuration of the function that reports failed or stopped pipeline executions."""

    pipeline_name: str
    notification_topic_arn: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineStatusSettings:
        env = os.environ if environ is None else environ
        return cls(
            pipeline_name=required_env(env, "PIPELINE_NAME"),
            notification_topic_arn=required_env(env, "NOTIFICATION_TOPIC_ARN"),
        )
