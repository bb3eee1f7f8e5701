"""EventBridge delivery the way AWS does it, for the targets moto cannot invoke.

`EventDispatcher`: the provisioner gave every EventBridge target moto cannot invoke (Lambda, Step
  Functions, SNS) an SQS shadow queue; moto matches the rule patterns and fills those queues. One
  thread per queue long-polls it and delivers each event to the real target — Lambda through the
  lambda runtime, a state machine through `StartExecution` in moto (unique execution name), SNS by
  publishing — after applying the target's `Input`/`InputPath`/`InputTransformer`. A failed delivery
  is retried (as EventBridge and async Lambda do) and then written to `<state>/dlq/` so nothing is
  lost silently. SNS subscriptions and SQS event sources of functions are delivered the same way.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from local.aws.stack.model import ACCOUNT_ID, REGION, EventTarget

log = logging.getLogger(__name__)

# The fixed keys a bare gateway (no strict face) accepts; LocalCloud passes real identities.
_BARE_GATEWAY_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def local_client(service: str, endpoint_url: str, credentials=None):
    """A client of the local cloud acting with `credentials` (local.aws.identities.AwsCredentials)."""
    keys = credentials.client_kwargs() if credentials is not None else _BARE_GATEWAY_KEYS
    return boto3.client(service, endpoint_url=endpoint_url, region_name=REGION,
                        config=Config(retries={"max_attempts": 3}), **keys)


# ------------------------------------------------------------------------------------------------
# Input shaping (EventBridge target Input / InputPath / InputTransformer)
# ------------------------------------------------------------------------------------------------
def json_path(document: Any, path: str) -> Any:
    """The subset of JSONPath EventBridge supports: `$`, `$.a.b`, `$.a[0]`, `$.detail['x-y']`."""
    if path in ("$", ""):
        return document
    if not path.startswith("$"):
        raise ValueError(f"unsupported JSON path {path!r}")
    value = document
    for name, quoted, index in re.findall(r"\.([^.\[]+)|\['([^']+)'\]|\[(\d+)\]", path[1:]):
        if index:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            key = name or quoted
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def transform_input(event: dict, target: EventTarget) -> Any:
    if target.input is not None:
        return json.loads(target.input) if isinstance(target.input, str) else target.input
    if target.input_path:
        return json_path(event, target.input_path)
    if target.input_transformer:
        paths = target.input_transformer.get("InputPathsMap") or {}
        template = target.input_transformer["InputTemplate"]
        values = {name: json_path(event, path) for name, path in paths.items()}
        if "aws.events.event" in template or "aws.events.rule-name" in template:
            values.setdefault("aws.events.event", event)
            values.setdefault("aws.events.event.json", event)
            values.setdefault("aws.events.rule-name", target.name)

        def placeholder(match: re.Match) -> str:
            name = match.group(1)
            value = values.get(name)
            inside_quotes = match.start() > 0 and template[match.start() - 1] == '"' and \
                match.end() < len(template) and template[match.end()] == '"'
            if isinstance(value, str):
                return json.dumps(value)[1:-1] if inside_quotes else value
            return json.dumps(value)

        text = re.sub(r"<([A-Za-z0-9_.\-]+)>", placeholder, template)
        try:
            return json.loads(text)
        except ValueError:
            return text  # a plain-text template delivers a string
    return event


def normalise_event(event: dict) -> dict:
    """Delivers the AWS shape where moto's differs: events from `put_events` lack `account`, and
    S3 events spell `detail.object.etag` as `eTag`."""
    if not isinstance(event, dict) or "detail-type" not in event:
        return event
    event.setdefault("account", ACCOUNT_ID)
    if event.get("source") == "aws.s3":
        obj = ((event.get("detail") or {}).get("object")) or {}
        if "eTag" in obj and "etag" not in obj:
            obj["etag"] = obj.pop("eTag")
    return event


# ------------------------------------------------------------------------------------------------
# Dispatcher
# ------------------------------------------------------------------------------------------------
class EventDispatcher:
    def __init__(
        self,
        targets: list[EventTarget],
        endpoint_url: str,
        lambda_runtime,
        dlq_dir: str | Path,
        poll_seconds: int = 1,
        retry_delay_seconds: float = 1.0,
        identities=None,
        strict=None,
    ):
        self.targets = list(targets)
        # EventBridge reads its own (shadow) queues as the local runtime; it delivers as the service
        # it is (events.amazonaws.com: the target's resource policy decides, e.g. a Lambda
        # permission) or with the target's role (a state machine), checked by the strict face.
        self.identities = identities
        self.strict = strict
        self._runtime = identities.runtime if identities is not None else None
        self.endpoint_url = endpoint_url
        self.lambda_runtime = lambda_runtime
        self.dlq_dir = Path(dlq_dir)
        self.poll_seconds = poll_seconds
        self.retry_delay_seconds = retry_delay_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.delivered = 0
        self.failed = 0

    def start(self) -> "EventDispatcher":
        for target in self.targets:
            thread = threading.Thread(target=self._poll, args=(target,), daemon=True,
                                      name=f"events-{target.source}-{target.name}"[:60])
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.poll_seconds + 30)
        self._threads.clear()

    def idle(self) -> bool:
        """No delivery in progress and every shadow queue is empty (visible and in flight)."""
        with self._busy_lock:
            if self._busy:
                return False
        if self.lambda_runtime is not None and self.lambda_runtime.busy():
            return False  # an asynchronous invocation (or its retries) is still running
        sqs = local_client("sqs", self.endpoint_url, self._runtime)
        for target in self.targets:
            attrs = sqs.get_queue_attributes(QueueUrl=target.queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            if int(attrs["ApproximateNumberOfMessages"]) or int(attrs["ApproximateNumberOfMessagesNotVisible"]):
                return False
        return True

    def _poll(self, target: EventTarget) -> None:
        sqs = local_client("sqs", self.endpoint_url, self._runtime)
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=target.queue_url, MaxNumberOfMessages=min(target.batch_size, 10),
                    WaitTimeSeconds=self.poll_seconds, AttributeNames=["All"], MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:  # the gateway stopping under us ends the loop quietly
                if self._stop.is_set():
                    return
                log.warning("polling %s failed: %s", target.queue_url, exc)
                self._stop.wait(1)
                continue
            if not messages:
                continue
            with self._busy_lock:
                self._busy += 1
            try:
                if target.source == "sqs":
                    self._deliver_batch(sqs, target, messages)
                else:
                    for message in messages:
                        self._deliver_one(sqs, target, message)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _deliver_one(self, sqs, target: EventTarget, message: dict) -> None:
        body = json.loads(message["Body"])
        if target.source == "sns":
            payload = _sns_lambda_event(body, target)
        else:
            payload = transform_input(normalise_event(body), target)
        error = None
        for attempt in range(target.retry_attempts + 1):
            if self._stop.is_set() and attempt:
                break
            error = self._send(target, payload)
            if error is None:
                break
            log.warning("delivery to %s failed (attempt %d): %s", target.arn, attempt + 1, error)
            if attempt < target.retry_attempts:
                self._stop.wait(self.retry_delay_seconds * (2 ** attempt))
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.dead_letter(f"{target.source}-{target.name}", payload, {"target": target.arn, "error": error})
            if target.dead_letter_arn:  # what EventBridge does with a rule target's DeadLetterConfig
                self._send_to_dead_letter_queue(sqs, target, body, error)
        sqs.delete_message(QueueUrl=target.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _send_to_dead_letter_queue(self, sqs, target: EventTarget, event: Any, error: str) -> None:
        try:
            queue_name = target.dead_letter_arn.rsplit(":", 1)[1]
            refusal = self._as_events(target, "sqs", "SendMessage", {
                "QueueUrl": sqs.get_queue_url(QueueName=queue_name)["QueueUrl"], "MessageBody": "{}"})
            if refusal:  # the queue policy does not let EventBridge send: the event is lost, as on AWS
                log.error("EventBridge may not send the failed event to %s: %s", target.dead_letter_arn, refusal)
                return
            sqs.send_message(
                QueueUrl=sqs.get_queue_url(QueueName=queue_name)["QueueUrl"],
                MessageBody=json.dumps(event),
                MessageAttributes={
                    "RULE_ARN": {"DataType": "String", "StringValue": target.name},
                    "TARGET_ARN": {"DataType": "String", "StringValue": target.arn},
                    "ERROR_MESSAGE": {"DataType": "String", "StringValue": error[:1000]},
                },
            )
        except Exception:
            log.exception("could not send the failed event to %s", target.dead_letter_arn)

    def _deliver_batch(self, sqs, target: EventTarget, messages: list[dict]) -> None:
        records = [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": m.get("MessageAttributes", {}),
            "md5OfBody": m.get("MD5OfBody"), "eventSource": "aws:sqs", "eventSourceARN": target.queue_arn,
            "awsRegion": REGION,
        } for m in messages]
        result = self.lambda_runtime.invoke(target.arn, {"Records": records})
        if not result.ok:
            self.failed += 1
            log.warning("SQS batch to %s failed: %s", target.arn, result.payload)
            return  # messages become visible again after the queue's visibility timeout, as on AWS
        failed_ids = {f.get("itemIdentifier") for f in (result.payload or {}).get("batchItemFailures", [])} \
            if isinstance(result.payload, dict) else set()
        for m in messages:
            if m["MessageId"] not in failed_ids:
                sqs.delete_message(QueueUrl=target.queue_url, ReceiptHandle=m["ReceiptHandle"])
        self.delivered += 1

    def _as_events(self, target: EventTarget, service: str, operation: str, params: dict) -> str | None:
        """EventBridge acting as itself on a target: the refusal the strict face makes, or None."""
        if self.strict is None or target.source != "rule":
            return None
        from local.aws.strict.iam_policy import Principal

        decision = self.strict.authorize(Principal.service("events.amazonaws.com", ACCOUNT_ID), service, operation,
                                         params, source_arn=target.rule_arn, source_account=ACCOUNT_ID)
        return None if decision is None else decision.message()

    def _send(self, target: EventTarget, payload: Any) -> str | None:
        """Delivers once; returns an error description or None."""
        try:
            if target.kind == "lambda" and target.source == "rule":
                # EventBridge invokes a function asynchronously: once Lambda accepts the event the
                # delivery is done; the function's retries and dead-letter queue are Lambda's.
                refusal = self._as_events(target, "lambda", "Invoke", {"FunctionName": target.arn})
                if refusal:
                    return refusal
                self.lambda_runtime.invoke_async(target.arn, payload)
                return None
            if target.kind == "lambda":
                result = self.lambda_runtime.invoke(target.arn, payload)
                return None if result.ok else json.dumps(result.payload)
            if target.kind == "states":
                name = f"local-{uuid.uuid4().hex}"
                credentials = self._runtime
                if self.identities is not None and target.role_arn:
                    credentials = self.identities.role_credentials(target.role_arn, "events.amazonaws.com",
                                                                   "eventbridge", source_arn=target.rule_arn)
                local_client("stepfunctions", self.endpoint_url, credentials).start_execution(
                    stateMachineArn=target.arn, name=name, input=json.dumps(payload))
                return None
            if target.kind == "sns":
                local_client("sns", self.endpoint_url, self._runtime).publish(
                    TopicArn=target.arn, Message=payload if isinstance(payload, str) else json.dumps(payload))
                return None
            if target.kind == "events":
                entry = payload if isinstance(payload, dict) else {}
                local_client("events", self.endpoint_url, self._runtime).put_events(Entries=[{
                    "Source": entry.get("source", "local"), "DetailType": entry.get("detail-type", "event"),
                    "Detail": json.dumps(entry.get("detail", {})), "EventBusName": target.arn}])
                return None
            return f"unsupported target kind {target.kind}"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    def dead_letter(self, label: str, payload: Any, error: Any) -> Path:
        self.dlq_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:80]
        path = self.dlq_dir / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{safe}.json"
        path.write_text(json.dumps({"label": label, "event": payload, "error": error}, indent=2, default=str))
        log.error("event for %s dead-lettered to %s", label, path)
        return path


def _sns_lambda_event(body: dict, target: EventTarget) -> dict:
    """An SNS notification (as delivered to SQS) in the shape SNS invokes Lambda with."""
    return {"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0",
        "EventSubscriptionArn": f"{body.get('TopicArn', '')}:{target.name}",
        "Sns": {
            "Type": body.get("Type", "Notification"), "MessageId": body.get("MessageId"),
            "TopicArn": body.get("TopicArn"), "Subject": body.get("Subject"), "Message": body.get("Message"),
            "Timestamp": body.get("Timestamp"), "SignatureVersion": body.get("SignatureVersion", "1"),
            "Signature": body.get("Signature", ""), "SigningCertUrl": body.get("SigningCertURL", ""),
            "UnsubscribeUrl": body.get("UnsubscribeURL", ""), "MessageAttributes": body.get("MessageAttributes", {}),
        },
    }]}


def wait_until_idle(dispatcher: EventDispatcher, timeout: float = 60.0, settle: float = 0.5) -> bool:
    """True once the dispatcher has been idle for `settle` seconds in a row."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        if dispatcher.idle():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return True
        else:
            quiet_since = None
        time.sleep(0.2)
    return False
