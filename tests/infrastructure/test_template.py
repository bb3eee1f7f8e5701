"""template.yaml: lint-clean, secure by default, and its event rules really match the events S3 and
SageMaker send (checked by moto's EventBridge pattern matcher with real S3 notifications)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
STACK_NAME = "ray-mlops-test"
ASYNC_EVENT_TYPES = {"EventBridgeRule", "CloudWatchEvent", "S3", "SNS", "Schedule", "ScheduleV2"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE_PATH))))


def resources(template, type_name: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_name}


def refers_to(value: Any, logical_id: str) -> bool:
    """True when ``value`` is Ref/GetAtt/Sub of ``logical_id``."""
    text = json.dumps(value)
    return bool(re.search(rf'"Ref": "{logical_id}"|"Fn::GetAtt": \["{logical_id}"|\$\{{{logical_id}[.}}]', text))


def walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_cfn_lint_reports_nothing():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE_PATH)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_is_a_sam_template_with_python313_globals(template):
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    function_globals = template["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Tracing"] == "Active"
    assert function_globals["Architectures"] == ["x86_64"]
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"} <= set(
        function_globals["Environment"]["Variables"]
    )
    assert refers_to(function_globals["Layers"], "PowertoolsLayerArn")  # AWS's public SSM parameter
    assert template["Parameters"]["PowertoolsLayerArn"]["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert refers_to(function_globals["Layers"], "SharedLayer")
    shared = template["Resources"]["SharedLayer"]
    assert shared["Type"] == "AWS::Serverless::LayerVersion"
    assert shared["Properties"]["ContentUri"].rstrip("/") == "functions/shared"
    assert shared["Metadata"]["BuildMethod"] == "python3.13"
    assert shared["Properties"]["CompatibleRuntimes"] == ["python3.13"]


def test_parameters_are_described(template):
    expected = {
        "Environment", "DefaultTargetColumn", "RMSEThreshold", "ChampionTolerance", "FeatureGroupBaseName",
        "ModelPackageGroupNameSuffix", "JobImageUri", "ProcessingInstanceType", "ProcessingInstanceCount",
        "TrainingInstanceType", "TrainingInstanceCount", "MaxTuningJobs", "MaxParallelTuningJobs", "EvaluateInstanceType", "IngestionMode",
        "NotificationEmail", "PipelineDefinitionBucket", "PipelineDefinitionKey", "LogRetentionDays",
    }
    parameters = template["Parameters"]
    assert expected <= set(parameters)
    assert all(p.get("Description") for p in parameters.values())
    assert parameters["DefaultTargetColumn"]["Default"] == "PRICE"
    assert parameters["RMSEThreshold"]["Default"] == 15000
    assert parameters["FeatureGroupBaseName"]["Default"] == "fs-ray-synthetic-housing-data"
    assert parameters["Environment"]["AllowedValues"] == ["dev", "prod"]


def test_buckets_are_encrypted_versioned_private_and_tls_only(template):
    buckets = resources(template, "AWS::S3::Bucket")
    assert {"DataBucket", "ArtifactsBucket"} <= set(buckets)
    policies = resources(template, "AWS::S3::BucketPolicy")
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"] in {"AES256", "aws:kms"}, name
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        }, name
        [policy] = [p for p in policies.values() if refers_to(p["Properties"]["Bucket"], name)]
        tls_denials = [
            s for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert tls_denials, f"{name} accepts plain HTTP"
        assert refers_to(tls_denials[0]["Resource"], name)


def test_data_bucket_sends_events_to_eventbridge(template):
    config = template["Resources"]["DataBucket"]["Properties"]["NotificationConfiguration"]
    assert config["EventBridgeConfiguration"]["EventBridgeEnabled"] is True


def test_every_function_has_its_own_role_and_log_group_with_retention(template):
    functions = resources(template, "AWS::Serverless::Function")
    assert {"StartPipelineFunction", "PipelineStatusFunction"} <= set(functions)
    log_groups = resources(template, "AWS::Logs::LogGroup")
    roles_seen = set()
    for name, function in functions.items():
        props = function["Properties"]
        if "Role" in props:  # an explicit role must serve this function only
            role = json.dumps(props["Role"])
            assert role not in roles_seen, f"{name} shares a role"
            roles_seen.add(role)
        else:
            assert props.get("Policies"), f"{name} has no policies of its own"
        group_id = props.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref")
        assert group_id in log_groups, f"{name} has no explicit log group"
        assert "RetentionInDays" in log_groups[group_id]["Properties"], f"{group_id} keeps logs forever"


def test_every_async_trigger_has_retries_and_a_dead_letter_queue(template):
    for name, function in resources(template, "AWS::Serverless::Function").items():
        props = function["Properties"]
        events = props.get("Events", {})
        async_events = {k: e for k, e in events.items() if e["Type"] in ASYNC_EVENT_TYPES}
        for event_name, event in async_events.items():
            if event["Type"] in {"EventBridgeRule", "CloudWatchEvent", "Schedule", "ScheduleV2"}:
                event_props = event["Properties"]
                assert "DeadLetterConfig" in event_props, f"{name}.{event_name} has no DLQ"
                assert "RetryPolicy" in event_props, f"{name}.{event_name} has no retry policy"
        if async_events:
            has_function_dlq = "DeadLetterQueue" in props or "OnFailure" in json.dumps(props.get("EventInvokeConfig", {}))
            assert has_function_dlq, f"{name} loses failed asynchronous invocations"


def test_no_policy_allows_every_action(template):
    for node in walk(template["Resources"]):
        for key in ("Action", "NotAction"):
            if key in node:
                actions = node[key] if isinstance(node[key], list) else [node[key]]
                assert "*" not in actions, f"{key}: '*' in {node}"


def test_function_environments_feed_the_handlers(template):
    from mlops_shared.config import STACK_PIPELINE_PARAMETERS, PipelineStatusSettings, StartPipelineSettings

    functions = template["Resources"]
    start_env = functions["StartPipelineFunction"]["Properties"]["Environment"]["Variables"]
    # A reference (!Ref, !Sub) stands in as "1": every variable, the numeric ones too, takes it.
    settings = StartPipelineSettings.from_env({k: "1" if not isinstance(v, str) else v for k, v in start_env.items()})
    assert set(settings.stack_parameters) == set(STACK_PIPELINE_PARAMETERS)
    assert refers_to(start_env["MAX_REJECTED_ROWS"], "MaxRejectedRows")
    assert refers_to(start_env["MAX_DATASET_BYTES"], "MaxDatasetBytes")
    assert refers_to(start_env["DOCS_BASE_URL"], "DocsBaseUrl")
    assert refers_to(start_env["PIPELINE_NAME"], "TrainingPipeline")
    assert refers_to(start_env["IDEMPOTENCY_TABLE"], "IdempotencyTable")
    assert refers_to(start_env["NOTIFICATION_TOPIC_ARN"], "NotificationTopic")
    assert refers_to(start_env["DATA_BUCKET"], "DataBucket")
    assert refers_to(start_env["ARTIFACTS_BUCKET"], "ArtifactsBucket")
    status_env = functions["PipelineStatusFunction"]["Properties"]["Environment"]["Variables"]
    PipelineStatusSettings.from_env({k: "x" for k in status_env})


def test_drift_monitor_pipeline_has_its_own_definition_and_key(template):
    pipeline = template["Resources"]["DriftMonitorPipeline"]
    assert pipeline["Type"] == "AWS::SageMaker::Pipeline"
    assert pipeline["Properties"]["PipelineName"] == {"Fn::Sub": "${AWS::StackName}-drift-monitor"}
    location = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionS3Location"]
    assert location == {"Bucket": {"Ref": "PipelineDefinitionBucket"}, "Key": {"Ref": "DriftPipelineDefinitionKey"}}
    metadata = pipeline["Metadata"]["Mlops"]
    assert metadata["DefinitionFile"] == "jobs/drift_pipeline_definition.json"
    assert metadata["Substitutions"] == {"PipelineJobsRoleArn": {"Fn::GetAtt": ["PipelineJobsRole", "Arn"]}}
    statements = {s["Sid"]: s for s in template["Resources"]["PipelineJobsRole"]["Properties"]["Policies"][0]
                  ["PolicyDocument"]["Statement"]}
    assert statements["DriftMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "RaySageMakerMLOps/DataDrift"}}


def test_training_pipeline_and_registry_have_stable_names(template):
    pipeline = template["Resources"]["TrainingPipeline"]
    assert pipeline["Type"] == "AWS::SageMaker::Pipeline"
    assert pipeline["Properties"]["PipelineName"] == {"Fn::Sub": "${AWS::StackName}-training"}
    location = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionS3Location"]
    assert location == {"Bucket": {"Ref": "PipelineDefinitionBucket"}, "Key": {"Ref": "PipelineDefinitionKey"}}
    metadata = pipeline["Metadata"]["Mlops"]
    assert metadata["DefinitionFile"] == "jobs/pipeline_definition.json"
    assert metadata["Substitutions"] == {"PipelineJobsRoleArn": {"Fn::GetAtt": ["PipelineJobsRole", "Arn"]}}
    assert refers_to(pipeline["Properties"]["RoleArn"], "PipelineExecutionRole")
    group = template["Resources"]["ModelPackageGroup"]
    assert group["Properties"]["ModelPackageGroupName"] == {"Fn::Sub": "${AWS::StackName}-${ModelPackageGroupNameSuffix}"}
    assert template["Parameters"]["ModelPackageGroupNameSuffix"]["Default"] == "models"


def test_jobs_role_is_scoped_to_our_buckets_feature_groups_and_group(template):
    statements = template["Resources"]["PipelineJobsRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    for statement in statements:
        resources_text = json.dumps(statement["Resource"])
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(a.startswith("s3:") for a in actions):
            assert "DataBucket" in resources_text or "ArtifactsBucket" in resources_text
        if any(a in {"sagemaker:PutRecord", "sagemaker:CreateFeatureGroup"} for a in actions):
            assert "feature-group/${FeatureGroupBaseName}*" in resources_text
        if statement["Resource"] == "*":
            assert set(actions) <= {"sagemaker:ListModelPackages", "ecr:GetAuthorizationToken",
                                    "cloudwatch:PutMetricData"}, statement


def test_notification_topic_is_encrypted_and_mailed(template):
    topic = template["Resources"]["NotificationTopic"]["Properties"]
    assert refers_to(topic["KmsMasterKeyId"], "NotificationKey")
    subscription = template["Resources"]["NotificationEmailSubscription"]
    assert subscription["Properties"]["Protocol"] == "email"
    assert refers_to(subscription["Properties"]["Endpoint"], "NotificationEmail")


def test_idempotency_table_shape(template):
    table = template["Resources"]["IdempotencyTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_outputs(template):
    assert {
        "DataBucketName", "ArtifactsBucketName", "PipelineName", "ModelPackageGroupName", "NotificationTopicArn",
        "IdempotencyTableName", "StartPipelineFunctionName", "PipelineStatusFunctionName", "PipelineJobsRoleArn",
    } <= set(template["Outputs"])


# --- The rules' patterns, resolved like CloudFormation would, against real events -----------------

def resolve(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return names[node["Ref"]]
        if set(node) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: names[m.group(1)], node["Fn::Sub"])
        return {k: resolve(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, names) for v in node]
    return node


def rule_pattern(template, function: str, event: str, names: dict[str, str]) -> dict[str, Any]:
    return resolve(template["Resources"][function]["Properties"]["Events"][event]["Properties"]["Pattern"], names)


def capture_queue(pattern: dict[str, Any], rule_name: str):
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{rule_name}-capture")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=rule_name, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule_name, Targets=[{"Id": "capture", "Arn": queue_arn}])

    def received(expected: int) -> list[dict[str, Any]]:
        bodies, deadline = [], time.time() + 5
        while len(bodies) < expected and time.time() < deadline:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            bodies += [json.loads(m["Body"]) for m in batch.get("Messages", [])]
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return bodies + [json.loads(m["Body"]) for m in batch.get("Messages", [])]

    return received


def test_dataset_rule_matches_only_csv_files_in_incoming_of_our_bucket(aws, template):
    names = {"DataBucket": "rule-data-bucket", "AWS::StackName": STACK_NAME}
    pattern = rule_pattern(template, "StartPipelineFunction", "DatasetUploaded", names)
    received = capture_queue(pattern, "dataset-uploaded")
    s3 = boto3.client("s3")
    for bucket in ("rule-data-bucket", "some-other-bucket"):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
    for key in ("incoming/houses.csv", "incoming/team/sub/more houses.csv", "incoming/dataset.json",
                "incoming/notes.txt", "quarantine/houses.csv", "houses.csv"):
        s3.put_object(Bucket="rule-data-bucket", Key=key, Body=b"PRICE,A\n1,2\n")
    s3.put_object(Bucket="some-other-bucket", Key="incoming/houses.csv", Body=b"PRICE,A\n1,2\n")

    delivered = received(expected=2)
    keys = sorted(event["detail"]["object"]["key"] for event in delivered)
    assert len(keys) == 2, keys
    assert keys[0] == "incoming/houses.csv"
    assert keys[1].startswith("incoming/team/sub/more") and keys[1].endswith(".csv")
    assert all(event["detail"]["bucket"]["name"] == "rule-data-bucket" for event in delivered)


def test_pipeline_failed_rule_matches_failed_and_stopped_of_our_pipeline_only(aws, template):
    names = {"AWS::StackName": STACK_NAME}
    pattern = rule_pattern(template, "PipelineStatusFunction", "PipelineFailed", names)
    received = capture_queue(pattern, "pipeline-failed")
    events = boto3.client("events")
    sample = json.loads((ROOT / "tests" / "events" / "pipeline_execution_failed.json").read_text())

    def send(pipeline: str, status: str) -> None:
        detail = dict(sample["detail"], currentPipelineExecutionStatus=status,
                      pipelineArn=f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline}")
        events.put_events(Entries=[{"Source": "aws.sagemaker", "DetailType": sample["detail-type"],
                                    "Detail": json.dumps(detail)}])

    send(f"{STACK_NAME}-training", "Failed")
    send(f"{STACK_NAME}-training".upper(), "Stopped")  # case in ARNs must not matter
    send(f"{STACK_NAME}-training", "Succeeded")
    send(f"{STACK_NAME}-training", "Executing")
    send("another-stack-training", "Failed")
    delivered = received(expected=2)
    assert sorted(e["detail"]["currentPipelineExecutionStatus"] for e in delivered) == ["Failed", "Stopped"]


def test_samconfig_has_dev_and_prod():
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for environment in ("dev", "prod"):
        deploy = config[environment]["deploy"]["parameters"]
        assert deploy["stack_name"] == f"ray-mlops-{environment}"
        assert deploy["stack_name"] == deploy["stack_name"].lower()  # SageMaker lower-cases ARNs
        assert "CAPABILITY_NAMED_IAM" in deploy["capabilities"]  # the jobs role has a fixed name
        assert f"Environment={environment}" in deploy["parameter_overrides"]
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True


def test_approval_claim_lease_outlives_the_approval_function(template):
    """A decider still running must finish inside its own lease, or a retry could take over a live claim."""
    sys.path.insert(0, str(ROOT / "functions" / "shared"))
    from mlops_shared.approvals import CLAIM_LEASE_SECONDS

    timeout = template["Resources"]["ApprovalApiFunction"]["Properties"].get(
        "Timeout", template["Globals"]["Function"]["Timeout"])
    assert CLAIM_LEASE_SECONDS > timeout
