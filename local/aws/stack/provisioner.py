"""Provision `template.yaml` into moto, through the local gateway, as CloudFormation would.

moto's own CloudFormation ignores half of what this stack declares (SNS subscriptions, S3
notification configuration, SageMaker groups and pipelines, Lambda code, ...), so the template is
read here: intrinsics are resolved, every declared resource is created with the plain service API,
and what only the local runtime can honour (Lambda code, API routes, EventBridge targets moto cannot
invoke) is recorded on the returned `Stack` for the lambda runtime, the event dispatcher and the API
server.

Nothing is listed twice: the template is the only list of resources. Types that have no local
meaning are skipped with a logged "not provisioned locally" line.

EventBridge targets moto cannot invoke (Lambda, Step Functions, SNS) make moto's `put_events` fail
and stop delivery to later rules, so each such target gets an SQS *shadow* queue in moto instead:
moto still does the real pattern matching, and `local.aws.eventbridge` delivers each message to the real
target recorded here.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local.aws.stack.intrinsics import Resolver, references
from local.aws.stack.model import (
    ACCOUNT_ID,
    DEFAULT_STACK_NAME,
    PARTITION,
    REGION,
    URL_SUFFIX,
    ProvisionError,
    Resource,
    Stack,
)
from local.aws.public_parameters import PublicParameters, UnknownPublicParameter
from local.aws.stack.resources import CREATORS
from local.aws.stack.sam_generated import sam_generated_resources
from local.aws.stack.template import load_template

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# The provisioner
# ------------------------------------------------------------------------------------------------
IGNORED_TYPES = {
    # Wiring that only matters to real AWS, or that the local runtime provides itself.
    "AWS::SNS::TopicPolicy",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::ApiGateway::Account",
    "AWS::SES::ConfigurationSet",
    "AWS::CloudWatch::Dashboard",
    "AWS::ECR::Repository",
}


SSM_PARAMETER_TYPE = "AWS::SSM::Parameter::Value<"
PUBLIC_PARAMETER_PREFIX = "/aws/service/"


class Provisioner:
    def __init__(
        self,
        template: dict,
        *,
        endpoint_url: str,
        template_dir: Path,
        template_path: Path | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        parameters: dict[str, Any] | None = None,
        api_base_url: str | None = None,
        local_parameters: dict[str, Any] | None = None,
        credentials: dict[str, str] | None = None,
    ):
        self.template = template
        # Who creates the stack: the local administrator (CloudFormation acts with the deployer's rights).
        self.credentials = dict(credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"})
        self.local_parameters = dict(local_parameters or {})
        self.template_dir = Path(template_dir)
        self.endpoint_url = endpoint_url
        self.api_base_url = api_base_url
        self._clients: dict[str, Any] = {}
        self.public_parameters = PublicParameters(REGION)  # AWS's /aws/service/... paths, answered locally
        self.stack = Stack(stack_name, REGION, ACCOUNT_ID, template_path, self._parameters(parameters or {}))
        self.globals = template.get("Globals") or {}
        self.layer_dirs: dict[str, Path] = {}  # layer ARN -> directory on PYTHONPATH
        self.api_ids: dict[str, str] = {}
        self.sam_generated: dict[str, dict] = {}  # logical id -> what SAM adds (roles, Lambda permissions)
        self.resolver = Resolver(self.stack, template, {})

    # -- clients --------------------------------------------------------------------------------
    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                config=Config(retries={"max_attempts": 2}),
                **self.credentials,
            )
        return self._clients[service]

    # -- parameters -----------------------------------------------------------------------------
    def _parameters(self, overrides: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise ProvisionError(f"parameter overrides not declared by the template: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = overrides[name]
            elif name in self.local_parameters:
                value = self.local_parameters[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise ProvisionError(f"parameter {name} has no Default and no override")
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")] if value else []
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            allowed = spec.get("AllowedValues")
            if allowed and str(value) not in [str(a) for a in allowed]:
                raise ProvisionError(f"parameter {name}={value!r} not in AllowedValues {allowed}")
            if str(spec.get("Type", "")).startswith(SSM_PARAMETER_TYPE):
                value = self._ssm_parameter_value(name, spec["Type"], value)
            values[name] = value
        return values

    def _ssm_parameter_value(self, name: str, parameter_type: str, path: str) -> Any:
        """What CloudFormation gives a `AWS::SSM::Parameter::Value<...>` parameter: the value stored
        at the path (AWS's public paths from the local table, any other from the local SSM)."""
        if path.startswith(PUBLIC_PARAMETER_PREFIX):
            try:
                value = self.public_parameters.resolve(path)
            except UnknownPublicParameter as exc:
                raise ProvisionError(f"parameter {name}: {exc}") from exc
        else:
            try:
                value = self.client("ssm").get_parameter(Name=path)["Parameter"]["Value"]
            except self.client("ssm").exceptions.ParameterNotFound as exc:
                raise ProvisionError(f"parameter {name}: SSM parameter {path} does not exist") from exc
        if parameter_type.endswith("<List<String>>") or parameter_type.endswith("<CommaDelimitedList>>"):
            return [item.strip() for item in value.split(",")]
        return value

    # -- main -----------------------------------------------------------------------------------
    def provision(self) -> Stack:
        resources = self._with_sam_generated(self.template.get("Resources") or {})
        self._declare_implicit_resources(resources)
        for logical_id in self._creation_order(resources):
            definition = resources[logical_id]
            condition = definition.get("Condition")
            if condition and not self.resolver.condition(condition):
                log.info("%s skipped: condition %s is false", logical_id, condition)
                continue
            resource_type = definition["Type"]
            creator = CREATORS.get(resource_type)
            if creator is None:
                self.stack.skipped[logical_id] = resource_type
                if resource_type not in IGNORED_TYPES:
                    log.info("%s (%s): not provisioned locally", logical_id, resource_type)
                continue
            try:
                creator(self, logical_id, definition)
            except ProvisionError:
                raise
            except Exception as exc:
                raise ProvisionError(f"provisioning {logical_id} ({resource_type}) failed: {exc}") from exc
        for name, output in (self.template.get("Outputs") or {}).items():
            condition = output.get("Condition")
            if condition and not self.resolver.condition(condition):
                continue
            self.stack.outputs[name] = self.resolver.resolve(output["Value"])
        return self.stack

    def _with_sam_generated(self, resources: dict) -> dict:
        """The template's resources plus the roles and Lambda permissions SAM generates for them
        (`sam_generated`); a function or state machine without a Role gets SAM's, as on AWS."""
        generated = self.sam_generated = sam_generated_resources(self.template, self.stack.parameters, REGION)
        merged = dict(resources)
        for logical_id, definition in generated.items():
            merged[logical_id] = definition
        for logical_id, definition in resources.items():
            props = definition.get("Properties") or {}
            if definition["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine") \
                    and "Role" not in props and f"{logical_id}Role" in generated:
                merged[logical_id] = {**definition, "Properties": {
                    **props, "Role": {"Fn::GetAtt": [f"{logical_id}Role", "Arn"]}}}
        return merged

    def role_arn_of(self, logical_id: str) -> str:
        """The ARN a generated role will have (for targets declared before it is created)."""
        return self.arn("iam", f"role/{self.physical_name(logical_id, 64)}", region=False)

    def _declare_implicit_resources(self, resources: dict) -> None:
        """SAM's implicit APIs others may refer to (roles come from `_with_sam_generated`)."""
        implicit_apis = {"Api": "ServerlessRestApi", "HttpApi": "ServerlessHttpApi"}
        for logical_id, definition in resources.items():
            props = definition.get("Properties") or {}
            if definition["Type"] == "AWS::Serverless::Function":
                for event in (props.get("Events") or {}).values():
                    event_type = event.get("Type")
                    link = "RestApiId" if event_type == "Api" else "ApiId"
                    if event_type in implicit_apis and link not in (event.get("Properties") or {}):
                        self._declare_api(implicit_apis[event_type], "rest" if event_type == "Api" else "http")
        for logical_id, definition in resources.items():
            if definition["Type"] == "AWS::Serverless::Api":
                self._declare_api(logical_id, "rest")
            elif definition["Type"] == "AWS::Serverless::HttpApi":
                self._declare_api(logical_id, "http")

    def _declare_api(self, logical_id: str, kind: str) -> None:
        if logical_id in self.api_ids:
            return
        api_id = hashlib.sha1(f"{self.stack.name}/{logical_id}".encode()).hexdigest()[:10]
        self.api_ids[logical_id] = api_id
        resource_type = "AWS::Serverless::Api" if kind == "rest" else "AWS::Serverless::HttpApi"
        self.stack.resources[logical_id] = Resource(logical_id, resource_type, api_id, {
            "RootResourceId": api_id[:6], "ApiEndpoint": f"https://{api_id}.execute-api.{REGION}.{URL_SUFFIX}",
        })
        if self.api_base_url:
            host = f"https://{api_id}.execute-api.{REGION}.{URL_SUFFIX}"
            self.resolver.rewrite_api_host(host, self.api_base_url)

    def _creation_order(self, resources: dict) -> list[str]:
        known = set(resources)
        deps: dict[str, set[str]] = {}
        for logical_id, definition in resources.items():
            found = references({k: v for k, v in definition.items() if k in ("Properties", "Metadata", "Condition")})
            depends_on = definition.get("DependsOn") or []
            found |= set([depends_on] if isinstance(depends_on, str) else depends_on)
            deps[logical_id] = {d for d in found if d in known and d != logical_id}
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(node: str, path: list[str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                raise ProvisionError(f"circular dependency: {' -> '.join(path + [node])}")
            state[node] = 1
            for dep in sorted(deps[node]):
                visit(dep, path + [node])
            state[node] = 2
            order.append(node)

        for logical_id in resources:
            visit(logical_id, [])
        return order

    # -- helpers ----------------------------------------------------------------------------------
    def props(self, definition: dict) -> dict:
        return self.resolver.resolve(copy.deepcopy(definition.get("Properties") or {})) or {}

    def physical_name(self, logical_id: str, max_length: int = 64, lower: bool = False) -> str:
        name = f"{self.stack.name}-{logical_id}"
        if len(name) > max_length:
            digest = hashlib.sha1(name.encode()).hexdigest()[:8]
            name = name[: max_length - 9] + "-" + digest
        return name.lower() if lower else name

    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        return (f"arn:{PARTITION}:{service}:{REGION if region else ''}:"
                f"{ACCOUNT_ID if account else ''}:{resource}")

    def add(self, logical_id: str, resource_type: str, ref: str, **attributes: str) -> Resource:
        resource = Resource(logical_id, resource_type, ref, {k: v for k, v in attributes.items() if v is not None})
        self.stack.resources[logical_id] = resource
        return resource

    def relative_path(self, value: str | dict) -> Path:
        if isinstance(value, dict):  # {Bucket, Key}: only local paths make sense here
            raise ProvisionError(f"S3 code locations cannot be run locally: {value}")
        return (self.template_dir / value).resolve()


def provision(
    template: str | Path | dict,
    endpoint_url: str,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    parameters: dict[str, Any] | None = None,
    template_dir: str | Path | None = None,
    api_base_url: str | None = None,
    local_parameters: dict[str, Any] | None = None,
    credentials: dict[str, str] | None = None,
) -> Stack:
    """Creates in moto (at `endpoint_url`) what `template` declares; returns the resolved `Stack`.

    `template` is a path to a SAM/CloudFormation template or an already-loaded dict (then relative
    paths resolve against `template_dir`, default the current directory). `api_base_url` is where the
    local API server listens: API invoke URLs in the template resolve to it. `local_parameters`
    replace the template's Defaults for the parameters it declares (explicit `parameters` still
    win); names the template does not declare are ignored. `credentials` (boto3 keyword arguments)
    are those of whoever deploys: the local administrator.
    """
    if isinstance(template, dict):
        body, path = template, None
        base = Path(template_dir or ".")
    else:
        path = Path(template).resolve()
        body = load_template(path)
        base = Path(template_dir) if template_dir else path.parent
    provisioner = Provisioner(body, endpoint_url=endpoint_url, template_dir=base, template_path=path,
                              stack_name=stack_name, parameters=parameters, api_base_url=api_base_url,
                              local_parameters=local_parameters, credentials=credentials)
    stack = provisioner.provision()
    log.info("stack %s: %d resources provisioned, %d skipped", stack.name, len(stack.resources), len(stack.skipped))
    return stack
