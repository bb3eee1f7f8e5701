"""jobs.ray_cluster: who is head/worker (pure), where hosts come from, and the single-node paths
on a real Ray."""
from __future__ import annotations

import json
import socket

import pytest

from jobs import ray_cluster
from jobs.ray_cluster import plan_cluster, read_hosts


# --------------------------------------------------------------------------- hosts
def test_training_hosts_come_from_the_sagemaker_environment(tmp_path):
    env = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
    assert read_hosts(env, tmp_path) == (["algo-1", "algo-2"], "algo-2")


def test_processing_hosts_come_from_the_resource_config(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-3", "hosts": ["algo-1", "algo-2", "algo-3"]})
    )
    assert read_hosts({}, tmp_path) == (["algo-1", "algo-2", "algo-3"], "algo-3")


def test_no_host_information_means_no_hosts(tmp_path):
    assert read_hosts({}, tmp_path) == ([], None)


def test_a_malformed_host_list_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="SM_HOSTS"):
        read_hosts({"SM_HOSTS": "algo-1,algo-2"}, tmp_path)


# --------------------------------------------------------------------------- roles
def test_an_initialised_ray_is_used_as_is():
    plan = plan_cluster(["algo-1", "algo-2"], "algo-2", ray_address="10.0.0.1:6379", already_initialized=True)
    assert plan.role == "existing" and plan.is_driver


def test_ray_address_wins_over_the_hosts():
    plan = plan_cluster(["algo-1", "algo-2"], "algo-2", ray_address="ray://10.0.0.1:10001")
    assert (plan.role, plan.address, plan.is_driver) == ("address", "ray://10.0.0.1:10001", True)


@pytest.mark.parametrize("hosts", [[], ["algo-1"], ["algo-1", "algo-1"]])
def test_one_host_or_none_runs_ray_locally(hosts):
    plan = plan_cluster(hosts, "algo-1" if hosts else None)
    assert plan.role == "local" and plan.is_driver


def test_the_first_host_in_order_is_the_head_and_drives_the_job():
    hosts = ["algo-3", "algo-1", "algo-2"]
    head = plan_cluster(hosts, "algo-1", port=6380)
    assert (head.role, head.head_host, head.address, head.is_driver) == ("head", "algo-1", "algo-1:6380", True)
    assert head.hosts == ("algo-1", "algo-2", "algo-3")
    for other in ("algo-2", "algo-3"):
        worker = plan_cluster(hosts, other)
        assert (worker.role, worker.head_host, worker.is_driver) == ("worker", "algo-1", False)
        assert worker.address == "algo-1:6379"


def test_a_current_host_outside_the_job_is_an_error():
    with pytest.raises(ValueError, match="algo-9"):
        plan_cluster(["algo-1", "algo-2"], "algo-9")


def test_head_reachability_is_a_tcp_check():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ray_cluster.head_reachable("127.0.0.1", port, timeout_seconds=1)
    assert not ray_cluster.head_reachable("127.0.0.1", port, timeout_seconds=1)


# --------------------------------------------------------------------------- real Ray, one node
@pytest.mark.slow
def test_single_node_starts_a_private_ray_and_shuts_it_down(tmp_path, monkeypatch):
    import ray

    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_cluster.connect(env={}, root=tmp_path) as cluster:
        assert cluster.plan.role == "local" and cluster.owns_connection
        assert ray.is_initialized()
        assert cluster.cpus() >= 1
        assert len(cluster.alive_nodes()) == 1
        assert ray_cluster.wait_for_nodes(1, timeout_seconds=5) == 1
        with pytest.raises(TimeoutError, match="only 1 of 2"):
            ray_cluster.wait_for_nodes(2, timeout_seconds=0.2, poll_seconds=0.1)
    assert not ray.is_initialized()


