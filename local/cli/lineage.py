"""`mlops lineage PACKAGE_ARN`: which data, manifest, image, pipeline execution and trial produced a
model package, and which endpoints served it since when.

Reads the lineage SageMaker holds (recorded by the product: `mlops_shared.lineage`) through the
lineage API, from the local cloud that `mlops local up` runs (`--state-dir`) or, with `--aws`, from
the AWS account of the current credentials. `lineage_of(sagemaker, arn)` is the reading itself;
the local console shows the same object. What the lineage does not hold is named in `missing`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

ARN_PATTERN = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]+:[0-9]{12}:model-package/[^/]+/[0-9]+")
# The entity types the product records (mlops_shared.lineage; this module does not import the layer).
DATASET, MANIFEST, IMAGE, PACKAGE = "DataSet", "Manifest", "Image", "ModelPackage"
TRAINING, EXECUTION, DEPLOYMENT, ENDPOINT = "ModelTraining", "SageMakerPipelineExecution", "ModelDeployment", "Endpoint"
HYPERPARAMETER_PREFIX = "hyperparameter:"


class NotAModelPackage(ValueError):
    """The argument is not a versioned model package ARN, or no such package exists (usage error)."""


def register(subparsers) -> None:
    from local.cli.common import DEFAULT_STATE_DIR

    parser = subparsers.add_parser("lineage", help="what produced a model package and where it is served",
                                   description=__doc__.split("\n\n", 1)[0].replace("\n", " "))
    parser.add_argument("model_package_arn", metavar="PACKAGE_ARN",
                        help="versioned model package ARN (`mlops local run` output: model_package_arn)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines for people")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"local cloud state dir (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--aws", action="store_true", help="read the AWS account of the current credentials "
                                                           "instead of the running local cloud")
    parser.set_defaults(func=run)


# -- reading --------------------------------------------------------------------------------------
def lineage_of(sagemaker: Any, model_package_arn: str) -> dict:
    """The lineage of one model package as one JSON-ready object (docs/lineage.md has its shape)."""
    if not ARN_PATTERN.fullmatch(model_package_arn or ""):
        raise NotAModelPackage(f"not a versioned model package ARN: {model_package_arn!r}")
    try:
        package = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    except Exception as err:
        if _is_missing(err):
            raise NotAModelPackage(f"no model package {model_package_arn}") from None
        raise
    result: dict[str, Any] = {
        "model_package_arn": package["ModelPackageArn"],
        "model_package_group": package.get("ModelPackageGroupName"),
        "version": int(package.get("ModelPackageVersion") or 0),
        "dataset": None, "manifest": None, "code": None, "pipeline_execution": None, "training": None,
        "endpoints": [], "associations": [], "missing": [],
    }
    missing = result["missing"]
    package_artifact = _package_artifact(sagemaker, model_package_arn)
    if package_artifact is None:
        missing.append("no lineage is recorded for this package (no artifact has it as its source)")
        generated_by = (package.get("MetadataProperties") or {}).get("GeneratedBy")
        if generated_by:
            missing.append(f"the registry says the pipeline execution {generated_by} generated it")
        return result

    up_vertices, up_edges = _query(sagemaker, package_artifact, "Ascendants", depth=5)
    down_vertices, down_edges = _query(sagemaker, package_artifact, "Descendants", depth=2)
    types = {package_artifact: PACKAGE, **{v["Arn"]: v.get("Type") for v in up_vertices + down_vertices}}
    result["associations"] = [
        {"source_arn": e["SourceArn"], "source_type": types.get(e["SourceArn"]),
         "destination_arn": e["DestinationArn"], "destination_type": types.get(e["DestinationArn"]),
         "association_type": e.get("AssociationType")}
        for e in _unique(up_edges + down_edges)]
    by_type: dict[str, list[str]] = {}
    for vertex in up_vertices:
        by_type.setdefault(vertex.get("Type"), []).append(vertex["Arn"])

    dataset = _first(by_type, DATASET)
    if dataset:
        described = sagemaker.describe_artifact(ArtifactArn=dataset)
        properties = described.get("Properties") or {}
        source = described.get("Source") or {}
        version = next((t["Value"] for t in source.get("SourceTypes") or [] if t.get("SourceIdType") == "S3Version"), None)
        bucket, _, key = source.get("SourceUri", "").removeprefix("s3://").partition("/")
        result["dataset"] = {"uri": source.get("SourceUri"), "bucket": properties.get("bucket") or bucket,
                             "key": properties.get("key") or key, "version_id": version, "artifact_arn": dataset}
    else:
        missing.append("the data object (no DataSet artifact upstream of the package)")

    manifest = _first(by_type, MANIFEST)
    if manifest:
        result["manifest"] = {"uri": sagemaker.describe_artifact(ArtifactArn=manifest)["Source"]["SourceUri"],
                              "artifact_arn": manifest}
    else:
        missing.append("the dataset manifest (no Manifest artifact upstream of the package)")

    image = _first(by_type, IMAGE)
    if image:
        described = sagemaker.describe_artifact(ArtifactArn=image)
        properties = described.get("Properties") or {}
        uri = described["Source"]["SourceUri"]
        result["code"] = {"image_uri": uri, "image_digest": properties.get("image_digest") or None,
                          "code_version": properties.get("code_version") or None, "artifact_arn": image}
    else:
        missing.append("the image/code version (no Image artifact upstream of the package)")

    execution = _first(by_type, EXECUTION)
    if execution:
        described = sagemaker.describe_context(ContextName=execution)
        result["pipeline_execution"] = {"arn": described["Source"]["SourceUri"], "context_arn": execution}
    else:
        missing.append("the pipeline execution (no SageMakerPipelineExecution context upstream of the package)")

    training = _first(by_type, TRAINING)
    if training:
        described = sagemaker.describe_action(ActionName=training)
        properties = described.get("Properties") or {}
        result["training"] = {
            "tuning_job_name": properties.get("tuning_job_name") or None,
            "training_job_name": properties.get("training_job_name") or described["Source"]["SourceUri"].rsplit("/", 1)[-1],
            "hyperparameters": {k.removeprefix(HYPERPARAMETER_PREFIX): v for k, v in sorted(properties.items())
                                if k.startswith(HYPERPARAMETER_PREFIX)},
            "arn": training,
        }
    else:
        missing.append("the training trial (no ModelTraining action upstream of the package)")

    result["endpoints"] = _endpoints(sagemaker, [v["Arn"] for v in down_vertices if v.get("Type") == DEPLOYMENT],
                                     down_edges, model_package_arn)
    if not result["endpoints"]:
        missing.append("no endpoint has served this package (no ModelDeployment downstream of it)")
    return result


def _endpoints(sagemaker: Any, deployments: list[str], edges: list[dict], package_arn: str) -> list[dict]:
    """One entry per deployment of the package; `current` when it is its endpoint's latest deployment."""
    entries = []
    latest_by_endpoint: dict[str, tuple[str, str]] = {}
    for deployment in deployments:
        properties = sagemaker.describe_action(ActionName=deployment).get("Properties") or {}
        endpoint_context = next((e["DestinationArn"] for e in edges if e["SourceArn"] == deployment), None)
        if endpoint_context is None:
            continue
        if endpoint_context not in latest_by_endpoint:
            latest_by_endpoint[endpoint_context] = _latest_deployment(sagemaker, endpoint_context)
        context = sagemaker.describe_context(ContextName=endpoint_context)
        entries.append({
            "endpoint_name": (context.get("Properties") or {}).get("endpoint_name") or properties.get("endpoint_name"),
            "endpoint_arn": context["Source"]["SourceUri"],
            "context_arn": endpoint_context,
            "since": properties.get("deployed_at"),
            "current": latest_by_endpoint[endpoint_context] == (deployment, package_arn),
        })
    entries.sort(key=lambda e: e["since"] or "")
    return entries


