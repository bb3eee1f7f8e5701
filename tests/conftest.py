"""Shared fixtures: a real moto server on 127.0.0.1 (not in-process mocks) and the environment that
points every boto3 client at it."""
from __future__ import annotations

import os
import socket
import urllib.request

import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
# Tests never talk to real AWS: dummy credentials and a fixed region for every client they create.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "RaySageMakerMLOps",
    "POWERTOOLS_SERVICE_NAME": "tests",
}.items():
    os.environ[_key] = _value
os.environ.pop("AWS_PROFILE", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A moto server for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch, request):
    """Points every boto3 client at a freshly reset moto server; yields the endpoint URL.

    A test marked `managed_policies` gets a moto whose IAM knows AWS's managed policies, as a
    LocalCloud's does (SAM attaches AWSLambdaBasicExecutionRole); loading them makes a reset take
    1-2 s, so the others go without."""
    wanted = request.node.get_closest_marker("managed_policies") is not None
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true" if wanted else "false")
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    yield moto_server


@pytest.fixture(scope="session")
def evaluation_outputs(moto_server, tmp_path_factory):
    """What the real Evaluate step writes for a tiny model with a champion (see tests.pipeline_outputs)."""
    from tests.pipeline_outputs import evaluation_files

    return evaluation_files(tmp_path_factory.mktemp("evaluation"), moto_server)


def pytest_collection_modifyitems(items):
    """Tests that talk to a moto server say so (`-m "not moto_server"` runs the pure ones alone)."""
    for item in items:
        if {"moto_server", "aws", "make_cloud"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.moto_server)
