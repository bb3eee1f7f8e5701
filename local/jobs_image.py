"""The jobs image's environment on this machine: what `jobs/Dockerfile` builds, without Docker.

Pipeline jobs, the shared local Ray head they join and the model servers of local endpoints run
in the image on AWS. Locally they run in an environment built from the same Dockerfile, read
rather than copied by hand:

* the interpreter: the `FROM python:X.Y...` line's Python, as a virtualenv made by uv;
* the packages: the requirements file the Dockerfile installs, with the same pip flags
  (`--no-deps`: the pins are the whole dependency set), then `pip check`, then the Dockerfile's own
  `python3 -c "import ..."` smoke test;
* the environment variables of its `ENV` lines, with `WORKDIR` paths pointed at the local copy;
* on the import path only what it `COPY`s under `WORKDIR` (`jobs/` and `mlops_shared/` side by
  side, like `/opt/program`), never the repository root: a job importing what the image lacks
  (`moto`, `sagemaker`, `local`, `tests`) fails here with its own ModuleNotFoundError as it would on
  AWS.

The virtualenv lives in `<base>/env-<fingerprint>/` (default base `.venv-jobs/` in the repository),
the fingerprint being the Python version, the install flags and the requirements file's bytes:
it is built once and rebuilt when the pins change (uv's cache makes a build take seconds). Older
environments are removed by the next build. The program copy is a content-addressed snapshot
(`<base>/program/<digest>/`) taken when a job starts, so jobs run the checkout's current code yet
can never reach the repository through a path.

    image = default_image()                  # built on first use, one line on stderr while it builds
    subprocess.run([str(image.python), "-m", "jobs.serve", ...], env=image.environment(), cwd=image.program_dir())

`python -m local.jobs_image` builds it ahead of time (the Makefile's `jobs-env`).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from local import REPO_ROOT, uv_tool

log = logging.getLogger(__name__)

DEFAULT_DOCKERFILE = REPO_ROOT / "jobs" / "Dockerfile"
DEFAULT_BASE_DIR = REPO_ROOT / ".venv-jobs"
COMPLETE_MARKER = ".complete"
# Host variables a container would also have (its user, locale, temp dir); everything else of the
# caller's environment stays out, as it would outside a container.
HOST_VARIABLES = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Program snapshots older than this are removed when a new one is taken (a job runs for hours at
# most; a snapshot another process still uses is younger than that).
SNAPSHOT_MAX_AGE_SECONDS = 24 * 3600
SKIPPED_NAMES = {"__pycache__", ".pytest_cache"}


class JobsImageError(RuntimeError):
    """The Dockerfile cannot be read as expected, or the environment could not be built."""


@dataclass(frozen=True)
class Copy:
    """One `COPY <source> <destination>` of the Dockerfile."""

    source: str
    destination: str


@dataclass(frozen=True)
class DockerfileSpec:
    """What the local environment takes from the Dockerfile."""

    python_version: str
    env: dict[str, str]
    workdir: str
    copies: tuple[Copy, ...]
    requirements: str  # the requirements file in the build context
    install_flags: tuple[str, ...]  # pip flags of the install (`--no-deps`)
    smoke_tests: tuple[str, ...] = ()  # `python3 -c` programs the build runs

    def program_copies(self) -> list[Copy]:
        """The COPYs into WORKDIR: what is on the image's import path."""
        root = self.workdir.rstrip("/") + "/"
        return [c for c in self.copies if c.destination.startswith(root)]


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, rest = whole.partition(" ")
            yield keyword.upper(), rest.strip()
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        yield keyword.upper(), rest.strip()


