"""One mapping from a result document to the exit code, the same for every command."""
from __future__ import annotations

import pytest

from local.cli.common import (
    EXIT_DEPLOYMENT_FAILED,
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_PIPELINE_FAILED,
    EXIT_QUARANTINED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    exit_code_for,
)


@pytest.mark.parametrize("result, code", [
    ({"status": "registered"}, EXIT_OK),
    ({"status": "succeeded"}, EXIT_OK),  # `pipeline run` of a definition without registration
    ({"status": "approved"}, EXIT_OK),
    ({"status": "rejected"}, EXIT_OK),
    ({"status": "deployed"}, EXIT_OK),
    ({"status": "quarantined"}, EXIT_QUARANTINED),
    ({"status": "failed", "failed_stage": "pipeline"}, EXIT_PIPELINE_FAILED),
    ({"status": "failed"}, EXIT_PIPELINE_FAILED),
    ({"status": "stopped", "failed_stage": "pipeline"}, EXIT_PIPELINE_FAILED),
    ({"status": "failed", "failed_stage": "deployment"}, EXIT_DEPLOYMENT_FAILED),
    ({"status": "error"}, EXIT_INTERNAL_ERROR),
    ({"status": None}, EXIT_INTERNAL_ERROR),
    ({"status": "ignored"}, EXIT_INTERNAL_ERROR),
])
def test_each_outcome_has_its_code(result, code):
    assert exit_code_for(result) == code


def test_the_codes_are_distinct():
    codes = [EXIT_OK, EXIT_INTERNAL_ERROR, EXIT_USAGE, EXIT_TIMEOUT, EXIT_QUARANTINED, EXIT_PIPELINE_FAILED,
             EXIT_DEPLOYMENT_FAILED]
    assert codes == [0, 1, 2, 3, 4, 5, 6]


def test_people_get_the_fields_that_have_a_value_and_scripts_get_every_field(capsys):
    from local.cli.common import print_result

    result = {"status": "failed", "reason": "Ingest: no PRICE", "model_package_arn": None, "steps": [],
              "failed_step_logs": {"files": ["/tmp/Ingest.log"], "cloudwatch": []}}
    print_result(result, as_json=False)
    assert capsys.readouterr().out.splitlines() == [
        "status: failed", "reason: Ingest: no PRICE",
        'failed_step_logs: {"files": ["/tmp/Ingest.log"], "cloudwatch": []}']
    print_result(result, as_json=True)
    import json
    assert json.loads(capsys.readouterr().out) == result
