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
