"""The function tests run on the functions' runtime (.venv-lambda: Python 3.13, the Lambda SDK,
Powertools, moto), where the ML stack is absent, as it is from every function. What they need from
that stack — a trained model, the real Evaluate step's outputs, the model server — is made by the
project venv (.venv, where the jobs run), in a subprocess, exactly as the pipeline would make it.
In the project venv itself the same helpers run in process."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PYTHON = Path(os.environ.get("MLOPS_PROJECT_PYTHON") or ROOT / ".venv" / "bin" / "python")


def has_ml_stack() -> bool:
    return importlib.util.find_spec("xgboost") is not None and importlib.util.find_spec("pandas") is not None


def run_json(module: str, *args: str, timeout: float = 300) -> dict:
    """`python -m module args...` in the project venv; its last stdout line, parsed as JSON."""
    if not PROJECT_PYTHON.is_file():
        raise RuntimeError(f"{PROJECT_PYTHON} is missing: `make venv` builds the project venv the function tests use")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "functions" / "shared")])}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(PROJECT_PYTHON), "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed in the project venv:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def model_server(model_dir: Path) -> Iterator[int]:
    """`python -m jobs.serve` (the endpoint's process) on a free port; yields the port once /ping answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(PROJECT_PYTHON), "-m", "jobs.serve", "--model-dir", str(model_dir),
                                "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the model server did not start: {process.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
