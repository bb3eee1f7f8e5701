"""A moto-backed world for the approval tests: a registered model package waiting for approval, the
evaluation.json and plots the real Evaluate step wrote for it, the nonce table, the secrets and the environment the approval handlers
read. Also helpers to load a handler module by path and to build API Gateway proxy events."""
from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path

import boto3

from mlops_shared.artifacts import EvaluationReport
from tests.lambda_handlers import LambdaContext, load_handler  # noqa: F401 - re-used by the approval tests
from tests.pipeline_outputs import EvaluationOutputs

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "tests" / "events"
GROUP = "ray-mlops-models"
BUCKET = "approval-artifacts"
EVAL_PREFIX = "runs/exec-1/Evaluate/evaluation"
SENDER = "mlops@example.com"
APPROVERS = ("alice@example.com", "bob@example.com")
SLACK_APPROVERS = {"U0ALICE": "alice@example.com", "U0BOB": "bob@example.com", "U0GONE": "carol@example.com"}
API_BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/Prod"
TOKEN_KEY = "k" * 20 + "0123456789abcdef0123456789abcdef"
SLACK_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def png_bytes(color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def api_event(method: str, path: str, *, body: str | None = None, headers: dict | None = None) -> dict:
    """An API Gateway REST proxy (v1) event, from the fixture matching the route."""
    fixture = "approval_slack_interaction.json" if path.startswith("/slack/") else "approval_api_request.json"
    event = copy.deepcopy(json.loads((EVENTS / fixture).read_text()))
    event["httpMethod"] = method
    event["path"] = path
    event["requestContext"]["httpMethod"] = method
    event["requestContext"]["path"] = f"/Prod{path}"
    if path.startswith("/approvals/"):
        event["pathParameters"] = {"token": path.split("/", 2)[2]}
    if headers is not None:
        event["headers"] = {**{k: v for k, v in event["headers"].items() if not k.startswith("X-Slack")}, **headers}
    event["body"] = body
    if method == "POST" and path.startswith("/approvals/"):
        event["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
    return event


@dataclass
class ApprovalWorld:
    endpoint_url: str
    model_package_arn: str
    table: str
    token_secret_arn: str
    webhook_secret_arn: str
    signing_secret_arn: str
    report: EvaluationReport

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint_url)

    def status(self, arn: str | None = None) -> str:
        package = self.client("sagemaker").describe_model_package(ModelPackageName=arn or self.model_package_arn)
        return package["ModelApprovalStatus"]

    def description(self, arn: str | None = None) -> str | None:
        package = self.client("sagemaker").describe_model_package(ModelPackageName=arn or self.model_package_arn)
        return package.get("ApprovalDescription")

    def register_package(self, status: str = "PendingManualApproval") -> str:
        sagemaker = self.client("sagemaker")
        response = sagemaker.create_model_package(
            ModelPackageGroupName=GROUP,
            ModelPackageDescription="XGBoost regressor",
            ModelApprovalStatus=status,
            InferenceSpecification={
                "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:latest",
                                "ModelDataUrl": f"s3://{BUCKET}/runs/exec-1/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelMetrics={"ModelQuality": {"Statistics": {
                "ContentType": "application/json", "S3Uri": f"s3://{BUCKET}/{EVAL_PREFIX}/evaluation.json"}}},
            CustomerMetadataProperties={"dataset_uri": "s3://data-bucket/incoming/house_pricing.csv",
                                        "dataset_version": "v-42", "target_column": "PRICE"},
        )
        return response["ModelPackageArn"]

    def set_slack_webhook(self, url: str) -> None:
        self.client("secretsmanager").put_secret_value(SecretId=self.webhook_secret_arn, SecretString=url)

    def nonce_items(self) -> list[dict]:
        return self.client("dynamodb").scan(TableName=self.table, ConsistentRead=True)["Items"]


