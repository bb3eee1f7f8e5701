"""Amazon SageMaker operations (control plane, runtime, Feature Store runtime).

SageMaker builds the ARN of a resource named in a request with the name in lower case, and IAM
matches resources case-sensitively, so a policy naming `endpoint/MyEndpoint` never matches. Seen
for endpoints (InvokeEndpoint refusals name `endpoint/<lower>`), pipelines (execution events carry
`pipeline/<lower>`), tuning jobs (ListHyperParameterTuningJobs returns lower-case ARNs) and jobs,
models and endpoint configs; assumed for experiments, trials, trial components and feature groups
(moto lower-cases feature groups too). Model packages and model package groups keep their case
(a DescribeModelPackage refusal names `model-package/modelPackageGroupTurbine/1`). An ARN given in
the request is used as given.

Tag-on-create: a Create call with `Tags` also needs `sagemaker:AddTags` on the new resource, with
`sagemaker:TaggingAction` naming the create operation. A role member (`RoleArn`,
`ExecutionRoleArn`) is an implicit `iam:PassRole` with `iam:PassedToService = sagemaker.amazonaws.com`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from local.aws.strict import call_sites as at
from local.aws.strict.iam_policy import AuthorizationRequest
from local.aws.strict.operation_table import Params, Scope, operation

SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
CASE_KEPT = {"model-package", "model-package-group"}
# resource type -> the name placeholder of its ARN format
NAME_FIELD = {
    "endpoint": "EndpointName", "endpoint-config": "EndpointConfigName", "model": "ModelName",
    "pipeline": "PipelineName", "processing-job": "ProcessingJobName", "training-job": "TrainingJobName",
    "hyper-parameter-tuning-job": "HyperParameterTuningJobName", "feature-group": "FeatureGroupName",
    "experiment": "ExperimentName", "experiment-trial": "TrialName",
    "experiment-trial-component": "TrialComponentName", "model-package": "ModelPackageName",
    "model-package-group": "ModelPackageGroupName",
}


def arn_for(scope: Scope, resource_type: str, name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    name = name_or_arn if resource_type in CASE_KEPT else name_or_arn.lower()
    return scope.arn("sagemaker", resource_type, **{NAME_FIELD[resource_type]: name})


def on(scope: Scope, action: str, resource_type: str, name_or_arn: str,
       context: dict[str, Any] | None = None) -> AuthorizationRequest:
    return scope.request(action, arn_for(scope, resource_type, name_or_arn), context, resource_type=resource_type)


def pass_role(scope: Scope, role_arn: str | None, service: str = SAGEMAKER_SERVICE) -> list[AuthorizationRequest]:
    if not role_arn:
        return []
    return [scope.request("iam:PassRole", role_arn, {"iam:PassedToService": service}, resource_type="role")]


def tag_context(tags: Iterable[dict] | None) -> dict[str, Any]:
    tags = list(tags or [])
    if not tags:
        return {}
    context: dict[str, Any] = {"aws:TagKeys": [t["Key"] for t in tags]}
    context.update({f"aws:RequestTag/{t['Key']}": t.get("Value", "") for t in tags})
    return context


def tagged_create(scope: Scope, action: str, resource_type: str, name: str, tags: Iterable[dict] | None,
                  context: dict[str, Any] | None = None) -> list[AuthorizationRequest]:
    """The create request (with the tag keys in its context) and, for tags, sagemaker:AddTags."""
    tags = list(tags or [])
    requests = [on(scope, action, resource_type, name, {**tag_context(tags), **(context or {})})]
    if tags:
        requests.append(on(scope, "sagemaker:AddTags", resource_type, name,
                           {**tag_context(tags), "sagemaker:TaggingAction": action.partition(":")[2]}))
    return requests


def _simple(service: str, name: str, action: str, resource_type: str, member: str, callers):
    @operation(service, name, [action], callers)
    def build(p: Params, scope: Scope):
        return [on(scope, action, resource_type, p[member])]
    return build


# -- pipelines ----------------------------------------------------------------------------------
@operation("sagemaker", "StartPipelineExecution", ["sagemaker:StartPipelineExecution"],
           (at.INTAKE, at.SCORING, at.CLI, at.DRIFT_MONITOR_SCHEDULE, at.DRIFT_ALARM_RETRAIN))
def start_pipeline_execution(p: Params, scope: Scope):
    return [on(scope, "sagemaker:StartPipelineExecution", "pipeline", p["PipelineName"])]


for _op, _action, _callers in (
    ("DescribePipelineExecution", "sagemaker:DescribePipelineExecution", (at.SCORING, at.CLI, at.CLOUD, at.CONSOLE)),
    ("ListPipelineExecutionSteps", "sagemaker:ListPipelineExecutionSteps",
     (at.PIPELINE_STATUS, at.RECORD_LINEAGE, at.CLI, at.CONSOLE)),
    ("ListPipelineParametersForExecution", "sagemaker:ListPipelineParametersForExecution", (at.SCORING, at.CLI)),
    ("DescribePipelineDefinitionForExecution", "sagemaker:DescribePipelineDefinitionForExecution",
     (at.CLI, at.CONSOLE)),
):
    # Execution ARNs always come from SageMaker itself, so they are used as given.
    def _execution(p: Params, scope: Scope, _action=_action):
        return [scope.request(_action, p["PipelineExecutionArn"], resource_type="pipeline-execution")]
    operation("sagemaker", _op, [_action], _callers)(_execution)

_simple("sagemaker", "ListPipelineExecutions", "sagemaker:ListPipelineExecutions", "pipeline", "PipelineName",
        (at.CLI, at.CLOUD, at.CONSOLE))
_simple("sagemaker", "DescribePipeline", "sagemaker:DescribePipeline", "pipeline", "PipelineName",
        (at.EXECUTOR_INTERNAL,))


@operation("sagemaker", "CreatePipeline", ["sagemaker:CreatePipeline", "sagemaker:AddTags", "iam:PassRole"],
           (at.PROVISION,))
def create_pipeline(p: Params, scope: Scope):
    return [*tagged_create(scope, "sagemaker:CreatePipeline", "pipeline", p["PipelineName"], p.get("Tags")),
            *pass_role(scope, p.get("RoleArn"))]


# -- what SageMaker Pipelines does with the pipeline execution role ------------------------------
@operation("sagemaker", "CreateProcessingJob", ["sagemaker:CreateProcessingJob", "sagemaker:AddTags", "iam:PassRole"],
           (at.PIPELINES,))
def create_processing_job(p: Params, scope: Scope):
    instance_type = ((p.get("ProcessingResources") or {}).get("ClusterConfig") or {}).get("InstanceType")
    context = {"sagemaker:InstanceTypes": [instance_type]} if instance_type else {}
    return [*tagged_create(scope, "sagemaker:CreateProcessingJob", "processing-job", p["ProcessingJobName"],
                           p.get("Tags"), context),
            *pass_role(scope, p.get("RoleArn"))]


@operation("sagemaker", "CreateHyperParameterTuningJob",
           ["sagemaker:CreateHyperParameterTuningJob", "sagemaker:AddTags", "iam:PassRole"], (at.PIPELINES,))
def create_hyper_parameter_tuning_job(p: Params, scope: Scope):
    definitions = [p["TrainingJobDefinition"]] if p.get("TrainingJobDefinition") else []
    definitions += list(p.get("TrainingJobDefinitions") or [])
    roles = sorted({d["RoleArn"] for d in definitions if d.get("RoleArn")})
    return [*tagged_create(scope, "sagemaker:CreateHyperParameterTuningJob", "hyper-parameter-tuning-job",
                           p["HyperParameterTuningJobName"], p.get("Tags")),
            *(request for role in roles for request in pass_role(scope, role))]


_simple("sagemaker", "DescribeProcessingJob", "sagemaker:DescribeProcessingJob", "processing-job",
        "ProcessingJobName", (at.PIPELINES, at.RECORD_LINEAGE))
_simple("sagemaker", "DescribeHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
        "hyper-parameter-tuning-job", "HyperParameterTuningJobName", (at.PIPELINES, at.RECORD_LINEAGE))
_simple("sagemaker", "ListTrainingJobsForHyperParameterTuningJob",
        "sagemaker:ListTrainingJobsForHyperParameterTuningJob", "hyper-parameter-tuning-job",
        "HyperParameterTuningJobName", (at.PIPELINES,))


# -- experiments (PipelineExperimentConfig; jobs/train.py) ---------------------------------------
@operation("sagemaker", "CreateExperiment", ["sagemaker:CreateExperiment", "sagemaker:AddTags"], (at.PIPELINES, at.TRAIN))
def create_experiment(p: Params, scope: Scope):
    return tagged_create(scope, "sagemaker:CreateExperiment", "experiment", p["ExperimentName"], p.get("Tags"))


@operation("sagemaker", "CreateTrial", ["sagemaker:CreateTrial", "sagemaker:AddTags"], (at.PIPELINES, at.TRAIN))
def create_trial(p: Params, scope: Scope):
    return [*tagged_create(scope, "sagemaker:CreateTrial", "experiment-trial", p["TrialName"], p.get("Tags")),
            on(scope, "sagemaker:CreateTrial", "experiment", p["ExperimentName"])]


@operation("sagemaker", "CreateTrialComponent", ["sagemaker:CreateTrialComponent", "sagemaker:AddTags"], (at.TRAIN,))
def create_trial_component(p: Params, scope: Scope):
    return tagged_create(scope, "sagemaker:CreateTrialComponent", "experiment-trial-component",
                         p["TrialComponentName"], p.get("Tags"))


@operation("sagemaker", "AssociateTrialComponent", ["sagemaker:AssociateTrialComponent"], (at.PIPELINES, at.TRAIN))
def associate_trial_component(p: Params, scope: Scope):
    return [on(scope, "sagemaker:AssociateTrialComponent", "experiment-trial", p["TrialName"]),
            on(scope, "sagemaker:AssociateTrialComponent", "experiment-trial-component", p["TrialComponentName"])]


# -- model registry -----------------------------------------------------------------------------
def _metadata_context(properties: dict | None, prefix: str = "sagemaker:CustomerMetadataProperties/") -> dict:
    return {f"{prefix}{key}": value for key, value in (properties or {}).items()}


@operation("sagemaker", "CreateModelPackageGroup", ["sagemaker:CreateModelPackageGroup", "sagemaker:AddTags"],
           (at.PROVISION,))
def create_model_package_group(p: Params, scope: Scope):
    return tagged_create(scope, "sagemaker:CreateModelPackageGroup", "model-package-group",
                         p["ModelPackageGroupName"], p.get("Tags"))


@operation("sagemaker", "CreateModelPackage", ["sagemaker:CreateModelPackage", "sagemaker:AddTags"], (at.PIPELINES,))
def create_model_package(p: Params, scope: Scope):
    context = _metadata_context(p.get("CustomerMetadataProperties"))
    if p.get("ModelApprovalStatus"):
        context["sagemaker:ModelApprovalStatus"] = p["ModelApprovalStatus"]
    # A versioned package (in a group) is authorized on its group: its own ARN needs the version
    # SageMaker has not assigned yet. An unversioned one is authorized on its name.
    if p.get("ModelPackageGroupName"):
        return tagged_create(scope, "sagemaker:CreateModelPackage", "model-package-group", p["ModelPackageGroupName"],
                             p.get("Tags"), context)
    return tagged_create(scope, "sagemaker:CreateModelPackage", "model-package", p["ModelPackageName"], p.get("Tags"),
                         context)


_simple("sagemaker", "DescribeModelPackage", "sagemaker:DescribeModelPackage", "model-package", "ModelPackageName",
        (at.NOTIFY_APPROVAL, at.APPROVAL_API, at.DEPLOY_PREPARE, at.SMOKE_TEST, at.EVALUATE, at.DRIFT, at.SCORING, at.CLI,
         at.RECORD_LINEAGE, at.CONSOLE, at.ENDPOINTS_INTERNAL, at.EVENT_DISPATCH, at.DRIFT_ALARM_RETRAIN))


@operation("sagemaker", "UpdateModelPackage", ["sagemaker:UpdateModelPackage"], (at.APPROVAL_API,))
def update_model_package(p: Params, scope: Scope):
    context = _metadata_context(p.get("CustomerMetadataProperties"))
    if p.get("ModelApprovalStatus"):
        context["sagemaker:ModelApprovalStatus"] = p["ModelApprovalStatus"]
    if p.get("CustomerMetadataPropertiesToRemove"):
        context["sagemaker:CustomerMetadataPropertiesToRemove"] = list(p["CustomerMetadataPropertiesToRemove"])
    return [on(scope, "sagemaker:UpdateModelPackage", "model-package", p["ModelPackageArn"], context)]


@operation("sagemaker", "ListModelPackages", ["sagemaker:ListModelPackages"], (at.DEPLOY_PREPARE, at.EVALUATE, at.SCORING, at.CLI,
                                                                                     at.CONSOLE))
def list_model_packages(p: Params, scope: Scope):
    # SageMaker's List- calls take no resource-level permissions: the request is on "*".
    return [scope.request("sagemaker:ListModelPackages")]


# -- hosting ------------------------------------------------------------------------------------
_simple("sagemaker", "DescribeEndpoint", "sagemaker:DescribeEndpoint", "endpoint", "EndpointName",
        (at.DEPLOY_PREPARE, at.DEPLOY_NOTIFY, at.STATE_MACHINE, at.DRIFT, at.CLI, at.CONSOLE, at.DRIFT_ALARM_RETRAIN, at.SCORING))
_simple("sagemaker", "DescribeEndpointConfig", "sagemaker:DescribeEndpointConfig", "endpoint-config",
        "EndpointConfigName", (at.DEPLOY_PREPARE, at.DRIFT, at.CLI, at.ENDPOINTS_INTERNAL, at.DRIFT_ALARM_RETRAIN, at.SCORING))
_simple("sagemaker", "DescribeModel", "sagemaker:DescribeModel", "model", "ModelName",
        (at.DEPLOY_PREPARE, at.DRIFT, at.CLI, at.ENDPOINTS_INTERNAL, at.DRIFT_ALARM_RETRAIN, at.SCORING))
_simple("sagemaker", "DeleteEndpoint", "sagemaker:DeleteEndpoint", "endpoint", "EndpointName",
        (at.DEPLOY_PREPARE, at.STATE_MACHINE))
_simple("sagemaker", "DeleteEndpointConfig", "sagemaker:DeleteEndpointConfig", "endpoint-config",
        "EndpointConfigName", (at.STATE_MACHINE,))
_simple("sagemaker", "DeleteModel", "sagemaker:DeleteModel", "model", "ModelName", (at.STATE_MACHINE,))


@operation("sagemaker", "CreateModel", ["sagemaker:CreateModel", "sagemaker:AddTags", "iam:PassRole"], (at.STATE_MACHINE,))
def create_model(p: Params, scope: Scope):
    # The IAM reference lists no permission on the model package a container names: SageMaker
    # reads the package itself (sagemaker:DescribeModelPackage is not a dependent action).
    return [*tagged_create(scope, "sagemaker:CreateModel", "model", p["ModelName"], p.get("Tags")),
            *pass_role(scope, p.get("ExecutionRoleArn"))]


@operation("sagemaker", "CreateEndpointConfig", ["sagemaker:CreateEndpointConfig", "sagemaker:AddTags", "iam:PassRole"],
           (at.STATE_MACHINE,))
def create_endpoint_config(p: Params, scope: Scope):
    variants = list(p.get("ProductionVariants") or [])
    context: dict[str, Any] = {}
    if variants:
        context["sagemaker:InstanceTypes"] = sorted({v["InstanceType"] for v in variants if v.get("InstanceType")})
        context["sagemaker:ModelArn"] = [arn_for(scope, "model", v["ModelName"]) for v in variants if v.get("ModelName")]
    return [*tagged_create(scope, "sagemaker:CreateEndpointConfig", "endpoint-config", p["EndpointConfigName"],
                           p.get("Tags"), context),
            *pass_role(scope, p.get("ExecutionRoleArn"))]


@operation("sagemaker", "CreateEndpoint", ["sagemaker:CreateEndpoint", "sagemaker:AddTags"], (at.STATE_MACHINE,))
def create_endpoint(p: Params, scope: Scope):
    return [*tagged_create(scope, "sagemaker:CreateEndpoint", "endpoint", p["EndpointName"], p.get("Tags")),
            on(scope, "sagemaker:CreateEndpoint", "endpoint-config", p["EndpointConfigName"])]


@operation("sagemaker", "UpdateEndpoint", ["sagemaker:UpdateEndpoint", "cloudwatch:DescribeAlarms"], (at.STATE_MACHINE,))
def update_endpoint(p: Params, scope: Scope):
    requests = [on(scope, "sagemaker:UpdateEndpoint", "endpoint", p["EndpointName"]),
                on(scope, "sagemaker:UpdateEndpoint", "endpoint-config", p["EndpointConfigName"])]
    # Deployment guardrails: SageMaker reads the rollback alarms with the caller's permissions.
    alarms = ((p.get("DeploymentConfig") or {}).get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    for alarm in alarms:
        requests.append(scope.resource("cloudwatch:DescribeAlarms", "alarm", AlarmName=alarm["AlarmName"]))
    return requests


@operation("sagemaker-runtime", "InvokeEndpoint", ["sagemaker:InvokeEndpoint"], (at.SMOKE_TEST, at.CLI))
def invoke_endpoint(p: Params, scope: Scope):
    context = {"sagemaker:TargetModel": p["TargetModel"]} if p.get("TargetModel") else {}
    return [on(scope, "sagemaker:InvokeEndpoint", "endpoint", p["EndpointName"], context)]


# -- Feature Store ------------------------------------------------------------------------------
@operation("sagemaker", "CreateFeatureGroup", ["sagemaker:CreateFeatureGroup", "sagemaker:AddTags", "iam:PassRole"],
           (at.INGEST,))
def create_feature_group(p: Params, scope: Scope):
    context: dict[str, Any] = {
        "sagemaker:FeatureGroupEnableOnlineStore": str(bool((p.get("OnlineStoreConfig") or {}).get(
            "EnableOnlineStore", False))).lower()}
    offline = p.get("OfflineStoreConfig") or {}
    if offline:
        context["sagemaker:FeatureGroupOfflineStoreS3Uri"] = (offline.get("S3StorageConfig") or {}).get("S3Uri", "")
        context["sagemaker:FeatureGroupDisableGlueTableCreation"] = str(
            bool(offline.get("DisableGlueTableCreation", False))).lower()
    return [*tagged_create(scope, "sagemaker:CreateFeatureGroup", "feature-group", p["FeatureGroupName"],
                           p.get("Tags"), context),
            *pass_role(scope, p.get("RoleArn"))]


_simple("sagemaker", "DescribeFeatureGroup", "sagemaker:DescribeFeatureGroup", "feature-group", "FeatureGroupName",
        (at.INGEST, at.FEATURE_STORE_INTERNAL))
_simple("sagemaker-featurestore-runtime", "PutRecord", "sagemaker:PutRecord", "feature-group", "FeatureGroupName",
        (at.INGEST,))


# -- ML lineage tracking (functions/shared/mlops_shared/lineage.py; local/aws/lineage.py) --------
# Entities given by ARN are used as given; contexts and actions named in a request are on their
# name (kept in case: lineage names are not lower-cased in ARNs, as the ARNs CreateContext returns show).
# An artifact's ARN is a hash of its source SageMaker computes, so CreateArtifact is on `artifact/*`.
_LINEAGE_WRITERS = (at.RECORD_LINEAGE, at.DEPLOY_NOTIFY_LINEAGE)


@operation("sagemaker", "CreateArtifact", ["sagemaker:CreateArtifact", "sagemaker:AddTags"], _LINEAGE_WRITERS)
def create_artifact(p: Params, scope: Scope):
    arn = scope.arn("sagemaker", "artifact", HashOfArtifactSource="*")
    requests = [scope.request("sagemaker:CreateArtifact", arn, tag_context(p.get("Tags")), resource_type="artifact")]
    if p.get("Tags"):
        requests.append(scope.request("sagemaker:AddTags", arn, {**tag_context(p.get("Tags")),
                                      "sagemaker:TaggingAction": "CreateArtifact"}, resource_type="artifact"))
    return requests


def _named_lineage_create(op: str, resource_type: str, member: str):
    action = f"sagemaker:{op}"

    @operation("sagemaker", op, [action, "sagemaker:AddTags"], _LINEAGE_WRITERS)
    def build(p: Params, scope: Scope):
        names = {"action": "ActionName", "context": "ContextName"}
        arn = scope.arn("sagemaker", resource_type, **{names[resource_type]: p[member]})
        requests = [scope.request(action, arn, tag_context(p.get("Tags")), resource_type=resource_type)]
        if p.get("Tags"):
            requests.append(scope.request("sagemaker:AddTags", arn, {**tag_context(p.get("Tags")),
                                          "sagemaker:TaggingAction": op}, resource_type=resource_type))
        return requests
    return build


_named_lineage_create("CreateAction", "action", "ActionName")
_named_lineage_create("CreateContext", "context", "ContextName")


def _lineage_resource_type(arn: str) -> str:
    return arn.split(":", 5)[-1].split("/", 1)[0]


@operation("sagemaker", "AddAssociation", ["sagemaker:AddAssociation"], _LINEAGE_WRITERS)
def add_association(p: Params, scope: Scope):
    # Authorized on both ends: the reference lists each end's resource type as required.
    return [scope.request("sagemaker:AddAssociation", p[member], resource_type=_lineage_resource_type(p[member]))
            for member in ("SourceArn", "DestinationArn")]


@operation("sagemaker", "DescribeArtifact", ["sagemaker:DescribeArtifact"], (*_LINEAGE_WRITERS, at.CLI, at.CONSOLE))
def describe_artifact(p: Params, scope: Scope):
    return [scope.request("sagemaker:DescribeArtifact", p["ArtifactArn"], resource_type="artifact")]


def _named_lineage_describe(op: str, resource_type: str, member: str):
    action = f"sagemaker:{op}"

    @operation("sagemaker", op, [action], (*_LINEAGE_WRITERS, at.CLI, at.CONSOLE))
    def build(p: Params, scope: Scope):
        value = p[member]
        if not value.startswith("arn:"):
            names = {"action": "ActionName", "context": "ContextName"}
            value = scope.arn("sagemaker", resource_type, **{names[resource_type]: value})
        return [scope.request(action, value, resource_type=resource_type)]
    return build


_named_lineage_describe("DescribeAction", "action", "ActionName")
_named_lineage_describe("DescribeContext", "context", "ContextName")

for _op in ("ListArtifacts", "ListActions", "ListContexts", "ListAssociations", "QueryLineage"):
    def _listing(p: Params, scope: Scope, _action=f"sagemaker:{_op}"):
        # Takes no resource-level permissions: the request is on "*".
        return [scope.request(_action)]
    operation("sagemaker", _op, [f"sagemaker:{_op}"], (*_LINEAGE_WRITERS, at.CLI, at.CONSOLE))(_listing)

_simple("sagemaker", "DescribeTrainingJob", "sagemaker:DescribeTrainingJob", "training-job", "TrainingJobName",
        (at.RECORD_LINEAGE, at.CLI, at.CONSOLE))
