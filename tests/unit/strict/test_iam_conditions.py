"""The Condition element: every operator family, missing keys, set qualifiers, AND/OR, key case."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest

from local.aws.strict.iam_conditions import InvalidPolicy, evaluate_condition


def holds(condition, **context):
    return evaluate_condition(condition, {key.replace("__", ":").lower(): value for key, value in context.items()})


# -- combination rules -----------------------------------------------------------------------------
def test_values_of_one_key_are_alternatives():
    condition = {"StringEquals": {"s3:prefix": ["pipeline/", "reports/"]}}
    assert holds(condition, s3__prefix="reports/")
    assert not holds(condition, s3__prefix="other/")


def test_every_key_and_every_operator_must_hold():
    condition = {"StringEquals": {"aws:SourceAccount": "1", "ses:FromAddress": "a@x"},
                 "StringLike": {"ses:Recipients": "*@x"}}
    assert holds(condition, aws__SourceAccount="1", ses__FromAddress="a@x", ses__Recipients="b@x")
    assert not holds(condition, aws__SourceAccount="1", ses__FromAddress="a@x", ses__Recipients="b@y")
    assert not holds(condition, aws__SourceAccount="2", ses__FromAddress="a@x", ses__Recipients="b@x")


def test_condition_key_names_are_case_insensitive_values_are_not():
    assert evaluate_condition({"StringEquals": {"AWS:SourceAccount": "123"}}, {"aws:sourceaccount": "123"})
    assert not evaluate_condition({"StringEquals": {"aws:SourceAccount": "ABC"}}, {"aws:sourceaccount": "abc"})


def test_operator_names_are_case_insensitive_unknown_ones_are_rejected():
    assert holds({"stringequals": {"k": "v"}}, k="v")
    with pytest.raises(InvalidPolicy, match="unknown condition operator"):
        holds({"StringMaybe": {"k": "v"}}, k="v")


# -- missing keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("operator, expected", [
    ("StringEquals", False), ("StringLike", False), ("NumericLessThan", False), ("DateGreaterThan", False),
    ("Bool", False), ("IpAddress", False), ("ArnLike", False), ("BinaryEquals", False),
    ("StringNotEquals", True), ("StringNotLike", True), ("StringNotEqualsIgnoreCase", True),
    ("NumericNotEquals", True), ("DateNotEquals", True), ("NotIpAddress", True), ("ArnNotLike", True),
    ("ArnNotEquals", True),
])
def test_a_missing_key_fails_positive_operators_and_satisfies_negated_ones(operator, expected):
    assert holds({operator: {"absent:key": "x"}}) is expected


@pytest.mark.parametrize("operator", ["StringEqualsIfExists", "ArnLikeIfExists", "NumericLessThanIfExists",
                                      "StringNotEqualsIfExists", "ForAnyValue:StringEqualsIfExists"])
def test_if_exists_makes_a_missing_key_hold(operator):
    assert holds({operator: {"absent:key": "x"}})


def test_if_exists_still_checks_a_present_key():
    assert not holds({"StringEqualsIfExists": {"ec2:InstanceType": "t3.*"}}, ec2__InstanceType="m5.large")
    assert holds({"StringLikeIfExists": {"ec2:InstanceType": "t3.*"}}, ec2__InstanceType="t3.micro")


def test_null_tests_whether_the_key_is_there():
    assert holds({"Null": {"aws:TokenIssueTime": "true"}})
    assert not holds({"Null": {"aws:TokenIssueTime": "true"}}, aws__TokenIssueTime="2024-01-01T00:00:00Z")
    assert holds({"Null": {"aws:TokenIssueTime": False}}, aws__TokenIssueTime="2024-01-01T00:00:00Z")


def test_null_takes_no_set_qualifier():
    with pytest.raises(InvalidPolicy):
        holds({"ForAllValues:Null": {"k": "true"}})


# -- string ----------------------------------------------------------------------------------------
def test_string_operators():
    assert holds({"StringEquals": {"k": "Value"}}, k="Value")
    assert not holds({"StringEquals": {"k": "Value"}}, k="value")
    assert holds({"StringEqualsIgnoreCase": {"k": "VALUE"}}, k="value")
    assert holds({"StringNotEquals": {"k": ["a", "b"]}}, k="c")
    assert not holds({"StringNotEquals": {"k": ["a", "b"]}}, k="b")
    assert holds({"StringNotEqualsIgnoreCase": {"k": "A"}}, k="b")
    assert holds({"StringLike": {"s3:prefix": "pipeline/*"}}, s3__prefix="pipeline/x/y")
    assert holds({"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}, cloudwatch__namespace="/aws/sagemaker/Jobs")
    assert holds({"StringLike": {"k": "a?c"}}, k="abc")
    assert not holds({"StringLike": {"k": "a?c"}}, k="abbc")
    assert holds({"StringNotLike": {"k": "tmp/*"}}, k="data/x")


def test_string_conditions_resolve_policy_variables():
    assert holds({"StringLike": {"s3:prefix": "home/${aws:username}/*"}}, s3__prefix="home/alice/x",
                 aws__username="alice")
    assert not holds({"StringEquals": {"k": "${aws:username}"}}, k="alice")  # unresolved: no match
    assert holds({"StringEquals": {"k": "${missing:key, 'fallback'}"}}, k="fallback")


def test_variables_are_literal_when_the_policy_predates_them():
    assert evaluate_condition({"StringEquals": {"k": "${aws:username}"}}, {"k": "${aws:username}"}, variables=False)


# -- numeric and date --------------------------------------------------------------------------------
def test_numeric_operators():
    assert holds({"NumericLessThanEquals": {"s3:max-keys": "10"}}, **{"s3__max-keys": 10})
    assert not holds({"NumericLessThan": {"n": 10}}, n="10")
    assert holds({"NumericGreaterThan": {"n": "1.5"}}, n=2)
    assert holds({"NumericGreaterThanEquals": {"n": 2}}, n="2")
    assert holds({"NumericEquals": {"n": "3"}}, n=3.0)
    assert holds({"NumericNotEquals": {"n": "3"}}, n=4)
    assert not holds({"NumericEquals": {"n": "3"}}, n="three")


def test_date_operators_take_iso_8601_and_epoch_seconds():
    now = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
    assert holds({"DateGreaterThan": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}}, aws__CurrentTime=now)
    assert holds({"DateLessThan": {"aws:CurrentTime": "2025-01-01"}}, aws__CurrentTime=now.isoformat())
    assert holds({"DateEquals": {"aws:EpochTime": str(int(now.timestamp()))}}, aws__EpochTime=now)
    assert holds({"DateLessThanEquals": {"t": "2024-06-01T12:00:00Z"}}, t=now)
    assert holds({"DateGreaterThanEquals": {"t": "2024-06-01T12:00:00+00:00"}}, t=now)
    assert holds({"DateNotEquals": {"t": "2020-01-01T00:00:00Z"}}, t=now)


# -- bool, binary, ip, arn -----------------------------------------------------------------------------
def test_bool_compares_true_and_false_in_any_case():
    assert holds({"Bool": {"aws:SecureTransport": "false"}}, aws__SecureTransport=False)
    assert holds({"Bool": {"aws:SecureTransport": True}}, aws__SecureTransport="TRUE")
    assert not holds({"Bool": {"aws:SecureTransport": "false"}}, aws__SecureTransport=True)


def test_binary_equals_compares_bytes_with_the_base64_policy_value():
    encoded = base64.b64encode(b"\x00binary\xff").decode()
    assert holds({"BinaryEquals": {"k": encoded}}, k=b"\x00binary\xff")
    assert holds({"BinaryEquals": {"k": encoded}}, k=encoded)
    assert not holds({"BinaryEquals": {"k": encoded}}, k=b"other")


def test_ip_address_operators_take_cidr_ranges_and_plain_addresses():
    assert holds({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}, aws__SourceIp="127.0.0.1")
    assert holds({"IpAddress": {"aws:SourceIp": "203.0.113.7"}}, aws__SourceIp="203.0.113.7")
    assert holds({"IpAddress": {"aws:SourceIp": "2001:DB8::/32"}}, aws__SourceIp="2001:db8::1")
    assert not holds({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, aws__SourceIp="127.0.0.1")
    assert holds({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, aws__SourceIp="127.0.0.1")


def test_arn_operators_match_each_of_the_six_parts_on_its_own():
    rule = "arn:aws:events:us-east-1:123456789012:rule/stack-deploy-approved"
    assert holds({"ArnLike": {"aws:SourceArn": "arn:aws:events:*:123456789012:rule/stack-deploy-*"}}, aws__SourceArn=rule)
    assert holds({"ArnEquals": {"aws:SourceArn": rule}}, aws__SourceArn=rule)
    # IAM's own example: StringLike matches across colons, ArnLike does not.
    pattern = "arn:aws:someservice:*:111122223333:finance/*"
    value = "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt"
    assert holds({"StringLike": {"k": pattern}}, k=value)
    assert not holds({"ArnLike": {"k": pattern}}, k=value)
    assert holds({"ArnNotLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/other"}}, aws__SourceArn=rule)
    assert not holds({"ArnLike": {"k": "not-an-arn"}}, k="not-an-arn")


def test_arn_conditions_resolve_variables_as_literal_text():
    assert holds({"ArnEquals": {"aws:SourceArn": "arn:aws:iam::123456789012:user/${aws:username}"}},
                 aws__SourceArn="arn:aws:iam::123456789012:user/alice", aws__username="alice")


# -- set qualifiers ------------------------------------------------------------------------------------
def test_for_all_values_needs_every_request_value_in_the_policy_list():
    condition = {"ForAllValues:StringLike": {"aws:TagKeys": ["ModelPackageArn", "Deployment*"]}}
    assert holds(condition, aws__TagKeys=["ModelPackageArn", "DeploymentId"])
    assert not holds(condition, aws__TagKeys=["ModelPackageArn", "Owner"])


def test_for_all_values_holds_for_a_missing_or_empty_key():
    condition = {"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}
    assert holds(condition)
    assert holds(condition, aws__TagKeys=[])
    assert holds(condition, aws__TagKeys="")


def test_for_any_value_needs_one_match_and_fails_for_a_missing_key():
    condition = {"ForAnyValue:StringEquals": {"ses:Recipients": ["boss@example.com"]}}
    assert holds(condition, ses__Recipients=["a@example.com", "boss@example.com"])
    assert not holds(condition, ses__Recipients=["a@example.com"])
    assert not holds(condition)
    assert not holds(condition, ses__Recipients=[])


def test_negated_operators_under_set_qualifiers_test_each_request_value():
    condition = {"ForAllValues:StringNotEquals": {"aws:TagKeys": ["Secret"]}}
    assert holds(condition, aws__TagKeys=["a", "b"])
    assert not holds(condition, aws__TagKeys=["a", "Secret"])
    any_condition = {"ForAnyValue:StringNotLike": {"k": "ok*"}}
    assert holds(any_condition, k=["ok1", "bad"])
    assert not holds(any_condition, k=["ok1", "ok2"])


def test_a_multivalued_key_without_qualifier_matches_if_any_value_does():
    assert holds({"StringEquals": {"k": "b"}}, k=["a", "b"])
    assert not holds({"StringNotEquals": {"k": "b"}}, k=["a", "b"])
