"""`sam build` of template.yaml succeeds without Docker on a machine with the functions' runtime's
Python (python3.13; the local Lambda runtime finds it the same way, pyenv or PATH), and packages what
the handlers import: each function's app.py and the mlops_shared layer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cfnlint.decode import cfn_yaml

from local.aws.lambda_packages import find_interpreter
from tests.infrastructure.test_security import ensure_tools

ROOT = Path(__file__).resolve().parents[2]


def test_sam_build_packages_every_function_and_the_shared_layer(tmp_path):
    sam = ensure_tools() / "sam"
    build_dir = tmp_path / "build"
    source = json.loads(json.dumps(cfn_yaml.load(str(ROOT / "template.yaml"))))
    # sam's PythonPipBuilder runs `python3.13` from PATH: put the runtime's interpreter there.
    interpreter = find_interpreter(source["Globals"]["Function"]["Runtime"])
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": f"{interpreter.parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.monotonic()
    result = subprocess.run(
        [str(sam), "build", "--template-file", str(ROOT / "template.yaml"), "--build-dir", str(build_dir),
         "--cache-dir", str(tmp_path / "cache"), "--no-cached", "--parallel"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Build Succeeded" in result.stdout
    assert time.monotonic() - started < 180

    built = json.loads(json.dumps(cfn_yaml.load(str(build_dir / "template.yaml"))))
    functions = [n for n, r in source["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) >= 7
    for name in functions:
        code_uri = built["Resources"][name]["Properties"]["CodeUri"]
        assert (build_dir / code_uri / "app.py").is_file(), name
        handler_source = ROOT / source["Resources"][name]["Properties"]["CodeUri"] / "app.py"
        assert (build_dir / code_uri / "app.py").read_bytes() == handler_source.read_bytes(), name
    layer_dir = build_dir / built["Resources"]["SharedLayer"]["Properties"]["ContentUri"]
    assert (layer_dir / "python" / "mlops_shared" / "__init__.py").is_file()

    # sam build ships source; `make sam-build` then compiles it with the runtime's Python (Lambda's
    # code dirs are read-only: otherwise every cold start compiles the handler and the layer again).
    first_code = build_dir / built["Resources"][functions[0]]["Properties"]["CodeUri"]
    assert not list(first_code.glob("__pycache__/app.*.pyc"))
    compiled = subprocess.run([sys.executable, "-m", "local.aws.lambda_packages",
                               "--compile", str(build_dir)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    tag = subprocess.run([str(interpreter), "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    for name in functions:
        code_uri = built["Resources"][name]["Properties"]["CodeUri"]
        assert (build_dir / code_uri / "__pycache__" / f"app.{tag}.pyc").is_file(), name
    assert (layer_dir / "python" / "mlops_shared" / "__pycache__" / f"__init__.{tag}.pyc").is_file()
    # The state machine definition stays a file the deploy uploads with its substitutions.
    machine = built["Resources"]["DeployStateMachine"]["Properties"]
    assert Path(machine["DefinitionUri"]).name == "deploy.asl.json"
