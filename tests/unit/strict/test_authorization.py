"""The operation table: the right actions, ARNs and condition context per operation, and every
operation the product calls resolves."""
from __future__ import annotations

import json

import pytest

from local.aws.strict import iam_reference
from local.aws.strict.authorization import (UnmappedOperation, authorization_requests, global_context,
                                            missing_object_request, operations_by_principal, requested_actions)
from local.aws.strict.iam_patterns import split_arn
from local.aws.strict.iam_policy import AuthorizationRequest, Principal, evaluate
from local.aws.strict.operation_table import OPERATIONS

REGION, ACCOUNT = "us-east-1", "123456789012"
SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/stack-jobs-us-east-1"
EXECUTION = f"{SM}:pipeline/stack-training/execution/abc123"
QUEUE_URL = f"http://127.0.0.1:5000/{ACCOUNT}/stack-dlq"
RAW_EMAIL = (b"From: MLOps <mlops@example.com>\r\nTo: alice@example.com\r\nReturn-Path: <bounce@example.com>\r\n"
             b"Subject: approve\r\n\r\nbody")
PACKAGE = f"{SM}:model-package/stack-models/3"
TAGS = [{"Key": "ModelPackageArn", "Value": PACKAGE}, {"Key": "DeploymentId", "Value": "d-1"}]

