"""Secure and operable by default: checkov finds nothing on the template (nor on the CloudFormation
SAM turns it into) beyond justified skips, and the properties a later change could silently drop are
asserted here: scoped IAM, a role per function and state machine, private TLS-only logged buckets,
log retention, a watched dead-letter queue for every async path, and one dashboard."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
TOOLS_BIN = ROOT / ".venv-tools" / "bin"
CHECKOV = TOOLS_BIN / "checkov"
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# Checks skipped for the whole template, each justified in .checkov.yaml and docs/deploy.md.
GLOBAL_SKIPS = {"CKV_AWS_117", "CKV_AWS_173", "CKV_AWS_115", "CKV_AWS_158", "CKV_AWS_119", "CKV_AWS_149", "CKV_AWS_27"}
# APIs that support no resource-level permissions: the only actions allowed on Resource "*".
UNSCOPABLE_ACTIONS = {
    "sagemaker:ListModelPackages", "sagemaker:ListArtifacts", "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
}


def ensure_tools() -> Path:
    """The tools virtualenv (`make tools`, a prerequisite of `make test`); installed here if a test run
    started some other way finds it missing."""
    if not all((TOOLS_BIN / tool).exists() for tool in ("checkov", "sam", "python")):
        subprocess.run(["make", "-C", str(ROOT), "tools"], check=True, timeout=1200)
    return TOOLS_BIN


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE_PATH))))


def of_type(template, type_name: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_name}


def refers_to(value: Any, logical_id: str) -> bool:
    text = json.dumps(value)
    return bool(re.search(rf'"Ref": "{logical_id}"|"Fn::GetAtt": \["{logical_id}"|\$\{{{logical_id}[.}}]', text))


def statements(node: Any):
    """Every IAM/resource policy statement anywhere under ``node``."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield node
        for value in node.values():
            yield from statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from statements(value)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def run_checkov(path: Path) -> dict[str, Any]:
    ensure_tools()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [str(CHECKOV), "-f", str(path), "--config-file", str(CHECKOV_CONFIG), "-o", "json"],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return json.loads(result.stdout)


# -- checkov ------------------------------------------------------------------------------------

def test_checkov_finds_nothing_on_the_template(template):
    report = run_checkov(TEMPLATE_PATH)
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50  # it really looked at the resources
    assert report["summary"]["resource_count"] == len(template["Resources"])


def inline_skips(template) -> dict[str, set[str]]:
    skips = {}
    for name, resource in template["Resources"].items():
        entries = ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []
        if entries:
            skips[name] = {entry["id"] for entry in entries}
    return skips


