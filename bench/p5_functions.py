"""P5 — each Lambda function's package size and the cold import time of its handler module.

Size: the function's directory plus the shared layer's code (`functions/shared`), as deployed
(bytes of every file but caches and tests; Powertools and boto3 come from their own layer and the
runtime, so they are not counted); the zip size is in the notes.

Cold import, as deployed: each function is laid out as Lambda gets it from `make sam-build` — its
code dir as `/var/task` and the shared layer's code under `python/`, both compiled with the runtime's
interpreter (`local.aws.lambda_packages.compile_bytecode`, as the sam-build target does), their
requirements and the Powertools layer built by the local Lambda runtime's `PackageBuilder` — and
imported by the template's runtime interpreter (python3.13 with only the runtime's SDK) with
`PYTHONDONTWRITEBYTECODE` (Lambda's code dirs are read-only: nothing compiled at import is kept). A
fresh interpreter per sample, `import app` timed inside it (interpreter start-up not counted,
everything the handler imports and does at import is), with the function's environment from
`template.yaml` (Globals + the function's variables; intrinsic functions become placeholder strings),
the variables the Lambda runtime itself sets (`LAMBDA_TASK_ROOT`, `AWS_LAMBDA_FUNCTION_NAME`,
`AWS_EXECUTION_ENV`); 5 samples. The runtime variables matter: outside Lambda, Powertools disables
its Tracer (so X-Ray's patching is not paid) while the X-Ray SDK builds an X-Ray API client for its
sampler at import (which on Lambda it never does).

The measured value is the function's own cost beyond `import boto3` (what any Python Lambda that
calls AWS pays; boto3 is part of the runtime): the CPU time of `import app` in a fresh interpreter
that imported boto3 before its clock started, median of the samples. An import is single-threaded
CPU work, so on an idle machine its CPU time is its wall time, and on this shared machine the CPU
time is the figure other processes do not move (the wall clock is in the notes). `import app` and
`import boto3` alone, each in a fresh interpreter, are measured in the same rounds and given in the
notes with their difference (the earlier way of measuring: two ~250 ms numbers whose difference
swung by ±50 ms between runs, once below zero). The notes also name the packages that take longest to import after boto3 (`python -X
importtime`, each package's least time of 3 runs).
"""
from __future__ import annotations

import re
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.harness import REPO_ROOT, VALUE_AT_MOST, Row, Target
from bench.support import local_aws_env, median

KEY = "P5"
SIZE_TARGET = Target(VALUE_AT_MOST, 1.0)  # MB
IMPORT_TARGET = Target(VALUE_AT_MOST, 80.0)  # ms beyond `import boto3`
SAMPLES = 5
FUNCTIONS_DIR = REPO_ROOT / "functions"
SHARED_DIR = FUNCTIONS_DIR / "shared"
EXCLUDED_PARTS = {"__pycache__", "tests", ".pytest_cache"}
BASELINE_MODULE = "boto3"
IMPORT_PROBE = (
    "import sys, time\n"
    "{before}"
    "started, started_cpu = time.perf_counter(), time.process_time()\n"
    "import {module}\n"
    "print(repr((time.perf_counter() - started) * 1000), repr((time.process_time() - started_cpu) * 1000))\n"
)


def package_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and not (EXCLUDED_PARTS & set(p.relative_to(directory).parts)) and p.suffix != ".pyc"
    )


def package_size(function_dir: Path, shared_dir: Path = SHARED_DIR) -> tuple[int, int]:
    """(unzipped bytes, zipped bytes) of the function's code plus the shared layer's code."""
    files = [(p, p.relative_to(function_dir)) for p in package_files(function_dir)]
    files += [(p, Path("python") / p.relative_to(shared_dir)) for p in package_files(shared_dir)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            archive.write(path, str(name))
    return sum(p.stat().st_size for p, _ in files), len(buffer.getvalue())


def template_environments(template: Path) -> dict[str, dict[str, str]]:
    """CodeUri directory name -> environment variables (Globals + function). Intrinsics are
    resolved as far as a local run can: `!Ref` of a parameter gives its default, `!If` its first
    non-empty branch, anything else a placeholder string."""
    import yaml

    class Intrinsic:
        def __init__(self, name: str, value: Any):
            self.name, self.value = name, value

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader: Any, tag_suffix: str, node: Any) -> Intrinsic:
        if isinstance(node, yaml.SequenceNode):
            value: Any = loader.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return Intrinsic(tag_suffix, value)

    Loader.add_multi_constructor("!", intrinsic)
    document = yaml.load(template.read_text(encoding="utf-8"), Loader=Loader)
    parameters = document.get("Parameters") or {}

    def resolve(value: Any) -> str:
        if not isinstance(value, Intrinsic):
            return str(value)
        if value.name == "Ref" and isinstance(value.value, str) and "Default" in parameters.get(value.value, {}):
            return str(parameters[value.value]["Default"])
        if value.name == "If" and isinstance(value.value, list) and len(value.value) == 3:
            # The first branch, unless it is empty (an optional parameter left at its default).
            return resolve(value.value[1]) or resolve(value.value[2])
        if value.name == "Sub" and isinstance(value.value, str):
            # The literal text with each ${...} a placeholder: a value's shape (s3://..., arn:...)
            # stays what the function checks at import.
            return re.sub(r"\$\{[^}]+\}", "placeholder", value.value)
        return f"placeholder-{value.name.lower()}"

    globals_env = ((document.get("Globals") or {}).get("Function") or {}).get("Environment", {}).get("Variables", {})
    environments: dict[str, dict[str, str]] = {}
    for resource in (document.get("Resources") or {}).values():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties") or {}
        code_uri = str(properties.get("CodeUri", "")).rstrip("/")
        if not code_uri.startswith("functions/"):
            continue
        variables = dict(globals_env)
        variables.update((properties.get("Environment") or {}).get("Variables") or {})
        environments[code_uri.split("/", 1)[1]] = {k: resolve(v) for k, v in variables.items()}
    return environments


