"""scripts/publish.py: the values the stack needs before it exists (jobs image, substituted pipeline
definition) reach ECR and S3 the same way every time, against a real moto server."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from scripts import publish
from scripts.publish import DeployConfig, PublishError, StackContext
from tests.infrastructure.test_security import ensure_tools

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
JOBS_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ray-mlops-dev-jobs-us-east-1"


def dev_config() -> DeployConfig:
    return publish.load_deploy_config("dev")


def test_samconfig_environments_are_read_with_their_overrides():
    for env in ("dev", "prod"):
        config = publish.load_deploy_config(env)
        assert config.stack_name == f"ray-mlops-{env}"
        assert config.region == "us-east-1"
        assert config.parameter_overrides["Environment"] == env
    with pytest.raises(PublishError, match="no environment 'staging'"):
        publish.load_deploy_config("staging")


def test_overrides_survive_sam_cli_parsing():
    """What we hand to `sam deploy --parameter-overrides` is read back identically by SAM CLI's own parser."""
    overrides = {
        "ApproverEmails": "ana@example.com, bo@example.com",
        "NotificationEmail": "",
        "SlackApprovers": 'U1=ana@example.com',
        "EndpointName": 'quote"d',
        "JobImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ray-mlops-dev-jobs:jobs-0123456789abcdef",
    }
    rendered = publish.render_parameter_overrides(overrides)
    script = (
        "import json, sys\n"
        "from samcli.cli.types import CfnParameterOverridesType\n"
        "print(json.dumps(CfnParameterOverridesType().convert(tuple(json.loads(sys.argv[1])), None, None)))\n"
    )
    result = subprocess.run([str(ensure_tools() / "python"), "-c", script, json.dumps(rendered)],
                            capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout) == overrides
    assert publish.parse_parameter_overrides(" ".join(rendered[:3])) == dict(list(overrides.items())[:3])


def test_definition_gets_the_jobs_role_of_the_stack_and_a_content_addressed_key():
    template = publish.load_template()
    dev = StackContext("ray-mlops-dev", "us-east-1", ACCOUNT)
    definitions = {d.logical_id: d for d in publish.pipeline_definitions(template, dev)}
    definition = definitions["TrainingPipeline"]
    # Each pipeline's key goes to the parameter its PipelineDefinitionS3Location names.
    assert {d.logical_id: d.key_parameter for d in definitions.values()} == {
        "TrainingPipeline": "PipelineDefinitionKey", "ScoringPipeline": "ScoringPipelineDefinitionKey",
        "DriftMonitorPipeline": "DriftPipelineDefinitionKey"}
    for logical_id, file in (("ScoringPipeline", "scoring_pipeline_definition.json"),
                             ("DriftMonitorPipeline", "drift_pipeline_definition.json")):
        raw = (ROOT / "jobs" / file).read_text()
        assert definitions[logical_id].text == raw.replace("${PipelineJobsRoleArn}", JOBS_ROLE_ARN) != raw
        assert definitions[logical_id].key != definition.key
    assert "${PipelineJobsRoleArn}" not in definition.text
    raw = (ROOT / "jobs" / "pipeline_definition.json").read_text()
    assert definition.text == raw.replace("${PipelineJobsRoleArn}", JOBS_ROLE_ARN)
    assert json.loads(definition.text)  # still JSON
    assert definition.key == f"pipeline/definition-{hashlib.sha256(definition.text.encode()).hexdigest()}.json"
    [prod] = [d for d in publish.pipeline_definitions(template, StackContext("ray-mlops-prod", "eu-west-1", ACCOUNT))
              if d.logical_id == "TrainingPipeline"]
    assert "role/ray-mlops-prod-jobs-eu-west-1" in prod.text
    assert prod.key != definition.key  # another role, another object: stacks never share a definition


def test_two_pipelines_cannot_share_a_definition_key_parameter():
    template = publish.load_template()
    template["Resources"]["DriftMonitorPipeline"]["Properties"]["PipelineDefinition"]["PipelineDefinitionS3Location"]["Key"] = {"Ref": "PipelineDefinitionKey"}
    with pytest.raises(PublishError, match="same parameter"):
        publish.pipeline_definitions(template, StackContext("s", "us-east-1", ACCOUNT))


def test_substitutions_only_use_values_known_before_the_stack_exists():
    template = publish.load_template()
    resolver = publish.PreDeployResolver(template, StackContext("s", "us-east-1", ACCOUNT))
    assert resolver.resolve({"Fn::GetAtt": ["PipelineJobsRole", "Arn"]}) == f"arn:aws:iam::{ACCOUNT}:role/s-jobs-us-east-1"
    with pytest.raises(PublishError, match="only known after the stack exists"):
        resolver.resolve({"Fn::GetAtt": ["PipelineExecutionRole", "Arn"]})  # CloudFormation names that one
    with pytest.raises(PublishError, match="not known before"):
        resolver.resolve({"Ref": "DataBucket"})
    with pytest.raises(PublishError, match="not JSON"):
        publish.substitute_definition('{"RoleArn": ${PipelineJobsRoleArn}}', {"PipelineJobsRoleArn": "arn"})


