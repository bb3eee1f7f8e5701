"""Every other service the product calls: DynamoDB, SNS, SQS, SES, Secrets Manager, Lambda,
Step Functions, EventBridge, CloudWatch, CloudWatch Logs, KMS, SSM, IAM and STS."""
from __future__ import annotations

import email
import email.utils
import json
from typing import Any
from urllib.parse import urlparse

from local.aws.strict import call_sites as at
from local.aws.strict.authorization_sagemaker import pass_role, tag_context
from local.aws.strict.operation_table import Params, Scope, operation


# -- DynamoDB -----------------------------------------------------------------------------------
def table_request(scope: Scope, action: str, p: Params, enclosing: str | None = None):
    name = p["TableName"]
    arn = name if name.startswith("arn:") else scope.arn("dynamodb", "table", TableName=name)
    context: dict[str, Any] = {}
    key = p.get("Key")
    if isinstance(key, dict) and len(key) == 1:
        # dynamodb:LeadingKeys is the partition key's value; a one-attribute key is the partition key.
        (value,) = key.values()
        context["dynamodb:LeadingKeys"] = [next(iter(value.values()))]
    if p.get("ReturnValues") and action != "dynamodb:ConditionCheckItem":
        context["dynamodb:ReturnValues"] = p["ReturnValues"]
    if p.get("ReturnConsumedCapacity"):
        context["dynamodb:ReturnConsumedCapacity"] = p["ReturnConsumedCapacity"]
    if enclosing and action != "dynamodb:ConditionCheckItem":
        context["dynamodb:EnclosingOperation"] = enclosing
    return scope.request(action, arn, context, resource_type="table")


for _op, _callers in (
    ("GetItem", (at.INTAKE_IDEMPOTENCY, at.SCORING_IDEMPOTENCY, at.APPROVAL_API, at.CLI, at.CONSOLE)),
    ("PutItem", (at.INTAKE_IDEMPOTENCY, at.SCORING_IDEMPOTENCY, at.STATE_MACHINE, at.NOTIFY_APPROVAL)),
    ("UpdateItem", (at.INTAKE_IDEMPOTENCY, at.SCORING_IDEMPOTENCY, at.STATE_MACHINE)),
    ("DeleteItem", (at.INTAKE_IDEMPOTENCY, at.SCORING_IDEMPOTENCY, at.APPROVAL_API)),
):
    def _item(p: Params, scope: Scope, _action=f"dynamodb:{_op}"):
        return [table_request(scope, _action, p)]
    operation("dynamodb", _op, [f"dynamodb:{_op}"], _callers)(_item)

_TRANSACT_ACTIONS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                     "ConditionCheck": "dynamodb:ConditionCheckItem"}


@operation("dynamodb", "TransactWriteItems", list(_TRANSACT_ACTIONS.values()), (at.APPROVAL_API,))
def transact_write_items(p: Params, scope: Scope):
    # IAM has no TransactWriteItems action: each item is authorized as the item action it performs.
    requests = []
    for item in p["TransactItems"]:
        ((kind, member),) = item.items()
        requests.append(table_request(scope, _TRANSACT_ACTIONS[kind], member, enclosing="TransactWriteItems"))
    return requests


@operation("dynamodb", "CreateTable", ["dynamodb:CreateTable"], (at.PROVISION,))
def create_table(p: Params, scope: Scope):
    return [scope.request("dynamodb:CreateTable", scope.arn("dynamodb", "table", TableName=p["TableName"]),
                          tag_context(p.get("Tags")), resource_type="table")]


@operation("dynamodb", "UpdateTimeToLive", ["dynamodb:UpdateTimeToLive"], (at.PROVISION,))
def update_time_to_live(p: Params, scope: Scope):
    return [table_request(scope, "dynamodb:UpdateTimeToLive", {"TableName": p["TableName"]})]


# -- SNS ----------------------------------------------------------------------------------------
@operation("sns", "Publish", ["sns:Publish"], (at.INTAKE_NOTIFY, at.PIPELINE_STATUS_NOTIFY, at.DEPLOY_NOTIFY,
                                               at.EVENT_DISPATCH, at.DRIFT_ALARM, at.ALARM_EVALUATOR, at.SCORING_NOTIFY))
