"""Warm job workers: the local face's counterpart of SageMaker warm pools.

A cold local job pays a fresh interpreter and its imports (pandas, pyarrow, xgboost, Ray, boto3:
about 4 s each on this 2-core machine, five times per pipeline run). The pool keeps one warm
process per job module (`jobs.ingest`, `jobs.preprocess`, `jobs.train`, `jobs.evaluate`): the
jobs image's Python with that module imported and Ray NOT initialised (Ray is not fork-safe once
initialised), waiting on a unix socket (`warm/zygote.py`). A job then starts as a bare launcher
(`warm/launcher.py`, a few ms) which hands the warm process its stdio, environment and arguments;
the warm process forks, and the child runs the module as `__main__` exactly as `python -m` would.
Each job therefore still runs the same job script, under the same container contract (its own
`SM_CONTAINER_ROOT`, channels, hyperparameters.json, environment) and with its own role's
credentials (the environment is the job's, sent per job, never the pool's); it initialises Ray
itself after the fork.

Only one-host jobs of the form `<image python> -m <module> ...` are warmed; a multi-host job (its
own Ray cluster, `ray start` children) and any other command start cold. A warm process belongs
to one program snapshot (`JobsImage.program_dir`): when the jobs' code changes, the next job starts
cold and a fresh warm process replaces the stale one. `LocalCloud` turns the pool on
(`PipelineExecutor(warm_jobs=True)`) unless `MLOPS_LOCAL_WARM_JOBS=0`. A warm process exits when
the executor's process does.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

WARM_DIR = Path(__file__).resolve().parent / "warm"
ZYGOTE_SOURCE = (WARM_DIR / "zygote.py").read_text(encoding="utf-8")
LAUNCHER_SOURCE = (WARM_DIR / "launcher.py").read_text(encoding="utf-8")
DEFAULT_MODULES = ("jobs.ingest", "jobs.preprocess", "jobs.train", "jobs.evaluate")
READY_TIMEOUT_SECONDS = 120.0
ENABLED_VARIABLE = "MLOPS_LOCAL_WARM_JOBS"


def enabled_by_default() -> bool:
    return os.environ.get(ENABLED_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class _Worker:
    module: str
    workdir: Path
    socket_path: Path
    process: subprocess.Popen
    ready: threading.Event = field(default_factory=threading.Event)
    failed: str | None = None


class WarmPool:
    """Warm processes of the jobs image's `python`, started with `env` (the image's environment and
    the settings every job shares; no credentials: each job brings its own)."""

    def __init__(self, python: str, env: dict[str, str], modules: tuple[str, ...] = DEFAULT_MODULES):
        self.python = python
        self.env = dict(env)
        self.modules = tuple(modules)
        self._dir = Path(tempfile.mkdtemp(prefix="mlops-warm-"))
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.started_warm = 0
        self.started_cold = 0

    def prewarm(self, workdir: Path) -> None:
        """Starts a warm process per module for this program snapshot (returns at once)."""
        for module in self.modules:
            self._ensure(module, Path(workdir))

    def _ensure(self, module: str, workdir: Path) -> _Worker | None:
        """The module's warm process for `workdir`: the running one, or a new one started now
        (a stale one, of another snapshot, is stopped)."""
        with self._lock:
            if self._closed:
                return None
            worker = self._workers.get(module)
            if worker is not None and worker.workdir == workdir and worker.failed is None \
                    and worker.process.poll() is None:
                return worker
            if worker is not None:
                self._stop(worker)
            socket_path = self._dir / f"{module}-{len(os.listdir(self._dir))}.sock"
            process = subprocess.Popen([self.python, "-c", ZYGOTE_SOURCE, str(socket_path), module],
                                       env=self.env, cwd=str(workdir), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            worker = self._workers[module] = _Worker(module, workdir, socket_path, process)
        threading.Thread(target=self._watch, args=(worker,), daemon=True, name=f"warm-{module}").start()
        return worker

    def _watch(self, worker: _Worker) -> None:
        """Reads the warm process's output: WARM-READY, or why it cannot serve; then drains it."""
        assert worker.process.stdout is not None
        for raw in worker.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line == "WARM-READY":
                worker.ready.set()
                log.info("warm worker for %s ready (pid %d)", worker.module, worker.process.pid)
            elif not worker.ready.is_set():
                worker.failed = line or worker.failed
                log.warning("warm worker for %s: %s", worker.module, line)
        if not worker.ready.is_set():
            worker.failed = worker.failed or f"exited with code {worker.process.wait()}"
        worker.ready.set()  # nobody waits for a dead worker

    def command(self, command: list[str], workdir: Path) -> list[str]:
        """The command to start a one-host job with: the warm launcher when a warm process of
        this module and snapshot is (or becomes) ready, else `command` itself (cold)."""
        module = _module_of(command, self.python)
        if module is None or module not in self.modules:
            self.started_cold += 1
            return command
        worker = self._ensure(module, Path(workdir))
        if worker is None or not worker.ready.wait(READY_TIMEOUT_SECONDS) or worker.failed \
                or worker.process.poll() is not None:
            if worker is not None and worker.failed:
                log.warning("starting %s cold: its warm worker failed (%s)", module, worker.failed)
            self.started_cold += 1
            return command
        self.started_warm += 1
        return [self.python, "-c", LAUNCHER_SOURCE, str(worker.socket_path), *command[3:]]

    def _stop(self, worker: _Worker) -> None:
        from local.aws.sagemaker_pipelines.hosts import kill_process_tree

        kill_process_tree(worker.process, grace=2.0)
        if worker.process.stdout is not None:
            worker.process.stdout.close()
        worker.socket_path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            self._stop(worker)
        shutil.rmtree(self._dir, ignore_errors=True)


def _module_of(command: list[str], python: str) -> str | None:
    """`jobs.train` of `[<python>, "-m", "jobs.train", ...]`; None for any other command."""
    if len(command) >= 3 and command[0] == python and command[1] == "-m":
        return command[2]
    return None
