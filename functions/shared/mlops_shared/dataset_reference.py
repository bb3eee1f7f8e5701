"""Where the exact identity of a dataset is written, and how it is shown where SageMaker limits text.

Intake writes one `DatasetReference` document per dataset identity (bucket, key, version) under
`<ArtifactsS3Uri>/datasets/`; the pipeline carries only that document's URI (and a readable label)
through fields that cannot hold an arbitrary S3 key. Standard library only (Lambda layer and jobs
image).
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

from .artifacts import DatasetReference
from .aws import parse_s3_uri

REFERENCE_FOLDER = "datasets"
# CreateModelPackage CustomerMetadataValue: [\p{L}\p{Z}\p{N}_.:/=+\-@]*, 1..256 characters.
METADATA_VALUE_MAX = 256
_LABEL_ELISION = "..."


def identity_digest(bucket: str, key: str, version: str) -> str:
    """sha256 of the identity: one document per dataset version, the same on every retry."""
    identity = json.dumps({"bucket": bucket, "key": key, "version": version}, sort_keys=True)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def reference_uri(artifacts_s3_uri: str, reference: DatasetReference) -> str:
    digest = identity_digest(reference.bucket, reference.key, reference.version)
    return f"{artifacts_s3_uri.rstrip('/')}/{REFERENCE_FOLDER}/{digest}.json"


def write_reference(s3: Any, artifacts_s3_uri: str, reference: DatasetReference) -> str:
    """Writes the document (idempotent: same identity, same key and body) and returns its URI."""
    uri = reference_uri(artifacts_s3_uri, reference)
    bucket, key = parse_s3_uri(uri)
    body = json.dumps(reference.to_json(), sort_keys=True, indent=2, ensure_ascii=False).encode("utf-8")
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return uri


def read_reference(s3: Any, uri: str) -> DatasetReference:
    bucket, key = parse_s3_uri(uri)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return DatasetReference.from_json(json.loads(body.decode("utf-8")))


def registry_label(text: str) -> str:
    """`text` as a model package metadata value: each character the registry refuses becomes `_`
    and the middle of an over-long value is elided. Equal to `text` whenever `text` already fits;
    readable always. The exact identity is the `dataset_reference` document, never the label."""
    label = "".join(char if _allowed_in_metadata(char) else "_" for char in text) or "_"
    if len(label) > METADATA_VALUE_MAX:
        keep = METADATA_VALUE_MAX - len(_LABEL_ELISION)
        head = keep // 3
        label = label[:head] + _LABEL_ELISION + label[-(keep - head):]
    return label


def _allowed_in_metadata(char: str) -> bool:
    """\\p{L} letters, \\p{Z} separators, \\p{N} numbers, and `_.:/=+-@`."""
    return char in "_.:/=+-@" or unicodedata.category(char)[0] in ("L", "Z", "N")