def build_world(endpoint_url: str, monkeypatch, evaluation: EvaluationOutputs) -> ApprovalWorld:
    """Creates every resource the approval handlers use and sets their environment; the package's
    evaluation files are those the real Evaluate step wrote (`evaluation`)."""
    from aws_lambda_powertools.utilities import parameters

    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    evaluation.upload(s3, BUCKET, EVAL_PREFIX)
    # Images deeper down are not the evaluation's plots and must not be shown.
    s3.put_object(Bucket=BUCKET, Key=f"{EVAL_PREFIX}/nested/ignored.png", Body=png_bytes())

    sagemaker = boto3.client("sagemaker", endpoint_url=endpoint_url)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)

    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint_url)
    table = "approval-nonces"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])

    secrets = boto3.client("secretsmanager", endpoint_url=endpoint_url)
    token_arn = secrets.create_secret(Name="approval/token-key", SecretString=TOKEN_KEY)["ARN"]
    webhook_arn = secrets.create_secret(Name="approval/slack-webhook", SecretString="REPLACE_ME")["ARN"]
    signing_arn = secrets.create_secret(Name="approval/slack-signing", SecretString=SLACK_SIGNING_SECRET)["ARN"]

    boto3.client("ses", endpoint_url=endpoint_url).verify_email_identity(EmailAddress=SENDER)

    for name, value in {
        "APPROVER_EMAILS": ",".join(APPROVERS),
        "SLACK_APPROVERS": ",".join(f"{k}={v}" for k, v in SLACK_APPROVERS.items()),
        "SENDER_EMAIL": SENDER,
        "APPROVAL_API_BASE_URL": API_BASE,
        "MODEL_PACKAGE_GROUP_NAME": GROUP,
        "APPROVAL_NONCE_TABLE": table,
        "TOKEN_TTL_HOURS": "72",
        "TOKEN_SECRET_ARN": token_arn,
        "SLACK_WEBHOOK_SECRET_ARN": webhook_arn,
        "SLACK_SIGNING_SECRET_ARN": signing_arn,
        "POWERTOOLS_SERVICE_NAME": "approvals",
    }.items():
        monkeypatch.setenv(name, value)
    parameters.clear_caches()  # secrets are new for every test (moto is reset)

    world = ApprovalWorld(endpoint_url=endpoint_url, model_package_arn="", table=table,
                          token_secret_arn=token_arn, webhook_secret_arn=webhook_arn,
                          signing_secret_arn=signing_arn, report=evaluation.report)
    world.model_package_arn = world.register_package()
    return world


class HandlerHttpServer:
    """A real HTTP server on 127.0.0.1 that turns each request into an API Gateway proxy (v1) event
    for `handler` and its result back into an HTTP response; threaded, like concurrent Lambdas."""

    def __init__(self, handler):
        self.handler = handler
        self._server = None
        self._thread = None

    def _app(self, environ, start_response):
        import base64
        from urllib.parse import parse_qsl

        path = environ.get("PATH_INFO", "/")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        event = api_event(environ["REQUEST_METHOD"], path, body=body.decode() if body else None, headers=headers)
        event["queryStringParameters"] = dict(parse_qsl(environ.get("QUERY_STRING", ""))) or None
        result = self.handler(event, LambdaContext(function_name="approval-api", remaining_ms=30_000))
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        response_headers = [(k, v) for k, v in (result.get("headers") or {}).items()]
        for key, values in (result.get("multiValueHeaders") or {}).items():
            response_headers += [(key, value) for value in values]
        start_response(f"{result['statusCode']} X", response_headers)
        return [data]

    def start(self) -> str:
        import threading

        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


lambda_context = LambdaContext(function_name="approval-api", remaining_ms=30_000)


class LambdaService:
    """Lambda's Invoke API on 127.0.0.1 for the approval functions: `handler` (the approval API,
    whose asynchronous `Event` invocations are answered 202 at once and run afterwards, one at a
    time, as Lambda would) and `functions` (name -> handler, run synchronously for
    `RequestResponse`). Point boto3 at it with `AWS_ENDPOINT_URL_LAMBDA`. `drain()` waits for what
    was handed off and returns each invocation's (event, result)."""

    def __init__(self, handler, function_name: str = "approval-api", functions: dict | None = None):
        import queue

        self.handler = handler
        self.function_name = function_name
        self.functions = dict(functions or {})
        self._pending: "queue.Queue" = queue.Queue()
        self.invocations: list[tuple[dict, object]] = []
        self.requests: list[dict] = []
        self._server = None
        self._threads = []

    def _app(self, environ, start_response):
        import re

        path = environ.get("PATH_INFO", "")
        match = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", path)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        kind = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        name = match.group(1).rsplit(":", 1)[-1] if match else None
        self.requests.append({"function": match.group(1) if match else None, "type": kind})
        if kind == "RequestResponse" and name in self.functions:
            try:
                result, headers = self.functions[name](json.loads(body), LambdaContext(function_name=name)), []
            except Exception as exc:  # Lambda's shape of an unhandled error
                result = {"errorMessage": str(exc), "errorType": type(exc).__name__}
                headers = [("X-Amz-Function-Error", "Unhandled")]
            data = json.dumps(result).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers])
            return [data]
        if not match or kind != "Event" or name != self.function_name:
            start_response("404 Not Found", [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ResourceNotFoundException")])
            return [b'{"message": "Function not found"}']
        self._pending.put(json.loads(body))
        start_response("202 Accepted", [("Content-Length", "0")])
        return [b""]

    def _run(self) -> None:
        while True:
            event = self._pending.get()
            if event is None:
                return
            try:
                result = self.handler(event, LambdaContext(function_name=self.function_name, remaining_ms=30_000))
            except Exception as exc:  # what Lambda would record as the invocation's error
                result = exc
            self.invocations.append((event, result))
            self._pending.task_done()

    def drain(self, timeout: float = 60) -> list[tuple[dict, object]]:
        import time

        deadline = time.monotonic() + timeout
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self._pending.unfinished_tasks, "hand-offs still running"
        done, self.invocations = self.invocations, []
        return done

    def start(self) -> str:
        import threading

        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._run, daemon=True)]
        for thread in self._threads:
            thread.start()
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._pending.put(None)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
