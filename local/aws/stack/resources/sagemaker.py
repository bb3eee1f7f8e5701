"""AWS::SageMaker::ModelPackageGroup and AWS::SageMaker::Pipeline (definition from Metadata.Mlops)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from local.aws.stack.intrinsics import substitute
from local.aws.stack.model import ProvisionError

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


# -- SageMaker ----------------------------------------------------------------------------
def model_package_group(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("ModelPackageGroupName") or p.physical_name(logical_id, 63)
    kwargs = {"ModelPackageGroupName": name}
    if props.get("ModelPackageGroupDescription"):
        kwargs["ModelPackageGroupDescription"] = props["ModelPackageGroupDescription"]
    arn = p.client("sagemaker").create_model_package_group(**kwargs)["ModelPackageGroupArn"]
    p.add(logical_id, definition["Type"], arn, ModelPackageGroupArn=arn, Arn=arn,
          ModelPackageGroupName=name, Name=name)


def pipeline(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("PipelineName") or p.physical_name(logical_id, 256)
    mlops_metadata = ((definition.get("Metadata") or {}).get("Mlops")) or {}
    if mlops_metadata.get("DefinitionFile"):
        text = p.relative_path(mlops_metadata["DefinitionFile"]).read_text()
        substitutions = p.resolver.resolve(mlops_metadata.get("Substitutions") or {})
        p.stack.pipeline_substitutions[logical_id] = {k: str(v) for k, v in substitutions.items()}
        text = substitute(text, substitutions)
    else:
        body = (props.get("PipelineDefinition") or {}).get("PipelineDefinitionBody")
        if body is None:
            raise ProvisionError(f"{logical_id}: no Metadata.Mlops.DefinitionFile and no PipelineDefinitionBody")
        text = body if isinstance(body, str) else json.dumps(body)
    json.loads(text)  # a broken definition fails here, not at the first execution
    kwargs = {"PipelineName": name, "PipelineDefinition": text, "RoleArn": props["RoleArn"]}
    for key in ("PipelineDescription", "PipelineDisplayName"):
        if props.get(key):
            kwargs[key] = props[key]
    arn = p.client("sagemaker").create_pipeline(**kwargs)["PipelineArn"]
    p.add(logical_id, definition["Type"], name, PipelineName=name, Arn=arn, PipelineArn=arn, Name=name)
