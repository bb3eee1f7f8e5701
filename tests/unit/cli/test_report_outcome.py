"""How `mlops local run` and `mlops local score` end: the result document they print and the exit code
they return, when the flow reached an outcome and when it stopped on an error."""
from __future__ import annotations

import json
import logging

import pytest

from local.cli.common import (
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_PIPELINE_FAILED,
    EXIT_TIMEOUT,
    Failure,
    RunError,
    failure_of,
    report_outcome,
)
from local.cli.run import empty_result

PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"
EXECUTION = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e1"
log = logging.getLogger("tests.report_outcome")


def _stopped_on(error: Exception, command: str = "mlops local run") -> Failure:
    """The failure as the commands take it: in the `except` block of the flow that raised it."""
    try:
        raise error
    except Exception as exc:
        return failure_of(exc, command, log)


def test_an_outcome_prints_the_document_and_exits_with_its_status_code(capsys):
    result = empty_result() | {"status": "registered", "model_package_arn": PACKAGE, "execution_arn": EXECUTION}
    assert report_outcome(result, None, as_json=False) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "status: registered",
        f"execution_arn: {EXECUTION}",
        f"model_package_arn: {PACKAGE}",
        'metrics: {"rmse": null, "mae": null, "r2": null}',
    ]
    assert report_outcome(result, None, as_json=True) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == result and printed["reason"] is None


def test_an_outcome_keeps_the_reason_the_flow_gave(capsys):
    result = empty_result() | {"status": "failed", "failed_stage": "pipeline", "reason": "Train: out of memory"}
    assert report_outcome(result, None, as_json=True) == EXIT_PIPELINE_FAILED
    assert json.loads(capsys.readouterr().out)["reason"] == "Train: out of memory"


def test_a_timeout_keeps_how_far_the_flow_got_and_says_why_it_stopped(capsys, caplog):
    failure = _stopped_on(TimeoutError("no outcome within 30 s (waiting for the pipeline)"))
    assert failure == Failure("no outcome within 30 s (waiting for the pipeline)", EXIT_TIMEOUT)
    result = empty_result() | {"status": "running", "execution_arn": EXECUTION}
    with caplog.at_level(logging.ERROR):
        assert report_outcome(result, failure, as_json=False) == EXIT_TIMEOUT
    assert capsys.readouterr().out.splitlines() == [
        "status: running",
        "reason: no outcome within 30 s (waiting for the pipeline)",
        f"execution_arn: {EXECUTION}",
        'metrics: {"rmse": null, "mae": null, "r2": null}',
    ]
    assert caplog.records == []  # a timeout is an outcome, not a crash


def test_a_run_error_is_an_internal_error_that_explains_itself(capsys, caplog):
    with caplog.at_level(logging.ERROR):
        failure = _stopped_on(RunError("the upload event could not be processed: {}"))
    assert failure == Failure("the upload event could not be processed: {}", EXIT_INTERNAL_ERROR)
    assert report_outcome(empty_result(), failure, as_json=True) == EXIT_INTERNAL_ERROR
    printed = json.loads(capsys.readouterr().out)
    assert printed["reason"] == "the upload event could not be processed: {}" and printed["status"] is None
    assert caplog.records == []


def test_any_other_error_is_named_by_its_type_and_its_traceback_logged(capsys, caplog):
    with caplog.at_level(logging.ERROR):
        failure = _stopped_on(KeyError("DataBucketName"), command="mlops local score")
    assert failure == Failure("KeyError: 'DataBucketName'", EXIT_INTERNAL_ERROR)
    [record] = caplog.records
    assert record.getMessage() == "mlops local score failed"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "raise error" in caplog.text  # the traceback, not only the message
    assert report_outcome({"status": None}, failure, as_json=False) == EXIT_INTERNAL_ERROR
    assert capsys.readouterr().out.splitlines() == ["reason: KeyError: 'DataBucketName'"]


@pytest.mark.parametrize("failure", [None, Failure("stopped", EXIT_TIMEOUT)])
def test_the_document_is_one_json_object_either_way(capsys, failure):
    report_outcome(empty_result() | {"status": "registered"}, failure, as_json=True)
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["status"] == "registered"
