"""Every IAM statement of template.yaml is needed by something the product does, or documented as
one the local face cannot exercise (docs/strict-face.md).

One recorded run of the stack under the strict face (a CSV to a deployed endpoint, a second model
deployed as a blue/green update and then rejected back to the first, a quarantined file, and each
handler on a fixture event for the paths the flow does not take) gives every authorization with
the policies that decided it. Each generated test deletes its statement from those policies and
replays the recorded requests: the first one refused names the unit that needs the statement, the
action and the role (AWS's AccessDenied wording). `test_real_template_copy_without_a_statement`
shows on a real run that the replay answers what a template without the statement would.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from local.aws.stack.sam_generated import sam_generated_resources
from local.aws.stack.template import load_template
from local.aws.strict.service_constraints import check
from local.aws.strict.statement_coverage import (
    first_need, load_documented_exceptions, locate, template_statement_keys,
)
from local.cli.common import LOCAL_DEPLOY_PARAMETERS
from local.cli.datagen import generate_housing
from local.cli.run import RunSession, run_dataset
from mlops_shared.dataset_reference import read_reference

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROWS = 1500
ODD_NAME = "house prices (2024).csv"
PARAMETERS = {**LOCAL_DEPLOY_PARAMETERS, "MaxTuningJobs": "1", "CanaryWaitSeconds": "1",
              # Small data: gate loosely, and let the second model replace the first whatever its RMSE.
              "RMSEThreshold": "60000", "ChampionTolerance": "10"}


def _template_keys():
    template = load_template(REPO / "template.yaml")
    generated = sam_generated_resources(template, {}, "us-east-1")
    return template_statement_keys(template, generated)


STATEMENTS = _template_keys()
DOCUMENTED = load_documented_exceptions(REPO)


def _session(cloud, approve: bool = False, reject: bool = False, timeout: float = 900) -> RunSession:
    args = argparse.Namespace(approve=approve, reject=reject)
    return RunSession(cloud.endpoint_url, cloud.state_dir, cloud.stack.outputs, args,
                      deadline=time.monotonic() + timeout, cloud=cloud, api_url=cloud.api_url,
                      credentials=cloud.client_kwargs(with_endpoint=False))


def _csv(path: Path, seed: int, drop: str | None = None) -> Path:
    frame = generate_housing(ROWS, seed)
    if drop:
        frame = frame.drop(columns=[drop])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    from local.cloud import LocalCloud
    from local.cli.follow import wait_for_deployment

    state = tmp_path_factory.mktemp("iam-statements")
    packages: dict[str, dict] = {}
    with LocalCloud(state / "state", parameters=PARAMETERS, write_cloud_file=False, record_decisions=True) as cloud:
        # An ordinary file name that SageMaker's fields cannot carry as it is (issue: RegisterModel
        # refused the raw URI after the whole run was paid for).
        _failed_deployment(cloud, state)
        # A Failed endpoint serves nothing: the newest Approved package (the broken one) scores,
        # and its job fails (the failure notification reads why).
        _score(cloud, state, "with-failed-endpoint.csv", expect="failed")
        first = run_dataset(_session(cloud, approve=True), _csv(state / "first" / ODD_NAME, seed=1), "PRICE")
        assert first["status"] == "deployed", first
        packages["first"] = cloud.client("sagemaker").describe_model_package(
            ModelPackageName=first["model_package_arn"])
        # Batch scoring by drop with the package the endpoint serves, and a file it cannot score.
        _score(cloud, state, "houses-to-score.csv", expect="succeeded")
        _score(cloud, state, "lacking-a-feature.csv", expect="quarantined", drop="SQUARE_FEET")
        second = run_dataset(_session(cloud, approve=True), _csv(state / "second" / "houses.csv", seed=2), "PRICE")
        assert second["status"] == "deployed", second
        # The second model rejected after it went live: the deployment rolls back to the first.
        rejected_at = time.time()
        cloud.client("sagemaker").update_model_package(ModelPackageArn=second["model_package_arn"],
                                                       ModelApprovalStatus="Rejected")
        rollback = wait_for_deployment(_session(cloud), "Rejected", second["model_package_arn"], rejected_at,
                                       timeout=300)
        assert rollback["outcome"] in ("rolled_back", "deployed"), rollback
        quarantined = run_dataset(_session(cloud), _csv(state / "bad" / "no_target.csv", seed=3, drop="PRICE"),
                                  "PRICE")
        assert quarantined["status"] == "quarantined", quarantined
        _failed_pipeline_event(cloud)
        _slack_interaction(cloud)
        _fresh_links(cloud, state)
        _dead_letters(cloud, state)
        metadata = packages["first"]["CustomerMetadataProperties"]
        packages["first_reference"] = read_reference(cloud.client("s3"), metadata["dataset_reference"])
        recorded_run = cloud.stack, list(cloud.face.decisions), packages
    # Stopped before the tests use it: a test may start a cloud of its own (moto's state is per process).
    yield recorded_run


def _score(cloud, state: Path, name: str, expect: str, drop: str | None = None) -> None:
    """`mlops local score` on a CSV (the target rides along; `drop` leaves a feature out)."""
    from local.cli.score import score_file

    result = score_file(_session(cloud, timeout=300), _csv(state / "score" / name, seed=4, drop=drop), explain=False)
    assert result["status"] == expect, result
    cloud.wait_for_events()  # the scoring execution's end is notified by start_scoring


def _failed_pipeline_event(cloud) -> None:
    """The pipeline-status handler on a failure (the flow's executions all succeed): its fixture
    event, through EventBridge as SageMaker would send it."""
    executions = cloud.client("sagemaker").list_pipeline_executions(
        PipelineName=cloud.stack.outputs["PipelineName"])["PipelineExecutionSummaries"]
    arn = executions[0]["PipelineExecutionArn"]
    cloud.client("events").put_events(Entries=[{
        "Source": "aws.sagemaker", "DetailType": "SageMaker Model Building Pipeline Execution Status Change",
        "Resources": [arn],
        "Detail": json.dumps({"pipelineExecutionArn": arn, "executionStartTime": "2026-12-01T10:00:00Z",
                              "executionEndTime": "2026-12-01T10:05:00Z", "currentPipelineExecutionStatus": "Failed",
                              "previousPipelineExecutionStatus": "Executing",
                              "pipelineArn": arn.split("/execution/")[0]})}])
    cloud.wait_for_events()


def _failed_deployment(cloud, state: Path) -> None:
    """A package whose model cannot load, approved: the endpoint's creation fails (the deploy
    notification reads why), and the next approval replaces the Failed endpoint."""
    from local.cli.follow import wait_for_deployment
    from tests.model_artifacts import publish_package

    outputs = cloud.stack.outputs
    broken = publish_package(cloud.client("s3"), cloud.client("sagemaker"), state / "broken",
                             bucket=outputs["ArtifactsBucketName"], group=outputs["ModelPackageGroupName"],
                             execution_id="broken", broken=True)
    approved_at = time.time()
    cloud.client("sagemaker").update_model_package(ModelPackageArn=broken["arn"], ModelApprovalStatus="Approved")
    outcome = wait_for_deployment(_session(cloud), "Approved", broken["arn"], approved_at, timeout=300)
    assert outcome["outcome"] not in ("deployed", "skipped"), outcome
    # The deployment cleans up what it created; a Failed endpoint made by hand stays for the next
    # approval to replace.
    sagemaker, endpoint = cloud.client("sagemaker"), outputs["EndpointNameOutput"]
    sagemaker.create_model(ModelName="by-hand", ExecutionRoleArn=outputs["ModelExecutionRoleArn"],
                           Containers=[{"ModelPackageName": broken["arn"]}])
    sagemaker.create_endpoint_config(EndpointConfigName="by-hand", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "by-hand", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])

    def gone() -> bool:  # the failed deployment deleted what it created; the name frees once deleted
        try:
            sagemaker.describe_endpoint(EndpointName=endpoint)
            return False
        except sagemaker.exceptions.ClientError:
            return True

    cloud.wait_for(gone, timeout=60, description="the failed deployment's endpoint to be deleted")
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName="by-hand")
    cloud.wait_for(lambda: sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Failed",
                   timeout=120, description="the hand-made endpoint to fail")


def _slack_interaction(cloud) -> None:
    """A Slack button press reaches the approval function through API Gateway: one without Slack's
    signature is refused there; a signed one is answered at once and handed off to an asynchronous
    invocation of the function (its token is refused in the hand-off, which tells Slack's
    response_url; nothing listens there locally)."""
    import hashlib
    import hmac
    import urllib.error
    import urllib.parse
    import urllib.request

    url = cloud.stack.outputs["SlackInteractivityUrl"]

    def send(body: bytes, headers: dict) -> int:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", **headers})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as answered:
            return answered.code

    # Set first: the function keeps the secret it read for five minutes.
    signing_secret = "recorded-run-slack-signing-secret"
    cloud.client("secretsmanager").put_secret_value(SecretId=cloud.stack.outputs["SlackSigningSecretArn"],
                                                    SecretString=signing_secret)
    assert send(b"payload=%7B%7D", {}) in (400, 401, 403)
    payload = {"type": "block_actions", "user": {"id": "U0RECORDED"},
               "actions": [{"action_id": "approve", "block_id": "approval", "type": "button", "value": "not.a-token"}],
               "response_url": "https://hooks.slack.com/actions/T0RECORDED/1/recorded"}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + body,
                                 hashlib.sha256).hexdigest()
    assert send(body, {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}) == 200
    cloud.wait_for(lambda: not cloud.lambda_runtime.busy(), timeout=120, description="the Slack hand-off to finish")


def _fresh_links(cloud, state: Path) -> None:
    """An approver whose link expired asks for fresh ones on the expired-link page: the approval
    function asks the notify function, which emails them."""
    import urllib.error
    import urllib.request

    from mlops_shared.approval_tokens import issue_token
    from tests.model_artifacts import publish_package

    outputs = cloud.stack.outputs
    pending = publish_package(cloud.client("s3"), cloud.client("sagemaker"), state / "fresh-links",
                              bucket=outputs["ArtifactsBucketName"], group=outputs["ModelPackageGroupName"],
                              execution_id="fresh-links")
    cloud.wait_for_events()
    key = cloud.client("secretsmanager").get_secret_value(SecretId=cloud.stack.ref("ApprovalTokenKeySecret"))["SecretString"]
    approver = cloud.stack.parameters["ApproverEmails"].split(",")[0].strip()
    expired = issue_token(key, model_package_arn=pending["arn"], action="approve", approver=approver, channel="email",
                          ttl_seconds=60, now=time.time() - 3600)
    request = urllib.request.Request(f"{outputs['ApprovalApiUrl']}/fresh-links/{expired}", data=b"resend=yes",
                                     method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=120) as response:
        page = response.read().decode()
    assert "data-outcome='resent'" in page, page


def _dead_letters(cloud, state: Path) -> None:
    """What happens to events nobody could handle, one unit per dead-letter queue: a handler that
    keeps failing (Lambda retries, then sends the event to the function's queue with its role) and
    a state machine EventBridge cannot start (its retries, then the rule's queue)."""
    from tests.model_artifacts import publish_package

    outputs, faults = cloud.stack.outputs, cloud.gateway.faults
    sqs = cloud.client("sqs")

    def dead_lettered(queue_url: str, what: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", [])
            if messages:
                for message in messages:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return
        raise AssertionError(f"{what} reached no dead-letter queue")

    def failing(target: str):
        return faults.inject(target=target, code="ServiceUnavailable", status=503, message="down for the test",
                             times=10_000)

    try:
        failing("SageMaker.StartPipelineExecution")
        cloud.client("s3").upload_file(str(_csv(state / "dead" / "houses.csv", seed=5)), outputs["DataBucketName"],
                                       "incoming/dead-letter.csv")
        dead_lettered(outputs["StartPipelineDeadLetterQueueUrl"], "the upload its handler could not start")
        cloud.client("s3").upload_file(str(_csv(state / "dead" / "houses.csv", seed=5)), outputs["DataBucketName"],
                                       "score/dead-letter.csv")
        dead_lettered(outputs["StartScoringDeadLetterQueueUrl"], "the scoring drop its handler could not start")
        faults.clear()

        failing("SageMaker.ListPipelineExecutionSteps")
        _failed_pipeline_event(cloud)
        dead_lettered(outputs["PipelineStatusDeadLetterQueueUrl"], "the failure its handler could not read")
        faults.clear()

        # The package's evaluation report cannot be read (the registry's own events still flow).
        faults.inject(path=rf"/{outputs['ArtifactsBucketName']}/pipeline/dead-letter/Evaluate/evaluation/.*",
                      method="GET", protocol="rest-xml", code="InternalError", status=500,
                      message="down for the test", times=10_000)
        # ... nor can its lineage be written (the lineage API refuses every artifact).
        failing("SageMaker.CreateArtifact")
        pending = publish_package(cloud.client("s3"), cloud.client("sagemaker"), state / "dead",
                                  bucket=outputs["ArtifactsBucketName"], group=outputs["ModelPackageGroupName"],
                                  execution_id="dead-letter")
        dead_lettered(outputs["NotifyApprovalDeadLetterQueueUrl"], "the package whose report its handler could not read")
        dead_lettered(outputs["RecordLineageDeadLetterQueueUrl"], "the package whose lineage its handler could not write")
        faults.clear()

        failing("AWSStepFunctions.StartExecution")
        cloud.client("sagemaker").update_model_package(ModelPackageArn=pending["arn"], ModelApprovalStatus="Rejected")
        dead_lettered(outputs["DeployEventsDeadLetterQueueUrl"], "the decision EventBridge could not deliver")
    finally:
        faults.clear()


@pytest.mark.parametrize("key", STATEMENTS, ids=str)
def test_each_statement_is_needed_or_documented(recorded, key):
    stack, decisions, *_ = recorded
    role_arn, policy_name, label = locate(key, stack)
    need = first_need(key, role_arn, policy_name, label, decisions)
    if str(key) in DOCUMENTED:
        assert need is None, (f"{key} is listed in docs/strict-face.md as not exercised locally, but "
                              f"{need.describe()} — remove it from the list")
        return
    assert need is not None, (f"nothing the stack did needs {key}: exercise it here, or list it in "
                              f"docs/strict-face.md with the reason the local face cannot")
    message = need.refusal.message()
    assert need.refusal.request.action in message
    if role_arn:
        assert f"assumed-role/{role_arn.rsplit('/', 1)[1]}/" in message, message


def _template_copy_without(tmp: Path, resource: str, sid: str) -> Path:
    """template.yaml with statement `sid` of `resource`'s inline statements deleted; code paths made
    absolute so the copy provisions from anywhere."""
    template = load_template(REPO / "template.yaml")
    for definition in template["Resources"].values():
        properties = definition.get("Properties") or {}
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(properties.get(key), str):
                properties[key] = str(REPO / properties[key])
        mlops = (definition.get("Metadata") or {}).get("Mlops") or {}
        if isinstance(mlops.get("DefinitionFile"), str):
            mlops["DefinitionFile"] = str(REPO / mlops["DefinitionFile"])
    removed = 0
    for policy in template["Resources"][resource]["Properties"]["Policies"]:
        if isinstance(policy, dict) and "Statement" in policy:
            kept = [statement for statement in policy["Statement"] if statement.get("Sid") != sid]
            removed += len(policy["Statement"]) - len(kept)
            policy["Statement"] = kept
    assert removed == 1, f"{resource} has no statement {sid}"
    path = tmp / "template-without.json"  # JSON is YAML: the provisioner reads it as it reads the original
    path.write_text(json.dumps(template))
    return path


def test_real_template_copy_without_a_statement(recorded, tmp_path):
    """The replay's answer, checked on a real run: the intake handler on its fixture event (a valid
    upload), provisioned from a copy of the template without WriteDatasetReferences, fails with the
    refusal the replay predicts; with the real template (the recorded run) it started a pipeline."""
    from local.cloud import LocalCloud

    stack, decisions, _ = recorded
    key = next(k for k in STATEMENTS if str(k).endswith("/WriteDatasetReferences"))
    predicted = first_need(key, *locate(key, stack), decisions)
    assert predicted is not None and predicted.refusal.request.action == "s3:PutObject"

    template = _template_copy_without(tmp_path, "StartPipelineFunction", "WriteDatasetReferences")
    with LocalCloud(tmp_path / "state", template=template, start_ray=False, dispatch_events=False,
                    write_cloud_file=False) as cloud:
        bucket = cloud.stack.outputs["DataBucketName"]
        csv_path = _csv(tmp_path / "houses.csv", seed=9)
        version = cloud.client("s3").put_object(Bucket=bucket, Key="incoming/houses.csv",
                                                Body=csv_path.read_bytes())["VersionId"]
        event = {"version": "0", "id": "fixture", "detail-type": "Object Created", "source": "aws.s3",
                 "account": stack.account_id, "region": stack.region, "resources": [f"arn:aws:s3:::{bucket}"],
                 "time": "2026-12-01T12:00:00Z",
                 "detail": {"version": "0", "bucket": {"name": bucket},
                            "object": {"key": "incoming/houses.csv", "size": csv_path.stat().st_size,
                                       "version-id": version, "sequencer": "0A"},
                            "request-id": "fixture", "requester": stack.account_id, "reason": "PutObject"}}
        function = cloud.stack.outputs["StartPipelineFunctionName"]
        result = cloud.lambda_runtime.invoke(function, event)
        assert not result.ok, result.payload
        failure = json.dumps(result.payload)
        role = cloud.stack.resources["StartPipelineFunctionRole"].ref
        assert "AccessDenied" in failure and "s3:PutObject" in failure, failure
        assert f"assumed-role/{role}/{function}" in failure, failure
        assert f"assumed-role/{role}/" in predicted.refusal.message()
        assert cloud.client("sagemaker").list_pipeline_executions(
            PipelineName=cloud.stack.outputs["PipelineName"])["PipelineExecutionSummaries"] == []


def test_the_documented_exceptions_name_real_statements():
    names = {str(key) for key in STATEMENTS}
    assert set(DOCUMENTED) <= names, sorted(set(DOCUMENTED) - names)
    assert all(reason for reason in DOCUMENTED.values())


def test_an_odd_file_name_is_registered_with_its_exact_identity(recorded):
    stack, _, packages = recorded
    metadata = packages["first"]["CustomerMetadataProperties"]
    key = f"incoming/{ODD_NAME}"
    assert metadata["dataset_uri"] == f"s3://{stack.outputs['DataBucketName']}/incoming/house prices _2024_.csv"
    reference = packages["first_reference"]
    assert (reference.bucket, reference.key) == (stack.outputs["DataBucketName"], key)
    assert reference.version == metadata["dataset_version"]
    assert check("sagemaker", "CreateModelPackage", {"ModelPackageGroupName": "g",
                                                     "CustomerMetadataProperties": metadata}) == []


def test_nothing_was_refused_with_the_real_template(recorded):
    _, decisions, *_ = recorded
    refused = [f"{d.principal_arn} {d.service}:{d.operation} {d.request.action} {d.request.resource}"
               for d in decisions if not d.allowed]
    assert refused == []
