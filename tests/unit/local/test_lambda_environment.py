"""Each local Lambda worker gets what Lambda gives the function and no more: the runtime's
interpreter and SDK, its own requirements and layers (the AWS-managed Powertools layer built as AWS
builds it), and its MemorySize."""
from __future__ import annotations

import textwrap

import pytest

from local.aws.lambda_packages import LambdaRuntimeUnavailable, find_interpreter
from local.aws.lambda_runtime import LambdaRuntime
from local.aws.public_parameters import PublicParameters, powertools_parameter_path
from local.aws.stack.model import FunctionSpec
from tests.infrastructure.lambda_versions import lambda_lock_pins, requirements_lock_pins

# Stacks provisioned here attach AWS managed policies (SAM's AWSLambdaBasicExecutionRole).
pytestmark = pytest.mark.managed_policies

RUNTIME = "python3.13"

REPORTER = """
import sys
import boto3, botocore

def lambda_handler(event, context):
    return {"python": "%d.%d" % sys.version_info[:2], "boto3": boto3.__version__, "botocore": botocore.__version__,
            "boto3_file": boto3.__file__, "executable": sys.executable}
"""

IMPORTS = """
import importlib

def lambda_handler(event, context):
    module = importlib.import_module(event["module"])
    return {"file": module.__file__, "version": getattr(module, "__version__", getattr(module, "VERSION", None))}
"""


def _spec(tmp_path, name: str, source: str, *, memory_size: int = 256, requirements: str | None = None,
          layer_dirs: list | None = None, managed_layers: list | None = None) -> FunctionSpec:
    code = tmp_path / name
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(source))
    if requirements is not None:
        (code / "requirements.txt").write_text(requirements)
    return FunctionSpec(name, name, f"arn:aws:lambda:us-east-1:123456789012:function:{name}", code,
                        "app.lambda_handler", {}, layer_dirs or [], 30, memory_size, RUNTIME,
                        managed_layers=managed_layers or [])


def _runtime(*specs: FunctionSpec) -> LambdaRuntime:
    return LambdaRuntime({spec.name: spec for spec in specs}, "http://127.0.0.1:1")


def test_handler_runs_on_the_runtime_interpreter_with_the_runtime_sdk(tmp_path):
    runtime = _runtime(_spec(tmp_path, "reporter", REPORTER))
    try:
        result = runtime.invoke("reporter", {})
    finally:
        runtime.close()
    assert result.ok, result.payload
    pins = lambda_lock_pins()
    assert result.payload["python"] == "3.13"
    assert (result.payload["boto3"], result.payload["botocore"]) == (pins["boto3"], pins["botocore"])
    assert pins["boto3"] != requirements_lock_pins()["boto3"]  # not the project venv's SDK
    assert ".venv/" not in result.payload["executable"]


def test_a_package_the_function_does_not_ship_fails_to_import_as_on_lambda(tmp_path):
    # pandas is in the project venv (the jobs need it); no function ships it.
    spec = _spec(tmp_path, "needs-pandas", "import pandas\n\ndef lambda_handler(event, context):\n    return 1\n")
    runtime = _runtime(spec)
    try:
        result = runtime.invoke("needs-pandas", {})
    finally:
        runtime.close()
    assert result.function_error == "Unhandled"
    assert result.payload["errorType"] == "Runtime.ImportModuleError"
    assert result.payload["errorMessage"] == "Unable to import module 'app': No module named 'pandas'"


def test_requirements_of_the_function_and_of_its_layers_ship_with_it_and_nowhere_else(tmp_path):
    layer = tmp_path / "shared-layer"
    (layer / "shared_thing").mkdir(parents=True)
    (layer / "shared_thing" / "__init__.py").write_text("NAME = 'shared'\n")
    (layer / "requirements.txt").write_text("py-partiql-parser\n")
    with_requirements = _spec(tmp_path, "with-reqs", IMPORTS, requirements="# pinned by the lock\nxmltodict\n",
                              layer_dirs=[layer])
    without = _spec(tmp_path, "without-reqs", IMPORTS)
    runtime = _runtime(with_requirements, without)
    try:
        own = runtime.invoke("with-reqs", {"module": "xmltodict"})
        from_layer = runtime.invoke("with-reqs", {"module": "py_partiql_parser"})
        layer_code = runtime.invoke("with-reqs", {"module": "shared_thing"})
        elsewhere = runtime.invoke("without-reqs", {"module": "xmltodict"})
    finally:
        runtime.close()
    assert own.ok and "/deps-with-reqs-" in own.payload["file"], own.payload
    assert from_layer.ok and "/deps-shared-layer-" in from_layer.payload["file"], from_layer.payload
    assert layer_code.ok and layer_code.payload["file"].startswith(str(layer))
    assert elsewhere.payload["errorType"] == "ModuleNotFoundError"  # an import inside the handler


