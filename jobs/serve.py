"""The model server: the SageMaker hosting contract for the model artifact this project trains.

    python -m jobs.serve [--model-dir /opt/ml/model] [--host 0.0.0.0] [--port 8080]

* `GET /ping` answers 200 once the model is loaded (SageMaker's health check).
* `POST /invocations` takes RAW features (the server applies the persisted scaling) and answers
  `{"predictions": [...]}`:
  - `application/json`: one record `{"SQUARE_FEET": 3000, ...}`, a list of records, or
    `{"instances": [...]}`; a record may also be a list of values in the model's feature order.
  - `text/csv`: rows with a header line (columns by name, any order) or without one (values in
    the model's feature order).
  The target column is ignored when present (rows copied from a dataset carry it); any other
  unknown, missing, empty or non-numeric field is a 400 with a JSON body naming the field and row.

Port: `--port`, else `SAGEMAKER_BIND_TO_PORT`, else 8080. Host: `--host`, default 0.0.0.0 inside
the container (the local runtime passes 127.0.0.1). Model: `--model-dir`, else `<SM_CONTAINER_ROOT>/model`.
The server is a threaded stdlib HTTP/1.1 server: per-request work is parsing, validation and one
in-memory predict call, so a single record is answered in well under a millisecond of model time.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("jobs.serve")

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's InvokeEndpoint payload limit
JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")


class RequestError(Exception):
    """A client error: becomes a 4xx response with a JSON body `{"error": ..., "details": ...}`."""

    def __init__(self, status: int, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details

    def body(self) -> dict:
        payload: dict[str, Any] = {"error": self.message}
        if self.details:
            payload["details"] = self.details
        return payload


@dataclass
class FeatureSchema:
    """What a request must carry: the model's feature order and the (ignored) target column."""

    feature_order: list[str]
    target: str | None = None

    def __post_init__(self) -> None:
        self._index = {name: i for i, name in enumerate(self.feature_order)}

    # -- parsing ----------------------------------------------------------------------------
    def rows_from_json(self, body: bytes) -> list[list[float]]:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"body is not valid JSON: {exc}") from None
        if isinstance(payload, dict) and "instances" in payload:
            payload = payload["instances"]
        if isinstance(payload, dict):
            records: list = [payload]
        elif isinstance(payload, list):
            records = payload
        else:
            raise RequestError(400, "JSON body must be a record object, a list of records, or {\"instances\": [...]}")
        if not records:
            raise RequestError(400, "no records in the request")
        rows = []
        for number, record in enumerate(records):
            if isinstance(record, dict):
                rows.append(self._row_from_mapping(record, number))
            elif isinstance(record, list):
                rows.append(self._row_from_values(record, number))
            else:
                raise RequestError(400, f"record {number} must be an object or a list of values, got {type(record).__name__}")
        return rows

    def rows_from_csv(self, body: bytes) -> list[list[float]]:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise RequestError(400, "CSV body is not UTF-8 text") from None
        lines = [line for line in csv.reader(io.StringIO(text)) if line and any(cell.strip() for cell in line)]
        if not lines:
            raise RequestError(400, "no records in the request")
        first = [cell.strip() for cell in lines[0]]
        if any(cell in self._index or cell == self.target for cell in first):
            header, data = first, lines[1:]
            if not data:
                raise RequestError(400, "CSV has a header but no rows")
            return [self._row_from_mapping(dict(zip(header, row)), n, width=(len(header), len(row)))
                    for n, row in enumerate(data)]
        return [self._row_from_values(row, n) for n, row in enumerate(lines)]

    # -- validation -------------------------------------------------------------------------
    def _row_from_mapping(self, record: dict, number: int, width: tuple[int, int] | None = None) -> list[float]:
        if width is not None and width[0] != width[1]:
            raise RequestError(400, f"row {number} has {width[1]} values but the header has {width[0]} columns", row=number)
        unknown = [key for key in record if key not in self._index and key != self.target]
        if unknown:
            raise RequestError(400, f"unknown field(s) in record {number}: {', '.join(map(str, unknown))}",
                               row=number, unknown=unknown, expected=self.feature_order)
        missing = [name for name in self.feature_order if name not in record]
        if missing:
            raise RequestError(400, f"missing field(s) in record {number}: {', '.join(missing)}",
                               row=number, missing=missing, expected=self.feature_order)
        return [_number(record[name], name, number) for name in self.feature_order]

    def _row_from_values(self, values: Sequence, number: int) -> list[float]:
        if len(values) != len(self.feature_order):
            raise RequestError(
                400,
                f"record {number} has {len(values)} values; expected {len(self.feature_order)} in this order: "
                + ", ".join(self.feature_order),
                row=number, expected=self.feature_order,
            )
        return [_number(value, name, number) for name, value in zip(self.feature_order, values)]


