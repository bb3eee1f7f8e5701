"""The artifacts one step writes and others read follow `mlops_shared.artifacts`, checked on what the
real writers produce: a field any reader uses that a writer renames or drops fails here.

The field lists come from the contract types themselves (`contract_fields`), never typed by hand.
"""
from __future__ import annotations

import io
import json

import boto3
import pytest

from jobs import ingest
from mlops_shared.artifacts import (
    SMOKE_PREDICTION_COLUMN,
    ArtifactFormatError,
    EvaluationReport,
    IngestManifest,
    PreprocessorDocument,
)
from mlops_shared.smoke_test import load_sample
from tests.artifact_contracts import assert_follows_contract
from tests.model_artifacts import FEATURES, housing
from tests.pipeline_outputs import container_root


def test_the_evaluate_step_writes_every_field_of_evaluation_json(evaluation_outputs):
    document = json.loads(evaluation_outputs.files["evaluation.json"])
    assert_follows_contract(EvaluationReport, document)
    report = EvaluationReport.from_json(document)
    assert report.champion is not None and report.champion.comparable  # the champion block is covered too
    assert report.smoke_sample in evaluation_outputs.files
    assert set(report.plots) <= set(evaluation_outputs.files)


def test_evaluation_json_is_strict_json(evaluation_outputs):
    json.loads(evaluation_outputs.files["evaluation.json"], parse_constant=lambda name: pytest.fail(name))


def test_the_smoke_sample_has_the_features_the_target_and_the_prediction(evaluation_outputs):
    report = evaluation_outputs.report

    class FileS3:
        @staticmethod
        def get_object(Bucket, Key):  # noqa: N803 - boto3's argument names
            return {"Body": io.BytesIO(evaluation_outputs.files[Key])}

    header, rows = load_sample(FileS3(), "bucket", report.smoke_sample, max_rows=100)
    assert header == [*FEATURES, report.target, SMOKE_PREDICTION_COLUMN]
    assert rows and all(float(row[SMOKE_PREDICTION_COLUMN]) == float(row[SMOKE_PREDICTION_COLUMN]) for row in rows)


def test_a_broken_report_is_refused_with_the_field_named(evaluation_outputs):
    document = json.loads(evaluation_outputs.files["evaluation.json"])
    document["gate"]["rmse_threshold"] = "high"
    with pytest.raises(ArtifactFormatError, match=r"gate\.rmse_threshold: expected a finite number"):
        EvaluationReport.from_json(document)
    document["gate"]["rmse_threshold"] = float("nan")
    with pytest.raises(ArtifactFormatError, match="finite"):
        EvaluationReport.from_json(document)


def test_the_ingest_step_writes_every_field_of_manifest_json(aws, tmp_path):
    s3, sagemaker = boto3.client("s3"), boto3.client("sagemaker")
    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="artifacts")
    body = io.StringIO()
    housing(120).to_csv(body, index=False)
    version = s3.put_object(Bucket="data", Key="incoming/houses.csv", Body=body.getvalue().encode())["ETag"]
    args = ingest.IngestArgs(
        input_uri="s3://data/incoming/houses.csv", dataset_version=version.strip('"'), target_column="PRICE",
        feature_group_name="fs-contract", offline_store_s3_uri="s3://artifacts/offline-store",
        feature_store_role_arn="arn:aws:iam::123456789012:role/jobs", ingestion_mode=ingest.OFFLINE_STORE)
    with container_root(tmp_path):
        ingest.ingest(args, s3=s3, sagemaker=sagemaker)
    document = json.loads((tmp_path / "processing" / "output" / "manifest" / "manifest.json").read_text())
    assert_follows_contract(IngestManifest, document)
    assert IngestManifest.from_json(document).row_count == 120


def test_the_preprocessor_document_refuses_what_its_readers_cannot_use():
    # The real writer (the Preprocess step) is checked by tests/unit/jobs/test_preprocess.py.
    document = {"feature_order": ["A", "B"], "target": "Y", "scaler": {"mean": [0.0, 1.0], "scale": [1.0, 2.0]}}
    assert_follows_contract(PreprocessorDocument, document)
    with pytest.raises(ArtifactFormatError, match=r"scaler\.mean\[1\]: expected a finite number"):
        PreprocessorDocument.from_json({**document, "scaler": {"mean": [0.0, "x"], "scale": [1.0, 2.0]}})


def test_reading_a_contract_ignores_fields_it_does_not_know(evaluation_outputs):
    document = json.loads(evaluation_outputs.files["evaluation.json"])
    document["added_by_a_newer_writer"] = {"anything": 1}
    assert EvaluationReport.from_json(document).target == evaluation_outputs.report.target
