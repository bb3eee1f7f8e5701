"""What the CLI prints and exits with when the flow does not end as asked, driven like a user drives
it: a pipeline that fails (exit 5, the failed step, its reason and where its log is), a quarantined
upload (exit 4, the reason and the fix), and `mlops status` of the local cloud afterwards — all on
paths that end before any training (docs/contracts.md, "Exit codes")."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

from local import cli
from local.cli.common import EXIT_PIPELINE_FAILED, EXIT_QUARANTINED
from local.cli.datagen import generate_housing
from tests.e2e.test_local_run import MLOPS, assert_nothing_left, cli_env, one_json_line

MISSING_TARGET_FIX = "Name the column to predict"


def test_pipeline_run_of_a_failing_pipeline_exits_5_and_names_the_step_its_reason_and_its_log(tmp_path):
    """Intake accepts the file (it has the stack's target, PRICE), the override makes the pipeline look
    for another: Ingest fails within seconds, as a wrong TargetColumn would on AWS."""
    state, marker = tmp_path / "state", uuid.uuid4().hex
    path = tmp_path / "houses.csv"
    generate_housing(200, seed=3).to_csv(path, index=False)
    run = subprocess.run([*MLOPS, "pipeline", "run", str(path), "--parameter", "TargetColumn=SALE_PRICE", "--json",
                          "--state-dir", str(state), "--timeout", "300"],
                         cwd=tmp_path, env=cli_env(marker), capture_output=True, text=True, timeout=500)
    assert run.returncode == EXIT_PIPELINE_FAILED, run.stderr[-3000:]
    result = one_json_line(run.stdout)
    assert result["status"] == "failed" and result["failed_stage"] == "pipeline", result
    assert result["failed_step"] == "Ingest" and "SALE_PRICE" in result["reason"], result
    [log_file] = result["failed_step_logs"]["files"]
    assert Path(log_file).is_file() and Path(log_file).is_relative_to(state)
    assert "SALE_PRICE" in Path(log_file).read_text()  # the job's own account of the failure
    [stream] = result["failed_step_logs"]["cloudwatch"]
    assert stream["log_group"] == "/aws/sagemaker/ProcessingJobs"
    # stderr (not a terminal here): plain lines, the failure with its log locations.
    assert "  step Ingest: Failed (target column 'SALE_PRICE'" in run.stderr
    assert f"failed step Ingest: {result['failed_step_reason']}" in run.stderr
    assert f"  log file: {log_file}" in run.stderr
    assert f"  CloudWatch Logs: group {stream['log_group']} stream {stream['log_stream']}" in run.stderr
    assert "\x1b[" not in run.stderr  # no terminal, no live table
    assert_nothing_left(state, marker)


def test_a_quarantined_upload_exits_4_with_the_fix_and_status_shows_it(tmp_path, capsys):
    """Against a running local cloud (no Ray: nothing here trains), in process, as the local
    administrator: `local run` of a file without the target column, then `status`."""
    from local.cloud import LocalCloud

    path = tmp_path / "no-target.csv"
    generate_housing(50, seed=5).rename(columns={"PRICE": "COST"}).to_csv(path, index=False)
    state = tmp_path / "state"
    with LocalCloud(state, start_ray=False):
        started = time.monotonic()
        code = cli.main(["local", "run", "--csv", str(path), "--approve", "--json", "--state-dir", str(state),
                         "--timeout", "120"])
        out, err = capsys.readouterr()
        assert code == EXIT_QUARANTINED, err[-3000:]
        result = one_json_line(out)
        assert result["status"] == "quarantined" and result["reason"].startswith("missing_target"), result
        assert MISSING_TARGET_FIX in result["fix"] and result["docs"].endswith("docs/csv-format.md"), result
        assert f"how to fix it: {result['fix']}" in err
        assert f"every reason code and its fix: {result['docs']}" in err
        assert time.monotonic() - started < 60

        assert cli.main(["status", "--json", "--state-dir", str(state)]) == 0
        status = json.loads(capsys.readouterr().out)
        [dataset] = status["datasets"]
        assert dataset["key"] == "incoming/no-target.csv" and dataset["quarantined"] is True
        assert dataset["quarantine"]["code"] == "missing_target"
        assert status["executions"] == [] and status["model_packages"] == []
        [endpoint] = status["endpoints"]
        assert endpoint["status"] == "absent"

        assert cli.main(["status", "--state-dir", str(state)]) == 0  # the tables people read
        assert "yes: missing_target" in capsys.readouterr().out
