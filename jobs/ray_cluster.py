"""Connects a job to Ray: an existing cluster, a multi-node cluster formed from the SageMaker hosts,
or a local one.

    from jobs import ray_cluster
    with ray_cluster.connect() as cluster:   # on a worker host this never returns (see below)
        ... use ray ...

Order of decision (`plan_cluster` is the pure part):

1. Ray already initialised in this process (tests, notebooks) → use it as is.
2. `RAY_ADDRESS` set (the local executor's shared head, or any Ray cluster) → `ray.init(address=...)`.
3. The SageMaker job runs on several hosts (`SM_HOSTS`/`SM_CURRENT_HOST` for training,
   `<root>/config/resourceconfig.json` for processing): the first host (sorted) is the head. It
   starts a Ray head node, waits until every other host has joined, then the job runs on the head
   only. The other hosts start a node that joins `<head>:<port>`, stay up while the head is
   reachable, and exit 0 when it is gone (the job's outputs come from the head).
   Each host stops exactly the Ray node it started (`RayNode`: `ray start --block` as a child in a
   process group of its own, signalled at the end), never `ray stop`, which would stop every Ray
   process of the machine: right in a container, wrong wherever one machine plays several hosts
   or runs other Ray clusters.
   No password is involved: the cluster lives inside the job's private network (SageMaker
   isolates the job's instances); Ray's own token authentication can be enabled through Ray's
   environment variables if needed.
4. Otherwise a local `ray.init()`.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from jobs import common

log = logging.getLogger("jobs.ray_cluster")

DEFAULT_PORT = 6379
DEFAULT_JOIN_TIMEOUT_SECONDS = 600.0
HEAD_POLL_SECONDS = 2.0
# The head is considered gone after this many failed connection attempts in a row.
HEAD_GONE_AFTER_FAILURES = 3
# What `ray start` prints once its node is up.
NODE_READY_LINE = "Ray runtime started"
NODE_STOP_TIMEOUT_SECONDS = 30.0
# A node asked to stop first "drains" (waits for its leases to be returned, for Ray Serve) for up to
# 30 s, and cannot finish once the head is gone: a job's node stops when the job is done.
NODE_ENV = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class ClusterPlan:
    """What this process should do: `role` is "existing", "address", "local", "head" or "worker"."""

    role: str
    address: str | None = None
    hosts: tuple[str, ...] = ()
    current_host: str | None = None
    head_host: str | None = None
    port: int = DEFAULT_PORT

    @property
    def is_driver(self) -> bool:
        """True when this process runs the job's logic (every role but "worker")."""
        return self.role != "worker"


def read_hosts(
    env: Mapping[str, str] | None = None, root: Path | None = None
) -> tuple[list[str], str | None]:
    """The job's hosts and the current host: training env (`SM_HOSTS`, `SM_CURRENT_HOST`) first,
    then the processing `resourceconfig.json`, then the training one. ([], None) when unknown."""
    env = os.environ if env is None else env
    root = common.container_root() if root is None else root
    if env.get("SM_HOSTS"):
        try:
            hosts = [str(h) for h in json.loads(env["SM_HOSTS"])]
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"SM_HOSTS is not a JSON list of host names: {err}") from None
        return hosts, env.get("SM_CURRENT_HOST") or None
    for config in (root / "config" / "resourceconfig.json", root / "input" / "config" / "resourceconfig.json"):
        if config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            return [str(h) for h in data.get("hosts", [])], data.get("current_host")
    return [], None


def plan_cluster(
    hosts: Sequence[str],
    current_host: str | None,
    ray_address: str | None = None,
    already_initialized: bool = False,
    port: int = DEFAULT_PORT,
) -> ClusterPlan:
    """Decides this process's role (pure: no side effects)."""
    if already_initialized:
        return ClusterPlan(role="existing")
    if ray_address:
        return ClusterPlan(role="address", address=ray_address)
    unique_hosts = sorted(set(hosts))
    if len(unique_hosts) <= 1:
        return ClusterPlan(role="local", hosts=tuple(unique_hosts), current_host=current_host)
    if not current_host or current_host not in unique_hosts:
        raise ValueError(f"current host {current_host!r} is not one of the job's hosts {unique_hosts}")
    head = unique_hosts[0]
    return ClusterPlan(
        role="head" if current_host == head else "worker",
        address=f"{head}:{port}",
        hosts=tuple(unique_hosts),
        current_host=current_host,
        head_host=head,
        port=port,
    )