def probe_environment(function_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(local_aws_env())
    env.update(function_env)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def lambda_runtime_environment(function_name: str, task_root: Path) -> dict[str, str]:
    """The variables the Lambda runtime sets that change what the handler does at import: with
    `LAMBDA_TASK_ROOT` Powertools' Tracer is active and the X-Ray SDK takes its Lambda set-up."""
    return {
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
    }


def import_probe(module: str, cwd: Path, env: dict[str, str], interpreter: Path | str = sys.executable,
                 path: Sequence[Path] | None = None, after: str | None = None) -> tuple[float, float]:
    """(wall ms, CPU ms) to import `module` in a fresh `interpreter`, `after` (a module) already
    imported when the clock starts; `path` goes first on sys.path (default: `cwd` and the shared
    layer's source; None of it when the env's PYTHONPATH says it)."""
    path = [cwd, SHARED_DIR] if path is None else path
    done = subprocess.run(
        [str(interpreter), "-c", f"import sys; sys.path[:0] = {[str(p) for p in path]!r}\n"
         + IMPORT_PROBE.format(module=module, before=f"import {after}\n" if after else "")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import {module} in {cwd} failed: {done.stderr.strip().splitlines()[-1:]}")
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def paired_import_times(module: str, cwd: Path, env: dict[str, str], samples: int = SAMPLES,
                        interpreter: Path | str = sys.executable, path: Sequence[Path] | None = None,
                        ) -> tuple[list[tuple[float, float]], list[tuple[float, float]], list[tuple[float, float]]]:
    """(baseline samples, `module` samples, `module` samples beyond the baseline), each (wall ms,
    CPU ms), one of each kind per round so a burst of load on the machine hits all three. The third
    kind imports `module` in a process that has imported the baseline before its clock starts: its
    own cost beyond the baseline, measured directly rather than as the difference of two ~250 ms
    numbers from two processes (that difference swung by ±50 ms between runs)."""
    baseline, ours, beyond = [], [], []
    for _ in range(samples):
        baseline.append(import_probe(BASELINE_MODULE, cwd, env, interpreter, path))
        ours.append(import_probe(module, cwd, env, interpreter, path))
        beyond.append(import_probe(module, cwd, env, interpreter, path, after=BASELINE_MODULE))
    return baseline, ours, beyond


def heaviest_imports(module: str, cwd: Path, env: dict[str, str], top: int = 4, runs: int = 3,
                     interpreter: Path | str = sys.executable,
                     path: Sequence[Path] | None = None) -> list[tuple[str, float]]:
    """The `top` top-level packages by import time (ms, summed self time of their modules) that
    importing `module` adds to the baseline's; each package's least time over `runs` runs of
    `python -X importtime`, so one burst of load on the machine does not decide the list."""
    least: dict[str, float] = {}
    path = [cwd, SHARED_DIR] if path is None else path
    for _ in range(runs):
        done = subprocess.run(
            [str(interpreter), "-X", "importtime", "-c",
             f"import sys; sys.path[:0] = {[str(p) for p in path]!r}; import {BASELINE_MODULE}; import {module}"],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        )
        for package, ms in parse_importtime(imports_after(done.stderr, BASELINE_MODULE), top=None):
            least[package] = min(ms, least.get(package, ms))
    return sorted(least.items(), key=lambda item: -item[1])[:top]


def imports_after(stderr: str, module: str) -> str:
    """The `-X importtime` lines after the one that finishes the top-level import of `module`."""
    lines = stderr.splitlines()
    ends = [i for i, line in enumerate(lines)
            if line.startswith("import time:") and line.split("|")[-1].rstrip() == f" {module}"]
    return "\n".join(lines[ends[-1] + 1:] if ends else lines)


def parse_importtime(stderr: str, top: int | None = 4) -> list[tuple[str, float]]:
    """`import time: self | cumulative | name` lines → the `top` top-level packages (all with None) by
    summed self time in ms."""
    per_package: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".", 1)[0]
        per_package[package] = per_package.get(package, 0.0) + int(parts[0]) / 1000
    return sorted(per_package.items(), key=lambda item: -item[1])[:top]


def template_runtime(template: Path) -> tuple[str, Any]:
    """(the functions' Runtime, the Powertools layer as `local.aws.public_parameters` resolves it)."""
    from cfnlint.decode import cfn_yaml

    from local.aws.public_parameters import PublicParameters

    document = json.loads(json.dumps(cfn_yaml.load(str(template))))
    parameters = PublicParameters("us-east-1")
    layer = parameters.layer(parameters.resolve(document["Parameters"]["PowertoolsLayerArn"]["Default"]))
    return document["Globals"]["Function"]["Runtime"], layer


def deployed_package(function_dir: Path, workdir: Path, runtime: str, managed_layers: Sequence[Any],
                     builder: Any = None) -> tuple[Path, Path, list[Path]]:
    """The function as `make sam-build` ships it: (interpreter, task root, import path). The code
    dir and the shared layer's code are copied (without caches and tests) and compiled with the
    runtime's interpreter; requirements and managed layers come from the local runtime's builds."""
    from local.aws.lambda_packages import PackageBuilder, compile_bytecode

    builder = builder or PackageBuilder()
    ignore = shutil.ignore_patterns(*EXCLUDED_PARTS, "*.pyc")
    task = workdir / function_dir.name / "task"
    layer = workdir / function_dir.name / "layer" / "python"
    shutil.rmtree(task.parent, ignore_errors=True)
    shutil.copytree(function_dir, task, ignore=ignore)
    shutil.copytree(SHARED_DIR, layer, ignore=ignore)
    package = builder.package(runtime, task, [layer], managed_layers)
    compile_bytecode(package.interpreter, [task, layer])
    return package.interpreter, task, list(package.python_path)


def run(quick: bool, workdir: Path, report: Callable[[Row], None]) -> None:
    from local.aws.lambda_packages import LambdaRuntimeUnavailable

    environments = template_environments(REPO_ROOT / "template.yaml")
    runtime, powertools = template_runtime(REPO_ROOT / "template.yaml")
    functions = sorted(p for p in FUNCTIONS_DIR.iterdir() if (p / "app.py").is_file())
    samples = 3 if quick else SAMPLES
    for function_dir in functions:
        name = function_dir.name
        unzipped, zipped = package_size(function_dir)
        report(Row(KEY, f"{name}: package size", unzipped / 1e6, None, "MB", SIZE_TARGET,
                   notes=f"function + shared layer code; {zipped / 1e3:.0f} kB zipped"))
        measure = f"{name}: cold import of app beyond import boto3, {runtime}, CPU (median of {samples})"
        try:
            interpreter, task, path = deployed_package(function_dir, workdir / "deployed", runtime, [powertools])
            env = probe_environment({**environments.get(name, {}), **lambda_runtime_environment(name, task),
                                     "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}"})
            baseline, ours, beyond = paired_import_times("app", task, env, samples, interpreter, path)
            heavy = ", ".join(f"{module} {ms:.0f} ms"
                              for module, ms in heaviest_imports("app", task, env, interpreter=interpreter, path=path))
        except (RuntimeError, LambdaRuntimeUnavailable, subprocess.TimeoutExpired) as error:
            report(Row(KEY, measure, None, None, "ms", IMPORT_TARGET,
                       notes=f"not measured: {' '.join(str(error).split())[:200]}"))
            continue
        beyond_wall = median([s[0] for s in beyond])
        beyond_cpu = median([s[1] for s in beyond])
        difference_cpu = median([o[1] - b[1] for o, b in zip(ours, baseline)])
        report(Row(KEY, measure, beyond_cpu, None, "ms", IMPORT_TARGET,
                   notes=f"CPU time of import app with {BASELINE_MODULE} already imported; wall clock {beyond_wall:.0f} ms; "
                         f"in separate processes import app {median([o[0] for o in ours]):.0f} ms in all, "
                         f"import {BASELINE_MODULE} {median([b[0] for b in baseline]):.0f} ms (CPU difference "
                         f"{difference_cpu:.0f} ms); "
                         f"compiled bytecode as make sam-build ships it; heaviest after {BASELINE_MODULE}: {heavy}",
                   details={"samples_ms": [o[0] for o in ours], "baseline_samples_ms": [b[0] for b in baseline],
                            "cpu_samples_ms": [o[1] for o in ours],
                            "baseline_cpu_samples_ms": [b[1] for b in baseline],
                            "beyond_samples_ms": [s[0] for s in beyond], "beyond_cpu_samples_ms": [s[1] for s in beyond],
                            "beyond_baseline_ms": beyond_wall, "beyond_baseline_cpu_ms": beyond_cpu,
                            "difference_cpu_ms": difference_cpu}))
