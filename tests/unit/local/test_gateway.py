import boto3
import pytest
from botocore.exceptions import ClientError

from local.aws.gateway import LocalGateway, aws_error, json_response, request_json


@pytest.fixture
def gateway(monkeypatch):
    with LocalGateway() as gw:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gw.url)
        yield gw


def test_unrouted_calls_reach_moto(gateway):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="gateway-passthrough")
    assert "gateway-passthrough" in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_target_route_takes_the_operation_and_can_forward_to_moto(gateway):
    seen = []

    def create_group(environ, start_response):
        seen.append(request_json(environ)["ModelPackageGroupName"])
        response = gateway.call_moto(environ)
        return json_response(start_response, response.status_code, response.json())

    gateway.route_target("SageMaker.CreateModelPackageGroup", create_group)
    sm = boto3.client("sagemaker")
    arn = sm.create_model_package_group(ModelPackageGroupName="g1")["ModelPackageGroupArn"]
    assert seen == ["g1"]
    assert sm.describe_model_package_group(ModelPackageGroupName="g1")["ModelPackageGroupArn"] == arn


def test_path_route_and_error_shape(gateway):
    def not_here(environ, start_response):
        return aws_error(start_response, 404, "ResourceNotFound", "no such feature group: x")

    gateway.route_path(r"/FeatureGroup/[^/]+", not_here)
    client = boto3.client("sagemaker-featurestore-runtime")
    with pytest.raises(ClientError) as err:
        client.get_record(FeatureGroupName="x", RecordIdentifierValueAsString="1")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    assert "no such feature group" in err.value.response["Error"]["Message"]
