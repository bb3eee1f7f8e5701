"""Where each template resource type is created locally: one module per AWS service.

| resource type | created by |
|---|---|
| AWS::IAM::Role (+ the roles SAM generates, `stack/sam_generated.py`) | `iam.role` |
| AWS::S3::Bucket, AWS::S3::BucketPolicy | `s3.bucket`, `s3.bucket_policy` |
| AWS::SQS::Queue, AWS::SQS::QueuePolicy | `sqs.queue`, `sqs.queue_policy` |
| AWS::SNS::Topic, AWS::SNS::Subscription | `sns.topic`, `sns.subscription` |
| AWS::DynamoDB::Table, AWS::Serverless::SimpleTable | `dynamodb.table`, `dynamodb.simple_table` |
| AWS::SecretsManager::Secret | `secretsmanager.secret` |
| AWS::SSM::Parameter | `ssm.parameter` |
| AWS::Logs::LogGroup | `logs.log_group` |
| AWS::CloudWatch::Alarm | `cloudwatch.alarm` |
| AWS::SES::EmailIdentity | `ses.email_identity` |
| AWS::KMS::Key, AWS::KMS::Alias | `kms.key`, `kms.alias` |
| AWS::SageMaker::ModelPackageGroup, AWS::SageMaker::Pipeline | `sagemaker.model_package_group`, `sagemaker.pipeline` |
| AWS::Events::Rule (and SAM EventBridgeRule events) | `eventbridge.rule` (`eventbridge.sam_event_rules`) |
| AWS::Scheduler::Schedule (fired by `local.aws.scheduler`) | `scheduler.schedule` |
| AWS::Serverless::Function, ::LayerVersion, ::StateMachine, ::Api, ::HttpApi | `serverless.*` |
| AWS::Lambda::Permission (SAM generates them for function events) | `serverless.permission` |

Each creator is `creator(provisioner, logical_id, definition)`; types not listed are skipped by the
provisioner with a logged reason (`provisioner.IGNORED_TYPES` are those that need no local stand-in).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from local.aws.stack.resources import (
    cloudwatch,
    dynamodb,
    eventbridge,
    iam,
    kms,
    logs,
    s3,
    sagemaker,
    scheduler,
    secretsmanager,
    serverless,
    ses,
    sns,
    sqs,
    ssm,
)

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner

CREATORS: dict[str, Callable[["Provisioner", str, dict], None]] = {
    "AWS::IAM::Role": iam.role,
    "AWS::S3::Bucket": s3.bucket,
    "AWS::S3::BucketPolicy": s3.bucket_policy,
    "AWS::SQS::Queue": sqs.queue,
    "AWS::SQS::QueuePolicy": sqs.queue_policy,
    "AWS::SNS::Topic": sns.topic,
    "AWS::SNS::Subscription": sns.subscription,
    "AWS::DynamoDB::Table": dynamodb.table,
    "AWS::Serverless::SimpleTable": dynamodb.simple_table,
    "AWS::SecretsManager::Secret": secretsmanager.secret,
    "AWS::SSM::Parameter": ssm.parameter,
    "AWS::Logs::LogGroup": logs.log_group,
    "AWS::CloudWatch::Alarm": cloudwatch.alarm,
    "AWS::SES::EmailIdentity": ses.email_identity,
    "AWS::KMS::Key": kms.key,
    "AWS::KMS::Alias": kms.alias,
    "AWS::SageMaker::ModelPackageGroup": sagemaker.model_package_group,
    "AWS::SageMaker::Pipeline": sagemaker.pipeline,
    "AWS::Events::Rule": eventbridge.rule,
    "AWS::Scheduler::Schedule": scheduler.schedule,
    "AWS::Serverless::LayerVersion": serverless.layer,
    "AWS::Serverless::Function": serverless.function,
    "AWS::Lambda::Permission": serverless.permission,
    "AWS::Serverless::StateMachine": serverless.state_machine,
    "AWS::Serverless::Api": serverless.api,
    "AWS::Serverless::HttpApi": serverless.api,
}