def publish(p: Params, scope: Scope):
    return [scope.request("sns:Publish", p.get("TopicArn") or p["TargetArn"], resource_type="topic")]


@operation("sns", "CreateTopic", ["sns:CreateTopic"], (at.PROVISION,))
def create_topic(p: Params, scope: Scope):
    return [scope.resource("sns:CreateTopic", "topic", tag_context(p.get("Tags")), TopicName=p["Name"])]


@operation("sns", "Subscribe", ["sns:Subscribe"], (at.PROVISION,))
def subscribe(p: Params, scope: Scope):
    context = {"sns:Protocol": p["Protocol"]}
    if p.get("Endpoint"):
        context["sns:Endpoint"] = p["Endpoint"]
    return [scope.request("sns:Subscribe", p["TopicArn"], context, resource_type="topic")]


# -- SQS ----------------------------------------------------------------------------------------
def queue_arn(scope: Scope, queue_url: str) -> str:
    """`http(s)://host/<account>/<name>` -> `arn:aws:sqs:<region>:<account>:<name>`."""
    parts = urlparse(queue_url).path.strip("/").split("/")
    account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (scope.account, parts[-1])
    return f"arn:{scope.partition}:sqs:{scope.region}:{account}:{name}"


for _op, _callers in (
    ("SendMessage", (at.EVENTBRIDGE_DEAD_LETTERS, at.FUNCTION_DEAD_LETTERS, at.EVENT_DISPATCH, at.SCHEDULE_DEAD_LETTERS)),
    ("ReceiveMessage", (at.EVENT_DISPATCH,)),
    ("DeleteMessage", (at.EVENT_DISPATCH,)),
    ("GetQueueAttributes", (at.EVENT_DISPATCH,)),
):
    def _queue(p: Params, scope: Scope, _action=f"sqs:{_op}"):
        return [scope.request(_action, queue_arn(scope, p["QueueUrl"]), resource_type="queue")]
    operation("sqs", _op, [f"sqs:{_op}"], _callers)(_queue)


@operation("sqs", "SetQueueAttributes", ["sqs:SetQueueAttributes"], (at.PROVISION,))
def set_queue_attributes(p: Params, scope: Scope):
    return [scope.request("sqs:SetQueueAttributes", queue_arn(scope, p["QueueUrl"]), resource_type="queue")]


@operation("sqs", "GetQueueUrl", ["sqs:GetQueueUrl"], (at.PROVISION, at.EVENT_DISPATCH))
def get_queue_url(p: Params, scope: Scope):
    account = p.get("QueueOwnerAWSAccountId") or scope.account
    return [scope.request("sqs:GetQueueUrl", f"arn:{scope.partition}:sqs:{scope.region}:{account}:{p['QueueName']}",
                          resource_type="queue")]


@operation("sqs", "CreateQueue", ["sqs:CreateQueue"], (at.PROVISION,))
def create_queue(p: Params, scope: Scope):
    tags = [{"Key": k, "Value": v} for k, v in (p.get("tags") or {}).items()]
    return [scope.resource("sqs:CreateQueue", "queue", tag_context(tags), QueueName=p["QueueName"])]


# -- SES ----------------------------------------------------------------------------------------
def _addresses(values) -> list[str]:
    return [address for _, address in email.utils.getaddresses(list(values)) if address]


def _send(scope: Scope, action: str, source: str | None, recipients: list[str], headers) -> list:
    display, address = email.utils.parseaddr(source or (headers.get("From") if headers else "") or "")
    context: dict[str, Any] = {"ses:FromAddress": address, "ses:Recipients": recipients, "ses:ApiVersion": "1"}
    if display:
        context["ses:FromDisplayName"] = display
    return_path = headers.get("Return-Path") if headers else None
    if return_path:
        context["ses:FeedbackAddress"] = email.utils.parseaddr(return_path)[1]
    # SES authorizes the identity it sends from: the verified address, else its verified domain.
    identity = (scope.lookup.ses_identity(address) if scope.lookup else None) or address
    return [scope.resource(action, "identity", context, IdentityName=identity)]


