"""The scoring pipeline `${AWS::StackName}-scoring`: one ProcessingStep running `python -m jobs.score`
in the jobs image (docs/scoring.md).

Started by the start_scoring function for each file dropped under `score/`, with the drop and the
serving package as parameters; built offline with the SageMaker SDK like jobs/pipeline.py and
serialised to `jobs/scoring_pipeline_definition.json` (the template's ScoringPipeline points at it
through Metadata.Mlops.DefinitionFile; the role is the literal `${PipelineJobsRoleArn}`).

    python -m jobs.scoring_pipeline --write jobs/scoring_pipeline_definition.json
"""
from __future__ import annotations

import sys

# jobs.pipeline sets the SDK's quiet mode before sagemaker is first imported.
from jobs.pipeline import ROLE_PLACEHOLDER, _session, definition_main  # noqa: E402
from jobs.pipeline import definition_json as _definition_json  # noqa: E402
from sagemaker.processing import Processor  # noqa: E402
from sagemaker.workflow.parameters import ParameterString  # noqa: E402
from sagemaker.workflow.pipeline import Pipeline  # noqa: E402
from sagemaker.workflow.steps import ProcessingStep  # noqa: E402

PIPELINE_NAME = "ray-mlops-scoring"
DEFINITION_FILE = __file__.rsplit("/", 1)[0] + "/scoring_pipeline_definition.json"
# The names are the contract with mlops_shared.scoring.pipeline_parameters (docs/contracts.md).
PARAMETERS = {
    "InputBucket": "mlops-data",
    "InputKey": "score/example.csv",
    "InputVersionId": "",
    "ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/example/1",
    "ModelPackageVersion": "1",
    "ModelDataUrl": "s3://mlops-artifacts/pipeline/example/Train/output/model.tar.gz",
    "Explain": "false",
    "JobImageUri": "ray-mlops-jobs:latest",
    "ProcessingInstanceType": "ml.m5.xlarge",
}


def build_pipeline(pipeline_name: str = PIPELINE_NAME) -> Pipeline:
    p = {name: ParameterString(name, default_value=value) for name, value in PARAMETERS.items()}
    session = _session()
    processor = Processor(
        role=ROLE_PLACEHOLDER,
        image_uri=p["JobImageUri"],
        instance_count=1,  # one streaming reader: the file is scored in one pass (docs/scoring.md)
        instance_type=p["ProcessingInstanceType"],
        entrypoint=["python3", "-m", "jobs.score"],
        base_job_name="ray-mlops-score",
        sagemaker_session=session,
    )
    step = ProcessingStep(
        name="Score",
        step_args=processor.run(arguments=[
            "--input-bucket", p["InputBucket"],
            "--input-key", p["InputKey"],
            "--input-version-id", p["InputVersionId"],
            "--model-package-arn", p["ModelPackageArn"],
            "--model-package-version", p["ModelPackageVersion"],
            "--model-data-url", p["ModelDataUrl"],
            "--explain", p["Explain"],
        ]),
    )
    # No experiment tracking: a scoring run trains nothing, and the execution role then needs no
    # experiment permissions for this pipeline.
    return Pipeline(name=pipeline_name, parameters=list(p.values()), steps=[step], sagemaker_session=session,
                    pipeline_experiment_config=None)


def definition_json() -> str:
    return _definition_json(build_pipeline)


def main(argv: list[str] | None = None) -> int:
    return definition_main(build_pipeline, "Build the scoring pipeline definition.", argv)


if __name__ == "__main__":
    sys.exit(main())
