"""IAM's documented evaluation logic, rule by rule (policy elements, explicit deny, same account)."""
from __future__ import annotations

import json

import pytest

from local.aws.strict.iam_policy import (ALLOWED, EXPLICIT_DENY, NO_ALLOW, AuthorizationRequest, InvalidPolicy,
                                         Principal, evaluate)

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/service/jobs"
SESSION = Principal(kind="assumed-role", arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/jobs/run-1", account=ACCOUNT,
                    name="jobs", role_arn=ROLE_ARN, session_name="run-1", unique_id="AROAEXAMPLE:run-1",
                    tags={"Team": "ml"})
USER = Principal(kind="user", arn=f"arn:aws:iam::{ACCOUNT}:user/alice", account=ACCOUNT, name="alice",
                 unique_id="AIDAEXAMPLE")
EVENTS = Principal.service("events.amazonaws.com", ACCOUNT)
OBJECT = "arn:aws:s3:::data/incoming/a.csv"


def policy(*statements, version="2012-10-17"):
    document = {"Statement": list(statements)}
    if version:
        document["Version"] = version
    return document


def allow(action="*", resource="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action="*", resource="*", **extra):
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def decide(action, resource, identity=(), resource_policy=None, principal=SESSION, context=None, **request):
    return evaluate(AuthorizationRequest(action, resource, context or {}, **request), list(identity),
                    resource_policy, principal)


# -- default deny, allow, explicit deny ------------------------------------------------------------
def test_a_request_no_policy_allows_is_implicitly_denied():
    decision = decide("s3:GetObject", OBJECT)
    assert (decision.allowed, decision.reason) == (False, NO_ALLOW)


def test_an_applicable_allow_grants_the_request():
    decision = decide("s3:GetObject", OBJECT, [policy(allow("s3:GetObject", OBJECT, Sid="Read"))])
    assert (decision.allowed, decision.reason, decision.statement_sid) == (True, ALLOWED, "Read")


def test_an_explicit_deny_overrides_every_allow():
    decision = decide("s3:GetObject", OBJECT, [policy(allow()), {"PolicyName": "guard", "PolicyDocument": policy(
        deny("s3:*", "arn:aws:s3:::data/*", Sid="NoData"))}])
    assert (decision.allowed, decision.reason) == (False, EXPLICIT_DENY)
    assert (decision.policy_name, decision.statement_sid) == ("guard", "NoData")


def test_a_deny_that_does_not_apply_changes_nothing():
    decision = decide("s3:GetObject", OBJECT, [policy(allow(), deny("s3:PutObject"))])
    assert decision.allowed


def test_statement_may_be_a_single_object_and_elements_single_strings():
    document = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": OBJECT}}
    assert decide("s3:GetObject", OBJECT, [document]).allowed


def test_policy_documents_given_as_json_text_are_read():
    named = {"PolicyName": "inline", "PolicyDocument": json.dumps(policy(allow("s3:GetObject", OBJECT)))}
    assert decide("s3:GetObject", OBJECT, [named]).policy_name == "inline"


def test_a_statement_without_a_valid_effect_is_rejected_loudly():
    with pytest.raises(InvalidPolicy, match="Effect"):
        decide("s3:GetObject", OBJECT, [policy({"Effect": "allow", "Action": "*", "Resource": "*"})])


# -- Action / NotAction ----------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, allowed", [
    ("s3:GetObject", True), ("S3:getobject", True), ("s3:Get*", True), ("s3:GetObjec?", True), ("*", True),
    ("s3:GetObjectVersion", False), ("s3:Put*", False), ("sqs:GetObject", False),
])
def test_actions_match_case_insensitively_with_wildcards(pattern, allowed):
    assert decide("s3:GetObject", OBJECT, [policy(allow(pattern))]).allowed is allowed


def test_not_action_applies_to_every_other_action():
    identity = [policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})]
    assert decide("s3:GetObject", OBJECT, identity).allowed
    assert not decide("iam:PassRole", ROLE_ARN, identity).allowed


# -- Resource / NotResource ------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, allowed", [
    ("arn:aws:s3:::data/incoming/a.csv", True), ("arn:aws:s3:::data/*", True), ("arn:aws:s3:::data/incoming/?.csv", True),
    ("arn:aws:s3:::DATA/*", False), ("arn:aws:s3:::data/Incoming/*", False), ("arn:aws:s3:::data", False),
])
def test_resources_match_case_sensitively_with_wildcards(pattern, allowed):
    assert decide("s3:GetObject", OBJECT, [policy(allow("s3:GetObject", pattern))]).allowed is allowed


