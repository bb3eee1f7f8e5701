"""The model server processes behind local endpoints: one `python -m jobs.serve` per endpoint variant.

`fetch_model` resolves an endpoint config to its model artifact (config -> model -> `ModelDataUrl`,
or its model package's container), downloads it from (local) S3 and extracts it;
`start_model_server` starts the server on a free port in the jobs image's environment (the image's
`serve` command: only what the image ships is importable) and waits until `/ping` answers. A `Variant`
is one running server: pooled keep-alive connections for `/invocations`, and a stop that never
leaves a process behind. `local.aws.endpoints` decides which variant gets which request.
"""
from __future__ import annotations

import http.client
import queue
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from jobs.explain import CUSTOM_ATTRIBUTES_HEADER
from jobs.model_io import extract_model_tar
from local.jobs_image import JobsImage


class VariantStartError(Exception):
    """The model server for a variant could not be started; the message is the reason."""


@dataclass
class Variant:
    """One running model server process serving one endpoint config."""

    config_name: str
    variant_name: str
    model_dir: Path
    process: subprocess.Popen
    port: int
    log_path: Path
    inflight: int = 0
    requests: int = 0
    server_errors: int = 0
    capture: Any = None  # local.aws.data_capture.CaptureSettings when the endpoint config captures
    _pool: "queue.LifoQueue[http.client.HTTPConnection]" = field(default_factory=queue.LifoQueue)

    def alive(self) -> bool:
        return self.process.poll() is None

    def post(self, body: bytes, content_type: str, accept: str | None,
             custom_attributes: str | None = None) -> tuple[int, str, bytes]:
        """POST /invocations over a pooled keep-alive connection; one retry on a stale connection.
        `custom_attributes` is InvokeEndpoint's CustomAttributes, passed on as SageMaker passes it."""
        headers = {"Content-Type": content_type or "application/json", "Content-Length": str(len(body))}
        if accept:
            headers["Accept"] = accept
        if custom_attributes:
            headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        for attempt in range(2):
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt:
                    raise
                continue
            self._pool.put(conn)
            return response.status, response.getheader("Content-Type", "application/json"), data
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/ping")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except (OSError, http.client.HTTPException):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def fetch_model(sagemaker: Any, s3_for_role: Callable[[str | None], Any], config_name: str,
                work_dir: Path) -> tuple[Path, str, Path]:
    """(extracted model directory, variant name, server log path) for an endpoint config's first
    production variant, in a fresh directory under `work_dir`; the artifact is downloaded with the
    model's execution role (`s3_for_role(role_arn)` gives the S3 client), as SageMaker hosting does."""
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        production_variant = config["ProductionVariants"][0]
        model = sagemaker.describe_model(ModelName=production_variant["ModelName"])
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        model_data_url = container.get("ModelDataUrl")
        if not model_data_url and container.get("ModelPackageName"):
            package = sagemaker.describe_model_package(ModelPackageName=container["ModelPackageName"])
            model_data_url = package["InferenceSpecification"]["Containers"][0].get("ModelDataUrl")
        if not model_data_url:
            raise VariantStartError(f"model {production_variant['ModelName']} has no ModelDataUrl")
        bucket, _, key = model_data_url.removeprefix("s3://").partition("/")
        target = Path(work_dir) / f"{config_name}-{int(time.time() * 1000)}"
        target.mkdir(parents=True, exist_ok=True)
        archive = target / "model.tar.gz"
        s3_for_role(model.get("ExecutionRoleArn")).download_file(bucket, key, str(archive))
        model_dir = extract_model_tar(archive, target / "model")
        return model_dir, production_variant.get("VariantName", "AllTraffic"), target / "server.log"
    except VariantStartError:
        raise
    except Exception as exc:  # missing config/model/object, unreadable archive: the reason is the message
        raise VariantStartError(f"cannot fetch the model for config {config_name}: {exc}") from exc


def start_model_server(model_dir: Path, config_name: str, variant_name: str, log_path: Path, image: JobsImage,
                       startup_timeout: float, started: Callable[[Variant], None], stopping: Callable[[], bool]) -> Variant:
    """Starts `jobs.serve` on the model in the jobs image's environment and waits until it is
    healthy. `started` learns of the process as soon as it exists (so a shutdown stops it even
    mid-start); `stopping` ends the wait early."""
    program = image.program_dir()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(image.python), "-m", "jobs.serve", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", "0"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=str(program), env=image.environment(program),
        )
    variant = Variant(config_name=config_name, variant_name=variant_name, model_dir=model_dir, process=process,
                      port=0, log_path=log_path)
    started(variant)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline and not stopping():
        if process.poll() is not None:
            raise VariantStartError(f"model server exited with code {process.returncode}: {tail(log_path)}")
        if not variant.port:
            match = re.search(rb"^READY (\d+)$", log_path.read_bytes(), re.MULTILINE)
            if match:
                variant.port = int(match.group(1))
        if variant.port and variant.ping():
            return variant
        time.sleep(0.05)
    variant.stop()
    raise VariantStartError(f"model server not healthy within {startup_timeout:.0f}s: {tail(log_path)}")


def tail(path: Path, lines: int = 3) -> str:
    """The last error lines of a server log (or its last lines), for a FailureReason."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    errors = [line for line in text if "ERROR" in line or "Error" in line]
    return " | ".join((errors or text)[-lines:]) or "no output"
