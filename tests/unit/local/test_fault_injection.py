"""Fault injection: each protocol's error shape as botocore's own parsers read it, matching and counting
(thread-safe), and the gateway answering with it before routing."""
from __future__ import annotations

import json
import threading

import boto3
import botocore.config
import botocore.session
import pytest
from botocore.awsrequest import HeadersDict
from botocore.exceptions import ClientError
from botocore.parsers import create_parser

from local.aws.fault_injection import FaultInjector, error_response, lambda_invoke_path
from local.aws.gateway import LocalGateway


@pytest.mark.parametrize("service, operation", [("sagemaker", "DescribeEndpoint"), ("lambda", "Invoke"),
                                                ("sts", "GetCallerIdentity"), ("s3", "GetObject")])
def test_each_protocols_error_shape_parses_as_the_error(service, operation):
    model = botocore.session.get_session().get_service_model(service)
    status, headers, body = error_response(model.protocol, "SlowDown", 503, "Please slow <down> & retry")
    parsed = create_parser(model.protocol).parse(
        {"status_code": int(status.split()[0]), "headers": HeadersDict(headers), "body": body},
        model.operation_model(operation).output_shape)
    assert parsed["Error"]["Code"] == "SlowDown"
    assert parsed["Error"]["Message"] == "Please slow <down> & retry"
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert parsed["ResponseMetadata"]["RequestId"]


def environ(target: str | None = None, path: str = "/", method: str = "POST") -> dict:
    env = {"PATH_INFO": path, "REQUEST_METHOD": method}
    if target:
        env["HTTP_X_AMZ_TARGET"] = target
    return env


def answer(faults: FaultInjector, env: dict) -> tuple[str | None, bytes | None]:
    captured = {}
    body = faults.respond(env, lambda status, headers: captured.update(status=status))
    return captured.get("status"), (b"".join(body) if body is not None else None)


def test_rules_answer_n_matching_calls_then_let_them_through():
    faults = FaultInjector()
    rule = faults.inject(target="SageMaker.DescribeEndpoint", code="ThrottlingException", status=400, message="Rate exceeded",
                         times=2)
    other = faults.inject(path=lambda_invoke_path("deploy_prepare"), method="POST", code="TooManyRequestsException",
                          status=429)
    assert answer(faults, environ("SageMaker.CreateEndpoint")) == (None, None)
    status, body = answer(faults, environ("SageMaker.DescribeEndpoint"))
    assert status == "400 Bad Request" and json.loads(body) == {"__type": "ThrottlingException", "message": "Rate exceeded"}
    assert answer(faults, environ("SageMaker.DescribeEndpoint"))[0] == "400 Bad Request"
    assert answer(faults, environ("SageMaker.DescribeEndpoint")) == (None, None)  # exhausted: routed as usual
    assert (rule.served, rule.seen) == (2, 3)
    # Step Functions invokes by ARN, the CLI by name: both match; another function does not.
    arn_path = "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:deploy_prepare/invocations"
    assert answer(faults, environ(path="/2015-03-31/functions/deploy_prepare_other/invocations")) == (None, None)
    assert answer(faults, environ(path=arn_path, method="GET")) == (None, None)
    assert answer(faults, environ(path=arn_path))[0] == "429 Too Many Requests"
    assert other.served == 1
    faults.clear()
    assert answer(faults, environ(path=arn_path)) == (None, None)
    later = faults.inject(target="DynamoDB_20120810.UpdateItem", code="ThrottlingException", status=400, after=2)
    assert [answer(faults, environ("DynamoDB_20120810.UpdateItem"))[0] for _ in range(4)] == [
        None, None, "400 Bad Request", None]
    assert (later.served, later.seen) == (1, 4)


def test_rules_need_something_to_match_and_a_known_protocol():
    faults = FaultInjector()
    with pytest.raises(ValueError, match="target"):
        faults.inject(code="X", status=400)
    with pytest.raises(ValueError, match="protocol"):
        faults.inject(target="T", code="X", status=400, protocol="soap")
    with pytest.raises(ValueError, match="times"):
        faults.inject(target="T", code="X", status=400, times=0)
    with pytest.raises(ValueError, match="after"):
        faults.inject(target="T", code="X", status=400, after=-1)


def test_concurrent_calls_are_answered_exactly_n_times():
    faults = FaultInjector()
    rule = faults.inject(target="DynamoDB_20120810.PutItem", code="ProvisionedThroughputExceededException", status=400,
                         times=50)
    answered = []

    def call():
        for _ in range(20):
            answered.append(answer(faults, environ("DynamoDB_20120810.PutItem"))[0] is not None)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(answered) == 50 and rule.served == 50 and rule.seen == 160


def test_the_gateway_answers_faults_before_routing(monkeypatch):
    with LocalGateway() as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        sagemaker = boto3.client("sagemaker")
        gateway.faults.inject(target="SageMaker.ListEndpoints", code="InternalFailure", status=500, message="boom")
        with pytest.raises(ClientError) as failure:
            boto3.client("sagemaker", config=botocore.config.Config(retries={"total_max_attempts": 1})).list_endpoints()
        assert failure.value.response["Error"] == {"Code": "InternalFailure", "Message": "boom"}
        assert sagemaker.list_endpoints()["Endpoints"] == []  # the next call reaches moto
