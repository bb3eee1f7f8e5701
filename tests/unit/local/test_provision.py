"""The provisioner on small inline templates, against a real moto server."""
from __future__ import annotations

import json
import textwrap

import boto3
import pytest

from local.aws.stack.intrinsics import Resolver, references
from local.aws.stack.model import ProvisionError, Stack, function_name_from
from local.aws.stack.provisioner import Provisioner, provision
from local.aws.stack.template import loads_template

# Stacks provisioned here attach AWS managed policies (SAM's AWSLambdaBasicExecutionRole).
pytestmark = pytest.mark.managed_policies


def _resolver(template_text: str, parameters: dict | None = None) -> Resolver:
    template = loads_template(textwrap.dedent(template_text))
    provisioner = Provisioner(template, endpoint_url="http://127.0.0.1:1", template_dir=".",
                              parameters=parameters)
    return provisioner.resolver


INTRINSICS = """
    Parameters:
      Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}
      Names: {Type: CommaDelimitedList, Default: "a,b,c"}
    Conditions:
      IsProd: !Equals [!Ref Env, prod]
      NotProd: !Not [!Condition IsProd]
    Resources: {}
"""


def test_intrinsics_resolve_parameters_pseudo_parameters_and_conditions():
    resolver = _resolver(INTRINSICS)
    resolve = lambda text: resolver.resolve(loads_template(textwrap.dedent(text))["Value"])  # noqa: E731

    assert resolve("Value: !Sub '${AWS::StackName}-${Env}-${AWS::Region}'") == "mlops-local-dev-us-east-1"
    assert resolve("Value: !Sub ['${X}/${Env}', {X: !Select [1, !Ref Names]}]") == "b/dev"
    assert resolve("Value: !Join ['-', [!Ref Env, !Ref 'AWS::AccountId']]") == "dev-123456789012"
    assert resolve("Value: !Select [2, !Split [',', 'x,y,z']]") == "z"
    assert resolve("Value: !If [IsProd, big, small]") == "small"
    assert resolve("Value: !Sub '${!Literal} ${AWS::Partition}.${AWS::URLSuffix}'") == "${Literal} aws.amazonaws.com"
    assert resolve("Value: {A: 1, B: !If [IsProd, 2, !Ref 'AWS::NoValue']}") == {"A": 1}
    assert resolve("Value: [a, !If [NotProd, !Ref 'AWS::NoValue', b]]") == ["a"]
    assert resolver.conditions == {"IsProd": False, "NotProd": True}


def test_parameter_overrides_are_checked():
    assert _resolver(INTRINSICS, {"Env": "prod"}).condition("IsProd") is True
    with pytest.raises(ProvisionError, match="AllowedValues"):
        _resolver(INTRINSICS, {"Env": "staging"})
    with pytest.raises(ProvisionError, match="not declared"):
        _resolver(INTRINSICS, {"Nope": "x"})


def test_references_and_function_names():
    fragment = loads_template("V: [!Ref A, !GetAtt B.Arn, !Sub '${C}${D.Name}${AWS::Region}${!E}', "
                              "!Sub ['${F}${G}', {F: !Ref H}]]")
    assert references(fragment) == {"A", "B", "C", "D", "G", "H"}
    assert function_name_from("arn:aws:lambda:us-east-1:123456789012:function:fn-1:live") == "fn-1"
    assert function_name_from("fn-1") == "fn-1"


STACK = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Target: {Type: String, Default: PRICE}
  AlertEmail: {Type: String, Default: ops@example.com}
Globals:
  Function:
    Runtime: python3.11
    Timeout: 30
    Environment:
      Variables:
        POWERTOOLS_SERVICE_NAME: mlops
        DEFAULT_TARGET_COLUMN: !Ref Target