def test_the_managed_powertools_layer_holds_powertools_at_the_parameter_version_without_the_sdk(tmp_path):
    parameters = PublicParameters("us-east-1")
    version = requirements_lock_pins()["aws-lambda-powertools"]
    arn = parameters.resolve(powertools_parameter_path("x86_64", RUNTIME, version))
    assert arn == "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:1"
    spec = _spec(tmp_path, "powertools", IMPORTS, managed_layers=[parameters.layer(arn)])
    runtime = _runtime(spec)
    try:
        powertools = runtime.invoke("powertools", {"module": "aws_lambda_powertools.shared.version"})
        extras = runtime.invoke("powertools", {"module": "pydantic"})  # the layer is built with [all]
        sdk = runtime.invoke("powertools", {"module": "boto3"})
    finally:
        runtime.close()
    assert powertools.ok, powertools.payload
    assert powertools.payload["version"] == version
    assert "/layer-AWSLambdaPowertoolsPythonV3-python313-x86_64-" in powertools.payload["file"]
    assert extras.ok, extras.payload
    # The layer's build drops boto3: the runtime's copy answers.
    assert "/runtime-python3.13-" in sdk.payload["file"] and sdk.payload["version"] == lambda_lock_pins()["boto3"]


def test_a_handler_over_its_memory_size_is_killed_as_lambda_kills_it(tmp_path):
    source = """
    import threading, time

    def lambda_handler(event, context):
        if event.get("threads"):
            # Idle threads reserve hundreds of MB of address space but use little memory: no kill.
            workers = [threading.Thread(target=time.sleep, args=(0.5,)) for _ in range(16)]
            [w.start() for w in workers]
            [w.join() for w in workers]
            return "threads ok"
        if event.get("megabytes"):
            hoard = bytearray(event["megabytes"] * 1024 * 1024)  # zero-filled: every page resident
            time.sleep(0.2)
            return len(hoard)
        return "ok"
    """
    runtime = _runtime(_spec(tmp_path, "hungry", source, memory_size=128))
    try:
        assert runtime.invoke("hungry", {"threads": True}).payload == "threads ok"
        small = runtime.invoke("hungry", {"megabytes": 16})
        killed = runtime.invoke("hungry", {"megabytes": 400})
        after = runtime.invoke("hungry", {})
    finally:
        runtime.close()
    assert small.ok, small.payload
    assert killed.function_error == "Unhandled"
    assert killed.payload["errorType"] == "Runtime.ExitError"
    assert killed.payload["errorMessage"] == (f"RequestId: {killed.request_id} Error: Runtime exited with error: "
                                              "signal: killed")
    assert after.ok and after.payload == "ok"  # a fresh execution environment


def test_the_interpreter_is_found_without_pyenv_being_told_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("PYENV_VERSION", raising=False)
    assert find_interpreter(RUNTIME).name == "python3.13"

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    with pytest.raises(LambdaRuntimeUnavailable, match=r"Runtime python3\.13 needs a Python 3\.13 interpreter"):
        find_interpreter(RUNTIME)
    with pytest.raises(LambdaRuntimeUnavailable, match="not a Python runtime"):
        find_interpreter("nodejs22.x")


SSM_TEMPLATE = """
Parameters:
  PowertoolsLayerArn:
    Type: AWS::SSM::Parameter::Value<String>
    Default: {powertools_path}
  TeamSetting:
    Type: AWS::SSM::Parameter::Value<String>
    Default: /team/setting
Globals:
  Function:
    Runtime: python3.13
    Layers: [!Ref PowertoolsLayerArn]
Resources:
  Reader:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: reader/
      Handler: app.lambda_handler
      Environment:
        Variables:
          SETTING: !Ref TeamSetting
"""


def test_ssm_typed_parameters_resolve_public_paths_from_the_table_and_others_from_ssm(aws, tmp_path):
    import boto3

    from local.aws.stack.model import ProvisionError
    from local.aws.stack.provisioner import provision
    from local.aws.stack.template import loads_template

    (tmp_path / "reader").mkdir()
    path = powertools_parameter_path("x86_64", RUNTIME, "3.37.0")
    template = SSM_TEMPLATE.format(powertools_path=path)
    with pytest.raises(ProvisionError, match="SSM parameter /team/setting does not exist"):
        provision(loads_template(template), aws, template_dir=tmp_path)

    boto3.client("ssm").put_parameter(Name="/team/setting", Value="from-ssm", Type="String")
    stack = provision(loads_template(template), aws, template_dir=tmp_path)
    [spec] = stack.functions.values()
    assert spec.environment["SETTING"] == "from-ssm"
    [layer] = spec.managed_layers
    assert layer.arn == stack.parameters["PowertoolsLayerArn"]
    assert layer.arn.endswith(":017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:1")
    assert layer.packages == ("aws-lambda-powertools[all]==3.37.0",)
    assert "boto3" in layer.provided_by_runtime

    with pytest.raises(ProvisionError, match=r"public SSM parameter /aws/service/other/thing has no local value"):
        provision(loads_template(template.replace(path, "/aws/service/other/thing")), aws, template_dir=tmp_path)
