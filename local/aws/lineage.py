"""SageMaker ML Lineage Tracking, served locally: moto has none of its operations.

`LineageService.install()` routes these `X-Amz-Target`s on the gateway (after the strict face has
checked them like any other request: model constraints, then IAM):

    CreateArtifact CreateAction CreateContext DescribeArtifact DescribeAction DescribeContext
    ListArtifacts ListActions ListContexts AddAssociation ListAssociations QueryLineage

Entities live in memory per region and account (the region is the request's credential scope).
Like moto's own state, which the local cloud resets at every start, they do not outlive the cloud:
a model package and its lineage disappear together.

What AWS does and this service does too:
* ARNs: `arn:aws:sagemaker:<region>:<account>:artifact/<32 hex>` (artifacts are named by a hash of
  their source, so one source is one artifact), `action/<name>`, `context/<name>`.
* A second CreateContext/CreateAction with a name in use, or CreateArtifact with the source of an
  existing artifact, is a `ValidationException` naming the existing ARN (the local wording).
* AddAssociation of a pair that exists answers as the first one did (the pair is the key: the
  association is not duplicated); either end missing is `ResourceNotFound`.
* ListAssociations filters on source/destination ARN and type, association type and creation time,
  sorted by CreationTime (SortBy/SortOrder), paginated with NextToken/MaxResults.
* QueryLineage walks associations from one start ARN: `Ascendants` follows edges backwards (what the
  entity came from), `Descendants` forwards, `Both` both; MaxDepth (default 10) bounds the hops;
  Filters (Types, LineageTypes, Created/Modified Before/After, Properties) select the vertices
  returned, not the walk; IncludeEdges adds the edges between the vertices walked.

Not modelled: trial components and experiments as association ends (the product records none),
LineageGroupArn, UpdateArtifact/UpdateAction/UpdateContext, DeleteAssociation and the Delete*s of
entities (the product never removes lineage: a replaced endpoint's association stays, with its time).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from local.aws.gateway import LocalGateway, aws_error, json_response, request_json

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
OPERATIONS = ("CreateArtifact", "CreateAction", "CreateContext", "DescribeArtifact", "DescribeAction",
              "DescribeContext", "ListArtifacts", "ListActions", "ListContexts", "AddAssociation",
              "ListAssociations", "QueryLineage")
_SCOPE_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")
_KIND_OF_ARN = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:(artifact|action|context|experiment"
                          r"|experiment-trial-component)/(.+)")
LINEAGE_TYPE = {"artifact": "Artifact", "action": "Action", "context": "Context"}


class LineageError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Entity:
    kind: str  # artifact | action | context
    arn: str
    name: str | None
    entity_type: str | None
    source: dict | None
    description: dict  # the Describe* answer without the times
    created: float = field(default_factory=time.time)

    def describe(self) -> dict:
        return {**self.description, "CreationTime": self.created, "LastModifiedTime": self.created}

    def summary(self) -> dict:
        key = self.kind.capitalize()
        item = {f"{key}Arn": self.arn, f"{key}Type": self.entity_type, "Source": self.source,
                "CreationTime": self.created, "LastModifiedTime": self.created}
        if self.name:
            item[f"{key}Name"] = self.name
        if self.kind == "action" and self.description.get("Status"):
            item["Status"] = self.description["Status"]
        return {k: v for k, v in item.items() if v is not None}


@dataclass
class Association:
    source: Entity
    destination: Entity
    association_type: str | None
    created: float = field(default_factory=time.time)

    def summary(self) -> dict:
        item = {"SourceArn": self.source.arn, "DestinationArn": self.destination.arn,
                "SourceType": self.source.entity_type, "DestinationType": self.destination.entity_type,
                "AssociationType": self.association_type, "SourceName": self.source.name,
                "DestinationName": self.destination.name, "CreationTime": self.created}
        return {k: v for k, v in item.items() if v is not None}


@dataclass
class _Account:
    entities: dict[str, Entity] = field(default_factory=dict)
    associations: dict[tuple[str, str], Association] = field(default_factory=dict)


def artifact_hash(source: dict) -> str:
    """One artifact per source: the same SourceUri and SourceTypes give the same ARN."""
    types = sorted((t.get("SourceIdType", ""), t.get("Value", "")) for t in source.get("SourceTypes") or [])
    text = json.dumps([source.get("SourceUri", ""), types])
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _time(value: Any) -> float | None:
    """A request timestamp (botocore sends epoch seconds for JSON) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class LineageService:
    """The lineage operations of SageMaker, in memory. `install()` registers them on the gateway."""

    def __init__(self, gateway: LocalGateway | None = None, account: str = ACCOUNT_ID):
        self.gateway = gateway
        self.account = account
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._lock = threading.Lock()

    def install(self) -> "LineageService":
        for name in OPERATIONS:
            self.gateway.route_target(f"SageMaker.{name}", self._app(getattr(self, _snake(name))))
        return self

    def _app(self, handler: Callable[[_Account, str, dict], dict]):
        def app(environ, start_response):
            region = _region_of(environ)
            try:
                with self._lock:
                    store = self._accounts.setdefault((region, self.account), _Account())
                    return json_response(start_response, 200, handler(store, region, request_json(environ)))
            except LineageError as err:
                return aws_error(start_response, err.status, err.code, err.message)
        return app

    def _arn(self, region: str, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{region}:{self.account}:{kind}/{name}"

    # -- create ---------------------------------------------------------------------------------
    def create_artifact(self, store: _Account, region: str, body: dict) -> dict:
        source = body["Source"]
        arn = self._arn(region, "artifact", artifact_hash(source))
        if arn in store.entities:
            raise LineageError("ValidationException", f"Artifact already exists with the same source: {arn}")
        description = {"ArtifactArn": arn, "Source": source, "ArtifactType": body.get("ArtifactType"),
                       "Properties": body.get("Properties") or {},
                       "MetadataProperties": body.get("MetadataProperties")}
        if body.get("ArtifactName"):
            description["ArtifactName"] = body["ArtifactName"]
        store.entities[arn] = Entity("artifact", arn, body.get("ArtifactName"), body.get("ArtifactType"), source,
                                     {k: v for k, v in description.items() if v is not None})
        return {"ArtifactArn": arn}

    def create_action(self, store: _Account, region: str, body: dict) -> dict:
        return self._create_named(store, region, "action", body["ActionName"], body["ActionType"], body,
                                  ("Description", "Status", "Properties", "MetadataProperties"))

    def create_context(self, store: _Account, region: str, body: dict) -> dict:
        return self._create_named(store, region, "context", body["ContextName"], body["ContextType"], body,
                                  ("Description", "Properties"))

    def _create_named(self, store: _Account, region: str, kind: str, name: str, entity_type: str, body: dict,
                      optional: tuple[str, ...]) -> dict:
        key = kind.capitalize()
        arn = self._arn(region, kind, name)
        if arn in store.entities:
            raise LineageError("ValidationException", f"{key} already exists: {arn}")
        description = {f"{key}Name": name, f"{key}Arn": arn, "Source": body["Source"], f"{key}Type": entity_type}
        description.update({member: body[member] for member in optional if body.get(member) is not None})
        store.entities[arn] = Entity(kind, arn, name, entity_type, body["Source"], description)
        return {f"{key}Arn": arn}

    # -- describe / list ------------------------------------------------------------------------
    def describe_artifact(self, store: _Account, region: str, body: dict) -> dict:
        return self._entity(store, body["ArtifactArn"], "artifact").describe()

    def describe_action(self, store: _Account, region: str, body: dict) -> dict:
        return self._by_name(store, region, "action", body["ActionName"]).describe()

    def describe_context(self, store: _Account, region: str, body: dict) -> dict:
        return self._by_name(store, region, "context", body["ContextName"]).describe()

    def _by_name(self, store: _Account, region: str, kind: str, name_or_arn: str) -> Entity:
        arn = name_or_arn if name_or_arn.startswith("arn:") else self._arn(region, kind, name_or_arn)
        return self._entity(store, arn, kind)

    @staticmethod
    def _entity(store: _Account, arn: str, kind: str | None = None) -> Entity:
        entity = store.entities.get(arn)
        if entity is None or (kind is not None and entity.kind != kind):
            what = (kind or "entity").capitalize()
            raise LineageError("ResourceNotFound", f"{what} '{arn}' does not exist.")
        return entity

    def list_artifacts(self, store: _Account, region: str, body: dict) -> dict:
        return self._list(store, "artifact", body)

    def list_actions(self, store: _Account, region: str, body: dict) -> dict:
        return self._list(store, "action", body)

    def list_contexts(self, store: _Account, region: str, body: dict) -> dict:
        return self._list(store, "context", body)

    def _list(self, store: _Account, kind: str, body: dict) -> dict:
        key = kind.capitalize()
        after, before = _time(body.get("CreatedAfter")), _time(body.get("CreatedBefore"))
        wanted_type = body.get(f"{key}Type")
        items = [e for e in store.entities.values() if e.kind == kind
                 and (not body.get("SourceUri") or (e.source or {}).get("SourceUri") == body["SourceUri"])
                 and (not wanted_type or e.entity_type == wanted_type)
                 and (after is None or e.created > after) and (before is None or e.created < before)]
        sort_by = body.get("SortBy", "CreationTime")
        sort_key = {"Name": lambda e: e.name or "", "CreationTime": lambda e: e.created}.get(sort_by, lambda e: e.created)
        items.sort(key=sort_key, reverse=body.get("SortOrder", "Descending") == "Descending")
        return _page([e.summary() for e in items], body, f"{key}Summaries")

    # -- associations ---------------------------------------------------------------------------
    def add_association(self, store: _Account, region: str, body: dict) -> dict:
        source = self._association_end(store, body["SourceArn"])
        destination = self._association_end(store, body["DestinationArn"])
        key = (source.arn, destination.arn)
        if key not in store.associations:
            store.associations[key] = Association(source, destination, body.get("AssociationType"))
        return {"SourceArn": source.arn, "DestinationArn": destination.arn}

    def _association_end(self, store: _Account, arn: str) -> Entity:
        match = _KIND_OF_ARN.fullmatch(arn)
        if match and match.group(1) not in LINEAGE_TYPE:
            raise LineageError("ValidationException",
                               f"{match.group(1)} entities are not kept by the local lineage service: {arn}")
        return self._entity(store, arn)

    def list_associations(self, store: _Account, region: str, body: dict) -> dict:
        after, before = _time(body.get("CreatedAfter")), _time(body.get("CreatedBefore"))
        checks = (("SourceArn", lambda a: a.source.arn), ("DestinationArn", lambda a: a.destination.arn),
                  ("SourceType", lambda a: a.source.entity_type),
                  ("DestinationType", lambda a: a.destination.entity_type),
                  ("AssociationType", lambda a: a.association_type))
        items = [a for a in store.associations.values()
                 if all(body.get(member) is None or value(a) == body[member] for member, value in checks)
                 and (after is None or a.created > after) and (before is None or a.created < before)]
        sort_by = body.get("SortBy", "CreationTime")
        sort_keys = {"SourceArn": lambda a: a.source.arn, "DestinationArn": lambda a: a.destination.arn,
                     "SourceType": lambda a: a.source.entity_type or "",
                     "DestinationType": lambda a: a.destination.entity_type or "",
                     "CreationTime": lambda a: a.created}
        items.sort(key=sort_keys.get(sort_by, sort_keys["CreationTime"]),
                   reverse=body.get("SortOrder", "Descending") == "Descending")
        return _page([a.summary() for a in items], body, "AssociationSummaries")

    # -- query ----------------------------------------------------------------------------------
    def query_lineage(self, store: _Account, region: str, body: dict) -> dict:
        starts = list(body.get("StartArns") or [])
        direction = body.get("Direction", "Both")
        depth = int(body.get("MaxDepth", 10))
        walked: dict[str, Entity] = {}
        edges: dict[tuple[str, str], Association] = {}
        frontier = [self._entity(store, arn) for arn in starts]
        seen = {e.arn for e in frontier}
        for _ in range(depth):
            following = []
            for entity in frontier:
                for association in store.associations.values():
                    if direction in ("Descendants", "Both") and association.source.arn == entity.arn:
                        other = association.destination
                    elif direction in ("Ascendants", "Both") and association.destination.arn == entity.arn:
                        other = association.source
                    else:
                        continue
                    edges[(association.source.arn, association.destination.arn)] = association
                    if other.arn not in seen:
                        seen.add(other.arn)
                        walked[other.arn] = other
                        following.append(other)
            frontier = following
            if not frontier:
                break
        vertices = [e for e in walked.values() if _passes(e, body.get("Filters") or {})]
        page = _page([{"Arn": e.arn, "Type": e.entity_type, "LineageType": LINEAGE_TYPE[e.kind]} for e in vertices],
                     body, "Vertices", default_size=10)
        page["Edges"] = ([{"SourceArn": a.source.arn, "DestinationArn": a.destination.arn,
                           **({"AssociationType": a.association_type} if a.association_type else {})}
                          for a in edges.values()] if body.get("IncludeEdges") else [])
        return page


def _passes(entity: Entity, filters: dict) -> bool:
    if filters.get("Types") and entity.entity_type not in filters["Types"]:
        return False
    if filters.get("LineageTypes") and LINEAGE_TYPE[entity.kind] not in filters["LineageTypes"]:
        return False
    for member, keep in (("CreatedBefore", lambda t, limit: t < limit), ("CreatedAfter", lambda t, limit: t > limit),
                         ("ModifiedBefore", lambda t, limit: t < limit), ("ModifiedAfter", lambda t, limit: t > limit)):
        limit = _time(filters.get(member))
        if limit is not None and not keep(entity.created, limit):
            return False
    properties = entity.description.get("Properties") or {}
    return all(properties.get(k) == v for k, v in (filters.get("Properties") or {}).items())


def _region_of(environ: dict) -> str:
    match = _SCOPE_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else DEFAULT_REGION


def _page(items: list[dict], body: dict, key: str, default_size: int = 50) -> dict:
    token = body.get("NextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise LineageError("ValidationException", f"Invalid pagination token: {token}") from None
    size = int(body.get("MaxResults") or default_size)
    page: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        page["NextToken"] = str(start + size)
    return page


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")

