"""Turns a raw HTTP request, as the local gateway sees it, back into (service, operation, params).

The inverse of botocore's request serializers, for the protocols the local face's clients speak:

* JSON 1.0/1.1 (`X-Amz-Target: <targetPrefix>.<Operation>`): the target prefix names the service.
  SageMaker, its runtime and its feature store runtime all sign as `sagemaker`, so the credential
  scope alone never routes a request.
* rest-json and rest-xml (S3, Lambda, sagemaker-runtime, featurestore-runtime, SES v2): the signing
  name of the `Authorization` credential scope (or the `X-Amz-Credential` of a presigned URL)
  selects the candidate services, then the method and the model's `requestUri` template select the
  operation; members come from URI labels, the query string, headers and the body as the model's
  `location`/`locationName` say.
* query (SNS, IAM, STS, SES, CloudFormation): form-encoded `Action=...&Version=...` with botocore's
  flattening of lists (`Name.member.N`) and maps (`Name.entry.N.key`).

What is not decoded returns None and is not checked: Smithy RPC v2 CBOR (what botocore now uses
for CloudWatch), unsigned REST requests, virtual-host-style S3 addressing, and services outside the
decoder's list. Params use boto3's member names and Python types (bytes for blobs, aware datetimes
for timestamps); a value that does not parse as its shape's type is kept as sent, so `check`
reports it.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import parse_qsl

from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape
from botocore.utils import parse_timestamp

from local.aws.strict.service_constraints import service_model

# The services the product and the local face call (functions/, jobs/, local/, the state machine).
CHECKED_SERVICES = (
    "s3", "sagemaker", "sagemaker-runtime", "sagemaker-featurestore-runtime", "dynamodb", "stepfunctions",
    "sns", "sqs", "ses", "sesv2", "sts", "iam", "events", "logs", "secretsmanager", "ssm", "kms", "ecr",
    "lambda", "cloudformation", "cloudwatch", "scheduler",
)

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")


@dataclass(frozen=True)
class ServiceRequest:
    service: str  # botocore's service name, e.g. "sagemaker-featurestore-runtime"
    operation: str  # e.g. "PutRecord"
    params: dict = field(hash=False)
    protocol: str  # "json", "rest-json", "rest-xml" or "query": the shape of the error answer


@dataclass(frozen=True)
class _Route:
    operation: OperationModel
    method: str
    path: re.Pattern
    labels: dict[str, str]  # regex group -> member name
    literal_query: tuple[tuple[str, str | None], ...]
    required_located: tuple[tuple[str, str], ...]  # (location, wire name) of required non-body members


class RequestDecoder:
    """Decodes requests for a set of botocore services (indexes are built on first use and kept)."""

    def __init__(self, services: Iterable[str] = CHECKED_SERVICES):
        self.services = tuple(services)

    def decode(self, environ: dict, body: bytes) -> ServiceRequest | None:
        headers = _Headers(environ)
        if headers.get("smithy-protocol"):
            return None
        target = headers.get("x-amz-target")
        if target:
            return self._decode_json(target, body)
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        signing_name = _signing_name(headers.get("authorization"), dict(query).get("X-Amz-Credential"))
        form = _form_params(environ, headers, body, query)
        if form is not None and "Action" in form:
            return self._decode_query(form, signing_name)
        if signing_name is None:
            return None
        return self._decode_rest(environ, headers, body, query, signing_name)

    # -- indexes ------------------------------------------------------------------------------
    @functools.cached_property
    def _models(self) -> dict[str, ServiceModel]:
        return {name: service_model(name) for name in self.services}

    @functools.cached_property
    def _json_targets(self) -> dict[str, str]:
        return {m.metadata["targetPrefix"]: name for name, m in self._models.items()
                if "json" in _protocols(m) and "targetPrefix" in m.metadata}

    @functools.cached_property
    def _query_services(self) -> dict[str, ServiceModel]:
        return {name: m for name, m in self._models.items() if "query" in _protocols(m)}

    @functools.cached_property
    def _rest_routes(self) -> dict[str, list[_Route]]:
        routes: dict[str, list[_Route]] = {}
        for m in self._models.values():
            protocol = _protocols(m)[0]
            if protocol not in ("rest-json", "rest-xml"):
                continue
            signing = m.metadata.get("signingName", m.metadata["endpointPrefix"])
            routes.setdefault(signing, []).extend(_route(m.operation_model(op)) for op in m.operation_names)
        return routes

    # -- JSON 1.0 / 1.1 -----------------------------------------------------------------------
    def _decode_json(self, target: str, body: bytes) -> ServiceRequest | None:
        prefix, _, operation = target.rpartition(".")
        service = self._json_targets.get(prefix)
        if service is None or operation not in self._models[service].operation_names:
            return None
        op = self._models[service].operation_model(operation)
        document = _json_document(body)
        params = _from_json(op.input_shape, document) if op.input_shape is not None else {}
        return ServiceRequest(service, operation, params if isinstance(params, dict) else {}, "json")

    # -- query ----------------------------------------------------------------------------------
    def _decode_query(self, form: dict[str, str], signing_name: str | None) -> ServiceRequest | None:
        candidates = [
            (name, m) for name, m in self._query_services.items()
            if form["Action"] in m.operation_names
            and (m.metadata.get("signingName", m.metadata["endpointPrefix"]) == signing_name
                 or (signing_name is None and m.metadata["apiVersion"] == form.get("Version")))
        ]
        if len(candidates) != 1:
            return None
        service, m = candidates[0]
        op = m.operation_model(form["Action"])
        present = _prefixes(form)
        params = _from_query(op.input_shape, form, "", present) if op.input_shape is not None else {}
        return ServiceRequest(service, op.name, params or {}, "query")

    # -- rest-json / rest-xml -------------------------------------------------------------------
    def _decode_rest(self, environ, headers, body, query, signing_name) -> ServiceRequest | None:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace") or "/"
        query_keys = {k: v for k, v in query}
        best, best_score, best_match = None, None, None
        for route in self._rest_routes.get(signing_name, ()):
            if route.method != method:
                continue
            match = route.path.fullmatch(path)
            if match is None or not _literal_query_ok(route, query_keys):
                continue
            if not all(_located_present(loc, name, query_keys, headers) for loc, name in route.required_located):
                continue
            score = (len(route.literal_query), len(route.required_located), not route.operation.deprecated,
                     -len(route.labels))
            if best_score is None or score > best_score:
                best, best_score, best_match = route, score, match
        if best is None:
            return None
        op = best.operation
        protocol = _protocols(op.service_model)[0]
        params = _rest_params(op, protocol, best, best_match, query, headers, body)
        return ServiceRequest(op.service_model.service_name, op.name, params, protocol)


_DEFAULT_DECODER = RequestDecoder()


def decode(environ: dict, body: bytes) -> ServiceRequest | None:
    """The service, operation and params of a raw request for one of CHECKED_SERVICES, or None."""
    return _DEFAULT_DECODER.decode(environ, body)


# -- helpers shared by the protocols ---------------------------------------------------------------
class _Headers:
    """Case-insensitive view of the request headers of a WSGI environ."""

    def __init__(self, environ: dict):
        self._environ = environ

    def get(self, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return self._environ.get(key) or None
        return self._environ.get("HTTP_" + key)

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Headers whose name starts with `prefix`, keyed by the rest of the name.

        WSGI upper-cases header names and turns `-` into `_`: the rest is returned lower-cased (as
        AWS stores user metadata keys) with `_` read as `-`.
        """
        wanted = "HTTP_" + prefix.upper().replace("-", "_")
        return {key[len(wanted):].lower().replace("_", "-"): value
                for key, value in self._environ.items() if key.startswith(wanted) and len(key) > len(wanted)}