@pytest.mark.slow
def test_an_existing_connection_is_left_open(tmp_path):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        env = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}
        with ray_cluster.connect(env=env, root=tmp_path) as cluster:
            assert cluster.plan.role == "existing" and not cluster.owns_connection
        assert ray.is_initialized()
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- one node, stopped alone
# Stands in for the `ray` CLI: `start ... --block` prints Ray's ready line, starts a "daemon" child in
# its process group (like the raylet), and on SIGTERM exits without stopping it (the node's stop
# must then end the group). It records its arguments so the test sees what was asked of Ray.
FAKE_RAY = """#!{python}
import json, os, signal, subprocess, sys, time
daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(os.environ["FAKE_RAY_RECORD"], "w") as record:
    json.dump({{"argv": sys.argv[1:], "daemon": daemon.pid}}, record)
def stop(*_):
    open(os.environ["FAKE_RAY_RECORD"] + ".sigterm", "w").close()
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
print("Ray runtime started.", flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def fake_ray(tmp_path, monkeypatch):
    import sys

    script = tmp_path / "ray"
    script.write_text(FAKE_RAY.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_RAY_RECORD", str(record))
    return script, record


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_node_is_started_blocking_and_stopping_it_ends_its_processes_only(fake_ray):
    import subprocess
    import sys
    import time

    script, record = fake_ray
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        node = ray_cluster.RayNode(["--head", "--port=6390"], ray_cli=str(script)).start(timeout_seconds=20)
        assert node.running()
        started = json.loads(record.read_text())
        assert started["argv"] == ["start", "--head", "--port=6390", "--block"]
        assert node.env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0"
        node.stop(timeout_seconds=10)
        assert (record.parent / "record.json.sigterm").exists()  # asked to stop, like `ray start --block` is
        deadline = time.monotonic() + 5
        while alive(started["daemon"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(started["daemon"])  # what it left in its group was killed with it
        assert bystander.poll() is None  # any other process of the machine is untouched
    finally:
        bystander.kill()
        bystander.wait()


def test_a_node_that_exits_at_start_reports_its_output(tmp_path):
    script = tmp_path / "ray"
    script.write_text("#!/bin/sh\necho 'ConnectionError: could not reach the GCS'\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(ray_cluster.RayNodeError, match="exited with 1: ConnectionError: could not reach the GCS"):
        ray_cluster.RayNode(["--address=127.0.0.2:6390"], ray_cli=str(script)).start(timeout_seconds=20)


def test_a_worker_joins_waits_for_the_head_to_go_then_stops_its_node(fake_ray, monkeypatch):
    import threading

    script, record = fake_ray
    monkeypatch.setattr(ray_cluster, "_ray_cli", lambda: str(script))
    monkeypatch.setattr(ray_cluster, "HEAD_POLL_SECONDS", 0.1)
    head = socket.socket()
    head.bind(("127.0.0.1", 0))
    head.listen()
    port = head.getsockname()[1]
    plan = plan_cluster(["127.0.0.1", "127.0.0.2"], "127.0.0.2", port=port)
    assert plan.role == "worker"
    worker = threading.Thread(target=ray_cluster._run_worker, args=(plan, 20.0))
    worker.start()
    try:
        worker.join(timeout=2)
        assert worker.is_alive()  # the head is still up: the worker waits
        assert json.loads(record.read_text())["argv"] == [
            "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.2", "--disable-usage-stats", "--block"]
    finally:
        head.close()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert (record.parent / "record.json.sigterm").exists()


# --------------------------------------------------------------------------- steps on a worker host
WORKER_ENV = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"}


@pytest.fixture
def worker_host(tmp_path, monkeypatch):
    """This process is the second host of a two-host job; joining the head is recorded, not done."""
    for key, value in WORKER_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path))
    joined = []
    monkeypatch.setattr(ray_cluster, "_run_worker", lambda plan, timeout: joined.append(plan.head_host))
    return joined


def test_a_worker_host_never_ingests(worker_host, monkeypatch):
    from jobs import ingest

    monkeypatch.setattr(ingest, "ingest", lambda *a, **k: pytest.fail("a worker host ingested"))
    with pytest.raises(SystemExit) as exit_:
        ingest.main(["--input-uri", "s3://b/k.csv", "--dataset-version", "v", "--target-column", "PRICE",
                     "--feature-group-name", "g", "--offline-store-s3-uri", "s3://b/fs",
                     "--feature-store-role-arn", "arn:aws:iam::123456789012:role/r"])
    assert exit_.value.code == 0 and worker_host == ["algo-1"]


def test_a_worker_host_never_evaluates(worker_host, monkeypatch):
    from jobs import evaluate

    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("a worker host evaluated"))
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--target-column", "PRICE"])
    assert exit_.value.code == 0 and worker_host == ["algo-1"]


def test_one_host_evaluates_without_starting_ray(tmp_path, monkeypatch):
    import ray
    from jobs import evaluate

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SM_CONTAINER_ROOT", str(tmp_path))
    calls = []
    monkeypatch.setattr(evaluate, "evaluate", lambda *args: calls.append(args))
    assert evaluate.main(["--target-column", "PRICE"]) == 0
    assert calls and not ray.is_initialized()
