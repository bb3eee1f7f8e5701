"""The deploy state machine executed for real: moto's Step Functions runner walks the ASL, its SDK
tasks reach moto and the local endpoints through the gateway, its Lambda tasks run the handlers in
functions/ in Lambda-like worker processes, and the endpoint serves the model from real processes."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import boto3
import pytest

from local.aws.endpoints import LocalEndpoints
from local.aws.gateway import LocalGateway
from local.aws.lambda_runtime import LambdaRuntime
from local.aws.lineage import LineageService
from local.aws.public_parameters import PublicParameters, powertools_parameter_path
from local.aws.stack.model import FunctionSpec
from local.cli.lineage import lineage_of
from tests.infrastructure.lambda_versions import requirements_lock_pins
from tests.integration.scoring_checks import check_batch_scoring
from tests.model_artifacts import FEATURES, TrafficLoop, expected_predictions, publish_package

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
BUCKET = "deploy-artifacts"
GROUP = "deploy-tests"
ENDPOINT = "houses-deploy"
TABLE = "deployments"


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    monkeypatch = pytest.MonkeyPatch()
    gateway = LocalGateway().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
    endpoints = LocalEndpoints(gateway, tmp / "endpoints", max_bake_seconds=1.0).install()
    LineageService(gateway).install()  # deploy_notify records each deployment's lineage
    s3, sm, sns, sqs = (boto3.client(s) for s in ("s3", "sagemaker", "sns", "sqs"))
    s3.create_bucket(Bucket=BUCKET)
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    boto3.client("dynamodb").create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "DeploymentId", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "DeploymentId", "KeyType": "HASH"}])
    topic = sns.create_topic(Name="notifications")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="notifications-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    environment = {
        "ENDPOINT_NAME": ENDPOINT, "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "MODEL_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/model", "ENDPOINT_INSTANCE_TYPE": "ml.m5.large",
        "ENDPOINT_INSTANCE_COUNT": "1", "CANARY_SIZE_PERCENT": "20", "CANARY_WAIT_SECONDS": "1",
        "TERMINATION_WAIT_SECONDS": "0", "ENDPOINT_POLL_SECONDS": "1", "DEPLOYMENT_TIMEOUT_SECONDS": "120",
        "ROLLBACK_ALARM_NAMES": "houses-5xx,houses-latency", "NOTIFICATION_TOPIC_ARN": topic,
        "DATA_CAPTURE_DESTINATION": f"s3://{BUCKET}/capture",
        "POWERTOOLS_SERVICE_NAME": "deploy", "POWERTOOLS_TRACE_DISABLED": "true",
    }
    # The layers the template gives them: the shared layer and the AWS-managed Powertools layer.
    public = PublicParameters("us-east-1")
    powertools = public.layer(public.resolve(powertools_parameter_path(
        "x86_64", "python3.13", requirements_lock_pins()["aws-lambda-powertools"])))
    functions = {
        name: FunctionSpec(logical_id=name, name=name, arn=function_arn(name), code_dir=REPO / "functions" / name,
                           handler="app.lambda_handler", environment=environment,
                           layer_dirs=[REPO / "functions" / "shared"], timeout=120, memory_size=512, runtime="python3.13",
                           managed_layers=[powertools])
        for name in ("deploy_prepare", "deploy_smoke_test", "deploy_notify")
    }
    lambdas = LambdaRuntime(functions, gateway.url, log_dir=tmp / "lambda-logs")
    lambdas.install(gateway)
    definition = (REPO / "statemachines" / "deploy.asl.json").read_text()
    for key, value in {"DeploymentsTableName": TABLE, "DeployPrepareFunctionArn": function_arn("deploy_prepare"),
                       "DeploySmokeTestFunctionArn": function_arn("deploy_smoke_test"),
                       "DeployNotifyFunctionArn": function_arn("deploy_notify")}.items():
        definition = definition.replace("${%s}" % key, value)
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(name="deploy", definition=definition,
                                       roleArn=f"arn:aws:iam::{ACCOUNT}:role/deploy")["stateMachineArn"]
    try:
        yield {"s3": s3, "sm": sm, "sfn": sfn, "sqs": sqs, "queue_url": queue_url, "machine": machine, "tmp": tmp,
               "runtime": boto3.client("sagemaker-runtime"), "dynamodb": boto3.client("dynamodb")}
    finally:
        lambdas.close()
        endpoints.shutdown()
        gateway.stop()
        monkeypatch.undo()


def state_change_event(package_arn: str, status: str, sagemaker=None) -> dict:
    """What EventBridge delivers for a model package approval change: the package's description at
    its last change (the same change described twice is the same event)."""
    from local.aws.model_registry import model_package_event_detail

    described = model_package_event_detail((sagemaker or boto3.client("sagemaker")).describe_model_package(
        ModelPackageName=package_arn))
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "SageMaker Model Package State Change",
            "source": "aws.sagemaker", "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": "us-east-1", "resources": [package_arn],
            "detail": {"ModelPackageGroupName": GROUP, "ModelPackageArn": package_arn,
                       "ModelApprovalStatus": status, "ModelPackageStatus": "Completed",
                       "LastModifiedTime": described["LastModifiedTime"]}}


def run(world, package_arn: str, status: str, timeout: float = 240) -> dict:
    world["sm"].update_model_package(ModelPackageArn=package_arn, ModelApprovalStatus=status)
    execution = world["sfn"].start_execution(stateMachineArn=world["machine"], name=uuid.uuid4().hex,
                                             input=json.dumps(state_change_event(package_arn, status)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = world["sfn"].describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            history = world["sfn"].get_execution_history(executionArn=execution["executionArn"])["events"]
            # the failures along the way, for assertion messages
            described["failures"] = [e.get("taskFailedEventDetails") or e.get("lambdaFunctionFailedEventDetails")
                                     for e in history if e["type"].endswith("Failed")]
            return described
        time.sleep(0.5)
    raise AssertionError("deployment did not finish")


def notifications(world) -> list[str]:
    messages = world["sqs"].receive_message(QueueUrl=world["queue_url"], MaxNumberOfMessages=10,
                                            WaitTimeSeconds=1).get("Messages", [])
    for message in messages:
        world["sqs"].delete_message(QueueUrl=world["queue_url"], ReceiptHandle=message["ReceiptHandle"])
    return [m["Body"] for m in messages]


def serving(world, record: dict) -> float:
    response = world["runtime"].invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json",
                                                Body=json.dumps(record))
    return json.loads(response["Body"].read())["predictions"][0]


def test_approve_update_reject_and_broken_deployments(world):
    publish = dict(bucket=BUCKET, group=GROUP)
    first = publish_package(world["s3"], world["sm"], world["tmp"], execution_id="x1", **publish)
    second = publish_package(world["s3"], world["sm"], world["tmp"], execution_id="x2", price_factor=1.5, **publish)
    broken = publish_package(world["s3"], world["sm"], world["tmp"], execution_id="x3", broken=True, **publish)
    row = first["trained"]["test"].iloc[[0]]
    record = row[FEATURES].iloc[0].to_dict()
    first_answer = float(expected_predictions(first["trained"], row)[0])
    second_answer = float(expected_predictions(second["trained"], row)[0])

    # 1. First approval: a new endpoint, smoke-tested, notified.
    result = run(world, first["arn"], "Approved")
    assert result["status"] == "SUCCEEDED", result["failures"]
    assert serving(world, record) == pytest.approx(first_answer, rel=1e-5)
    assert any("Outcome: deployed" in body for body in notifications(world))

    # 2. The same event again: recorded already, nothing new happens.
    execution = world["sfn"].start_execution(stateMachineArn=world["machine"], name=uuid.uuid4().hex,
                                             input=json.dumps(state_change_event(first["arn"], "Approved")))
    time.sleep(2)
    assert world["sfn"].describe_execution(executionArn=execution["executionArn"])["status"] == "SUCCEEDED"
    history = world["sfn"].get_execution_history(executionArn=execution["executionArn"])["events"]
    assert not any(e.get("stateEnteredEventDetails", {}).get("name") == "Prepare" for e in history)
    assert len(world["sm"].list_models()["Models"]) == 1

    # 3. Second approval: blue/green canary update while traffic flows, nothing dropped.
    loop = TrafficLoop(world["runtime"], ENDPOINT, record)
    loop.start()
    try:
        result = run(world, second["arn"], "Approved")
    finally:
        loop.stop()
    assert result["status"] == "SUCCEEDED", result
    assert loop.failures == [] and loop.ok > 10
    assert serving(world, record) == pytest.approx(second_answer, rel=1e-5)
    notifications(world)

    # 4. A broken artifact approved: the update rolls back, the second model keeps serving, people are told.
    loop = TrafficLoop(world["runtime"], ENDPOINT, record)
    loop.start()
    try:
        result = run(world, broken["arn"], "Approved")
    finally:
        loop.stop()
    assert result["status"] == "FAILED"
    assert loop.failures == []
    assert serving(world, record) == pytest.approx(second_answer, rel=1e-5)
    assert any("Outcome: rolled_back" in body for body in notifications(world))
    world["sm"].update_model_package(ModelPackageArn=broken["arn"], ModelApprovalStatus="Rejected")

    # 5. The serving package is rejected: the previous Approved one (the first) serves again.
    result = run(world, second["arn"], "Rejected")
    assert result["status"] == "SUCCEEDED", result["failures"]
    assert serving(world, record) == pytest.approx(first_answer, rel=1e-5)
    bodies = notifications(world)
    assert any("Outcome: deployed" in body and "after a rejection" in body for body in bodies)
    # The lineage says which endpoint served each package since when, and which one serves now.
    redeployed, original = sorted(lineage_of(world["sm"], first["arn"])["endpoints"], key=lambda e: e["since"],
                                  reverse=True)
    [replaced] = lineage_of(world["sm"], second["arn"])["endpoints"]
    assert {e["endpoint_name"] for e in (redeployed, original, replaced)} == {ENDPOINT}
    assert (original["current"], replaced["current"], redeployed["current"]) == (False, False, True)
    assert original["since"] < replaced["since"] < redeployed["since"]

    # 6. Rejecting a package that is not serving changes nothing.
    result = run(world, broken["arn"], "Rejected")
    assert result["status"] == "SUCCEEDED"
    assert serving(world, record) == pytest.approx(first_answer, rel=1e-5)
    outcomes = {item["DeploymentId"]["S"].split("#")[0] + ":" + item["Outcome"]["S"]
                for item in world["dynamodb"].scan(TableName=TABLE)["Items"] if "Outcome" in item}
    assert {"Approved:deployed", "Approved:rolled_back", "Rejected:deployed", "Rejected:skipped"} <= outcomes

    # 7. Approved -> Rejected -> Approved -> Rejected: each step does what it says (the second
    # approval and rejection of the same package are new status changes, not duplicates).
    for status, answer in (("Approved", second_answer), ("Rejected", first_answer)):
        result = run(world, second["arn"], status)
        assert result["status"] == "SUCCEEDED", result["failures"]
        assert serving(world, record) == pytest.approx(answer, rel=1e-5), status
    notifications(world)

    # 8. The broken package's deployment failed; fixed metadata aside, approving it again is a new
    # attempt (rolled back again here, and said so), not a silently dropped duplicate.
    result = run(world, broken["arn"], "Approved")
    assert result["status"] == "FAILED"
    assert serving(world, record) == pytest.approx(first_answer, rel=1e-5)
    assert any("Outcome: rolled_back" in body for body in notifications(world))


def test_local_cloud_deploys_on_approval_once(tmp_path):
    """The stack as the template declares it: the approval's EventBridge event starts the state
    machine through the rule, and a repeated event changes nothing."""
    from local.cloud import LocalCloud

    with LocalCloud(tmp_path / "state", start_ray=False, write_cloud_file=False,
                    parameters={"EndpointPollSeconds": 1, "CanaryWaitSeconds": 1, "TerminationWaitSeconds": 0}) as cloud:
        stack = cloud.stack
        group = stack.outputs["ModelPackageGroupName"]
        endpoint = stack.outputs["EndpointNameOutput"]
        bucket = stack.outputs["ArtifactsBucketName"]
        s3, sm, sfn = cloud.client("s3"), cloud.client("sagemaker"), cloud.client("stepfunctions")
        try:
            sm.create_model_package_group(ModelPackageGroupName=group)
        except sm.exceptions.ClientError:
            pass  # provisioned with the stack
        package = publish_package(s3, sm, tmp_path, bucket=bucket, group=group, execution_id="lc1")
        sm.update_model_package(ModelPackageArn=package["arn"], ModelApprovalStatus="Approved")
        machine = stack.ref("DeployStateMachine")

        def finished():
            executions = sfn.list_executions(stateMachineArn=machine)["executions"]
            return executions if executions and all(e["status"] != "RUNNING" for e in executions) else None

        executions = cloud.wait_for(finished, timeout=240, description="the deployment")
        if executions[0]["status"] != "SUCCEEDED":
            for event in sfn.get_execution_history(executionArn=executions[0]["executionArn"])["events"]:
                print("HISTORY", json.dumps(event, default=str)[:700])
        assert [e["status"] for e in executions] == ["SUCCEEDED"]
        runtime = cloud.client("sagemaker-runtime")
        row = package["trained"]["test"].iloc[[0]]
        response = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json",
                                           Body=json.dumps(row[FEATURES].iloc[0].to_dict()))
        assert json.loads(response["Body"].read())["predictions"][0] == pytest.approx(
            float(expected_predictions(package["trained"], row)[0]), rel=1e-5)
        # The same approval event delivered again (EventBridge is at-least-once): nothing new.
        events = cloud.client("events")
        events.put_events(Entries=[{"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change",
                                    "Detail": json.dumps(state_change_event(package["arn"], "Approved", sm)["detail"]
                                                         | {"ModelPackageGroupName": group})}])
        cloud.wait_for_events()
        executions = cloud.wait_for(finished, timeout=120, description="the duplicate")
        assert len(executions) == 2 and all(e["status"] == "SUCCEEDED" for e in executions)
        assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == 1
        # The deployment's lineage, recorded once by deploy_notify under its own role.
        [served] = lineage_of(sm, package["arn"])["endpoints"]
        assert (served["endpoint_name"], served["current"]) == (endpoint, True)
        # Batch scoring by drop with the package this endpoint serves (tests/integration/scoring_checks.py).
        check_batch_scoring(cloud, package, endpoint, tmp_path)
