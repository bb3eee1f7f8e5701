"""The versions the functions are tested and deployed with, read from where they are pinned:
requirements.lock (the project venv), requirements-lambda.lock (what a function gets on Lambda) and
template.yaml (the runtime and the Powertools layer's public parameter)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def requirements_lock_pins() -> dict[str, str]:
    return _pins(ROOT / "requirements.lock")


def lambda_lock_pins() -> dict[str, str]:
    return _pins(ROOT / "requirements-lambda.lock")


def lambda_lock_python_version() -> str:
    """The --python-version requirements-lambda.lock was compiled for (its header says the command)."""
    header = (ROOT / "requirements-lambda.lock").read_text().split("\n", 3)[:3]
    match = re.search(r"--python-version[ =](\d+\.\d+)", "\n".join(header))
    assert match, "requirements-lambda.lock does not say which Python it was compiled for"
    return match.group(1)
