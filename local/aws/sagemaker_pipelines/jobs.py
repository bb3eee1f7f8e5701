"""Running one pipeline step's job locally, the way SageMaker would run it in the jobs image.

Processing: inputs downloaded from S3 into `<root>/processing/input/<name>`, the container
entrypoint run with the venv's interpreter in place of `python3`, outputs uploaded afterwards.
Training: each trial of a tuning job (`tuning`) is a training job (`python -m jobs.train`, the
image's `train` command) with the SageMaker container layout under its own root, its model tarred to
`<S3OutputPath>/<training job name>/output/model.tar.gz`.

`<root>` plays `/opt/ml` (`SM_CONTAINER_ROOT`); jobs never know they are local.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mlops_shared.aws import parse_s3_uri

log = logging.getLogger(__name__)

CONTAINER_ROOT = "/opt/ml"
ACCOUNT = "123456789012"
REGION = "us-east-1"


class StepFailed(Exception):
    """A step's job failed; the message is the step's FailureReason."""


class StepStopped(Exception):
    """The execution was stopped while the step ran."""


def arn(resource: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{resource}/{name}"


def job_name(*parts: str, limit: int = 63) -> str:
    """A SageMaker-valid job name: alphanumerics and hyphens, ending in a random suffix."""
    suffix = secrets.token_hex(4)
    stem = "-".join(re.sub(r"[^A-Za-z0-9-]+", "-", p).strip("-") for p in parts if p)
    stem = stem[: limit - len(suffix) - 1].rstrip("-")
    return f"{stem}-{suffix}".lower()


# -- S3 ----------------------------------------------------------------------------------------

def split_s3_uri(uri: str) -> tuple[str, str]:
    try:
        return parse_s3_uri(uri)
    except ValueError as exc:
        raise StepFailed(str(exc)) from None


def download_prefix(s3, uri: str, destination: Path) -> int:
    """Downloads the object at `uri`, or every object under `uri/`, keeping relative paths
    (SageMaker's S3Prefix semantics). Returns the number of files."""
    bucket, prefix = split_s3_uri(uri)
    destination.mkdir(parents=True, exist_ok=True)
    count = 0
    base = prefix.rstrip("/")
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key == base:
                relative = os.path.basename(key)
            elif key.startswith(base + "/") or not base:
                relative = key[len(base):].lstrip("/")
            else:
                continue  # a sibling that merely shares the prefix (train vs train_extra)
            if not relative or relative.endswith("/"):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            count += 1
    if count == 0:
        raise StepFailed(f"No S3 objects found at {uri}")
    return count


def upload_dir(s3, source: Path, uri: str) -> int:
    bucket, prefix = split_s3_uri(uri)
    count = 0
    if not source.exists():
        return 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            key = "/".join(p for p in (prefix.rstrip("/"), path.relative_to(source).as_posix()) if p)
            s3.upload_file(str(path), bucket, key)
            count += 1
    return count


def read_s3_json(s3, uri: str) -> Any:
    bucket, key = split_s3_uri(uri)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


# -- processes ---------------------------------------------------------------------------------

@dataclass
class JobRuntime:
    """What every job process gets: interpreter, environment, and a stop signal."""

    python: str
    base_env: dict[str, str]
    stop_event: threading.Event
    register_process: Callable[[subprocess.Popen], None]
    unregister_process: Callable[[subprocess.Popen], None]
    s3_factory: Callable[[], Any]
    train_module: str = "jobs.train"
    poll_seconds: float = 0.5


def container_path(path: str, root: Path) -> Path:
    """`/opt/ml/processing/input/x` -> `<root>/processing/input/x` (other paths: under root too)."""
    if path == CONTAINER_ROOT or path.startswith(CONTAINER_ROOT + "/"):
        return root / path[len(CONTAINER_ROOT):].lstrip("/")
    return root / path.lstrip("/")


def run_process(command: list[str], env: dict[str, str], log_path: Path, runtime: JobRuntime,
                cwd: Path) -> int:
    """Runs a job in its own process group, output to `log_path`; kills the group when stopped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as sink:
        sink.write(f"$ {' '.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(command, env=env, cwd=str(cwd), stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    runtime.register_process(process)
    try:
        while True:
            try:
                code = process.wait(timeout=runtime.poll_seconds)
            except subprocess.TimeoutExpired:
                if runtime.stop_event.is_set():
                    kill_process_group(process)
                    raise StepStopped("stopped") from None
                continue
            if runtime.stop_event.is_set():  # killed by StopPipelineExecution, not a job failure
                raise StepStopped("stopped")
            return code
    finally:
        runtime.unregister_process(process)


def kill_process_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the job's process group, SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=wait)
            # The leader is gone; still sweep the group for children it left behind.
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def failure_reason(reason_file: Path, log_path: Path, exit_code: int) -> str:
    """The job's own one-line reason if it wrote one, else the last meaningful log line."""
    if reason_file.exists():
        text = reason_file.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text[:1024]
    last = ""
    if log_path.exists():
        with open(log_path, "rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - 65536))
            for raw in handle.read().decode("utf-8", errors="replace").splitlines():
                if raw.strip():
                    last = raw.strip()
    reason = f"exit code {exit_code}" + (f": {last}" if last else "")
    return reason[:1024]


def _interpreter(command: list[str], python: str) -> list[str]:
    if command and command[0] in ("python3", "python", "/usr/bin/python3", "/usr/local/bin/python3"):
        return [python] + command[1:]
    return command


# -- processing --------------------------------------------------------------------------------

def run_processing(step_name: str, args: dict, root: Path, log_path: Path, runtime: JobRuntime,
                   job: str) -> dict:
    """Runs a processing job described by resolved CreateProcessingJob arguments; returns the
    DescribeProcessingJob-shaped properties."""
    s3 = runtime.s3_factory()
    root.mkdir(parents=True, exist_ok=True)
    for item in args.get("ProcessingInputs", []):
        s3_input = item.get("S3Input")
        if not s3_input:
            raise StepFailed(f"Processing input {item.get('InputName')} has no S3Input (not supported locally)")
        download_prefix(s3, s3_input["S3Uri"], container_path(s3_input["LocalPath"], root))
    outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for item in outputs:
        if "S3Output" in item:
            container_path(item["S3Output"]["LocalPath"], root).mkdir(parents=True, exist_ok=True)

    app = args.get("AppSpecification", {})
    command = _interpreter(list(app.get("ContainerEntrypoint") or []), runtime.python)
    command += [str(a) for a in app.get("ContainerArguments") or []]
    if not command:
        raise StepFailed(f"Processing step {step_name} has no ContainerEntrypoint")
    env = dict(runtime.base_env)
    env.update({k: str(v) for k, v in (args.get("Environment") or {}).items()})
    env.update({"SM_CONTAINER_ROOT": str(root), "PROCESSING_JOB_NAME": job})
    code = run_process(command, env, log_path, runtime, cwd=root)
    if code != 0:
        raise StepFailed(failure_reason(root / "output" / "message", log_path, code))
    for item in outputs:
        if "S3Output" in item:
            upload_dir(s3, container_path(item["S3Output"]["LocalPath"], root), item["S3Output"]["S3Uri"])
    now = datetime.now(timezone.utc).isoformat()
    return {
        **args,
        "ProcessingJobName": job,
        "ProcessingJobArn": arn("processing-job", job),
        "ProcessingJobStatus": "Completed",
        "ExitMessage": "",
        "ProcessingEndTime": now,
    }


def load_property_files(step_spec: dict, properties: dict, root: Path | None, s3) -> dict[str, Any]:
    """Reads a processing step's PropertyFiles from its local output dir, or from S3 (cache hits)."""
    files = {}
    outputs = {o["OutputName"]: o for o in properties.get("ProcessingOutputConfig", {}).get("Outputs", [])}
    for spec in step_spec.get("PropertyFiles", []):
        output = outputs.get(spec["OutputName"])
        if output is None:
            raise StepFailed(f"Property file {spec['PropertyFileName']} names unknown output {spec['OutputName']}")
        local = container_path(output["S3Output"]["LocalPath"], root) / spec["FilePath"] if root else None
        try:
            if local is not None and local.exists():
                files[spec["PropertyFileName"]] = json.loads(local.read_text(encoding="utf-8"))
            else:
                uri = output["S3Output"]["S3Uri"].rstrip("/") + "/" + spec["FilePath"]
                files[spec["PropertyFileName"]] = read_s3_json(s3, uri)
        except (ValueError, OSError) as exc:
            raise StepFailed(f"Property file {spec['FilePath']} of output {spec['OutputName']} is not readable JSON: {exc}") from None
        except Exception as exc:  # botocore errors: missing object
            raise StepFailed(f"Property file {spec['FilePath']} of output {spec['OutputName']} not found: {exc}") from None
    return files


# -- training ----------------------------------------------------------------------------------


def scrape_metrics(log_text: str, metric_definitions: list[dict]) -> dict[str, float]:
    """Last value of each metric's regex in the log (as SageMaker's FinalMetricDataList)."""
    metrics: dict[str, float] = {}
    for definition in metric_definitions:
        for match in re.finditer(definition["Regex"], log_text):
            try:
                metrics[definition["Name"]] = float(match.group(1))
            except (IndexError, ValueError):
                continue
    return metrics


def _write_training_config(root: Path, hyperparameters: dict, channels: list[dict], trial_name: str) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2), encoding="utf-8")
    (config / "inputdataconfig.json").write_text(json.dumps({
        c["ChannelName"]: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                           "RecordWrapperType": "None", **({"ContentType": c["ContentType"]} if c.get("ContentType") else {})}
        for c in channels
    }, indent=2), encoding="utf-8")
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo",
    }), encoding="utf-8")
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "output" / "data").mkdir(parents=True, exist_ok=True)


