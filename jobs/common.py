"""Helpers shared by every job script: container paths, S3 URI joining, logging and failure reporting.

Paths follow the SageMaker container contract under a root that defaults to `/opt/ml` and can be
moved with `SM_CONTAINER_ROOT` (the local executor points it at a work dir).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import pandas as pd

# Where one machine plays several instances (the local executor runs tuning trials side by side on
# one Ray node; SageMaker gives every trial an instance of its own): how many jobs share a node.
JOBS_PER_NODE_VARIABLE = "MLOPS_LOCAL_JOBS_PER_NODE"
DEFAULT_CONTAINER_ROOT = "/opt/ml"

# Where a failing job leaves its one-line reason: SageMaker reads these files into FailureReason.
_FAILURE_FILES = {
    "processing": ("output", "message"),
    "training": ("output", "failure"),
}


def container_root() -> Path:
    """The SageMaker container root (`SM_CONTAINER_ROOT`, default `/opt/ml`)."""
    return Path(os.environ.get("SM_CONTAINER_ROOT") or DEFAULT_CONTAINER_ROOT)


def processing_input(name: str) -> Path:
    """`<root>/processing/input/<name>` (not created: inputs are provided by the platform)."""
    return container_root() / "processing" / "input" / name


def processing_output(name: str) -> Path:
    """`<root>/processing/output/<name>`, created if missing."""
    path = container_root() / "processing" / "output" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_channel(channel: str) -> Path:
    """`<root>/input/data/<channel>`."""
    return container_root() / "input" / "data" / channel


def hyperparameters_path() -> Path:
    """`<root>/input/config/hyperparameters.json`."""
    return container_root() / "input" / "config" / "hyperparameters.json"


def model_dir() -> Path:
    """`<root>/model`, created if missing."""
    path = container_root() / "model"
    path.mkdir(parents=True, exist_ok=True)
    return path


def failure_path(kind: str = "processing") -> Path:
    """The file a failing job writes its reason to: `output/message` (processing) or
    `output/failure` (training)."""
    try:
        parts = _FAILURE_FILES[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {sorted(_FAILURE_FILES)}, got {kind!r}") from None
    return container_root().joinpath(*parts)


def join_s3_uri(base: str, *parts: str) -> str:
    """Joins path parts onto an S3 URI with single slashes."""
    pieces = [base.rstrip("/")] + [p.strip("/") for p in parts if p and p.strip("/")]
    return "/".join(pieces)


def read_parquet_dir(directory: Path, what: str) -> "pd.DataFrame":
    """Every Parquet file under `directory` as one frame (a split a previous step wrote); a clear
    JobFailure naming `what` when there is none or it holds no rows."""
    import pandas as pd

    files = sorted(p for p in directory.rglob("*.parquet") if p.is_file()) if directory.is_dir() else []
    if not files:
        raise JobFailure(f"{what} {directory} holds no Parquet file")
    frame = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    if frame.empty:
        raise JobFailure(f"{what} {directory} holds no rows")
    return frame


class JobFailure(Exception):
    """Raised by job logic with a human-readable reason; the entry point turns it into `fail()`."""


def write_failure_reason(message: str, kind: str = "processing") -> Path:
    """Writes the one-line reason where SageMaker (and the local executor) will read it."""
    path = failure_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    one_line = " ".join(str(message).split())
    path.write_text(one_line + "\n", encoding="utf-8")
    return path


def fail(message: str, kind: str = "processing") -> NoReturn:
    """Writes the failure reason, logs it and exits with status 1."""
    write_failure_reason(message, kind)
    logging.getLogger("jobs").error("FAILED: %s", message)
    raise SystemExit(1)


def setup_logging(level: int | str | None = None) -> logging.Logger:
    """Plain timestamped logs on stderr (what CloudWatch and the local executor capture)."""
    level = level or os.environ.get("LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if not any(getattr(h, "_jobs_handler", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._jobs_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # botocore/urllib3 debug chatter drowns the job's own story.
    for noisy in ("botocore", "urllib3", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("jobs")
