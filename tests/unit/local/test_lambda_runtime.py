"""The lambda runtime: real handler code in warm worker processes, errors and timeouts shaped like Lambda."""
from __future__ import annotations

import json
import textwrap
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local.aws.gateway import LocalGateway
from local.aws.lambda_runtime import FunctionNotFound, LambdaRuntime
from local.aws.stack.model import FunctionSpec

# Stacks provisioned here attach AWS managed policies (SAM's AWSLambdaBasicExecutionRole).
pytestmark = pytest.mark.managed_policies

HANDLER = """
import os, time
# read at import time, as Powertools does: each function must have a process of its own
COLOUR = os.environ.get("COLOUR")
STARTED = time.time()
calls = 0

def lambda_handler(event, context):
    global calls
    calls += 1
    if event.get("fail"):
        raise ValueError("bad input: " + event["fail"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("unserialisable"):
        return {"value": object()}
    return {"colour": COLOUR, "calls": calls, "pid": os.getpid(), "event": event,
            "function_name": context.function_name, "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "endpoint": os.environ["AWS_ENDPOINT_URL"], "region": os.environ["AWS_REGION"],
            "shared": __import__("shared_helper").VALUE}
"""


def _function(tmp_path, name: str, colour: str, timeout: float = 5) -> FunctionSpec:
    code = tmp_path / name
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(HANDLER))
    layer = tmp_path / "layer"
    layer.mkdir(exist_ok=True)
    (layer / "shared_helper.py").write_text("VALUE = 'from the layer'\n")
    return FunctionSpec(name, name, f"arn:aws:lambda:us-east-1:123456789012:function:{name}", code,
                        "app.lambda_handler", {"COLOUR": colour}, [layer], timeout, 128, "python3.13")


@pytest.fixture
def runtime(tmp_path):
    dead_letters = []
    functions = {spec.name: spec for spec in (_function(tmp_path, "red-fn", "red"),
                                              _function(tmp_path, "blue-fn", "blue", timeout=1.5))}
    runtime = LambdaRuntime(functions, "http://127.0.0.1:4566", log_dir=tmp_path / "logs",
                            dead_letter=lambda *args: dead_letters.append(args))
    runtime.dead_letters = dead_letters
    yield runtime
    runtime.close()


def test_handler_runs_warm_with_its_own_environment(runtime):
    first = runtime.invoke("red-fn", {"n": 1})
    assert first.ok, first.payload
    second = runtime.invoke("arn:aws:lambda:us-east-1:123456789012:function:red-fn", {"n": 2})
    blue = runtime.invoke("blue-fn", {})
    assert first.payload["colour"] == "red" and blue.payload["colour"] == "blue"
    assert (first.payload["calls"], second.payload["calls"]) == (1, 2)  # warm: same process, same module
    assert first.payload["pid"] == second.payload["pid"] != blue.payload["pid"]
    assert first.payload["event"] == {"n": 1}
    assert first.payload["function_name"] == "red-fn"
    assert first.payload["request_id"] == first.request_id
    assert 0 < first.payload["remaining_ms"] <= 5000
    assert (first.payload["endpoint"], first.payload["region"]) == ("http://127.0.0.1:4566", "us-east-1")
    assert first.payload["shared"] == "from the layer"


def test_errors_are_shaped_like_lambda(runtime, tmp_path):
    result = runtime.invoke("red-fn", {"fail": "no header"})
    assert result.function_error == "Unhandled"
    assert result.payload["errorType"] == "ValueError"
    assert result.payload["errorMessage"] == "bad input: no header"
    assert any("lambda_handler" in line for line in result.payload["stackTrace"])
    assert "ValueError: bad input" in (tmp_path / "logs" / "red-fn.log").read_text()  # the handler's log

    marshal = runtime.invoke("red-fn", {"unserialisable": True})
    assert (marshal.function_error, marshal.payload["errorType"]) == ("Unhandled", "Runtime.MarshalError")
    assert runtime.invoke("red-fn", {}).ok  # the worker survives handler errors

    with pytest.raises(FunctionNotFound):
        runtime.invoke("no-such-fn", {})


