"""The dataset's exact identity survives the fields SageMaker limits: the reference document holds
bucket, key and version verbatim; the registry label always passes CreateModelPackage's own rules
(checked with the strict face's reading of botocore's model, the one the gateway enforces)."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from local.aws.strict.service_constraints import check
from mlops_shared.artifacts import ArtifactFormatError, DatasetConfigVersion, DatasetReference
from mlops_shared.dataset_reference import (
    METADATA_VALUE_MAX, identity_digest, read_reference, reference_uri, registry_label, write_reference,
)

ORDINARY_KEYS = [
    "incoming/house prices (2024).csv",
    "incoming/Häuser & Preise, 'Q1'.csv",
    "incoming/a#b?c=d.csv",
    "incoming/verkäufe\u00a0münchen/2024 [final].csv",
    "incoming/" + "sehr-langer-name-" * 70 + ".csv",  # > 1000 characters
]


def _model_package(metadata: dict) -> dict:
    return {"ModelPackageGroupName": "mlops-housing", "CustomerMetadataProperties": metadata}


@pytest.mark.parametrize("key", ORDINARY_KEYS)
def test_the_registry_label_of_an_ordinary_key_passes_create_model_package(key):
    uri = f"s3://mlops-data-123456789012/{key}"
    label = registry_label(uri)
    assert check("sagemaker", "CreateModelPackage", _model_package({"dataset_uri": label})) == []
    assert len(label) <= METADATA_VALUE_MAX
    # Readable: the folder and what the registry can carry of the name stay where they were.
    assert label.startswith("s3://mlops-data-123456789012/incoming/")
    assert label.endswith(".csv")


def test_the_raw_uri_is_what_the_registry_refuses():
    """The defect this guards against: the raw URI fails at RegisterModel, after a paid run."""
    violations = check("sagemaker", "CreateModelPackage",
                       _model_package({"dataset_uri": "s3://data/incoming/house prices (2024).csv"}))
    assert violations and "customerMetadataProperties" in violations[0].member_path


def test_a_label_is_the_uri_itself_when_the_uri_fits():
    uri = "s3://mlops-data/incoming/houses_2024-05.csv"
    assert registry_label(uri) == uri
    assert registry_label("s3://b/incoming/house prices (2024).csv") == "s3://b/incoming/house prices _2024_.csv"


def test_an_over_long_label_keeps_both_ends():
    label = registry_label("s3://b/incoming/" + "x" * 600 + "-end.csv")
    assert len(label) == METADATA_VALUE_MAX and "..." in label
    assert label.startswith("s3://b/incoming/x") and label.endswith("-end.csv")


@mock_aws
@pytest.mark.parametrize("key", ORDINARY_KEYS)
def test_the_reference_document_gives_back_the_exact_object(key):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    reference = DatasetReference(bucket="mlops-data", key=key, version="3sL4kqtJlcpXroDTDmJ", version_id="3sL4kqtJlcpXroDTDmJ",
                                 etag="d41d8cd98f00b204e9800998ecf8427e", target_column="preis", target_source="metadata")
    uri = write_reference(s3, "s3://artifacts/pipeline/", reference)
    # Short and plain: it fits a container argument (256) and the registry's metadata rules.
    assert uri == f"s3://artifacts/pipeline/datasets/{identity_digest('mlops-data', key, reference.version)}.json"
    assert uri == reference_uri("s3://artifacts/pipeline", reference)
    assert check("sagemaker", "CreateModelPackage", _model_package({"dataset_reference": uri})) == []
    back = read_reference(s3, uri)
    assert back == reference and back.s3_uri == f"s3://mlops-data/{key}"


def test_each_dataset_version_has_its_own_document():
    first = identity_digest("data", "incoming/a.csv", "v1")
    assert first == identity_digest("data", "incoming/a.csv", "v1")
    assert len({first, identity_digest("data", "incoming/a.csv", "v2"), identity_digest("data", "incoming/b.csv", "v1"),
                identity_digest("other", "incoming/a.csv", "v1")}) == 4


def test_a_reference_missing_a_field_is_refused_by_name():
    with pytest.raises(ArtifactFormatError, match="key"):
        DatasetReference.from_json({"bucket": "b", "version": "v", "version_id": None, "etag": None,
                                    "target_column": "PRICE", "target_source": "default"})


def test_the_dataset_config_version_survives_the_document_and_older_documents_have_none():
    reference = DatasetReference(bucket="data", key="incoming/a.csv", version="v1", version_id="v1", etag="e",
                                 target_column="VALUE", target_source="dataset.json",
                                 dataset_config=DatasetConfigVersion(key="incoming/dataset.json", version_id="c1",
                                                                     etag="ce"))
    assert DatasetReference.from_json(reference.to_json()) == reference
    older = {name: value for name, value in reference.to_json().items() if name != "dataset_config"}
    assert DatasetReference.from_json(older).dataset_config is None
    with pytest.raises(ArtifactFormatError, match="dataset_config.key"):
        DatasetReference.from_json({**reference.to_json(), "dataset_config": {"key": 1, "version_id": None,
                                                                               "etag": None}})
