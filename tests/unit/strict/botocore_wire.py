"""Requests as they reach a server: serialised by botocore's own serializer, signed by its SigV4 signer,
and turned into the WSGI environ a server builds from them (the oracle of the decoder tests)."""
from __future__ import annotations

import io
from urllib.parse import unquote_to_bytes, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import create_request_object, prepare_request_dict
from botocore.credentials import Credentials
from botocore.serialize import create_serializer

from local.aws.strict.service_constraints import service_model

ENDPOINT = "http://127.0.0.1:4566"


def wire_request(service: str, operation: str, params: dict, protocol: str | None = None) -> tuple[dict, bytes]:
    """(WSGI environ, body) of the request a botocore client sends for `operation(**params)`."""
    model = service_model(service)
    serializer = create_serializer(protocol or model.protocol, include_validation=False)
    request_dict = serializer.serialize_to_request(params, model.operation_model(operation))
    prepare_request_dict(request_dict, ENDPOINT)
    request = create_request_object(request_dict)
    signing_name = model.metadata.get("signingName", model.metadata["endpointPrefix"])
    SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), signing_name, "us-east-1").add_auth(request)
    prepared = request.prepare()
    body = prepared.body or b""
    body = body.read() if hasattr(body, "read") else body
    body = body.encode("utf-8") if isinstance(body, str) else body
    url = urlsplit(prepared.url)
    environ = {
        "REQUEST_METHOD": prepared.method,
        # PEP 3333: PATH_INFO is the percent-decoded path, its bytes read as latin-1
        "PATH_INFO": unquote_to_bytes(url.path).decode("latin-1"),
        "QUERY_STRING": url.query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "4566",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in prepared.headers.items():
        value = value.decode("utf-8") if isinstance(value, bytes) else value
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    return environ, body