def test_a_wildcard_inside_an_arn_segment_stays_in_that_segment_unless_it_ends_it():
    endpoint = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/serve"
    assert decide("sagemaker:DescribeEndpoint", endpoint, [policy(allow(resource="arn:aws:sagemaker:*:*:endpoint/*"))]).allowed
    # `us-*-1` is inside the region segment: it may not swallow the account's colon.
    assert not decide("sagemaker:DescribeEndpoint", endpoint,
                      [policy(allow(resource="arn:aws:sagemaker:us-*2:endpoint/serve"))]).allowed


def test_not_resource_applies_to_every_other_resource():
    identity = [policy({"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::secret/*"})]
    assert decide("s3:GetObject", OBJECT, identity).allowed
    assert not decide("s3:GetObject", "arn:aws:s3:::secret/k", identity).allowed


# -- policy variables ------------------------------------------------------------------------------
def test_aws_username_is_replaced_in_the_resource_of_a_2012_policy():
    identity = [policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"))]
    assert decide("s3:GetObject", "arn:aws:s3:::home/alice/notes", identity, principal=USER).allowed
    assert not decide("s3:GetObject", "arn:aws:s3:::home/bob/notes", identity, principal=USER).allowed


def test_a_variable_the_request_cannot_resolve_makes_the_element_match_nothing():
    # Role sessions have no aws:username.
    identity = [policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"))]
    assert not decide("s3:GetObject", "arn:aws:s3:::home/jobs/x", identity).allowed


def test_a_default_value_stands_in_for_a_missing_variable():
    identity = [policy(allow("s3:*", "arn:aws:s3:::home/${aws:username, 'shared'}/*"))]
    assert decide("s3:GetObject", "arn:aws:s3:::home/shared/x", identity).allowed


def test_principal_tags_are_variables_too():
    identity = [policy(allow("s3:*", "arn:aws:s3:::teams/${aws:PrincipalTag/team}/*"))]
    assert decide("s3:GetObject", "arn:aws:s3:::teams/ml/model.tar.gz", identity).allowed


def test_escape_variables_are_literal_characters_not_wildcards():
    identity = [policy(allow("s3:*", "arn:aws:s3:::odd/${*}${?}${$}"))]
    assert decide("s3:GetObject", "arn:aws:s3:::odd/*?$", identity).allowed
    assert not decide("s3:GetObject", "arn:aws:s3:::odd/abc", identity).allowed


def test_variables_are_literal_text_in_policies_without_the_2012_version():
    identity = [policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"), version=None)]
    assert not decide("s3:GetObject", "arn:aws:s3:::home/alice/x", identity, principal=USER).allowed
    assert decide("s3:GetObject", "arn:aws:s3:::home/${aws:username}/x", identity, principal=USER).allowed


def test_a_variable_value_never_acts_as_a_wildcard():
    tricky = Principal(kind="user", arn=f"arn:aws:iam::{ACCOUNT}:user/a*", account=ACCOUNT, name="a*")
    identity = [policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}"))]
    assert decide("s3:GetObject", "arn:aws:s3:::home/a*", identity, principal=tricky).allowed
    assert not decide("s3:GetObject", "arn:aws:s3:::home/abc", identity, principal=tricky).allowed


# -- resource-based policies: Principal / NotPrincipal and the same-account rule ---------------------
def bucket_policy(*statements):
    return policy(*statements)


def test_same_account_resource_policy_alone_grants_a_named_role():
    resource = bucket_policy(allow("s3:GetObject", OBJECT, Principal={"AWS": ROLE_ARN}))
    decision = decide("s3:GetObject", OBJECT, [], resource)
    assert (decision.allowed, decision.policy_type) == (True, "resource-based")


def test_same_account_identity_policy_alone_grants_too():
    assert decide("s3:GetObject", OBJECT, [policy(allow())], bucket_policy(
        allow("s3:PutObject", OBJECT, Principal={"AWS": ROLE_ARN}))).allowed


def test_a_session_arn_in_principal_names_exactly_that_session():
    resource = bucket_policy(allow("s3:GetObject", OBJECT, Principal={"AWS": SESSION.arn}))
    assert decide("s3:GetObject", OBJECT, [], resource).allowed
    other = Principal(kind="assumed-role", arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/jobs/run-2", account=ACCOUNT,
                      name="jobs", role_arn=ROLE_ARN, session_name="run-2")
    assert not decide("s3:GetObject", OBJECT, [], resource, principal=other).allowed


def test_an_account_principal_delegates_an_allow_to_identity_policies():
    resource = bucket_policy(allow("s3:GetObject", OBJECT, Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
    assert not decide("s3:GetObject", OBJECT, [], resource).allowed
    assert decide("s3:GetObject", OBJECT, [policy(allow())], resource).allowed


def test_an_account_principal_in_a_deny_covers_every_identity_of_the_account():
    resource = bucket_policy(deny("s3:*", "arn:aws:s3:::data/*", Principal={"AWS": ACCOUNT}))
    decision = decide("s3:GetObject", OBJECT, [policy(allow())], resource)
    assert (decision.reason, decision.policy_type) == (EXPLICIT_DENY, "resource-based")


def test_principal_star_with_a_condition_is_the_usual_deny_insecure_transport():
    resource = bucket_policy(deny("s3:*", "arn:aws:s3:::data/*", Principal="*",
                                  Condition={"Bool": {"aws:SecureTransport": "false"}}))
    assert not decide("s3:GetObject", OBJECT, [policy(allow())], resource,
                      context={"aws:SecureTransport": False}).allowed
    assert decide("s3:GetObject", OBJECT, [policy(allow())], resource, context={"aws:SecureTransport": True}).allowed


def test_service_principals_are_allowed_only_by_a_resource_policy_that_names_them():
    rule = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/stack-dataset-uploaded"
    function = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:start"
    permission = policy({"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                         "Action": "lambda:InvokeFunction", "Resource": function,
                         "Condition": {"ArnLike": {"AWS:SourceArn": rule}}})
    assert decide("lambda:InvokeFunction", function, [], permission, principal=EVENTS,
                  context={"aws:SourceArn": rule}).allowed
    other_rule = decide("lambda:InvokeFunction", function, [], permission, principal=EVENTS,
                        context={"aws:SourceArn": rule + "-2"})
    assert (other_rule.allowed, other_rule.policy_type) == (False, "resource-based")
    assert not decide("lambda:InvokeFunction", function, [policy(allow())], None, principal=EVENTS).allowed


def test_not_principal_applies_to_everyone_but_the_named():
    resource = bucket_policy({"Effect": "Deny", "NotPrincipal": {"AWS": ROLE_ARN}, "Action": "s3:*",
                              "Resource": "arn:aws:s3:::data/*"})
    assert decide("s3:GetObject", OBJECT, [policy(allow())], resource).allowed
    assert decide("s3:GetObject", OBJECT, [policy(allow())], resource, principal=USER).reason == EXPLICIT_DENY


def test_cross_account_requests_need_both_identity_and_resource_policy():
    foreign = f"arn:aws:sqs:us-east-1:{OTHER_ACCOUNT}:queue"
    granting = policy(allow("sqs:SendMessage", foreign, Principal={"AWS": ROLE_ARN}))
    assert not decide("sqs:SendMessage", foreign, [policy(allow())]).allowed
    assert not decide("sqs:SendMessage", foreign, [], granting).allowed
    both = decide("sqs:SendMessage", foreign, [policy(allow())], granting)
    assert both.allowed
    missing = decide("sqs:SendMessage", foreign, [policy(allow())])
    assert missing.message().endswith("because no resource-based policy allows the sqs:SendMessage action")


def test_resource_account_overrides_the_account_missing_from_s3_arns():
    assert not decide("s3:GetObject", OBJECT, [policy(allow())], resource_account=OTHER_ACCOUNT).allowed


def test_the_account_root_is_allowed_unless_explicitly_denied():
    root = Principal(kind="root", arn=f"arn:aws:iam::{ACCOUNT}:root", account=ACCOUNT, name=ACCOUNT)
    assert decide("s3:GetObject", OBJECT, [], None, principal=root).allowed
    assert not decide("s3:GetObject", OBJECT, [], bucket_policy(deny(Principal="*")), principal=root).allowed


# -- principal condition keys ------------------------------------------------------------------------
def test_the_principal_supplies_its_global_condition_keys():
    identity = [policy(allow(Condition={"StringEquals": {"aws:PrincipalArn": ROLE_ARN, "aws:PrincipalType": "AssumedRole",
                                                         "aws:userid": "AROAEXAMPLE:run-1",
                                                         "aws:PrincipalTag/team": "ml"}}))]
    assert decide("s3:GetObject", OBJECT, identity).allowed


# -- messages ------------------------------------------------------------------------------------------
def test_refusal_messages_use_aws_wording():
    implicit = decide("sagemaker:CreateModel", f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/m")
    assert implicit.message() == (
        f"User: {SESSION.arn} is not authorized to perform: sagemaker:CreateModel on resource: "
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/m because no identity-based policy allows the "
        "sagemaker:CreateModel action")
    explicit = decide("s3:GetObject", OBJECT, [policy(deny())])
    assert explicit.message().endswith("on resource: arn:aws:s3:::data/incoming/a.csv with an explicit deny in an "
                                       "identity-based policy")
    shown = decide("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:token-AbCdEf",
                   shown_resource="token")
    assert "on resource: token because" in shown.message()
