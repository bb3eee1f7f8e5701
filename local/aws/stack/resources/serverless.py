"""AWS::Serverless::Function, ::LayerVersion, ::StateMachine and the routes of ::Api / ::HttpApi
(recorded on the Stack for the Lambda runtime and the local API server)."""
from __future__ import annotations

import copy
import json
import logging
from typing import Any, TYPE_CHECKING

from local.aws.stack.intrinsics import substitute
from local.aws.stack.model import ApiRoute, EventTarget, FunctionSpec, ProvisionError
from local.aws.stack.resources import eventbridge, sns

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner

log = logging.getLogger(__name__)


# -- Serverless ---------------------------------------------------------------------------
def layer(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("LayerName") or p.physical_name(logical_id, 140)
    content = p.relative_path(props["ContentUri"])
    # A layer built by SAM puts Python packages under python/; a source dir is importable as is.
    path = content / "python" if (content / "python").is_dir() else content
    arn = p.arn("lambda", f"layer:{name}:1")
    p.layer_dirs[arn] = path
    p.add(logical_id, definition["Type"], arn, Arn=arn, LayerVersionArn=arn, Name=name)


def function(p: Provisioner, logical_id: str, definition: dict) -> None:
    global_props = p.resolver.resolve(copy.deepcopy(p.globals.get("Function") or {})) or {}
    props = p.props(definition)
    name = props.get("FunctionName") or p.physical_name(logical_id, 64)
    arn = p.arn("lambda", f"function:{name}")
    code_uri = props.get("CodeUri") or global_props.get("CodeUri")
    if props.get("InlineCode") or not code_uri:
        raise ProvisionError(f"{logical_id}: only CodeUri functions can run locally")
    if not (props.get("Runtime") or global_props.get("Runtime")):
        raise ProvisionError(f"{logical_id}: no Runtime (the local face runs a function on its runtime's interpreter)")
    environment = dict(((global_props.get("Environment") or {}).get("Variables")) or {})
    environment.update(((props.get("Environment") or {}).get("Variables")) or {})
    layers = list(global_props.get("Layers") or []) + list(props.get("Layers") or [])
    layer_dirs, managed_layers = [], []
    for layer_arn in layers:
        if layer_arn in p.layer_dirs:
            layer_dirs.append(p.layer_dirs[layer_arn])
        elif p.public_parameters.layer(layer_arn) is not None:
            managed_layers.append(p.public_parameters.layer(layer_arn))
        else:
            raise ProvisionError(f"{logical_id}: layer {layer_arn} is neither a layer of this stack nor an "
                                 f"AWS-managed layer the local face knows (local/aws/public_parameters.py)")
    architectures = props.get("Architectures") or global_props.get("Architectures") or ["x86_64"]
    role_arn = props["Role"]  # SAM's generated role when the template names none (Provisioner._with_sam_generated)
    spec = FunctionSpec(
        logical_id=logical_id,
        name=name,
        arn=arn,
        code_dir=p.relative_path(code_uri),
        handler=props.get("Handler") or global_props.get("Handler") or "app.lambda_handler",
        environment={k: env_value(v) for k, v in environment.items()},
        layer_dirs=layer_dirs,
        timeout=float(props.get("Timeout") or global_props.get("Timeout") or 3),
        memory_size=int(props.get("MemorySize") or global_props.get("MemorySize") or 128),
        runtime=props.get("Runtime") or global_props.get("Runtime"),
        role_arn=role_arn,
        dead_letter_arn=(props.get("DeadLetterQueue") or {}).get("TargetArn"),
        max_retry_attempts=int((props.get("EventInvokeConfig") or global_props.get("EventInvokeConfig") or {})
                               .get("MaximumRetryAttempts", 2)),
        managed_layers=managed_layers,
        architecture=architectures[0],
        log_group_name=str(((props.get("LoggingConfig") or global_props.get("LoggingConfig") or {})
                            .get("LogGroup")) or ""),
    )
    p.stack.functions[name] = spec
    p.add(logical_id, definition["Type"], name, Arn=arn, Name=name, RoleArn=role_arn)
    sam_event_rules(p, logical_id, arn, props.get("Events"))
    for event_id, event in (props.get("Events") or {}).items():
        if event.get("Type") in ("Api", "HttpApi"):
            api_route(p, logical_id, event_id, event, name)


def permission(p: Provisioner, logical_id: str, definition: dict) -> None:
    """AWS::Lambda::Permission (SAM generates one per EventBridge and API event): a statement of the
    function's resource policy, written as Lambda's AddPermission writes it."""
    props = p.props(definition)
    spec = p.stack.function(props["FunctionName"])
    if spec is None:
        raise ProvisionError(f"{logical_id}: function {props['FunctionName']} is not in the stack")
    statement: dict = {"Sid": logical_id, "Effect": "Allow", "Principal": {"Service": props["Principal"]},
                       "Action": props["Action"], "Resource": spec.arn}
    conditions: dict = {}
    if props.get("SourceArn"):
        conditions["ArnLike"] = {"AWS:SourceArn": props["SourceArn"]}
    if props.get("SourceAccount"):
        conditions["StringEquals"] = {"AWS:SourceAccount": props["SourceAccount"]}
    if conditions:
        statement["Condition"] = conditions
    spec.permissions.append(statement)
    p.add(logical_id, definition["Type"], logical_id)


def api_route(p: Provisioner, function_id: str, event_id: str, event: dict, function_name: str) -> None:
    props = event.get("Properties") or {}
    kind = "rest" if event["Type"] == "Api" else "http"
    api_id = props.get("RestApiId" if kind == "rest" else "ApiId")
    api_logical = next((lid for lid, aid in p.api_ids.items() if aid == api_id), None) if api_id else (
        "ServerlessRestApi" if kind == "rest" else "ServerlessHttpApi")
    if api_logical is None:
        raise ProvisionError(f"{function_id}.{event_id}: API {api_id} is not declared in the template")
    api_definition = (p.template.get("Resources") or {}).get(api_logical, {})
    api_props = p.resolver.resolve(copy.deepcopy(api_definition.get("Properties") or {})) or {}
    globals_api = p.globals.get("Api" if kind == "rest" else "HttpApi") or {}
    stage = api_props.get("StageName") or globals_api.get("StageName") or ("Prod" if kind == "rest" else "$default")
    payload = props.get("PayloadFormatVersion") or ("1.0" if kind == "rest" else "2.0")
    method = str(props.get("Method", "ANY")).upper()
    path = props.get("Path", "/")
    if kind == "http" and "Path" not in props:
        method, path = "ANY", "/{proxy+}"  # an HttpApi event without a path is the $default route
    p.stack.api_routes.append(ApiRoute(api_logical, p.api_ids[api_logical], kind, payload, stage,
                                       "ANY" if method == "X-AMAZON-APIGATEWAY-ANY-METHOD" else method,
                                       path, function_name))


def state_machine(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("Name") or p.physical_name(logical_id, 80)
    if props.get("DefinitionUri"):
        text = p.relative_path(props["DefinitionUri"]).read_text()
        if str(props["DefinitionUri"]).endswith((".yaml", ".yml")):
            import yaml

            text = json.dumps(yaml.safe_load(text))
    elif props.get("Definition") is not None:
        text = json.dumps(props["Definition"])
    else:
        raise ProvisionError(f"{logical_id}: no DefinitionUri or Definition")
    text = substitute(text, props.get("DefinitionSubstitutions") or {})
    json.loads(text)
    role_arn = props.get("Role") or p.stack.resources[f"{logical_id}Role"].attributes["Arn"]
    sfn = p.client("stepfunctions")
    kwargs = {"name": name, "definition": text, "roleArn": role_arn}
    if props.get("Type"):
        kwargs["type"] = props["Type"]
    arn = sfn.create_state_machine(**kwargs)["stateMachineArn"]
    p.add(logical_id, definition["Type"], arn, Arn=arn, Name=name)
    sam_event_rules(p, logical_id, arn, props.get("Events"))


def api(p: Provisioner, logical_id: str, definition: dict) -> None:
    """Declared up front (its id must resolve before the functions); routes come from the functions."""


def env_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def sam_event_rules(p: Provisioner, owner_id: str, target_arn: str, events: dict) -> None:
    """SAM `EventBridgeRule`/`CloudWatchEvent` events of a function or state machine."""
    for event_id, event in (events or {}).items():
        event_type, props = event.get("Type"), event.get("Properties") or {}
        if event_type in ("EventBridgeRule", "CloudWatchEvent", "Schedule", "ScheduleV2"):
            name = props.get("RuleName") or props.get("Name") or p.physical_name(f"{owner_id}{event_id}", 64)
            target = {"Id": (props.get("Target") or {}).get("Id") or f"{owner_id}{event_id}"[:64], "Arn": target_arn}
            if f"{owner_id}{event_id}Role" in p.sam_generated:  # SAM's role for starting a state machine
                target["RoleArn"] = p.role_arn_of(f"{owner_id}{event_id}Role")
            for key in ("Input", "InputPath", "InputTransformer", "RetryPolicy", "DeadLetterConfig"):
                if props.get(key) is not None:
                    target[key] = props[key]
            rule_props = {"EventPattern": props.get("Pattern"), "EventBusName": props.get("EventBusName"),
                          "ScheduleExpression": props.get("Schedule")}
            if props.get("Enabled") is False or str(props.get("State", "ENABLED")).upper() == "DISABLED":
                rule_props["State"] = "DISABLED"
            arn = eventbridge.put_rule(p, name, rule_props, [target], f"{owner_id}.{event_id}")
            p.add(f"{owner_id}{event_id}", "AWS::Events::Rule", name, Arn=arn, Name=name)
        elif event_type == "SNS":
            sns.subscribe(p, f"{owner_id}{event_id}", props["Topic"], "lambda", target_arn,
                            {k: props[k] for k in ("FilterPolicy",) if k in props})
        elif event_type == "SQS":
            queue_arn = props["Queue"]
            queue_name = queue_arn.rsplit(":", 1)[1]
            queue_url = p.client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"]
            p.stack.event_targets.append(EventTarget(
                "sqs", f"{owner_id}{event_id}", "lambda", target_arn, queue_url, queue_arn,
                batch_size=int(props.get("BatchSize", 10))))
        elif event_type not in ("Api", "HttpApi"):
            log.info("%s.%s (%s event): not provisioned locally", owner_id, event_id, event_type)