def _latest_deployment(sagemaker: Any, endpoint_context: str) -> tuple[str, str]:
    """(deployment action ARN, package ARN) of the endpoint's most recent deployment."""
    vertices, _ = _query(sagemaker, endpoint_context, "Ascendants", depth=1, types=[DEPLOYMENT])
    latest = ("", "", "")
    for vertex in vertices:
        properties = sagemaker.describe_action(ActionName=vertex["Arn"]).get("Properties") or {}
        candidate = (properties.get("deployed_at") or "", vertex["Arn"], properties.get("model_package_arn") or "")
        latest = max(latest, candidate)
    return latest[1], latest[2]


def _package_artifact(sagemaker: Any, model_package_arn: str) -> str | None:
    token = None
    while True:
        page = sagemaker.list_artifacts(SourceUri=model_package_arn, **({"NextToken": token} if token else {}))
        for summary in page.get("ArtifactSummaries") or []:
            if summary.get("ArtifactType") == PACKAGE:
                return summary["ArtifactArn"]
        token = page.get("NextToken")
        if not token:
            return None


def _query(sagemaker: Any, start: str, direction: str, depth: int,
           types: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    vertices, edges, token = [], [], None
    while True:
        request: dict[str, Any] = {"StartArns": [start], "Direction": direction, "IncludeEdges": True,
                                   "MaxDepth": depth, "MaxResults": 50}
        if types:
            request["Filters"] = {"Types": types}
        if token:
            request["NextToken"] = token
        page = sagemaker.query_lineage(**request)
        vertices += page.get("Vertices") or []
        edges += page.get("Edges") or []
        token = page.get("NextToken")
        if not token:
            return vertices, edges


def _unique(edges: list[dict]) -> list[dict]:
    seen, kept = set(), []
    for edge in edges:
        key = (edge["SourceArn"], edge["DestinationArn"])
        if key not in seen:
            seen.add(key)
            kept.append(edge)
    return kept


def _first(by_type: dict[str, list[str]], entity_type: str) -> str | None:
    found = by_type.get(entity_type) or []
    return found[0] if found else None


def _is_missing(err: Exception) -> bool:
    error = (getattr(err, "response", None) or {}).get("Error") or {}
    code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code == "ValidationException" and bool(re.search(r"not found|does not exist|could not find", message, re.I)))


