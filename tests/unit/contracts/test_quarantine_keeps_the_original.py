"""Property: a quarantine never loses the source version, whatever the object key.

Generated keys (spaces, `#&',()`, unicode, keys near S3's 1024-byte limit) under `incoming/`, in a
versioned bucket on the moto server: intake refuses the file, and afterwards the exact version
uploaded is still there byte for byte, the quarantine copy equals it, and the reason names it."""
from __future__ import annotations

import json

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_shared.config import StartPipelineSettings
from mlops_shared.intake import DatasetRef, process_dataset

BUCKET = "quarantine-property"
KEY_CHARACTERS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\x7f")
BAD_FILE = b"Sale Price;Square Feet\n1;2\n"  # semicolons: quarantined as wrong_delimiter


@st.composite
def keys(draw):
    stem = draw(st.one_of(
        st.text(KEY_CHARACTERS, min_size=1, max_size=40),
        st.sampled_from(["My Houses (2024) #1 & co's, größe", "a+b%20c", "données été", "x" * 300]),
    ))
    key = f"incoming/{stem}.csv"
    while len(key.encode("utf-8")) > 1024:  # S3's limit
        stem = stem[:-1]
        key = f"incoming/{stem}.csv"
    return key


@pytest.fixture
def world(aws):
    s3, sns = boto3.client("s3"), boto3.client("sns")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    topic = sns.create_topic(Name="quarantine-property")["TopicArn"]
    return s3, sns, StartPipelineSettings("p", BUCKET, "artifacts", topic, "Sale Price", "fs")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=keys())
def test_a_quarantine_never_loses_the_source_version(world, key):
    s3, sns, config = world
    version = s3.put_object(Bucket=BUCKET, Key=key, Body=BAD_FILE)["VersionId"]
    result = process_dataset(DatasetRef(BUCKET, key, version_id=version), config, s3=s3, sns=sns)
    assert result["status"] == "quarantined", result
    original = s3.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read()
    assert original == BAD_FILE
    quarantine_bucket, quarantine_key = result["quarantine_uri"][len("s3://"):].split("/", 1)
    assert s3.get_object(Bucket=quarantine_bucket, Key=quarantine_key)["Body"].read() == BAD_FILE
    reason_key = result["reason_uri"][len("s3://"):].split("/", 1)[1]
    reason = json.loads(s3.get_object(Bucket=BUCKET, Key=reason_key)["Body"].read())
    assert (reason["source"]["key"], reason["source"]["version_id"]) == (key, version)
