"""The local pipeline executor: definition interpretation (pure) and the SageMaker API it serves,
on hand-written definitions whose jobs are tiny Python snippets (no Ray)."""
from __future__ import annotations

import json
import random
import time
import urllib.request
from datetime import timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from local.aws.sagemaker_pipelines import definition as defn
from local.aws.sagemaker_pipelines.service import PipelineExecutor
from local.aws.sagemaker_pipelines.jobs import scrape_metrics
from local.aws.sagemaker_pipelines.tuning import sample_hyperparameters
from local.aws.gateway import LocalGateway


def ctx(**kwargs):
    base = dict(parameters={"Threshold": 10.0, "Name": "x", "Count": 3}, execution={"PipelineExecutionId": "abc123"})
    base.update(kwargs)
    return defn.Context(**base)


# -- parameters --------------------------------------------------------------------------------

DEFINITION_PARAMS = {"Parameters": [
    {"Name": "Uri", "Type": "String", "DefaultValue": "s3://b/k"},
    {"Name": "Threshold", "Type": "Float", "DefaultValue": 15000.0},
    {"Name": "Jobs", "Type": "Integer", "DefaultValue": 4},
    {"Name": "Flag", "Type": "Boolean", "DefaultValue": False},
    {"Name": "Required", "Type": "String"},
]}


def test_parameters_defaults_overlaid_and_typed():
    values = defn.resolve_parameters(DEFINITION_PARAMS, [
        {"Name": "Threshold", "Value": "1"}, {"Name": "Jobs", "Value": "2"}, {"Name": "Required", "Value": "r"},
        {"Name": "Flag", "Value": "true"}])
    assert values == {"Uri": "s3://b/k", "Threshold": 1.0, "Jobs": 2, "Flag": True, "Required": "r"}


@pytest.mark.parametrize("passed, message", [
    ([{"Name": "Nope", "Value": "1"}, {"Name": "Required", "Value": "r"}], "Nope"),
    ([{"Name": "Jobs", "Value": "two"}, {"Name": "Required", "Value": "r"}], "Jobs"),
    ([], "Required"),
])
def test_parameters_rejected_with_reason(passed, message):
    with pytest.raises(defn.DefinitionError, match=message):
        defn.resolve_parameters(DEFINITION_PARAMS, passed)


# -- expressions -------------------------------------------------------------------------------

STEP_PROPERTIES = {
    "Ingest": {"ProcessingOutputConfig": {"Outputs": [
        {"OutputName": "rejects", "S3Output": {"S3Uri": "s3://a/rejects"}},
        {"OutputName": "manifest", "S3Output": {"S3Uri": "s3://a/manifest"}},
    ]}},
    "HPTuning": {"TrainingJobSummaries": [{"TrainingJobName": "best-001"}, {"TrainingJobName": "worse-002"}],
                 "BestTrainingJob": {"TrainingJobName": "best-001"},
                 "TrainingJobDefinition": {"OutputDataConfig": {"S3OutputPath": "s3://a/models"}}},
}


def test_get_references_resolve_outputs_by_name_and_summaries_by_index():
    c = ctx(step_properties=STEP_PROPERTIES)
    assert defn.resolve({"Get": "Steps.Ingest.ProcessingOutputConfig.Outputs['manifest'].S3Output.S3Uri"}, c) == "s3://a/manifest"
    assert defn.resolve({"Get": "Steps.Ingest.ProcessingOutputConfig.Outputs[0].S3Output.S3Uri"}, c) == "s3://a/rejects"
    assert defn.resolve({"Get": "Steps.HPTuning.TrainingJobSummaries[0].TrainingJobName"}, c) == "best-001"
    assert defn.resolve({"Get": "Steps.HPTuning.BestTrainingJob.TrainingJobName"}, c) == "best-001"
    assert defn.resolve({"Get": "Execution.PipelineExecutionId"}, c) == "abc123"
    assert defn.resolve({"Get": "Parameters.Count"}, c) == 3


