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
moto still does the real pattern matching, and `local.events` delivers each message to the real
target recorded here.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config

log = logging.getLogger(__name__)

DEFAULT_STACK_NAME = "mlops-local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

# Marker for AWS::NoValue: removed from the dict/list that holds it after resolution.
_NO_VALUE = object()

_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class ProvisionError(RuntimeError):
    """The template cannot be provisioned locally (unknown reference, bad intrinsic, ...)."""


# ------------------------------------------------------------------------------------------------
# What the runtime needs to know about the provisioned stack
# ------------------------------------------------------------------------------------------------
@dataclass
class Resource:
    logical_id: str
    type: str
    ref: str  # what `Ref` returns
    attributes: dict[str, str] = field(default_factory=dict)  # what `Fn::GetAtt` returns

    @property
    def arn(self) -> str | None:
        return self.attributes.get("Arn")


@dataclass
class FunctionSpec:
    """A Lambda function the local lambda runtime can run."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # "app.lambda_handler"
    environment: dict[str, str]
    layer_dirs: list[Path]
    timeout: float
    memory_size: int
    runtime: str


@dataclass
class EventTarget:
    """A real EventBridge (or SNS/SQS event source) target the dispatcher delivers to."""

    source: str  # "rule" (EventBridge), "sns" (topic subscription), "sqs" (queue event source)
    name: str  # rule name, or a readable name of the subscription/event source
    kind: str  # "lambda" | "states" | "sns" | "sqs" | "events"
    arn: str
    queue_url: str  # where moto puts the messages the dispatcher reads
    queue_arn: str
    input: str | None = None
    input_path: str | None = None
    input_transformer: dict | None = None
    retry_attempts: int = 2
    batch_size: int = 10
    dead_letter_arn: str | None = None  # the rule target's DeadLetterConfig (an SQS queue)


@dataclass
class ApiRoute:
    """An API Gateway route served locally by `local.apigw`."""

    api_logical_id: str
    api_id: str
    kind: str  # "rest" (payload v1) or "http" (payload v2 unless PayloadFormatVersion 1.0)
    payload_version: str  # "1.0" | "2.0"
    stage: str
    method: str  # upper case, "ANY" for any
    path: str  # "/approvals/{token}"
    function_name: str


@dataclass
class Stack:
    name: str
    region: str
    account_id: str
    template_path: Path | None
    parameters: dict[str, Any]
    resources: dict[str, Resource] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)  # by function name
    event_targets: list[EventTarget] = field(default_factory=list)
    api_routes: list[ApiRoute] = field(default_factory=list)
    email_subscriptions: list[dict[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> type
    # Resolved `Metadata.Mlops.Substitutions` per pipeline logical id (the executor needs them too).
    pipeline_substitutions: dict[str, dict[str, str]] = field(default_factory=dict)

    def ref(self, logical_id: str) -> str:
        return self._resource(logical_id).ref

    def attr(self, logical_id: str, attribute: str) -> str:
        resource = self._resource(logical_id)
        if attribute not in resource.attributes:
            raise KeyError(f"{logical_id} has no attribute {attribute}")
        return resource.attributes[attribute]

    def arn(self, logical_id: str) -> str:
        return self.attr(logical_id, "Arn")

    def name_of(self, logical_id: str) -> str:
        resource = self._resource(logical_id)
        return resource.attributes.get("Name") or resource.ref

    def resources_of_type(self, resource_type: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type == resource_type]

    def function(self, name_or_arn: str) -> FunctionSpec | None:
        name = function_name_from(name_or_arn)
        if name in self.functions:
            return self.functions[name]
        for spec in self.functions.values():  # the logical id works too
            if spec.logical_id == name:
                return spec
        return None

    def _resource(self, logical_id: str) -> Resource:
        if logical_id not in self.resources:
            raise KeyError(f"no resource {logical_id!r} in stack {self.name} (skipped: {sorted(self.skipped)})")
        return self.resources[logical_id]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "region": self.region,
            "outputs": self.outputs,
            "resources": {
                lid: {"type": r.type, "ref": r.ref, "attributes": r.attributes} for lid, r in self.resources.items()
            },
            "functions": sorted(self.functions),
            "api_routes": [f"{r.method} {r.path} -> {r.function_name}" for r in self.api_routes],
        }


def function_name_from(name_or_arn: str) -> str:
    """`my-fn`, `my-fn:alias`, `arn:aws:lambda:r:a:function:my-fn[:alias]`, `a:function:my-fn` -> `my-fn`."""
    if ":function:" in name_or_arn:
        return name_or_arn.split(":function:", 1)[1].split(":", 1)[0]
    return name_or_arn.split(":", 1)[0]


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def load_template(path: str | Path) -> dict:
    from cfnlint.decode import cfn_yaml

    return _plain(cfn_yaml.load(str(path)))


def loads_template(text: str) -> dict:
    from cfnlint.decode import cfn_yaml

    return _plain(cfn_yaml.loads(text))


def _plain(value: Any) -> Any:
    """cfn-lint's node classes carry line marks; plain dict/list/str are easier to copy and dump."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------------