@operation("ses", "SendRawEmail", ["ses:SendRawEmail"], (at.NOTIFY_APPROVAL,))
def send_raw_email(p: Params, scope: Scope):
    data = p["RawMessage"]["Data"]
    message = email.message_from_bytes(data if isinstance(data, bytes) else str(data).encode())
    recipients = list(p.get("Destinations") or []) or [
        value for header in ("To", "Cc", "Bcc") for value in message.get_all(header) or []]
    return _send(scope, "ses:SendRawEmail", p.get("Source"), _addresses(recipients), message)


@operation("ses", "SendEmail", ["ses:SendEmail"], ())
def send_email(p: Params, scope: Scope):
    destination = p.get("Destination") or {}
    recipients = [*destination.get("ToAddresses", []), *destination.get("CcAddresses", []),
                  *destination.get("BccAddresses", [])]
    headers = {"Return-Path": p["ReturnPath"]} if p.get("ReturnPath") else {}
    return _send(scope, "ses:SendEmail", p["Source"], _addresses(recipients), headers)


@operation("ses", "VerifyEmailIdentity", ["ses:VerifyEmailIdentity"], (at.PROVISION,))
def verify_email_identity(p: Params, scope: Scope):
    return [scope.request("ses:VerifyEmailIdentity", context={"ses:ApiVersion": "1"})]


@operation("ses", "VerifyDomainIdentity", ["ses:VerifyDomainIdentity"], (at.PROVISION,))
def verify_domain_identity(p: Params, scope: Scope):
    return [scope.request("ses:VerifyDomainIdentity", context={"ses:ApiVersion": "1"})]


# -- Secrets Manager ----------------------------------------------------------------------------
def secret_request(scope: Scope, action: str, p: Params, context: dict[str, Any]):
    secret_id = p["SecretId"]
    arn = secret_id if secret_id.startswith("arn:") else (scope.lookup.secret_arn(secret_id) if scope.lookup else None)
    # Unknown secret (or no lookup): the name with AWS's random suffix left open.
    arn = arn or scope.arn("secretsmanager", "Secret", SecretId=f"{secret_id}-??????")
    return scope.request(action, arn, {"secretsmanager:SecretId": secret_id, **context},
                         shown_resource=secret_id, resource_type="Secret")


@operation("secretsmanager", "GetSecretValue", ["secretsmanager:GetSecretValue"],
           (at.NOTIFY_APPROVAL_SECRETS, at.APPROVAL_API_SECRETS))
def get_secret_value(p: Params, scope: Scope):
    context = {key: p[member] for member, key in (("VersionId", "secretsmanager:VersionId"),
                                                  ("VersionStage", "secretsmanager:VersionStage")) if p.get(member)}
    return [secret_request(scope, "secretsmanager:GetSecretValue", p, context)]


@operation("secretsmanager", "PutSecretValue", ["secretsmanager:PutSecretValue"], (at.CLOUD,))
def put_secret_value(p: Params, scope: Scope):
    return [secret_request(scope, "secretsmanager:PutSecretValue", p, {})]


@operation("secretsmanager", "CreateSecret", ["secretsmanager:CreateSecret"], (at.PROVISION,))
def create_secret(p: Params, scope: Scope):
    context = {"secretsmanager:Name": p["Name"], **tag_context(p.get("Tags"))}
    if p.get("Description"):
        context["secretsmanager:Description"] = p["Description"]
    if p.get("KmsKeyId"):
        context["secretsmanager:KmsKeyId"] = p["KmsKeyId"]
    return [scope.resource("secretsmanager:CreateSecret", "Secret", context, shown_resource=p["Name"],
                           SecretId=f"{p['Name']}-??????")]


# -- Lambda -------------------------------------------------------------------------------------
@operation("lambda", "Invoke", ["lambda:InvokeFunction"], (at.EVENTBRIDGE_TO_LAMBDA, at.API_GATEWAY, at.STATE_MACHINE,
                                                           at.EVENT_DISPATCH, at.APPROVAL_API_INVOKES))
