"""What several benchmarks share: timing, a private Ray head, a local AWS gateway (moto plus the
featurestore runtime) in its own process, data, and percentile arithmetic.

Every process or server started here is stopped by the same context manager that started it, by
its own handle (never by name).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

REGION = "us-east-1"
NOISE_STD = 5000.0  # price noise so the model has something to learn beyond the exact formula
SEED = 7


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation (numpy's default)."""
    if not samples:
        raise ValueError("no samples")
    return float(np.percentile(np.asarray(samples, dtype=float), q))


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def local_aws_env(endpoint_url: str | None = None) -> dict[str, str]:
    """Dummy credentials and region; never real AWS."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def housing(rows: int, seed: int = SEED, noise_std: float = NOISE_STD):
    from local.cli.datagen import generate_housing

    return generate_housing(rows, seed, noise_std)


# --------------------------------------------------------------------------- Ray
@contextlib.contextmanager
def ray_cluster(workdir: Path, num_cpus: int | None = None) -> Iterator[Any]:
    """A private Ray head (`local.ray_head.RayHead`, free ports, its own token) with this process
    connected as a driver; `RAY_ADDRESS` is set so jobs run from here join it."""
    from local.ray_head import RayHead

    head = RayHead(num_cpus=num_cpus, state_dir=workdir / "ray-state").start()
    try:
        # Before `import ray`: Ray reads some of these (loopback-only cluster mode) at import time.
        with patched_environ({**head.client_env(), "RAY_ADDRESS": head.address}):
            import ray

            # Ray workers inherit the head's environment (the jobs image's, no AWS settings), not
            # this driver's: hand them the driver's AWS settings as a job-level runtime_env, as the
            # local executor does for the pipeline's jobs (runner._job_runtime).
            aws_env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
            ray.init(address=head.address, log_to_driver=False, logging_level="WARNING",
                     runtime_env={"env_vars": aws_env} if aws_env else None)
            _quiet_ray_data()
            try:
                yield head
            finally:
                ray.shutdown()
    finally:
        head.stop()


def _quiet_ray_data() -> None:
    """Ray Data's per-dataset progress lines would drown the benchmark's own output."""
    import logging

    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    except (ImportError, AttributeError):
        pass
    for name in ("ray.data", "ray.data._internal", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- AWS gateway
class GatewayProcess:
    """moto + the local featurestore runtime behind `local.aws.gateway.LocalGateway`, in a child
    process, so the service's CPU work does not share a GIL with the benchmark driver."""

    def __init__(self, replication_delay_seconds: float = 0.0, log_path: Path | None = None, *,
                 strict: bool = False):
        self.replication_delay_seconds = replication_delay_seconds
        self.log_path = log_path
        # strict: the local cloud's whole strict face (Signature V4, IAM, constraints) instead of the
        # bare gateway's constraints only; callers then act with `administrator` keys or a role's session.
        self.strict = strict
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self.administrator: dict[str, str] | None = None

    def start(self, timeout: float = 60.0) -> "GatewayProcess":
        env = dict(os.environ, **local_aws_env())
        env.pop("AWS_ENDPOINT_URL", None)
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.support", "serve-gateway", str(self.replication_delay_seconds),
             *(["--strict"] if self.strict else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
        )
        ready: dict[str, str] = {}

        def read_ready() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith("ADMINISTRATOR "):  # the strict face's administrator keys (local, throwaway)
                    ready["administrator"] = line.split(" ", 1)[1]
                if line.startswith("READY "):
                    ready["url"] = line.split()[1]
                    return

        reader = threading.Thread(target=read_ready, daemon=True)
        reader.start()
        reader.join(timeout)
        if "url" not in ready:
            self.stop()
            raise RuntimeError(f"the local gateway did not start within {timeout:.0f} s")
        self.url = ready["url"]
        if "administrator" in ready:
            self.administrator = json.loads(ready["administrator"])
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU time the gateway process has used so far."""
        import psutil

        assert self.process is not None, "the gateway is not running"
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()  # the server stops when its stdin closes
            process.wait(timeout=30)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            process.kill()
            process.wait()

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_gateway(replication_delay_seconds: float, strict: bool = False) -> int:
    """Child process body: gateway + featurestore runtime until stdin closes; `strict` puts the local
    cloud's strict face in front (as `local.cloud.LocalCloud` does) and prints its administrator's keys."""
    import logging

    from local.aws.featurestore_runtime.service import FeatureStoreRuntimeApp
    from local.aws.gateway import LocalGateway

    logging.basicConfig(level=logging.WARNING)
    gateway = LocalGateway()
    identities = None
    if strict:
        from local.aws.identities import Identities
        from local.aws.stack.model import ACCOUNT_ID
        from local.aws.strict.face import StrictFace

        identities = Identities(region=REGION)
        gateway.strict = StrictFace(identities, account=ACCOUNT_ID, region=REGION)
        print(f"ADMINISTRATOR {json.dumps(identities.administrator.client_kwargs())}", flush=True)
    gateway.start()
    featurestore = FeatureStoreRuntimeApp(gateway.url, replication_delay_seconds=replication_delay_seconds,
                                          identities=identities)
    gateway.route_path(r"/FeatureGroup/.+", featurestore)
    gateway.route_path(r"/BatchGetRecord", featurestore)
    print(f"READY {gateway.url}", flush=True)
    try:
        sys.stdin.read()
    finally:
        featurestore.close()
        gateway.stop()
    return 0


@contextlib.contextmanager
def in_process_gateway() -> Iterator[str]:
    """moto behind the local gateway in this process (for S3-only needs); yields its URL."""
    from local.aws.gateway import LocalGateway

    gateway = LocalGateway().start()
    try:
        yield gateway.url
    finally:
        gateway.stop()


def boto_client(service: str, endpoint_url: str, credentials: dict[str, str] | None = None, **config: Any) -> Any:
    """A client of the local gateway: with `credentials` (client keyword arguments: a strict gateway's
    administrator keys, a role session's), else the dummy keys a bare gateway takes."""
    import boto3
    import botocore.config

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        **(credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}),
        config=botocore.config.Config(**config) if config else None,
    )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve-gateway":
        arguments = [a for a in sys.argv[2:] if a != "--strict"]
        sys.exit(serve_gateway(float(arguments[0]) if arguments else 0.0, strict="--strict" in sys.argv[2:]))
    print("usage: python -m bench.support serve-gateway [replication_delay_seconds] [--strict]", file=sys.stderr)
    sys.exit(2)
