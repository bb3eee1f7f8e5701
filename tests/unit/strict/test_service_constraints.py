"""Service constraints of the strict face: request decoding (botocore's serializers are the oracle),
the model checks in AWS's wording, the pattern override table, and refusals through a real moto server."""
from __future__ import annotations

import datetime
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.model import ListShape, MapShape, StructureShape

from local.aws.strict import java_regex
from local.aws.strict.constraint_refusals import check_request, error_response
from local.aws.strict.request_decoder import CHECKED_SERVICES, decode
from local.aws.strict.service_constraints import MISSING, Violation, check, format_message, service_model
from tests.unit.strict.botocore_wire import wire_request

ROLE = "arn:aws:iam::123456789012:role/pipeline-jobs"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlops-jobs:latest"
WHEN = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)

PROCESSING_JOB = {
    "ProcessingJobName": "pipelines-abc123-Preprocess",
    "RoleArn": ROLE,
    "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", "-m", "jobs.preprocess"],
                         "ContainerArguments": ["--target", "PRICE"]},
    "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}},
    "ProcessingInputs": [{"InputName": "manifest", "S3Input": {
        "S3Uri": "s3://artifacts/exec-1/manifest", "LocalPath": "/opt/ml/processing/input/manifest",
        "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
    "ProcessingOutputConfig": {"Outputs": [{"OutputName": "train", "S3Output": {
        "S3Uri": "s3://artifacts/exec-1/train", "LocalPath": "/opt/ml/processing/output/train", "S3UploadMode": "EndOfJob"}}]},
    "Environment": {"RAY_ADDRESS": "127.0.0.2:6390"},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
}
TRAINING_JOB = {
    "TrainingJobName": "pipelines-abc123-train-001",
    "RoleArn": ROLE,
    "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": [
        {"Name": "validation:rmse", "Regex": "METRIC validation:rmse=([0-9.eE+-]+)"}]},
    "HyperParameters": {"max_depth": "5", "eta": "0.3", "_tuning_objective_metric": "validation:rmse"},
    "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://artifacts/exec-1/train", "S3DataDistributionType": "FullyReplicated"}}}],
    "OutputDataConfig": {"S3OutputPath": "s3://artifacts/exec-1/model"},
    "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
}
TUNING_JOB = {
    "HyperParameterTuningJobName": "abc123-HPTuning",
    "HyperParameterTuningJobConfig": {
        "Strategy": "Random",
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
        "ParameterRanges": {
            "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "8", "ScalingType": "Auto"}],
            "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.2", "MaxValue": "1", "ScalingType": "Auto"}]},
    },
    "TrainingJobDefinition": {
        "StaticHyperParameters": {"num_round": "100"},
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://artifacts/exec-1/tuning"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    },
}
MODEL_PACKAGE = {
    "ModelPackageGroupName": "mlops-housing",
    "ModelApprovalStatus": "PendingManualApproval",
    "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://artifacts/exec-1/model/model.tar.gz"}],
                               "SupportedContentTypes": ["application/json", "text/csv"],
                               "SupportedResponseMIMETypes": ["application/json"]},
    "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                     "S3Uri": "s3://artifacts/exec-1/evaluation/evaluation.json"}}},
    "CustomerMetadataProperties": {"dataset_uri": "s3://data/incoming/houses.csv", "rmse": "12000.5"},
}

