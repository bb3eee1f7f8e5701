"""The model server: the SageMaker hosting contract for the model artifact this project trains.

    python -m jobs.serve [--model-dir /opt/ml/model] [--host 0.0.0.0] [--port 8080]

* `GET /ping` answers 200 once the model is loaded (SageMaker's health check).
* `POST /invocations` takes RAW features (the server applies the persisted scaling) and answers
  `{"predictions": [...]}`:
  - `application/json`: one record `{"SQUARE_FEET": 3000, ...}`, a list of records, or
    `{"instances": [...]}`; a record may also be a list of values in the model's feature order.
  - `text/csv`: rows with a header line (columns by name, any order) or without one (values in
    the model's feature order).
  - `application/x-npy` (what the SageMaker SDK's `NumpySerializer` sends): a NumPy .npy array of
    integers or floats, 2-D (rows × features in the model's feature order) or 1-D (one record).
    No other dtype (bool, complex, strings, objects: nothing is ever unpickled), no `.npz`.
  Fields carry the CSV's own column names (`{"Square Feet": 3100}`), as the model was trained. A
  missing value — JSON `null`, an empty CSV field, an NA spelling such as `NaN`, a NaN in an array —
  is taken (the model learned a default direction for it). The target column is ignored when present (rows
  copied from a dataset carry it); an unknown or absent field, a string or an infinite value is a
  400 with a JSON body naming the field and row. `FeatureSchema.matrix_from_body` is the one place
  that picks the parser by content type: the drift monitor reads captured requests through it too.
* Explanations: with the SageMaker CustomAttributes value `explain=true` (header
  `X-Amzn-SageMaker-Custom-Attributes`), requests of every content type are answered in JSON with
  `explanations` next to `predictions`: per row the bias and each feature's contribution under the
  user's column names (`jobs.explain`).

Port: `--port`, else `SAGEMAKER_BIND_TO_PORT`, else 8080. Host: `--host`, default 0.0.0.0 inside
the container (the local runtime passes 127.0.0.1). Model: `--model-dir`, else `<SM_CONTAINER_ROOT>/model`.
The server is a threaded stdlib HTTP/1.1 server: per-request work is parsing, validation and one
in-memory predict call, so a single record is answered in well under a millisecond of model time.

Parsing has two paths. The fast one turns a whole body into a float matrix at once (JSON decoded and
type-checked by msgspec into fixed-schema records, CSV read by pyarrow into float64 columns) and
accepts only input the general path would accept with the same values. Anything it does not
accept — an unknown field, a string, a short row, a missing or non-finite value, a quoted header — goes to the
general path, row by row on the stdlib parsers, which either accepts it too or raises the precise
400 naming the row and field. Without msgspec installed, JSON always takes the general path.
A .npy body has one path: its header is checked, then its data is a view of the body, cast to float64.
"""
from __future__ import annotations

import argparse
import codecs
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
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from jobs.explain import CUSTOM_ATTRIBUTES_HEADER, explain_scaled, wants_explanation
from jobs.scaling import standardize
from mlops_shared.csv_rules import NA_SPELLINGS

try:  # msgspec decodes and type-checks JSON in C; without it JSON takes the general path
    import msgspec
    from msgspec.structs import astuple
except ImportError:  # pragma: no cover - exercised only where msgspec is not installed
    msgspec = None