Resources:
  DataBucket:
    Type: AWS::S3::Bucket
    Properties:
      VersioningConfiguration: {Status: Enabled}
      NotificationConfiguration:
        EventBridgeConfiguration: {EventBridgeEnabled: true}
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      Subscription:
        - {Protocol: email, Endpoint: !Ref AlertEmail}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      TimeToLiveSpecification: {AttributeName: expiration, Enabled: true}
  Secret:
    Type: AWS::SecretsManager::Secret
    Properties:
      GenerateSecretString: {PasswordLength: 40, ExcludePunctuation: true}
  JobsRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement: [{Effect: Allow, Principal: {Service: sagemaker.amazonaws.com}, Action: sts:AssumeRole}]
  Group:
    Type: AWS::SageMaker::ModelPackageGroup
    Properties:
      ModelPackageGroupName: !Sub "${AWS::StackName}-models"
  Pipeline:
    Type: AWS::SageMaker::Pipeline
    Metadata:
      Mlops:
        DefinitionFile: pipeline.json
        Substitutions:
          PipelineJobsRoleArn: !GetAtt JobsRole.Arn
    Properties:
      PipelineName: !Sub "${AWS::StackName}-training"
      RoleArn: !GetAtt JobsRole.Arn
      PipelineDefinition:
        PipelineDefinitionS3Location: {Bucket: unused, Key: unused}
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer/
  StartFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.lambda_handler
      Layers: [!Ref SharedLayer]
      LoggingConfig:
        LogGroup: !Ref Logs
      Environment:
        Variables:
          DATA_BUCKET: !Ref DataBucket
          TOPIC_ARN: !Ref Topic
          TABLE: !Ref Table
          GROUP: !GetAtt Group.ModelPackageGroupName
          API_URL: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/Prod"
      Events:
        Upload:
          Type: EventBridgeRule
          Properties:
            Pattern:
              source: [aws.s3]
              detail-type: [Object Created]
              detail:
                bucket: {name: [!Ref DataBucket]}
                object: {key: [{prefix: incoming/}]}
        Page:
          Type: Api
          Properties: {Path: "/approvals/{token}", Method: get}
  Flow:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: flow.asl.json
      DefinitionSubstitutions:
        FunctionArn: !GetAtt StartFunction.Arn
      Events:
        Approved:
          Type: EventBridgeRule
          Properties:
            Pattern: {source: [aws.sagemaker], detail: {ModelApprovalStatus: [Approved]}}
  AuditRule:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [aws.sagemaker]}
      Targets:
        - Id: notify
          Arn: !Ref Topic
          InputPath: $.detail
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      MetricName: Errors
      Namespace: AWS/Lambda
      Statistic: Sum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 1
      ComparisonOperator: GreaterThanOrEqualToThreshold
  Logs:
    Type: AWS::Logs::LogGroup
    Properties:
      RetentionInDays: 7
  Permission:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref StartFunction, Principal: s3.amazonaws.com}
  Dashboard:
    Type: AWS::QuickSight::Dashboard
    Properties: {}
Outputs:
  DataBucketName:
    Value: !Ref DataBucket
  PipelineName:
    Value: !Ref Pipeline
  ApprovalApiUrl:
    Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com/Prod/approvals"
