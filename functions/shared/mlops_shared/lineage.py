"""The lineage of a model package, recorded through SageMaker's lineage API (ML Lineage Tracking).

What produced a package, as SageMaker entities and associations (docs/lineage.md):

    DataSet artifact (s3://bucket/key, S3Version)  ──ContributedTo──►  Manifest artifact (Ingest's manifest)
    Manifest artifact ──ContributedTo──► ModelTraining action (the best trial; its hyperparameters)
    Image artifact (the jobs image the trial ran)  ──ContributedTo──►  ModelTraining action
    ModelTraining action ──Produced──► ModelPackage artifact (SourceUri = the package ARN)
    SageMakerPipelineExecution context ──Produced──► ModelPackage artifact
    ModelPackage artifact ──ContributedTo──► ModelDeployment action ──AssociatedWith──► Endpoint context

`record_package_lineage` writes the first five when the package is registered (the record-lineage
function, on the registry's "Model Package State Change" event); `record_deployment` the last when
a deployment has finished (the deploy-notify function). Both are idempotent: each entity is
looked up before it is created (artifacts by source, actions and contexts by name) and an
association already there is left alone, so the same event twice gives the same graph.

A deployment is an action of its own, so an endpoint that serves a newer package still shows
the older one's deployment and its time; the endpoint's latest deployment is the current one.

Facts the package does not lead to are left out and named in the result's `missing`, never
invented (a package published by hand has no pipeline execution). Standard library and boto3 only.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .aws import error_code, is_not_found, parse_s3_uri
from .dataset_reference import read_reference

DATASET_TYPE = "DataSet"
MANIFEST_TYPE = "Manifest"
IMAGE_TYPE = "Image"
PACKAGE_TYPE = "ModelPackage"
TRAINING_TYPE = "ModelTraining"
EXECUTION_TYPE = "SageMakerPipelineExecution"
DEPLOYMENT_TYPE = "ModelDeployment"
ENDPOINT_TYPE = "Endpoint"
CONTRIBUTED_TO, PRODUCED, ASSOCIATED_WITH = "ContributedTo", "Produced", "AssociatedWith"
# Properties of the training action that are not hyperparameters.
TRAINING_JOB_PROPERTY, TUNING_JOB_PROPERTY = "training_job_name", "tuning_job_name"
HYPERPARAMETER_PREFIX = "hyperparameter:"
MANIFEST_FILE = "manifest.json"
# ActionName/ContextName: [a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,119}
_NAME_MAX = 120
_NOT_NAME = re.compile(r"[^a-zA-Z0-9-]+")


def entity_name(prefix: str, text: str) -> str:
    """A lineage name from readable text; a digest of the text keeps names unique when it is cut."""
    name = f"{prefix}-{_NOT_NAME.sub('-', text)}".strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) > _NAME_MAX:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        name = f"{name[:_NAME_MAX - 17].rstrip('-')}-{digest}"
    return name


def image_digest(image_uri: str | None) -> str | None:
    """`sha256:...` of a digest-pinned image URI (`repo@sha256:...`), else None."""
    if image_uri and "@" in image_uri:
        return image_uri.rsplit("@", 1)[1]
    return None


def image_tag(image_uri: str | None) -> str | None:
    """The tag of `repo:tag[@digest]` (how this project names code versions), else None."""
    if not image_uri:
        return None
    without_digest = image_uri.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


@dataclass
class Recorded:
    """What one recording wrote or found: ARNs by role, and what it could not find, in words."""

    arns: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"arns": dict(self.arns), "missing": list(self.missing)}


class LineageWriter:
    """Get-or-create of lineage entities and associations on one SageMaker client."""

    def __init__(self, sagemaker: Any):
        self.sagemaker = sagemaker

    def artifact(self, source_uri: str, artifact_type: str, source_types: list[dict] | None = None,
                 properties: dict[str, str] | None = None, name: str | None = None) -> str:
        existing = self.find_artifact(source_uri, artifact_type, source_types)
        if existing:
            return existing
        source: dict[str, Any] = {"SourceUri": source_uri}
        if source_types:
            source["SourceTypes"] = source_types
        request: dict[str, Any] = {"Source": source, "ArtifactType": artifact_type}
        if properties:
            request["Properties"] = _properties(properties)
        if name:
            request["ArtifactName"] = name
        try:
            return self.sagemaker.create_artifact(**request)["ArtifactArn"]
        except Exception as err:  # created meanwhile by a concurrent delivery of the same event
            found = self.find_artifact(source_uri, artifact_type, source_types) if error_code(err) == "ValidationException" else None
            if found:
                return found
            raise

    def find_artifact(self, source_uri: str, artifact_type: str | None = None,
                      source_types: list[dict] | None = None) -> str | None:
        wanted = _source_types_key(source_types)
        for summary in _pages(self.sagemaker.list_artifacts, "ArtifactSummaries", SourceUri=source_uri):
            if artifact_type and summary.get("ArtifactType") != artifact_type:
                continue
            if source_types is not None and _source_types_key((summary.get("Source") or {}).get("SourceTypes")) != wanted:
                continue
            return summary["ArtifactArn"]
        return None

    def context(self, name: str, context_type: str, source_uri: str, properties: dict[str, str] | None = None,
                description: str | None = None) -> str:
        return self._named("context", name, context_type, source_uri, properties, description)

    def action(self, name: str, action_type: str, source_uri: str, properties: dict[str, str] | None = None,
               description: str | None = None, status: str = "Completed") -> str:
        return self._named("action", name, action_type, source_uri, properties, description, status)

    def _named(self, kind: str, name: str, entity_type: str, source_uri: str, properties: dict[str, str] | None,
               description: str | None, status: str | None = None) -> str:
        key = kind.capitalize()
        describe = getattr(self.sagemaker, f"describe_{kind}")
        try:
            return describe(**{f"{key}Name": name})[f"{key}Arn"]
        except Exception as err:
            if not is_not_found(err):
                raise
        request: dict[str, Any] = {f"{key}Name": name, f"{key}Type": entity_type, "Source": {"SourceUri": source_uri}}
        if properties:
            request["Properties"] = _properties(properties)
        if description:
            request["Description"] = description[:3072]
        if status:
            request["Status"] = status
        try:
            return getattr(self.sagemaker, f"create_{kind}")(**request)[f"{key}Arn"]
        except Exception as err:
            if error_code(err) == "ValidationException" and "exist" in str(err).lower():
                return describe(**{f"{key}Name": name})[f"{key}Arn"]
            raise

    def associate(self, source_arn: str, destination_arn: str, association_type: str) -> None:
        try:
            self.sagemaker.add_association(SourceArn=source_arn, DestinationArn=destination_arn,
                                           AssociationType=association_type)
        except Exception as err:  # the pair is there already (a second delivery of the event)
            if not (error_code(err) == "ValidationException" and "exist" in str(err).lower()):
                raise


def package_artifact(writer: LineageWriter, package: dict) -> str:
    return writer.artifact(package["ModelPackageArn"], PACKAGE_TYPE, properties={
        "model_package_group": package.get("ModelPackageGroupName") or "",
        "version": str(package.get("ModelPackageVersion") or ""),
    })


def record_package_lineage(sagemaker: Any, s3: Any, model_package_arn: str) -> Recorded:
    """Records what produced `model_package_arn` (see the module docstring); returns what it wrote."""
    writer = LineageWriter(sagemaker)
    recorded = Recorded()
    package = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    package_arn = recorded.arns["model_package"] = package_artifact(writer, package)

    dataset_arn = None
    reference_uri = (package.get("CustomerMetadataProperties") or {}).get("dataset_reference")
    if reference_uri:
        reference = read_reference(s3, reference_uri)
        # The object version when the bucket is versioned (ours is), else its ETag: what S3 identifies it by.
        if reference.version_id:
            source_types = [{"SourceIdType": "S3Version", "Value": reference.version_id}]
        elif reference.etag:
            source_types = [{"SourceIdType": "S3ETag", "Value": reference.etag}]
        else:
            source_types = []
        dataset_arn = recorded.arns["dataset"] = writer.artifact(
            reference.s3_uri, DATASET_TYPE, source_types=source_types,
            properties={"bucket": reference.bucket, "key": reference.key, "version_id": reference.version_id or "",
                        "etag": reference.etag or "", "dataset_reference": reference_uri})
    else:
        recorded.missing.append("the package names no dataset_reference: the data object is unknown")

    execution_arn = (package.get("MetadataProperties") or {}).get("GeneratedBy")
    if not execution_arn or ":pipeline/" not in execution_arn:
        recorded.missing.append("the package was not generated by a pipeline execution (MetadataProperties.GeneratedBy)")
        if dataset_arn:
            writer.associate(dataset_arn, package_arn, CONTRIBUTED_TO)
        return recorded
    execution_id = execution_arn.rsplit("/", 1)[-1]
    execution_context = recorded.arns["pipeline_execution"] = writer.context(
        entity_name("pipeline-execution", execution_id), EXECUTION_TYPE, execution_arn,
        properties={"pipeline_execution_arn": execution_arn})
    writer.associate(execution_context, package_arn, PRODUCED)

    steps = list(_pages(sagemaker.list_pipeline_execution_steps, "PipelineExecutionSteps",
                        PipelineExecutionArn=execution_arn))
    ingest = _manifest_job(sagemaker, steps)
    manifest_arn = None
    if ingest is not None:
        manifest_uri = _manifest_uri(ingest)
        manifest_arn = recorded.arns["manifest"] = writer.artifact(manifest_uri, MANIFEST_TYPE, properties={
            "processing_job_name": ingest["ProcessingJobName"]})
        if dataset_arn:
            writer.associate(dataset_arn, manifest_arn, CONTRIBUTED_TO)
    else:
        recorded.missing.append("no step of the execution wrote a manifest (the Ingest processing job)")
        if dataset_arn:
            writer.associate(dataset_arn, package_arn, CONTRIBUTED_TO)

    training = _best_training_job(sagemaker, steps)
    if training is None:
        recorded.missing.append("no tuning step of the execution has a best training job")
        if manifest_arn:
            writer.associate(manifest_arn, package_arn, CONTRIBUTED_TO)
        image_uri = ((ingest or {}).get("AppSpecification") or {}).get("ImageUri")
        training_arn = None
    else:
        job, tuning_job = training
        properties = {TRAINING_JOB_PROPERTY: job["TrainingJobName"], TUNING_JOB_PROPERTY: tuning_job or ""}
        properties.update({f"{HYPERPARAMETER_PREFIX}{k}": str(v) for k, v in (job.get("HyperParameters") or {}).items()})
        training_arn = recorded.arns["training"] = writer.action(
            entity_name("training", job["TrainingJobName"]), TRAINING_TYPE, job["TrainingJobArn"], properties)
        writer.associate(training_arn, package_arn, PRODUCED)
        if manifest_arn:
            writer.associate(manifest_arn, training_arn, CONTRIBUTED_TO)
        image_uri = (job.get("AlgorithmSpecification") or {}).get("TrainingImage") or \
            ((ingest or {}).get("AppSpecification") or {}).get("ImageUri")
    if image_uri:
        image_arn = recorded.arns["image"] = writer.artifact(image_uri, IMAGE_TYPE, properties={
            "image_uri": image_uri, "image_digest": image_digest(image_uri) or "",
            "code_version": image_tag(image_uri) or ""})
        writer.associate(image_arn, training_arn or package_arn, CONTRIBUTED_TO)
    else:
        recorded.missing.append("no job of the execution names its image")
    return recorded


def record_deployment(sagemaker: Any, endpoint_name: str, model_package_arn: str, deployment_name: str,
                      deployed_at: datetime | None = None) -> Recorded:
    """Records that `endpoint_name` serves `model_package_arn` since `deployed_at` (one action per
    deployment, named after it, so a retried notification records it once)."""
    writer = LineageWriter(sagemaker)
    recorded = Recorded()
    deployed_at = (deployed_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    package = sagemaker.describe_model_package(ModelPackageName=model_package_arn)
    package_arn = recorded.arns["model_package"] = package_artifact(writer, package)
    endpoint_arn = sagemaker.describe_endpoint(EndpointName=endpoint_name)["EndpointArn"]
    endpoint_context = recorded.arns["endpoint"] = writer.context(
        entity_name("endpoint", endpoint_name), ENDPOINT_TYPE, endpoint_arn, properties={"endpoint_name": endpoint_name})
    deployment = recorded.arns["deployment"] = writer.action(
        entity_name("deployment", deployment_name), DEPLOYMENT_TYPE, endpoint_arn,
        properties={"endpoint_name": endpoint_name, "model_package_arn": model_package_arn,
                    "deployed_at": deployed_at.isoformat()})
    writer.associate(package_arn, deployment, CONTRIBUTED_TO)
    writer.associate(deployment, endpoint_context, ASSOCIATED_WITH)
    return recorded


# -- reading what the pipeline execution ran --------------------------------------------------
def _manifest_job(sagemaker: Any, steps: list[dict]) -> dict | None:
    """The processing job of the execution with a `manifest` output (Ingest), described."""
    for step in steps:
        job_arn = ((step.get("Metadata") or {}).get("ProcessingJob") or {}).get("Arn")
        if not job_arn:
            continue
        job = sagemaker.describe_processing_job(ProcessingJobName=job_arn.rsplit("/", 1)[-1])
        outputs = (job.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        if any(o.get("OutputName") == "manifest" for o in outputs):
            return job
    return None


def _manifest_uri(job: dict) -> str:
    for output in (job.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
        if output.get("OutputName") == "manifest":
            uri = output["S3Output"]["S3Uri"].rstrip("/")
            parse_s3_uri(uri)  # an S3 URI, or a clear error
            return f"{uri}/{MANIFEST_FILE}"
    raise ValueError(f"processing job {job.get('ProcessingJobName')} has no manifest output")


def _best_training_job(sagemaker: Any, steps: list[dict]) -> tuple[dict, str | None] | None:
    for step in steps:
        tuning_arn = ((step.get("Metadata") or {}).get("TuningJob") or {}).get("Arn")
        if tuning_arn:
            name = tuning_arn.rsplit("/", 1)[-1]
            tuning = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
            best = (tuning.get("BestTrainingJob") or {}).get("TrainingJobName")
            if best:
                return sagemaker.describe_training_job(TrainingJobName=best), tuning.get("HyperParameterTuningJobName", name)
        job_arn = ((step.get("Metadata") or {}).get("TrainingJob") or {}).get("Arn")
        if job_arn:
            return sagemaker.describe_training_job(TrainingJobName=job_arn.rsplit("/", 1)[-1]), None
    return None


# -- helpers ------------------------------------------------------------------------------------
def _pages(call, key: str, **kwargs):
    token = None
    while True:
        page = call(**kwargs, **({"NextToken": token} if token else {}))
        yield from page.get(key) or []
        token = page.get("NextToken")
        if not token:
            return


def _source_types_key(source_types: list[dict] | None) -> str:
    return json.dumps(sorted((t.get("SourceIdType"), t.get("Value")) for t in source_types or []))


def _properties(values: dict[str, str]) -> dict[str, str]:
    """Lineage properties: at most 30 entries, keys and values of at most 2500 characters (actions'
    and contexts' LineageEntityParameters; artifacts allow longer values)."""
    items = [(str(k)[:2500], str(v)[:2500]) for k, v in values.items()]
    if len(items) > 30:
        raise ValueError(f"{len(items)} lineage properties: SageMaker keeps at most 30")
    return dict(items)
