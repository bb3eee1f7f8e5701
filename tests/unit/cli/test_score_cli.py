"""`mlops local score`: its arguments, and the exit codes of its results (the table of `mlops local
run`); the flow itself runs against the local cloud in tests/integration/scoring_checks.py."""
from __future__ import annotations

import json

from local.cli import main
from local.cli.common import EXIT_OK, EXIT_PIPELINE_FAILED, EXIT_QUARANTINED, EXIT_USAGE, exit_code_for
from local.cli.score import empty_result


def test_a_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["local", "score", str(tmp_path / "nope.csv"), "--json", "--state-dir", str(tmp_path)]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err


def test_results_map_to_the_exit_codes_of_local_run():
    result = empty_result()
    assert {"status", "predictions_uri", "model_package_arn"} <= set(result)
    assert exit_code_for({**result, "status": "succeeded"}) == EXIT_OK
    assert exit_code_for({**result, "status": "quarantined"}) == EXIT_QUARANTINED
    assert exit_code_for({**result, "status": "failed"}) == EXIT_PIPELINE_FAILED
    assert exit_code_for({**result, "status": "stopped"}) == EXIT_PIPELINE_FAILED
    json.dumps(result)  # one JSON object
