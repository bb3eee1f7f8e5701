"""Step caching on AWS, reviewed against the SDK's known pitfalls (docs/performance.md, "Step caching").

SageMaker decides a cache hit on a few request attributes per step type (AWS docs: "Default cache key
attributes by pipeline step type"), after resolving the step's expressions. The known ways to lose
hits are values that change per build or per execution inside those attributes: timestamped job
names in hyperparameters (sagemaker-python-sdk#2940, #3651), code uploaded to timestamped S3 paths
(#2736, #2790), an execution id in an input. The way to serve stale results is an input that stays
the same when the data changes (the reference sample's constant input URI).

These tests resolve the generated definition's cache keys for simulated executions and prove: the
definition is the same whenever it is built; a re-run on the same dataset version hits every cached
step (whatever its execution id); a new dataset version misses every one.
"""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from jobs import pipeline

# AWS docs, "Default cache key attributes by pipeline step type".
PROCESSING_KEY = ("AppSpecification", "Environment", "ProcessingInputs")
TUNING_DEFINITION_KEY = ("AlgorithmSpecification", "HyperParameterRanges", "InputDataConfig",
                         "StaticHyperParameters", "TuningObjective")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def definition_text():
    return pipeline.definition_json()


@pytest.fixture(scope="module")
def definition(definition_text):
    return json.loads(definition_text)


def _cached_steps(definition) -> list[dict]:
    """Top-level steps with caching on, in order (the condition's branches hold no cached step)."""
    return [s for s in definition["Steps"] if s.get("CacheConfig", {}).get("Enabled")]


def key_attributes(step: dict) -> dict:
    args = step["Arguments"]
    if step["Type"] == "Processing":
        return {name: args.get(name) for name in PROCESSING_KEY}
    if step["Type"] == "Tuning":
        training = args["TrainingJobDefinition"]
        return {"HyperParameterTuningJobConfig": args["HyperParameterTuningJobConfig"],
                "TrainingJobDefinition": {name: training.get(name) for name in TUNING_DEFINITION_KEY}}
    raise AssertionError(f"no cache key attributes known for step type {step['Type']}")


def resolve(value, parameters: dict, execution_id: str, step_outputs: dict):
    """The value as SageMaker sees it at run time: parameters, execution variables and other steps'
    properties substituted, joins joined."""
    if isinstance(value, dict):
        if set(value) == {"Get"}:
            ref = value["Get"]
            if ref.startswith("Parameters."):
                return parameters[ref.split(".", 1)[1]]
            if ref.startswith("Execution."):
                return {"Execution.PipelineExecutionId": execution_id}[ref]
            if ref.startswith("Steps."):
                step = ref.split(".")[1]
                return f"{step_outputs[step]}:{ref}"
            raise AssertionError(f"unknown reference {ref}")
        if set(value) == {"Std:Join"}:
            join = value["Std:Join"]
            return join["On"].join(str(resolve(v, parameters, execution_id, step_outputs)) for v in join["Values"])
        return {k: resolve(v, parameters, execution_id, step_outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, parameters, execution_id, step_outputs) for v in value]
    return value


def run(definition, parameters: dict, execution_id: str, cache: dict) -> dict[str, bool]:
    """Simulates one execution of the cached steps: {step: cache hit?}. A hit's properties are
    those of the execution that ran the step (what SageMaker returns for a cached step), so its
    outputs carry that execution's id."""
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    values = {**defaults, **parameters}
    outputs: dict[str, str] = {}
    hits = {}
    for step in _cached_steps(definition):
        material = json.dumps(resolve(key_attributes(step), values, execution_id, outputs), sort_keys=True)
        key = hashlib.sha256(material.encode()).hexdigest()
        hits[step["Name"]] = key in cache
        # Outputs are under <ArtifactsS3Uri>/<execution id>/<step>: the run that made them.
        outputs[step["Name"]] = cache.setdefault(key, f"outputs-of-{execution_id}-{step['Name']}")
    return hits


def test_the_definition_is_the_same_whenever_it_is_built(definition_text):
    """No timestamp, random job name or upload path differs between builds (or upserts)."""
    assert pipeline.definition_json() == definition_text
    assert not TIMESTAMP.search(definition_text)
    assert "sagemaker_job_name" not in definition_text  # the TuningStep pitfall of #3651
    assert "sagemaker_submit_directory" not in definition_text  # no source_dir upload (#2736)