def current_plan(env: Mapping[str, str] | None = None, root: Path | None = None) -> ClusterPlan:
    import ray

    env = os.environ if env is None else env
    hosts, current = read_hosts(env, root)
    return plan_cluster(
        hosts,
        current,
        ray_address=env.get("RAY_ADDRESS") or None,
        already_initialized=ray.is_initialized(),
        port=int(env.get("RAY_HEAD_PORT") or DEFAULT_PORT),
    )


def _ray_cli() -> str:
    """The `ray` executable next to this interpreter (the image's venv), else the one on PATH."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def _resolve(host: str, timeout_seconds: float) -> str:
    """The host's IP address, retrying while the job's DNS entries appear."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return socket.gethostbyname(host)
        except socket.gaierror:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def head_reachable(host: str, port: int, timeout_seconds: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def wait_for_nodes(expected: int, timeout_seconds: float, poll_seconds: float = 2.0) -> int:
    """Waits until `expected` Ray nodes are alive; returns how many are. Raises on timeout."""
    import ray

    deadline = time.monotonic() + timeout_seconds
    while True:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        if alive >= expected:
            return alive
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {alive} of {expected} Ray nodes joined within {timeout_seconds:.0f} s")
        log.info("%d of %d Ray nodes joined; waiting", alive, expected)
        time.sleep(poll_seconds)


class RayNodeError(RuntimeError):
    """A Ray node of this host could not be started or stopped unexpectedly."""


class RayNode:
    """One Ray node this process started: `ray start ... --block` as a child in a process group of
    its own. `stop()` signals that child (it shuts its node's daemons down) and then that group, so
    exactly this node's processes end, whatever else runs Ray on the machine. Its output is relayed
    to this process's stderr (the job log)."""

    def __init__(self, arguments: Sequence[str], env: Mapping[str, str] | None = None, ray_cli: str | None = None):
        self.command = [ray_cli or _ray_cli(), "start", *arguments, "--block"]
        self.env = {**NODE_ENV, **(os.environ if env is None else env)}
        self.process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._tail: list[str] = []
        self._relay: threading.Thread | None = None

    def start(self, timeout_seconds: float) -> "RayNode":
        """Starts the node and waits until `ray start` reports it up; raises RayNodeError with its
        last output lines if it exits or times out first."""
        log.info("starting a Ray node: %s", " ".join(self.command))
        self.process = subprocess.Popen(
            self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self._relay = threading.Thread(target=self._relay_output, name="ray-node-output", daemon=True)
        self._relay.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._ready.wait(0.2):
            if self.process.poll() is not None:
                self._relay.join(timeout=5)  # its last words are the reason
                raise RayNodeError(f"ray start exited with {self.process.returncode}: {' | '.join(self._tail[-5:])}")
            if time.monotonic() > deadline:
                self.stop()
                raise RayNodeError(f"the Ray node did not start within {timeout_seconds:.0f} s")
        return self

    def _relay_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            sys.stderr.write(line)
            self._tail = (self._tail + [line.rstrip()])[-20:]
            if NODE_READY_LINE in line:
                self._ready.set()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_seconds: float = NODE_STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM to `ray start --block` (it stops its node's processes), then SIGKILL to whatever
        of its process group is left."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                log.warning("the Ray node did not stop within %.0f s; killing its processes", timeout_seconds)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _start_head(plan: ClusterPlan, timeout_seconds: float) -> RayNode:
    import ray

    ip = _resolve(plan.current_host or plan.head_host or "localhost", timeout_seconds)
    node = RayNode(["--head", f"--port={plan.port}", f"--node-ip-address={ip}",
                    "--include-dashboard=false", "--disable-usage-stats"]).start(timeout_seconds)
    try:
        ray.init(address=f"{ip}:{plan.port}")
        alive = wait_for_nodes(len(plan.hosts), timeout_seconds)
    except BaseException:
        if ray.is_initialized():
            ray.shutdown()
        node.stop()
        raise
    log.info("Ray cluster of %d nodes is up (head %s)", alive, plan.head_host)
    return node


def _run_worker(plan: ClusterPlan, timeout_seconds: float) -> None:
    """Joins the head and blocks until it is gone; then stops this host's node."""
    assert plan.head_host
    head_ip = _resolve(plan.head_host, timeout_seconds)
    own_ip = _resolve(plan.current_host or "localhost", timeout_seconds)
    deadline = time.monotonic() + timeout_seconds
    while not head_reachable(head_ip, plan.port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray head {plan.head_host}:{plan.port} not reachable within {timeout_seconds:.0f} s")
        time.sleep(2)
    node = RayNode([f"--address={head_ip}:{plan.port}", f"--node-ip-address={own_ip}",
                    "--disable-usage-stats"]).start(timeout_seconds)
    try:
        log.info("joined the Ray head %s:%d; waiting for the job to finish", plan.head_host, plan.port)
        failures = 0
        while failures < HEAD_GONE_AFTER_FAILURES:
            time.sleep(HEAD_POLL_SECONDS)
            failures = 0 if head_reachable(head_ip, plan.port) else failures + 1
            if not failures and not node.running():
                raise RayNodeError(f"this host's Ray node stopped while the head {plan.head_host} is still up")
        log.info("Ray head is gone; this host's part of the job is done")
    finally:
        node.stop()


@dataclass
class Cluster:
    """The connection a job got; `owns_connection` tells whether `connect` should shut Ray down,
    `node` is the Ray node this process started (the head host's), stopped by `connect`."""

    plan: ClusterPlan
    owns_connection: bool
    node: RayNode | None = None

    def cpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("CPU", 0))

    def alive_nodes(self) -> list[dict]:
        import ray

        return [node for node in ray.nodes() if node.get("Alive")]


def start(env: Mapping[str, str] | None = None, root: Path | None = None) -> Cluster:
    """Connects according to `current_plan`. On a worker host it joins, blocks until the head is
    gone and then exits the process with status 0."""
    import ray

    env = os.environ if env is None else env
    plan = current_plan(env, root)
    timeout = float(env.get("RAY_CLUSTER_JOIN_TIMEOUT_SECONDS") or DEFAULT_JOIN_TIMEOUT_SECONDS)
    log.info("Ray role: %s%s", plan.role, f" ({plan.address})" if plan.address else "")
    if plan.role == "existing":
        return Cluster(plan, owns_connection=False)
    if plan.role == "address":
        ray.init(address=plan.address)
    elif plan.role == "local":
        # address="local" starts a private Ray even if another one runs on the machine.
        ray.init(address="local", include_dashboard=False)
    elif plan.role == "head":
        return Cluster(plan, owns_connection=True, node=_start_head(plan, timeout))
    else:
        _run_worker(plan, timeout)
        raise SystemExit(0)
    return Cluster(plan, owns_connection=True)


@contextmanager
def connect(env: Mapping[str, str] | None = None, root: Path | None = None) -> Iterator[Cluster]:
    """`start`, then `ray.shutdown()` on exit when this call made the connection; the head host
    then stops its node, so the workers see the head go and exit."""
    import ray

    cluster = start(env, root)
    try:
        yield cluster
    finally:
        if cluster.owns_connection and ray.is_initialized():
            ray.shutdown()
        if cluster.node is not None:
            cluster.node.stop()


@contextmanager
def head_only(env: Mapping[str, str] | None = None, root: Path | None = None) -> Iterator[ClusterPlan]:
    """For a job that does not use Ray itself: on several hosts the cluster forms as for every Ray
    job, so the job runs once, on the head, while the other hosts wait for it and exit 0 (they never
    return from here); on one host nothing is started."""
    env = os.environ if env is None else env
    plan = current_plan(env, root)
    if plan.role in ("head", "worker"):
        with connect(env, root):
            yield plan
    else:
        yield plan
