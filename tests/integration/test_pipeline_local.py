"""The real pipeline definition, executed end to end by the local executor on local Ray: the real job
scripts, Feature Store runtime, moto behind the gateway. One gateway and one Ray head serve every
test of this module; the tests run in order and build on each other's cache."""
from __future__ import annotations

import json

import boto3
import pytest

from jobs.pipeline import definition_json
from local.cli.datagen import generate_housing
from local.aws.sagemaker_pipelines.service import PipelineExecutor
from mlops_shared.artifacts import DatasetReference
from mlops_shared.dataset_reference import read_reference, registry_label, write_reference
from local.ray_head import RayHead
from tests.pipeline_gateway import pipeline_gateway

pytestmark = pytest.mark.slow

ROLE = "arn:aws:iam::123456789012:role/pipeline-jobs"
PIPELINE = "ray-mlops-training"
GROUP = "ray-mlops-it"
ROWS = 3000
TIMEOUT = 1500
# Two random draws from the reference search space (min_child_weight up to 120, max_depth from 1)
# on 1,800 training rows reach an RMSE of ~20k; even hand-picked parameters only reach 10-15k at
# this size. The 15,000 default is for full-size data, so this small run gates at 30,000.
SMALL_DATA_THRESHOLD = 30000


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    state = tmp_path_factory.mktemp("pipeline-local")
    with pipeline_gateway() as gateway:
        progress: list[tuple] = []
        with RayHead(num_cpus=2, state_dir=state) as head:
            executor = PipelineExecutor(gateway, state / "work", head.address, warm_jobs=True,
                                        substitutions={"PipelineJobsRoleArn": ROLE},
                                        on_progress=lambda *event: progress.append(event)).install()
            s3, sm = boto3.client("s3"), boto3.client("sagemaker")
            for bucket in ("it-data", "it-artifacts"):
                s3.create_bucket(Bucket=bucket)
            sm.create_model_package_group(ModelPackageGroupName=GROUP)
            sm.create_pipeline(PipelineName=PIPELINE, PipelineDefinition=definition_json(), RoleArn=ROLE)
            try:
                yield executor, s3, sm, progress
            finally:
                executor.shutdown()


def upload(s3, key: str, seed: int) -> str:
    body = generate_housing(ROWS, seed, 0.0).to_csv(index=False).encode()
    s3.put_object(Bucket="it-data", Key=key, Body=body)
    return s3.head_object(Bucket="it-data", Key=key)["ETag"].strip('"')


def execute(local, key: str, version: str, token: str, **overrides):
    """Starts an execution as intake does: the dataset reference written, then the parameters."""
    executor, s3, sm, _ = local
    target = overrides.get("TargetColumn", "PRICE")
    reference = DatasetReference(bucket="it-data", key=key, version=version, version_id=None, etag=version,
                                 target_column=target, target_source="default")
    uri = f"s3://it-data/{key}"
    parameters = {
        "InputDataUri": uri, "DatasetLabel": registry_label(uri),
        "DatasetReferenceUri": write_reference(s3, "s3://it-artifacts/pipeline", reference),
        "DatasetVersion": version, "TargetColumn": "PRICE",
        "FeatureGroupName": "it-houses", "ModelPackageGroupName": GROUP, "ArtifactsS3Uri": "s3://it-artifacts/pipeline",
        "MaxTuningJobs": "2", "MaxParallelTuningJobs": "2", "OfflineStoreTimeoutSeconds": "300",
        **overrides,
    }
    arn = sm.start_pipeline_execution(
        PipelineName=PIPELINE, ClientRequestToken=token.ljust(32, "-"),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in parameters.items()])["PipelineExecutionArn"]
    described = executor.wait(arn, timeout=TIMEOUT)
    steps = {s["StepName"]: s for s in sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]}
    return arn, described, steps


@pytest.fixture(scope="module")
def first_run(local):
    _, s3, _, _ = local
    version = upload(s3, "incoming/houses.csv", seed=1)
    return execute(local, "incoming/houses.csv", version, "first-run", RMSEThreshold=str(SMALL_DATA_THRESHOLD))


