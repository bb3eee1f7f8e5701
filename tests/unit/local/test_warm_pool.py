"""The warm job workers (local/aws/sagemaker_pipelines/warm_pool.py): a job started from a warm
worker gets exactly its own environment, arguments, working directory, stdio and exit code; a
stopped launcher takes its job with it; other commands start cold."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.aws.sagemaker_pipelines.warm_pool import WarmPool

PROBE = '''
import json, os, sys, time
IMPORTED_PID = os.getpid()
if __name__ == "__main__":
    if sys.argv[1:] == ["sleep"]:
        print("sleeping", flush=True)
        time.sleep(60)
    print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "secret": os.environ.get("JOB_SECRET"),
                      "pool_only": os.environ.get("POOL_ONLY"), "pid": os.getpid()}), flush=True)
    sys.exit(int(os.environ.get("EXIT_CODE", "0")))
'''


@pytest.fixture()
def pool(tmp_path):
    (tmp_path / "warmprobe.py").write_text(PROBE, encoding="utf-8")
    pool = WarmPool(sys.executable, {"POOL_ONLY": "1", "PATH": os.environ.get("PATH", "")}, modules=("warmprobe",))
    pool.prewarm(tmp_path)
    yield pool
    pool.close()


def _run(command, env, cwd, log):
    with open(log, "wb") as sink:
        return subprocess.run(command, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, timeout=60).returncode


def test_warm_job_gets_its_own_environment_arguments_and_exit_code(pool, tmp_path):
    import json

    command = [sys.executable, "-m", "warmprobe", "--flag", "value"]
    warm = pool.command(command, tmp_path)
    assert warm[:2] == [sys.executable, "-c"] and warm[-2:] == ["--flag", "value"]
    assert pool.started_warm == 1
    env = {"JOB_SECRET": "per-job", "EXIT_CODE": "7", "PATH": os.environ.get("PATH", "")}
    code = _run(warm, env, tmp_path, tmp_path / "warm.log")
    out = json.loads((tmp_path / "warm.log").read_text().strip().splitlines()[-1])
    assert code == 7
    assert out["argv"] == ["--flag", "value"] and out["cwd"] == str(tmp_path)
    assert out["secret"] == "per-job" and out["pool_only"] is None  # the job's env, never the pool's
    # Cold, the same script says the same (but its own pid).
    cold_code = _run(command, env, tmp_path, tmp_path / "cold.log")
    cold = json.loads((tmp_path / "cold.log").read_text().strip().splitlines()[-1])
    assert cold_code == code and {k: v for k, v in cold.items() if k != "pid"} == \
        {k: v for k, v in out.items() if k != "pid"}


def test_terminating_the_launcher_stops_the_job(pool, tmp_path):
    import psutil

    warm = pool.command([sys.executable, "-m", "warmprobe", "sleep"], tmp_path)
    log = tmp_path / "sleep.log"
    with open(log, "wb") as sink:
        launcher = subprocess.Popen(warm, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                    env={"PATH": os.environ.get("PATH", "")}, start_new_session=True)
    deadline = time.monotonic() + 30
    while "sleeping" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    jobs = [p for p in psutil.Process(pool._workers["warmprobe"].process.pid).children()]
    assert len(jobs) == 1
    launcher.terminate()
    assert launcher.wait(timeout=20) == 128 + 15
    assert not jobs[0].is_running() or jobs[0].status() == psutil.STATUS_ZOMBIE


def test_other_commands_start_cold(pool, tmp_path):
    command = [sys.executable, "script.py"]
    assert pool.command(command, tmp_path) is command
    other = [sys.executable, "-m", "not_warmed"]
    assert pool.command(other, tmp_path) is other
    assert pool.started_cold == 2 and pool.started_warm == 0


def test_a_new_program_snapshot_replaces_the_stale_worker(pool, tmp_path):
    first = pool._workers["warmprobe"]
    first.ready.wait(30)
    snapshot = tmp_path / "snapshot-2"
    snapshot.mkdir()
    (snapshot / "warmprobe.py").write_text(PROBE, encoding="utf-8")
    pool.command([sys.executable, "-m", "warmprobe"], Path(snapshot))
    assert pool._workers["warmprobe"].workdir == snapshot and first.process.poll() is not None
