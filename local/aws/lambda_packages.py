"""What a Lambda function gets on AWS, built locally: the runtime's interpreter and SDK, the
function's code with its requirements, and its layers, and nothing else.

On AWS a handler sees `/var/task` (its CodeUri dir with `requirements.txt` installed by `sam build`),
`/opt/python` (each layer; SAM's PythonPipBuilder puts a layer's source and its requirements under
`python/`), and the runtime's own site-packages (Python and the SDK version the runtime ships). The
project venv has every package of the repository, so a handler run there can import what its
function never ships. Here each function gets:

* the interpreter of the template's `Runtime` (`python3.13` -> a Python 3.13 found on PATH or in
  pyenv's versions), in a virtualenv of its own holding only the runtime's SDK (boto3/botocore at
  the pins of requirements-lambda.lock, see requirements-lambda.in for where the numbers come from);
* its code dir and each local layer's source dir as they are (tracebacks point at the real files),
  with their `requirements.txt` installed next to them;
* each AWS-managed layer (`local.aws.public_parameters`) built as AWS builds it.

Every build lands in a cache dir (`MLOPS_LAMBDA_CACHE`, default `<repo>/.cache/lambda`) under the
hash of what went into it, so a second start costs a directory lookup. Builds use uv and install
only from requirements-lambda.lock's pins (`--constraint`): what runs locally is what the lock says.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from local import uv_tool
from local.aws.stack.model import ManagedLayer

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LAMBDA_LOCK = REPO_ROOT / "requirements-lambda.lock"
# The runtime requirements-lambda.lock is compiled for (`make lock-lambda`); functions of any other
# runtime cannot be run locally until the lock is compiled for theirs.
LOCK_RUNTIME = "python3.13"
RUNTIME_SDK = ("boto3", "botocore")
BUILD_TIMEOUT_SECONDS = 600.0


class LambdaRuntimeUnavailable(RuntimeError):
    """The local face cannot give a function what Lambda would (interpreter, packages)."""


@dataclass(frozen=True)
class FunctionPackage:
    """Where a worker of one function finds its interpreter and its importable directories, in
    Lambda's order: the code dir and its installed requirements first, then the layers."""

    interpreter: Path
    python_path: tuple[Path, ...]


# ------------------------------------------------------------------------------------------------
# The runtime's interpreter
# ------------------------------------------------------------------------------------------------
def python_version_of(runtime: str) -> str:
    match = re.fullmatch(r"python(\d+\.\d+)", runtime)
    if not match:
        raise LambdaRuntimeUnavailable(f"runtime {runtime!r} is not a Python runtime; the local face runs Python only")
    return match.group(1)


def find_interpreter(runtime: str) -> Path:
    """The interpreter of a Lambda runtime (`python3.13` -> a Python 3.13), from PATH or pyenv.

    pyenv's shims answer only for the versions `PYENV_VERSION` names (the Makefile sets it), so
    outside make the installed versions are looked up in pyenv's root directly."""
    version = python_version_of(runtime)
    candidates: list[Path] = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    for root in _pyenv_roots():
        candidates += sorted((root / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        real = _real_interpreter(candidate, version)
        if real:
            return real
    raise LambdaRuntimeUnavailable(
        f"the functions' Runtime {runtime} needs a Python {version} interpreter (python{version}) and none was "
        f"found on PATH or in pyenv's versions; install Python {version} (e.g. `pyenv install {version}`) or put "
        f"python{version} on PATH")


def _pyenv_roots() -> list[Path]:
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    return [root for root in dict.fromkeys(roots) if (root / "versions").is_dir()]


def _real_interpreter(candidate: Path, version: str) -> Path | None:
    """The interpreter behind `candidate` (a pyenv shim resolves to the real binary, so every way of
    finding one Python gives one cache key) if it is Python `version`, else None."""
    try:
        done = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2], sys.executable)"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    reported, _, executable = done.stdout.strip().partition(" ")
    return Path(executable) if done.returncode == 0 and reported == version and executable else None


# ------------------------------------------------------------------------------------------------
# Builds
# ------------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    return Path(os.environ.get("MLOPS_LAMBDA_CACHE") or REPO_ROOT / ".cache" / "lambda")


