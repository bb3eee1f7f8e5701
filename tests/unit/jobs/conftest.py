import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray for the module's job tests (`address="local"`: never attach to a cluster
    another process on this machine started)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    if started:
        ray.shutdown()
