"""The pipeline definition: current on disk, built offline, and carrying the agreed shape."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import pipeline
from tests.pipeline_definitions import built_offline

CONTRACT_PARAMETERS = {
    "InputDataUri", "DatasetReferenceUri", "DatasetLabel", "DatasetVersion", "TargetColumn", "TargetLabel", "FeatureGroupName", "ModelPackageGroupName",
    "ArtifactsS3Uri", "JobImageUri", "RMSEThreshold", "ChampionTolerance", "TrainFraction",
    "ValidationFraction", "TestFraction", "MaxRejectedRows", "IngestActors", "IngestActorCpus",
    "OfflineStoreTimeoutSeconds", "IngestionMode", "ProcessingInstanceType", "ProcessingInstanceCount", "EvaluateInstanceType",
    "TrainingInstanceType", "TrainingInstanceCount", "MaxTuningJobs", "MaxParallelTuningJobs",
}


@pytest.fixture(scope="module")
def built_text():
    """Builds the definition once with every outbound connection refused."""
    return built_offline(pipeline.definition_json)


@pytest.fixture(scope="module")
def definition(built_text):
    return json.loads(built_text)


def _steps(definition):
    """Every step, including those nested in condition branches, by name."""
    found = {}

    def walk(steps):
        for step in steps:
            found[step["Name"]] = step
            if step["Type"] == "Condition":
                walk(step["Arguments"].get("IfSteps", []))
                walk(step["Arguments"].get("ElseSteps", []))

    walk(definition["Steps"])
    return found


def test_definition_file_is_current(built_text):
    on_disk = Path(pipeline.DEFINITION_FILE).read_text(encoding="utf-8")
    assert on_disk == built_text, "jobs/pipeline_definition.json is stale: run `make definition`"


def test_parameters_are_the_contract(definition):
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert set(params) == CONTRACT_PARAMETERS
    assert params["RMSEThreshold"] == {"Name": "RMSEThreshold", "Type": "Float", "DefaultValue": 15000.0}
    assert params["TargetColumn"]["DefaultValue"] == "PRICE"
    assert params["MaxTuningJobs"]["DefaultValue"] == 4
    assert params["IngestionMode"]["DefaultValue"] == "Auto"
    assert (params["TrainFraction"]["DefaultValue"], params["ValidationFraction"]["DefaultValue"],
            params["TestFraction"]["DefaultValue"]) == (0.6, 0.2, 0.2)


def test_steps_and_their_wiring(definition):
    steps = _steps(definition)
    assert {name: s["Type"] for name, s in steps.items()} == {
        "Ingest": "Processing", "Preprocess": "Processing", "HPTuning": "Tuning", "Evaluate": "Processing",
        "CheckRMSE": "Condition", "RegisterModel-RegisterModel": "RegisterModel", "RMSETooHigh": "Fail",
    }
    for name, module in (("Ingest", "jobs.ingest"), ("Preprocess", "jobs.preprocess"), ("Evaluate", "jobs.evaluate")):
        assert steps[name]["Arguments"]["AppSpecification"]["ContainerEntrypoint"] == ["python3", "-m", module]
        assert steps[name]["Arguments"]["RoleArn"] == pipeline.ROLE_PLACEHOLDER
    manifest_input = steps["Preprocess"]["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    assert manifest_input == {"Get": "Steps.Ingest.ProcessingOutputConfig.Outputs['manifest'].S3Output.S3Uri"}
    model_input = steps["Evaluate"]["Arguments"]["ProcessingInputs"][0]
    assert model_input["InputName"] == "model"
    assert {"Get": "Steps.HPTuning.TrainingJobSummaries[0].TrainingJobName"} in model_input["S3Input"]["S3Uri"]["Std:Join"]["Values"]
    assert steps["Evaluate"]["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]


def test_every_output_lives_under_the_execution(definition):
    steps = _steps(definition)
    for name in ("Ingest", "Preprocess", "Evaluate"):
        for output in steps[name]["Arguments"]["ProcessingOutputConfig"]["Outputs"]:
            values = output["S3Output"]["S3Uri"]["Std:Join"]["Values"]
            assert values[:3] == [{"Get": "Parameters.ArtifactsS3Uri"}, {"Get": "Execution.PipelineExecutionId"}, name]
    tuning_output = steps["HPTuning"]["Arguments"]["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"]
    assert tuning_output["Std:Join"]["Values"][:3] == [
        {"Get": "Parameters.ArtifactsS3Uri"}, {"Get": "Execution.PipelineExecutionId"}, "HPTuning"]


def test_tuning_ranges_objective_and_metrics(definition):
    config = _steps(definition)["HPTuning"]["Arguments"]["HyperParameterTuningJobConfig"]
    ranges = config["ParameterRanges"]
    assert {(r["Name"], r["MinValue"], r["MaxValue"]) for r in ranges["IntegerParameterRanges"]} == {
        ("max_depth", "1", "8"), ("min_child_weight", "0", "120")}
    assert {(r["Name"], r["MinValue"], r["MaxValue"]) for r in ranges["ContinuousParameterRanges"]} == {
        ("eta", "0.2", "1"), ("subsample", "0.2", "1")}
    assert config["HyperParameterTuningJobObjective"] == {"MetricName": "validation:rmse", "Type": "Minimize"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": {"Get": "Parameters.MaxTuningJobs"},
                                        "MaxParallelTrainingJobs": {"Get": "Parameters.MaxParallelTuningJobs"}}
    definition_ = _steps(definition)["HPTuning"]["Arguments"]["TrainingJobDefinition"]
    regexes = {m["Name"]: m["Regex"] for m in definition_["AlgorithmSpecification"]["MetricDefinitions"]}
    import re
    assert float(re.search(regexes["validation:rmse"], "METRIC validation:rmse=1234.5").group(1)) == 1234.5
    assert float(re.search(regexes["validation:mae"], "METRIC validation:mae=1e3").group(1)) == 1000.0
    assert definition_["StaticHyperParameters"]["num_round"] == "100"
    assert definition_["StaticHyperParameters"]["tree_method"] == "approx"


def test_dataset_identity_is_in_every_cached_steps_cache_key(definition):
    for name, step in _steps(definition).items():
        if not step.get("CacheConfig", {}).get("Enabled"):
            continue
        args = step["Arguments"]
        if step["Type"] == "Processing":
            key_part = json.dumps([args.get("AppSpecification"), args.get("Environment"), args.get("ProcessingInputs")])
        else:  # tuning: the training job definition's inputs/environment
            key_part = json.dumps(args["TrainingJobDefinition"])
        # The reference document's URI is a digest of bucket, key and version.
        assert "Parameters.DatasetReferenceUri" in key_part, name
        assert "Parameters.DatasetVersion" in key_part, name
    assert not _steps(definition)["Evaluate"].get("CacheConfig", {}).get("Enabled")


def test_no_job_field_carries_the_raw_dataset_uri(definition):
    """Arguments and environment values hold 256 characters, an S3 key 1024: the jobs get the
    reference document, never InputDataUri."""
    assert "Parameters.InputDataUri" not in json.dumps(list(_steps(definition).values()))


def test_gate_condition_register_and_fail(definition):
    steps = _steps(definition)
    conditions = steps["CheckRMSE"]["Arguments"]["Conditions"]
    assert [c["Type"] for c in conditions] == ["LessThanOrEqualTo", "LessThanOrEqualTo"]
    assert conditions[0]["LeftValue"]["Std:JsonGet"]["Path"] == "regression_metrics.rmse.value"
    assert conditions[0]["RightValue"] == {"Get": "Parameters.RMSEThreshold"}
    assert conditions[1]["RightValue"]["Std:JsonGet"]["Path"] == "gate.champion_rmse_limit"
    register = steps["RegisterModel-RegisterModel"]["Arguments"]
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["ModelPackageGroupName"] == {"Get": "Parameters.ModelPackageGroupName"}
    # The package promises exactly what the model server reads, so a client going by the registry works.
    from jobs.serve import CSV_TYPES, JSON_TYPES, NPY_TYPES

    supported = register["InferenceSpecification"]["SupportedContentTypes"]
    assert supported == ["application/json", "text/csv", "application/x-npy"]
    assert all(t in JSON_TYPES + CSV_TYPES + NPY_TYPES for t in supported)
    assert register["InferenceSpecification"]["Containers"][0]["Image"] == {"Get": "Parameters.JobImageUri"}
    assert set(register["CustomerMetadataProperties"]) == {"dataset_uri", "dataset_reference", "dataset_version",
                                                           "target_column"}
    assert register["CustomerMetadataProperties"]["dataset_uri"] == {"Get": "Parameters.DatasetLabel"}
    statistics = register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]["Std:Join"]["Values"]
    assert statistics[-1] == "evaluation.json"
    message = json.dumps(steps["RMSETooHigh"]["Arguments"]["ErrorMessage"])
    assert "regression_metrics.rmse.value" in message and "Parameters.RMSEThreshold" in message
    assert "gate.champion_rmse_limit" in message


def test_cli_writes_the_definition(tmp_path, built_text):
    out = tmp_path / "definition.json"
    assert pipeline.main(["--write", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == built_text