def find_uv() -> Path:
    found = uv_tool.find_uv()
    if found is None:
        raise LambdaRuntimeUnavailable("uv is needed to build the functions' packages and is not installed "
                                       "(`make venv` installs it into .venv/bin)")
    return found


class PackageBuilder:
    """Builds (once) and finds what each function ships; safe across threads and processes."""

    def __init__(self, cache_dir: str | Path | None = None, lock_file: Path = LAMBDA_LOCK):
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.lock_file = lock_file
        self._interpreters: dict[str, Path] = {}

    def package(self, runtime: str, code_dir: Path, layer_dirs: Sequence[Path],
                managed_layers: Sequence[ManagedLayer] = ()) -> FunctionPackage:
        if runtime != LOCK_RUNTIME:
            raise LambdaRuntimeUnavailable(
                f"requirements-lambda.lock is compiled for {LOCK_RUNTIME}, the function asks for {runtime}: "
                f"compile it for {runtime} (`make lock-lambda`) and change LOCK_RUNTIME in {__name__}")
        interpreter = self.runtime_interpreter(runtime)
        path: list[Path] = [code_dir]
        path += self._requirements_dir(runtime, interpreter, code_dir)
        for layer_dir in layer_dirs:
            path.append(layer_dir)
            path += self._requirements_dir(runtime, interpreter, layer_dir)
        for layer in managed_layers:
            path.append(self._managed_layer(runtime, interpreter, layer))
        return FunctionPackage(interpreter, tuple(path))

    # -- the runtime: interpreter + SDK --------------------------------------------------------
    def runtime_interpreter(self, runtime: str) -> Path:
        """A virtualenv of the runtime's Python holding the runtime's SDK only; its python."""
        if runtime not in self._interpreters:
            base = find_interpreter(runtime)
            key = self._key("runtime", runtime, str(base), self._pins(RUNTIME_SDK))

            def build(target: Path) -> None:
                self._uv("venv", "-q", "--python", str(base), str(target))
                self._uv_install(target / "bin" / "python", ["--python", str(target / "bin" / "python")],
                                 list(RUNTIME_SDK))

            self._interpreters[runtime] = self._built(f"runtime-{runtime}", key, build) / "bin" / "python"
        return self._interpreters[runtime]

    # -- requirements.txt of a code dir or a layer ----------------------------------------------
    def _requirements_dir(self, runtime: str, interpreter: Path, source_dir: Path) -> list[Path]:
        requirements = source_dir / "requirements.txt"
        if not requirements.is_file() or not _requirement_lines(requirements.read_text()):
            return []
        key = self._key("requirements", runtime, requirements.read_text())

        def build(target: Path) -> None:
            self._uv_install(interpreter, ["--target", str(target)], ["-r", str(requirements)])

        return [self._built(f"deps-{source_dir.name}", key, build)]

    # -- AWS-managed layers -----------------------------------------------------------------------
    def _managed_layer(self, runtime: str, interpreter: Path, layer: ManagedLayer) -> Path:
        key = self._key("layer", runtime, layer.arn, json.dumps(layer.packages), json.dumps(layer.provided_by_runtime))

        def build(target: Path) -> None:
            site = target / "python"
            self._uv_install(interpreter, ["--target", str(site)], list(layer.packages))
            remove_distributions(site, layer.provided_by_runtime)

        name = layer.arn.rsplit(":", 2)[-2] if layer.arn.count(":") >= 7 else "managed"
        return self._built(f"layer-{name}", key, build) / "python"

    # -- plumbing -------------------------------------------------------------------------------
    def _pins(self, names: Iterable[str]) -> str:
        """The lock's lines for `names`: the part of the lock a build depends on, for its key."""
        wanted = {name.lower() for name in names}
        return "\n".join(line for line in self._lock_text().splitlines()
                         if line.split("==")[0].strip().lower() in wanted)

    def _lock_text(self) -> str:
        if not self.lock_file.is_file():
            raise LambdaRuntimeUnavailable(f"{self.lock_file} is missing; `make lock-lambda` writes it")
        return self.lock_file.read_text()

    def _key(self, *parts: str) -> str:
        digest = hashlib.sha256()
        for part in (*parts, self._lock_text(), *uv_tool.COMPILED_INSTALL_FLAGS):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    def _built(self, name: str, key: str, build) -> Path:
        """`<cache>/<name>-<key>`, built by `build(tmp dir)` once; concurrent starts wait for it."""
        final = self.cache_dir / f"{name}-{key}"
        if final.is_dir():
            return final
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f".{name}-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if final.is_dir():
                return final
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.cache_dir))
            try:
                log.info("building %s for the local Lambda runtime", final.name)
                if name.startswith("runtime-"):
                    staging.rmdir()  # uv venv wants to create the directory itself
                build(staging)
                staging.rename(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def _uv_install(self, interpreter: Path, where: list[str], requirements: list[str]) -> None:
        where = where if "--python" in where else ["--python", str(interpreter), *where]
        self._uv("pip", "install", "-q", *uv_tool.COMPILED_INSTALL_FLAGS, *where, "--constraint", str(self.lock_file), *requirements)

    def _uv(self, *args: str) -> None:
        # A virtualenv of the interpreter is written with its real path, never through a pyenv shim.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        try:
            done = subprocess.run([str(find_uv()), *args], capture_output=True, text=True, env=env,
                                  timeout=BUILD_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as exc:
            raise LambdaRuntimeUnavailable(f"uv {' '.join(args[:2])} took longer than {BUILD_TIMEOUT_SECONDS:.0f} s") from exc
        if done.returncode != 0:
            raise LambdaRuntimeUnavailable(f"uv {' '.join(args)} failed:\n{done.stderr.strip()[-3000:]}")


def _requirement_lines(text: str) -> list[str]:
    return [line for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines()) if line]


def remove_distributions(site: Path, names: Iterable[str]) -> None:
    """Deletes installed distributions (every file their RECORD lists, and the metadata dir)."""
    normalized = {re.sub(r"[-_.]+", "_", name).lower() for name in names}
    for dist_info in site.glob("*.dist-info"):
        dist_name = re.sub(r"[-_.]+", "_", dist_info.name[: -len(".dist-info")].rsplit("-", 1)[0]).lower()
        if dist_name not in normalized:
            continue
        record = dist_info / "RECORD"
        emptied: set[Path] = set()
        for line in record.read_text().splitlines() if record.is_file() else []:
            target = (site / line.split(",", 1)[0]).resolve()
            if site.resolve() in target.parents and target.is_file():
                target.unlink()
                emptied.add(target.parent)
        shutil.rmtree(dist_info, ignore_errors=True)
        for directory in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
            while directory != site.resolve() and directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent


# ------------------------------------------------------------------------------------------------
# Compiled bytecode, as the functions ship
# ------------------------------------------------------------------------------------------------
# Lambda's /var/task and /opt are read-only, so a handler shipped as source is compiled on every cold
# start (and `sam build` ships source: its Python builder copies the code dir and pip-installs the
# requirements, compiling neither the code nor the layer's source). `make sam-build` compiles what it
# built with the runtime's interpreter (same bytecode magic as the runtime). Hash-checked pycs: the
# deployment zip does not keep exact mtimes, which mtime-checked pycs need to stay valid; a hash
# check reads the source (a few kB) and stays right if someone edits a file in the console.
BYTECODE_INVALIDATION_MODE = "checked-hash"


def compile_bytecode(interpreter: Path, directories: Sequence[Path]) -> None:
    """Compiles every .py under `directories` into its __pycache__ with `interpreter` (the
    runtime's Python); raises LambdaRuntimeUnavailable when a file does not compile."""
    done = subprocess.run(
        [str(interpreter), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", BYTECODE_INVALIDATION_MODE,
         *(str(d) for d in directories)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise LambdaRuntimeUnavailable(f"compiling {', '.join(map(str, directories))} failed:\n"
                                       f"{(done.stdout + done.stderr).strip()[-3000:]}")


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m local.aws.lambda_packages",
                                     description="Compile a `sam build` output's Python code with the runtime's interpreter.")
    parser.add_argument("--compile", type=Path, nargs="+", required=True, metavar="DIR",
                        help="directories to compile (e.g. .aws-sam/build)")
    parser.add_argument("--runtime", default=LOCK_RUNTIME, help=f"the functions' Runtime (default {LOCK_RUNTIME})")
    args = parser.parse_args(argv)
    try:
        compile_bytecode(find_interpreter(args.runtime), args.compile)
    except LambdaRuntimeUnavailable as error:
        print(error, file=__import__("sys").stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
