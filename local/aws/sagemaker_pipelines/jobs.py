"""Running one pipeline step's job locally, the way SageMaker would run it in the jobs image.

Every job runs in the jobs image's environment (`local.jobs_image`: its Python and pins, its ENV,
only `jobs` and `mlops_shared` on the path), on as many hosts as its InstanceCount (`hosts`), each
host with its own container root and its log in CloudWatch Logs (`job_logs`).

Processing: inputs downloaded from S3 into each host's `<root>/processing/input/<name>`, the
container entrypoint run with the image's interpreter in place of `python3`, each host's outputs
uploaded afterwards (a host that wrote none uploads nothing).
Training: each trial of a tuning job (`tuning`) is a training job (`python -m jobs.train`, the
image's `train` command) with the SageMaker container layout under its own root per host, the
hosts' model directories tarred together (as SageMaker aggregates them) to
`<S3OutputPath>/<training job name>/output/model.tar.gz`.

`<root>` plays `/opt/ml` (`SM_CONTAINER_ROOT`); jobs never know they are local.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from local.aws.sagemaker_pipelines.hosts import (
    HostProcess,
    JobHosts,
    StepFailed,
    StepStopped,  # noqa: F401 (re-exported: tuning and the runner import it from here)
    instance_count,
    run_hosts,
)
from local.aws.sagemaker_pipelines.job_logs import PROCESSING_LOG_GROUP, TRAINING_LOG_GROUP
from mlops_shared.aws import parse_s3_uri

if TYPE_CHECKING:
    from local.aws.sagemaker_pipelines.warm_pool import WarmPool

log = logging.getLogger(__name__)

CONTAINER_ROOT = "/opt/ml"
ACCOUNT = "123456789012"
REGION = "us-east-1"


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


def download_prefix(s3, uri: str, destination: Path, shard: tuple[int, int] = (0, 1)) -> int:
    """Downloads the object at `uri`, or every object under `uri/`, keeping relative paths
    (SageMaker's S3Prefix semantics). `shard=(i, n)` keeps every n-th object from the i-th, in key
    order (ShardedByS3Key: each of n hosts gets its share). Returns the number of files."""
    bucket, prefix = split_s3_uri(uri)
    destination.mkdir(parents=True, exist_ok=True)
    base = prefix.rstrip("/")
    objects = []
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
            if relative and not relative.endswith("/"):
                objects.append((key, relative))
    if not objects:
        raise StepFailed(f"No S3 objects found at {uri}")
    index, hosts = shard
    mine = sorted(objects)[index::hosts]
    for key, relative in mine:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
    return len(mine)


def input_shard(distribution: str | None, host_index: int, hosts: JobHosts) -> tuple[int, int]:
    return (host_index, len(hosts.names)) if distribution == "ShardedByS3Key" else (0, 1)


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
    """What every job process gets: the image's interpreter and WORKDIR, one environment for every
    host (`base_env`: the image's ENV, the AWS settings, the executor's extras), the Ray settings of
    a one-host job (joins the shared head) or of a multi-host one (forms its own cluster), a stop
    signal, and the clients the platform uses around the job (S3 transfers, CloudWatch Logs)."""

    python: str
    workdir: Path
    base_env: dict[str, str]
    shared_ray_env: dict[str, str]
    cluster_ray_env: dict[str, str]
    stop_event: threading.Event
    register_process: Callable[[subprocess.Popen], None]
    unregister_process: Callable[[subprocess.Popen], None]
    s3_factory: Callable[[], Any]
    logs_factory: Callable[[], Any]
    train_module: str = "jobs.train"
    poll_seconds: float = 0.5
    # Warm job workers (`warm_pool`): one-host jobs start forked from a pre-imported Python.
    warm: "WarmPool | None" = None

    def host_env(self, hosts: JobHosts, extra: dict[str, str]) -> dict[str, str]:
        """One host's environment: `base_env`, the Ray settings for `hosts`, then `extra` (the
        job's Environment and the container variables SageMaker sets)."""
        env = dict(self.base_env)
        if hosts.multi:
            # The hosts form their own cluster (jobs.ray_cluster): never the shared head's address.
            env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
            env.update(self.cluster_ray_env)
            env["RAY_HEAD_PORT"] = str(hosts.ray_port)
        else:
            env.update(self.shared_ray_env)
        env.update(extra)
        return env


def container_path(path: str, root: Path) -> Path:
    """`/opt/ml/processing/input/x` -> `<root>/processing/input/x` (other paths: under root too)."""
    if _in_container_root(path):
        return root / path[len(CONTAINER_ROOT):].lstrip("/")
    return root / path.lstrip("/")


def _in_container_root(path: str) -> bool:
    return path == CONTAINER_ROOT or path.startswith(CONTAINER_ROOT + "/")


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

def job_failure(codes: dict[str, int], hosts: JobHosts, reason_file: Callable[[str], Path],
                log_path: Callable[[str], Path]) -> str | None:
    """The FailureReason of a job whose hosts exited with `codes`, or None when every host exited
    0: the reason of the first host (in host order) that failed by itself, not one stopped because
    of it. On several hosts the reason names the host."""
    failed = [h for h in hosts.names if codes.get(h, 0) > 0] or [h for h in hosts.names if codes.get(h, 0) != 0]
    if not failed:
        return None
    host = failed[0]
    reason = failure_reason(reason_file(host), log_path(host), codes[host])
    return f"{reason} (host {host})" if hosts.multi else reason


def run_processing(step_name: str, args: dict, root: Path, log_path: Path, runtime: JobRuntime,
                   job: str) -> dict:
    """Runs a processing job described by resolved CreateProcessingJob arguments on its
    `ProcessingResources.ClusterConfig.InstanceCount` hosts; returns the DescribeProcessingJob-shaped
    properties."""
    s3 = runtime.s3_factory()
    cluster = args.get("ProcessingResources", {}).get("ClusterConfig", {})
    hosts = JobHosts.plan(instance_count(cluster.get("InstanceCount"), f"Processing step {step_name}"))
    app = args.get("AppSpecification", {})
    entrypoint = _interpreter(list(app.get("ContainerEntrypoint") or []), runtime.python)
    if not entrypoint:
        raise StepFailed(f"Processing step {step_name} has no ContainerEntrypoint")
    arguments = [str(a) for a in app.get("ContainerArguments") or []]
    outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
    processes = []
    for index, host in enumerate(hosts.names):
        host_root = hosts.root(root, host)
        host_root.mkdir(parents=True, exist_ok=True)
        for item in args.get("ProcessingInputs", []):
            s3_input = item.get("S3Input")
            if not s3_input:
                raise StepFailed(f"Processing input {item.get('InputName')} has no S3Input (not supported locally)")
            download_prefix(s3, s3_input["S3Uri"], container_path(s3_input["LocalPath"], host_root),
                            input_shard(s3_input.get("S3DataDistributionType"), index, hosts))
        for item in outputs:
            if "S3Output" in item:
                container_path(item["S3Output"]["LocalPath"], host_root).mkdir(parents=True, exist_ok=True)
        # /opt/ml/config/resourceconfig.json: how a processing container learns its hosts.
        (host_root / "config").mkdir(parents=True, exist_ok=True)
        (host_root / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": list(hosts.names)}), encoding="utf-8")
        env = runtime.host_env(hosts, {**{k: str(v) for k, v in (args.get("Environment") or {}).items()},
                                       "SM_CONTAINER_ROOT": str(host_root), "PROCESSING_JOB_NAME": job})
        # A script processor's entrypoint names its code input (`/opt/ml/processing/input/code/x.py`):
        # on this host that is under its own root.
        command = [str(container_path(item, host_root)) if _in_container_root(item) else item
                   for item in entrypoint] + arguments
        processes.append(HostProcess(host, command, env, hosts.log_path(log_path, host)))
    codes = run_hosts(job, PROCESSING_LOG_GROUP, processes, runtime)
    reason = job_failure(codes, hosts, lambda h: hosts.root(root, h) / "output" / "message",
                         lambda h: hosts.log_path(log_path, h))
    if reason:
        raise StepFailed(reason)
    for host in hosts.names:  # each host's outputs, as SageMaker uploads every instance's
        for item in outputs:
            if "S3Output" in item:
                upload_dir(s3, container_path(item["S3Output"]["LocalPath"], hosts.root(root, host)),
                           item["S3Output"]["S3Uri"])
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


def _write_training_config(root: Path, hyperparameters: dict, channels: list[dict], hosts: JobHosts,
                           host: str) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2), encoding="utf-8")
    (config / "inputdataconfig.json").write_text(json.dumps({
        c["ChannelName"]: {"TrainingInputMode": "File",
                           "S3DistributionType": c["DataSource"]["S3DataSource"].get("S3DataDistributionType", "FullyReplicated"),
                           "RecordWrapperType": "None", **({"ContentType": c["ContentType"]} if c.get("ContentType") else {})}
        for c in channels
    }, indent=2), encoding="utf-8")
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": host, "hosts": list(hosts.names), "network_interface_name": "lo",
    }), encoding="utf-8")
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "output" / "data").mkdir(parents=True, exist_ok=True)


