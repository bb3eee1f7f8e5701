"""The one SageMaker Pipeline definition: Ingest → Preprocess → HPTuning → Evaluate → gate → Register | Fail.

Built with the SageMaker Python SDK (v2) and serialised to `jobs/pipeline_definition.json`; the stack
deploys that JSON to SageMaker and the local runtime executes the very same JSON on local Ray.

Building it makes no network call: code lives in the jobs image (entrypoints, not uploaded scripts)
and every output has an explicit destination, so the SDK never asks for a default bucket.
Every output lives under `<ArtifactsS3Uri>/<execution id>/<step>/...`.

The step role is a string the SDK cannot take as a parameter: the definition carries the literal
`${PipelineJobsRoleArn}`, substituted when the stack (or the local cloud) provisions the pipeline.

    python -m jobs.pipeline --write jobs/pipeline_definition.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Callable

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import boto3  # noqa: E402
from sagemaker.drift_check_baselines import DriftCheckBaselines  # noqa: E402
from sagemaker.estimator import Estimator  # noqa: E402
from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.model import Model  # noqa: E402
from sagemaker.model_metrics import MetricsSource, ModelMetrics  # noqa: E402
from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor  # noqa: E402
from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter  # noqa: E402
from sagemaker.workflow.condition_step import ConditionStep  # noqa: E402
from sagemaker.workflow.conditions import ConditionLessThanOrEqualTo  # noqa: E402
from sagemaker.workflow.execution_variables import ExecutionVariables  # noqa: E402
from sagemaker.workflow.fail_step import FailStep  # noqa: E402
from sagemaker.workflow.functions import Join, JsonGet  # noqa: E402
from sagemaker.workflow.model_step import ModelStep  # noqa: E402
from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString  # noqa: E402
from sagemaker.workflow.pipeline import Pipeline  # noqa: E402
from sagemaker.workflow.pipeline_context import PipelineSession  # noqa: E402
from sagemaker.workflow.properties import PropertyFile  # noqa: E402
from sagemaker.workflow.steps import CacheConfig, ProcessingStep, TuningStep  # noqa: E402

from jobs.baseline import BASELINE_FILE  # noqa: E402
from mlops_shared.artifacts import CHAMPION_LIMIT_JSON_PATH, RMSE_JSON_PATH  # noqa: E402

PIPELINE_NAME = "ray-mlops-training"
ROLE_PLACEHOLDER = "${PipelineJobsRoleArn}"
REGION = "us-east-1"
CACHE_EXPIRY = "PT12H"
DEFINITION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_definition.json")

# Metric lines printed by jobs.train (the regexes are part of the contract with it).
METRIC_DEFINITIONS = [
    {"Name": "validation:rmse", "Regex": r"METRIC validation:rmse=([0-9.eE+-]+)"},
    {"Name": "validation:mae", "Regex": r"METRIC validation:mae=([0-9.eE+-]+)"},
]
OBJECTIVE_METRIC = "validation:rmse"

# Search space of the reference sample.
HYPERPARAMETER_RANGES = {
    "max_depth": IntegerParameter(1, 8),
    "eta": ContinuousParameter(0.2, 1),
    "min_child_weight": IntegerParameter(0, 120),
    "subsample": ContinuousParameter(0.2, 1),
}
STATIC_HYPERPARAMETERS = {
    "num_round": 100,
    "objective": "reg:squarederror",
    "tree_method": "approx",
}


def _parameters() -> dict:
    """Pipeline parameters; their names are the contract with `start_pipeline` (docs/contracts.md)."""
    params = [
        # For people: the exact identity is the reference document (mlops_shared.dataset_reference),
        # since SageMaker limits arguments, environment and registry metadata to 256 characters.
        ParameterString("InputDataUri", default_value="s3://mlops-data/incoming/house_pricing.csv"),
        ParameterString("DatasetReferenceUri", default_value="s3://mlops-artifacts/pipeline/datasets/example.json"),
        ParameterString("DatasetLabel", default_value="s3://mlops-data/incoming/house_pricing.csv"),
        ParameterString("DatasetVersion", default_value="unversioned"),
        ParameterString("TargetColumn", default_value="PRICE"),
        # TargetColumn as a registry metadata value (registry_label: `Lot (acres)` -> `Lot _acres_`);
        # the exact name is in evaluation.json and preprocessor.json.
        ParameterString("TargetLabel", default_value="PRICE"),
        ParameterString("FeatureGroupName", default_value="fs-ray-synthetic-housing-data"),
        ParameterString("ModelPackageGroupName", default_value="ray-mlops-models"),
        ParameterString("ArtifactsS3Uri", default_value="s3://mlops-artifacts/pipeline"),
        ParameterString("JobImageUri", default_value="123456789012.dkr.ecr.us-east-1.amazonaws.com/ray-mlops-jobs:latest"),
        ParameterFloat("RMSEThreshold", default_value=15000.0),
        ParameterFloat("ChampionTolerance", default_value=0.05),
        ParameterFloat("TrainFraction", default_value=0.6),
        ParameterFloat("ValidationFraction", default_value=0.2),
        ParameterFloat("TestFraction", default_value=0.2),
        ParameterInteger("MaxRejectedRows", default_value=0),
        ParameterInteger("IngestActors", default_value=10),
        ParameterFloat("IngestActorCpus", default_value=0.5),
        ParameterInteger("OfflineStoreTimeoutSeconds", default_value=900),
        # Auto | PutRecord | OfflineStore: how ingest writes the feature store (see jobs/ingest.py).
        ParameterString("IngestionMode", default_value="Auto"),
        ParameterString("ProcessingInstanceType", default_value="ml.m5.xlarge"),
        # Evaluate reads the test split and one model: a smaller instance, since its cost is mostly
        # start-up billed at the instance's price (docs/performance.md).
        ParameterString("EvaluateInstanceType", default_value="ml.m5.large"),
        ParameterInteger("ProcessingInstanceCount", default_value=1),
        ParameterString("TrainingInstanceType", default_value="ml.m5.xlarge"),
        ParameterInteger("TrainingInstanceCount", default_value=1),
        ParameterInteger("MaxTuningJobs", default_value=4),
        ParameterInteger("MaxParallelTuningJobs", default_value=2),
    ]
    return {p.name: p for p in params}


class _OfflinePipelineSession(PipelineSession):
    """A PipelineSession that never asks IAM to expand the role placeholder into an ARN."""

    def expand_role(self, role):
        if role == ROLE_PLACEHOLDER:
            return role
        return super().expand_role(role)


def _session() -> PipelineSession:
    # An explicit region and an empty SDK config: building never reads the machine's AWS setup,
    # and no code path below asks for the default bucket.
    boto_session = boto3.Session(region_name=REGION)
    return _OfflinePipelineSession(boto_session=boto_session, sagemaker_config={})


def _step_uri(p: dict, step: str, *parts: str) -> Join:
    """`<ArtifactsS3Uri>/<execution id>/<step>/<parts...>`."""
    return Join(on="/", values=[p["ArtifactsS3Uri"], ExecutionVariables.PIPELINE_EXECUTION_ID, step, *parts])


def _processor(p: dict, session: PipelineSession, module: str, env: dict | None = None,
               instance_type: str = "ProcessingInstanceType") -> Processor:
    return Processor(
        role=ROLE_PLACEHOLDER,
        image_uri=p["JobImageUri"],
        instance_count=p["ProcessingInstanceCount"],
        instance_type=p[instance_type],
        entrypoint=["python3", "-m", module],
        base_job_name=module.replace("jobs.", "ray-mlops-"),
        env=env,
        sagemaker_session=session,
    )


def build_pipeline(pipeline_name: str = PIPELINE_NAME) -> Pipeline:
    """The training pipeline. Builds offline (no AWS call)."""
    p = _parameters()
    session = _session()
    cache = CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRY)
    # The dataset identity is in every cached step's cache key (arguments or environment), so a new
    # object or a new version of the same key never comes from the cache.
    dataset_env = {"DATASET_REFERENCE_URI": p["DatasetReferenceUri"], "DATASET_VERSION": p["DatasetVersion"]}

    # -- Ingest: CSV -> Feature Store (waits for the offline store) -> manifest --------------------
    ingest = _processor(p, session, "jobs.ingest")
    step_ingest = ProcessingStep(
        name="Ingest",
        step_args=ingest.run(
            outputs=[
                ProcessingOutput(output_name="manifest", source="/opt/ml/processing/output/manifest",
                                 destination=_step_uri(p, "Ingest", "manifest")),
                ProcessingOutput(output_name="rejects", source="/opt/ml/processing/output/rejects",
                                 destination=_step_uri(p, "Ingest", "rejects")),
            ],
            arguments=[
                "--dataset-reference", p["DatasetReferenceUri"],
                "--dataset-version", p["DatasetVersion"],
                "--target-column", p["TargetColumn"],
                "--feature-group-name", p["FeatureGroupName"],
                "--offline-store-s3-uri", Join(on="/", values=[p["ArtifactsS3Uri"], "offline-store"]),
                "--feature-store-role-arn", ROLE_PLACEHOLDER,
                "--actors", p["IngestActors"].to_string(),
                "--actor-cpus", p["IngestActorCpus"].to_string(),
                "--max-rejected-rows", p["MaxRejectedRows"].to_string(),
                "--offline-store-timeout-seconds", p["OfflineStoreTimeoutSeconds"].to_string(),
                "--ingestion-mode", p["IngestionMode"],
            ],
        ),
        cache_config=cache,
    )

    # -- Preprocess: offline store snapshot -> train/validation/test + fitted scaler ---------------
    preprocess = _processor(p, session, "jobs.preprocess", env=dataset_env)
    step_preprocess = ProcessingStep(
        name="Preprocess",
        step_args=preprocess.run(
            inputs=[
                ProcessingInput(
                    input_name="manifest",
                    source=step_ingest.properties.ProcessingOutputConfig.Outputs["manifest"].S3Output.S3Uri,
                    destination="/opt/ml/processing/input/manifest",
                )
            ],
            outputs=[
                ProcessingOutput(output_name=name, source=f"/opt/ml/processing/output/{name}",
                                 destination=_step_uri(p, "Preprocess", name))
                for name in ("train", "validation", "test", "preprocessor")
            ],
            arguments=[
                "--target-column", p["TargetColumn"],
                "--train-fraction", p["TrainFraction"].to_string(),
                "--validation-fraction", p["ValidationFraction"].to_string(),
                "--test-fraction", p["TestFraction"].to_string(),
                "--seed", "42",
            ],
        ),
        cache_config=cache,
    )

    def preprocess_output(name: str):
        return step_preprocess.properties.ProcessingOutputConfig.Outputs[name].S3Output.S3Uri

    # -- HPTuning: XGBoost on Ray, one training job per trial --------------------------------------
    estimator = Estimator(
        image_uri=p["JobImageUri"],
        role=ROLE_PLACEHOLDER,
        instance_count=p["TrainingInstanceCount"],
        instance_type=p["TrainingInstanceType"],
        output_path=_step_uri(p, "HPTuning", "models"),
        base_job_name="ray-mlops-train",
        hyperparameters={**STATIC_HYPERPARAMETERS, "target_column": p["TargetColumn"]},
        environment=dataset_env,
        sagemaker_session=session,
    )
    tuner = HyperparameterTuner(
        estimator=estimator,
        objective_metric_name=OBJECTIVE_METRIC,
        objective_type="Minimize",
        hyperparameter_ranges=HYPERPARAMETER_RANGES,
        metric_definitions=METRIC_DEFINITIONS,
        # Random search: the same strategy the local executor runs, so both faces agree.
        strategy="Random",
        max_jobs=p["MaxTuningJobs"],
        max_parallel_jobs=p["MaxParallelTuningJobs"],
        base_tuning_job_name="ray-mlops-tune",
    )
    step_tuning = TuningStep(
        name="HPTuning",
        step_args=tuner.fit(
            inputs={
                "train": TrainingInput(preprocess_output("train"), content_type="text/csv"),
                "validation": TrainingInput(preprocess_output("validation"), content_type="text/csv"),
                "preprocessor": TrainingInput(preprocess_output("preprocessor"), content_type="application/json"),
            }
        ),
        cache_config=cache,
    )
    # The best model, built like `TuningStep.get_top_model_s3_uri(top_k=0)` but from the tuning
    # job's own S3OutputPath: that helper wants a bare bucket name, and a cached tuning step's models
    # live under the execution that trained them, not under the current execution id.
    best_model_uri = Join(
        on="/",
        values=[
            step_tuning.properties.TrainingJobDefinition.OutputDataConfig.S3OutputPath,
            step_tuning.properties.TrainingJobSummaries[0].TrainingJobName,
            "output/model.tar.gz",
        ],
    )

    # -- Evaluate: test-set metrics, plots, champion comparison -----------------------------------
    evaluation_report = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
    evaluate = _processor(p, session, "jobs.evaluate", instance_type="EvaluateInstanceType")
    step_evaluate = ProcessingStep(
        name="Evaluate",
        step_args=evaluate.run(
            inputs=[
                ProcessingInput(input_name="model", source=best_model_uri,
                                destination="/opt/ml/processing/input/model"),
                ProcessingInput(input_name="test", source=preprocess_output("test"),
                                destination="/opt/ml/processing/input/test"),
                # For its baseline_statistics.json, copied next to evaluation.json (the drift baseline).
                ProcessingInput(input_name="preprocessor", source=preprocess_output("preprocessor"),
                                destination="/opt/ml/processing/input/preprocessor"),
            ],
            outputs=[
                ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/output/evaluation",
                                 destination=_step_uri(p, "Evaluate", "evaluation")),
            ],
            arguments=[
                "--target-column", p["TargetColumn"],
                "--model-package-group-name", p["ModelPackageGroupName"],
                "--rmse-threshold", p["RMSEThreshold"].to_string(),
                "--champion-tolerance", p["ChampionTolerance"].to_string(),
            ],
        ),
        property_files=[evaluation_report],
    )
    evaluation_json_uri = Join(
        on="/",
        values=[step_evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri,
                "evaluation.json"],
    )
    baseline_statistics_uri = Join(
        on="/",
        values=[step_evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri,
                BASELINE_FILE],
    )

    # -- Register (PendingManualApproval) ---------------------------------------------------------
    model = Model(
        image_uri=p["JobImageUri"],
        model_data=best_model_uri,
        role=ROLE_PLACEHOLDER,
        sagemaker_session=session,
    )
    step_register = ModelStep(
        name="RegisterModel",
        step_args=model.register(
            # What the model server (jobs/serve.py) reads; the test holds the two together.
            content_types=["application/json", "text/csv", "application/x-npy"],
            response_types=["application/json"],
            inference_instances=["ml.m5.large", "ml.m5.xlarge"],
            transform_instances=["ml.m5.xlarge"],
            model_package_group_name=p["ModelPackageGroupName"],
            approval_status="PendingManualApproval",
            model_metrics=ModelMetrics(
                model_statistics=MetricsSource(s3_uri=evaluation_json_uri, content_type="application/json")
            ),
            # What the drift monitor (jobs/drift.py) compares the endpoint's traffic with.
            drift_check_baselines=DriftCheckBaselines(
                model_data_statistics=MetricsSource(s3_uri=baseline_statistics_uri, content_type="application/json")
            ),
            customer_metadata_properties={
                "dataset_uri": p["DatasetLabel"],  # readable; exact when the URI fits the registry's rules
                "dataset_reference": p["DatasetReferenceUri"],
                "dataset_version": p["DatasetVersion"],
                "target_column": p["TargetLabel"],
            },
            description="XGBoost regressor trained on Ray by the ray-mlops training pipeline",
        ),
    )

    # -- Gate: absolute threshold and not worse than the champion (within tolerance) --------------
    rmse = JsonGet(step_name=step_evaluate.name, property_file=evaluation_report,
                   json_path=RMSE_JSON_PATH)
    champion_limit = JsonGet(step_name=step_evaluate.name, property_file=evaluation_report,
                             json_path=CHAMPION_LIMIT_JSON_PATH)
    step_fail = FailStep(
        name="RMSETooHigh",
        error_message=Join(
            on=" ",
            values=["Model rejected: test RMSE", rmse, "must be <= RMSEThreshold", p["RMSEThreshold"],
                    "and <= the champion limit", champion_limit],
        ),
    )
    step_gate = ConditionStep(
        name="CheckRMSE",
        conditions=[
            ConditionLessThanOrEqualTo(left=rmse, right=p["RMSEThreshold"]),
            ConditionLessThanOrEqualTo(left=rmse, right=champion_limit),
        ],
        if_steps=[step_register],
        else_steps=[step_fail],
    )

    return Pipeline(
        name=pipeline_name,
        parameters=list(p.values()),
        steps=[step_ingest, step_preprocess, step_tuning, step_evaluate, step_gate],
        sagemaker_session=session,
    )


# The loggers through which the SDK narrates building offline ("No Job being started", "Popping out
# ...JobName", its config lookup): all three pipeline modules build that way on purpose.
_SDK_NARRATING_LOGGERS = ("sagemaker", "sagemaker.workflow.utilities", "sagemaker.workflow._utils",
                          "sagemaker.estimator", "sagemaker.config")


def definition_json(build: Callable[[], Pipeline] = build_pipeline) -> str:
    """The pipeline definition (`build()`'s; jobs/drift_pipeline.py and jobs/scoring_pipeline.py pass
    their own) as deterministic, pretty-printed JSON (what the stack deploys)."""
    # The SDK's narration of an offline build is exactly what is intended here: keep it out of the output.
    noisy = [logging.getLogger(name) for name in _SDK_NARRATING_LOGGERS]
    levels = [logger.level for logger in noisy]
    try:
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Running within a PipelineSession")
            definition = json.loads(build().definition())
    finally:
        for logger, level in zip(noisy, levels):
            logger.setLevel(level)
    return json.dumps(definition, indent=2, sort_keys=True) + "\n"


def definition_main(build: Callable[[], Pipeline], description: str, argv: list[str] | None = None) -> int:
    """The command line of each pipeline module: `build()`'s definition JSON to `--write FILE` or stdout."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write", metavar="FILE", help="write the definition JSON here (default: stdout)")
    args = parser.parse_args(argv)
    text = definition_json(build)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return definition_main(build_pipeline, "Build the training pipeline definition.", argv)


if __name__ == "__main__":
    sys.exit(main())