def test_pipeline_trains_evaluates_and_registers(local, first_run):
    executor, s3, sm, progress = local
    arn, described, steps = first_run
    assert described["PipelineExecutionStatus"] == "Succeeded", (described, steps)
    assert [s for s in steps] == ["RegisterModel-RegisterModel", "CheckRMSE", "Evaluate", "HPTuning", "Preprocess", "Ingest"]
    assert all("CacheHitResult" not in s for s in steps.values())
    assert steps["CheckRMSE"]["Metadata"] == {"Condition": {"Outcome": "True"}}

    tuning = executor.step_properties(arn)["HPTuning"]
    summaries = tuning["TrainingJobSummaries"]
    assert len(summaries) == 2
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries]
    assert values == sorted(values)  # best first
    for summary in summaries:
        assert 1 <= int(summary["TunedHyperParameters"]["max_depth"]) <= 8
        assert 0.2 <= float(summary["TunedHyperParameters"]["eta"]) <= 1

    execution_id = arn.rsplit("/", 1)[1]
    report = json.loads(s3.get_object(Bucket="it-artifacts",
                                      Key=f"pipeline/{execution_id}/Evaluate/evaluation/evaluation.json")["Body"].read())
    rmse = report["regression_metrics"]["rmse"]["value"]
    assert 0 < rmse < SMALL_DATA_THRESHOLD
    assert report["gate"]["rmse_threshold"] == SMALL_DATA_THRESHOLD
    package_arn = steps["RegisterModel-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    package = sm.describe_model_package(ModelPackageName=package_arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["ModelPackageGroupName"] == GROUP
    best = summaries[0]["TrainingJobName"]
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == \
        f"s3://it-artifacts/pipeline/{execution_id}/HPTuning/models/{best}/output/model.tar.gz"
    metadata = package["CustomerMetadataProperties"]
    assert metadata["dataset_uri"] == "s3://it-data/incoming/houses.csv"
    assert read_reference(s3, metadata["dataset_reference"]).s3_uri == "s3://it-data/incoming/houses.csv"
    # The executor owns the execution and answers every API about it.
    parameters = {p["Name"]: p["Value"] for p in
                  sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]}
    assert parameters["DatasetReferenceUri"] == metadata["dataset_reference"] and parameters["MaxTuningJobs"] == "2"
    assert parameters["RMSEThreshold"] == str(float(SMALL_DATA_THRESHOLD))
    definition = json.loads(sm.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)["PipelineDefinition"])
    assert [step["Name"] for step in definition["Steps"]][0] == "Ingest"
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith(f"{execution_id}/Evaluate/evaluation/evaluation.json")
    # The drift baseline: Preprocess's statistics of the raw train split, next to evaluation.json,
    # registered as the package's DriftCheckBaselines (docs/monitoring.md).
    baseline_uri = package["DriftCheckBaselines"]["ModelDataQuality"]["Statistics"]["S3Uri"]
    assert baseline_uri == f"s3://it-artifacts/pipeline/{execution_id}/Evaluate/evaluation/baseline_statistics.json"
    baseline_document = json.loads(s3.get_object(Bucket="it-artifacts", Key=baseline_uri.split("/", 3)[3])["Body"].read())
    assert baseline_document["target"] == "PRICE" and "PRICE" in [c["name"] for c in baseline_document["columns"]]
    assert abs(baseline_document["rows"] - 3 * report["rows"]["test"]) <= 2  # the train split of 0.6/0.2/0.2
    assert (arn, "HPTuning", "Succeeded") in progress