def invoke(p: Params, scope: Scope):
    name = p["FunctionName"]
    if not name.startswith("arn:"):
        name = scope.arn("lambda", "function", FunctionName=name)
    if p.get("Qualifier") and name.count(":") == 6:
        name = f"{name}:{p['Qualifier']}"
    return [scope.request("lambda:InvokeFunction", name, resource_type="function")]


# -- Step Functions -----------------------------------------------------------------------------
@operation("stepfunctions", "StartExecution", ["states:StartExecution"], (at.EVENTBRIDGE_TO_STATE_MACHINE,
                                                                         at.EVENT_DISPATCH))
def start_execution(p: Params, scope: Scope):
    return [scope.request("states:StartExecution", p["stateMachineArn"], resource_type="statemachine")]


@operation("stepfunctions", "DescribeExecution", ["states:DescribeExecution"], (at.CLI,))
def describe_execution(p: Params, scope: Scope):
    return [scope.request("states:DescribeExecution", p["executionArn"], resource_type="execution")]


@operation("stepfunctions", "ListExecutions", ["states:ListExecutions"], (at.CLI,))
def list_executions(p: Params, scope: Scope):
    return [scope.request("states:ListExecutions", p["stateMachineArn"], resource_type="statemachine")]


@operation("stepfunctions", "GetExecutionHistory", ["states:GetExecutionHistory"], (at.CLI,))
def get_execution_history(p: Params, scope: Scope):
    return [scope.request("states:GetExecutionHistory", p["executionArn"], resource_type="execution")]


@operation("stepfunctions", "CreateStateMachine", ["states:CreateStateMachine", "iam:PassRole"], (at.PROVISION,))
def create_state_machine(p: Params, scope: Scope):
    tags = [{"Key": t["key"], "Value": t.get("value", "")} for t in p.get("tags") or []]
    return [scope.resource("states:CreateStateMachine", "statemachine", tag_context(tags), StateMachineName=p["name"]),
            *pass_role(scope, p.get("roleArn"), "states.amazonaws.com")]


# -- EventBridge --------------------------------------------------------------------------------
def bus_arn(scope: Scope, name: str | None) -> str:
    name = name or "default"
    return name if name.startswith("arn:") else scope.arn("events", "event-bus", EventBusName=name)


def rule_arn(scope: Scope, rule: str, bus: str | None) -> tuple[str, str]:
    if rule.startswith("arn:"):
        return rule, "rule-on-default-event-bus" if rule.count("/") == 1 else "rule-on-custom-event-bus"
    if not bus or bus == "default":
        return scope.arn("events", "rule-on-default-event-bus", RuleName=rule), "rule-on-default-event-bus"
    bus_name = bus.rsplit("/", 1)[-1]
    return (scope.arn("events", "rule-on-custom-event-bus", EventBusName=bus_name, RuleName=rule),
            "rule-on-custom-event-bus")


@operation("events", "PutEvents", ["events:PutEvents"], (at.EXECUTOR_INTERNAL, at.EVENT_DISPATCH, at.ALARM_EVALUATOR))
def put_events(p: Params, scope: Scope):
    by_bus: dict[str, list[dict]] = {}
    for entry in p["Entries"]:
        by_bus.setdefault(bus_arn(scope, entry.get("EventBusName")), []).append(entry)
    return [scope.request("events:PutEvents", arn, {
        "events:source": sorted({e["Source"] for e in entries if e.get("Source")}),
        "events:detail-type": sorted({e["DetailType"] for e in entries if e.get("DetailType")}),
    }, resource_type="event-bus") for arn, entries in by_bus.items()]


@operation("events", "PutRule", ["events:PutRule"], (at.PROVISION,))
def put_rule(p: Params, scope: Scope):
    arn, kind = rule_arn(scope, p["Name"], p.get("EventBusName"))
    context: dict[str, Any] = tag_context(p.get("Tags"))
    try:
        pattern = json.loads(p.get("EventPattern") or "{}")
    except ValueError:
        pattern = {}
    for field, key in (("source", "events:source"), ("detail-type", "events:detail-type")):
        values = pattern.get(field) if isinstance(pattern, dict) else None
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            context[key] = values
    return [scope.request("events:PutRule", arn, context, resource_type=kind)]


