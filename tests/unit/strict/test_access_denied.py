"""Refusals in each service's protocol, parsed by botocore's own response parsers."""
from __future__ import annotations

import pytest
from botocore import parsers
from botocore.awsrequest import HeadersDict

from local.aws.strict.authorization import authorization_requests
from local.aws.strict.iam_policy import Principal, evaluate
from local.aws.strict.access_denied import refusal

ACCOUNT = "123456789012"
SESSION = Principal(kind="assumed-role", arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/start/fn", account=ACCOUNT,
                    name="start", role_arn=f"arn:aws:iam::{ACCOUNT}:role/start", session_name="fn")


def denied(service, operation, params, identity=()):
    (request,) = authorization_requests(service, operation, params, region="us-east-1", account=ACCOUNT)
    return evaluate(request, list(identity), principal=SESSION)


def parsed(result):
    parser = parsers.create_parser(result.protocol)
    response = {"status_code": result.status, "headers": HeadersDict(result.headers), "body": result.body}
    return parser.parse(response, None)["Error"]


@pytest.mark.parametrize("service, operation, params, code, text", [
    ("sagemaker", "CreateModel", {"ModelName": "m"}, "AccessDeniedException",
     f"User: {SESSION.arn} is not authorized to perform: sagemaker:CreateModel on resource: "
     f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/m because no identity-based policy allows the sagemaker:CreateModel action"),
    ("s3", "GetObject", {"Bucket": "data", "Key": "incoming/a.csv"}, "AccessDenied",
     f'User: {SESSION.arn} is not authorized to perform: s3:GetObject on resource: "arn:aws:s3:::data/incoming/a.csv" '
     "because no identity-based policy allows the s3:GetObject action"),
    ("sns", "Publish", {"TopicArn": f"arn:aws:sns:us-east-1:{ACCOUNT}:t"}, "AuthorizationError",
     f"User: {SESSION.arn} is not authorized to perform: SNS:Publish on resource: arn:aws:sns:us-east-1:{ACCOUNT}:t "
     "because no identity-based policy allows the SNS:Publish action"),
    ("sqs", "SendMessage", {"QueueUrl": f"http://localhost/{ACCOUNT}/q"}, "AccessDenied",
     f"User: {SESSION.arn} is not authorized to perform: sqs:sendmessage on resource: arn:aws:sqs:us-east-1:{ACCOUNT}:q "
     "because no identity-based policy allows the sqs:sendmessage action"),
    ("ses", "SendRawEmail", {"Source": "a@example.com", "RawMessage": {"Data": b"To: b@example.com\r\n\r\nx"}},
     "AccessDenied", f"User `{SESSION.arn}' is not authorized to perform `ses:SendRawEmail' on resource "
     f"`arn:aws:ses:us-east-1:{ACCOUNT}:identity/a@example.com'"),
    ("dynamodb", "GetItem", {"TableName": "t", "Key": {"id": {"S": "k"}}}, "AccessDeniedException",
     f"User: {SESSION.arn} is not authorized to perform: dynamodb:GetItem on resource: "
     f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t because no identity-based policy allows the dynamodb:GetItem action"),
    ("secretsmanager", "GetSecretValue", {"SecretId": "token"}, "AccessDeniedException",
     f"User: {SESSION.arn} is not authorized to perform: secretsmanager:GetSecretValue on resource: token because no "
     "identity-based policy allows the secretsmanager:GetSecretValue action"),
    ("lambda", "Invoke", {"FunctionName": "f"}, "AccessDeniedException", None),
    ("sagemaker-featurestore-runtime", "PutRecord", {"FeatureGroupName": "g"}, "AccessForbidden", None),
    ("sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "e"}, "AccessDeniedException", None),
    ("stepfunctions", "StartExecution", {"stateMachineArn": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:d"},
     "AccessDeniedException", None),
    ("iam", "GetRole", {"RoleName": "r"}, "AccessDenied", None),
    ("cloudwatch", "PutMetricAlarm", {"AlarmName": "a"}, "AccessDenied", None),
    ("events", "PutEvents", {"Entries": [{"Source": "s", "DetailType": "d"}]}, "AccessDeniedException", None),
])
def test_botocore_reads_the_refusal_as_the_service_sends_it(service, operation, params, code, text):
    decision = denied(service, operation, params)
    result = refusal(service, decision, request_id="req-1")
    error = parsed(result)
    assert error["Code"] == code
    assert error["Message"] == (text or result.message)
    assert "is not authorized to perform" in error["Message"]


def test_explicit_denies_name_the_policy_type():
    decision = denied("s3", "GetObject", {"Bucket": "data", "Key": "k"},
                      [{"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}])
    assert parsed(refusal("s3", decision))["Message"].endswith("with an explicit deny in an identity-based policy")


def test_status_codes_follow_the_service():
    assert refusal("s3", denied("s3", "GetObject", {"Bucket": "b", "Key": "k"})).status == 403
    assert refusal("sagemaker", denied("sagemaker", "DescribeModel", {"ModelName": "m"})).status == 400


def test_an_allowed_decision_is_never_turned_into_a_refusal():
    allowed = denied("sagemaker", "DescribeModel", {"ModelName": "m"},
                     [{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}])
    with pytest.raises(ValueError):
        refusal("sagemaker", allowed)