def _protocols(model: ServiceModel) -> list[str]:
    return list(model.metadata.get("protocols") or [model.metadata["protocol"]])


def _signing_name(authorization: str | None, presigned_credential: str | None) -> str | None:
    if authorization:
        found = _CREDENTIAL_SCOPE.search(authorization)
        return found.group(1) if found else None
    if presigned_credential:
        parts = presigned_credential.split("/")
        return parts[3] if len(parts) == 5 else None
    return None


def _form_params(environ, headers, body, query) -> dict[str, str] | None:
    content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if environ.get("REQUEST_METHOD") == "GET" and any(k == "Action" for k, _ in query):
        return dict(query)
    return None


def _json_document(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return {}


def _scalar(shape: Shape, text: str) -> Any:
    """A value sent as text (query, header, URI, XML) in its shape's Python type, or the text itself."""
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
        if kind == "boolean":
            return {"true": True, "false": False}.get(text.lower(), text)
        if kind == "timestamp":
            return parse_timestamp(text)
        if kind == "blob":
            return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error, OverflowError):
        return text
    return text


def _from_json(shape: Shape, value: Any) -> Any:
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        out = {}
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            if wire in value:
                out[name] = _from_json(member, value[wire])
        return out
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [_from_json(shape.member, item) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {key: _from_json(shape.value, item) for key, item in value.items()}
    if shape.type_name == "blob" and isinstance(value, str):
        return _scalar(shape, value)
    if shape.type_name == "timestamp" and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return parse_timestamp(value)
        except (ValueError, OverflowError):
            return value
    return value


def _prefixes(form: dict[str, str]) -> set[str]:
    present = set()
    for key in form:
        parts = key.split(".")
        present.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return present


def _query_name(shape: Shape, default: str) -> str:
    return shape.serialization.get("name", default)


def _from_query(shape: Shape, form: dict[str, str], prefix: str, present: set[str]) -> Any:
    if isinstance(shape, StructureShape):
        out = {}
        for name, member in shape.members.items():
            wire = _query_name(member, name)
            key = f"{prefix}.{wire}" if prefix else wire
            if key in present:
                out[name] = _from_query(member, form, key, present)
        return out
    if isinstance(shape, ListShape):
        if form.get(prefix) == "":
            return []
        if shape.serialization.get("flattened"):
            element_prefix = prefix
            if shape.member.serialization.get("name"):
                element_prefix = ".".join(prefix.split(".")[:-1] + [shape.member.serialization["name"]])
        else:
            element_prefix = f"{prefix}.{_query_name(shape.member, 'member')}"
        items, index = [], 1
        while f"{element_prefix}.{index}" in present:
            items.append(_from_query(shape.member, form, f"{element_prefix}.{index}", present))
            index += 1
        return items
    if isinstance(shape, MapShape):
        entry_prefix = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key_name, value_name = _query_name(shape.key, "key"), _query_name(shape.value, "value")
        out, index = {}, 1
        while f"{entry_prefix}.{index}" in present:
            base = f"{entry_prefix}.{index}"
            key = form.get(f"{base}.{key_name}", "")
            out[key] = _from_query(shape.value, form, f"{base}.{value_name}", present)
            index += 1
        return out
    return _scalar(shape, form.get(prefix, ""))


def _route(op: OperationModel) -> _Route:
    template, _, literal = op.http["requestUri"].partition("?")
    labels: dict[str, str] = {}
    pattern, position = "", 0
    for index, found in enumerate(re.finditer(r"\{([^}+]+)(\+?)\}", template)):
        pattern += re.escape(template[position:found.start()])
        group = f"label{index}"
        labels[group] = found.group(1)
        pattern += f"(?P<{group}>.+)" if found.group(2) else f"(?P<{group}>[^/]+)"
        position = found.end()
    pattern += re.escape(template[position:])
    if not pattern.endswith(("/", ".+)")):
        pattern += "/?"
    literal_query = tuple((k, v if "=" in item else None) for item in literal.split("&") if item
                          for k, _, v in [item.partition("=")])
    required = []
    shape = op.input_shape
    if shape is not None:
        for name in shape.required_members:
            location = shape.members[name].serialization.get("location")
            if location in ("querystring", "header"):
                required.append((location, shape.members[name].serialization.get("name", name)))
    return _Route(op, op.http.get("method", "POST"), re.compile(pattern), labels, literal_query, tuple(required))


def _literal_query_ok(route: _Route, query: dict[str, str]) -> bool:
    for key, value in route.literal_query:
        if key == "x-id":  # botocore's operation hint; other clients may leave it out
            if key in query and query[key] != value:
                return False
            continue
        if key not in query or (value is not None and query[key] != value):
            return False
    return True


def _located_present(location: str, name: str, query: dict[str, str], headers: _Headers) -> bool:
    return name in query if location == "querystring" else headers.get(name) is not None


def _rest_params(op, protocol, route, match, query, headers, body) -> dict:
    shape = op.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    label_values = {route.labels[group]: value for group, value in match.groupdict().items()}
    claimed_query = {k for k, _ in route.literal_query}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri" and wire in label_values:
            params[name] = _scalar(member, label_values[wire])
        elif location == "querystring" and isinstance(member, MapShape):
            continue  # takes what no other member claims, below
        elif location == "querystring":
            values = [v for k, v in query if k == wire]
            claimed_query.add(wire)
            if values:
                params[name] = ([_scalar(member.member, v) for v in values] if isinstance(member, ListShape)
                                else _scalar(member, values[0]))
        elif location == "header" and headers.get(wire) is not None:
            params[name] = _header_value(member, headers.get(wire))
        elif location == "headers":
            found = headers.with_prefix(wire)
            if found:
                params[name] = found
    for name, member in shape.members.items():
        if member.serialization.get("location") == "querystring" and isinstance(member, MapShape):
            rest = {k: v for k, v in query if k not in claimed_query}
            if rest:
                params[name] = rest
    params.update(_rest_body(shape, protocol, body))
    return params


def _header_value(shape: Shape, text: str) -> Any:
    if isinstance(shape, ListShape):
        return [_scalar(shape.member, item) for item in _split_header_list(text)]
    if shape.serialization.get("jsonvalue"):
        try:
            return json.loads(base64.b64decode(text))
        except (ValueError, binascii.Error):
            return text
    if shape.type_name == "blob":
        return text.encode("utf-8")
    return _scalar(shape, text)


def _split_header_list(text: str) -> list[str]:
    """botocore joins list headers with `,`, quoting items that hold `,` or `"` (escaped `\\"`)."""
    items, current, quoted, index = [], "", False, 0
    while index < len(text):
        char = text[index]
        if quoted and char == "\\" and index + 1 < len(text):
            current += text[index + 1]
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += char
        index += 1
    items.append(current.strip())
    return items


def _rest_body(shape: StructureShape, protocol: str, body: bytes) -> dict:
    payload = shape.serialization.get("payload")
    if payload is not None:
        member = shape.members[payload]
        if member.type_name in ("blob", "string"):
            if not body and member.type_name == "string":
                return {}
            return {payload: body if member.type_name == "blob" else body.decode("utf-8", "replace")}
        if not body.strip():
            return {}
        value = _json_body(member, body) if protocol == "rest-json" else _xml_body(member, body)
        return {payload: value} if value is not None else {}
    body_members = {name: m for name, m in shape.members.items() if "location" not in m.serialization}
    if not body_members or not body.strip():
        return {}
    if protocol == "rest-json":
        value = _json_body(shape, body)
        return {k: v for k, v in (value or {}).items() if k in body_members}
    value = _xml_body(shape, body) or {}
    return {k: v for k, v in value.items() if k in body_members}


def _json_body(shape: Shape, body: bytes) -> Any:
    return _from_json(shape, _json_document(body))


def _xml_body(shape: Shape, body: bytes) -> Any:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    return _from_xml(shape, root)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _from_xml(shape: Shape, node: ElementTree.Element) -> Any:
    if isinstance(shape, StructureShape):
        out: dict[str, Any] = {}
        children: dict[str, list[ElementTree.Element]] = {}
        for child in node:
            children.setdefault(_local(child.tag), []).append(child)
        attributes = {_local(k): v for k, v in node.attrib.items()}
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            if member.serialization.get("xmlAttribute"):
                if _local(wire.split(":")[-1]) in attributes:
                    out[name] = attributes[_local(wire.split(":")[-1])]
                continue
            if isinstance(member, ListShape) and member.serialization.get("flattened"):
                elements = children.get(wire, [])
                if elements:
                    out[name] = [_from_xml(member.member, e) for e in elements]
            elif wire in children:
                out[name] = _from_xml(member, children[wire][0])
        return out
    if isinstance(shape, ListShape):
        element = shape.member.serialization.get("name", "member")
        return [_from_xml(shape.member, child) for child in node if _local(child.tag) == element]
    if isinstance(shape, MapShape):
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        out = {}
        entries = node if shape.serialization.get("flattened") else [e for e in node if _local(e.tag) == "entry"]
        for entry in entries:
            parts = {_local(child.tag): child for child in entry}
            if key_name in parts and value_name in parts:
                out[parts[key_name].text or ""] = _from_xml(shape.value, parts[value_name])
        return out
    return _scalar(shape, node.text or "")
