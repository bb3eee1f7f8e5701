"""What every `mlops` command shares: the state dir default, the exit codes, and how a result is printed."""
from __future__ import annotations

import json
import sys

DEFAULT_STATE_DIR = ".mlops-local"

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

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
    """One JSON object on stdout (for scripts), or one `key: value` line per field (for people)."""
    if as_json:
        print(json.dumps(result), flush=True)
        return
    for key, value in result.items():
        print(f"{key}: {value}")


def parse_assignments(pairs: list[str] | None, option: str = "--parameter") -> dict[str, str]:
    """`NAME=VALUE` strings (from a repeatable option) as a dict; ValueError names the bad one."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"{option} expects NAME=VALUE, got {pair!r}")
        values[name.strip()] = value
    return values
