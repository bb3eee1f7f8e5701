"""What the functions are tested with is what they are deployed with: one runtime (template.yaml,
requirements-lambda.lock, the local runtime) and one Powertools version (requirements.lock, the
template's layer parameter, requirements-lambda.lock)."""
from __future__ import annotations

import json
import re

from cfnlint.decode import cfn_yaml

from local.aws.lambda_packages import LOCK_RUNTIME
from local.aws.public_parameters import POWERTOOLS_PATH
from tests.infrastructure.lambda_versions import (ROOT, lambda_lock_pins, lambda_lock_python_version,
                                                  requirements_lock_pins)


def _template() -> dict:
    return json.loads(json.dumps(cfn_yaml.load(str(ROOT / "template.yaml"))))


def test_the_powertools_layer_parameter_names_the_tested_powertools_for_the_functions_runtime():
    template = _template()
    function_globals = template["Globals"]["Function"]
    path = template["Parameters"]["PowertoolsLayerArn"]["Default"]
    match = POWERTOOLS_PATH.fullmatch(path)
    assert match, f"{path} is not a Powertools layer parameter path"
    tested = requirements_lock_pins()["aws-lambda-powertools"]
    assert match["version"] == tested, (
        f"template.yaml deploys Powertools {match['version']}, requirements.lock tests {tested}: change "
        f"PowertoolsLayerArn's Default and requirements-lambda.in together with requirements.in")
    assert match["runtime"] == function_globals["Runtime"]
    assert [match["arch"]] == function_globals["Architectures"]
    assert lambda_lock_pins()["aws-lambda-powertools"] == tested
    layer_requirement = re.search(r"^aws-lambda-powertools\[all\]==(\S+)$",
                                  (ROOT / "requirements-lambda.in").read_text(), re.MULTILINE)
    assert layer_requirement and layer_requirement.group(1) == tested


def test_no_function_overrides_the_runtime_or_the_layers_of_the_globals():
    functions = {name: r for name, r in _template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    for name, function in functions.items():
        assert "Runtime" not in function["Properties"], name
        assert "Layers" not in function["Properties"], name


def test_the_local_runtime_and_the_lambda_lock_are_for_the_functions_runtime():
    runtime = _template()["Globals"]["Function"]["Runtime"]
    assert LOCK_RUNTIME == runtime
    assert f"python{lambda_lock_python_version()}" == runtime
    shared = _template()["Resources"]["SharedLayer"]
    assert shared["Properties"]["CompatibleRuntimes"] == [runtime]
    assert shared["Metadata"]["BuildMethod"] == runtime


def test_the_sdk_pin_is_one_boto3_botocore_pair():
    pins = lambda_lock_pins()
    assert pins["boto3"] == pins["botocore"]
    text = (ROOT / "requirements-lambda.in").read_text()
    assert f"boto3=={pins['boto3']}\n" in text and f"botocore=={pins['botocore']}\n" in text
