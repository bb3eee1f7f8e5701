"""The drift monitor's SageMaker Pipeline: one ProcessingStep running `python -m jobs.drift` in the
jobs image (docs/monitoring.md, "Drift monitoring").

Built with the SageMaker Python SDK (v2) like jobs/pipeline.py, with its conventions (the jobs image
and role, the role as the literal `${PipelineJobsRoleArn}` substituted at provisioning, no network
call) and serialised to `jobs/drift_pipeline_definition.json`; the stack deploys it as
`DriftMonitorPipeline` (`${AWS::StackName}-drift-monitor`), the schedule starts it.

The job writes its report, plots and metrics itself: their keys depend on the window's end, known
only when it runs, so the step declares no ProcessingOutput. The window ends at the execution's
start (`Execution.StartDateTime`), so a retried step reads the same window. No experiment tracking:
a monitor that runs every hour would add a trial an hour and say nothing new.

    python -m jobs.drift_pipeline --write jobs/drift_pipeline_definition.json
"""
from __future__ import annotations

import sys

from jobs import drift
from jobs.pipeline import ROLE_PLACEHOLDER, _session, definition_main, definition_json as _definition_json

from sagemaker.processing import Processor
from sagemaker.workflow.execution_variables import ExecutionVariables
from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
from sagemaker.workflow.pipeline import Pipeline
from sagemaker.workflow.steps import ProcessingStep

PIPELINE_NAME = "ray-mlops-drift-monitor"
STEP_NAME = "DriftMonitor"


def _parameters() -> dict:
    """EndpointName and WindowMinutes are what the schedule varies; the rest are stack values the
    schedule passes (their defaults are placeholders, like the training pipeline's)."""
    params = [
        ParameterString("EndpointName", default_value="ray-mlops-endpoint"),
        ParameterInteger("WindowMinutes", default_value=60),
        ParameterString("CaptureS3Uri", default_value="s3://mlops-artifacts/capture"),
        ParameterString("MonitoringS3Uri", default_value="s3://mlops-artifacts/monitoring"),
        ParameterString("JobImageUri", default_value="123456789012.dkr.ecr.us-east-1.amazonaws.com/ray-mlops-jobs:latest"),
        ParameterString("ProcessingInstanceType", default_value="ml.m5.large"),
        ParameterFloat("PSIThreshold", default_value=drift.PSI_THRESHOLD),
        ParameterFloat("MissingShareThreshold", default_value=drift.MISSING_SHARE_THRESHOLD),
        ParameterFloat("OutOfRangeThreshold", default_value=drift.OUT_OF_RANGE_THRESHOLD),
        ParameterInteger("MinRows", default_value=drift.MIN_ROWS),
    ]
    return {p.name: p for p in params}


def build_pipeline(pipeline_name: str = PIPELINE_NAME) -> Pipeline:
    """The drift monitor pipeline. Builds offline (no AWS call)."""
    p = _parameters()
    session = _session()
    # One window of capture is counted as it streams (features × bins of memory): one instance, no Ray.
    processor = Processor(
        role=ROLE_PLACEHOLDER,
        image_uri=p["JobImageUri"],
        instance_count=1,
        instance_type=p["ProcessingInstanceType"],
        entrypoint=["python3", "-m", "jobs.drift"],
        base_job_name="ray-mlops-drift",
        sagemaker_session=session,
    )
    step = ProcessingStep(
        name=STEP_NAME,
        step_args=processor.run(
            arguments=[
                "--endpoint-name", p["EndpointName"],
                "--window-minutes", p["WindowMinutes"].to_string(),
                "--window-end", ExecutionVariables.START_DATETIME,
                "--capture-s3-uri", p["CaptureS3Uri"],
                "--monitoring-s3-uri", p["MonitoringS3Uri"],
                "--psi-threshold", p["PSIThreshold"].to_string(),
                "--missing-share-threshold", p["MissingShareThreshold"].to_string(),
                "--out-of-range-threshold", p["OutOfRangeThreshold"].to_string(),
                "--min-rows", p["MinRows"].to_string(),
            ],
        ),
    )
    return Pipeline(
        name=pipeline_name,
        parameters=list(p.values()),
        steps=[step],
        pipeline_experiment_config=None,
        sagemaker_session=session,
    )


def definition_json() -> str:
    return _definition_json(build_pipeline)


def main(argv: list[str] | None = None) -> int:
    return definition_main(build_pipeline, "Build the drift monitor pipeline definition.", argv)


if __name__ == "__main__":
    sys.exit(main())