def training_instance_count(definition: dict) -> int:
    resources = definition.get("ResourceConfig") or definition.get("HyperParameterTuningResourceConfig") or {}
    return instance_count(resources.get("InstanceCount"), "Training job")


def tar_model_dirs(model_dirs: list[Path], archive: Path) -> None:
    """One model.tar.gz of every host's model directory (SageMaker aggregates them; hosts are to
    write distinct names: a name written by two hosts is kept from the first)."""
    seen: set[str] = set()
    with tarfile.open(archive, "w:gz") as tar:
        for model_dir in model_dirs:
            for path in sorted(model_dir.rglob("*")):
                name = path.relative_to(model_dir).as_posix()
                if name in seen:
                    if path.is_file():
                        log.warning("%s is in the model directory of several hosts; keeping the first", name)
                    continue
                seen.add(name)
                tar.add(str(path), arcname=name, recursive=False)


def run_training_job(name: str, definition: dict, hyperparameters: dict[str, str], root: Path,
                     log_path: Path, runtime: JobRuntime) -> dict[str, float]:
    """One training job on its InstanceCount hosts: channels, config files, `python -m jobs.train`,
    model upload. Returns its metrics; raises StepFailed with the job's reason."""
    s3 = runtime.s3_factory()
    hosts = JobHosts.plan(training_instance_count(definition))
    channels = definition.get("InputDataConfig", [])
    processes = []
    for index, host in enumerate(hosts.names):
        host_root = hosts.root(root, host)
        for channel in channels:
            source = channel["DataSource"]["S3DataSource"]
            download_prefix(s3, source["S3Uri"], host_root / "input" / "data" / channel["ChannelName"],
                            input_shard(source.get("S3DataDistributionType"), index, hosts))
        _write_training_config(host_root, hyperparameters, channels, hosts, host)
        env = runtime.host_env(hosts, {**{k: str(v) for k, v in (definition.get("Environment") or {}).items()},
                                       "SM_CONTAINER_ROOT": str(host_root), "TRAINING_JOB_NAME": name,
                                       "SM_CURRENT_HOST": host, "SM_HOSTS": json.dumps(list(hosts.names))})
        processes.append(HostProcess(host, [runtime.python, "-m", runtime.train_module], env,
                                     hosts.log_path(log_path, host)))
    codes = run_hosts(name, TRAINING_LOG_GROUP, processes, runtime)
    log_text = "".join(p.log_path.read_text(encoding="utf-8", errors="replace")
                       for p in processes if p.log_path.exists())
    metrics = scrape_metrics(log_text, definition.get("AlgorithmSpecification", {}).get("MetricDefinitions", []))
    reason = job_failure(codes, hosts, lambda h: hosts.root(root, h) / "output" / "failure",
                         lambda h: hosts.log_path(log_path, h))
    if reason:
        raise StepFailed(reason)
    archive = root / "output" / "model.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    tar_model_dirs([hosts.root(root, h) / "model" for h in hosts.names], archive)
    output_path = definition["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    bucket, key = split_s3_uri(f"{output_path}/{name}/output/model.tar.gz")
    s3.upload_file(str(archive), bucket, key)
    return metrics