def generated_cloudformation(template) -> dict:
    """The CloudFormation SAM generates from the template, code URIs set as `sam package` sets them."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self):
            return {}

    sam = json.loads(json.dumps(template))
    for name, resource in sam["Resources"].items():
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(resource.get("Properties", {}).get(key), str):  # what `sam package` does
                resource["Properties"][key] = f"s3://packaged-artifacts/{name}.zip"
    parameters = {"JobImageUri": "image", "PipelineDefinitionBucket": "bucket", "PipelineDefinitionKey": "key"}
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return transform(sam, parameters, NoManagedPolicies())


def test_checkov_finds_nothing_on_the_generated_cloudformation(template, tmp_path):
    """What CloudFormation really creates (SAM's generated roles, permissions, stages) is scanned too;
    a finding on a generated resource passes only if its SAM source skips that check inline."""
    generated = generated_cloudformation(template)
    assert "Transform" not in generated and len(generated["Resources"]) > len(template["Resources"])
    path = tmp_path / "generated.json"
    path.write_text(json.dumps(generated))

    report = run_checkov(path)
    skips = inline_skips(template)
    unjustified = []
    for check in report["results"]["failed_checks"]:
        logical_id = check["resource"].split(".", 1)[1]
        sources = [name for name in skips if logical_id.startswith(name)]
        if not any(check["check_id"] in skips[name] for name in sources):
            unjustified.append((check["check_id"], check["resource"], check["check_name"]))
    assert unjustified == []
    assert report["summary"]["resource_count"] == len(generated["Resources"])


def test_every_skip_is_justified(template):
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    assert set(config["skip-check"]) == GLOBAL_SKIPS, "a template-wide skip needs a reason here and in docs/deploy.md"
    doc = DEPLOY_DOC.read_text()
    for check_id in GLOBAL_SKIPS:
        assert check_id in doc, f"{check_id} is not explained in docs/deploy.md"
    for name, resource in template["Resources"].items():
        for entry in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []:
            assert re.fullmatch(r"CKV2?_AWS_\d+", entry["id"]), (name, entry)
            assert len(entry.get("comment", "").split()) >= 6, f"{name} skips {entry['id']} without saying why"


# -- IAM ----------------------------------------------------------------------------------------

def test_allow_statements_never_grant_every_action_or_service(template):
    for statement in statements(template["Resources"]):
        if statement["Effect"] != "Allow":
            continue
        assert "NotAction" not in statement, statement
        for action in as_list(statement["Action"]):
            assert action != "*", statement
            if action.endswith(":*"):
                # Only a key policy's "the account administers this key through IAM" may.
                assert action == "kms:*" and "iam::${AWS::AccountId}:root" in json.dumps(statement["Principal"]), statement


def test_resource_star_only_for_apis_without_resource_level_permissions(template):
    key_policies = [r["Properties"]["KeyPolicy"] for r in of_type(template, "AWS::KMS::Key").values()]
    key_statements = [id(s) for policy in key_policies for s in statements(policy)]
    for statement in statements(template["Resources"]):
        if statement["Effect"] != "Allow" or "*" not in as_list(statement.get("Resource")):
            continue
        if id(statement) in key_statements:
            continue  # in a key policy "*" is the key itself
        assert set(as_list(statement["Action"])) <= UNSCOPABLE_ACTIONS, statement


def test_every_resource_star_is_explained_next_to_it():
    lines = TEMPLATE_PATH.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r'\s*Resource: "\*"\s*$', line):
            above = lines[max(0, number - 14):number]
            assert any(l.strip().startswith("#") for l in above), f"template.yaml:{number + 1} has no reason for Resource *"


def test_every_function_and_state_machine_has_its_own_role(template):
    roles = []
    for type_name in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
        for name, resource in of_type(template, type_name).items():
            props = resource["Properties"]
            if "Role" in props:
                roles.append(json.dumps(props["Role"]))
            else:
                assert props.get("Policies"), f"{name} has neither a role nor policies (SAM would give it none)"
    assert len(roles) == len(set(roles)), "two functions or state machines share a role"
    assert of_type(template, "AWS::Serverless::StateMachine"), "the deploy state machine is gone"


# -- storage ------------------------------------------------------------------------------------

def test_buckets_are_retained_versioned_encrypted_private_tls_only_and_logged(template):
    buckets = of_type(template, "AWS::S3::Bucket")
    policies = of_type(template, "AWS::S3::BucketPolicy")
    log_destinations = {name for name, b in buckets.items()
                        if any(e.get("id") == "CKV_AWS_18" for e in (b.get("Metadata") or {}).get("checkov", {}).get("skip", []))}
    assert log_destinations == {"AccessLogsBucket"}
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert bucket.get("DeletionPolicy") == "Retain" and bucket.get("UpdateReplacePolicy") == "Retain", name
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
        assert props["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced", name
        [policy] = [p for p in policies.values() if refers_to(p["Properties"]["Bucket"], name)]
        assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
                   for s in statements(policy["Properties"]["PolicyDocument"])), name
        if name not in log_destinations:
            assert refers_to(props["LoggingConfiguration"]["DestinationBucketName"], "AccessLogsBucket"), name
    access_policy = next(p for p in policies.values() if refers_to(p["Properties"]["Bucket"], "AccessLogsBucket"))
    delivery = next(s for s in statements(access_policy["Properties"]["PolicyDocument"]) if s["Effect"] == "Allow")
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_tables_are_encrypted_with_point_in_time_recovery(template):
    for name, table in of_type(template, "AWS::DynamoDB::Table").items():
        props = table["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True, name
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name


# -- logs, dead letters, alarms, dashboard ---------------------------------------------------

def test_every_log_group_has_retention_and_every_function_and_state_machine_uses_one(template):
    log_groups = of_type(template, "AWS::Logs::LogGroup")
    for name, group in log_groups.items():
        assert refers_to(group["Properties"]["RetentionInDays"], "LogRetentionDays"), name
    for name, function in of_type(template, "AWS::Serverless::Function").items():
        assert function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in log_groups, name
    for name, machine in of_type(template, "AWS::Serverless::StateMachine").items():
        destinations = machine["Properties"]["Logging"]["Destinations"]
        assert any(refers_to(d["CloudWatchLogsLogGroup"]["LogGroupArn"], g) for d in destinations for g in log_groups), name


def test_every_queue_is_encrypted_tls_only_and_alarmed(template):
    queues = of_type(template, "AWS::SQS::Queue")
    assert len(queues) >= 4
    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    policies = of_type(template, "AWS::SQS::QueuePolicy")
    for name, queue in queues.items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue["Properties"], name
        [policy] = [p for p in policies.values() if refers_to(p["Properties"]["Queues"], name)]
        assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
                   for s in statements(policy["Properties"]["PolicyDocument"])), name
        watching = [a for a in alarms.values()
                    if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
                    and refers_to(a["Properties"]["Dimensions"], name)]
        assert watching, f"dead letters in {name} would go unnoticed"
        props = watching[0]["Properties"]
        assert props["Threshold"] == 1 and props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert refers_to(props["AlarmActions"], "NotificationTopic"), name


def test_every_alarm_tells_someone(template):
    for name, alarm in of_type(template, "AWS::CloudWatch::Alarm").items():
        assert refers_to(alarm["Properties"]["AlarmActions"], "NotificationTopic"), name
        assert alarm["Properties"].get("AlarmDescription"), name


def render_sub(node: Any) -> str:
    """Fn::Sub with placeholder values for every variable, as CloudFormation would render it."""
    body = node["Fn::Sub"]
    text = body if isinstance(body, str) else body[0]
    return re.sub(r"\$\{([^}!][^}]*)\}", lambda m: f"VALUE-OF-{m.group(1)}", text)


def test_dashboard_shows_intake_pipeline_approvals_deployments_endpoint_and_dead_letters(template):
    [dashboard] = of_type(template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(render_sub(dashboard["Properties"]["DashboardBody"]))
    metrics = [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]
    namespaces = {m[0] for m in metrics if m[0] not in (".", "...")}
    assert {"AWS/Sagemaker/ModelBuildingPipeline", "AWS/SageMaker", "AWS/Lambda", "AWS/ApiGateway",
            "AWS/States", "AWS/SQS"} <= namespaces
    text = json.dumps(body)
    for logical_id in ("TrainingPipeline", "StartPipelineFunction", "NotifyApprovalFunction", "ApprovalApiFunction",
                       "DeployStateMachine", "ServingEndpoint"):
        assert f"VALUE-OF-{logical_id}" in text, logical_id
    for queue in of_type(template, "AWS::SQS::Queue"):
        assert f"VALUE-OF-{queue}.QueueName" in text, f"{queue} is not on the dashboard"
    [alarm_widget] = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert {a.removeprefix("VALUE-OF-").removesuffix(".Arn") for a in alarm_widget["properties"]["alarms"]} == set(
        of_type(template, "AWS::CloudWatch::Alarm"))


# What the handlers count with Powertools Metrics (service dimension -> metric names); the unit tests
# of each handler check it emits these names.
CUSTOM_METRICS = {
    "start-pipeline": {"PipelineExecutionsStarted", "DatasetsQuarantined"},
    "pipeline-status": {"PipelineExecutionsFailed", "PipelineExecutionsStopped"},
    "approval-api": {"ModelPackagesApproved", "ModelPackagesRejected", "ApprovalRefusals"},
    "deploy-notify": {"DeploymentsSucceeded", "DeploymentsFailed", "DeploymentsRolledBack", "DeploymentsSkipped"},
    "start-scoring": {"ScoringExecutionsStarted", "ScoringFilesQuarantined", "ScoringExecutionsSucceeded",
                      "ScoringExecutionsFailed", "ScoringExecutionsStopped"},
}


def _expanded(metrics: list[list]) -> list[list]:
    """Dashboard metric rows with CloudWatch's "." (same as the row above) shorthand filled in."""
    rows, previous = [], []
    for row in metrics:
        values = [v for v in row if not isinstance(v, dict)]
        if values and values[0] == "...":
            raise AssertionError("'...' rows are not expanded by this check")
        filled = [previous[i] if v == "." and i < len(previous) else v for i, v in enumerate(values)]
        rows.append(filled)
        previous = filled
    return rows


def test_dashboard_shows_every_custom_metric_and_alarms_wake_someone_on_refusals_and_failing_deployments(template):
    [dashboard] = of_type(template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(render_sub(dashboard["Properties"]["DashboardBody"]))
    shown = set()
    for widget in body["widgets"]:
        metrics = widget.get("properties", {}).get("metrics", [])
        if widget["type"] == "metric" and metrics and metrics[0][0] == "RaySageMakerMLOps":
            for namespace, name, dimension, service in _expanded(metrics):
                assert (namespace, dimension) == ("RaySageMakerMLOps", "service")
                shown.add((service, name))
    expected = {(service, name) for service, names in CUSTOM_METRICS.items() for name in names}
    assert shown == expected
    services = {name: r["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
                for name, r in of_type(template, "AWS::Serverless::Function").items()}
    assert set(CUSTOM_METRICS) <= set(services.values())
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "RaySageMakerMLOps"

    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    refusals = alarms["ApprovalRefusalsAlarm"]["Properties"]
    assert (refusals["MetricName"], refusals["Dimensions"]) == ("ApprovalRefusals", [{"Name": "service", "Value": "approval-api"}])
    failing = json.dumps(alarms["DeploymentsFailingAlarm"]["Properties"]["Metrics"])
    assert '"DeploymentsFailed"' in failing and '"DeploymentsRolledBack"' in failing and '"deploy-notify"' in failing


def test_the_approval_api_has_only_its_throttled_stage(template):
    """SAM adds an unthrottled stage named "Stage" unless Globals set OpenApiVersion."""
    generated = generated_cloudformation(template)
    stages = [r["Properties"] for r in generated["Resources"].values() if r["Type"] == "AWS::ApiGateway::Stage"]
    assert [stage["StageName"] for stage in stages] == ["v1"]
    # A Deployment with a StageName creates that stage too, with no method settings (SAM's "Stage").
    deployments = [r["Properties"] for r in generated["Resources"].values() if r["Type"] == "AWS::ApiGateway::Deployment"]
    assert deployments and all("StageName" not in deployment for deployment in deployments), deployments
    [throttle] = stages[0]["MethodSettings"]
    assert (throttle["ThrottlingBurstLimit"], throttle["ThrottlingRateLimit"]) == (20, 10)


def test_every_parameter_is_documented_for_operators(template):
    import tomllib

    doc = DEPLOY_DOC.read_text()
    for name in template["Parameters"]:
        assert f"`{name}`" in doc, f"parameter {name} is missing from docs/deploy.md"
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env in ("dev", "prod"):
        overrides = config[env]["deploy"]["parameters"]["parameter_overrides"]
        for key in re.findall(r"(\w+)=", overrides if isinstance(overrides, str) else " ".join(overrides)):
            assert key in template["Parameters"], f"samconfig.toml [{env}] sets unknown parameter {key}"