def test_same_dataset_reuses_the_cache_and_a_high_rmse_fails_the_gate(local, first_run):
    first_arn, _, first_steps = first_run
    _, s3, _, _ = local
    etag = s3.head_object(Bucket="it-data", Key="incoming/houses.csv")["ETag"].strip('"')
    _, described, steps = execute(local, "incoming/houses.csv", etag, "strict-threshold", RMSEThreshold="1")
    for name in ("Ingest", "Preprocess", "HPTuning"):
        assert steps[name]["CacheHitResult"] == {"SourcePipelineExecutionArn": first_arn}, name
        assert steps[name]["Metadata"] == first_steps[name]["Metadata"]
    assert "CacheHitResult" not in steps["Evaluate"]
    assert described["PipelineExecutionStatus"] == "Failed"
    assert steps["CheckRMSE"]["Metadata"] == {"Condition": {"Outcome": "False"}}
    assert "RegisterModel-RegisterModel" not in steps
    message = steps["RMSETooHigh"]["FailureReason"]
    assert steps["RMSETooHigh"]["Metadata"] == {"Fail": {"ErrorMessage": message}}
    assert "RMSEThreshold 1.0" in message and "champion limit" in message
    rmse = float(message.split("test RMSE ")[1].split()[0])
    assert 0 < rmse < SMALL_DATA_THRESHOLD


def test_new_dataset_version_misses_the_cache_and_bad_fractions_fail_preprocess(local, first_run):
    _, s3, _, _ = local
    version = upload(s3, "incoming/houses.csv", seed=2)  # same key, new content: a new version
    _, described, steps = execute(local, "incoming/houses.csv", version, "bad-fractions",
                                  TrainFraction="0.5", ValidationFraction="0.5", TestFraction="0.1")
    assert "CacheHitResult" not in steps["Ingest"]
    assert steps["Ingest"]["StepStatus"] == "Succeeded"
    assert described["PipelineExecutionStatus"] == "Failed"
    assert steps["Preprocess"]["StepStatus"] == "Failed"
    reason = steps["Preprocess"]["FailureReason"]
    assert "1.1" in reason or "fraction" in reason.lower(), reason
    assert "HPTuning" not in steps
    assert "Preprocess" in described["FailureReason"]


def test_absent_target_column_fails_with_the_columns_found(local, first_run):
    _, s3, _, _ = local
    etag = s3.head_object(Bucket="it-data", Key="incoming/houses.csv")["ETag"].strip('"')
    _, described, steps = execute(local, "incoming/houses.csv", etag, "no-target", TargetColumn="SALE_PRICE")
    assert described["PipelineExecutionStatus"] == "Failed"
    failed = [s for s in steps.values() if s["StepStatus"] == "Failed"]
    assert [s["StepName"] for s in failed] == ["Ingest"]
    assert "SALE_PRICE" in failed[0]["FailureReason"] and "SQUARE_FEET" in failed[0]["FailureReason"]


MESSY_NAMES = {"YEAR_BUILT": "Year Built", "SQUARE_FEET": "Square Feet", "NUM_BEDROOMS": "Bedrooms [#]",
               "LOT_ACRES": "Lot (acres)", "GARAGE_SPACES": "größe_m²", "FRONT_PORCH": "hour", "DECK": "prediction",
               "PRICE": "Sale Price"}


