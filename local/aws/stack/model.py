"""The provisioned stack as the local runtime sees it: resources, functions, event targets, API routes.

`Stack` is what provisioning returns; the Lambda runtime, the event dispatcher, the API server and
the pipeline executor read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STACK_NAME = "mlops-local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"


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


@dataclass(frozen=True)
class ManagedLayer:
    """A layer AWS publishes (not built from this repository): what it holds, as pip requirements,
    and the distributions its build removes because the runtime already ships them."""

    arn: str
    packages: tuple[str, ...]
    provided_by_runtime: tuple[str, ...] = ()


@dataclass
class FunctionSpec:
    """A Lambda function the local lambda runtime can run: everything it gets from Lambda."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # "app.lambda_handler"
    environment: dict[str, str]
    layer_dirs: list[Path]  # source dirs of the stack's own layers (their requirements.txt is installed)
    timeout: float
    memory_size: int  # MB: the worker is killed as Lambda kills a function that uses more
    runtime: str  # "python3.13": the interpreter the worker runs on
    role_arn: str = ""  # the execution role its code runs with
    dead_letter_arn: str | None = None  # DeadLetterQueue of asynchronous invocations (SQS)
    max_retry_attempts: int = 2  # EventInvokeConfig.MaximumRetryAttempts of asynchronous invocations
    # Its resource policy: what Lambda permissions (SAM's AWS::Lambda::Permission) let invoke it.
    permissions: list[dict] = field(default_factory=list)
    managed_layers: list[ManagedLayer] = field(default_factory=list)  # AWS-published layers, in order
    architecture: str = "x86_64"
    # LoggingConfig.LogGroup, where Lambda sends the function's output; "" = Lambda's default.
    log_group_name: str = ""

    @property
    def log_group(self) -> str:
        return self.log_group_name or f"/aws/lambda/{self.name}"

    def resource_policy(self) -> dict | None:
        if not self.permissions:
            return None
        return {"PolicyName": f"{self.name} function policy",
                "PolicyDocument": {"Version": "2012-10-17", "Statement": list(self.permissions)}}


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
    role_arn: str | None = None  # the role EventBridge uses for this target (state machines)
    rule_arn: str | None = None  # the rule delivering (aws:SourceArn of the delivery)


@dataclass
class ApiRoute:
    """An API Gateway route served locally by `local.aws.api_gateway`."""

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
    # Resource policies the strict face evaluates that moto does not hold (S3 bucket policies: moto's S3
    # would apply them itself, wrongly) or holds in a form the face reads from here (queue policies).
    resource_policies: dict[str, dict] = field(default_factory=dict)  # resource ARN -> {PolicyName, PolicyDocument}
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
