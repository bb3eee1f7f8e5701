"""The drift monitor's pipeline definition: current on disk, built offline, one processing step
running jobs.drift with the agreed parameters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import drift_pipeline
from tests.pipeline_definitions import built_offline

DEFINITION_FILE = Path(drift_pipeline.__file__).with_name("drift_pipeline_definition.json")


@pytest.fixture(scope="module")
def built_text():
    return built_offline(drift_pipeline.definition_json)


def test_definition_file_is_current(built_text):
    assert DEFINITION_FILE.read_text() == built_text, "run `make definition`"


def test_one_processing_step_runs_the_drift_job_with_the_schedule_parameters(built_text):
    definition = json.loads(built_text)
    parameters = {p["Name"]: p for p in definition["Parameters"]}
    assert {"EndpointName", "WindowMinutes", "CaptureS3Uri", "MonitoringS3Uri", "JobImageUri"} <= set(parameters)
    assert parameters["WindowMinutes"]["Type"] == "Integer"
    assert definition["PipelineExperimentConfig"] is None
    [step] = definition["Steps"]
    assert step["Type"] == "Processing" and step["Name"] == "DriftMonitor"
    arguments = step["Arguments"]
    assert arguments["AppSpecification"]["ContainerEntrypoint"] == ["python3", "-m", "jobs.drift"]
    assert arguments["AppSpecification"]["ImageUri"] == {"Get": "Parameters.JobImageUri"}
    assert arguments["RoleArn"] == "${PipelineJobsRoleArn}"
    assert arguments["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    container = arguments["AppSpecification"]["ContainerArguments"]
    assert container[container.index("--window-end") + 1] == {"Get": "Execution.StartDateTime"}
    assert container[container.index("--endpoint-name") + 1] == {"Get": "Parameters.EndpointName"}