def test_join_nests_and_formats_values():
    c = ctx(step_properties=STEP_PROPERTIES)
    expr = {"Std:Join": {"On": "/", "Values": [
        {"Get": "Steps.HPTuning.TrainingJobDefinition.OutputDataConfig.S3OutputPath"},
        {"Get": "Steps.HPTuning.TrainingJobSummaries[0].TrainingJobName"}, "output/model.tar.gz"]}}
    assert defn.resolve(expr, c) == "s3://a/models/best-001/output/model.tar.gz"
    assert defn.resolve({"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Threshold"}]}}, c) == "10.0"
    assert defn.resolve({"Std:Join": {"On": " ", "Values": ["n", {"Std:Join": {"On": "-", "Values": [1, True]}}]}}, c) == "n 1-true"


def test_json_get_reads_property_files_and_s3():
    report = {"regression_metrics": {"rmse": {"value": 1234.5}}, "list": [{"x": 7}]}
    c = ctx(property_files={("Evaluate", "EvaluationReport"): report},
            step_properties={"Evaluate": {}}, read_json=lambda uri: {"from": uri})
    get = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
                           "Path": "regression_metrics.rmse.value"}}
    assert defn.resolve(get, c) == 1234.5
    assert defn.resolve({"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
                                         "Path": "list[0].x"}}, c) == 7
    assert defn.resolve({"Std:JsonGet": {"S3Uri": "s3://b/e.json", "Path": "from"}}, c) == "s3://b/e.json"
    with pytest.raises(defn.ResolutionError, match="rmse"):
        defn.resolve({"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
                                      "Path": "regression_metrics.rmse.missing"}}, c)