log = logging.getLogger("jobs.serve")
# The CSV fast path's decoder: a JSON array of numbers (`FeatureSchema._csv_numbers`).
_FLAT_NUMBERS = msgspec.json.Decoder(list[float]) if msgspec is not None else None

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's InvokeEndpoint payload limit
JSON_TYPES = ("application/json",)
# What a CSV body of plain numbers consists of (FeatureSchema._csv_numbers): anything else is left to pyarrow.
_CSV_NUMBER_BYTES = b"0123456789+-.eE, \t\r\n"
CSV_TYPES = ("text/csv", "application/csv")
NPY_TYPES = ("application/x-npy",)
SUPPORTED_TYPES = "application/json, text/csv or application/x-npy"
# What every .npy file begins with (NumPy's format: the magic string, then the format version).
_NPY_MAGIC = b"\x93NUMPY"


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
        self._csv_types = {name: pa.float64() for name in self.feature_order}
        self._json_records = _JsonRecords(self.feature_order, self.target) if msgspec is not None else None

    # -- whole-body parsing: a float matrix in feature order ---------------------------------
    def matrix_from_body(self, content_type: str | None, body: bytes) -> np.ndarray:
        """The request's float matrix, parsed by its content type (parameters such as `; charset=`
        ignored). The model server and the drift monitor both read requests here, so a captured
        request reads exactly as the endpoint read it."""
        if not body or body.isspace():
            raise RequestError(400, "empty request body")
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type in JSON_TYPES:
            return self.matrix_from_json(body)
        if media_type in CSV_TYPES:
            return self.matrix_from_csv(body)
        if media_type in NPY_TYPES:
            return self.matrix_from_npy(body)
        raise RequestError(415, f"unsupported content type {content_type!r}; use {SUPPORTED_TYPES}")

    def matrix_from_json(self, body: bytes) -> np.ndarray:
        matrix = self._json_fast(body)
        return matrix if matrix is not None else np.asarray(self.rows_from_json(body), dtype=float)

    def matrix_from_csv(self, body: bytes) -> np.ndarray:
        matrix = self._csv_fast(body)
        return matrix if matrix is not None else np.asarray(self.rows_from_csv(body), dtype=float)

    def matrix_from_npy(self, body: bytes) -> np.ndarray:
        """A NumPy .npy body: a 2-D array (rows × features in feature order) or a 1-D array (one
        record) of integers or floats, as float64; NaN is a missing value, an infinity a 400.

        This is `np.load(io.BytesIO(body), allow_pickle=False)` with the checks first: the header is
        read with numpy's own reader (which bounds its size), then the dtype, the shape and the data
        length are checked before any data is touched — np.load would allocate whatever shape the
        header declares before finding that the body is shorter. The data is then a view of the
        body, cast (copied) to float64."""
        if not body.startswith(_NPY_MAGIC):
            raise RequestError(400, "application/x-npy body is not a .npy file: it does not begin with NumPy's "
                                    "magic string \\x93NUMPY (an .npz archive is not taken either)")
        stream = io.BytesIO(body)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:  # 3.0 only differs by UTF-8 field names, i.e. structured dtypes, refused anyway
                raise RequestError(400, f"application/x-npy body has .npy format version {version[0]}.{version[1]}; "
                                        "versions 1.0 and 2.0 are read")
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy's parser of an untrusted header text (ast, tokenize): any failure is a malformed header
            raise RequestError(400, f"application/x-npy body is not a valid .npy file: {exc}") from None
        if dtype.kind not in "iuf":
            raise RequestError(400, f"the .npy array must hold integers or floats, got dtype {dtype}",
                               dtype=str(dtype))
        width = len(self.feature_order)
        if len(shape) not in (1, 2):
            raise RequestError(400, f"the .npy array has {len(shape)} dimensions (shape {list(shape)}); send a 2-D "
                                    "array (rows x features) or a 1-D array (one record)", shape=list(shape))
        if any(size < 0 for size in shape):
            raise RequestError(400, f"application/x-npy body is not a valid .npy file: shape {list(shape)}")
        if shape[0] == 0:
            raise RequestError(400, "no records in the request")
        if shape[-1] != width:
            what = f"(one record) has {shape[0]} values" if len(shape) == 1 else f"has {shape[1]} columns (shape {list(shape)})"
            raise RequestError(
                400,
                f"the .npy array {what}; expected {width} in this order: " + ", ".join(self.feature_order),
                shape=list(shape), expected=self.feature_order,
            )
        count = math.prod(shape)
        offset = stream.tell()
        if count * dtype.itemsize != len(body) - offset:
            raise RequestError(400, f"application/x-npy body is not a valid .npy file: its header declares shape "
                                    f"{list(shape)} of {dtype} ({count * dtype.itemsize} bytes) but "
                                    f"{len(body) - offset} bytes follow it")
        values = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        matrix = values.reshape(shape, order="F" if fortran_order else "C").reshape(-1, width)
        with np.errstate(over="ignore"):  # a long double beyond float64 becomes inf, refused next
            matrix = matrix.astype(np.float64, order="C")  # a copy: the body's bytes are read-only
        infinite = np.isinf(matrix)
        if infinite.any():
            row, column = (int(i) for i in np.argwhere(infinite)[0])
            name = self.feature_order[column]
            raise RequestError(400, f"field {name} in record {row} must be finite, got {float(matrix[row, column])!r}",
                               row=row, field=name)
        return matrix

    def _json_fast(self, body: bytes) -> np.ndarray | None:
        """The matrix if msgspec's typed decode accepts the body, else None (the general path decides)."""
        return self._json_records.matrix(body) if self._json_records is not None else None

    def _csv_fast(self, body: bytes) -> np.ndarray | None:
        """The matrix if pyarrow reads every row as finite floats under the same header rule as
        `rows_from_csv`, else None (the general path decides)."""
        if body.startswith(codecs.BOM_UTF8):
            body = body[len(codecs.BOM_UTF8):]
        if not body.isascii():
            try:  # pyarrow checks UTF-8 only in the columns it converts; the general path, everywhere
                body.decode("utf-8")
            except UnicodeDecodeError:
                return None
        end = body.find(b"\n")
        first = body if end < 0 else body[:end]
        # A quoted or blank first line is left to the csv module's rules (quotes, skipped lines).
        if b'"' in first or not first.strip():
            return None
        cells = [cell.strip() for cell in first.decode("utf-8").split(",")]
        if any(cell in self._index or cell == self.target for cell in cells):
            known = all(cell in self._index or cell == self.target for cell in cells)
            if not known or len(set(cells)) != len(cells) or not all(name in cells for name in self.feature_order):
                return None
            names, skip = cells, 1
        elif len(cells) == len(self.feature_order):
            names, skip = self.feature_order, 0
        else:
            return None
        if msgspec is not None:
            matrix = self._csv_numbers(body if skip == 0 else (b"" if end < 0 else body[end + 1:]), names)
            if matrix is not None:
                return matrix
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(body),
                # Request bodies are small (6 MB at most): reader threads would only compete with the
                # model's own threads.
                read_options=pa_csv.ReadOptions(column_names=names, skip_rows=skip, use_threads=False),
                convert_options=pa_csv.ConvertOptions(column_types=self._csv_types,
                                                      include_columns=self.feature_order),
            )
        except pa.ArrowException:  # a short or long row, a non-number, ...
            return None
        if table.num_rows == 0 or any(column.null_count for column in table.columns):
            return None  # no rows, or an empty / NA / nan cell
        matrix = np.column_stack([table.column(name).to_numpy() for name in self.feature_order])
        return matrix if np.isfinite(matrix).all() else None

    def _csv_numbers(self, rows: bytes, names: list[str]) -> np.ndarray | None:
        """Rows of plain JSON-grammar numbers (the common case: what a DataFrame writes) read by msgspec
        as one flat JSON array, the line breaks turned into commas, about three times as fast as
        pyarrow on request-sized bodies; None for anything else (pyarrow and the general path decide).
        Only digits, signs, points, exponents, commas and whitespace may occur, so no CSV text can turn
        into other JSON structure. A successful decode means numbers and commas alternate, no cell is
        empty; every line holding exactly one comma fewer than there are columns then means exactly
        one number per column in every row."""
        rows = rows.rstrip(b"\r\n")
        if not rows or rows.translate(None, _CSV_NUMBER_BYTES):
            return None
        width = len(names)
        text = np.frombuffer(rows, dtype=np.uint8)
        commas = np.flatnonzero(text == ord(","))
        commas_before_line_ends = np.searchsorted(commas, np.flatnonzero(text == ord("\n")))
        commas_per_line = np.diff(commas_before_line_ends, prepend=0, append=len(commas))
        if (commas_per_line != width - 1).any():
            return None  # a short or long row (or a blank line): the general path names it
        try:
            values = _FLAT_NUMBERS.decode(b"[" + rows.replace(b"\n", b",") + b"]")
        except msgspec.MsgspecError:  # an empty cell or line, `nan`, `+1`, `.5`, ...
            return None
        matrix = np.fromiter(values, dtype=float, count=len(values)).reshape(-1, width)
        if names is not self.feature_order:
            matrix = matrix[:, [names.index(name) for name in self.feature_order]]
        return matrix if np.isfinite(matrix).all() else None

    # -- general parsing: row by row, with the precise error ----------------------------------
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
                raise RequestError(400, f"record {number} must be an object or a list of values, got {type(record).__name__}",
                                   row=number)
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


