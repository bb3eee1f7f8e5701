import boto3


def test_clients_reach_the_moto_server(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fixture-check")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["fixture-check"]
    assert s3.meta.endpoint_url == aws
