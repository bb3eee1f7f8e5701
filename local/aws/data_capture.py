"""SageMaker data capture for local endpoints: sampled requests and responses as JSON Lines in S3.

What SageMaker does for an endpoint config with `DataCaptureConfig.EnableCapture`, the local
endpoint stand-in does through this module, so that whatever reads the capture (the drift monitor)
cannot tell the faces apart:

* Sampling: each successful invocation is captured with probability
  `InitialSamplingPercentage / 100`.
* `CaptureOptions`: `Input` records `endpointInput`, `Output` records `endpointOutput`.
* Encoding: a body whose content type is listed in `CaptureContentTypeHeader.CsvContentTypes` is
  kept as text with encoding `CSV`, in `JsonContentTypes` as text with `JSON`; any other (and every
  body when the header config is absent, SageMaker's default) is base64 with `BASE64`.
* Layout: `<DestinationS3Uri>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/<mm-ss-mmm>-<uuid>.jsonl`
  (hour folder of the inference time, UTC), one record per line:
  `{"captureData": {"endpointInput": {...}, "endpointOutput": {...}}, "eventMetadata":
  {"eventId": ..., "inferenceTime": "YYYY-MM-DDTHH:MM:SSZ"}, "eventVersion": "0"}`.
* Written with the model's execution role (as SageMaker writes it), SSE-KMS with `KmsKeyId` when
  the config names one (else the bucket's default encryption).

Records are batched per endpoint, variant and hour folder; a file is written when its batch reaches
`max_file_bytes` or is `max_file_seconds` old, on `flush()` and at `close()`. The request thread
only draws the sample and appends to a queue: encoding and S3 writes happen on one writer thread,
so capture adds no S3 round trip to an invocation. A write that fails is retried with the next
flush; what still cannot be written at `close()` is kept on local disk (`spill_dir`, logged) —
captured records are never dropped silently.
"""
from __future__ import annotations

import base64
import json
import logging
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_FILE_SECONDS = 5.0  # SageMaker: a few minutes; locally short, so monitors see traffic soon
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class CaptureSettings:
    """One endpoint config's DataCaptureConfig, as the capture writer applies it."""

    endpoint_name: str
    bucket: str
    prefix: str
    sampling_percentage: int
    capture_input: bool
    capture_output: bool
    csv_types: frozenset[str]
    json_types: frozenset[str]
    kms_key_id: str | None
    role_arn: str | None

    @classmethod
    def from_config(cls, endpoint_name: str, config: dict | None, role_arn: str | None) -> "CaptureSettings | None":
        """The settings, or None when the config captures nothing (absent, disabled, or no option)."""
        if not config or not config.get("EnableCapture", True):
            return None
        modes = {str(option.get("CaptureMode", "")).lower() for option in config.get("CaptureOptions") or []}
        if not modes & {"input", "output"}:
            return None
        destination = str(config.get("DestinationS3Uri", ""))
        if not destination.startswith("s3://"):
            raise ValueError(f"DataCaptureConfig.DestinationS3Uri must be an s3:// URI, got {destination!r}")
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        headers = config.get("CaptureContentTypeHeader") or {}
        return cls(endpoint_name=endpoint_name, bucket=bucket, prefix=prefix.strip("/"),
                   sampling_percentage=int(config.get("InitialSamplingPercentage", 0)),
                   capture_input="input" in modes, capture_output="output" in modes,
                   csv_types=frozenset(t.lower() for t in headers.get("CsvContentTypes") or []),
                   json_types=frozenset(t.lower() for t in headers.get("JsonContentTypes") or []),
                   kms_key_id=config.get("KmsKeyId") or None, role_arn=role_arn)

    def sampled(self) -> bool:
        return self.sampling_percentage >= 100 or random.random() * 100 < self.sampling_percentage

    def encoding(self, content_type: str | None) -> str:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type in self.csv_types:
            return "CSV"
        if media_type in self.json_types:
            return "JSON"
        return "BASE64"

    def folder(self, variant_name: str, when: datetime) -> str:
        parts = [self.prefix] if self.prefix else []
        return "/".join([*parts, self.endpoint_name, variant_name, when.strftime("%Y/%m/%d/%H")])


