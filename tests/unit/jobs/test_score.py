"""jobs.score against moto's S3: a 100k-row drop is streamed and scored exactly as the endpoint
answers (a real model server on 127.0.0.1), the `prediction` collision, explanations, and a file
with unscorable rows rejected with their row numbers."""
from __future__ import annotations

import http.client
import io
import json
import threading
import time

import boto3
import numpy as np
import pandas as pd
import pytest

from jobs import common, score
from tests.model_artifacts import FEATURES, tar_model_dir, train_model_dir

BUCKET = "data"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/housing/3"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    result = train_model_dir(model_dir)
    result["model_dir"] = model_dir
    return result


@pytest.fixture
def bucket(aws, trained):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="models/model.tar.gz", Body=tar_model_dir(trained["model_dir"]))
    return s3


@pytest.fixture(scope="module")
def server(trained):
    from jobs.serve import build_server

    srv = build_server(trained["model_dir"], "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()


def endpoint_predictions(port: int, rows: pd.DataFrame) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/invocations", body=rows.to_csv(index=False).encode(), headers={"Content-Type": "text/csv"})
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())["predictions"]
    finally:
        conn.close()


def run(key: str, explain: bool = False) -> dict:
    return score.run(input_bucket=BUCKET, input_key=key, input_version_id=None, model_package_arn=ARN,
                     model_package_version="3", model_data_url=f"s3://{BUCKET}/models/model.tar.gz", explain=explain)


def read_csv(s3, key: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()), dtype=str, keep_default_na=False)


def test_100k_rows_are_scored_as_the_endpoint_answers(bucket, server):
    from local.cli.datagen import generate_housing

    data = generate_housing(100_000, seed=11)
    data.insert(0, "house_id", [f"h-{i:06d}" for i in range(len(data))])
    data.loc[7, "LOT_ACRES"] = np.nan  # a missing value is scored, as the endpoint does
    bucket.put_object(Bucket=BUCKET, Key="score/2026/houses.csv", Body=data.to_csv(index=False).encode())

    started = time.perf_counter()
    manifest = run("score/2026/houses.csv")
    elapsed = time.perf_counter() - started

    out = read_csv(bucket, "predictions/2026/houses.csv")
    assert list(out.columns) == list(data.columns) + ["prediction"]
    assert len(out) == 100_000 and out["house_id"].tolist() == data["house_id"].tolist()
    sample = np.random.default_rng(5).choice(len(data), 300, replace=False)
    sample = np.append(sample, 7)
    expected = endpoint_predictions(server, data.iloc[sample][FEATURES])
    assert out["prediction"].astype(float).to_numpy()[sample] == pytest.approx(expected, rel=1e-6)

    head = bucket.head_object(Bucket=BUCKET, Key="predictions/2026/houses.csv")
    assert head["Metadata"]["model-package-arn"] == ARN and head["Metadata"]["model-package-version"] == "3"
    stored = json.loads(bucket.get_object(Bucket=BUCKET, Key="predictions/2026/houses.csv.manifest.json")["Body"].read())
    assert stored == manifest
    assert manifest["rows"] == 100_000 and manifest["model_package_arn"] == ARN and manifest["model_package_version"] == 3
    assert manifest["input"]["key"] == "score/2026/houses.csv" and manifest["prediction_column"] == "prediction"
    assert manifest["prediction_column_renamed"] is False and manifest["started"] <= manifest["finished"]
    print(f"\n100k rows: {manifest['rows_per_second']} rows/s scoring, {elapsed:.1f} s in all")


def test_a_feature_named_prediction_keeps_its_column_and_the_output_takes_a_free_name(bucket, server):
    from local.cli.datagen import generate_housing

    data = generate_housing(50, seed=2)[FEATURES]
    data["prediction"] = "old"
    data["prediction_1"] = "older"
    bucket.put_object(Bucket=BUCKET, Key="score/clash.csv", Body=data.to_csv(index=False).encode())
    manifest = run("score/clash.csv")
    out = read_csv(bucket, "predictions/clash.csv")
    assert list(out.columns) == FEATURES + ["prediction", "prediction_1", "prediction_2"]
    assert set(out["prediction"]) == {"old"} and manifest["prediction_column"] == "prediction_2"
    assert manifest["prediction_column_renamed"] is True
    assert out["prediction_2"].astype(float).tolist() == pytest.approx(endpoint_predictions(server, data[FEATURES]), rel=1e-6)


def test_explanations_sum_to_the_prediction(bucket):
    from local.cli.datagen import generate_housing

    data = generate_housing(200, seed=4)[FEATURES]
    bucket.put_object(Bucket=BUCKET, Key="score/explain/a.csv", Body=data.to_csv(index=False).encode())
    manifest = run("score/explain/a.csv", explain=True)
    out = read_csv(bucket, "predictions/explain/a.csv")
    columns = list(manifest["contribution_columns"].values())
    assert columns == [f"{name}_contribution" for name in FEATURES] + ["bias_contribution"]
    total = out[columns].astype(float).sum(axis=1).to_numpy()
    assert total == pytest.approx(out["prediction"].astype(float).to_numpy(), rel=1e-4, abs=1.0)


def test_unscorable_rows_reject_the_file_with_their_numbers(bucket):
    text = ",".join(FEATURES) + "\n" + "\n".join(
        ",".join("abc" if (row == 4 and i == 1) else "1" for i in range(len(FEATURES))) for row in range(10)) + "\n"
    bucket.put_object(Bucket=BUCKET, Key="score/bad/x.csv", Body=text.encode())
    with pytest.raises(common.JobFailure, match="lines 6"):  # the fifth row: line 6 under the header
        run("score/bad/x.csv")
    reason = json.loads(bucket.get_object(Bucket=BUCKET, Key="quarantine/score/bad/x.csv.reason.json")["Body"].read())
    assert reason["code"] == "unscorable_rows" and reason["details"]["rows"][0]["line"] == 6
    assert "SQUARE_FEET" in reason["details"]["rows"][0]["reason"]
    assert bucket.get_object(Bucket=BUCKET, Key="quarantine/score/bad/x.csv")["Body"].read() == text.encode()
    assert "Contents" not in bucket.list_objects_v2(Bucket=BUCKET, Prefix="predictions/bad/")


def test_line_numbers_hold_across_batches_and_missing_values_are_scored(trained, tmp_path):
    from jobs.serve import Predictor

    predictor = Predictor(trained["model_dir"])
    lines = [",".join(["id", *FEATURES])] + [",".join([str(i)] + ["1"] * len(FEATURES)) for i in range(300)]
    lines[3] = lines[3].replace(",1,", ",NA,", 1)  # a missing value: scored, as by the endpoint
    lines[250] = lines[250].rsplit(",", 1)[0] + ",1e999"  # infinite: not a measurement
    source = io.BytesIO(("\n".join(lines) + "\n").encode())
    with pytest.raises(score.UnscorableRows) as refused:
        score.score_stream(source, ["id", *FEATURES], predictor, tmp_path / "out.csv", block_bytes=1024)
    assert [row["line"] for row in refused.value.rows] == [251]
    assert "infinite" in refused.value.rows[0]["reason"] or "1e999" in refused.value.rows[0]["reason"]
