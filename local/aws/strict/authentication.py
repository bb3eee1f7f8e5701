"""Who sent a request, checked as AWS checks it: the access key must exist, the session token must
belong to it, and the Signature Version 4 signature must be the one its secret key makes.

The signature is recomputed with botocore's own signer over the request as it came on the wire
(waitress keeps the raw request URI in `REQUEST_URI`), so a client with the wrong secret, a tampered
request or another principal's key is refused, whatever the route serving it. Presigned URLs
(query-string SigV4, and the SigV2 query form S3 still issues) carry the key in the query string:
their key and expiry are checked; the signature of SigV2 links is not recomputed (docs/strict-face.md).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.aws.strict.iam_policy import Principal
from local.aws.strict.principals import DEFAULT_ACCOUNT, principal_for_access_key

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")
_SIGNED_HEADERS = re.compile(r"SignedHeaders=([^,\s]+)")
_SIGNATURE = re.compile(r"Signature=([0-9a-f]+)")
# Services whose signer does not normalise (double-encode) the path: S3 signs the key as sent.
_UNNORMALISED_PATHS = {"s3"}


class AuthenticationFailed(Exception):
    """The request does not prove who sent it; `code` is the kind (see `refusal_code`)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "unknown-key" | "bad-signature" | "missing" | "expired"
        self.message = message


@dataclass(frozen=True)
class Caller:
    principal: Principal
    access_key_id: str
    signing_name: str  # the service name in the credential scope
    region: str


def _secrets(access_key_id: str, account: str) -> tuple[str, str | None] | None:
    """(secret key, session token or None) of a key moto knows."""
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    iam = iam_backends[account]["aws"]
    user = iam.get_user_from_access_key_id(access_key_id)
    if user is not None:
        key = next(k for k in user.access_keys if k.access_key_id == access_key_id)
        return key.secret_access_key, None
    session = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key_id)
    if session is not None:
        return session.secret_access_key, session.session_token
    return None


def _header(environ: dict, name: str) -> str | None:
    key = name.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return environ.get(key)
    return environ.get("HTTP_" + key)


def _raw_url(environ: dict) -> str:
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    uri = environ.get("REQUEST_URI")
    if not uri:  # a WSGI server without the raw URI: rebuild it the way botocore encodes paths
        from urllib.parse import quote

        uri = quote(environ.get("PATH_INFO", "/"), safe="/~")
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
    return f"http://{host}{uri}"


def authenticate(environ: dict, body: bytes, *, account: str = DEFAULT_ACCOUNT,
                 now: dt.datetime | None = None) -> Caller:
    """The caller of a signed request; AuthenticationFailed when it is not one AWS would accept."""
    authorization = environ.get("HTTP_AUTHORIZATION") or ""
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    if authorization.startswith("AWS4-HMAC-SHA256"):
        return _header_signature(environ, body, authorization, account)
    if "X-Amz-Credential" in query:
        return _presigned_v4(environ, query, account, now)
    if "AWSAccessKeyId" in query:  # S3's SigV2 presigned URL
        return _presigned_v2(query, account, now)
    raise AuthenticationFailed("missing", "Request is missing Authentication Token")


def _principal(access_key_id: str, account: str, token: str | None) -> tuple[Principal, str]:
    secrets = _secrets(access_key_id, account)
    principal = principal_for_access_key(access_key_id, account)
    if secrets is None or principal is None:
        raise AuthenticationFailed("unknown-key", "The security token included in the request is invalid.")
    secret, session_token = secrets
    if session_token is not None and token != session_token:
        raise AuthenticationFailed("unknown-key", "The security token included in the request is invalid.")
    return principal, secret