# One request per operation of the table, with the members the product sends.
SAMPLES: dict[tuple[str, str], dict] = {
    ("sagemaker", "CreateArtifact"): {"Source": {"SourceUri": "s3://data/incoming/a.csv",
                                                 "SourceTypes": [{"SourceIdType": "S3Version", "Value": "v1"}]},
                                      "ArtifactType": "DataSet"},
    ("sagemaker", "CreateAction"): {"ActionName": "training-abc", "ActionType": "ModelTraining",
                                    "Source": {"SourceUri": f"{SM}:training-job/abc"}},
    ("sagemaker", "CreateContext"): {"ContextName": "endpoint-prod", "ContextType": "Endpoint",
                                     "Source": {"SourceUri": f"{SM}:endpoint/prod"}, "Tags": TAGS},
    ("sagemaker", "AddAssociation"): {"SourceArn": f"{SM}:artifact/0123456789abcdef0123456789abcdef",
                                      "DestinationArn": f"{SM}:context/endpoint-prod", "AssociationType": "ContributedTo"},
    ("sagemaker", "DescribeArtifact"): {"ArtifactArn": f"{SM}:artifact/0123456789abcdef0123456789abcdef"},
    ("sagemaker", "DescribeAction"): {"ActionName": "training-abc"},
    ("sagemaker", "DescribeContext"): {"ContextName": f"{SM}:context/endpoint-prod"},
    ("sagemaker", "ListArtifacts"): {"SourceUri": PACKAGE},
    ("sagemaker", "ListActions"): {"SourceUri": f"{SM}:training-job/abc"},
    ("sagemaker", "ListContexts"): {"SourceUri": EXECUTION},
    ("sagemaker", "ListAssociations"): {"DestinationArn": f"{SM}:context/endpoint-prod"},
    ("sagemaker", "QueryLineage"): {"StartArns": [f"{SM}:context/endpoint-prod"], "Direction": "Ascendants"},
    ("sagemaker", "DescribeTrainingJob"): {"TrainingJobName": "abc-Trial-1"},
    ("s3", "GetObject"): {"Bucket": "data", "Key": "incoming/a.csv", "VersionId": "v1", "Range": "bytes=0-9"},
    ("s3", "HeadObject"): {"Bucket": "data", "Key": "incoming/a.csv"},
    ("s3", "PutObject"): {"Bucket": "data", "Key": "quarantine/a.csv.reason.json", "Tagging": "a=1&b=2", "ACL": "private"},
    ("s3", "CopyObject"): {"Bucket": "data", "Key": "quarantine/a.csv", "CopySource": {"Bucket": "data",
                                                                                      "Key": "incoming/a.csv"}},
    ("s3", "CreateMultipartUpload"): {"Bucket": "art", "Key": "pipeline/x/model.tar.gz"},
    ("s3", "UploadPart"): {"Bucket": "art", "Key": "pipeline/x/model.tar.gz", "UploadId": "u", "PartNumber": 1},
    ("s3", "UploadPartCopy"): {"Bucket": "data", "Key": "quarantine/a.csv", "UploadId": "u", "PartNumber": 1,
                               "CopySource": "data/incoming/a.csv?versionId=v1"},
    ("s3", "CompleteMultipartUpload"): {"Bucket": "art", "Key": "pipeline/x/model.tar.gz", "UploadId": "u"},
    ("s3", "AbortMultipartUpload"): {"Bucket": "art", "Key": "pipeline/x/model.tar.gz", "UploadId": "u"},
    ("s3", "ListObjectsV2"): {"Bucket": "art", "Prefix": "pipeline/abc/Evaluate/evaluation/", "MaxKeys": 100,
                              "Delimiter": "/"},
    ("s3", "ListObjectVersions"): {"Bucket": "data", "Prefix": "incoming/"},
    ("s3", "CreateBucket"): {"Bucket": "data"},
    ("s3", "PutBucketVersioning"): {"Bucket": "data", "VersioningConfiguration": {"Status": "Enabled"}},
    ("s3", "PutBucketPolicy"): {"Bucket": "data", "Policy": "{}"},
    ("s3", "PutBucketNotificationConfiguration"): {"Bucket": "data", "NotificationConfiguration": {}},
    ("s3", "PutPublicAccessBlock"): {"Bucket": "data", "PublicAccessBlockConfiguration": {}},
    ("sagemaker", "StartPipelineExecution"): {"PipelineName": "Stack-Training"},
    ("sagemaker", "DescribePipelineExecution"): {"PipelineExecutionArn": EXECUTION},
    ("sagemaker", "ListPipelineExecutionSteps"): {"PipelineExecutionArn": EXECUTION},
    ("sagemaker", "ListPipelineParametersForExecution"): {"PipelineExecutionArn": EXECUTION},
    ("sagemaker", "DescribePipelineDefinitionForExecution"): {"PipelineExecutionArn": EXECUTION},
    ("sagemaker", "ListPipelineExecutions"): {"PipelineName": "stack-training"},
    ("sagemaker", "DescribePipeline"): {"PipelineName": "stack-training"},
    ("sagemaker", "CreatePipeline"): {"PipelineName": "stack-training", "RoleArn": ROLE, "Tags": TAGS[:1]},
    ("sagemaker", "CreateProcessingJob"): {"ProcessingJobName": "pipelines-abc-Ingest", "RoleArn": ROLE,
                                           "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge"}}},
    ("sagemaker", "CreateHyperParameterTuningJob"): {"HyperParameterTuningJobName": "abc-HPTuning",
                                                     "TrainingJobDefinition": {"RoleArn": ROLE}},
    ("sagemaker", "DescribeProcessingJob"): {"ProcessingJobName": "pipelines-abc-Ingest"},
    ("sagemaker", "DescribeHyperParameterTuningJob"): {"HyperParameterTuningJobName": "abc-HPTuning"},
    ("sagemaker", "ListTrainingJobsForHyperParameterTuningJob"): {"HyperParameterTuningJobName": "abc-HPTuning"},
    ("sagemaker", "CreateExperiment"): {"ExperimentName": "stack-training"},
    ("sagemaker", "CreateTrial"): {"TrialName": "abc123", "ExperimentName": "stack-training"},
    ("sagemaker", "CreateTrialComponent"): {"TrialComponentName": "abc-ray-xgboost"},
    ("sagemaker", "AssociateTrialComponent"): {"TrialComponentName": "abc-ray-xgboost", "TrialName": "abc123"},
    ("sagemaker", "CreateModelPackageGroup"): {"ModelPackageGroupName": "stack-models"},
    ("sagemaker", "CreateModelPackage"): {"ModelPackageGroupName": "stack-models",
                                          "ModelApprovalStatus": "PendingManualApproval",
                                          "CustomerMetadataProperties": {"target_column": "PRICE"}},
    ("sagemaker", "DescribeModelPackage"): {"ModelPackageName": PACKAGE},
    ("sagemaker", "UpdateModelPackage"): {"ModelPackageArn": PACKAGE, "ModelApprovalStatus": "Approved"},
    ("sagemaker", "ListModelPackages"): {"ModelPackageGroupName": "stack-models", "ModelApprovalStatus": "Approved"},
    ("sagemaker", "DescribeEndpoint"): {"EndpointName": "stack-endpoint"},
    ("sagemaker", "DescribeEndpointConfig"): {"EndpointConfigName": "stack-endpoint-v3-1a2b3c4d"},
    ("sagemaker", "DescribeModel"): {"ModelName": "stack-endpoint-v3-1a2b3c4d"},
    ("sagemaker", "DeleteEndpoint"): {"EndpointName": "stack-endpoint"},
    ("sagemaker", "DeleteEndpointConfig"): {"EndpointConfigName": "stack-endpoint-v3-1a2b3c4d"},
    ("sagemaker", "DeleteModel"): {"ModelName": "stack-endpoint-v3-1a2b3c4d"},
    ("sagemaker", "CreateModel"): {"ModelName": "Stack-Endpoint-v3-1a2b3c4d", "ExecutionRoleArn": ROLE,
                                   "Containers": [{"ModelPackageName": PACKAGE}], "Tags": TAGS},
    ("sagemaker", "CreateEndpointConfig"): {"EndpointConfigName": "stack-endpoint-v3-1a2b3c4d", "Tags": TAGS,
                                            "ProductionVariants": [{"VariantName": "AllTraffic",
                                                                    "ModelName": "stack-endpoint-v3-1a2b3c4d",
                                                                    "InstanceType": "ml.m5.large"}]},
    ("sagemaker", "CreateEndpoint"): {"EndpointName": "stack-endpoint", "EndpointConfigName": "stack-endpoint-v3-1a2b3c4d",
                                      "Tags": TAGS},
    ("sagemaker", "UpdateEndpoint"): {"EndpointName": "stack-endpoint", "EndpointConfigName": "stack-endpoint-v4-0",
                                      "DeploymentConfig": {"AutoRollbackConfiguration": {
                                          "Alarms": [{"AlarmName": "stack-endpoint-5xx"}]}}},
    ("sagemaker-runtime", "InvokeEndpoint"): {"EndpointName": "stack-endpoint", "Body": b"{}"},
    ("sagemaker", "CreateFeatureGroup"): {"FeatureGroupName": "fs-abc-1a2b3c4d", "RoleArn": ROLE,
                                          "OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "s3://art/offline-store"}},
                                          "OnlineStoreConfig": {"EnableOnlineStore": False}},
    ("sagemaker", "DescribeFeatureGroup"): {"FeatureGroupName": "fs-abc-1a2b3c4d"},
    ("sagemaker-featurestore-runtime", "PutRecord"): {"FeatureGroupName": "fs-abc-1a2b3c4d", "Record": []},
    ("dynamodb", "GetItem"): {"TableName": "nonces", "Key": {"id": {"S": "nonce#n"}}, "ConsistentRead": True},
    ("dynamodb", "PutItem"): {"TableName": "idempotency", "Item": {"id": {"S": "k"}}, "ReturnValues": "NONE"},
    ("dynamodb", "UpdateItem"): {"TableName": "idempotency", "Key": {"id": {"S": "k"}}},
    ("dynamodb", "DeleteItem"): {"TableName": "nonces", "Key": {"id": {"S": "nonce#n"}}},
    ("dynamodb", "TransactWriteItems"): {"TransactItems": [
        {"Put": {"TableName": "nonces", "Item": {"id": {"S": "nonce#n"}}}},
        {"ConditionCheck": {"TableName": "nonces", "Key": {"id": {"S": "decision#p"}}, "ConditionExpression": "x"}}]},
    ("dynamodb", "CreateTable"): {"TableName": "nonces"},
    ("dynamodb", "UpdateTimeToLive"): {"TableName": "nonces", "TimeToLiveSpecification": {}},
    ("sns", "Publish"): {"TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:notifications", "Message": "m"},
    ("sns", "CreateTopic"): {"Name": "notifications"},
    ("sns", "Subscribe"): {"TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:notifications", "Protocol": "email",
                           "Endpoint": "ops@example.com"},
    ("sqs", "SendMessage"): {"QueueUrl": QUEUE_URL, "MessageBody": "{}"},
    ("sqs", "ReceiveMessage"): {"QueueUrl": QUEUE_URL},
    ("sqs", "DeleteMessage"): {"QueueUrl": QUEUE_URL, "ReceiptHandle": "r"},
    ("sqs", "GetQueueAttributes"): {"QueueUrl": QUEUE_URL},
    ("sqs", "GetQueueUrl"): {"QueueName": "stack-dlq"},
    ("sqs", "CreateQueue"): {"QueueName": "stack-dlq"},
    ("sqs", "SetQueueAttributes"): {"QueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/stack-dlq",
                                    "Attributes": {"Policy": "{}"}},
    ("ses", "SendRawEmail"): {"Source": "mlops@example.com", "Destinations": ["alice@example.com"],
                              "RawMessage": {"Data": RAW_EMAIL}},
    ("ses", "SendEmail"): {"Source": "MLOps <mlops@example.com>", "Destination": {"ToAddresses": ["a@example.com"]},
                           "Message": {}},
    ("ses", "VerifyEmailIdentity"): {"EmailAddress": "mlops@example.com"},
    ("ses", "VerifyDomainIdentity"): {"Domain": "example.com"},
    ("secretsmanager", "GetSecretValue"): {"SecretId": "stack/approval/token-key", "VersionStage": "AWSCURRENT"},
    ("secretsmanager", "PutSecretValue"): {"SecretId": "stack/approval/token-key", "SecretString": "s"},
    ("secretsmanager", "CreateSecret"): {"Name": "stack/approval/token-key", "Description": "d"},
    ("lambda", "Invoke"): {"FunctionName": "stack-deploy-prepare", "Payload": b"{}"},
    ("stepfunctions", "StartExecution"): {"stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:stack-deploy"},
    ("stepfunctions", "DescribeExecution"): {"executionArn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:stack-deploy:e1"},
    ("stepfunctions", "ListExecutions"): {"stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:stack-deploy"},
    ("stepfunctions", "GetExecutionHistory"): {"executionArn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:stack-deploy:e1"},
    ("stepfunctions", "CreateStateMachine"): {"name": "stack-deploy", "definition": "{}",
                                              "roleArn": f"arn:aws:iam::{ACCOUNT}:role/deploy"},
    ("events", "PutEvents"): {"Entries": [{"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change",
                                           "Detail": "{}"}]},
    ("events", "PutRule"): {"Name": "stack-deploy-approved", "EventPattern": json.dumps(
        {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"]})},
    ("events", "PutTargets"): {"Rule": "stack-deploy-approved", "Targets": [
        {"Id": "1", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:shadow", "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/events"}]},
    ("cloudwatch", "PutMetricAlarm"): {"AlarmName": "stack-endpoint-5xx", "AlarmActions": ["arn:aws:sns:x"]},
    ("cloudwatch", "PutMetricData"): {"Namespace": "/aws/sagemaker/Endpoints", "MetricData": []},
    ("cloudwatch", "GetMetricStatistics"): {"Namespace": "RaySageMakerMLOps/DataDrift", "MetricName": "PSI",
                                            "StartTime": 0, "EndTime": 1, "Period": 60, "Statistics": ["Maximum"]},
    ("logs", "CreateLogGroup"): {"logGroupName": "/aws/lambda/stack-start-pipeline"},
    ("logs", "CreateLogStream"): {"logGroupName": "/aws/sagemaker/ProcessingJobs", "logStreamName": "job/algo-1-1"},
    ("logs", "PutLogEvents"): {"logGroupName": "/aws/sagemaker/ProcessingJobs", "logStreamName": "job/algo-1-1",
                               "logEvents": [{"timestamp": 1, "message": "m"}]},
    ("logs", "DescribeLogStreams"): {"logGroupName": "/aws/sagemaker/ProcessingJobs"},
    ("logs", "GetLogEvents"): {"logGroupName": "/aws/lambda/fn", "logStreamName": "2025/01/01/[$LATEST]0a"},
    ("logs", "PutRetentionPolicy"): {"logGroupName": "/aws/lambda/stack-start-pipeline", "retentionInDays": 7},
    ("kms", "CreateKey"): {"Description": "d", "KeyUsage": "ENCRYPT_DECRYPT"},
    ("kms", "CreateAlias"): {"AliasName": "alias/stack-notifications", "TargetKeyId": "1234abcd"},
    ("ssm", "PutParameter"): {"Name": "/stack/setting", "Value": "v", "Overwrite": True},
    ("iam", "CreateRole"): {"RoleName": "stack-jobs-us-east-1", "Path": "/", "AssumeRolePolicyDocument": "{}"},
    ("iam", "GetRole"): {"RoleName": "stack-jobs-us-east-1"},
    ("iam", "AttachRolePolicy"): {"RoleName": "stack-jobs-us-east-1",
                                  "PolicyArn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"},
    ("iam", "PutRolePolicy"): {"RoleName": "stack-jobs-us-east-1", "PolicyName": "p", "PolicyDocument": "{}"},
    ("sts", "AssumeRole"): {"RoleArn": ROLE, "RoleSessionName": "ingest"},
}


def requests_for(service, operation, params=None, **options):
    params = SAMPLES[(service, operation)] if params is None else params
    return authorization_requests(service, operation, params, region=REGION, account=ACCOUNT, **options)


def summary(requests):
    return [(r.action, r.resource) for r in requests]


def test_every_operation_in_the_table_has_a_sample_and_every_sample_an_operation():
    assert set(SAMPLES) == set(OPERATIONS)


@pytest.mark.parametrize("key", sorted(SAMPLES), ids=lambda k: f"{k[0]}:{k[1]}")
def test_every_entry_resolves_to_well_formed_requests(key):
    requests = requests_for(*key)
    assert requests, f"{key} authorizes nothing"
    for request in requests:
        assert request.action in OPERATIONS[key].actions
        assert request.resource == "*" or split_arn(request.resource), request.resource
        assert "${" not in request.resource
        # The table's requests evaluate cleanly (no unknown operator, no malformed context).
        evaluate(request, [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}])


def test_every_entry_names_who_calls_it_except_those_kept_for_their_condition_keys():
    uncalled = {key for key, found in OPERATIONS.items() if not found.callers}
    assert uncalled == {("ses", "SendEmail")}


def test_an_operation_missing_from_the_table_fails_loudly():
    with pytest.raises(UnmappedOperation, match="s3:DeleteBucket is not in the strict face's authorization table"):
        authorization_requests("s3", "DeleteBucket", {"Bucket": "b"}, region=REGION, account=ACCOUNT)


def test_the_committed_iam_reference_matches_policy_sentrys_database():
    committed = json.loads(iam_reference.REFERENCE_FILE.read_text(encoding="utf-8"))
    assert committed == iam_reference.generate(requested_actions()), (
        "regenerate with: .venv/bin/python -m local.aws.strict.iam_reference --write")


# -- S3 -----------------------------------------------------------------------------------------
def test_s3_reads_ask_for_the_version_action_when_a_version_is_named():
    (versioned,) = requests_for("s3", "GetObject")
    assert (versioned.action, versioned.resource) == ("s3:GetObjectVersion", "arn:aws:s3:::data/incoming/a.csv")
    assert versioned.context == {"s3:versionid": "v1"}
    assert versioned.resource_account == ACCOUNT
    (plain,) = requests_for("s3", "HeadObject")
    assert plain.action == "s3:GetObject"


def test_copy_object_reads_the_source_and_writes_the_target():
    assert summary(requests_for("s3", "CopyObject")) == [
        ("s3:GetObject", "arn:aws:s3:::data/incoming/a.csv"), ("s3:PutObject", "arn:aws:s3:::data/quarantine/a.csv")]
    assert summary(requests_for("s3", "UploadPartCopy"))[0] == ("s3:GetObjectVersion", "arn:aws:s3:::data/incoming/a.csv")


def test_put_object_with_tags_and_acl_needs_those_permissions_too():
    actions = [r.action for r in requests_for("s3", "PutObject")]
    assert actions == ["s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectAcl"]
    assert requests_for("s3", "PutObject")[1].context == {"s3:RequestObjectTagKeys": ["a", "b"]}


def test_listing_is_list_bucket_with_the_prefix_and_its_siblings_in_the_context():
    (listing,) = requests_for("s3", "ListObjectsV2")
    assert (listing.action, listing.resource) == ("s3:ListBucket", "arn:aws:s3:::art")
    assert listing.context == {"s3:prefix": "pipeline/abc/Evaluate/evaluation/", "s3:delimiter": "/", "s3:max-keys": 100}
    (no_prefix,) = requests_for("s3", "ListObjectsV2", {"Bucket": "art"})
    assert no_prefix.context == {"s3:prefix": ""}


def test_a_missing_object_is_checked_against_list_bucket():
    request = missing_object_request({"Bucket": "data", "Key": "incoming/dataset.json"}, region=REGION, account=ACCOUNT)
    assert (request.action, request.resource) == ("s3:ListBucket", "arn:aws:s3:::data")


# -- SageMaker ----------------------------------------------------------------------------------
def test_sagemaker_lower_cases_names_in_arns_but_keeps_model_package_case():
    (start,) = requests_for("sagemaker", "StartPipelineExecution")
    assert start.resource == f"{SM}:pipeline/stack-training"
    (package,) = requests_for("sagemaker", "DescribeModelPackage", {"ModelPackageName": "MyGroup/1"})
    assert package.resource == f"{SM}:model-package/MyGroup/1"
    (given,) = requests_for("sagemaker", "DescribeEndpoint", {"EndpointName": f"{SM}:endpoint/AsGiven"})
    assert given.resource == f"{SM}:endpoint/AsGiven"


def test_create_model_passes_its_role_and_tags_the_new_model():
    create, add_tags, pass_role = requests_for("sagemaker", "CreateModel")
    model = f"{SM}:model/stack-endpoint-v3-1a2b3c4d"
    assert (create.action, create.resource) == ("sagemaker:CreateModel", model)
    assert create.context["aws:TagKeys"] == ["ModelPackageArn", "DeploymentId"]
    assert create.context["aws:RequestTag/DeploymentId"] == "d-1"
    assert (add_tags.action, add_tags.resource, add_tags.context["sagemaker:TaggingAction"]) == (
        "sagemaker:AddTags", model, "CreateModel")
    assert (pass_role.action, pass_role.resource, pass_role.context) == (
        "iam:PassRole", ROLE, {"iam:PassedToService": "sagemaker.amazonaws.com"})


def test_create_and_update_endpoint_are_authorized_on_the_endpoint_and_its_config():
    assert [r.resource for r in requests_for("sagemaker", "CreateEndpoint") if r.action == "sagemaker:CreateEndpoint"] == [
        f"{SM}:endpoint/stack-endpoint", f"{SM}:endpoint-config/stack-endpoint-v3-1a2b3c4d"]
    update = summary(requests_for("sagemaker", "UpdateEndpoint"))
    assert update == [("sagemaker:UpdateEndpoint", f"{SM}:endpoint/stack-endpoint"),
                      ("sagemaker:UpdateEndpoint", f"{SM}:endpoint-config/stack-endpoint-v4-0"),
                      ("cloudwatch:DescribeAlarms", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:stack-endpoint-5xx")]


def test_create_endpoint_config_names_its_models_and_instance_types():
    create = requests_for("sagemaker", "CreateEndpointConfig")[0]
    assert create.context["sagemaker:InstanceTypes"] == ["ml.m5.large"]
    assert create.context["sagemaker:ModelArn"] == [f"{SM}:model/stack-endpoint-v3-1a2b3c4d"]


def test_the_pipeline_registers_models_on_their_group_with_status_and_metadata():
    (register,) = requests_for("sagemaker", "CreateModelPackage")
    assert register.resource == f"{SM}:model-package-group/stack-models"
    assert register.context == {"sagemaker:ModelApprovalStatus": "PendingManualApproval",
                                "sagemaker:CustomerMetadataProperties/target_column": "PRICE"}


def test_the_pipeline_passes_the_jobs_role_to_its_step_jobs():
    create, pass_role = requests_for("sagemaker", "CreateHyperParameterTuningJob")
    assert create.resource == f"{SM}:hyper-parameter-tuning-job/abc-hptuning"
    assert (pass_role.resource, pass_role.context["iam:PassedToService"]) == (ROLE, "sagemaker.amazonaws.com")


def test_trials_are_authorized_on_the_trial_and_its_experiment():
    assert summary(requests_for("sagemaker", "CreateTrial")) == [
        ("sagemaker:CreateTrial", f"{SM}:experiment-trial/abc123"), ("sagemaker:CreateTrial", f"{SM}:experiment/stack-training")]


def test_list_model_packages_is_on_every_resource():
    assert summary(requests_for("sagemaker", "ListModelPackages")) == [("sagemaker:ListModelPackages", "*")]


def test_feature_groups_pass_the_offline_store_role_and_describe_the_store():
    create, pass_role = requests_for("sagemaker", "CreateFeatureGroup")
    assert create.context == {"sagemaker:FeatureGroupEnableOnlineStore": "false",
                              "sagemaker:FeatureGroupOfflineStoreS3Uri": "s3://art/offline-store",
                              "sagemaker:FeatureGroupDisableGlueTableCreation": "false"}
    assert pass_role.resource == ROLE
    assert summary(requests_for("sagemaker-featurestore-runtime", "PutRecord")) == [
        ("sagemaker:PutRecord", f"{SM}:feature-group/fs-abc-1a2b3c4d")]


def test_the_runtime_invokes_the_lower_cased_endpoint():
    assert summary(requests_for("sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "Stack-Endpoint"})) == [
        ("sagemaker:InvokeEndpoint", f"{SM}:endpoint/stack-endpoint")]


# -- other services -----------------------------------------------------------------------------
def test_transact_write_items_is_each_items_own_action():
    put, check = requests_for("dynamodb", "TransactWriteItems")
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/nonces"
    assert (put.action, put.resource, put.context) == ("dynamodb:PutItem", table,
                                                       {"dynamodb:EnclosingOperation": "TransactWriteItems"})
    assert (check.action, check.context) == ("dynamodb:ConditionCheckItem", {"dynamodb:LeadingKeys": ["decision#p"]})


def test_send_raw_email_supplies_the_ses_condition_keys():
    (send,) = requests_for("ses", "SendRawEmail")
    assert send.resource == f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/mlops@example.com"
    assert send.context == {"ses:FromAddress": "mlops@example.com", "ses:Recipients": ["alice@example.com"],
                            "ses:ApiVersion": "1", "ses:FeedbackAddress": "bounce@example.com"}
    (from_header,) = requests_for("ses", "SendRawEmail", {"RawMessage": {"Data": RAW_EMAIL}})
    assert (from_header.context["ses:FromAddress"], from_header.context["ses:FromDisplayName"]) == (
        "mlops@example.com", "MLOps")
    assert from_header.context["ses:Recipients"] == ["alice@example.com"]


class FakeLookup:
    def secret_arn(self, secret_id):
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}-AbCdEf"

    def role_arn(self, role_name):
        return f"arn:aws:iam::{ACCOUNT}:role/service-role/{role_name}"

    def ses_identity(self, address):
        return address.rpartition("@")[2]


def test_resource_lookups_resolve_secret_names_role_paths_and_ses_identities():
    (secret,) = requests_for("secretsmanager", "GetSecretValue", lookup=FakeLookup())
    assert secret.resource.endswith(":secret:stack/approval/token-key-AbCdEf")
    assert secret.context == {"secretsmanager:SecretId": "stack/approval/token-key", "secretsmanager:VersionStage": "AWSCURRENT"}
    assert secret.shown_resource == "stack/approval/token-key"
    (unresolved,) = requests_for("secretsmanager", "GetSecretValue")
    assert unresolved.resource.endswith(":secret:stack/approval/token-key-??????")
    (role,) = requests_for("iam", "GetRole", lookup=FakeLookup())
    assert role.resource == f"arn:aws:iam::{ACCOUNT}:role/service-role/stack-jobs-us-east-1"
    (send,) = requests_for("ses", "SendRawEmail", lookup=FakeLookup())
    assert send.resource.endswith(":identity/example.com")


def test_a_service_acting_for_a_resource_supplies_source_arn_and_account():
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/stack-dataset-uploaded"
    (invoke,) = requests_for("lambda", "Invoke", {"FunctionName": "stack-start-pipeline"}, source_arn=rule,
                             source_account=ACCOUNT)
    assert invoke.resource == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:stack-start-pipeline"
    assert invoke.context == {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}
    permission = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "lambda:InvokeFunction",
        "Resource": invoke.resource, "Condition": {"ArnLike": {"AWS:SourceArn": rule}}}]}
    assert evaluate(invoke, [], permission, Principal.service("events.amazonaws.com", ACCOUNT)).allowed


def test_queue_urls_become_queue_arns_and_events_carry_source_and_detail_type():
    (send,) = requests_for("sqs", "SendMessage")
    assert send.resource == f"arn:aws:sqs:{REGION}:{ACCOUNT}:stack-dlq"
    (put,) = requests_for("events", "PutEvents")
    assert put.resource == f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    assert put.context == {"events:source": ["aws.sagemaker"], "events:detail-type": ["SageMaker Model Package State Change"]}
    targets, passed = requests_for("events", "PutTargets")
    assert targets.resource == f"arn:aws:events:{REGION}:{ACCOUNT}:rule/stack-deploy-approved"
    assert passed.context == {"iam:PassedToService": "events.amazonaws.com"}


def test_create_alias_is_authorized_on_the_alias_and_the_key():
    assert [r.resource for r in requests_for("kms", "CreateAlias")] == [
        f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/stack-notifications", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd"]


def test_put_metric_data_is_on_every_resource_with_the_namespace():
    (put,) = requests_for("cloudwatch", "PutMetricData")
    assert (put.resource, put.context) == ("*", {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"})


def test_the_global_context_reports_transport_time_and_source():
    context = global_context(secure_transport=True, source_ip="127.0.0.1")
    assert context["aws:SecureTransport"] is True and context["aws:SourceIp"] == "127.0.0.1"
    assert {"aws:CurrentTime", "aws:EpochTime"} <= set(context)


def test_the_pairs_by_principal_cover_every_role_of_the_template():
    principals = set(operations_by_principal())
    for role in ("StartPipelineFunctionRole", "PipelineStatusFunctionRole", "NotifyApprovalFunctionRole",
                 "ApprovalApiFunctionRole", "DeployPrepareFunctionRole", "DeploySmokeTestFunctionRole",
                 "DeployNotifyFunctionRole", "DeployStateMachineRole", "PipelineExecutionRole", "PipelineJobsRole",
                 "ModelExecutionRole", "events.amazonaws.com", "apigateway.amazonaws.com"):
        assert role in principals


def test_table_requests_evaluate_against_a_template_style_policy():
    """The JsonGet read of the pipeline: s3:GetObject on the evaluation report, with the pipeline
    execution role's session as the caller."""
    session = Principal(kind="assumed-role", arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/pipeline/SageMaker",
                        account=ACCOUNT, name="pipeline", role_arn=f"arn:aws:iam::{ACCOUNT}:role/pipeline")
    (read,) = requests_for("s3", "GetObject", {"Bucket": "art", "Key": "pipeline/abc/Evaluate/evaluation/evaluation.json"})
    reads_reports = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                             "Resource": "arn:aws:s3:::art/pipeline/*"}]}
    assert evaluate(read, [reads_reports], principal=session).allowed
    assert not evaluate(read, [], principal=session).allowed
    assert isinstance(read, AuthorizationRequest)


def test_table_entries_cannot_invent_actions_resource_types_or_condition_keys():
    from local.aws.strict.operation_table import Scope

    scope = Scope("s3", "GetObject", REGION, ACCOUNT, frozenset({"s3:GetObject", "sagemaker:DescribeEndpoint"}))
    with pytest.raises(ValueError, match="does not declare the action s3:PutObject"):
        scope.request("s3:PutObject", "arn:aws:s3:::b/k")
    with pytest.raises(ValueError, match=r"no condition keys \['s3:madeup'\]"):
        scope.request("s3:GetObject", "arn:aws:s3:::b/k", {"s3:madeup": "x"})
    with pytest.raises(ValueError, match="takes no bucket resource"):
        scope.request("s3:GetObject", "arn:aws:s3:::b", resource_type="bucket")
    with pytest.raises(ValueError, match="requires a endpoint resource"):
        scope.request("sagemaker:DescribeEndpoint")


# -- SageMaker lineage ----------------------------------------------------------------------------
def test_lineage_writes_are_on_the_entities_and_an_association_on_both_ends():
    (artifact,) = requests_for("sagemaker", "CreateArtifact")
    assert (artifact.action, artifact.resource) == ("sagemaker:CreateArtifact", f"{SM}:artifact/*")
    create, tagging = requests_for("sagemaker", "CreateContext")
    assert create.resource == tagging.resource == f"{SM}:context/endpoint-prod"
    assert tagging.context["sagemaker:TaggingAction"] == "CreateContext"
    source, destination = requests_for("sagemaker", "AddAssociation")
    assert (source.resource, destination.resource) == (f"{SM}:artifact/0123456789abcdef0123456789abcdef",
                                                       f"{SM}:context/endpoint-prod")
    (by_name,) = requests_for("sagemaker", "DescribeAction")
    assert by_name.resource == f"{SM}:action/training-abc"
    (query,) = requests_for("sagemaker", "QueryLineage")
    assert query.resource == "*"
    (training,) = requests_for("sagemaker", "DescribeTrainingJob")
    assert training.resource == f"{SM}:training-job/abc-trial-1"