def test_timeout_kills_the_worker_and_the_next_call_gets_a_fresh_one(runtime):
    before = runtime.invoke("blue-fn", {})
    started = time.monotonic()
    result = runtime.invoke("blue-fn", {"sleep": 10})
    assert time.monotonic() - started < 5
    assert result.function_error == "Unhandled"
    assert result.payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.50 seconds" in result.payload["errorMessage"]
    after = runtime.invoke("blue-fn", {})
    assert after.ok and after.payload["pid"] != before.payload["pid"] and after.payload["calls"] == 1


def test_import_errors_are_reported(tmp_path):
    spec = _function(tmp_path, "broken-fn", "x")
    (spec.code_dir / "app.py").write_text("import not_a_module_anywhere\n")
    runtime = LambdaRuntime({spec.name: spec}, "http://127.0.0.1:1")
    try:
        result = runtime.invoke("broken-fn", {})
        assert result.function_error == "Unhandled"
        assert result.payload["errorType"] == "Runtime.ImportModuleError"
        assert "not_a_module_anywhere" in result.payload["errorMessage"]
    finally:
        runtime.close()


def test_boto3_invoke_through_the_gateway(runtime, monkeypatch):
    with LocalGateway() as gateway:
        runtime.endpoint_url = gateway.url
        runtime.install(gateway)
        client = boto3.client("lambda", endpoint_url=gateway.url, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x",
                              config=Config(retries={"max_attempts": 0}))
        response = client.invoke(FunctionName="red-fn", Payload=json.dumps({"via": "gateway"}))
        assert "FunctionError" not in response
        assert json.loads(response["Payload"].read())["event"] == {"via": "gateway"}

        failed = client.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:red-fn",
                               Payload=json.dumps({"fail": "x"}))
        assert failed["FunctionError"] == "Unhandled"
        assert json.loads(failed["Payload"].read())["errorType"] == "ValueError"

        queued = client.invoke(FunctionName="red-fn", InvocationType="Event", Payload=json.dumps({"fail": "async"}))
        assert queued["StatusCode"] == 202

        with pytest.raises(ClientError) as missing:
            client.invoke(FunctionName="no-such-fn", Payload=b"{}")
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"

        # An async invocation that keeps failing is retried twice, then dead-lettered.
        deadline = time.monotonic() + 30
        while not runtime.dead_letters and time.monotonic() < deadline:
            time.sleep(0.2)
        [(label, event, error)] = runtime.dead_letters
        assert (label, event, error["errorMessage"]) == ("lambda-async-red-fn", {"fail": "async"}, "bad input: async")


API_HANDLER = """
import base64, json

def lambda_handler(event, context):
    if event.get("version") == "2.0":
        return {"echo": event}  # HTTP API v2 turns a plain object into a 200 JSON response
    body = event["body"]
    if event["isBase64Encoded"]:
        body = base64.b64decode(body).hex()
    return {"statusCode": 201, "headers": {"Content-Type": "application/json", "X-Seen": "yes"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": json.dumps({"event": event, "body": body})}
"""


