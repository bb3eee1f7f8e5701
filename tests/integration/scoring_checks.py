"""Batch scoring by drop on a running local cloud (called from a test that already has a deployed
package, so no extra cloud or training run is paid for): a file dropped under score/ through the CLI
(`mlops local score --json`) is scored by the serving package, as the endpoint answers, under the
strict face; a file lacking a feature is quarantined under quarantine/score/ (exit code 4)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from local.cli.common import EXIT_QUARANTINED, exit_code_for
from local.cli.run import RunSession
from local.cli.score import score_file
from tests.model_artifacts import FEATURES


def mlops_local_score(cloud, path: Path) -> tuple[int, dict]:
    """`mlops local score PATH --json` against this cloud (published in its state dir's cloud.json,
    as `mlops local up` does): (exit code, the one JSON object it printed)."""
    from local.cli import main
    from local.cloud_file import remove_cloud_file, write_cloud_file

    write_cloud_file(cloud.state_dir, cloud.describe())
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            code = main(["local", "score", str(path), "--json", "--quiet", "--timeout", "240",
                         "--state-dir", str(cloud.state_dir)])
    finally:
        remove_cloud_file(cloud.state_dir)
    [line] = printed.getvalue().strip().splitlines()
    return code, json.loads(line)


def check_batch_scoring(cloud, package: dict, endpoint: str, tmp_path: Path) -> None:
    session = RunSession(cloud.endpoint_url, cloud.state_dir, cloud.stack.outputs, argparse.Namespace(),
                         deadline=time.monotonic() + 240, cloud=cloud,
                         credentials=cloud.client_kwargs(with_endpoint=False))
    rows = package["trained"]["test"].reset_index(drop=True)
    drop = tmp_path / "to-score.csv"
    rows.to_csv(drop, index=False)  # the target column rides along and is copied, not used
    code, result = mlops_local_score(cloud, drop)
    assert result["status"] == "succeeded", result
    assert code == 0 and result["model_package_arn"] == package["arn"]
    bucket = cloud.stack.outputs["DataBucketName"]
    assert result["predictions_uri"] == f"s3://{bucket}/predictions/to-score.csv"
    s3 = cloud.client("s3")
    scored = pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key="predictions/to-score.csv")["Body"].read()))
    assert list(scored.columns) == list(rows.columns) + ["prediction"] and len(scored) == len(rows)
    body = rows.iloc[:20][FEATURES].to_csv(index=False)
    answer = cloud.client("sagemaker-runtime").invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=body)
    expected = json.loads(answer["Body"].read())["predictions"]
    assert scored["prediction"].to_numpy()[:20] == pytest.approx(np.asarray(expected), rel=1e-6)
    # The notification of the finished execution (start_scoring, on the status change event).
    cloud.wait_for_events()

    bad = tmp_path / "lacking.csv"
    rows.drop(columns=[FEATURES[1]]).to_csv(bad, index=False)
    session.deadline = time.monotonic() + 120
    refused = score_file(session, bad, explain=False)
    assert refused["status"] == "quarantined" and exit_code_for(refused) == EXIT_QUARANTINED, refused
    assert FEATURES[1] in refused["reason"]
    assert refused["quarantine_uri"] == f"s3://{bucket}/quarantine/score/lacking.csv"