def _header_signature(environ: dict, body: bytes, authorization: str, account: str) -> Caller:
    credential, signed, signature = (_CREDENTIAL.search(authorization), _SIGNED_HEADERS.search(authorization),
                                     _SIGNATURE.search(authorization))
    if not (credential and signed and signature):
        raise AuthenticationFailed("missing", "Authorization header requires Credential, SignedHeaders and Signature")
    access_key_id, _, region, signing_name = credential.groups()
    principal, secret = _principal(access_key_id, account, _header(environ, "X-Amz-Security-Token"))
    headers = {}
    for name in signed.group(1).split(";"):
        value = _header(environ, name)
        if value is None:
            raise AuthenticationFailed("bad-signature", f"the signed header {name} is missing")
        headers[name] = value
    timestamp = _header(environ, "X-Amz-Date")
    if not timestamp:
        raise AuthenticationFailed("bad-signature", "the request has no X-Amz-Date")
    request = AWSRequest(method=environ.get("REQUEST_METHOD", "GET"), url=_raw_url(environ), data=body,
                         headers=headers)
    request.context["timestamp"] = timestamp
    signer_class = S3SigV4Auth if signing_name in _UNNORMALISED_PATHS else SigV4Auth
    signer = signer_class(Credentials(access_key_id, secret), signing_name, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != signature.group(1):
        raise AuthenticationFailed(
            "bad-signature", "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.")
    return Caller(principal, access_key_id, signing_name, region)


def _presigned_v4(environ: dict, query: dict, account: str, now: dt.datetime | None) -> Caller:
    match = re.match(r"([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request", query.get("X-Amz-Credential", ""))
    if not match:
        raise AuthenticationFailed("missing", "X-Amz-Credential is malformed")
    access_key_id, _, region, signing_name = match.groups()
    principal, _secret = _principal(access_key_id, account, query.get("X-Amz-Security-Token"))
    try:
        signed_at = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        expires = signed_at + dt.timedelta(seconds=int(query.get("X-Amz-Expires", "0")))
    except (KeyError, ValueError):
        raise AuthenticationFailed("missing", "X-Amz-Date or X-Amz-Expires is malformed") from None
    if (now or dt.datetime.now(dt.timezone.utc)) > expires:
        raise AuthenticationFailed("expired", "Request has expired")
    return Caller(principal, access_key_id, signing_name, region)


def _presigned_v2(query: dict, account: str, now: dt.datetime | None) -> Caller:
    access_key_id = query["AWSAccessKeyId"]
    principal, _secret = _principal(access_key_id, account, query.get("x-amz-security-token"))
    try:
        expires = dt.datetime.fromtimestamp(int(query.get("Expires", "0")), dt.timezone.utc)
    except ValueError:
        raise AuthenticationFailed("missing", "Expires is malformed") from None
    if (now or dt.datetime.now(dt.timezone.utc)) > expires:
        raise AuthenticationFailed("expired", "Request has expired")
    return Caller(principal, access_key_id, "s3", "us-east-1")


# What each protocol answers for each kind of failure (code, HTTP status).
_REFUSAL_CODES = {
    "s3": {"unknown-key": ("InvalidAccessKeyId", 403), "bad-signature": ("SignatureDoesNotMatch", 403),
           "missing": ("AccessDenied", 403), "expired": ("AccessDenied", 403)},
    "query": {"unknown-key": ("InvalidClientTokenId", 403), "bad-signature": ("SignatureDoesNotMatch", 403),
              "missing": ("MissingAuthenticationToken", 403), "expired": ("ExpiredToken", 403)},
    "json": {"unknown-key": ("UnrecognizedClientException", 400), "bad-signature": ("InvalidSignatureException", 400),
             "missing": ("MissingAuthenticationTokenException", 400), "expired": ("ExpiredTokenException", 400)},
}


def refusal_code(protocol: str, kind: str) -> tuple[str, int]:
    """(error code, HTTP status) of an authentication failure for a protocol family."""
    family = "s3" if protocol == "rest-xml" else "query" if protocol == "query" else "json"
    return _REFUSAL_CODES[family][kind]
