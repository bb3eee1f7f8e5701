"""Principals and policies read from moto's in-process backends (moto's `mock_aws`)."""
from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from local.aws.strict.authorization import authorization_requests
from local.aws.strict.iam_policy import AuthorizationRequest, Principal, evaluate
from local.aws.strict.principals import MotoLookup, identity_policies, principal_for_access_key, resource_policy

ACCOUNT, REGION = "123456789012", "us-east-1"
TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                                                 "Action": "sts:AssumeRole"}]}


def document(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _mocked(monkeypatch, load_managed_policies: bool):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    if load_managed_policies:
        # moto knows AWS-managed policies (AdministratorAccess, ...) only when told to load them (~1 s).
        monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    with mock_aws():
        yield lambda service: boto3.client(service, region_name=REGION)


@pytest.fixture
def aws(monkeypatch):
    yield from _mocked(monkeypatch, load_managed_policies=False)


@pytest.fixture
def aws_with_managed_policies(monkeypatch):
    yield from _mocked(monkeypatch, load_managed_policies=True)


def test_a_user_key_is_the_user_with_its_own_group_and_managed_policies(aws_with_managed_policies):
    aws = aws_with_managed_policies
    iam = aws("iam")
    iam.create_user(UserName="alice", Tags=[{"Key": "team", "Value": "ml"}])
    iam.put_user_policy(UserName="alice", PolicyName="read-data", PolicyDocument=document(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::data/*"}))
    iam.attach_user_policy(UserName="alice", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    iam.create_group(GroupName="approvers")
    iam.add_user_to_group(GroupName="approvers", UserName="alice")
    iam.put_group_policy(GroupName="approvers", PolicyName="decide", PolicyDocument=document(
        {"Effect": "Deny", "Action": "sagemaker:DeleteModelPackage", "Resource": "*"}))
    key = iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]

    principal = principal_for_access_key(key, ACCOUNT)
    assert (principal.kind, principal.arn, principal.name) == ("user", f"arn:aws:iam::{ACCOUNT}:user/alice", "alice")
    assert principal.tags == {"team": "ml"} and principal.unique_id

    names = [p["PolicyName"] for p in identity_policies(principal)]
    assert names == ["read-data", "AdministratorAccess", "approvers/decide"]
    # AdministratorAccess allows everything; the group's Deny still wins.
    delete = AuthorizationRequest("sagemaker:DeleteModelPackage", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/g/1")
    denied = evaluate(delete, identity_policies(principal), principal=principal)
    assert (denied.allowed, denied.policy_name) == (False, "approvers/decide")
    (read,) = authorization_requests("s3", "GetObject", {"Bucket": "other", "Key": "k"}, region=REGION, account=ACCOUNT)
    assert evaluate(read, identity_policies(principal), principal=principal).policy_name == "AdministratorAccess"


def test_a_deactivated_user_key_and_an_unknown_key_are_no_one(aws):
    iam = aws("iam")
    iam.create_user(UserName="bob")
    key = iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="bob", AccessKeyId=key, Status="Inactive")
    assert principal_for_access_key(key, ACCOUNT) is None
    assert principal_for_access_key("AKIAUNKNOWNKEY000000", ACCOUNT) is None


def test_an_assumed_role_key_is_the_role_session_with_the_roles_policies(aws):
    iam = aws("iam")
    role = iam.create_role(RoleName="stack-jobs-us-east-1", Path="/service/", AssumeRolePolicyDocument=json.dumps(TRUST),
                           Tags=[{"Key": "stack", "Value": "mlops"}])["Role"]
    iam.put_role_policy(RoleName="stack-jobs-us-east-1", PolicyName="pipeline-jobs", PolicyDocument=document(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::artifacts/*"}))
    credentials = aws("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="ingest")["Credentials"]

    principal = principal_for_access_key(credentials["AccessKeyId"], ACCOUNT)
    assert principal.kind == "assumed-role"
    assert principal.arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/stack-jobs-us-east-1/ingest"
    assert (principal.role_arn, principal.session_name) == (role["Arn"], "ingest")
    assert principal.unique_id == f"{role['RoleId']}:ingest"
    assert principal.tags == {"stack": "mlops"}
    assert principal.context()["aws:principalarn"] == role["Arn"]

    (read,) = authorization_requests("s3", "GetObject", {"Bucket": "artifacts", "Key": "pipeline/x"},
                                     region=REGION, account=ACCOUNT)
    assert evaluate(read, identity_policies(principal), principal=principal).allowed
    (other,) = authorization_requests("s3", "GetObject", {"Bucket": "data", "Key": "x"}, region=REGION, account=ACCOUNT)
    assert not evaluate(other, identity_policies(principal), principal=principal).allowed


def test_resource_policies_moto_stores(aws):
    s3 = aws("s3")
    s3.create_bucket(Bucket="data")
    bucket_policy = document({"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                              "Resource": "arn:aws:s3:::data/*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    s3.put_bucket_policy(Bucket="data", Policy=bucket_policy)
    assert resource_policy("s3", "arn:aws:s3:::data/incoming/a.csv")["PolicyDocument"]["Statement"][0]["Sid"] == \
        "DenyInsecureTransport"
    assert resource_policy("s3", "arn:aws:s3:::missing-bucket") is None

    queue_url = aws("sqs").create_queue(QueueName="dlq", Attributes={"Policy": document(
        {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
         "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"})})["QueueUrl"]
    assert queue_url and resource_policy("sqs", f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq")["PolicyName"] == "queue policy"

    topic = aws("sns").create_topic(Name="notifications")["TopicArn"]
    assert resource_policy("sns", topic)["PolicyDocument"]["Statement"]  # SNS's default topic policy

    iam = aws("iam")
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    assert resource_policy("iam", role)["PolicyDocument"] == TRUST

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    function = aws("lambda").create_function(FunctionName="start", Runtime="python3.11", Role=role, Handler="app.lambda_handler",
                                             Code={"ZipFile": archive.getvalue()})["FunctionArn"]
    assert resource_policy("lambda", function) is None
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/stack-dataset-uploaded"
    aws("lambda").add_permission(FunctionName="start", StatementId="events", Action="lambda:InvokeFunction",
                                 Principal="events.amazonaws.com", SourceArn=rule)
    permission = resource_policy("lambda", function)
    (invoke,) = authorization_requests("lambda", "Invoke", {"FunctionName": "start"}, region=REGION, account=ACCOUNT,
                                       source_arn=rule)
    assert evaluate(invoke, [], permission, Principal.service("events.amazonaws.com", ACCOUNT)).allowed

    secret = aws("secretsmanager").create_secret(Name="stack/approval/token-key", SecretString="k")["ARN"]
    assert resource_policy("secretsmanager", secret) is None
    aws("secretsmanager").put_resource_policy(SecretId=secret, ResourcePolicy=document(
        {"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:DeleteSecret", "Resource": "*"}))
    assert resource_policy("secretsmanager", secret)["PolicyName"] == "secret policy"


def test_the_moto_lookup_resolves_names_the_table_cannot(aws):
    secret = aws("secretsmanager").create_secret(Name="stack/approval/token-key", SecretString="k")["ARN"]
    aws("iam").create_role(RoleName="fn", Path="/service-role/", AssumeRolePolicyDocument=json.dumps(TRUST))
    aws("ses").verify_domain_identity(Domain="example.com")
    lookup = MotoLookup(ACCOUNT, REGION)
    assert lookup.secret_arn("stack/approval/token-key") == secret
    assert lookup.secret_arn("unknown") is None
    assert lookup.role_arn("fn") == f"arn:aws:iam::{ACCOUNT}:role/service-role/fn"
    assert lookup.ses_identity("mlops@example.com") == "example.com"
    assert lookup.ses_identity("mlops@other.org") is None


def test_a_changed_policy_is_evaluated_as_changed_not_as_remembered(aws):
    """Policy documents are parsed once per text (the strict face reads them on every request): an
    edited inline policy or a new default version of a managed policy must decide the next request."""
    iam = aws("iam")
    iam.create_user(UserName="carol")
    key = iam.create_access_key(UserName="carol")["AccessKey"]["AccessKeyId"]
    principal = principal_for_access_key(key, ACCOUNT)
    put = AuthorizationRequest("s3:PutObject", "arn:aws:s3:::data/k")
    allow_put = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::data/*"}
    allow_get = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::data/*"}

    iam.put_user_policy(UserName="carol", PolicyName="inline", PolicyDocument=document(allow_put))
    assert evaluate(put, identity_policies(principal), principal=principal).allowed
    iam.put_user_policy(UserName="carol", PolicyName="inline", PolicyDocument=document(allow_get))
    assert not evaluate(put, identity_policies(principal), principal=principal).allowed

    iam.delete_user_policy(UserName="carol", PolicyName="inline")
    arn = iam.create_policy(PolicyName="managed", PolicyDocument=document(allow_put))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="carol", PolicyArn=arn)
    assert evaluate(put, identity_policies(principal), principal=principal).allowed
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=document(allow_get), SetAsDefault=True)
    assert not evaluate(put, identity_policies(principal), principal=principal).allowed
