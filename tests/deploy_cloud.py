"""A local cloud for deployment tests: the stack from template.yaml (deploy state machine, its functions,
the deployments table, the local endpoints), small timings, and helpers to run deployments and read
what their executions did.

Executions are started directly with a state change event (the EventBridge delivery is tested in
tests/integration/test_deploy.py), so a test controls when and how many run at once.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.model_artifacts import FEATURES, expected_predictions, publish_package

ACCOUNT = "123456789012"
# Poll every second; a create gives up after DEPLOYMENT_TIMEOUT_SECONDS (template MinValue is for AWS;
# the local provisioner takes any value); blue/green waits of a second.
PARAMETERS = {"EndpointPollSeconds": 1, "CanaryWaitSeconds": 1, "TerminationWaitSeconds": 0,
              "DeploymentTimeoutSeconds": 20}


@dataclass
class Execution:
    """A finished execution: its status and what its history says, state by state."""

    arn: str
    status: str
    error: str | None
    history: list[dict]
    entered: list[str] = field(default_factory=list)  # state names in the order they were entered
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (state, error, cause) of failed tasks
    scheduled: list[tuple[str, dict]] = field(default_factory=list)  # (state, parameters) of each task call
    results: list[tuple[str, dict]] = field(default_factory=list)  # (state, result) of each successful task call

    def __post_init__(self) -> None:
        state = None
        for event in self.history:
            entered = event.get("stateEnteredEventDetails")
            if entered:
                state = entered["name"]
                self.entered.append(state)
            failed = event.get("taskFailedEventDetails") or event.get("lambdaFunctionFailedEventDetails")
            if failed and event["type"] in ("TaskFailed", "LambdaFunctionFailed"):
                self.failures.append((state, failed.get("error", ""), failed.get("cause", "")))
            scheduled = event.get("taskScheduledEventDetails") or event.get("lambdaFunctionScheduledEventDetails")
            if scheduled:
                self.scheduled.append((state, json.loads(scheduled.get("parameters") or scheduled.get("input") or "{}")))
            succeeded = event.get("taskSucceededEventDetails") or event.get("lambdaFunctionSucceededEventDetails")
            if succeeded:
                self.results.append((state, json.loads(succeeded.get("output") or "{}")))

    def errors_at(self, state: str) -> list[str]:
        return [error for name, error, _ in self.failures if name == state]

    def results_of(self, state: str) -> list[dict]:
        return [result for name, result in self.results if name == state]

    def visited(self, state: str) -> int:
        return self.entered.count(state)

    def output(self) -> dict:
        exited = [e["stateExitedEventDetails"] for e in self.history if e.get("stateExitedEventDetails")]
        return json.loads(exited[-1]["output"]) if exited else {}

    def explain(self) -> str:
        return f"{self.status} {self.error}: entered {self.entered}; failures {self.failures}"


class DeployCloud:
    """The local cloud and the packages a test deploys (trained once per name)."""

    def __init__(self, state_dir: Path, parameters: dict | None = None, deleting_seconds: float = 0.5):
        from local.cloud import LocalCloud

        self.tmp = Path(state_dir)
        self.cloud = LocalCloud(self.tmp / "state", start_ray=False, write_cloud_file=False, dispatch_events=False,
                                parameters={**PARAMETERS, **(parameters or {})}).start()
        try:
            self.cloud.endpoints.deleting_seconds = deleting_seconds
            stack = self.cloud.stack
            self.group = stack.outputs["ModelPackageGroupName"]
            self.endpoint = stack.outputs["EndpointNameOutput"]
            self.bucket = stack.outputs["ArtifactsBucketName"]
            self.table = stack.outputs["DeploymentsTableName"]
            self.machine = stack.ref("DeployStateMachine")
            self.faults = self.cloud.gateway.faults
            self.sm, self.s3, self.sfn = (self.cloud.client(s) for s in ("sagemaker", "s3", "stepfunctions"))
            self.dynamodb, self.runtime = self.cloud.client("dynamodb"), self.cloud.client("sagemaker-runtime")
            try:
                self.sm.create_model_package_group(ModelPackageGroupName=self.group)
            except self.sm.exceptions.ClientError:
                pass  # provisioned with the stack
            self._packages: dict[str, dict] = {}
        except BaseException:
            self.cloud.stop()
            raise

    def close(self) -> None:
        self.cloud.stop()

    def function_name(self, logical_id: str) -> str:
        return self.cloud.stack.ref(logical_id)

    # -- packages and the endpoint ----------------------------------------------------------------
    def package(self, name: str, **options) -> dict:
        """A registered package (trained once per name); options as tests.model_artifacts.publish_package."""
        if name not in self._packages:
            self._packages[name] = publish_package(self.s3, self.sm, self.tmp, bucket=self.bucket, group=self.group,
                                                   execution_id=name, **options)
        return self._packages[name]

    def spoil_smoke_sample(self, package: dict) -> None:
        """Makes the evaluation's recorded predictions disagree with the model: the smoke test must fail."""
        key = package["model_data_url"].split("/", 3)[3].replace("Train/output/model.tar.gz",
                                                                   "Evaluate/evaluation/smoke_sample.csv")
        sample = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode().splitlines()
        header, rows = sample[0], sample[1:]
        spoiled = [",".join(row.split(",")[:-1] + [str(float(row.split(",")[-1]) * 3 + 1000)]) for row in rows]
        self.s3.put_object(Bucket=self.bucket, Key=key, Body="\n".join([header, *spoiled]).encode())

    def reset(self) -> None:
        """No faults, no lock, no endpoint: the start of a first deployment."""
        self.faults.clear()
        self.dynamodb.delete_item(TableName=self.table, Key={"DeploymentId": {"S": "endpoint-lock"}})
        try:
            self.sm.delete_endpoint(EndpointName=self.endpoint)
        except self.sm.exceptions.ClientError:
            pass
        self.wait_for(lambda: self.endpoint_status() is None, "the endpoint to be gone")

    def endpoint_status(self) -> str | None:
        try:
            return self.sm.describe_endpoint(EndpointName=self.endpoint)["EndpointStatus"]
        except self.sm.exceptions.ClientError:
            return None

    def serving_config(self) -> str:
        return self.sm.describe_endpoint(EndpointName=self.endpoint)["EndpointConfigName"]

    def serve_config(self, package: dict) -> str:
        """A model and endpoint config for `package`, made directly (not by the state machine)."""
        name = f"base-{uuid.uuid4().hex[:8]}"
        self.sm.create_model(ModelName=name, ExecutionRoleArn=self.cloud.stack.outputs["ModelExecutionRoleArn"],
                             Containers=[{"ModelPackageName": package["arn"]}])
        self.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
        return name

    def serve(self, package: dict) -> str:
        """Puts `package` on the endpoint directly (not through the state machine); returns the config name."""
        name = self.serve_config(package)
        self.sm.create_endpoint(EndpointName=self.endpoint, EndpointConfigName=name)
        self.wait_for(lambda: self.endpoint_status() not in ("Creating", None), "the endpoint to come up")
        return name

    def answers_like(self, package: dict) -> bool:
        """Whether the endpoint answers what `package`'s model predicts."""
        row = package["trained"]["test"].iloc[[0]]
        response = self.runtime.invoke_endpoint(EndpointName=self.endpoint, ContentType="application/json",
                                                Body=json.dumps(row[FEATURES].iloc[0].to_dict()))
        answer = json.loads(response["Body"].read())["predictions"][0]
        expected = float(expected_predictions(package["trained"], row)[0])
        return abs(answer - expected) <= 1e-5 * max(1.0, abs(expected))

    def outcome(self, package: dict, status: str = "Approved") -> str | None:
        item = self.dynamodb.get_item(TableName=self.table, ConsistentRead=True,
                                      Key={"DeploymentId": {"S": f"{status}#{package['arn']}"}}).get("Item") or {}
        return (item.get("Outcome") or {}).get("S")

    def models(self) -> set[str]:
        return {m["ModelName"] for m in self.sm.list_models(MaxResults=100)["Models"]}

    # -- executions -------------------------------------------------------------------------------
    def start(self, package: dict, status: str = "Approved") -> str:
        """Sets the package's approval and starts the deployment its state change event would start."""
        self.sm.update_model_package(ModelPackageArn=package["arn"], ModelApprovalStatus=status)
        from local.aws.model_registry import model_package_event_detail

        changed = model_package_event_detail(self.sm.describe_model_package(ModelPackageName=package["arn"]))[
            "LastModifiedTime"]  # as SageMaker's events carry it (epoch milliseconds)
        event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "SageMaker Model Package State Change",
                 "source": "aws.sagemaker", "account": ACCOUNT, "region": "us-east-1", "resources": [package["arn"]],
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "detail": {"ModelPackageGroupName": self.group, "ModelPackageArn": package["arn"],
                            "ModelApprovalStatus": status, "ModelPackageStatus": "Completed",
                            "LastModifiedTime": changed}}
        self.last_event = event
        return self.redeliver(event)

    def redeliver(self, event: dict) -> str:
        """Starts a deployment for `event` as EventBridge would (again, when it delivers twice)."""
        return self.sfn.start_execution(stateMachineArn=self.machine, name=uuid.uuid4().hex,
                                        input=json.dumps(event))["executionArn"]

    def finish(self, arn: str, timeout: float = 180) -> Execution:
        described = self.wait_for(lambda: (d := self.sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
                                  f"execution {arn}", timeout=timeout)
        history, token = [], None
        while True:
            page = self.sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
            history += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        return Execution(arn, described["status"], described.get("error"), history)

    def deploy(self, package: dict, status: str = "Approved", timeout: float = 180) -> Execution:
        return self.finish(self.start(package, status), timeout=timeout)

    def wait_for(self, predicate, description: str, timeout: float = 60):
        return self.cloud.wait_for(predicate, timeout=timeout, interval=0.2, description=description)