"""


@pytest.fixture
def stack_dir(tmp_path):
    (tmp_path / "template.yaml").write_text(STACK)
    (tmp_path / "pipeline.json").write_text(json.dumps({"Version": "2020-12-01", "Steps": [
        {"Name": "Ingest", "Type": "Processing", "Arguments": {"RoleArn": "${PipelineJobsRoleArn}"}}]}))
    (tmp_path / "flow.asl.json").write_text(json.dumps({"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "${FunctionArn}", "End": True}}}))
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("def lambda_handler(event, context):\n    return event\n")
    (tmp_path / "layer" / "python").mkdir(parents=True)
    return tmp_path


def test_template_is_provisioned_into_moto(aws, stack_dir):
    stack = provision(stack_dir / "template.yaml", aws, api_base_url="http://127.0.0.1:9999")
    assert isinstance(stack, Stack)

    bucket = stack.ref("DataBucket")
    assert bucket == "mlops-local-databucket" == stack.outputs["DataBucketName"]
    s3 = boto3.client("s3")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    # (moto does not echo EventBridgeConfiguration back; delivery is checked in the next test)

    assert stack.email_subscriptions == [{"topic_arn": stack.ref("Topic"), "protocol": "email",
                                          "endpoint": "ops@example.com"}]
    assert boto3.client("sns").list_subscriptions_by_topic(TopicArn=stack.ref("Topic"))["Subscriptions"] == []
    assert boto3.client("dynamodb").describe_time_to_live(TableName=stack.ref("Table"))[
        "TimeToLiveDescription"]["AttributeName"] == "expiration"
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=stack.ref("Secret"))["SecretString"]
    assert len(secret) == 40 and secret.isalnum()

    sagemaker = boto3.client("sagemaker")
    assert sagemaker.describe_model_package_group(ModelPackageGroupName="mlops-local-models")[
        "ModelPackageGroupArn"] == stack.ref("Group")
    definition = json.loads(sagemaker.describe_pipeline(PipelineName="mlops-local-training")["PipelineDefinition"])
    assert definition["Steps"][0]["Arguments"]["RoleArn"] == stack.arn("JobsRole")
    assert stack.pipeline_substitutions == {"Pipeline": {"PipelineJobsRoleArn": stack.arn("JobsRole")}}
    assert stack.outputs["PipelineName"] == "mlops-local-training"

    function = stack.functions["mlops-local-StartFunction"]
    assert function.code_dir == (stack_dir / "fn").resolve()
    assert function.layer_dirs == [(stack_dir / "layer" / "python").resolve()]
    assert function.timeout == 30
    assert function.log_group == stack.ref("Logs")  # LoggingConfig.LogGroup: where Lambda sends its output
    assert function.environment == {
        "POWERTOOLS_SERVICE_NAME": "mlops",
        "DEFAULT_TARGET_COLUMN": "PRICE",
        "DATA_BUCKET": bucket,
        "TOPIC_ARN": stack.ref("Topic"),
        "TABLE": stack.ref("Table"),
        "GROUP": "mlops-local-models",
        "API_URL": "http://127.0.0.1:9999/Prod",  # the API's invoke URL points at the local API server
    }
    assert stack.outputs["ApprovalApiUrl"] == "http://127.0.0.1:9999/Prod/approvals"
    [route] = stack.api_routes
    assert (route.method, route.path, route.stage, route.payload_version, route.function_name) == (
        "GET", "/approvals/{token}", "Prod", "1.0", "mlops-local-StartFunction")

    flow = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=stack.ref("Flow"))
    assert json.loads(flow["definition"])["States"]["Call"]["Resource"] == function.arn

    targets = {(t.kind, t.arn): t for t in stack.event_targets}
    assert set(targets) == {("lambda", function.arn), ("states", stack.ref("Flow")), ("sns", stack.ref("Topic"))}
    assert targets[("sns", stack.ref("Topic"))].input_path == "$.detail"

    assert boto3.client("cloudwatch").describe_alarms(AlarmNames=[stack.ref("Alarm")])["MetricAlarms"]
    assert boto3.client("logs").describe_log_groups(logGroupNamePrefix=stack.ref("Logs"))["logGroups"][0][
        "retentionInDays"] == 7
    assert stack.skipped == {"Dashboard": "AWS::QuickSight::Dashboard"}
    # The template's Lambda permission is a statement of the function's resource policy.
    # (with the two SAM generates for the function's Api event)
    assert "Permission" in [statement["Sid"] for statement in function.permissions]


def test_rules_match_in_moto_and_reach_the_shadow_queues(aws, stack_dir):
    """moto does the pattern matching; every rule's real target gets its own shadow queue."""
    stack = provision(stack_dir / "template.yaml", aws)
    s3, sqs, events = boto3.client("s3"), boto3.client("sqs"), boto3.client("events")
    bucket = stack.ref("DataBucket")
    s3.put_object(Bucket=bucket, Key="incoming/houses.csv", Body=b"PRICE\n1\n")
    s3.put_object(Bucket=bucket, Key="other/ignored.csv", Body=b"PRICE\n1\n")
    events.put_events(Entries=[{"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change",
                                "Detail": json.dumps({"ModelApprovalStatus": "Approved"})}])

    def drain(kind):
        [target] = [t for t in stack.event_targets if t.kind == kind]
        messages = sqs.receive_message(QueueUrl=target.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]

    [upload] = drain("lambda")
    assert upload["detail"]["object"]["key"] == "incoming/houses.csv"
    [approved] = drain("states")
    assert approved["detail"] == {"ModelApprovalStatus": "Approved"}
    [audit] = drain("sns")  # the same event matched a second rule: delivery did not stop at the first
    assert audit["source"] == "aws.sagemaker"


def test_unknown_reference_is_a_clear_error(aws, tmp_path):
    template = loads_template(textwrap.dedent("""
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties:
              QueueName: !Sub "${Missing}-queue"
    """))
    with pytest.raises(ProvisionError, match="Missing"):
        provision(template, aws, template_dir=tmp_path)


def test_conditions_skip_resources(aws, tmp_path):
    template = loads_template(textwrap.dedent("""
        Parameters:
          WithQueue: {Type: String, Default: "false"}
        Conditions:
          CreateQueue: !Equals [!Ref WithQueue, "true"]
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Condition: CreateQueue
          Topic:
            Type: AWS::SNS::Topic
            Properties:
              TopicName: !If [CreateQueue, with-queue, without-queue]
    """))
    stack = provision(template, aws, template_dir=tmp_path)
    assert "Queue" not in stack.resources
    assert stack.ref("Topic").endswith(":without-queue")
    stack = provision(template, aws, template_dir=tmp_path, parameters={"WithQueue": "true"}, stack_name="second")
    assert stack.ref("Queue").endswith("/second-Queue")


def test_outputs_may_name_resources_that_are_not_provisioned_locally(aws, tmp_path):
    template = loads_template(textwrap.dedent("""
        Resources:
          Dashboard:
            Type: AWS::CloudWatch::Dashboard
            Properties:
              DashboardBody: "{}"
        Outputs:
          DashboardName:
            Value: !Ref Dashboard
    """))
    stack = provision(template, aws, stack_name="outs", template_dir=tmp_path)
    assert stack.skipped == {"Dashboard": "AWS::CloudWatch::Dashboard"}
    assert stack.outputs["DashboardName"] == "outs-Dashboard"
