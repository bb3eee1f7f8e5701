"""The scoring pipeline definition: current on disk, built offline, and the parameters the
start_scoring function sends (mlops_shared.scoring.pipeline_parameters) are exactly its own."""
from __future__ import annotations

import json
from pathlib import Path

from jobs import scoring_pipeline
from mlops_shared.scoring import ScoringDrop, ScoringSettings, pipeline_parameters
from mlops_shared.serving import ServingPackage
from tests.pipeline_definitions import built_offline

ROOT = Path(__file__).resolve().parents[3]


def test_definition_is_current_built_offline_and_takes_what_start_scoring_sends():
    text = built_offline(scoring_pipeline.definition_json)
    on_disk = (ROOT / "jobs" / "scoring_pipeline_definition.json").read_text()
    assert on_disk == text, "jobs/scoring_pipeline_definition.json is stale: run `make definition`"
    definition = json.loads(text)
    [step] = definition["Steps"]
    assert step["Name"] == "Score" and step["Type"] == "Processing"
    app = step["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["python3", "-m", "jobs.score"]
    assert step["Arguments"]["RoleArn"] == "${PipelineJobsRoleArn}"
    declared = {p["Name"] for p in definition["Parameters"]}
    package = ServingPackage("arn:aws:sagemaker:us-east-1:1:model-package/g/1", 1, "g", "s3://b/m.tar.gz", "img",
                             "Approved", "endpoint", "e", {})
    settings = ScoringSettings("p", "b", "t", "g", "e", job_image_uri="img", processing_instance_type="ml.m5.large")
    sent = {p["Name"] for p in pipeline_parameters(ScoringDrop("b", "score/a.csv", "v", "e", 1), package, settings)}
    assert sent == declared
    # Every argument the job parses comes from a parameter.
    used = {a["Get"].removeprefix("Parameters.") for a in app["ContainerArguments"] if isinstance(a, dict)}
    assert used == declared - {"JobImageUri", "ProcessingInstanceType"}
