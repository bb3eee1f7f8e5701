"""Two small things every AWS caller of this project needs the same way: S3 URIs and "not found".

Shipped in the Lambda layer and in the jobs image, so handlers, jobs and the local runtime all
parse URIs and classify missing resources with this one definition.
"""
from __future__ import annotations

import re

# S3 answers a missing key/version/bucket with these codes (HEAD requests have no body: "404").
S3_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion", "NoSuchBucket"})
# SageMaker and the other JSON services: a modelled not-found error, or a ValidationException whose
# message says the resource does not exist (DescribeEndpoint: "Could not find endpoint ...").
RESOURCE_NOT_FOUND_CODES = frozenset({"ResourceNotFound", "ResourceNotFoundException"})
_MISSING_MESSAGE = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`); the key may be empty (`s3://bucket`).

    The key is taken verbatim: S3 keys may hold `#`, `?`, `%`, spaces or `+`, which URL parsing
    would cut off or decode, so that another object would be read."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"not an S3 URI (no bucket): {uri!r}")
    return bucket, key


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}"


def error_code(error: Exception) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(error, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def is_not_found(error: Exception) -> bool:
    """True when a botocore ClientError says the object or resource asked for does not exist."""
    code = error_code(error)
    if code in S3_NOT_FOUND_CODES or code in RESOURCE_NOT_FOUND_CODES:
        return True
    message = str(((getattr(error, "response", None) or {}).get("Error") or {}).get("Message") or "")
    return code == "ValidationException" and bool(_MISSING_MESSAGE.search(message))
