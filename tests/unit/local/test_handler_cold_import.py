"""What each handler loads at cold start, imported the way Lambda imports it: a fresh interpreter of
the functions' runtime with what the function ships (the local Lambda runtime's package: its code,
the shared layer, the Powertools layer, the runtime's SDK), the function's environment from
template.yaml and the runtime's own variables (so Powertools' Tracer is active, as with
`Tracing: Active`). Guards the import-time choices the handlers make on purpose."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

from bench.p5_functions import SHARED_DIR, lambda_runtime_environment, probe_environment, template_environments
from local.aws.lambda_packages import FunctionPackage, PackageBuilder
from local.aws.public_parameters import PublicParameters

ROOT = Path(__file__).resolve().parents[3]
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
TRACED = {"approval_api", "notify_approval", "pipeline_status", "record_lineage", "start_pipeline", "start_scoring"}
# The API resolver of approval_api is built on Powertools' event data classes; the others read the
# plain event dict.
USES_EVENT_DATA_CLASSES = {"approval_api"}
# Powertools' parameters utility where every invocation reads a secret (the approval API reads one
# only for Slack's button callbacks, and loads the utility there).
USES_PARAMETERS = {"notify_approval"}
# What each handler reads of the pipeline's artifact contracts (mlops_shared.artifacts loads each
# document's dataclasses when first named): the approval functions show the evaluation report, the
# lineage recorders (record_lineage, deploy_notify through mlops_shared.lineage), intake and the drift
# response read or write dataset references; no handler reads the jobs' own documents.
READS_ARTIFACTS = {"approval_api": {"evaluation"}, "notify_approval": {"evaluation"},
                   "deploy_smoke_test": {"evaluation"}, "record_lineage": {"dataset"}, "deploy_notify": {"dataset"},
                   "start_pipeline": {"dataset"}, "drift_alarm": {"dataset"}}
# The handlers whose logic needs the settings classes of mlops_shared.config; the others read their
# environment with mlops_shared.environment and take the tracer's patch list and the metrics
# namespace from mlops_shared.observability.
USES_CONFIG = {"drift_alarm", "pipeline_status", "start_pipeline"}

FACTS = """
import json, sys
import app
facts = {"loaded": sorted(m for m in ("requests", "sqlite3", "email.mime",
                                      "aws_lambda_powertools.utilities.data_classes",
                                      "aws_lambda_powertools.utilities.idempotency",
                                      "aws_lambda_powertools.utilities.parameters",
                                      "aws_lambda_powertools.utilities.typing",
                                      "mlops_shared.config", "mlops_shared._artifacts_evaluation",
                                      "mlops_shared._artifacts_dataset", "mlops_shared._artifacts_jobs")
                          if m in sys.modules)}
tracer = getattr(app, "tracer", None)
if tracer is not None:
    from aws_xray_sdk.core import patcher
    facts["tracing_enabled"] = not tracer.disabled
    facts["patched"] = sorted(patcher._PATCHED_MODULES)
store = getattr(app, "persistence_store", None)
if store is not None:
    import boto3
    # A store made on first use (a cached factory) is not made by the import.
    lazy = hasattr(store, "cache_info")
    facts["idempotency_store_made_at_import"] = store.cache_info().currsize > 0 if lazy else True
    store = store() if lazy else store
    # A client keeps its session's data loader: the same object means the same session.
    facts["idempotency_client_on_default_session"] = (
        boto3.DEFAULT_SESSION is not None
        and store.client._loader is boto3.DEFAULT_SESSION._session.get_component("data_loader"))
    facts["idempotency_table"] = store.table_name