def test_the_steps_that_matter_are_cached(definition):
    assert [s["Name"] for s in _cached_steps(definition)] == ["Ingest", "Preprocess", "HPTuning"]
    for step in _cached_steps(definition):
        assert step["CacheConfig"]["ExpireAfter"] == pipeline.CACHE_EXPIRY


def test_no_per_execution_value_is_in_a_cache_key(definition):
    for step in _cached_steps(definition):
        text = json.dumps(key_attributes(step))
        assert "Execution." not in text, step["Name"]


def test_the_same_dataset_version_hits_and_a_new_one_misses(definition):
    cache: dict = {}
    dataset = {"DatasetReferenceUri": "s3://artifacts/pipeline/datasets/abc.json", "DatasetVersion": "v1"}
    assert run(definition, dataset, "exec-1", cache) == {"Ingest": False, "Preprocess": False, "HPTuning": False}
    # The same object version again (an S3 event delivered twice, a manual re-run, a pipeline
    # upsert in between): every cached step is a hit, whatever the execution id.
    assert run(definition, dataset, "exec-2", cache) == {"Ingest": True, "Preprocess": True, "HPTuning": True}
    # Settings outside the keys (instance types, counts, the evaluation gate) keep the hits.
    unrelated = {**dataset, "ProcessingInstanceType": "ml.m5.2xlarge", "TrainingInstanceCount": 2,
                 "RMSEThreshold": 1.0}
    assert run(definition, unrelated, "exec-3", cache) == {"Ingest": True, "Preprocess": True, "HPTuning": True}
    # A new version of the same key (the reference document's URI digests bucket, key and version):
    # no step may come from the cache.
    new_version = {"DatasetReferenceUri": "s3://artifacts/pipeline/datasets/def.json", "DatasetVersion": "v2"}
    assert run(definition, new_version, "exec-4", cache) == {"Ingest": False, "Preprocess": False, "HPTuning": False}
    # Only the version changing (same reference URI) is enough on its own, too.
    assert not any(run(definition, {**dataset, "DatasetVersion": "v3"}, "exec-5", cache).values())


def test_a_setting_that_changes_the_result_misses_from_its_step_on(definition):
    cache: dict = {}
    dataset = {"DatasetReferenceUri": "s3://artifacts/pipeline/datasets/abc.json", "DatasetVersion": "v1"}
    run(definition, dataset, "exec-1", cache)
    assert run(definition, {**dataset, "TrainFraction": 0.7, "ValidationFraction": 0.2, "TestFraction": 0.1},
               "exec-2", cache) == {"Ingest": True, "Preprocess": False, "HPTuning": False}
    assert run(definition, {**dataset, "MaxTuningJobs": 8}, "exec-3", cache) == {
        "Ingest": True, "Preprocess": True, "HPTuning": False}
    # ResourceLimits are part of HyperParameterTuningJobConfig, which AWS keys on whole: changing the
    # parallelism re-runs the tuning (docs/performance.md says so next to the dev/prod settings).
    assert run(definition, {**dataset, "MaxParallelTuningJobs": 4}, "exec-3b", cache) == {
        "Ingest": True, "Preprocess": True, "HPTuning": False}
    assert run(definition, {**dataset, "JobImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:v2"},
               "exec-4", cache) == {"Ingest": False, "Preprocess": False, "HPTuning": False}


def test_a_stale_input_would_be_caught():
    """The simulation can fail: a step whose input stays the same for new data (the reference
    sample's constant URI) is reported as a hit on new data."""
    definition = {
        "Parameters": [{"Name": "DatasetVersion", "DefaultValue": "v1"}],
        "Steps": [{"Name": "Preprocess", "Type": "Processing", "CacheConfig": {"Enabled": True},
                   "Arguments": {"AppSpecification": {"ImageUri": "img"},
                                 "ProcessingInputs": [{"S3Input": {"S3Uri": "s3://bucket/constant.csv"}}]}}],
    }
    run(definition, {"DatasetVersion": "v1"}, "exec-1", cache := {})
    assert run(definition, {"DatasetVersion": "v2"}, "exec-2", cache) == {"Preprocess": True}