class _JsonRecords:
    """The fast JSON path: msgspec decodes and type-checks a body against the model's record schema.

    The types admit exactly: a record object (every feature a JSON number, the target a JSON number or
    absent, no other key), a list of records and/or lists of one number per feature, or
    `{"instances": <such a list>}` (its other keys ignored, as in `rows_from_json`). Numbers out of
    float range fail the decode, and duplicated keys keep the last value, as with `json.loads`.
    Features are struct fields `f0`, `f1`, ... renamed to the feature names, so any name works."""

    def __init__(self, feature_order: list[str], target: str | None):
        self.width = len(feature_order)
        fields: list[tuple] = [(f"f{i}", float, msgspec.field(name=name)) for i, name in enumerate(feature_order)]
        self.has_target = target is not None and target not in feature_order
        if self.has_target:
            # A number (NaN when absent), so that a record reads as one tuple of floats. A target of
            # another type fails the decode, and the general path, which ignores the target, takes it.
            fields.append(("target", float, msgspec.field(name=target, default=math.nan)))
        record = msgspec.defstruct("Record", fields, forbid_unknown_fields=True, gc=False)
        batch = list[Union[record, tuple[(float,) * self.width]]]
        instances = msgspec.defstruct("Instances", [("instances", batch)])
        # With a field called "instances", `rows_from_json` reads any top-level object as the wrapper.
        object_is_wrapper = "instances" in feature_order or target == "instances"
        self._decode = msgspec.json.Decoder(batch if object_is_wrapper else Union[record, batch]).decode
        self._decode_instances = msgspec.json.Decoder(instances).decode

    def matrix(self, body: bytes) -> np.ndarray | None:
        try:
            payload = self._decode(body)
        except msgspec.MsgspecError:
            try:
                payload = self._decode_instances(body).instances
            except msgspec.MsgspecError:
                return None
        records = payload if isinstance(payload, list) else [payload]
        if not records:
            return None
        count, width = len(records), self.width
        try:  # all records are objects: their fields (features, then the target) in one pass
            fields = width + self.has_target
            values = np.fromiter(chain.from_iterable(map(astuple, records)), dtype=float, count=count * fields)
            matrix = values.reshape(count, fields)[:, :width]
        except TypeError:  # lists of values, or a mix of both forms
            rows = [row if isinstance(row, tuple) else astuple(row)[:width] for row in records]
            matrix = np.fromiter(chain.from_iterable(rows), dtype=float, count=count * width).reshape(count, width)
        return matrix if np.isfinite(matrix).all() else None