print(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def environments() -> dict[str, dict[str, str]]:
    return template_environments(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def packages():
    """name -> (runtime, the function's package as the local Lambda runtime builds it)."""
    template = json.loads(json.dumps(cfn_yaml.load(str(ROOT / "template.yaml"))))
    runtime = template["Globals"]["Function"]["Runtime"]
    parameters = PublicParameters("us-east-1")
    powertools = parameters.layer(parameters.resolve(template["Parameters"]["PowertoolsLayerArn"]["Default"]))
    builder = PackageBuilder()
    return {name: (runtime, builder.package(runtime, ROOT / "functions" / name, [SHARED_DIR], [powertools]))
            for name in FUNCTIONS}


def cold_import_facts(name: str, environments: dict[str, dict[str, str]],
                      packages: dict[str, tuple[str, FunctionPackage]]) -> dict:
    function_dir = ROOT / "functions" / name
    runtime, package = packages[name]
    env = probe_environment({**environments.get(name, {}), **lambda_runtime_environment(name, function_dir),
                             "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
                             "PYTHONPATH": os.pathsep.join(str(p) for p in package.python_path)})
    done = subprocess.run(
        [str(package.interpreter), "-c", FACTS],
        cwd=function_dir, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_cold_import_loads_only_what_the_handler_uses(name, environments, packages):
    facts = cold_import_facts(name, environments, packages)
    # X-Ray's default patch list would import these just to patch them; no handler uses them.
    assert "requests" not in facts["loaded"]
    assert "sqlite3" not in facts["loaded"]
    # MIME building is imported when an email is built, never by a handler that only renders pages.
    assert "email.mime" not in facts["loaded"]
    assert ("aws_lambda_powertools.utilities.data_classes" in facts["loaded"]) == (name in USES_EVENT_DATA_CLASSES)
    assert ("aws_lambda_powertools.utilities.parameters" in facts["loaded"]) == (name in USES_PARAMETERS)
    # LambdaContext is an annotation only.
    assert "aws_lambda_powertools.utilities.typing" not in facts["loaded"]
    assert ("mlops_shared.config" in facts["loaded"]) == (name in USES_CONFIG)
    loaded_artifacts = {m.rsplit("_", 1)[1] for m in facts["loaded"] if m.startswith("mlops_shared._artifacts_")}
    assert loaded_artifacts == READS_ARTIFACTS.get(name, set())
    # start_scoring's end-of-execution notifications never use idempotency: loaded on the first drop.
    assert ("aws_lambda_powertools.utilities.idempotency" in facts["loaded"]) == (name == "start_pipeline")
    if name in TRACED:
        assert facts["tracing_enabled"] is True
        assert facts["patched"] == ["botocore"]
    else:
        assert "tracing_enabled" not in facts
    if name in ("start_pipeline", "start_scoring"):
        # start_pipeline's every invocation uses the table: its store is made at init; start_scoring's
        # notifications never do: its store is made on the first drop.
        assert facts["idempotency_store_made_at_import"] is (name == "start_pipeline")
        assert facts["idempotency_client_on_default_session"] is True
        assert facts["idempotency_table"] == environments[name]["IDEMPOTENCY_TABLE"]


SOURCE_MODULES = """
import importlib.util, json, sys
import app
roots = sys.argv[1:]
# (source, the bytecode file the runtime's Python would load it from)
print(json.dumps(sorted((m.__file__, importlib.util.cache_from_source(m.__file__)) for m in list(sys.modules.values())
                        if getattr(m, "__file__", None) and m.__file__.endswith(".py")
                        and any(m.__file__.startswith(r) for r in roots))))
"""


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_deployed_handler_imports_its_own_code_from_bytecode(name, environments, tmp_path):
    """As `make sam-build` ships it (bench P5 measures this layout): every module of the function's
    code and of the shared layer that the handler imports is loaded from its compiled bytecode, not
    compiled from source at each cold start (Lambda's code directories are read-only)."""
    from bench.p5_functions import deployed_package, template_runtime

    runtime, powertools = template_runtime(ROOT / "template.yaml")
    interpreter, task, path = deployed_package(ROOT / "functions" / name, tmp_path, runtime, [powertools])
    layer = task.parent / "layer" / "python"
    env = probe_environment({**environments.get(name, {}), **lambda_runtime_environment(name, task),
                             "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
                             "PYTHONPATH": os.pathsep.join(str(p) for p in path)})
    done = subprocess.run([str(interpreter), "-v", "-c", SOURCE_MODULES, str(task), str(layer)],
                          cwd=task, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    own = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(f.endswith("/app.py") for f, _ in own) and any("/mlops_shared/" in f for f, _ in own)
    # `python -v` names the bytecode file each module's code object comes from.
    from_bytecode = {line.split("'")[1] for line in done.stderr.splitlines() if line.startswith("# code object from ")}
    compiled_at_import = [f for f, cached in own if cached not in from_bytecode]
    assert compiled_at_import == []