def _number(value: Any, name: str, row: int) -> float:
    if isinstance(value, bool) or value is None:
        raise RequestError(400, f"field {name} in record {row} must be a number, got {json.dumps(value)}", row=row, field=name)
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            raise RequestError(400, f"field {name} in record {row} must be a number, got {text!r}", row=row, field=name) from None
    if not math.isfinite(number):
        raise RequestError(400, f"field {name} in record {row} must be finite, got {value!r}", row=row, field=name)
    return number


class Predictor:
    """The loaded model plus its request schema; `predict(content_type, body) -> list[float]`."""

    def __init__(self, model_dir: str | Path):
        import numpy as np

        from jobs.model_io import load_model_dir

        self._np = np
        self.model_dir = Path(model_dir)
        self.model = load_model_dir(self.model_dir)
        self.schema = FeatureSchema(list(self.model.feature_order), self.model.target)
        self._mean = self.model.preprocessor.mean
        self._scale = self.model.preprocessor.scale

    def predict(self, content_type: str, body: bytes) -> list[float]:
        if not body.strip():
            raise RequestError(400, "empty request body")
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type in JSON_TYPES:
            rows = self.schema.rows_from_json(body)
        elif media_type in CSV_TYPES:
            rows = self.schema.rows_from_csv(body)
        else:
            raise RequestError(415, f"unsupported content type {content_type!r}; use application/json or text/csv")
        # Rows are validated floats in feature order already: scale with numpy and predict, no
        # DataFrame round trip (it would cost more than the model itself for one record).
        scaled = (self._np.asarray(rows, dtype=float) - self._mean) / self._scale
        return [float(p) for p in self.model.predict_scaled(scaled)]


def make_handler(predictor: Predictor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the endpoint proxy reuses connections
        # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for
        # the delayed ACK on every request.
        disable_nagle_algorithm = True
        server_version = "mlops-serve"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s " + format, self.address_string(), *args)

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path == "/ping":
                self._reply(200, {"status": "healthy"})
            else:
                self._reply(404, {"error": f"no such path: {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.rfile.read(length)
                self._reply(413, {"error": f"body of {length} bytes exceeds the {MAX_BODY_BYTES}-byte limit"})
                return
            body = self.rfile.read(length) if length else b""
            if self.path != "/invocations":
                self._reply(404, {"error": f"no such path: {self.path}"})
                return
            try:
                predictions = predictor.predict(self.headers.get("Content-Type", ""), body)
            except RequestError as exc:
                self._reply(exc.status, exc.body())
            except Exception as exc:  # a model failure is the server's fault: 500, logged with its trace
                log.exception("prediction failed")
                self._reply(500, {"error": f"prediction failed: {exc}"})
            else:
                self._reply(200, {"predictions": predictions})

    return Handler


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def build_server(model_dir: str | Path, host: str, port: int) -> ModelServer:
    """Loads the model (raises if it cannot) and binds the server; `serve_forever()` runs it."""
    predictor = Predictor(model_dir)
    return ModelServer((host, port), make_handler(predictor))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the model under the SageMaker hosting contract.")
    parser.add_argument("command", nargs="?", default="serve", help="SageMaker starts hosting images with `serve`")
    parser.add_argument("--model-dir", default=None, help="model directory (default <SM_CONTAINER_ROOT>/model)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from jobs.common import container_root, setup_logging

    setup_logging()
    args = parse_args(argv)
    model_dir = Path(args.model_dir) if args.model_dir else container_root() / "model"
    port = args.port if args.port is not None else int(os.environ.get("SAGEMAKER_BIND_TO_PORT") or 8080)
    try:
        server = build_server(model_dir, args.host, port)
    except Exception as exc:
        # The reason goes to stderr in one line: the platform (and the local runtime) shows it as
        # the endpoint's FailureReason.
        log.error("cannot start the model server: %s", " ".join(str(exc).split()))
        return 1

    def stop(signum, frame):  # SIGTERM from the platform: finish in-flight requests, then exit
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    log.info("serving %s on http://%s:%d", model_dir, args.host, server.server_port)
    print(f"READY {server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