def _env_pairs(arguments: str) -> dict[str, str]:
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:  # the legacy `ENV KEY value with spaces` form
        return {tokens[0]: arguments.split(None, 1)[1] if len(tokens) > 1 else ""}
    pairs = {}
    for token in tokens:
        key, separator, value = token.partition("=")
        if not separator:
            raise JobsImageError(f"ENV {arguments!r}: {token!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def read_dockerfile(path: Path) -> DockerfileSpec:
    """Parses the parts of the Dockerfile the local environment reproduces; fails clearly when the
    Dockerfile no longer has the shape this reader knows (so the two cannot drift apart silently)."""
    python_version = None
    env: dict[str, str] = {}
    workdir = "/"
    copies: list[Copy] = []
    installs: list[tuple[tuple[str, ...], str]] = []
    smoke_tests: list[str] = []
    for keyword, arguments in _instructions(path.read_text(encoding="utf-8")):
        if keyword == "FROM":
            match = re.match(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)", arguments)
            if not match:
                raise JobsImageError(f"{path}: FROM {arguments!r} is not a python:X.Y image")
            python_version = match.group(1)
        elif keyword == "ENV":
            env.update(_env_pairs(arguments))
        elif keyword == "WORKDIR":
            workdir = arguments
        elif keyword == "COPY":
            tokens = [t for t in shlex.split(arguments) if not t.startswith("--")]
            if len(tokens) != 2:
                raise JobsImageError(f"{path}: COPY {arguments!r}: expected one source and one destination")
            copies.append(Copy(tokens[0], tokens[1]))
        elif keyword == "RUN":
            for command in re.split(r"&&|;", arguments):
                words = shlex.split(command)
                if len(words) >= 2 and words[0] in ("pip", "pip3") and words[1] == "install":
                    if "-r" not in words:
                        raise JobsImageError(f"{path}: RUN {command.strip()!r} installs without -r <file>")
                    file = words[words.index("-r") + 1]
                    flags = tuple(w for w in words[2:] if w.startswith("--"))
                    installs.append((flags, file))
                elif len(words) >= 3 and words[0] in ("python3", "python") and words[1] == "-c":
                    smoke_tests.append(words[2])
    if python_version is None:
        raise JobsImageError(f"{path}: no FROM python:X.Y line")
    if len(installs) != 1:
        raise JobsImageError(f"{path}: expected one `pip install ... -r <file>`, found {len(installs)}")
    flags, installed_file = installs[0]
    requirement_copy = next((c for c in copies if c.destination == installed_file), None)
    if requirement_copy is None:
        raise JobsImageError(f"{path}: {installed_file} is installed but no COPY puts it there")
    return DockerfileSpec(python_version=python_version, env=env, workdir=workdir.rstrip("/") or "/",
                          copies=tuple(copies), requirements=requirement_copy.source,
                          install_flags=flags, smoke_tests=tuple(smoke_tests))


def _uv() -> str:
    found = uv_tool.find_uv()
    if found is None:
        raise JobsImageError("uv is needed to build the jobs image environment; `make venv` installs it in .venv/bin")
    return str(found)


def _files(source: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, file) of a COPY source: the file itself, or every file under a directory."""
    if source.is_file():
        yield source.name, source
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not (SKIPPED_NAMES & set(relative.parts)) and path.suffix != ".pyc":
            yield relative.as_posix(), path


@dataclass
class JobsImage:
    """The jobs image as a local environment. See the module docstring."""

    dockerfile: Path = DEFAULT_DOCKERFILE
    context: Path = REPO_ROOT
    base_dir: Path = DEFAULT_BASE_DIR
    spec: DockerfileSpec = field(init=False)
    _snapshot_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.dockerfile, self.context, self.base_dir = Path(self.dockerfile), Path(self.context), Path(self.base_dir)
        self.spec = read_dockerfile(self.dockerfile)

    # -- where things are -----------------------------------------------------------------------
    @property
    def requirements(self) -> Path:
        return self.context / self.spec.requirements

    def fingerprint(self) -> str:
        """Changes exactly when the installed environment must change."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.spec.python_version, list(self.spec.install_flags), list(uv_tool.COMPILED_INSTALL_FLAGS)]).encode())
        digest.update(self.requirements.read_bytes())
        return digest.hexdigest()[:16]

    @property
    def env_dir(self) -> Path:
        return self.base_dir / f"env-{self.fingerprint()}"

    @property
    def python(self) -> Path:
        return self.env_dir / "bin" / "python"

    @property
    def ray(self) -> Path:
        return self.env_dir / "bin" / "ray"

    def is_built(self) -> bool:
        return (self.env_dir / COMPLETE_MARKER).is_file()

    # -- building -------------------------------------------------------------------------------
    def ensure(self) -> "JobsImage":
        """Builds the environment unless the current pins are already built; returns self."""
        if self.is_built():
            return self
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with self._build_lock():
            if not self.is_built():  # another process may have built it while we waited
                self._build()
        return self

    @contextlib.contextmanager
    def _build_lock(self) -> Iterator[None]:
        with open(self.base_dir / ".build.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _build(self) -> None:
        env_dir, started = self.env_dir, time.monotonic()
        flags = " ".join(self.spec.install_flags)
        print(f"building the jobs image environment: Python {self.spec.python_version}, "
              f"{self.spec.requirements} {flags} -> {env_dir} (once per change of the pins)",
              file=sys.stderr, flush=True)
        uv = _uv()
        self._run([uv, "venv", "--quiet", "--clear", "--python", self.spec.python_version, str(env_dir)],
                  "create the virtualenv")
        # Compiled, as pip compiles in the image (the one flag the local install adds to the Dockerfile's).
        self._run([uv, "pip", "install", "--quiet", *uv_tool.COMPILED_INSTALL_FLAGS, "--python", str(self.python),
                   *self.spec.install_flags, "-r", str(self.requirements)], f"install {self.spec.requirements}")
        self._run([uv, "pip", "check", "--quiet", "--python", str(self.python)], "check the installed pins")
        for program in self.spec.smoke_tests:
            self._run([str(self.python), "-c", program], "run the Dockerfile's import check",
                      env=self.environment(), cwd=self.program_dir())
        (env_dir / COMPLETE_MARKER).write_text(json.dumps({
            "python_version": self.spec.python_version, "install_flags": list(self.spec.install_flags),
            "requirements": self.spec.requirements, "built_at": time.time()}), encoding="utf-8")
        for stale in self.base_dir.glob("env-*"):
            if stale != env_dir:
                shutil.rmtree(stale, ignore_errors=True)
        log.info("jobs image environment ready in %.1f s: %s", time.monotonic() - started, env_dir)

    def _run(self, command: list[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip().splitlines()[-15:]
            raise JobsImageError(f"building the jobs image environment failed: could not {what} "
                                 f"({' '.join(command[:3])} ... exited {result.returncode}):\n" + "\n".join(output))

    # -- the program and the environment --------------------------------------------------------
    def program_dir(self) -> Path:
        """The image's WORKDIR as of now: a snapshot of what the Dockerfile COPYs there, taken
        anew whenever those sources changed."""
        workdir = self.spec.workdir.rstrip("/") + "/"
        entries = []
        for copy in self.spec.program_copies():
            source = self.context / copy.source
            if not source.exists():
                raise JobsImageError(f"{self.dockerfile}: COPY source {copy.source} does not exist")
            destination = copy.destination[len(workdir):].strip("/")
            for relative, path in _files(source):
                target = f"{destination}/{relative}" if source.is_dir() or copy.destination.endswith("/") else destination
                entries.append((target, path))
        digest = hashlib.sha256()
        for target, path in entries:
            digest.update(target.encode() + b"\0" + path.read_bytes() + b"\0")
        snapshot = self.base_dir / "program" / digest.hexdigest()[:16]
        with self._snapshot_lock:
            if not snapshot.is_dir():
                self._write_snapshot(snapshot, entries)
        return snapshot

    def _write_snapshot(self, snapshot: Path, entries: list[tuple[str, Path]]) -> None:
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=snapshot.parent))
        for target, path in entries:
            (staging / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / target)
        try:
            staging.rename(snapshot)  # atomic: a job never sees half a snapshot
        except OSError:  # another process took the same snapshot first
            shutil.rmtree(staging, ignore_errors=True)
        cutoff = time.time() - SNAPSHOT_MAX_AGE_SECONDS
        for old in snapshot.parent.iterdir():
            if old != snapshot and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)

    def environment(self, program_dir: Path | None = None) -> dict[str, str]:
        """The environment of a process in the image: the Dockerfile's ENV (WORKDIR paths pointed at
        `program_dir`, default: a snapshot of now), this interpreter first on PATH, and only the
        host's user, locale and temp dir."""
        program = str(program_dir or self.program_dir())
        env = {name: os.environ[name] for name in HOST_VARIABLES if name in os.environ}
        env["PATH"] = os.pathsep.join([str(self.env_dir / "bin"), *SYSTEM_PATH])
        workdir = self.spec.workdir.rstrip("/")
        for key, value in self.spec.env.items():
            if key == "PYTHONPATH":
                value = os.pathsep.join(program + entry[len(workdir):] if entry == workdir or entry.startswith(workdir + "/")
                                        else entry for entry in value.split(":"))
            env[key] = value
        return env


_default: JobsImage | None = None
_default_lock = threading.Lock()


def default_image() -> JobsImage:
    """The repository's jobs image, built on first use (one per process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = JobsImage().ensure()
        return _default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.jobs_image",
                                     description="build the jobs image's environment (a no-op when it is current)")
    parser.add_argument("--base-dir", type=Path, default=DEFAULT_BASE_DIR)
    args = parser.parse_args(argv)
    try:
        image = JobsImage(base_dir=args.base_dir).ensure()
    except JobsImageError as error:
        print(f"jobs image environment: {error}", file=sys.stderr)
        return 1
    print(image.env_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