# Intrinsic functions
# ------------------------------------------------------------------------------------------------
class Resolver:
    """Resolves intrinsics against parameters, conditions and already-provisioned resources."""

    def __init__(self, stack: Stack, template: dict, api_url_rewrites: dict[str, str] | None = None):
        self.stack = stack
        self.template = template
        self.conditions: dict[str, bool] = {}
        self._api_url_rewrites = api_url_rewrites or {}
        for name in template.get("Conditions") or {}:
            self.condition(name)

    # pseudo parameters and parameters
    def pseudo(self, name: str) -> Any:
        stack = self.stack
        return {
            "AWS::StackName": stack.name,
            "AWS::Region": stack.region,
            "AWS::AccountId": stack.account_id,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackId": f"arn:aws:cloudformation:{stack.region}:{stack.account_id}:stack/{stack.name}/local",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": _NO_VALUE,
        }.get(name, None)

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            value = self.pseudo(name)
            if value is None:
                raise ProvisionError(f"unknown pseudo parameter {name}")
            return value
        if name in self.stack.parameters:
            return self.stack.parameters[name]
        if name in self.stack.resources:
            return self.stack.resources[name].ref
        if name in self.stack.skipped:
            # Not provisioned locally (a dashboard, say): an Output may still name it; give the
            # physical name CloudFormation would generate rather than fail the whole stack.
            return f"{self.stack.name}-{name}"
        raise ProvisionError(f"Ref to {name!r}, which is neither a parameter nor a provisioned resource")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        resource = self.stack.resources.get(logical_id)
        if resource is None and logical_id in self.stack.skipped:
            return f"{self.stack.name}-{logical_id}.{attribute} (not provisioned locally)"
        if resource is None:
            raise ProvisionError(f"GetAtt {logical_id}.{attribute}: no such resource (yet)")
        if attribute in resource.attributes:
            return resource.attributes[attribute]
        for suffix, key in (("Arn", "Arn"), ("Name", "Name")):
            if attribute.endswith(suffix) and key in resource.attributes:
                return resource.attributes[key]
        raise ProvisionError(f"GetAtt {logical_id}.{attribute}: attribute not known locally")

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            definitions = self.template.get("Conditions") or {}
            if name not in definitions:
                raise ProvisionError(f"unknown condition {name}")
            self.conditions[name] = bool(self.resolve(definitions[name]))
        return self.conditions[name]

    # the walker
    def resolve(self, value: Any) -> Any:
        result = self._resolve(value)
        return None if result is _NO_VALUE else result

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self._resolve(item) for item in value) if v is not _NO_VALUE]
        if isinstance(value, str):
            return self._rewrite_api_url(value)
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
        resolved = {}
        for key, item in value.items():
            item = self._resolve(item)
            if item is not _NO_VALUE:
                resolved[key] = item
        return resolved

    def _rewrite_api_url(self, text: str) -> str:
        # An API's invoke URL (https://<id>.execute-api.<region>.amazonaws.com) is served locally.
        for api_host, local_url in self._api_url_rewrites.items():
            if api_host in text:
                text = text.replace(api_host, local_url)
        return text

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            template, variables = arg[0], {k: self._resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            template, variables = arg, {}
        if not isinstance(template, str):
            raise ProvisionError(f"Fn::Sub needs a string, got {template!r}")

        def replace(match: re.Match) -> str:
            name = match.group(1).strip()
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                value = self.get_att(logical_id, attribute)
            else:
                value = self.ref(name)
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            return str(value)

        # `${!Literal}` stays as `${Literal}`
        text = _SUB_VARIABLE.sub(replace, template).replace("${!", "${")
        return self._rewrite_api_url(text)


def _fn_ref(r: Resolver, arg):
    return r.ref(r.resolve(arg))


def _fn_get_att(r: Resolver, arg):
    if isinstance(arg, str):
        logical_id, attribute = arg.split(".", 1)
    else:
        logical_id, attribute = arg[0], r.resolve(arg[1])
    return r.get_att(logical_id, attribute)


def _fn_join(r: Resolver, arg):
    delimiter, items = arg
    items = r.resolve(items)
    return r.resolve(delimiter).join(str(i) for i in items)


def _fn_select(r: Resolver, arg):
    index, items = r.resolve(arg[0]), r.resolve(arg[1])
    return items[int(index)]


def _fn_split(r: Resolver, arg):
    delimiter, text = r.resolve(arg[0]), r.resolve(arg[1])
    return text.split(delimiter)


def _fn_if(r: Resolver, arg):
    name, when_true, when_false = arg
    return r._resolve(when_true if r.condition(name) else when_false)


def _fn_equals(r: Resolver, arg):
    left, right = r.resolve(arg[0]), r.resolve(arg[1])
    return str(left) == str(right)


def _fn_base64(r: Resolver, arg):
    import base64

    return base64.b64encode(str(r.resolve(arg)).encode()).decode()


def _fn_get_azs(r: Resolver, arg):
    return [f"{r.stack.region}{zone}" for zone in "abc"]


def _fn_find_in_map(r: Resolver, arg):
    name, top, second = (r.resolve(a) for a in arg[:3])
    return r.template["Mappings"][name][top][second]


_INTRINSICS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": _fn_ref,
    "Fn::GetAtt": _fn_get_att,
    "Fn::Sub": lambda r, arg: r.sub(arg),
    "Fn::Join": _fn_join,
    "Fn::Select": _fn_select,
    "Fn::Split": _fn_split,
    "Fn::If": _fn_if,
    "Fn::Equals": _fn_equals,
    "Fn::And": lambda r, arg: all(r.resolve(a) for a in arg),
    "Fn::Or": lambda r, arg: any(r.resolve(a) for a in arg),
    "Fn::Not": lambda r, arg: not r.resolve(arg[0]),
    "Condition": lambda r, arg: r.condition(arg),
    "Fn::Base64": _fn_base64,
    "Fn::GetAZs": _fn_get_azs,
    "Fn::FindInMap": _fn_find_in_map,
}