# Operations the product calls (functions/, jobs/, local/, statemachines/deploy.asl.json), with the
# params it sends. A few set the member botocore's HTTP layer adds itself (S3's ContentLength).
ROUND_TRIPS = [
    ("s3", "PutObject", {"Bucket": "data", "Key": "incoming/house prices (2024) é.csv", "Body": b"PRICE,DECK\n1,0\n",
                         "ContentType": "text/csv", "Metadata": {"target": "PRICE"}, "ContentLength": 16}),
    ("s3", "GetObject", {"Bucket": "data", "Key": "incoming/houses.csv", "Range": "bytes=0-65535"}),
    ("s3", "HeadObject", {"Bucket": "data", "Key": "incoming/houses.csv", "VersionId": "v1"}),
    ("s3", "CopyObject", {"Bucket": "data", "Key": "quarantine/houses.csv", "CopySource": "data/incoming/houses.csv"}),
    ("s3", "DeleteObject", {"Bucket": "data", "Key": "incoming/houses.csv"}),
    ("s3", "ListObjectsV2", {"Bucket": "artifacts", "Prefix": "exec-1/", "MaxKeys": 100, "ContinuationToken": "t"}),
    ("s3", "CreateBucket", {"Bucket": "data", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}}),
    ("s3", "PutBucketVersioning", {"Bucket": "data", "VersioningConfiguration": {"Status": "Enabled"}}),
    ("s3", "PutPublicAccessBlock", {"Bucket": "data", "PublicAccessBlockConfiguration": {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}}),
    ("s3", "PutBucketNotificationConfiguration", {"Bucket": "data", "NotificationConfiguration": {
        "EventBridgeConfiguration": {}, "QueueConfigurations": [
            {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q", "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]}}),
    ("sagemaker", "StartPipelineExecution", {"PipelineName": "mlops-pipeline", "ClientRequestToken": "t" * 32,
                                             "PipelineParameters": [{"Name": "InputDataUri", "Value": "s3://data/x.csv"}]}),
    ("sagemaker", "CreateProcessingJob", PROCESSING_JOB),
    ("sagemaker", "CreateTrainingJob", TRAINING_JOB),
    ("sagemaker", "CreateHyperParameterTuningJob", TUNING_JOB),
    ("sagemaker", "CreateModelPackage", MODEL_PACKAGE),
    ("sagemaker", "UpdateModelPackage", {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
                                         "ModelApprovalStatus": "Approved", "ApprovalDescription": "by alice"}),
    ("sagemaker", "ListModelPackages", {"ModelPackageGroupName": "g", "ModelApprovalStatus": "Approved",
                                        "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 10,
                                        "CreationTimeAfter": WHEN}),
    ("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "ep-config-1", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "m1", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": 1.0}]}),
    ("sagemaker", "UpdateEndpoint", {"EndpointName": "ep", "EndpointConfigName": "ep-config-2", "DeploymentConfig": {
        "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 300,
                                                                  "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "ep-5xx"}]}}}),
    ("sagemaker-featurestore-runtime", "PutRecord", {"FeatureGroupName": "fs-housing-1a2b3c4d", "TargetStores": ["OfflineStore"],
                                                     "Record": [{"FeatureName": "PRICE", "ValueAsString": "250000"}]}),
    ("sagemaker-featurestore-runtime", "GetRecord", {"FeatureGroupName": "fs", "RecordIdentifierValueAsString": "v1-1",
                                                     "FeatureNames": ["PRICE", "DECK"]}),
    ("sagemaker-featurestore-runtime", "DeleteRecord", {"FeatureGroupName": "fs", "RecordIdentifierValueAsString": "v1-1",
                                                        "EventTime": "2024-05-01T12:30:00Z", "TargetStores": ["OnlineStore"]}),
    ("sagemaker-featurestore-runtime", "BatchGetRecord", {"Identifiers": [
        {"FeatureGroupName": "fs", "RecordIdentifiersValueAsString": ["v1-1", "v1-2"]}]}),
    ("sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "mlops-housing", "Body": b'{"SQUARE_FEET": 3000}',
                                             "ContentType": "application/json", "Accept": "application/json"}),
    ("dynamodb", "PutItem", {"TableName": "deployments", "Item": {"DeploymentId": {"S": "Approved#arn"}, "At": {"N": "1"}},
                             "ConditionExpression": "attribute_not_exists(DeploymentId)"}),
    ("dynamodb", "UpdateItem", {"TableName": "deployments", "Key": {"DeploymentId": {"S": "x"}},
                                "UpdateExpression": "SET Outcome = :o", "ExpressionAttributeValues": {":o": {"S": "deployed"}}}),
    ("dynamodb", "TransactWriteItems", {"TransactItems": [{"Put": {"TableName": "tokens", "Item": {"Jti": {"S": "j"}},
                                                                   "ConditionExpression": "attribute_not_exists(Jti)"}}]}),
    ("dynamodb", "GetItem", {"TableName": "tokens", "Key": {"Jti": {"B": b"\x00\xff"}}, "ConsistentRead": True}),
    ("stepfunctions", "StartExecution", {"stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:deploy",
                                         "name": "Approved-1", "input": "{\"detail\": {}}"}),
    ("events", "PutEvents", {"Entries": [{"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change",
                                          "Detail": "{}", "Resources": ["arn:aws:sagemaker:us-east-1:123456789012:x"],
                                          "Time": WHEN}]}),
    ("secretsmanager", "PutSecretValue", {"SecretId": "approval-key", "SecretString": "s3cr3t"}),
    ("lambda", "Invoke", {"FunctionName": "NotifyApprovalFunction", "InvocationType": "RequestResponse",
                          "Payload": b'{"detail": {}}', "LogType": "None"}),
    ("sns", "Publish", {"TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts", "Subject": "Pipeline failed",
                        "Message": "step Train failed", "MessageAttributes": {
                            "kind": {"DataType": "String", "StringValue": "failure"}}}),
    ("sns", "Subscribe", {"TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts", "Protocol": "sqs",
                          "Endpoint": "arn:aws:sqs:us-east-1:123456789012:q", "Attributes": {"RawMessageDelivery": "true"}}),
    ("ses", "SendRawEmail", {"Source": "mlops@example.com", "Destinations": ["approver@example.com"],
                             "RawMessage": {"Data": b"Subject: Approve\r\n\r\nplease"}}),
    ("sts", "AssumeRole", {"RoleArn": ROLE, "RoleSessionName": "executor", "DurationSeconds": 900,
                           "Tags": [{"Key": "team", "Value": "ml"}]}),
    ("iam", "PutRolePolicy", {"RoleName": "pipeline-jobs", "PolicyName": "s3", "PolicyDocument": "{}"}),
    ("sqs", "SendMessage", {"QueueUrl": "http://127.0.0.1/123456789012/q", "MessageBody": "m", "DelaySeconds": 0}),
    ("logs", "PutRetentionPolicy", {"logGroupName": "/aws/lambda/f", "retentionInDays": 14}),
    ("cloudwatch", "PutMetricAlarm", {"AlarmName": "ep-5xx", "EvaluationPeriods": 1, "Threshold": 1.0,
                                      "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                                      "Dimensions": [{"Name": "EndpointName", "Value": "ep"}]}),
]


@pytest.mark.parametrize("service, operation, params", ROUND_TRIPS, ids=[f"{s}.{o}" for s, o, _ in ROUND_TRIPS])
def test_decode_gives_back_what_botocore_serialised(service, operation, params):
    # CloudWatch's client speaks CBOR, which is not decoded; its query protocol is.
    protocol = "query" if service == "cloudwatch" else None
    request = decode(*wire_request(service, operation, params, protocol))
    assert request is not None
    assert (request.service, request.operation, request.params) == (service, operation, params)


def test_cbor_requests_are_not_decoded():
    params = {"AlarmName": "a", "EvaluationPeriods": 1, "ComparisonOperator": "GreaterThanThreshold"}
    assert service_model("cloudwatch").protocol == "smithy-rpc-v2-cbor"
    assert decode(*wire_request("cloudwatch", "PutMetricAlarm", params)) is None


def test_sagemaker_family_is_routed_by_target_and_path_not_by_signing_name():
    assert decode(*wire_request("sagemaker", "DescribeEndpoint", {"EndpointName": "ep"})).service == "sagemaker"
    runtime = decode(*wire_request("sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "ep", "Body": b"1"}))
    assert runtime.service == "sagemaker-runtime"


def test_products_requests_satisfy_the_constraints():
    for service, operation, params in ROUND_TRIPS:
        assert check(service, operation, params) == [], (service, operation)


def test_sagemaker_pattern_violation_in_aws_words():
    violations = check("sagemaker", "CreateModel", {"ModelName": "house prices", "ExecutionRoleArn": ROLE})
    assert format_message(violations) == (
        "1 validation error detected: Value 'house prices' at 'modelName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?")


def test_processing_arguments_and_environment_values_are_at_most_256_characters():
    job = dict(PROCESSING_JOB, AppSpecification=dict(PROCESSING_JOB["AppSpecification"], ContainerArguments=["x" * 257]),
               Environment={"LONG": "v" * 257})
    by_path = {v.member_path: v for v in check("sagemaker", "CreateProcessingJob", job)}
    assert set(by_path) == {"appSpecification.containerArguments", "environment"}
    assert by_path["appSpecification.containerArguments"].constraint.startswith(
        "Member must satisfy constraint: [Member must have length less than or equal to 256, ")
    assert by_path["environment"].constraint.startswith(
        "Map value must satisfy constraint: [Member must have length less than or equal to 256, ")


def test_enum_range_and_required_members_nested_in_lists():
    job = dict(PROCESSING_JOB,
               ProcessingResources={"ClusterConfig": {"InstanceCount": 0, "InstanceType": "ml.m5.huge", "VolumeSizeInGB": 30}},
               ProcessingInputs=[{"InputName": "manifest", "S3Input": {"LocalPath": "/opt/ml/processing/input",
                                                                        "S3DataType": "S3Prefix"}}])
    found = [(v.member_path, v.value, v.constraint.split(": [")[0]) for v in check("sagemaker", "CreateProcessingJob", job)]
    assert found == [  # in the model's member order
        ("processingInputs.1.member.s3Input.s3Uri", MISSING, "Member must not be null"),
        ("processingResources.clusterConfig.instanceCount", 0, "Member must have value greater than or equal to 1"),
        ("processingResources.clusterConfig.instanceType", "ml.m5.huge", "Member must satisfy enum value set"),
    ]


def test_step_functions_execution_name_length_and_missing_arn():
    violations = check("stepfunctions", "StartExecution", {"name": "n" * 81})
    assert format_message(violations) == (
        "2 validation errors detected: Value null at 'stateMachineArn' failed to satisfy constraint: "
        "Member must not be null; Value '" + "n" * 81 + "' at 'name' failed to satisfy constraint: "
        "Member must have length less than or equal to 80")


def test_dynamodb_enum_and_table_name_length():
    violations = check("dynamodb", "PutItem", {"TableName": "", "Item": {"k": {"S": "v"}}, "ReturnValues": "EVERYTHING"})
    assert [v.describe() for v in violations] == [
        "Value '' at 'tableName' failed to satisfy constraint: Member must have length greater than or equal to 1",
        "Value 'EVERYTHING' at 'returnValues' failed to satisfy constraint: "
        "Member must satisfy enum value set: [NONE, ALL_OLD, UPDATED_OLD, ALL_NEW, UPDATED_NEW]",
    ]


def test_sensitive_values_are_not_repeated():
    (violation,) = check("secretsmanager", "PutSecretValue", {"SecretId": "s", "SecretString": "x" * 70000})
    assert violation.describe() == ("Value at 'secretString' failed to satisfy constraint: "
                                    "Member must have length less than or equal to 65536")


@pytest.mark.parametrize("value, refused", [
    ("s3://bucket/incoming/house prices (2024).csv", True),
    ("s3://bucket/incoming/houses#1.csv", True),
    ("s3://bucket/incoming/house prices 2024.csv", False),
    ("s3://bucket/incoming/houses.csv", False),
    ("s3://bucket/" + "k" * 245, True),  # 257 characters
])
def test_model_package_metadata_values(value, refused):
    violations = check("sagemaker", "CreateModelPackage", dict(MODEL_PACKAGE, CustomerMetadataProperties={"dataset_uri": value}))
    assert bool(violations) is refused
    if refused:
        (violation,) = violations
        assert violation.member_path == "customerMetadataProperties"
        assert violation.constraint.startswith("Map value must satisfy constraint: [Member must have length less than")


def test_type_mismatches_are_violations():
    (violation,) = check("sagemaker", "ListModelPackages", {"MaxResults": "10"})
    assert (violation.member_path, violation.constraint) == ("maxResults", "Member must be of type integer")


def _input_patterns(service: str) -> set[str]:
    model = service_model(service)
    patterns: set[str] = set()

    def walk(shape, seen):
        if shape is None or shape.name in seen:
            return
        seen.add(shape.name)
        if "pattern" in shape.metadata:
            patterns.add(shape.metadata["pattern"])
        if isinstance(shape, StructureShape):
            for member in shape.members.values():
                walk(member, seen)
        elif isinstance(shape, ListShape):
            walk(shape.member, seen)
        elif isinstance(shape, MapShape):
            walk(shape.key, seen)
            walk(shape.value, seen)

    for operation in model.operation_names:
        walk(model.operation_model(operation).input_shape, set())
    return patterns


def test_every_pattern_compiles_and_the_ones_needing_an_override_are_exactly_the_table():
    patterns = set().union(*(_input_patterns(service) for service in CHECKED_SERVICES))
    needing = {p for p in patterns if java_regex.divergence(p) is not None}
    assert needing == set(java_regex.PATTERN_OVERRIDES)
    for pattern in patterns:
        java_regex.compiled(pattern)  # raises PatternNotCheckable for a divergent pattern without override


def test_a_divergent_pattern_without_override_is_an_error_not_a_pass():
    with pytest.raises(java_regex.PatternNotCheckable, match="IsAlphabetic"):
        java_regex.matches(r"[\p{IsAlphabetic}]+", "abc")


@pytest.mark.parametrize("pattern, value, expected", [
    (r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*", "a#b", False),  # a search would accept this
    (r".*", "a\u2028b", False),  # Java's `.` stops at every line terminator
    (r"\w+", "é", False),  # Java's \w is ASCII
    (r"[\w-\/]+", "a-b/c", True),  # `-` after a predefined class is a literal in Java
    (r"abc$", "abc\r", False),
])
def test_java_meaning(pattern, value, expected):
    assert java_regex.matches(pattern, value) is expected


def test_s3_rules_the_model_does_not_carry():
    long_key = check_request(decode(*wire_request("s3", "PutObject", {"Bucket": "b", "Key": "é" * 513, "Body": b""})))
    assert [(v.error_code, dict(v.details)) for v in long_key] == [("KeyTooLongError", {"Size": 1026, "MaxSizeAllowed": 1024})]
    metadata = {"k": "v" * 2048}
    big = check_request(decode(*wire_request("s3", "PutObject", {"Bucket": "b", "Key": "k", "Metadata": metadata})))
    assert [v.error_code for v in big] == ["MetadataTooLarge"]


def test_error_shapes_parse_into_client_errors_with_the_services_code():
    from botocore.parsers import create_parser

    cases = [
        ("stepfunctions", "StartExecution", {"stateMachineArn": "arn", "name": "n" * 81}, "ValidationException"),
        ("sns", "TagResource", {"ResourceArn": "arn:aws:sns:us-east-1:123456789012:t", "Tags": [{"Key": "", "Value": "v"}]},
         "InvalidParameter"),
        ("sagemaker-featurestore-runtime", "PutRecord", {"FeatureGroupName": "fg", "Record": []}, "ValidationError"),
        ("s3", "PutObject", {"Bucket": "b", "Key": "k" * 1025}, "KeyTooLongError"),
    ]
    for service, operation, params, code in cases:
        request = decode(*wire_request(service, operation, params))
        violations = check_request(request)
        assert violations, (service, operation)
        status, headers, body = error_response(request, violations)
        model = service_model(service)
        parsed = create_parser(model.protocol).parse(
            {"status_code": status, "headers": {k.lower(): v for k, v in headers}, "body": body},
            model.operation_model(operation).output_shape)
        assert parsed["Error"]["Code"] == code
        assert parsed["Error"]["Message"]


# -- through a real moto server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def strict_endpoint():
    """A bare gateway: it checks every request against the service's constraints by default."""
    from local.aws.gateway import LocalGateway

    with LocalGateway() as gateway:
        yield gateway.url


def _client(service, endpoint):
    return boto3.client(service, endpoint_url=endpoint, config=Config(parameter_validation=False, retries={"max_attempts": 1}))


def test_moto_behind_the_check_refuses_like_aws(strict_endpoint):
    sagemaker = _client("sagemaker", strict_endpoint)
    sagemaker.create_model_package_group(ModelPackageGroupName="strict-group")  # valid: reaches moto
    with pytest.raises(ClientError) as refused:
        sagemaker.create_model_package(ModelPackageGroupName="strict-group", CustomerMetadataProperties={
            "dataset_uri": "s3://bucket/incoming/house prices (2024).csv"})
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "at 'customerMetadataProperties' failed to satisfy constraint" in error["Message"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sagemaker.list_model_packages(ModelPackageGroupName="strict-group")["ModelPackageSummaryList"] == []

    s3 = _client("s3", strict_endpoint)
    s3.create_bucket(Bucket="strict-bucket")
    with pytest.raises(ClientError) as too_long:
        s3.put_object(Bucket="strict-bucket", Key="k" * 1025, Body=b"x")
    assert too_long.value.response["Error"]["Code"] == "KeyTooLongError"
    s3.put_object(Bucket="strict-bucket", Key="k" * 1024, Body=b"x")
    assert s3.list_objects_v2(Bucket="strict-bucket")["KeyCount"] == 1

    # An enum of SageMaker, a length of Step Functions, an enum of DynamoDB: each refused in AWS's words.
    with pytest.raises(ClientError) as bad_status:
        sagemaker.list_model_packages(ModelPackageGroupName="strict-group", ModelApprovalStatus="Approve")
    assert bad_status.value.response["Error"]["Code"] == "ValidationException"
    assert ("Value 'Approve' at 'modelApprovalStatus' failed to satisfy constraint: Member must satisfy enum value "
            "set: [Approved, Rejected, PendingManualApproval]") in bad_status.value.response["Error"]["Message"]
    sfn = _client("stepfunctions", strict_endpoint)
    machine = sfn.create_state_machine(name="strict-machine", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}))["stateMachineArn"]
    with pytest.raises(ClientError) as long_name:
        sfn.start_execution(stateMachineArn=machine, name="n" * 81)
    assert long_name.value.response["Error"]["Code"] == "ValidationException"
    assert "at 'name' failed to satisfy constraint: Member must have length less than or equal to 80" in \
        long_name.value.response["Error"]["Message"]
    assert sfn.list_executions(stateMachineArn=machine)["executions"] == []
    dynamodb = _client("dynamodb", strict_endpoint)
    dynamodb.create_table(TableName="strict-table", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    with pytest.raises(ClientError) as bad_enum:
        dynamodb.put_item(TableName="strict-table", Item={"k": {"S": "a"}}, ReturnValues="EVERYTHING")
    assert bad_enum.value.response["Error"]["Code"] == "ValidationException"
    assert "at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set" in \
        bad_enum.value.response["Error"]["Message"]
    assert dynamodb.scan(TableName="strict-table")["Count"] == 0

    with pytest.raises(ClientError) as bad_session:
        _client("sts", strict_endpoint).assume_role(RoleArn=ROLE, RoleSessionName="a:b")
    assert bad_session.value.response["Error"]["Code"] == "ValidationError"
    assert "at 'roleSessionName'" in bad_session.value.response["Error"]["Message"]


def test_violation_is_a_frozen_value():
    violation = Violation("name", MISSING, "Member must not be null")
    with pytest.raises(AttributeError):
        violation.member_path = "other"  # type: ignore[misc]
    assert violation.describe() == "Value null at 'name' failed to satisfy constraint: Member must not be null"


# -- Java itself as the oracle of the pattern translation ------------------------------------------
_JAVA_MATCHER = r"""
import java.io.*; import java.nio.charset.StandardCharsets; import java.util.*; import java.util.regex.*;
public class Matches { public static void main(String[] args) throws Exception {
  BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
  Base64.Decoder b64 = Base64.getDecoder(); Map<String, Pattern> compiled = new HashMap<>();
  StringBuilder out = new StringBuilder(); String line;
  while ((line = in.readLine()) != null) { String[] f = line.split(" ", -1);
    String p = new String(b64.decode(f[0]), StandardCharsets.UTF_8), v = new String(b64.decode(f[1]), StandardCharsets.UTF_8);
    out.append(compiled.computeIfAbsent(p, Pattern::compile).matcher(v).matches() ? '1' : '0'); }
  System.out.print(out); } }
"""
_TRICKY_VALUES = [
    "", "a", "ABC", "a1", "123456789012", "all", "ALL", "my-name", "my_name", "-a", "a--b", "s3://bucket/key.csv",
    "s3://bucket/incoming/house prices (2024).csv", "https://x.y/z", ROLE, "arn:aws:lambda:us-east-1:123456789012:function:f",
    "a b", "a\tb", "a\nb", "abc\n", "abc\r", "abc\r\n", "a\rb", "a\u2028b", "a\u0085b", "\u00a0x", "é", "Éa", "٣", "日本",
    "😀", "a😀", "#", "a#b", "(", "a&b", "a'b", "a,b", "a=b", "a@b.c", "a+b/c:d", '{"k": 1}', "*", "ſ", "K", "2024-01-31",
    "2024-01-31T10:00:00Z", "10.0.0.1", "ip-10-0-0-1.ec2", "_", "a" * 70, "x\u000by", "\u001f", "~", "/a/b", " a", "a ",
    "ml.m5.xlarge", "\\", "$", "[x]",
]


def test_patterns_mean_what_java_means(tmp_path):
    import base64
    import shutil
    import subprocess

    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK on this machine to compare against")
    (tmp_path / "Matches.java").write_text(_JAVA_MATCHER)
    subprocess.run(["javac", "Matches.java"], cwd=tmp_path, check=True, timeout=120)
    patterns = sorted(set().union(*(_input_patterns(service) for service in CHECKED_SERVICES)))
    cases = [(p, v) for p in patterns for v in _TRICKY_VALUES]
    lines = "".join(f"{base64.b64encode(p.encode()).decode()} {base64.b64encode(v.encode()).decode()}\n" for p, v in cases)
    verdicts = subprocess.run(["java", "-cp", str(tmp_path), "Matches"], input=lines, capture_output=True, text=True,
                              check=True, timeout=120).stdout
    assert len(verdicts) == len(cases)
    differing = [(p, v, j) for (p, v), j in zip(cases, verdicts) if java_regex.matches(p, v) != (j == "1")]
    assert differing == []
