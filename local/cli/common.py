"""What every `mlops` command shares: the state dir default, the exit codes, and how a result is printed."""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

DEFAULT_STATE_DIR = ".mlops-local"
DISTRIBUTION = "ray-sagemaker-mlops"

# The exit codes of every command (docs/contracts.md, "Exit codes"): scripts tell outcomes apart by
# them, so each outcome that is not "the flow ended as asked" has its own.
EXIT_OK = 0  # the flow ended as asked: registered; approved, rejected or deployed when asked for
EXIT_INTERNAL_ERROR = 1  # the flow did not behave as designed (a crash, a dead-lettered event, ...)
EXIT_USAGE = 2  # bad arguments; nothing was started
EXIT_TIMEOUT = 3  # the outcome did not arrive in time (the JSON keeps how far it got)
EXIT_QUARANTINED = 4  # intake refused the file: the reason and the fix are printed
EXIT_PIPELINE_FAILED = 5  # the pipeline execution failed or was stopped: failed step, reason, log
EXIT_DEPLOYMENT_FAILED = 6  # the approved model did not reach the endpoint (failed or rolled back)

# `status` of a result document -> exit code. `failed` is the pipeline's unless the result says the
# deployment failed (`failed_stage: deployment`); statuses not listed are internal errors.
STATUS_EXIT_CODES = {
    "registered": EXIT_OK, "succeeded": EXIT_OK, "approved": EXIT_OK, "rejected": EXIT_OK, "deployed": EXIT_OK,
    "quarantined": EXIT_QUARANTINED, "failed": EXIT_PIPELINE_FAILED, "stopped": EXIT_PIPELINE_FAILED,
}
DEPLOYMENT_STAGE = "deployment"
PIPELINE_STAGE = "pipeline"


def exit_code_for(result: dict) -> int:
    """The exit code of a finished command's result document (one mapping for every command)."""
    status = result.get("status")
    if status == "failed" and result.get("failed_stage") == DEPLOYMENT_STAGE:
        return EXIT_DEPLOYMENT_FAILED
    return STATUS_EXIT_CODES.get(status, EXIT_INTERNAL_ERROR)

# Template parameters of a cloud started by these commands: the template's defaults are sized for
# AWS (endpoint polls every 30 s, a 5-minute canary bake); locally an endpoint is up in seconds.
LOCAL_DEPLOY_PARAMETERS = {"EndpointPollSeconds": "2", "CanaryWaitSeconds": "10", "TerminationWaitSeconds": "0"}


def report_metrics(report) -> dict:
    """The `metrics` of a result document, from an `mlops_shared.artifacts.EvaluationReport`."""
    metrics = report.regression_metrics
    return {"rmse": metrics.rmse.value, "mae": metrics.mae.value, "r2": metrics.r2.value}


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_result(result: dict, as_json: bool) -> None:
    """One JSON object on stdout (for scripts), or one `key: value` line per field that has a value
    (for people; lists and mappings as JSON, not Python's repr)."""
    if as_json:
        print(json.dumps(result), flush=True)
        return
    for key, value in result.items():
        if value is None or value == [] or value == {}:
            continue
        print(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")


class RunError(RuntimeError):
    """The flow did not behave as designed (a handler crashed, an event was dead-lettered, ...)."""


class Failure(NamedTuple):
    """Why a flow command stopped before its outcome, and the exit code that says so."""
    reason: str
    exit_code: int


def failure_of(error: Exception, command: str, log: logging.Logger) -> Failure:
    """The failure of a flow command (`mlops local run`, `mlops local score`) that stopped on `error`:
    its deadline passing is a timeout, a RunError explains itself; anything else is an internal error
    too, named by its type, and its traceback is logged (call this in the `except` block)."""
    if isinstance(error, TimeoutError):
        return Failure(str(error), EXIT_TIMEOUT)
    if isinstance(error, RunError):
        return Failure(str(error), EXIT_INTERNAL_ERROR)
    log.error("%s failed", command, exc_info=error)
    return Failure(f"{type(error).__name__}: {error}", EXIT_INTERNAL_ERROR)


def report_outcome(result: dict, failure: Failure | None, as_json: bool) -> int:
    """Prints a flow command's result document and returns its exit code. With no failure, the code
    is the status's (`exit_code_for`); with one, it is the failure's, and the document still shows how
    far the flow got, its `reason` saying why it stopped."""
    if failure is None:
        code = exit_code_for(result)
    else:
        result["reason"] = failure.reason
        code = failure.exit_code
    print_result(result, as_json)
    return code


def parse_assignments(pairs: list[str] | None, option: str = "--parameter") -> dict[str, str]:
    """`NAME=VALUE` strings (from a repeatable option) as a dict; ValueError names the bad one."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"{option} expects NAME=VALUE, got {pair!r}")
        values[name.strip()] = value
    return values


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to an option's help when it has a default worth showing (not None,
    not False of a flag) and the help does not state it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class MlopsArgumentParser(argparse.ArgumentParser):
    """The parser of `mlops` and of each of its commands: defaults shown in every option's help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


class VersionAction(argparse.Action):
    """`--version`: works out the version only when asked (it may run git), then exits."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(), flush=True)
        parser.exit()


def version_text() -> str:
    """`mlops <package version>`, plus the commit when run from a git checkout (cheap: one git call)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    text = f"mlops {version}"
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5, check=True).stdout.strip()
            if commit:
                text += f" (git {commit})"
        except (OSError, subprocess.SubprocessError):
            pass
    return text