# -- printing -------------------------------------------------------------------------------------
def describe_for_people(lineage: dict) -> str:
    lines = [f"model package    {lineage['model_package_arn']} (group {lineage['model_package_group']}, "
             f"version {lineage['version']})"]
    dataset = lineage.get("dataset")
    if dataset:
        version = f"?versionId={dataset['version_id']}" if dataset.get("version_id") else " (no version id)"
        lines.append(f"data object      s3://{dataset['bucket']}/{dataset['key']}{version}")
    if lineage.get("manifest"):
        lines.append(f"manifest         {lineage['manifest']['uri']}")
    code = lineage.get("code")
    if code:
        extra = ", ".join(f"{label} {code[key]}" for label, key in (("digest", "image_digest"),
                                                                     ("code version", "code_version")) if code.get(key))
        lines.append(f"image/code       {code['image_uri']}" + (f" ({extra})" if extra else ""))
    if lineage.get("pipeline_execution"):
        lines.append(f"pipeline run     {lineage['pipeline_execution']['arn']}")
    training = lineage.get("training")
    if training:
        tuning = f" (best trial of tuning job {training['tuning_job_name']})" if training.get("tuning_job_name") else ""
        lines.append(f"trial            {training['training_job_name']}{tuning}")
        for name, value in training["hyperparameters"].items():
            lines.append(f"  {name} = {value}")
    for endpoint in lineage.get("endpoints") or []:
        state = "serving now" if endpoint["current"] else "replaced since"
        lines.append(f"endpoint         {endpoint['endpoint_name']} since {endpoint['since']} ({state})")
    for item in lineage.get("missing") or []:
        lines.append(f"missing          {item}")
    return "\n".join(lines)


def sagemaker_client(args: argparse.Namespace):
    import boto3

    if args.aws:
        return boto3.client("sagemaker")
    from local.cloud_file import find_running_cloud
    from local.cli.run import administrator_credentials

    info = find_running_cloud(args.state_dir)
    if info is None:
        raise NotAModelPackage(f"no local cloud is running for state dir {args.state_dir}; "
                               "start one with `mlops local up` (or use --aws)")
    return boto3.client("sagemaker", endpoint_url=info["endpoint_url"], region_name="us-east-1",
                        **administrator_credentials(info))


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from local.cli.common import EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USAGE
    from local.cli.run import RunError

    try:
        if not ARN_PATTERN.fullmatch(args.model_package_arn):
            raise NotAModelPackage(f"not a versioned model package ARN: {args.model_package_arn!r} "
                                   "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)")
        lineage = lineage_of(sagemaker_client(args), args.model_package_arn)
    except NotAModelPackage as err:
        print(f"mlops lineage: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (ClientError, BotoCoreError, RunError) as err:
        print(f"mlops lineage: {err}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    print(json.dumps(lineage) if args.json else describe_for_people(lineage), flush=True)
    return EXIT_OK
