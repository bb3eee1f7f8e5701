"""Amazon S3 operations: object reads (a version id asks for the `...Version` action), writes,
copies (read the source, write the target), multipart uploads, listings (`s3:prefix`, ...), and
the bucket configuration calls of the local provisioner.

S3 ARNs carry no account: the bucket owner is the local account, so requests name it explicitly
for the cross-account rule. Not checked: the tag permissions a copy needs when the source object
has tags (`s3:GetObjectTagging` / `s3:PutObjectTagging`), which depend on the object, not the request.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote

from local.aws.strict import call_sites as at
from local.aws.strict.iam_policy import AuthorizationRequest
from local.aws.strict.operation_table import Params, Scope, operation

# download_file and the managed copy HEAD the object first; PIPELINES reads JsonGet property files.
GETTERS = (at.INTAKE, at.NOTIFY_APPROVAL, at.APPROVAL_API, at.APPROVAL_LINKS, at.SMOKE_TEST, at.INGEST,
           at.PREPROCESS, at.EVALUATE, at.DRIFT, at.JOB_DATA, at.PIPELINES, at.HOSTING, at.CLI, at.CONSOLE, at.DRIFT_ALARM,
           at.SCORING, at.SCORE)
HEADERS = (at.INTAKE, at.QUARANTINE, at.PREPROCESS, at.EVALUATE, at.JOB_DATA, at.HOSTING, at.CLI, at.DRIFT_ALARM_RETRAIN,
           at.SCORING_QUARANTINE, at.SCORE)
WRITERS = (at.QUARANTINE, at.OFFLINE_STORE_DIRECT, at.DRIFT, at.JOB_DATA, at.FEATURE_STORE_OFFLINE, at.DATA_CAPTURE, at.CLI, at.DRIFT_ALARM_RETRAIN,
           at.SCORING_QUARANTINE, at.SCORE)
MULTIPART = (at.QUARANTINE, at.JOB_DATA, at.CLI, at.SCORING_QUARANTINE, at.SCORE)  # s3.copy and upload_file switch to multipart when large


def _object(scope: Scope, action: str, bucket: str, key: str, context: dict[str, Any] | None = None) -> AuthorizationRequest:
    request = scope.resource(action, "object", context, BucketName=bucket, ObjectName=key)
    return _owned(scope, request)


def _bucket(scope: Scope, action: str, bucket: str, context: dict[str, Any] | None = None) -> AuthorizationRequest:
    return _owned(scope, scope.resource(action, "bucket", context, BucketName=bucket))


def _owned(scope: Scope, request: AuthorizationRequest) -> AuthorizationRequest:
    return AuthorizationRequest(request.action, request.resource, request.context, scope.account, request.shown_resource)


def _read(scope: Scope, bucket: str, key: str, version_id: str | None) -> AuthorizationRequest:
    if version_id:
        return _object(scope, "s3:GetObjectVersion", bucket, key, {"s3:versionid": version_id})
    return _object(scope, "s3:GetObject", bucket, key)


def copy_source(value: Any) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of a CopySource member: `bucket/key?versionId=v` or a dict."""
    if isinstance(value, dict):
        return value["Bucket"], value["Key"], value.get("VersionId")
    text = str(value).lstrip("/")
    path, _, query = text.partition("?")
    bucket, _, key = unquote(path).partition("/")
    version = parse_qs(query).get("versionId", [None])[0]
    return bucket, key, version


def _write(scope: Scope, p: Params) -> list[AuthorizationRequest]:
    requests = [_object(scope, "s3:PutObject", p["Bucket"], p["Key"])]
    if p.get("Tagging"):
        keys = sorted(parse_qs(str(p["Tagging"])))
        requests.append(_object(scope, "s3:PutObjectTagging", p["Bucket"], p["Key"],
                                {"s3:RequestObjectTagKeys": keys}))
    if p.get("ACL"):
        requests.append(_object(scope, "s3:PutObjectAcl", p["Bucket"], p["Key"], {"s3:x-amz-acl": p["ACL"]}))
    return requests


@operation("s3", "GetObject", ["s3:GetObject", "s3:GetObjectVersion"], GETTERS)
def get_object(p: Params, scope: Scope):
    return [_read(scope, p["Bucket"], p["Key"], p.get("VersionId"))]


@operation("s3", "HeadObject", ["s3:GetObject", "s3:GetObjectVersion"], HEADERS)
def head_object(p: Params, scope: Scope):
    return [_read(scope, p["Bucket"], p["Key"], p.get("VersionId"))]


@operation("s3", "PutObject", ["s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectAcl"], WRITERS)
def put_object(p: Params, scope: Scope):
    return _write(scope, p)


