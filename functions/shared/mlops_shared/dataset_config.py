"""`dataset.json` next to an uploaded CSV: read safely, checked strictly, pinned to the version read.

Anyone who may upload to `incoming/` may also put a `dataset.json` there, so it is read as untrusted
input: at most `MAX_CONFIG_BYTES` are fetched (a ranged GET of the exact version HEAD saw, so a huge
or concurrently replaced file is never loaded), nesting is bounded before parsing (`json.loads`
recurses and raises RecursionError on deeply nested input), and every way parsing can fail becomes a
`DatasetConfigError` with a message for people, never an exception that dead-letters the event.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from botocore.exceptions import ClientError

from .aws import is_not_found

CONFIG_NAME = "dataset.json"
MAX_CONFIG_BYTES = 64 * 1024
MAX_NESTING_DEPTH = 32  # the format itself is flat; this only bounds what a parser is made to do
MAX_TARGET_LENGTH = 1024  # a column name; longer is not a header anyone wrote
KNOWN_KEYS = ("target",)
EXAMPLE = '{"target": "PRICE"}'


class DatasetConfigError(ValueError):
    """dataset.json next to the file exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class DatasetConfig:
    key: str
    version_id: str | None  # the exact version read (None in an unversioned bucket)
    etag: str | None  # without quotes
    target: str | None


def config_key(csv_key: str) -> str:
    folder = csv_key.rsplit("/", 1)[0] + "/" if "/" in csv_key else ""
    return folder + CONFIG_NAME


def read_dataset_config(bucket: str, csv_key: str, s3: Any) -> DatasetConfig | None:
    """The dataset.json next to `csv_key`, or None when there is none."""
    key = config_key(csv_key)
    where = f"s3://{bucket}/{key}"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    size = head.get("ContentLength", 0)
    version_id = head.get("VersionId") if head.get("VersionId") not in (None, "", "null") else None
    etag = (head.get("ETag") or "").strip('"') or None
    if size > MAX_CONFIG_BYTES:
        raise DatasetConfigError(f"{where} is {size} bytes; a dataset.json holds at most {MAX_CONFIG_BYTES} bytes")
    if size == 0:
        raise DatasetConfigError(f"{where} is empty")
    # The version HEAD saw, and no more bytes than allowed, even if the object changed in between.
    arguments: dict[str, str] = {"Bucket": bucket, "Key": key, "Range": f"bytes=0-{MAX_CONFIG_BYTES - 1}"}
    if version_id:
        arguments["VersionId"] = version_id
    elif etag:
        arguments["IfMatch"] = f'"{etag}"'
    body = s3.get_object(**arguments)["Body"].read(MAX_CONFIG_BYTES)
    document = parse_config(body, where)
    return DatasetConfig(key=key, version_id=version_id, etag=etag, target=config_target(document, where))


def parse_config(body: bytes, where: str) -> dict[str, Any]:
    """`body` as a JSON object; DatasetConfigError (never anything else) when it is not one."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetConfigError(f"{where} is not UTF-8 text (byte {exc.start}): it must be a JSON object") from exc
    depth = nesting_depth(text)
    if depth > MAX_NESTING_DEPTH:
        raise DatasetConfigError(f"{where} nests {depth} levels deep; at most {MAX_NESTING_DEPTH} are read")
    try:
        document = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKey as exc:
        raise DatasetConfigError(f"{where} gives the key {exc.args[0]!r} more than once") from exc
    # JSONDecodeError is a ValueError, as are an integer too long to convert and a lone surrogate;
    # RecursionError cannot happen after the depth check but is caught should the limit ever move.
    except (ValueError, RecursionError) as exc:
        raise DatasetConfigError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise DatasetConfigError(f"{where} is a JSON {_json_type(document)}; it must be an object such as {EXAMPLE}")
    unknown = [key for key in document if key not in KNOWN_KEYS]
    if unknown:
        hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := get_close_matches(key, KNOWN_KEYS, 1)) else repr(key)
                 for key in unknown[:5]]
        raise DatasetConfigError(
            f"{where} has unknown key(s) {', '.join(hints)}; the keys read are {', '.join(map(repr, KNOWN_KEYS))}"
        )
    return document


def config_target(document: dict[str, Any], where: str) -> str | None:
    target = document.get("target")
    if target is None:
        return None
    if not isinstance(target, str) or not target.strip():
        raise DatasetConfigError(f"{where} has \"target\": {_preview(target)}; it must be a column name (a string)")
    if len(target) > MAX_TARGET_LENGTH:
        raise DatasetConfigError(f"{where} has a \"target\" of {len(target)} characters; a column name holds at most "
                                 f"{MAX_TARGET_LENGTH}")
    return target.strip()


def nesting_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` outside strings (no parsing, so no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class _DuplicateKey(Exception):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(key)
        document[key] = value
    return document


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _preview(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " ..."