def test_deployment_bucket_is_private_encrypted_versioned_and_tls_only(aws):
    s3 = boto3.client("s3")
    publish.ensure_deployment_bucket(s3, "deploy-bucket", "us-east-1")
    publish.ensure_deployment_bucket(s3, "deploy-bucket", "us-east-1")  # again: settings re-applied, no error
    assert s3.get_bucket_versioning(Bucket="deploy-bucket")["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket="deploy-bucket")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all(s3.get_public_access_block(Bucket="deploy-bucket")["PublicAccessBlockConfiguration"].values())
    [statement] = json.loads(s3.get_bucket_policy(Bucket="deploy-bucket")["Policy"])["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == ["arn:aws:s3:::deploy-bucket", "arn:aws:s3:::deploy-bucket/*"]


def test_publish_uploads_the_definition_once_and_returns_every_override(aws):
    # moto applies bucket policies without their conditions, so the TLS-only deny would deny all.
    image = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ray-mlops-dev-jobs:given"
    first = publish.publish(dev_config(), image_uri=image, extra_overrides={"NotificationEmail": "ops@example.com"},
                            tls_only=False)
    bucket = f"ray-mlops-dev-deploy-{ACCOUNT}-us-east-1"
    assert first.bucket == bucket
    definition, drift, scoring = first.definitions
    assert [d.logical_id for d in first.definitions] == ["TrainingPipeline", "DriftMonitorPipeline", "ScoringPipeline"]
    assert first.parameter_overrides == {
        **dev_config().parameter_overrides,
        "NotificationEmail": "ops@example.com",
        "JobImageUri": image,
        "PipelineDefinitionBucket": bucket,
        "PipelineDefinitionKey": definition.key,
        "DriftPipelineDefinitionKey": drift.key,
        "ScoringPipelineDefinitionKey": scoring.key,
    }
    s3 = boto3.client("s3")
    for each in (definition, drift):
        stored = s3.get_object(Bucket=bucket, Key=each.key)["Body"].read().decode()
        assert stored == each.text and JOBS_ROLE_ARN in stored
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    second = publish.publish(dev_config(), image_uri=image, tls_only=False)
    assert second.parameter_overrides["PipelineDefinitionKey"] == definition.key
    versions = s3.list_object_versions(Bucket=bucket, Prefix="pipeline/")["Versions"]
    assert len(versions) == 3  # the same definitions are not uploaded again


def copy_image_context(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "jobs", root / "jobs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def test_image_tag_follows_the_build_context(tmp_path):
    root = copy_image_context(tmp_path)
    tag = publish.image_tag(root)
    assert tag.startswith("jobs-") and len(tag) == 21
    (root / "jobs" / "__pycache__").mkdir(exist_ok=True)
    (root / "jobs" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert publish.image_tag(root) == tag  # caches are not part of the image
    (root / "jobs" / "serve.py").write_text((root / "jobs" / "serve.py").read_text() + "\n# changed\n")
    assert publish.image_tag(root) != tag


def test_image_is_built_once_then_reused_and_never_without_docker(aws, tmp_path):
    root = copy_image_context(tmp_path)
    ecr = boto3.client("ecr")
    with pytest.raises(PublishError, match="Docker is not usable here.*--image-uri"):
        publish.publish_image(ecr, "ray-mlops-dev", root, docker_available=lambda: False)
    repository = ecr.describe_repositories(repositoryNames=["ray-mlops-dev-jobs"])["repositories"][0]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert ecr.describe_images(repositoryName="ray-mlops-dev-jobs")["imageDetails"] == []

    built = []

    def push_to_registry(client, uri, context_root):
        # What `docker push` leaves behind: a manifest under the tag.
        built.append(uri)
        client.put_image(repositoryName="ray-mlops-dev-jobs", imageTag=uri.rsplit(":", 1)[1],
                         imageManifest=json.dumps({
                             "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                             "config": {"digest": "sha256:" + "0" * 64}}))

    uri = publish.publish_image(ecr, "ray-mlops-dev", root, docker_available=lambda: True, build_and_push=push_to_registry)
    assert uri == f"{repository['repositoryUri']}:{publish.image_tag(root)}"
    assert built == [uri]
    again = publish.publish_image(ecr, "ray-mlops-dev", root, docker_available=lambda: False, build_and_push=push_to_registry)
    assert again == uri and built == [uri]


def test_docker_and_sam_commands():
    uri = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ray-mlops-dev-jobs:jobs-0123456789abcdef"
    build, push = publish.docker_commands(uri, ROOT)
    assert build[:5] == ["docker", "build", "--platform", "linux/amd64", "--provenance=false"]
    assert build[-3:] == ["-t", uri, str(ROOT)] and str(ROOT / "jobs" / "Dockerfile") in build
    assert push == ["docker", "push", uri]
    command = publish.sam_deploy_command("sam", dev_config(), {"A": "1", "B": "x y"}, ["--no-confirm-changeset"])
    assert command == ["sam", "deploy", "--config-env", "dev", "--config-file", str(ROOT / "samconfig.toml"),
                       "--parameter-overrides", 'A="1"', 'B="x y"', "--no-confirm-changeset"]