@operation("s3", "CopyObject", ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:PutObjectTagging",
                                "s3:PutObjectAcl"], (at.QUARANTINE, at.SCORING_QUARANTINE, at.SCORE))
def copy_object(p: Params, scope: Scope):
    bucket, key, version = copy_source(p["CopySource"])
    return [_read(scope, bucket, key, version), *_write(scope, p)]


@operation("s3", "CreateMultipartUpload", ["s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectAcl"], MULTIPART)
def create_multipart_upload(p: Params, scope: Scope):
    return _write(scope, p)


@operation("s3", "UploadPart", ["s3:PutObject"], MULTIPART)
def upload_part(p: Params, scope: Scope):
    return [_object(scope, "s3:PutObject", p["Bucket"], p["Key"])]


@operation("s3", "UploadPartCopy", ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
           (at.QUARANTINE, at.SCORING_QUARANTINE, at.SCORE))
def upload_part_copy(p: Params, scope: Scope):
    bucket, key, version = copy_source(p["CopySource"])
    return [_read(scope, bucket, key, version), _object(scope, "s3:PutObject", p["Bucket"], p["Key"])]


@operation("s3", "CompleteMultipartUpload", ["s3:PutObject"], MULTIPART)
def complete_multipart_upload(p: Params, scope: Scope):
    return [_object(scope, "s3:PutObject", p["Bucket"], p["Key"])]


@operation("s3", "AbortMultipartUpload", ["s3:AbortMultipartUpload"], MULTIPART)
def abort_multipart_upload(p: Params, scope: Scope):
    return [_object(scope, "s3:AbortMultipartUpload", p["Bucket"], p["Key"])]


def listing(p: Params, scope: Scope, action: str = "s3:ListBucket") -> list[AuthorizationRequest]:
    # s3:prefix is in the context of every listing; a listing without Prefix lists from "".
    context: dict[str, Any] = {"s3:prefix": p.get("Prefix", "")}
    if p.get("Delimiter") is not None:
        context["s3:delimiter"] = p["Delimiter"]
    if p.get("MaxKeys") is not None:
        context["s3:max-keys"] = int(p["MaxKeys"])
    return [_bucket(scope, action, p["Bucket"], context)]


@operation("s3", "ListObjectsV2", ["s3:ListBucket"], (at.NOTIFY_APPROVAL, at.APPROVAL_API, at.INGEST, at.PREPROCESS,
                                                     at.DRIFT, at.JOB_DATA, at.CONSOLE, at.DRIFT_ALARM))
def list_objects_v2(p: Params, scope: Scope):
    return listing(p, scope)


@operation("s3", "ListObjectVersions", ["s3:ListBucketVersions"], (at.DRIFT_ALARM_RETRAIN,))
def list_object_versions(p: Params, scope: Scope):
    return listing(p, scope, "s3:ListBucketVersions")


@operation("s3", "CreateBucket", ["s3:CreateBucket"], (at.PROVISION,))
def create_bucket(p: Params, scope: Scope):
    location = (p.get("CreateBucketConfiguration") or {}).get("LocationConstraint")
    return [_bucket(scope, "s3:CreateBucket", p["Bucket"], {"s3:locationconstraint": location} if location else None)]


@operation("s3", "PutBucketVersioning", ["s3:PutBucketVersioning"], (at.PROVISION,))
def put_bucket_versioning(p: Params, scope: Scope):
    return [_bucket(scope, "s3:PutBucketVersioning", p["Bucket"])]


@operation("s3", "PutBucketNotificationConfiguration", ["s3:PutBucketNotification"], (at.PROVISION,))
def put_bucket_notification_configuration(p: Params, scope: Scope):
    return [_bucket(scope, "s3:PutBucketNotification", p["Bucket"])]


@operation("s3", "PutPublicAccessBlock", ["s3:PutBucketPublicAccessBlock"], (at.PROVISION,))
def put_public_access_block(p: Params, scope: Scope):
    return [_bucket(scope, "s3:PutBucketPublicAccessBlock", p["Bucket"])]


@operation("s3", "PutBucketPolicy", ["s3:PutBucketPolicy"], (at.PROVISION,))
def put_bucket_policy(p: Params, scope: Scope):
    return [_bucket(scope, "s3:PutBucketPolicy", p["Bucket"])]


def missing_object_request(params: Params, scope: Scope) -> AuthorizationRequest:
    """What S3 checks before it says an object does not exist: without `s3:ListBucket` on the
    bucket a missing key answers 403 AccessDenied (naming s3:ListBucket), not 404 NoSuchKey."""
    return _bucket(scope, "s3:ListBucket", params["Bucket"])
