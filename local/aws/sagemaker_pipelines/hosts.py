"""The instances of one job, played by processes on this machine.

SageMaker runs a job with instance count N on N instances, each a container with its own
`/opt/ml`, its own address and its own log stream; the job learns its hosts from
`/opt/ml/config/resourceconfig.json` (processing) or `SM_HOSTS`/`SM_CURRENT_HOST` (training) and
`jobs/ray_cluster.py` forms one Ray cluster across them. Locally each host is a job process with its
own container root and its own loopback address: the hosts of a job are named by their addresses
(127.0.0.2, 127.0.0.3, ...; 127.0.0.1 is the shared Ray head's), so the job resolves them without
an /etc/hosts entry and its Ray nodes bind where they should. Every job uses the same addresses,
as every SageMaker job has algo-1, algo-2: two multi-host jobs at once are two Ray clusters on the
same addresses, told apart by the head's port (`RAY_HEAD_PORT`, a free port per job).

A one-host job keeps SageMaker's name `algo-1`; it joins the shared local Ray head
(`RAY_ADDRESS`), so the name is never resolved.

`run_hosts` starts every host's process, copies each host's log into CloudWatch Logs while it runs
(`job_logs`), and waits: the job fails as soon as one host fails (the others are stopped, as
SageMaker stops the other instances), and succeeds when every host exited 0.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from local.aws.sagemaker_pipelines.job_logs import HostLogStream

if TYPE_CHECKING:
    from local.aws.sagemaker_pipelines.jobs import JobRuntime

log = logging.getLogger(__name__)

SINGLE_HOST = "algo-1"
FIRST_HOST_ADDRESS = 2  # 127.0.0.2
MAX_HOSTS = 253  # 127.0.0.2 .. 127.0.0.254


class StepFailed(Exception):
    """A step's job failed; the message is the step's FailureReason."""


class StepStopped(Exception):
    """The execution was stopped while the step ran."""


def instance_count(value, what: str) -> int:
    """The InstanceCount of a job, checked as SageMaker checks it."""
    try:
        count = int(value if value is not None else 1)
    except (TypeError, ValueError):
        raise StepFailed(f"{what} InstanceCount must be an integer, got {value!r}") from None
    if not 1 <= count <= MAX_HOSTS:
        raise StepFailed(f"{what} InstanceCount must be between 1 and {MAX_HOSTS} locally, got {count}")
    return count


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class JobHosts:
    """The hosts of one job, the head first; `ray_port` is the head's port on several hosts."""

    names: tuple[str, ...]
    ray_port: int | None = None

    @classmethod
    def plan(cls, count: int) -> "JobHosts":
        if count == 1:
            return cls((SINGLE_HOST,))
        names = tuple(f"127.0.0.{FIRST_HOST_ADDRESS + i}" for i in range(count))
        return cls(names, ray_port=free_port(names[0]))

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    def root(self, step_root: Path, host: str) -> Path:
        """A host's container root (`/opt/ml`): the step root itself on one host."""
        return step_root / host if self.multi else step_root

    def log_path(self, log_path: Path, host: str) -> Path:
        """A host's log file: `<name>.log` on one host, `<name>-<host>.log` on several."""
        return log_path.with_name(f"{log_path.stem}-{host}{log_path.suffix}") if self.multi else log_path


@dataclass
class HostProcess:
    """What to run on one host."""

    host: str
    command: list[str]
    env: dict[str, str]
    log_path: Path


def run_hosts(job_name: str, log_group: str, processes: list[HostProcess], runtime: "JobRuntime") -> dict[str, int]:
    """Runs every host's process (own process group, output to its log file, copied to CloudWatch
    Logs); returns each host's exit code. Stops all of them when one fails or the execution stops
    (StepStopped)."""
    running: dict[str, subprocess.Popen] = {}
    streams: list[HostLogStream] = []
    codes: dict[str, int] = {}
    try:
        for spec in processes:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            # One host: the job may start from a warm worker (same script, env and stdio); several
            # hosts form their own Ray cluster from fresh processes.
            command = (runtime.warm.command(spec.command, runtime.workdir)
                       if runtime.warm is not None and len(processes) == 1 else spec.command)
            with open(spec.log_path, "ab") as sink:
                warm = " (warm)" if command is not spec.command else ""
                sink.write(f"$ {' '.join(spec.command)}{warm}\n".encode())
                sink.flush()
                process = subprocess.Popen(command, env=spec.env, cwd=str(runtime.workdir), stdout=sink,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            running[spec.host] = process
            runtime.register_process(process)
            streams.append(HostLogStream(runtime.logs_factory, log_group, job_name, spec.host, spec.log_path).start())
        while len(codes) < len(running):
            if runtime.stop_event.is_set():
                raise StepStopped("stopped")
            for host, process in running.items():
                if host not in codes and process.poll() is not None:
                    codes[host] = process.returncode
            if any(code != 0 for code in codes.values()):
                break  # one host failed: the job has failed, the others would wait for it forever
            time.sleep(runtime.poll_seconds)
        if runtime.stop_event.is_set():  # killed by StopPipelineExecution, not a job failure
            raise StepStopped("stopped")
        return codes
    finally:
        for host, process in running.items():
            if process.poll() is None:
                kill_process_tree(process)
            runtime.unregister_process(process)
        for stream in streams:
            stream.close()


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_process_tree(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the job's process group, SIGKILL after `grace` seconds; then whatever the job
    started in process groups of its own (the Ray node a multi-host job runs as `ray start --block`)
    is terminated too, so a stopped job never leaves a Ray node behind."""
    import psutil

    descendants = _descendants(process.pid)  # before the leader dies and they are re-parented
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children the leader left behind in its group
    except (ProcessLookupError, PermissionError):
        pass
    leftovers = [p for p in descendants if p.is_running()]
    for child in leftovers:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