def encode_json(payload: dict) -> bytes:
    if msgspec is not None:
        return msgspec.json.encode(payload)
    return json.dumps(payload).encode()


def _number(value: Any, name: str, row: int) -> float:
    """A cell as the model takes it: a finite number, or NaN for a missing value (JSON null, an
    empty CSV field or one of the NA spellings the training data may have used)."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        raise RequestError(400, f"field {name} in record {row} must be a number, got {json.dumps(value)}", row=row, field=name)
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isnan(number):
            return number
    else:
        text = str(value).strip()
        if text in NA_SPELLINGS:
            return math.nan
        try:
            number = float(text)
        except ValueError:
            raise RequestError(400, f"field {name} in record {row} must be a number or missing, got {text!r}", row=row, field=name) from None
    if not math.isfinite(number):
        raise RequestError(400, f"field {name} in record {row} must be finite, got {value!r}", row=row, field=name)
    return number


class Predictor:
    """The loaded model plus its request schema; `predict(content_type, body) -> list[float]`."""

    def __init__(self, model_dir: str | Path):
        from jobs.model_io import load_model_dir

        self.model_dir = Path(model_dir)
        self.model = load_model_dir(self.model_dir)
        self.schema = FeatureSchema(list(self.model.feature_order), self.model.target)
        self._mean = self.model.preprocessor.mean
        self._scale = self.model.preprocessor.scale

    def predict(self, content_type: str, body: bytes) -> list[float]:
        return self.model.predict_scaled(self._scaled(content_type, body)).tolist()

    def explain(self, content_type: str, body: bytes) -> dict:
        """`{"predictions": [...], "explanations": [...]}` (`jobs.explain`): what `explain=true` asks for."""
        scaled = self._scaled(content_type, body)
        return {"predictions": self.model.predict_scaled(scaled).tolist(),
                "explanations": explain_scaled(self.model.booster, scaled, self.schema.feature_order)}

    def _scaled(self, content_type: str, body: bytes) -> np.ndarray:
        matrix = self.schema.matrix_from_body(content_type, body)
        # The matrix is validated floats in feature order already: scale with numpy and predict, no
        # DataFrame round trip (it would cost more than the model itself for one record).
        return standardize(matrix, self._mean, self._scale)


def _off_main_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Runs `function` in a thread that ends when it returns, and gives back its result.

    XGBoost's OpenMP runtime (libgomp) keeps a worker pool for every thread that runs parallel work.
    Once it manages more threads than there are CPUs it stops spin-waiting between parallel regions
    and parks its workers, so every prediction pays for waking them (on 2 cores the model took 1.5x
    as long). Loading the model on the main thread would leave such a pool behind while the request
    threads predict; the pool of a thread that has ended is freed."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=call, name="model-load")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def make_handler(predictor: Predictor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the endpoint proxy reuses connections
        # A body larger than the write buffer still goes out in a second write; with Nagle on,
        # keep-alive clients would wait ~40 ms for the delayed ACK on such requests.
        disable_nagle_algorithm = True
        # Buffered writes: status line, headers and body leave in one send (the stdlib server flushes
        # after each request) instead of one for the headers and one for the body.
        wbufsize = 64 * 1024
        server_version = "mlops-serve"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s " + format, self.address_string(), *args)

        def _reply(self, status: int, payload: dict) -> None:
            data = encode_json(payload)
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
            content_type = self.headers.get("Content-Type", "")
            try:
                if wants_explanation(self.headers.get(CUSTOM_ATTRIBUTES_HEADER)):
                    answer = predictor.explain(content_type, body)
                else:
                    answer = {"predictions": predictor.predict(content_type, body)}
            except RequestError as exc:
                self._reply(exc.status, exc.body())
            except Exception as exc:  # a model failure is the server's fault: 500, logged with its trace
                log.exception("prediction failed")
                self._reply(500, {"error": f"prediction failed: {exc}"})
            else:
                self._reply(200, answer)

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
    # Read by libgomp when XGBoost loads it, so before the model is loaded. By default an OpenMP
    # worker spins for ~300k rounds after each parallel region before it sleeps: good for a
    # dedicated host, but on a busy one the spinning workers take the CPU from the request that
    # needs it (single-record p99 of 50 ms and more measured on a loaded 2-core machine, ~1 ms with
    # this). 10k rounds still cover the gaps between the regions of one prediction.
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    try:
        server = _off_main_thread(build_server, model_dir, args.host, port)
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
