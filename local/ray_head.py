"""One local Ray head shared by every pipeline step and execution.

Starting Ray costs about 3 s and ~470 MB, so the local runtime starts one head (`ray start --head
--block`) and hands its address to each one-host job through `RAY_ADDRESS`. The head runs in the
jobs image's environment (`local.jobs_image`), as the Ray nodes of the jobs do on SageMaker: its
workers (the jobs' tasks and actors) import only what the image has. It runs in its own process
group that this object owns: stopping it signals that group only (never `ray stop`, which would
also stop Ray clusters that other programs on the machine started).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from local.jobs_image import JobsImage, default_image

log = logging.getLogger(__name__)

READY_LINE = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_client_env(address: str | None) -> dict[str, str]:
    """What a process needs to join a loopback-only local Ray head at `address`."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    if address:
        env["RAY_ADDRESS"] = address
    return env


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class RayHeadError(RuntimeError):
    pass


class RayHead:
    """`with RayHead(state_dir=...) as head: ... head.address`.

    num_cpus: logical CPUs Ray schedules on (default: the machine's count). Ray's per-node agents
    get free ports instead of their fixed defaults so several heads can coexist on one machine.
    image: the environment the head runs in (default: the jobs image, built on first use).
    """

    def __init__(self, num_cpus: int | None = None, state_dir: str | os.PathLike = ".mlops-local",
                 object_store_memory: int = 512 * 1024 * 1024, start_timeout: float = 90.0,
                 image: JobsImage | None = None):
        self.num_cpus = num_cpus
        self.state_dir = Path(state_dir)
        self.object_store_memory = object_store_memory
        self.start_timeout = start_timeout
        self.image = image
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._output_tail: deque[str] = deque(maxlen=40)
        self._ready = threading.Event()
        self._log_path = self.state_dir / "logs" / "ray-head.log"

    @property
    def address(self) -> str:
        if self.port is None:
            raise RayHeadError("Ray head not started")
        return f"127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment for the head and every process that joins it (the jobs get it too).

        Ray resolves `127.0.0.1` in an address to the machine's outward IP unless cluster mode is
        off; with it off the head, its agents and every driver agree on the loopback. A process
        needs only this and `RAY_ADDRESS` to join (`ray_client_env(address)` builds both).
        Token authentication is explicitly off: otherwise Ray turns it on or off depending on
        whether `~/.ray/auth_token` happens to exist, and head and drivers could disagree. The head
        is reachable from this machine only.
        """
        return ray_client_env(self.address if self.port else None)

    def _image(self) -> JobsImage:
        if self.image is None:
            self.image = default_image()
        return self.image.ensure()

    def command(self) -> list[str]:
        cmd = [
            str(self._image().ray), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.port),
            "--include-dashboard=false",
            "--dashboard-port", str(free_port()),
            "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--object-store-memory", str(self.object_store_memory),
        ]
        if self.num_cpus is not None:
            cmd += ["--num-cpus", str(int(self.num_cpus))]
        return cmd

    def start(self) -> "RayHead":
        if self.process is not None:
            return self
        self.port = free_port()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        image = self._image()
        program = image.program_dir()
        # The image's environment only: never the caller's RAY_ADDRESS (the head must not try to
        # join another cluster) nor its PYTHONPATH.
        # Stopping the head needs no Ray Serve-style drain (up to 30 s): the jobs are over by then.
        env = {**image.environment(program), **ray_client_env(None), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        log.info("starting Ray head on %s", self.address)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=str(program), text=True, start_new_session=True,  # its own process group, ours to signal
        )
        threading.Thread(target=self._pump_output, name="ray-head-output", daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.2):
            if self.process.poll() is not None:
                tail = "\n".join(self._output_tail)
                code, self.process = self.process.returncode, None
                raise RayHeadError(f"ray start exited with {code}:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RayHeadError(f"Ray head not ready after {self.start_timeout:.0f} s (log: {self._log_path})")
        return self

    def _pump_output(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        with open(self._log_path, "a", encoding="utf-8") as sink:
            for line in process.stdout:
                sink.write(line)
                sink.flush()
                self._output_tail.append(line.rstrip())
                if READY_LINE in line:
                    self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to `ray start` (it shuts its daemons down, the raylet its workers), then
        SIGKILL to whatever of its process tree is left: its process group, plus workers the raylet
        placed in sessions of their own."""
        process, self.process = self.process, None
        if process is None:
            return
        descendants = _descendants(process.pid)
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            log.info("Ray head still shutting down after %.0f s; killing what is left of it", timeout)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for child in descendants:
            try:
                child.kill()
            except Exception:  # already gone (psutil checks the start time, so no PID reuse)
                pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._ready.clear()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "RayHead":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