def references(value: Any) -> set[str]:
    """Logical ids (or parameter names) a template fragment refers to."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if len(node) == 1:
                (key, arg), = node.items()
                if key == "Ref" and isinstance(arg, str):
                    found.add(arg)
                    return
                if key == "Fn::GetAtt":
                    found.add(arg.split(".", 1)[0] if isinstance(arg, str) else arg[0])
                    return
                if key == "Fn::Sub":
                    text = arg[0] if isinstance(arg, list) else arg
                    local_vars = set(arg[1]) if isinstance(arg, list) and isinstance(arg[1], dict) else set()
                    for name in _SUB_VARIABLE.findall(text if isinstance(text, str) else ""):
                        name = name.strip().split(".", 1)[0]
                        if name not in local_vars:
                            found.add(name)
                    if isinstance(arg, list):
                        walk(arg[1])
                    return
            for item in node.values():
                walk(item)

    walk(value)
    return {name for name in found if not name.startswith("AWS::")}


# ------------------------------------------------------------------------------------------------
# The provisioner
# ------------------------------------------------------------------------------------------------
IGNORED_TYPES = {
    # Permissions and wiring that only matter to real AWS, or that the local runtime provides itself.
    "AWS::Lambda::Permission",
    "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::S3::BucketPolicy",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::ApiGateway::Account",
    "AWS::SES::ConfigurationSet",
    "AWS::CloudWatch::Dashboard",
    "AWS::ECR::Repository",
}


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
    ):
        self.template = template
        self.local_parameters = dict(local_parameters or {})
        self.template_dir = Path(template_dir)
        self.endpoint_url = endpoint_url
        self.api_base_url = api_base_url
        self.stack = Stack(stack_name, REGION, ACCOUNT_ID, template_path, self._parameters(parameters or {}))
        self.globals = template.get("Globals") or {}
        self._clients: dict[str, Any] = {}
        self._layer_dirs: dict[str, Path] = {}  # layer ARN -> directory on PYTHONPATH
        self._api_ids: dict[str, str] = {}
        self.resolver = Resolver(self.stack, template, {})

    # -- clients --------------------------------------------------------------------------------
    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = boto3.client(
                service,
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                config=Config(retries={"max_attempts": 2}),
                **LOCAL_CREDENTIALS,
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
            values[name] = value
        return values

    # -- main -----------------------------------------------------------------------------------
    def provision(self) -> Stack:
        resources = self.template.get("Resources") or {}
        self._declare_implicit_resources(resources)
        for logical_id in self._creation_order(resources):
            definition = resources[logical_id]
            condition = definition.get("Condition")
            if condition and not self.resolver.condition(condition):
                log.info("%s skipped: condition %s is false", logical_id, condition)
                continue
            resource_type = definition["Type"]
            creator = _CREATORS.get(resource_type)
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

    def _declare_implicit_resources(self, resources: dict) -> None:
        """SAM's generated resources others may refer to: function/state machine roles, implicit APIs."""
        implicit_apis = {"Api": "ServerlessRestApi", "HttpApi": "ServerlessHttpApi"}
        for logical_id, definition in resources.items():
            props = definition.get("Properties") or {}
            if definition["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine") and "Role" not in props:
                self._create_role(f"{logical_id}Role", {"RoleName": self._physical_name(f"{logical_id}Role", 64)})
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
        if logical_id in self._api_ids:
            return
        api_id = hashlib.sha1(f"{self.stack.name}/{logical_id}".encode()).hexdigest()[:10]
        self._api_ids[logical_id] = api_id
        resource_type = "AWS::Serverless::Api" if kind == "rest" else "AWS::Serverless::HttpApi"
        self.stack.resources[logical_id] = Resource(logical_id, resource_type, api_id, {
            "RootResourceId": api_id[:6], "ApiEndpoint": f"https://{api_id}.execute-api.{REGION}.{URL_SUFFIX}",
        })
        if self.api_base_url:
            host = f"https://{api_id}.execute-api.{REGION}.{URL_SUFFIX}"
            self.resolver._api_url_rewrites[host] = self.api_base_url
            # Some templates spell the suffix with ${AWS::URLSuffix}; both resolve to the same host.

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

    def _physical_name(self, logical_id: str, max_length: int = 64, lower: bool = False) -> str:
        name = f"{self.stack.name}-{logical_id}"
        if len(name) > max_length:
            digest = hashlib.sha1(name.encode()).hexdigest()[:8]
            name = name[: max_length - 9] + "-" + digest
        return name.lower() if lower else name

    def _arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
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

    # -- IAM ----------------------------------------------------------------------------------
    def _create_role(self, logical_id: str, props: dict) -> None:
        name = props.get("RoleName") or self._physical_name(logical_id, 64)
        path = props.get("Path", "/")
        iam = self.client("iam")
        assume = props.get("AssumeRolePolicyDocument") or {"Version": "2012-10-17", "Statement": []}
        try:
            role = iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=_json(assume))["Role"]
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName=name)["Role"]
        for policy in props.get("Policies") or []:
            iam.put_role_policy(RoleName=name, PolicyName=policy["PolicyName"], PolicyDocument=_json(policy["PolicyDocument"]))
        self.add(logical_id, "AWS::IAM::Role", name, Arn=role["Arn"], RoleId=role["RoleId"], Name=name)

    def iam_role(self, logical_id: str, definition: dict) -> None:
        self._create_role(logical_id, self.props(definition))

    # -- storage and messaging -----------------------------------------------------------------
    def s3_bucket(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("BucketName") or self._physical_name(logical_id, 63, lower=True)
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        status = (props.get("VersioningConfiguration") or {}).get("Status")
        if status:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        notification = props.get("NotificationConfiguration") or {}
        if str((notification.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled", "false")).lower() == "true":
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        for key in set(notification) - {"EventBridgeConfiguration"}:
            log.info("%s: S3 %s not provisioned locally (use EventBridge)", logical_id, key)
        if props.get("PublicAccessBlockConfiguration"):
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
        self.add(logical_id, definition["Type"], name, Arn=f"arn:aws:s3:::{name}", Name=name,
                 DomainName=f"{name}.s3.{URL_SUFFIX}", RegionalDomainName=f"{name}.s3.{REGION}.{URL_SUFFIX}")

    def sqs_queue(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        fifo = str(props.get("FifoQueue", "false")).lower() == "true"
        name = props.get("QueueName") or self._physical_name(logical_id, 80 - (5 if fifo else 0)) + (".fifo" if fifo else "")
        attributes = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "MaximumMessageSize",
                    "ReceiveMessageWaitTimeSeconds", "FifoQueue", "ContentBasedDeduplication"):
            if key in props:
                attributes[key] = str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = _json(props["RedrivePolicy"])
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self._arn("sqs", name)
        self.add(logical_id, definition["Type"], url, Arn=arn, QueueName=name, QueueUrl=url, Name=name)

    def sns_topic(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("TopicName") or self._physical_name(logical_id, 256)
        arn = self.client("sns").create_topic(Name=name)["TopicArn"]
        self.add(logical_id, definition["Type"], arn, TopicArn=arn, TopicName=name, Arn=arn, Name=name)
        for index, subscription in enumerate(props.get("Subscription") or []):
            self._subscribe(f"{logical_id}Subscription{index}", arn, subscription["Protocol"], subscription["Endpoint"], {})

    def sns_subscription(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        extra = {k: props[k] for k in ("RawMessageDelivery", "FilterPolicy", "FilterPolicyScope") if k in props}
        self._subscribe(logical_id, props["TopicArn"], props["Protocol"], props["Endpoint"], extra)

    def _subscribe(self, logical_id: str, topic_arn: str, protocol: str, endpoint: str, extra: dict) -> None:
        protocol = protocol.lower()
        if protocol in ("email", "email-json", "sms"):
            # Recorded, never sent: a local run must not mail anyone.
            self.stack.email_subscriptions.append({"topic_arn": topic_arn, "protocol": protocol, "endpoint": endpoint})
            self.add(logical_id, "AWS::SNS::Subscription", f"{topic_arn}:{logical_id}")
            return
        if protocol == "lambda":
            queue_url, queue_arn = self._shadow_queue(f"sns-{logical_id}")
            attrs = {"FilterPolicy": _json(extra["FilterPolicy"])} if "FilterPolicy" in extra else {}
            arn = self.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                                               Attributes=attrs)["SubscriptionArn"]
            self.stack.event_targets.append(EventTarget("sns", logical_id, "lambda", endpoint, queue_url, queue_arn))
            self.add(logical_id, "AWS::SNS::Subscription", arn)
            return
        attrs = {}
        if "RawMessageDelivery" in extra:
            attrs["RawMessageDelivery"] = str(extra["RawMessageDelivery"]).lower()
        if "FilterPolicy" in extra:
            attrs["FilterPolicy"] = _json(extra["FilterPolicy"])
        arn = self.client("sns").subscribe(TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint,
                                           Attributes=attrs)["SubscriptionArn"]
        self.add(logical_id, "AWS::SNS::Subscription", arn)

    def dynamodb_table(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("TableName") or self._physical_name(logical_id, 255)
        ddb = self.client("dynamodb")
        kwargs = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = {k: int(v) for k, v in (props.get("ProvisionedThroughput") or {
                "ReadCapacityUnits": 5, "WriteCapacityUnits": 5}).items()}
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
            if key in props:
                kwargs[key] = props[key]
        table = ddb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and str(ttl.get("Enabled", "false")).lower() == "true":
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": ttl["AttributeName"]})
        self.add(logical_id, definition["Type"], name, Arn=table["TableArn"], Name=name,
                 StreamArn=table.get("LatestStreamArn"))

    def simple_table(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
        type_code = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
        table = {"Type": "AWS::DynamoDB::Table", "Properties": {
            "TableName": props.get("TableName") or self._physical_name(logical_id, 255),
            "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": type_code}],
            "BillingMode": "PAY_PER_REQUEST",
        }}
        self.dynamodb_table(logical_id, table)

    def secret(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("Name") or self._physical_name(logical_id, 256)
        value = props.get("SecretString")
        if value is None:
            value = _generate_secret(props.get("GenerateSecretString") or {})
        kwargs = {"Name": name, "SecretString": value}
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        arn = self.client("secretsmanager").create_secret(**kwargs)["ARN"]
        self.add(logical_id, definition["Type"], arn, Arn=arn, Id=arn, Name=name)

    def ssm_parameter(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("Name") or self._physical_name(logical_id, 1000)
        self.client("ssm").put_parameter(Name=name, Value=str(props["Value"]), Type=props.get("Type", "String"),
                                         Overwrite=True)
        self.add(logical_id, definition["Type"], name, Name=name, Value=str(props["Value"]),
                 Arn=self._arn("ssm", f"parameter{name if name.startswith('/') else '/' + name}"))

    def log_group(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("LogGroupName") or self._physical_name(logical_id, 512)
        logs = self.client("logs")
        logs.create_log_group(logGroupName=name)
        if props.get("RetentionInDays"):
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
        self.add(logical_id, definition["Type"], name, Arn=self._arn("logs", f"log-group:{name}:*"), Name=name)

    def alarm(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("AlarmName") or self._physical_name(logical_id, 255)
        kwargs = {"AlarmName": name}
        numeric = {"Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold"}
        for key, value in props.items():
            if key in ("AlarmName",):
                continue
            if key in numeric:
                value = float(value) if key == "Threshold" else int(value)
            if key == "Metrics":
                value = [{**m, **({"ReturnData": str(m["ReturnData"]).lower() == "true"} if "ReturnData" in m else {})}
                         for m in value]
            if key == "ActionsEnabled":
                value = str(value).lower() == "true"
            kwargs[key] = value
        self.client("cloudwatch").put_metric_alarm(**kwargs)
        self.add(logical_id, definition["Type"], name, Arn=self._arn("cloudwatch", f"alarm:{name}"), Name=name)

    def email_identity(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        identity = props["EmailIdentity"]
        ses = self.client("ses")
        if "@" in identity:
            ses.verify_email_identity(EmailAddress=identity)
        else:
            ses.verify_domain_identity(Domain=identity)
        self.add(logical_id, definition["Type"], identity, Name=identity)

    def kms_key(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        kwargs = {"Description": props.get("Description", "")}
        if props.get("KeyPolicy"):
            kwargs["Policy"] = _json(props["KeyPolicy"])
        key = self.client("kms").create_key(**kwargs)["KeyMetadata"]
        self.add(logical_id, definition["Type"], key["KeyId"], Arn=key["Arn"], KeyId=key["KeyId"])

    def kms_alias(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        self.client("kms").create_alias(AliasName=props["AliasName"], TargetKeyId=props["TargetKeyId"])
        self.add(logical_id, definition["Type"], props["AliasName"], Name=props["AliasName"])

    # -- SageMaker ----------------------------------------------------------------------------
    def model_package_group(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("ModelPackageGroupName") or self._physical_name(logical_id, 63)
        kwargs = {"ModelPackageGroupName": name}
        if props.get("ModelPackageGroupDescription"):
            kwargs["ModelPackageGroupDescription"] = props["ModelPackageGroupDescription"]
        arn = self.client("sagemaker").create_model_package_group(**kwargs)["ModelPackageGroupArn"]
        self.add(logical_id, definition["Type"], arn, ModelPackageGroupArn=arn, Arn=arn,
                 ModelPackageGroupName=name, Name=name)

    def pipeline(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("PipelineName") or self._physical_name(logical_id, 256)
        mlops_metadata = ((definition.get("Metadata") or {}).get("Mlops")) or {}
        if mlops_metadata.get("DefinitionFile"):
            text = self.relative_path(mlops_metadata["DefinitionFile"]).read_text()
            substitutions = self.resolver.resolve(mlops_metadata.get("Substitutions") or {})
            self.stack.pipeline_substitutions[logical_id] = {k: str(v) for k, v in substitutions.items()}
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
        arn = self.client("sagemaker").create_pipeline(**kwargs)["PipelineArn"]
        self.add(logical_id, definition["Type"], name, PipelineName=name, Arn=arn, PipelineArn=arn, Name=name)

    # -- EventBridge ----------------------------------------------------------------------------
    def events_rule(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("Name") or self._physical_name(logical_id, 64)
        targets = []
        for target in props.get("Targets") or []:
            targets.append({k: target[k] for k in ("Id", "Arn", "Input", "InputPath", "InputTransformer",
                                                    "RetryPolicy", "DeadLetterConfig") if k in target})
        arn = self._put_rule(name, props, targets, logical_id)
        self.add(logical_id, definition["Type"], name, Arn=arn, Name=name)

    def _put_rule(self, name: str, props: dict, targets: list[dict], owner: str) -> str:
        events = self.client("events")
        kwargs = {"Name": name, "State": props.get("State", "ENABLED")}
        if props.get("EventPattern") is not None:
            pattern = props["EventPattern"]
            kwargs["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
        if props.get("ScheduleExpression"):
            kwargs["ScheduleExpression"] = props["ScheduleExpression"]
            log.info("%s: schedule %s is recorded but never fires locally", owner, props["ScheduleExpression"])
        bus = props.get("EventBusName")
        if bus:
            kwargs["EventBusName"] = bus
        arn = events.put_rule(**kwargs)["RuleArn"]
        moto_targets = []
        for target in targets:
            kind = target["Arn"].split(":")[2]
            if kind == "sqs":
                moto_targets.append({k: v for k, v in target.items() if k in ("Id", "Arn", "Input", "InputPath", "InputTransformer")})
                continue
            if kind not in ("lambda", "states", "sns", "events"):
                log.info("%s: target %s not provisioned locally", owner, target["Arn"])
                continue
            queue_url, queue_arn = self._shadow_queue(f"rule-{name}-{target['Id']}")
            # The shadow queue receives the whole event; the dispatcher applies Input* itself.
            moto_targets.append({"Id": target["Id"], "Arn": queue_arn})
            # Retries are capped locally: a target that fails three times will fail the fourth.
            retry = int((target.get("RetryPolicy") or {}).get("MaximumRetryAttempts", 2))
            self.stack.event_targets.append(EventTarget(
                "rule", name, kind, target["Arn"], queue_url, queue_arn, target.get("Input"),
                target.get("InputPath"), target.get("InputTransformer"), retry_attempts=min(retry, 2),
                dead_letter_arn=(target.get("DeadLetterConfig") or {}).get("Arn")))
        if moto_targets:
            put = {"Rule": name, "Targets": moto_targets}
            if bus:
                put["EventBusName"] = bus
            events.put_targets(**put)
        return arn

    def _shadow_queue(self, label: str) -> tuple[str, str]:
        digest = hashlib.sha1(f"{self.stack.name}/{label}".encode()).hexdigest()[:8]
        name = re.sub(r"[^A-Za-z0-9_-]", "-", f"local-shadow-{label}")[:70] + "-" + digest
        url = self.client("sqs").create_queue(QueueName=name, Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
        return url, self._arn("sqs", name)

    def _event_rules(self, owner_id: str, target_arn: str, events: dict) -> None:
        """SAM `EventBridgeRule`/`CloudWatchEvent` events of a function or state machine."""
        for event_id, event in (events or {}).items():
            event_type, props = event.get("Type"), event.get("Properties") or {}
            if event_type in ("EventBridgeRule", "CloudWatchEvent", "Schedule", "ScheduleV2"):
                name = props.get("RuleName") or props.get("Name") or self._physical_name(f"{owner_id}{event_id}", 64)
                target = {"Id": (props.get("Target") or {}).get("Id") or f"{owner_id}{event_id}"[:64], "Arn": target_arn}
                for key in ("Input", "InputPath", "InputTransformer", "RetryPolicy", "DeadLetterConfig"):
                    if props.get(key) is not None:
                        target[key] = props[key]
                rule_props = {"EventPattern": props.get("Pattern"), "EventBusName": props.get("EventBusName"),
                              "ScheduleExpression": props.get("Schedule")}
                if props.get("Enabled") is False or str(props.get("State", "ENABLED")).upper() == "DISABLED":
                    rule_props["State"] = "DISABLED"
                arn = self._put_rule(name, rule_props, [target], f"{owner_id}.{event_id}")
                self.add(f"{owner_id}{event_id}", "AWS::Events::Rule", name, Arn=arn, Name=name)
            elif event_type == "SNS":
                self._subscribe(f"{owner_id}{event_id}", props["Topic"], "lambda", target_arn,
                                {k: props[k] for k in ("FilterPolicy",) if k in props})
            elif event_type == "SQS":
                queue_arn = props["Queue"]
                queue_name = queue_arn.rsplit(":", 1)[1]
                queue_url = self.client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"]
                self.stack.event_targets.append(EventTarget(
                    "sqs", f"{owner_id}{event_id}", "lambda", target_arn, queue_url, queue_arn,
                    batch_size=int(props.get("BatchSize", 10))))
            elif event_type not in ("Api", "HttpApi"):
                log.info("%s.%s (%s event): not provisioned locally", owner_id, event_id, event_type)

    # -- Serverless ---------------------------------------------------------------------------
    def layer(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("LayerName") or self._physical_name(logical_id, 140)
        content = self.relative_path(props["ContentUri"])
        # A layer built by SAM puts Python packages under python/; a source dir is importable as is.
        path = content / "python" if (content / "python").is_dir() else content
        arn = self._arn("lambda", f"layer:{name}:1")
        self._layer_dirs[arn] = path
        self.add(logical_id, definition["Type"], arn, Arn=arn, LayerVersionArn=arn, Name=name)

    def function(self, logical_id: str, definition: dict) -> None:
        global_props = self.resolver.resolve(copy.deepcopy(self.globals.get("Function") or {})) or {}
        props = self.props(definition)
        name = props.get("FunctionName") or self._physical_name(logical_id, 64)
        arn = self._arn("lambda", f"function:{name}")
        code_uri = props.get("CodeUri") or global_props.get("CodeUri")
        if props.get("InlineCode") or not code_uri:
            raise ProvisionError(f"{logical_id}: only CodeUri functions can run locally")
        environment = dict(((global_props.get("Environment") or {}).get("Variables")) or {})
        environment.update(((props.get("Environment") or {}).get("Variables")) or {})
        layers = list(global_props.get("Layers") or []) + list(props.get("Layers") or [])
        layer_dirs = []
        for layer_arn in layers:
            if layer_arn in self._layer_dirs:
                layer_dirs.append(self._layer_dirs[layer_arn])
            else:
                log.info("%s: layer %s is not a local layer; not on the local PYTHONPATH", logical_id, layer_arn)
        role_arn = props.get("Role") or self.stack.resources[f"{logical_id}Role"].attributes["Arn"]
        spec = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=arn,
            code_dir=self.relative_path(code_uri),
            handler=props.get("Handler") or global_props.get("Handler") or "app.lambda_handler",
            environment={k: _env_value(v) for k, v in environment.items()},
            layer_dirs=layer_dirs,
            timeout=float(props.get("Timeout") or global_props.get("Timeout") or 3),
            memory_size=int(props.get("MemorySize") or global_props.get("MemorySize") or 128),
            runtime=props.get("Runtime") or global_props.get("Runtime") or "python3.11",
        )
        self.stack.functions[name] = spec
        self.add(logical_id, definition["Type"], name, Arn=arn, Name=name, RoleArn=role_arn)
        self._event_rules(logical_id, arn, props.get("Events"))
        for event_id, event in (props.get("Events") or {}).items():
            if event.get("Type") in ("Api", "HttpApi"):
                self._api_route(logical_id, event_id, event, name)

    def _api_route(self, function_id: str, event_id: str, event: dict, function_name: str) -> None:
        props = event.get("Properties") or {}
        kind = "rest" if event["Type"] == "Api" else "http"
        api_id = props.get("RestApiId" if kind == "rest" else "ApiId")
        api_logical = next((lid for lid, aid in self._api_ids.items() if aid == api_id), None) if api_id else (
            "ServerlessRestApi" if kind == "rest" else "ServerlessHttpApi")
        if api_logical is None:
            raise ProvisionError(f"{function_id}.{event_id}: API {api_id} is not declared in the template")
        api_definition = (self.template.get("Resources") or {}).get(api_logical, {})
        api_props = self.resolver.resolve(copy.deepcopy(api_definition.get("Properties") or {})) or {}
        globals_api = self.globals.get("Api" if kind == "rest" else "HttpApi") or {}
        stage = api_props.get("StageName") or globals_api.get("StageName") or ("Prod" if kind == "rest" else "$default")
        payload = props.get("PayloadFormatVersion") or ("1.0" if kind == "rest" else "2.0")
        method = str(props.get("Method", "ANY")).upper()
        path = props.get("Path", "/")
        if kind == "http" and "Path" not in props:
            method, path = "ANY", "/{proxy+}"  # an HttpApi event without a path is the $default route
        self.stack.api_routes.append(ApiRoute(api_logical, self._api_ids[api_logical], kind, payload, stage,
                                              "ANY" if method == "X-AMAZON-APIGATEWAY-ANY-METHOD" else method,
                                              path, function_name))

    def state_machine(self, logical_id: str, definition: dict) -> None:
        props = self.props(definition)
        name = props.get("Name") or self._physical_name(logical_id, 80)
        if props.get("DefinitionUri"):
            text = self.relative_path(props["DefinitionUri"]).read_text()
            if str(props["DefinitionUri"]).endswith((".yaml", ".yml")):
                import yaml

                text = json.dumps(yaml.safe_load(text))
        elif props.get("Definition") is not None:
            text = json.dumps(props["Definition"])
        else:
            raise ProvisionError(f"{logical_id}: no DefinitionUri or Definition")
        text = substitute(text, props.get("DefinitionSubstitutions") or {})
        json.loads(text)
        role_arn = props.get("Role") or self.stack.resources[f"{logical_id}Role"].attributes["Arn"]
        sfn = self.client("stepfunctions")
        kwargs = {"name": name, "definition": text, "roleArn": role_arn}
        if props.get("Type"):
            kwargs["type"] = props["Type"]
        arn = sfn.create_state_machine(**kwargs)["stateMachineArn"]
        self.add(logical_id, definition["Type"], arn, Arn=arn, Name=name)
        self._event_rules(logical_id, arn, props.get("Events"))

    def api(self, logical_id: str, definition: dict) -> None:
        """Declared up front (its id must resolve before the functions); routes come from the functions."""


def substitute(text: str, substitutions: dict[str, Any]) -> str:
    """Replaces `${Name}` for each given name, leaving every other `${...}` as it is."""
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", str(value))
    return text


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _generate_secret(spec: dict) -> str:
    length = int(spec.get("PasswordLength", 32))
    excluded = set(spec.get("ExcludeCharacters", ""))
    alphabet = string.ascii_letters + string.digits
    if str(spec.get("ExcludePunctuation", "false")).lower() != "true":
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    alphabet = "".join(c for c in alphabet if c not in excluded)
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    if spec.get("SecretStringTemplate") and spec.get("GenerateStringKey"):
        document = json.loads(spec["SecretStringTemplate"])
        document[spec["GenerateStringKey"]] = value
        return json.dumps(document)
    return value


_CREATORS: dict[str, Callable[[Provisioner, str, dict], None]] = {
    "AWS::IAM::Role": Provisioner.iam_role,
    "AWS::S3::Bucket": Provisioner.s3_bucket,
    "AWS::SQS::Queue": Provisioner.sqs_queue,
    "AWS::SNS::Topic": Provisioner.sns_topic,
    "AWS::SNS::Subscription": Provisioner.sns_subscription,
    "AWS::DynamoDB::Table": Provisioner.dynamodb_table,
    "AWS::Serverless::SimpleTable": Provisioner.simple_table,
    "AWS::SecretsManager::Secret": Provisioner.secret,
    "AWS::SSM::Parameter": Provisioner.ssm_parameter,
    "AWS::Logs::LogGroup": Provisioner.log_group,
    "AWS::CloudWatch::Alarm": Provisioner.alarm,
    "AWS::SES::EmailIdentity": Provisioner.email_identity,
    "AWS::KMS::Key": Provisioner.kms_key,
    "AWS::KMS::Alias": Provisioner.kms_alias,
    "AWS::SageMaker::ModelPackageGroup": Provisioner.model_package_group,
    "AWS::SageMaker::Pipeline": Provisioner.pipeline,
    "AWS::Events::Rule": Provisioner.events_rule,
    "AWS::Serverless::LayerVersion": Provisioner.layer,
    "AWS::Serverless::Function": Provisioner.function,
    "AWS::Serverless::StateMachine": Provisioner.state_machine,
    "AWS::Serverless::Api": Provisioner.api,
    "AWS::Serverless::HttpApi": Provisioner.api,
}


def provision(
    template: str | Path | dict,
    endpoint_url: str,
    *,
    stack_name: str = DEFAULT_STACK_NAME,
    parameters: dict[str, Any] | None = None,
    template_dir: str | Path | None = None,
    api_base_url: str | None = None,
    local_parameters: dict[str, Any] | None = None,
) -> Stack:
    """Creates in moto (at `endpoint_url`) what `template` declares; returns the resolved `Stack`.

    `template` is a path to a SAM/CloudFormation template or an already-loaded dict (then relative
    paths resolve against `template_dir`, default the current directory). `api_base_url` is where the
    local API server listens: API invoke URLs in the template resolve to it. `local_parameters`
    replace the template's Defaults for the parameters it declares (explicit `parameters` still
    win); names the template does not declare are ignored.
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
                              local_parameters=local_parameters)
    stack = provisioner.provision()
    log.info("stack %s: %d resources provisioned, %d skipped", stack.name, len(stack.resources), len(stack.skipped))
    return stack
