"""The local face end to end, driven like a user drives it: `mlops local up` in one process, `mlops local
run FILE --approve --json` in another (a CSV to a deployed endpoint), `mlops predict` on raw features,
Ctrl-C, and nothing left running afterwards. Plus the cheap paths: a quarantined file with
--reject, and arguments the CLI refuses."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from local import cli
from local.cloud_file import find_running_cloud
from local.cli.common import EXIT_QUARANTINED
from local.cli.datagen import generate_housing
from tests.e2e import console_checks
from tests.e2e.lineage_checks import assert_lineage_matches_run

REPO = Path(__file__).resolve().parents[2]
# The installed `mlops` command next to this interpreter (the venv's), as a user runs it.
MLOPS = [str(Path(sys.executable).parent / "mlops")] if (Path(sys.executable).parent / "mlops").exists() \
    else [sys.executable, "-m", "local.cli"]
MARKER = "MLOPS_TEST_RUN_MARKER"


def cli_env(marker: str) -> dict[str, str]:
    """The user's environment: no AWS endpoint (the CLI finds its cloud itself), plus a marker every
    process the CLI starts inherits, so the test can find leftovers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
    env.update({"SAGEMAKER_SUPPRESS_V2_WARNING": "1", MARKER: marker})
    return env


def processes_of(state_dir: Path, marker: str) -> list[str]:
    """Live processes started for this test: they carry the marker in their environment, or hold a
    file under the state dir (Lambda workers get a clean environment but log into the state dir)."""
    state = str(state_dir)
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            mine = process.environ().get(MARKER) == marker
            if not mine:
                paths = [f.path for f in process.open_files()] + [process.cwd()] + (process.info["cmdline"] or [])
                mine = any(state in path for path in paths)
            if mine and process.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:200]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_nothing_left(state_dir: Path, marker: str, grace: float = 60.0) -> None:
    deadline = time.monotonic() + grace
    while (left := processes_of(state_dir, marker)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == [], "processes left behind:\n" + "\n".join(left)


def one_json_line(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, lines  # exactly one JSON object on stdout
    return json.loads(lines[0])


# Column names as people write them (spaces, parentheses, unicode, dots, a name the smoke sample
# uses itself); the file name as people save it.
HUMAN_NAMES = {"YEAR_BUILT": "Year Built", "SQUARE_FEET": "Square Feet", "NUM_BEDROOMS": "Bedrooms (#)",
               "NUM_BATHROOMS": "Baths.", "LOT_ACRES": "Lot (acres)", "GARAGE_SPACES": "größe_garage_m²",
               "FRONT_PORCH": "year", "DECK": "prediction", "PRICE": "Sale Price"}


def human_houses(rows: int, seed: int):
    frame = generate_housing(rows, seed).rename(columns=HUMAN_NAMES)
    frame = frame.astype({"Lot (acres)": object, "Square Feet": object})
    frame.loc[frame.index[::9], "Lot (acres)"] = ""  # missing feature cells are data
    frame.loc[frame.index[5::13], "Square Feet"] = "NaN"
    frame.loc[frame.index[[7, 70]], "Sale Price"] = None  # rows without a target: dropped
    return frame


@pytest.mark.slow
def test_a_csv_reaches_a_deployed_endpoint_that_predicts_raw_features(tmp_path):
    """A CSV as people have it — human column names, blanks, an ordinary file name — reaches a
    deployed endpoint that takes the same names and blanks."""
    state, marker = tmp_path / "state", uuid.uuid4().hex
    path = tmp_path / "My Houses (2024) #1 & co's, größe.csv"
    human_houses(3000, seed=21).to_csv(path, index=False)
    env = cli_env(marker)
    # Two tuning trials on 3,000 rows keep this short; they do not reach the template's 15,000 gate.
    up_log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([*MLOPS, "local", "up", "--state-dir", str(state), "--parameter", "MaxTuningJobs=2",
                           "--parameter", "RMSEThreshold=60000"],
                          cwd=tmp_path, env=env, stdout=up_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while find_running_cloud(state) is None:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the local cloud did not come up"
            time.sleep(1)

        # The console is watched in Chromium while the run goes (tests/e2e/console_checks.py).
        info = find_running_cloud(state)
        watcher = console_checks.ConsoleWatcher(info["console_url"]).start()
        try:
            with subprocess.Popen([*MLOPS, "local", "run", str(path), "--target", "Sale Price", "--approve", "--json",
                                   "--state-dir", str(state), "--timeout", "1200"], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as running:
                run = subprocess.CompletedProcess(running.args, None, *running.communicate(timeout=1500))
                run.returncode = running.returncode
        finally:
            watcher.stop()
        assert run.returncode == 0, run.stderr[-3000:]
        result = one_json_line(run.stdout)
        assert result["status"] == "deployed", (result, run.stderr[-3000:])
        # Lineage first: the console's package page must show the same recorded chain.
        lineage = assert_lineage_matches_run(state, result)
        console_checks.check_console_after_run(info["console_url"], watcher, result, tmp_path / "screenshots",
                                               lineage=lineage)
        console_checks.check_lambda_logs(info)
        assert result["reason"] is None
        assert result["execution_arn"] and result["model_package_arn"]
        assert result["endpoint_name"]
        assert 0 < result["metrics"]["rmse"] < 60000 and 0 < result["metrics"]["mae"] and result["metrics"]["r2"] > 0.8  # blanks cost a little
        email = Path(result["approval_email"])
        assert email.parent == state / "outbox" and email.suffix == ".eml" and email.is_file()
        assert result["model_package_arn"] in email.read_text()
        # The progress on stderr tells the story in order.
        for before, after in [("approval email", "approved by"), ("approved by", "deployed to endpoint")]:
            assert run.stderr.index(before) < run.stderr.index(after)

        # A house the model never saw, raw features as a user has them: their names, no price, no
        # scaling, the lot size unknown (null).
        house = generate_housing(1, seed=4242).rename(columns=HUMAN_NAMES).iloc[0]
        features = {name: (int(value) if float(value).is_integer() else float(value))
                    for name, value in house.drop(labels=["Sale Price"]).items()}
        features["Lot (acres)"] = None
        predict = subprocess.run([*MLOPS, "predict", result["endpoint_name"], "--json", json.dumps(features),
                                  "--state-dir", str(state)],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert predict.returncode == 0, predict.stderr
        [prediction] = json.loads(predict.stdout)["predictions"]
        assert math.isfinite(prediction)
        assert abs(prediction - float(house["Sale Price"])) < 4 * result["metrics"]["rmse"], (prediction, house)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            up.wait(timeout=180)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
            raise
        up_log.close()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert find_running_cloud(state) is None
    assert_nothing_left(state, marker)


def test_reject_on_a_quarantined_file_reports_the_quarantine_and_the_cli_stops_its_cloud(tmp_path):
    """No cloud running: `run` starts its own for the duration, reports the quarantine (exit 4,
    nothing to reject) with the reason and the fix, and stops everything it started."""
    state, marker = tmp_path / "state", uuid.uuid4().hex
    path = tmp_path / "no-target.csv"
    generate_housing(50, seed=5).rename(columns={"PRICE": "COST"}).to_csv(path, index=False)
    run = subprocess.run([*MLOPS, "local", "run", str(path), "--reject", "--json", "--state-dir", str(state),
                          "--timeout", "180"],
                         cwd=tmp_path, env=cli_env(marker), capture_output=True, text=True, timeout=400)
    assert run.returncode == EXIT_QUARANTINED, run.stderr[-3000:]
    result = one_json_line(run.stdout)
    assert result["status"] == "quarantined" and result["reason"].startswith("missing_target"), result
    assert result["fix"] and f"how to fix it: {result['fix']}" in run.stderr, run.stderr[-3000:]
    assert result["execution_arn"] is None and result["model_package_arn"] is None and result["endpoint_name"] is None
    assert set(result) >= {"status", "reason", "execution_arn", "model_package_arn", "metrics", "endpoint_name"}
    assert find_running_cloud(state) is None
    assert_nothing_left(state, marker)


def test_arguments_the_cli_refuses(tmp_path, capsys):
    path = tmp_path / "houses.csv"
    generate_housing(10, seed=1).to_csv(path, index=False)
    with pytest.raises(SystemExit) as both:
        cli.main(["local", "run", str(path), "--approve", "--reject", "--json"])
    assert both.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err

    state = str(tmp_path / "state")
    assert cli.main(["local", "run", str(tmp_path / "missing.csv"), "--json", "--state-dir", state]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["local", "run", str(path), "--json", "--state-dir", state, "--parameter", "RMSEThreshold"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # refused before any cloud was started


def test_approval_outcomes_follow_the_email_link_and_the_deployment(tmp_path):
    """`decide` (the stage after registration) against the stack as the template declares it, with
    packages published as the pipeline would: a broken model's approval ends `failed` with the
    deployment's reason, a good one's `deployed` on a serving endpoint, a rejection `rejected`."""
    import argparse

    from local.cloud import LocalCloud
    from local.cli.run import LOCAL_DEPLOY_PARAMETERS, RunSession, empty_result
    from local.cli.follow import decide, deployment_record
    from tests.model_artifacts import FEATURES, expected_predictions, publish_package

    with LocalCloud(tmp_path / "state", start_ray=False, write_cloud_file=False,
                    parameters=LOCAL_DEPLOY_PARAMETERS) as cloud:
        outputs = cloud.stack.outputs
        progress: list[str] = []

        def run_decision(package_arn: str, action: str) -> dict:
            args = argparse.Namespace(approve=action == "approve", reject=action == "reject")
            session = RunSession(cloud.endpoint_url, cloud.state_dir, outputs, args, deadline=time.monotonic() + 240,
                                 progress=progress.append, credentials=cloud.client_kwargs(with_endpoint=False))
            result = empty_result() | {"status": "registered", "model_package_arn": package_arn}
            return decide(session, result)

        publish = dict(bucket=outputs["ArtifactsBucketName"], group=outputs["ModelPackageGroupName"])
        s3, sagemaker = cloud.client("s3"), cloud.client("sagemaker")
        broken = publish_package(s3, sagemaker, tmp_path, execution_id="broken", broken=True, **publish)
        good = publish_package(s3, sagemaker, tmp_path, execution_id="good", **publish)
        spare = publish_package(s3, sagemaker, tmp_path, execution_id="spare", **publish)

        failed = run_decision(broken["arn"], "approve")
        assert failed["status"] == "failed" and failed["endpoint_name"] is None, failed
        assert failed["reason"].startswith("deployment failed: ") and "model server" in failed["reason"], failed
        assert Path(failed["approval_email"]).parent == cloud.outbox_dir

        deployed = run_decision(good["arn"], "approve")
        assert deployed["status"] == "deployed" and deployed["reason"] is None, deployed
        assert deployed["endpoint_name"] == outputs["EndpointNameOutput"]
        row = good["trained"]["test"].iloc[[0]]
        response = cloud.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=deployed["endpoint_name"], ContentType="application/json",
            Body=json.dumps(row[FEATURES].iloc[0].to_dict()))
        assert json.loads(response["Body"].read())["predictions"][0] == pytest.approx(
            float(expected_predictions(good["trained"], row)[0]), rel=1e-5)

        rejected = run_decision(spare["arn"], "reject")
        assert rejected["status"] == "rejected" and rejected["endpoint_name"] is None, rejected
        assert sagemaker.describe_model_package(ModelPackageName=spare["arn"])["ModelApprovalStatus"] == "Rejected"
        session = RunSession(cloud.endpoint_url, cloud.state_dir, outputs, argparse.Namespace(), deadline=0,
                             credentials=cloud.client_kwargs(with_endpoint=False))
        assert deployment_record(session, "Rejected", spare["arn"])["Outcome"] == "skipped"
        assert cloud.dead_letters() == []