def run_training_job(name: str, definition: dict, hyperparameters: dict[str, str], root: Path,
                     log_path: Path, runtime: JobRuntime) -> dict[str, float]:
    """One training job: channels, config files, `python -m jobs.train`, model upload. Returns
    its metrics; raises StepFailed with the job's reason."""
    s3 = runtime.s3_factory()
    channels = definition.get("InputDataConfig", [])
    for channel in channels:
        source = channel["DataSource"]["S3DataSource"]["S3Uri"]
        download_prefix(s3, source, root / "input" / "data" / channel["ChannelName"])
    _write_training_config(root, hyperparameters, channels, name)
    env = dict(runtime.base_env)
    env.update({k: str(v) for k, v in (definition.get("Environment") or {}).items()})
    env.update({"SM_CONTAINER_ROOT": str(root), "TRAINING_JOB_NAME": name,
                "SM_CURRENT_HOST": "algo-1", "SM_HOSTS": '["algo-1"]'})
    code = run_process([runtime.python, "-m", runtime.train_module], env, log_path, runtime, cwd=root)
    log_text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    metrics = scrape_metrics(log_text, definition.get("AlgorithmSpecification", {}).get("MetricDefinitions", []))
    if code != 0:
        raise StepFailed(failure_reason(root / "output" / "failure", log_path, code))
    model_dir = root / "model"
    archive = root / "output" / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(str(path), arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    output_path = definition["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    bucket, key = split_s3_uri(f"{output_path}/{name}/output/model.tar.gz")
    s3.upload_file(str(archive), bucket, key)
    return metrics