def test_reference_to_a_step_that_has_not_run_is_an_error():
    with pytest.raises(defn.ResolutionError, match="Preprocess"):
        defn.resolve({"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}, ctx())


# -- conditions --------------------------------------------------------------------------------

def cond(kind, left, right):
    return {"Type": kind, "LeftValue": left, "RightValue": right}


@pytest.mark.parametrize("condition, expected", [
    (cond("LessThanOrEqualTo", 10, {"Get": "Parameters.Threshold"}), True),
    (cond("LessThan", 10, {"Get": "Parameters.Threshold"}), False),
    (cond("GreaterThan", "11", {"Get": "Parameters.Threshold"}), True),   # numeric strings compare as numbers
    (cond("GreaterThanOrEqualTo", 9.99, 10), False),
    (cond("Equals", {"Get": "Parameters.Name"}, "x"), True),
    (cond("Equals", 3, {"Get": "Parameters.Count"}), True),
    ({"Type": "In", "QueryValue": {"Get": "Parameters.Name"}, "Values": ["a", "x"]}, True),
    ({"Type": "In", "QueryValue": 4, "Values": [1, 2, 3]}, False),
    ({"Type": "Not", "Condition": cond("Equals", 1, 1)}, False),
    ({"Type": "Or", "Conditions": [cond("Equals", 1, 2), cond("Equals", 2, 2)]}, True),
    ({"Type": "Or", "Conditions": [cond("Equals", 1, 2)]}, False),
])
def test_conditions(condition, expected):
    assert defn.evaluate_condition(condition, ctx()) is expected


def test_condition_list_means_all():
    assert defn.evaluate_conditions([cond("Equals", 1, 1), cond("Equals", 1, 2)], ctx()) is False
    assert defn.evaluate_conditions([cond("Equals", 1, 1)], ctx()) is True


# -- graph -------------------------------------------------------------------------------------

def test_graph_collects_data_explicit_and_branch_dependencies():
    definition = {"Steps": [
        {"Name": "A", "Type": "Processing", "Arguments": {}},
        {"Name": "B", "Type": "Processing", "Arguments": {"X": {"Get": "Steps.A.ProcessingOutputConfig.Outputs[0].S3Output.S3Uri"}}},
        {"Name": "C", "Type": "Processing", "Arguments": {}, "DependsOn": ["A"]},
        {"Name": "Gate", "Type": "Condition", "Arguments": {
            "Conditions": [cond("Equals", {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.B.PropertyFiles.R"}, "Path": "v"}}, 1)],
            "IfSteps": [{"Name": "Yes", "Type": "RegisterModel", "Arguments": {"M": {"Get": "Steps.C.ProcessingJobName"}}}],
            "ElseSteps": [{"Name": "No", "Type": "Fail", "Arguments": {}}]}},
    ]}
    graph = defn.build_graph(definition)
    assert graph["B"].depends_on == {"A"}
    assert graph["C"].depends_on == {"A"}
    assert graph["Gate"].depends_on == {"B"}
    assert graph["Yes"].depends_on == {"Gate", "C"} and graph["Yes"].branch_of == ("Gate", "If")
    assert graph["No"].branch_of == ("Gate", "Else")
    order = defn.topological_order(graph)
    assert order.index("A") < order.index("B") < order.index("Gate") < order.index("Yes")


def test_graph_rejects_cycles_and_unknown_steps():
    with pytest.raises(defn.DefinitionError, match="cycle"):
        defn.build_graph({"Steps": [{"Name": "A", "Type": "Fail", "DependsOn": ["B"]},
                                    {"Name": "B", "Type": "Fail", "DependsOn": ["A"]}]})
    with pytest.raises(defn.DefinitionError, match="unknown"):
        defn.build_graph({"Steps": [{"Name": "A", "Type": "Fail", "DependsOn": ["Z"]}]})


# -- caching -----------------------------------------------------------------------------------

def processing_args(input_uri="s3://d/v1", output_uri="s3://a/exec1/out", version="v1"):
    return {"AppSpecification": {"ContainerEntrypoint": ["python3", "-m", "jobs.x"],
                                 "ContainerArguments": ["--dataset-version", version]},
            "ProcessingInputs": [{"InputName": "in", "S3Input": {"S3Uri": input_uri}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {"S3Uri": output_uri}}]}}


def test_cache_key_ignores_outputs_but_not_inputs_or_arguments():
    key = defn.cache_key("p", "S", "Processing", processing_args())
    assert key == defn.cache_key("p", "S", "Processing", processing_args(output_uri="s3://a/exec2/out"))
    assert key != defn.cache_key("p", "S", "Processing", processing_args(input_uri="s3://d/v2"))
    assert key != defn.cache_key("p", "S", "Processing", processing_args(version="v2"))
    assert key != defn.cache_key("other", "S", "Processing", processing_args())
    tuning = {"HyperParameterTuningJobConfig": {"Strategy": "Random"},
              "TrainingJobDefinition": {"InputDataConfig": [{"S3Uri": "s3://x"}], "OutputDataConfig": {"S3OutputPath": "s3://o/1"}}}
    moved = json.loads(json.dumps(tuning))
    moved["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"] = "s3://o/2"
    assert defn.cache_key("p", "T", "Tuning", tuning) == defn.cache_key("p", "T", "Tuning", moved)


@pytest.mark.parametrize("text, expected", [
    ("PT12H", timedelta(hours=12)), ("30d", timedelta(days=30)), ("T16m", timedelta(minutes=16)),
    ("30dT5h", timedelta(days=30, hours=5)), ("P1W", timedelta(days=7)), (None, None),
])
def test_expire_after(text, expected):
    assert defn.parse_expire_after(text) == expected


def test_random_search_is_seeded_and_within_ranges():
    ranges = {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "8"}],
              "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.2", "MaxValue": "1"}],
              "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart"]}]}
    draws = [sample_hyperparameters(ranges, random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(1)
    for _ in range(200):
        d = sample_hyperparameters(ranges, rng)
        assert 1 <= int(d["max_depth"]) <= 8 and 0.2 <= float(d["eta"]) <= 1 and d["booster"] in ("gbtree", "dart")


def test_metrics_scraped_with_definition_regexes_last_value_wins():
    log = "x\nMETRIC validation:rmse=200.5\nMETRIC validation:mae=1e2\nMETRIC validation:rmse=150.25\n"
    definitions = [{"Name": "validation:rmse", "Regex": r"METRIC validation:rmse=([0-9.eE+-]+)"},
                   {"Name": "validation:mae", "Regex": r"METRIC validation:mae=([0-9.eE+-]+)"},
                   {"Name": "train:rmse", "Regex": r"METRIC train:rmse=([0-9.eE+-]+)"}]
    assert scrape_metrics(log, definitions) == {"validation:rmse": 150.25, "validation:mae": 100.0}


# -- the service, end to end on a tiny pipeline ------------------------------------------------

# A "job" that reads its input, writes evaluation.json with the rmse it was told, or fails with a
# reason in output/message like the real jobs do.
JOB = r"""
import json, os, sys, time, pathlib
root = pathlib.Path(os.environ["SM_CONTAINER_ROOT"])
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if args.get("--sleep"):
    time.sleep(float(args["--sleep"]))
data = (root / "processing/input/data/data.csv").read_text()
if args["--rmse"] == "fail":
    (root / "output").mkdir(parents=True, exist_ok=True)
    (root / "output/message").write_text("rmse could not be computed: 3 rows < 10\n")
    sys.exit(1)
out = root / "processing/output/evaluation"
out.mkdir(parents=True, exist_ok=True)
(out / "evaluation.json").write_text(json.dumps({"regression_metrics": {"rmse": {"value": float(args["--rmse"])}},
                                                 "rows": len(data.splitlines()), "version": os.environ["DATASET_VERSION"]}))
"""
RUN_JOB = "import os; exec(open(os.environ['SM_CONTAINER_ROOT'] + '/processing/input/code/job.py').read())"


def tiny_definition():
    join = lambda *values: {"Std:Join": {"On": "/", "Values": list(values)}}  # noqa: E731
    report = {"Get": "Steps.Evaluate.PropertyFiles.Report"}
    rmse = {"Std:JsonGet": {"PropertyFile": report, "Path": "regression_metrics.rmse.value"}}
    return {
        "Version": "2020-12-01",
        "Parameters": [
            {"Name": "InputDataUri", "Type": "String", "DefaultValue": "s3://tiny-data/in/data.csv"},
            {"Name": "DatasetVersion", "Type": "String", "DefaultValue": "v1"},
            {"Name": "Rmse", "Type": "String", "DefaultValue": "5"},
            {"Name": "Sleep", "Type": "String", "DefaultValue": "0"},
            {"Name": "Threshold", "Type": "Float", "DefaultValue": 10.0},
            {"Name": "Group", "Type": "String", "DefaultValue": "tiny-group"},
        ],
        "Steps": [
            {"Name": "Evaluate", "Type": "Processing",
             "CacheConfig": {"Enabled": True, "ExpireAfter": "PT1H"},
             "Arguments": {
                 # The job's code comes in as an input, as for SageMaker's script processors (an
                 # entrypoint item holds at most 256 characters).
                 "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": ["python3", "-c", RUN_JOB],
                                      "ContainerArguments": ["--rmse", {"Get": "Parameters.Rmse"},
                                                             "--sleep", {"Get": "Parameters.Sleep"}]},
                 "Environment": {"DATASET_VERSION": {"Get": "Parameters.DatasetVersion"}},
                 "ProcessingInputs": [{"InputName": "data", "S3Input": {
                     "S3Uri": {"Get": "Parameters.InputDataUri"}, "LocalPath": "/opt/ml/processing/input/data",
                     "S3DataType": "S3Prefix", "S3InputMode": "File"}},
                                      {"InputName": "code", "S3Input": {
                     "S3Uri": "s3://tiny-artifacts/code/job.py", "LocalPath": "/opt/ml/processing/input/code",
                     "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
                 "ProcessingOutputConfig": {"Outputs": [{"OutputName": "evaluation", "S3Output": {
                     "S3Uri": join("s3://tiny-artifacts", {"Get": "Execution.PipelineExecutionId"}, "evaluation"),
                     "LocalPath": "/opt/ml/processing/output/evaluation", "S3UploadMode": "EndOfJob"}}]},
                 "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}},
                 "RoleArn": "${Role}"},
             "PropertyFiles": [{"PropertyFileName": "Report", "OutputName": "evaluation", "FilePath": "evaluation.json"}]},
            {"Name": "Gate", "Type": "Condition", "Arguments": {
                "Conditions": [{"Type": "LessThanOrEqualTo", "LeftValue": rmse, "RightValue": {"Get": "Parameters.Threshold"}}],
                "IfSteps": [{"Name": "Register", "Type": "RegisterModel", "Arguments": {
                    "ModelPackageGroupName": {"Get": "Parameters.Group"},
                    "ModelApprovalStatus": "PendingManualApproval",
                    "InferenceSpecification": {"Containers": [{"Image": "img", "ModelDataUrl": "s3://tiny-artifacts/model.tar.gz"}],
                                               "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
                    "ModelMetrics": {"Bias": {}, "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": join(
                        {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"}, "evaluation.json")}}},
                    "CustomerMetadataProperties": {"dataset_version": {"Get": "Parameters.DatasetVersion"}},
                    "SkipModelValidation": "None"}}],
                "ElseSteps": [{"Name": "TooHigh", "Type": "Fail", "Arguments": {"ErrorMessage": {"Std:Join": {
                    "On": " ", "Values": ["rmse", rmse, "above", {"Get": "Parameters.Threshold"}]}}}}]}},
        ],
    }


@pytest.fixture
def service(tmp_path, monkeypatch):
    with LocalGateway() as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        # moto keeps its state per process: start each test from a clean account.
        urllib.request.urlopen(urllib.request.Request(f"{gateway.url}/moto-api/reset", method="POST")).read()
        progress = []
        executor = PipelineExecutor(gateway, tmp_path / "work", None, max_concurrent_executions=2,
                                    substitutions={"Role": "arn:aws:iam::123456789012:role/jobs"},
                                    on_progress=lambda *event: progress.append(event))
        executor.install()
        s3 = boto3.client("s3")
        for bucket in ("tiny-data", "tiny-artifacts"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="tiny-data", Key="in/data.csv", Body=b"a,b\n1,2\n3,4\n")
        s3.put_object(Bucket="tiny-artifacts", Key="code/job.py", Body=JOB.encode())
        sm = boto3.client("sagemaker")
        sm.create_model_package_group(ModelPackageGroupName="tiny-group")
        sm.create_pipeline(PipelineName="tiny", PipelineDefinition=json.dumps(tiny_definition()),
                           RoleArn="arn:aws:iam::123456789012:role/pipeline")
        # Events land in an SQS queue through a real EventBridge rule in moto.
        sqs, events = boto3.client("sqs"), boto3.client("events")
        queue = sqs.create_queue(QueueName="pipeline-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="pipeline-events", EventPattern=json.dumps({"source": ["aws.sagemaker"]}))
        events.put_targets(Rule="pipeline-events", Targets=[{"Id": "q", "Arn": queue_arn}])
        try:
            yield executor, sm, progress, (sqs, queue)
        finally:
            executor.shutdown()


def tok(label: str) -> str:
    """ClientRequestToken must be 32+ characters."""
    return label.ljust(32, "-")


def run(sm, executor, token, **params):
    arn = sm.start_pipeline_execution(
        PipelineName="tiny", ClientRequestToken=tok(token),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in params.items()])["PipelineExecutionArn"]
    executor.wait(arn, timeout=120)
    return arn, sm.describe_pipeline_execution(PipelineExecutionArn=arn), \
        {s["StepName"]: s for s in sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]}


def drain(sqs, queue):
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies += [json.loads(m["Body"]) for m in messages]


def test_success_registers_with_metadata_cache_and_events(service):
    executor, sm, progress, (sqs, queue) = service
    arn, described, steps = run(sm, executor, "t-1")
    assert described["PipelineExecutionStatus"] == "Succeeded", described
    assert list(steps) == ["Register", "Gate", "Evaluate"]  # newest first, like AWS
    assert steps["Evaluate"]["Metadata"]["ProcessingJob"]["Arn"].startswith("arn:aws:sagemaker:us-east-1:123456789012:processing-job/pipelines-")
    assert "CacheHitResult" not in steps["Evaluate"]
    assert steps["Gate"]["Metadata"] == {"Condition": {"Outcome": "True"}}
    package_arn = steps["Register"]["Metadata"]["RegisterModel"]["Arn"]
    package = sm.describe_model_package(ModelPackageName=package_arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["CustomerMetadataProperties"] == {"dataset_version": "v1"}
    execution_id = arn.rsplit("/", 1)[1]
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == f"s3://tiny-artifacts/{execution_id}/evaluation/evaluation.json"
    report = json.loads(boto3.client("s3").get_object(Bucket="tiny-artifacts", Key=f"{execution_id}/evaluation/evaluation.json")["Body"].read())
    assert report["rows"] == 3
    assert (arn, "Evaluate", "Succeeded") in progress and (arn, None, "Succeeded") in progress

    # Same arguments again: Evaluate comes from the cache of the first execution.
    arn2, described2, steps2 = run(sm, executor, "t-2")
    assert described2["PipelineExecutionStatus"] == "Succeeded"
    assert steps2["Evaluate"]["CacheHitResult"] == {"SourcePipelineExecutionArn": arn}
    assert steps2["Evaluate"]["Metadata"] == steps["Evaluate"]["Metadata"]
    # A new dataset version is a new cache key.
    _, _, steps3 = run(sm, executor, "t-3", DatasetVersion="v2")
    assert "CacheHitResult" not in steps3["Evaluate"]

    events = drain(sqs, queue)
    execution_events = [e["detail"] for e in events if e["detail-type"] == "SageMaker Model Building Pipeline Execution Status Change"
                        and e["detail"]["pipelineExecutionArn"] == arn]
    assert [(e["previousPipelineExecutionStatus"], e["currentPipelineExecutionStatus"]) for e in execution_events] == [
        (None, "Executing"), ("Executing", "Succeeded")]
    step_events = [e["detail"] for e in events if e["detail-type"] == "SageMaker Model Building Pipeline Execution Step Status Change"
                   and e["detail"]["pipelineExecutionArn"] == arn2 and e["detail"]["stepName"] == "Evaluate"]
    assert step_events[-1]["currentStepStatus"] == "Succeeded"
    assert step_events[-1]["cacheHitResult"] == {"sourcePipelineExecutionArn": arn}


def test_same_token_same_execution_and_unknown_parameter_rejected(service):
    executor, sm, _, _ = service
    first = sm.start_pipeline_execution(PipelineName="tiny", ClientRequestToken=tok("same"))["PipelineExecutionArn"]
    again = sm.start_pipeline_execution(PipelineName="tiny", ClientRequestToken=tok("same"))["PipelineExecutionArn"]
    assert first == again
    executor.wait(first, timeout=120)
    assert len(sm.list_pipeline_executions(PipelineName="tiny")["PipelineExecutionSummaries"]) == 1
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName="tiny", ClientRequestToken=tok("bad"),
                                    PipelineParameters=[{"Name": "Nope", "Value": "1"}])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Nope" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName="missing", ClientRequestToken=tok("x"))
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def test_condition_false_runs_the_fail_step_with_its_message(service):
    executor, sm, _, _ = service
    _, described, steps = run(sm, executor, "high", Rmse="12.5")
    assert described["PipelineExecutionStatus"] == "Failed"
    assert steps["Gate"]["Metadata"] == {"Condition": {"Outcome": "False"}}
    assert "Register" not in steps
    assert steps["TooHigh"]["StepStatus"] == "Failed"
    assert steps["TooHigh"]["FailureReason"] == "rmse 12.5 above 10.0"
    assert steps["TooHigh"]["Metadata"] == {"Fail": {"ErrorMessage": "rmse 12.5 above 10.0"}}
    assert "TooHigh" in described["FailureReason"] and "12.5" in described["FailureReason"]


def test_job_failure_reason_comes_from_output_message(service):
    executor, sm, _, _ = service
    _, described, steps = run(sm, executor, "broken", Rmse="fail")
    assert described["PipelineExecutionStatus"] == "Failed"
    assert list(steps) == ["Evaluate"]
    assert steps["Evaluate"]["FailureReason"] == "rmse could not be computed: 3 rows < 10"


def test_stop_kills_the_running_job(service):
    executor, sm, progress, _ = service
    arn = sm.start_pipeline_execution(PipelineName="tiny", ClientRequestToken=tok("slow"),
                                      PipelineParameters=[{"Name": "Sleep", "Value": "60"}])["PipelineExecutionArn"]
    deadline = time.monotonic() + 30
    while (arn, "Evaluate", "Executing") not in progress and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    started = time.monotonic()
    sm.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=tok("stop"))
    described = executor.wait(arn, timeout=30)
    assert time.monotonic() - started < 20
    assert described["PipelineExecutionStatus"] == "Stopped"
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [(s["StepName"], s["StepStatus"]) for s in steps] == [("Evaluate", "Stopped")]


def test_shutdown_stops_queued_and_running_executions(tmp_path, service):
    executor, sm, _, _ = service
    arns = [sm.start_pipeline_execution(PipelineName="tiny", ClientRequestToken=tok(f"q{i}"),
                                        PipelineParameters=[{"Name": "Sleep", "Value": "60"},
                                                            {"Name": "DatasetVersion", "Value": f"q{i}"}])["PipelineExecutionArn"]
            for i in range(3)]  # two run, one waits for a worker
    time.sleep(1.0)
    executor.shutdown(timeout=30)
    assert [executor.describe_execution(a)["PipelineExecutionStatus"] for a in arns] == ["Stopped"] * 3
    with pytest.raises(ClientError, match="shut down"):
        sm.start_pipeline_execution(PipelineName="tiny", ClientRequestToken=tok("late"))


def test_jobs_run_with_the_jobs_image_interpreter(service):
    executor, _, _, _ = service
    assert executor.image.python.parent.parent == executor.image.env_dir
    assert executor.image.is_built()


def test_ray_head_command_is_loopback_only_with_free_ports(tmp_path):
    from local.ray_head import RayHead, ray_client_env

    head = RayHead(num_cpus=2, state_dir=tmp_path)
    head.port = 6399
    command = head.command()
    assert command[1:4] == ["start", "--head", "--block"]
    assert command[command.index("--node-ip-address") + 1] == "127.0.0.1"
    assert "--include-dashboard=false" in command and "--disable-usage-stats" in command
    assert command[command.index("--num-cpus") + 1] == "2"
    ports = [int(command[i + 1]) for i, arg in enumerate(command) if arg.endswith("-port") and arg != "--port"]
    assert len(ports) == len(set(ports)) >= 4 and 6399 not in ports
    assert ray_client_env(head.address) == {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": "127.0.0.1:6399"}


def test_parallel_trials_follow_the_train_jobs_actor_sizing():
    from local.aws.sagemaker_pipelines.service import trials_that_fit

    # The train job gives a trial half of a node's CPUs (at least one): two trials fit a node.
    assert trials_that_fit(1) == 1
    assert trials_that_fit(2) == 2
    assert trials_that_fit(3) == 3  # one CPU per trial
    assert trials_that_fit(8) == 2