@operation("events", "PutTargets", ["events:PutTargets", "iam:PassRole"], (at.PROVISION,))
def put_targets(p: Params, scope: Scope):
    arn, kind = rule_arn(scope, p["Rule"], p.get("EventBusName"))
    targets = list(p["Targets"])
    requests = [scope.request("events:PutTargets", arn, {"events:TargetArn": [t["Arn"] for t in targets]},
                              resource_type=kind)]
    for role in sorted({t["RoleArn"] for t in targets if t.get("RoleArn")}):
        requests += pass_role(scope, role, "events.amazonaws.com")
    return requests


# -- CloudWatch and CloudWatch Logs -------------------------------------------------------------
@operation("cloudwatch", "PutMetricAlarm", ["cloudwatch:PutMetricAlarm"], (at.PROVISION,))
def put_metric_alarm(p: Params, scope: Scope):
    context = {**tag_context(p.get("Tags"))}
    if p.get("AlarmActions"):
        context["cloudwatch:AlarmActions"] = list(p["AlarmActions"])
    return [scope.resource("cloudwatch:PutMetricAlarm", "alarm", context, AlarmName=p["AlarmName"])]


@operation("cloudwatch", "PutMetricData", ["cloudwatch:PutMetricData"], (at.DRIFT,))
def put_metric_data(p: Params, scope: Scope):
    return [scope.request("cloudwatch:PutMetricData", context={"cloudwatch:namespace": p["Namespace"]})]


# Reading metrics back (the drift monitor's, in tests and by the person at the keyboard): no
# resource-level permissions, no condition keys.
@operation("cloudwatch", "GetMetricStatistics", ["cloudwatch:GetMetricStatistics"], (at.CLI,))
def get_metric_statistics(p: Params, scope: Scope):
    return [scope.request("cloudwatch:GetMetricStatistics")]


@operation("logs", "CreateLogGroup", ["logs:CreateLogGroup"], (at.PROVISION, at.JOB_LOGS, at.FUNCTION_LOGS))
def create_log_group(p: Params, scope: Scope):
    tags = [{"Key": k, "Value": v} for k, v in (p.get("tags") or {}).items()]
    return [scope.resource("logs:CreateLogGroup", "log-group", tag_context(tags), LogGroupName=p["logGroupName"])]


@operation("logs", "CreateLogStream", ["logs:CreateLogStream"], (at.JOB_LOGS, at.FUNCTION_LOGS))
def create_log_stream(p: Params, scope: Scope):
    return [scope.resource("logs:CreateLogStream", "log-stream", LogGroupName=p["logGroupName"],
                           LogStreamName=p["logStreamName"])]


@operation("logs", "PutLogEvents", ["logs:PutLogEvents"], (at.JOB_LOGS, at.FUNCTION_LOGS))
def put_log_events(p: Params, scope: Scope):
    return [scope.resource("logs:PutLogEvents", "log-stream", LogGroupName=p["logGroupName"],
                           LogStreamName=p["logStreamName"])]


@operation("logs", "DescribeLogStreams", ["logs:DescribeLogStreams"], (at.JOB_LOGS, at.CLI, at.CONSOLE))
def describe_log_streams(p: Params, scope: Scope):
    return [scope.resource("logs:DescribeLogStreams", "log-group", LogGroupName=p["logGroupName"])]


@operation("logs", "GetLogEvents", ["logs:GetLogEvents"], (at.CONSOLE,))
def get_log_events(p: Params, scope: Scope):
    return [scope.resource("logs:GetLogEvents", "log-stream", LogGroupName=p["logGroupName"],
                           LogStreamName=p["logStreamName"])]


@operation("logs", "PutRetentionPolicy", ["logs:PutRetentionPolicy"], (at.PROVISION,))
def put_retention_policy(p: Params, scope: Scope):
    return [scope.resource("logs:PutRetentionPolicy", "log-group", LogGroupName=p["logGroupName"])]