def capture_record(settings: CaptureSettings, when: datetime, request_type: str, request: bytes,
                   response_type: str, response: bytes, event_id: str | None = None) -> dict:
    """One capture line, as SageMaker writes it."""
    data: dict[str, Any] = {}
    if settings.capture_input:
        data["endpointInput"] = _payload(settings, "INPUT", request_type, request)
    if settings.capture_output:
        data["endpointOutput"] = _payload(settings, "OUTPUT", response_type, response)
    return {"captureData": data,
            "eventMetadata": {"eventId": event_id or str(uuid.uuid4()),
                              "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "eventVersion": "0"}


def _payload(settings: CaptureSettings, mode: str, content_type: str, body: bytes) -> dict:
    encoding = settings.encoding(content_type)
    if encoding != "BASE64":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # not text after all: kept byte for byte
            encoding = "BASE64"
    if encoding == "BASE64":
        text = base64.b64encode(body).decode("ascii")
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}


@dataclass
class _Batch:
    settings: CaptureSettings
    folder: str
    lines: list[bytes]
    size: int
    started: float
    retry_at: float = 0.0


class DataCapture:
    """The capture writer of the local endpoint runtime (one writer thread for all endpoints).

    `s3_for_role(role_arn)` gives the S3 client a capture file is written with."""

    def __init__(self, s3_for_role: Callable[[str | None], Any], spill_dir: str | Path,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, max_file_seconds: float = DEFAULT_MAX_FILE_SECONDS):
        self._s3_for_role = s3_for_role
        self.spill_dir = Path(spill_dir)
        self.max_file_bytes = max_file_bytes
        self.max_file_seconds = max_file_seconds
        self._queue: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._batches: dict[tuple[CaptureSettings, str], _Batch] = {}
        self._clients: dict[str | None, Any] = {}
        self._closed = False
        self.files_written = 0
        self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
        self._thread.start()

    # -- request threads ------------------------------------------------------------------------
    def record(self, settings: CaptureSettings | None, variant_name: str, request_type: str, request: bytes,
               response_type: str, response: bytes) -> None:
        """Captures one invocation if the sample draws it; returns at once (the writer thread does the rest)."""
        if settings is None or self._closed or not settings.sampled():
            return
        self._queue.put(("record", settings, variant_name, datetime.now(timezone.utc), request_type, request,
                         response_type, response))

    def flush(self, timeout: float = 30.0) -> None:
        """Writes every captured record to S3 now; raises if some could not be written."""
        done = threading.Event()
        outcome: dict[str, Exception] = {}
        self._queue.put(("flush", done, outcome))
        if not done.wait(timeout):
            raise TimeoutError(f"data capture not flushed within {timeout:.0f}s")
        if "error" in outcome:
            raise outcome["error"]

    def close(self, timeout: float = 30.0) -> None:
        """Writes what is left (to local disk if S3 refuses) and stops the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("close",))
        self._thread.join(timeout)

    # -- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._next_wait())
            except queue.Empty:
                self._write_due(time.monotonic())
                continue
            kind = item[0]
            if kind == "record":
                self._add(*item[1:])
                self._write_due(time.monotonic())
            elif kind == "flush":
                _, done, outcome = item
                self._drain()
                failed = self._write_all()
                if failed:
                    outcome["error"] = RuntimeError(f"{failed} capture file(s) could not be written; see the log")
                done.set()
            else:  # close
                self._drain()
                self._write_all()
                self._spill()
                return

    def _drain(self) -> None:
        """Takes the records queued so far into their batches (flush and close see all of them)."""
        pending = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] == "record":
                self._add(*item[1:])
            else:
                pending.append(item)
        for item in pending:  # a concurrent flush or close: handled once this one is done
            self._queue.put(item)

    def _add(self, settings: CaptureSettings, variant_name: str, when: datetime, request_type: str,
             request: bytes, response_type: str, response: bytes) -> None:
        line = json.dumps(capture_record(settings, when, request_type, request, response_type, response),
                          separators=(",", ":")).encode() + b"\n"
        folder = settings.folder(variant_name, when)
        batch = self._batches.get((settings, folder))
        if batch is None:
            batch = self._batches[(settings, folder)] = _Batch(settings, folder, [], 0, time.monotonic())
        batch.lines.append(line)
        batch.size += len(line)

    def _next_wait(self) -> float:
        if not self._batches:
            return 3600.0
        now = time.monotonic()
        due = min(max(b.started + self.max_file_seconds, b.retry_at) for b in self._batches.values())
        return max(0.01, due - now)

    def _write_due(self, now: float) -> None:
        for key, batch in list(self._batches.items()):
            if now >= batch.retry_at and (batch.size >= self.max_file_bytes or now - batch.started >= self.max_file_seconds):
                self._write(key, batch)

    def _write_all(self) -> int:
        return sum(not self._write(key, batch) for key, batch in list(self._batches.items()))

    def _write(self, key: tuple, batch: _Batch) -> bool:
        settings = batch.settings
        now = datetime.now(timezone.utc)
        name = f"{now.strftime('%M-%S')}-{now.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
        object_key = f"{batch.folder}/{name}"
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": settings.kms_key_id} if settings.kms_key_id else {}
        try:
            self._client(settings.role_arn).put_object(Bucket=settings.bucket, Key=object_key,
                                                       Body=b"".join(batch.lines),
                                                       ContentType="application/jsonlines", **extra)
        except Exception as exc:  # refused, unreachable, ...: kept for the next attempt
            batch.retry_at = time.monotonic() + RETRY_SECONDS
            log.warning("data capture: cannot write s3://%s/%s (%d records kept for retry): %s",
                        settings.bucket, object_key, len(batch.lines), exc)
            return False
        del self._batches[key]
        self.files_written += 1
        return True

    def _client(self, role_arn: str | None):
        client = self._clients.get(role_arn)
        if client is None:
            client = self._clients[role_arn] = self._s3_for_role(role_arn)
        return client

    def _spill(self) -> None:
        for batch in self._batches.values():
            path = self.spill_dir / batch.settings.bucket / batch.folder / f"unwritten-{uuid.uuid4()}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"".join(batch.lines))
            log.error("data capture: %d record(s) for s3://%s/%s could not be written; kept in %s",
                      len(batch.lines), batch.settings.bucket, batch.folder, path)
        self._batches.clear()