def test_a_csv_as_people_have_it_is_registered_under_its_own_names(local, first_run):
    """Human and reserved column names, blanks, NA spellings, rows without a target, a malformed row
    far down the file and an ordinary file name: the real steps train on it and register it; every
    artifact a person reads speaks the CSV's names."""
    executor, s3, sm, _ = local
    frame = generate_housing(ROWS, seed=8, noise_std=0.0).rename(columns=MESSY_NAMES).astype(object)
    frame.loc[frame.index[::8], "Lot (acres)"] = ""
    frame.loc[frame.index[3::11], "Square Feet"] = "NaN"
    frame.loc[frame.index[[5, 500]], "Sale Price"] = "NA"
    lines = frame.to_csv(index=False).splitlines()
    lines[2500] += ",17"  # one field too many, far past any sample: one rejected row
    key = "incoming/My Houses (2024) #3 & co's, größe.csv"
    s3.put_object(Bucket="it-data", Key=key, Body=("\n".join(lines) + "\n").encode("utf-8"))
    etag = s3.head_object(Bucket="it-data", Key=key)["ETag"].strip('"')
    arn, described, steps = execute(local, key, etag, "people-csv", TargetColumn="Sale Price",
                                    TargetLabel=registry_label("Sale Price"), MaxRejectedRows="1",
                                    # Blanks in two features cost accuracy on this small a set.
                                    RMSEThreshold="60000")
    assert described["PipelineExecutionStatus"] == "Succeeded", {n: s.get("FailureReason") for n, s in steps.items()}

    execution_id = arn.rsplit("/", 1)[1]
    base = f"pipeline/{execution_id}"
    manifest = json.loads(s3.get_object(Bucket="it-artifacts", Key=f"{base}/Ingest/manifest/manifest.json")["Body"].read())
    assert manifest["column_names"] == list(frame.columns)
    assert manifest["features"][manifest["column_names"].index("hour")] == "hour_2"
    assert (manifest["rejected_rows"], manifest["dropped_rows"], manifest["row_count"]) == (1, 2, ROWS - 3)
    report = json.loads(s3.get_object(Bucket="it-artifacts", Key=f"{base}/Evaluate/evaluation/evaluation.json")["Body"].read())
    features = [c for c in frame.columns if c != "Sale Price"]
    assert report["target"] == "Sale Price" and sorted(report["feature_importance"]) == sorted(features)
    assert report["smoke_prediction_column"] == "prediction_2"
    assert 0.1 < report["missing_share"]["Lot (acres)"] < 0.15
    sample = s3.get_object(Bucket="it-artifacts", Key=f"{base}/Evaluate/evaluation/smoke_sample.csv")["Body"].read()
    assert sample.decode("utf-8").splitlines()[0].split(",")[-2:] == ["Sale Price", "prediction_2"]
    package_arn = steps["RegisterModel-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    metadata = sm.describe_model_package(ModelPackageName=package_arn)["CustomerMetadataProperties"]
    assert metadata["target_column"] == "Sale Price"
    assert read_reference(s3, metadata["dataset_reference"]).key == key


def test_a_warm_training_job_trains_the_same_model_as_a_cold_one(local, first_run, tmp_path):
    """The warm path (a job forked from a pre-imported Python) against a fresh process, on the
    first run's best trial: same hyperparameters, channels and role, so the same metrics and the
    same model.json byte for byte (one actor, fixed seed: XGBoost is deterministic)."""
    from dataclasses import replace

    from local.aws.sagemaker_pipelines.jobs import run_training_job
    from local.aws.sagemaker_pipelines.tuning import TUNING_OBJECTIVE_HYPERPARAMETER

    executor, _, _, _ = local
    arn, described, _ = first_run
    assert described["PipelineExecutionStatus"] == "Succeeded"
    assert executor.warm_pool is not None
    tuning = executor.step_properties(arn)["HPTuning"]
    definition = tuning["TrainingJobDefinition"]
    best = tuning["TrainingJobSummaries"][0]
    hyperparameters = {**{k: str(v) for k, v in definition["StaticHyperParameters"].items()},
                       TUNING_OBJECTIVE_HYPERPARAMETER: "validation:rmse", **best["TunedHyperParameters"]}
    runtime = executor.runner._job_runtime(executor._executions[arn], definition["RoleArn"], "WarmCheck")
    warm_before = executor.warm_pool.started_warm
    outcomes = {}
    for mode, job_runtime in (("warm", runtime), ("cold", replace(runtime, warm=None))):
        root, log = tmp_path / mode, tmp_path / f"{mode}.log"
        metrics = run_training_job(f"warm-check-{mode}", definition, hyperparameters, root, log, job_runtime)
        outcomes[mode] = (metrics, (root / "model" / "model.json").read_bytes(),
                          (root / "model" / "preprocessor.json").read_bytes(), log.read_text().splitlines()[0])
    assert executor.warm_pool.started_warm == warm_before + 1
    assert outcomes["warm"][3].endswith("(warm)") and not outcomes["cold"][3].endswith("(warm)")
    assert outcomes["warm"][0] == outcomes["cold"][0] and "validation:rmse" in outcomes["warm"][0]
    assert outcomes["warm"][0]["validation:rmse"] == best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert outcomes["warm"][1] == outcomes["cold"][1]
    assert outcomes["warm"][2] == outcomes["cold"][2]
