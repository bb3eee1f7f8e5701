"""Integration fixtures: the real local cloud (gateway + moto + lambda runtime + event dispatcher +
executor) provisioned from template.yaml, and one Ray head shared by every test that needs one."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """One Ray head for the session (starting Ray costs seconds and ~470 MB)."""
    from local.ray_head import RayHead

    with RayHead(num_cpus=2, state_dir=tmp_path_factory.mktemp("ray")) as head:
        yield head


@pytest.fixture
def make_cloud(tmp_path, monkeypatch):
    """Starts a LocalCloud with the given options; everything it started is stopped after the test."""
    from local.cloud import LocalCloud

    # moto keeps its state per process: a cloud resets it, so never mix it with the `aws` fixture.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clouds = []

    def make(**options):
        options.setdefault("start_ray", False)
        cloud = LocalCloud(tmp_path / f"state{len(clouds)}", **options).start()
        clouds.append(cloud)
        return cloud

    yield make
    for cloud in reversed(clouds):
        cloud.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    """One deploy cloud (tests.deploy_cloud.DeployCloud) for a module's deployment scenarios."""
    from tests.deploy_cloud import DeployCloud

    world = DeployCloud(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    try:
        yield world
    finally:
        world.close()