# -- KMS and SSM --------------------------------------------------------------------------------
@operation("kms", "CreateKey", ["kms:CreateKey"], (at.PROVISION,))
def create_key(p: Params, scope: Scope):
    context: dict[str, Any] = {"kms:CallerAccount": scope.account, **tag_context(
        [{"Key": t["TagKey"], "Value": t.get("TagValue", "")} for t in p.get("Tags") or []])}
    for member, key in (("KeySpec", "kms:KeySpec"), ("KeyUsage", "kms:KeyUsage"), ("Origin", "kms:KeyOrigin")):
        if p.get(member):
            context[key] = p[member]
    return [scope.request("kms:CreateKey", context=context)]


@operation("kms", "CreateAlias", ["kms:CreateAlias"], (at.PROVISION,))
def create_alias(p: Params, scope: Scope):
    # CreateAlias needs the permission on both the alias and the key it points at.
    key = p["TargetKeyId"]
    key_arn = key if key.startswith("arn:") else scope.arn("kms", "key", KeyId=key)
    alias = p["AliasName"].removeprefix("alias/")
    context = {"kms:CallerAccount": scope.account}
    return [scope.resource("kms:CreateAlias", "alias", context, Alias=alias),
            scope.request("kms:CreateAlias", key_arn, context, resource_type="key")]


@operation("ssm", "PutParameter", ["ssm:PutParameter"], (at.PROVISION,))
def put_parameter(p: Params, scope: Scope):
    context = {**tag_context(p.get("Tags"))}
    if p.get("Overwrite") is not None:
        context["ssm:Overwrite"] = str(bool(p["Overwrite"])).lower()
    return [scope.resource("ssm:PutParameter", "parameter", context,
                           ParameterNameWithoutLeadingSlash=p["Name"].lstrip("/"))]


# -- IAM and STS --------------------------------------------------------------------------------
def role_arn(scope: Scope, name: str, path: str | None = None) -> str:
    if path is None and scope.lookup is not None:
        known = scope.lookup.role_arn(name)
        if known:
            return known
    return scope.arn("iam", "role", RoleNameWithPath=f"{(path or '/').strip('/')}/{name}".lstrip("/"))


@operation("iam", "CreateRole", ["iam:CreateRole"], (at.PROVISION,))
def create_role(p: Params, scope: Scope):
    context = tag_context(p.get("Tags"))
    if p.get("PermissionsBoundary"):
        context["iam:PermissionsBoundary"] = p["PermissionsBoundary"]
    return [scope.request("iam:CreateRole", role_arn(scope, p["RoleName"], p.get("Path", "/")), context,
                          resource_type="role")]


@operation("iam", "GetRole", ["iam:GetRole"], (at.PROVISION,))
def get_role(p: Params, scope: Scope):
    return [scope.request("iam:GetRole", role_arn(scope, p["RoleName"]), resource_type="role")]


@operation("iam", "PutRolePolicy", ["iam:PutRolePolicy"], (at.PROVISION,))
def put_role_policy(p: Params, scope: Scope):
    return [scope.request("iam:PutRolePolicy", role_arn(scope, p["RoleName"]), resource_type="role")]


@operation("iam", "AttachRolePolicy", ["iam:AttachRolePolicy"], (at.PROVISION,))
def attach_role_policy(p: Params, scope: Scope):
    return [scope.request("iam:AttachRolePolicy", role_arn(scope, p["RoleName"]), {"iam:PolicyARN": p["PolicyArn"]},
                          resource_type="role")]


@operation("sts", "AssumeRole", ["sts:AssumeRole"], (at.ROLE_CREDENTIALS,))
def assume_role(p: Params, scope: Scope):
    context = {"sts:RoleSessionName": p["RoleSessionName"], **tag_context(p.get("Tags"))}
    if p.get("ExternalId"):
        context["sts:ExternalId"] = p["ExternalId"]
    return [scope.request("sts:AssumeRole", p["RoleArn"], context, resource_type="role")]