def test_api_server_turns_requests_into_proxy_events(tmp_path):
    import urllib.request

    from local.aws.api_gateway import ApiServer
    from local.aws.stack.model import ApiRoute

    spec = _function(tmp_path, "api-fn", "green")
    (spec.code_dir / "app.py").write_text(textwrap.dedent(API_HANDLER))
    runtime = LambdaRuntime({spec.name: spec}, "http://127.0.0.1:1")
    server = ApiServer(runtime)
    server.add_routes([
        ApiRoute("Api", "abc123", "rest", "1.0", "Prod", "POST", "/approvals/{token}", "api-fn"),
        ApiRoute("Http", "def456", "http", "2.0", "$default", "GET", "/files/{path+}", "api-fn"),
    ])
    server.start()
    try:
        request = urllib.request.Request(f"{server.url}/Prod/approvals/tok-1?a=1&a=2&b=x", data=b"\x00\xffbinary",
                                         headers={"Content-Type": "application/octet-stream"}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 201 and response.headers["X-Seen"] == "yes"
            assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
            document = json.loads(response.read())
        event = document["event"]
        assert (event["resource"], event["path"], event["httpMethod"]) == ("/approvals/{token}", "/approvals/tok-1", "POST")
        assert event["pathParameters"] == {"token": "tok-1"}
        assert event["queryStringParameters"] == {"a": "2", "b": "x"}
        assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x"]}
        assert event["requestContext"]["stage"] == "Prod" and event["requestContext"]["path"] == "/Prod/approvals/tok-1"
        assert event["isBase64Encoded"] is True and document["body"] == b"\x00\xffbinary".hex()

        with urllib.request.urlopen(f"{server.url}/files/a/b.txt?x=1&x=2", timeout=60) as response:
            v2 = json.loads(response.read())["echo"]
        assert (v2["routeKey"], v2["rawPath"], v2["rawQueryString"]) == ("GET /files/{path+}", "/files/a/b.txt", "x=1&x=2")
        assert v2["pathParameters"] == {"path": "a/b.txt"} and v2["queryStringParameters"] == {"x": "1,2"}
        assert v2["requestContext"]["http"]["method"] == "GET"

        with pytest.raises(urllib.error.HTTPError) as wrong_method:
            urllib.request.urlopen(f"{server.url}/Prod/approvals/tok-1", timeout=30)  # GET: no such route
        assert wrong_method.value.code == 404
    finally:
        server.stop()
        runtime.close()


DISPATCH_TEMPLATE = """
Resources:
  Recorder:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: recorder/
      Handler: app.lambda_handler
      Runtime: python3.13
      Environment:
        Variables:
          RECORD_FILE: {record_file}
      Events:
        Shaped:
          Type: EventBridgeRule
          Properties:
            Pattern: {{source: [test.app], detail-type: [Thing Happened]}}
            InputTransformer:
              InputPathsMap: {{name: $.detail.name, size: $.detail.size}}
              InputTemplate: '{{"who": "<name>", "how_big": <size>, "note": "name=<name>"}}'
        Whole:
          Type: EventBridgeRule
          Properties:
            Pattern: {{source: [test.app], detail-type: [Thing Failed]}}
"""

RECORDER = """
import json, os

def lambda_handler(event, context):
    if event.get("detail-type") == "Thing Failed":
        raise RuntimeError("cannot handle " + event["detail"]["name"])
    with open(os.environ["RECORD_FILE"], "a") as sink:
        sink.write(json.dumps(event) + "\\n")
    return "ok"
"""


def test_dispatcher_delivers_rule_matches_to_the_handler_with_input_shaping_and_dead_letters(aws, tmp_path):
    from local.aws.eventbridge import EventDispatcher, wait_until_idle
    from local.aws.stack.provisioner import provision
    from local.aws.stack.template import loads_template

    record = tmp_path / "record.jsonl"
    (tmp_path / "recorder").mkdir()
    (tmp_path / "recorder" / "app.py").write_text(textwrap.dedent(RECORDER))
    stack = provision(loads_template(DISPATCH_TEMPLATE.format(record_file=record)), aws, template_dir=tmp_path)
    dead_letters: list[tuple] = []
    runtime = LambdaRuntime(stack.functions, aws, dead_letter=lambda *failed: dead_letters.append(failed))
    dispatcher = EventDispatcher(stack.event_targets, aws, runtime, tmp_path / "dlq", retry_delay_seconds=0.1).start()
    try:
        events = boto3.client("events")
        events.put_events(Entries=[
            {"Source": "test.app", "DetailType": "Thing Happened", "Detail": json.dumps({"name": "box", "size": 3})},
            {"Source": "test.app", "DetailType": "Thing Failed", "Detail": json.dumps({"name": "crate"})},
            {"Source": "other.app", "DetailType": "Thing Happened", "Detail": json.dumps({"name": "no", "size": 0})},
        ])
        time.sleep(0.5)
        assert wait_until_idle(dispatcher, timeout=60)
        assert [json.loads(line) for line in record.read_text().splitlines()] == [
            {"who": "box", "how_big": 3, "note": "name=box"}]
        # EventBridge invokes Lambda asynchronously: both events were delivered; the handler's
        # failure is Lambda's to retry and then dead-letter (EventInvokeConfig: no retries here).
        assert (dispatcher.delivered, dispatcher.failed) == (2, 0)
        deadline = time.monotonic() + 30
        while not dead_letters and time.monotonic() < deadline:
            time.sleep(0.1)
        [(label, event, error)] = dead_letters
        assert label.startswith("lambda-async-") and event["detail"] == {"name": "crate"}
        assert "cannot handle crate" in json.dumps(error)
    finally:
        dispatcher.stop()
        runtime.close()
