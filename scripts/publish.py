"""Publish what the stack needs before CloudFormation can create it, then (optionally) deploy it.

The stack takes two things it cannot build itself:

* the jobs image (``jobs/Dockerfile``) in ECR — parameter ``JobImageUri``;
* each pipeline definition (``Metadata.Mlops.DefinitionFile`` of every ``AWS::SageMaker::Pipeline``)
  with its ``Metadata.Mlops.Substitutions`` applied, in S3 — parameter ``PipelineDefinitionBucket``
  and the key parameter its ``PipelineDefinitionS3Location.Key`` names (``PipelineDefinitionKey``,
  ``ScoringPipelineDefinitionKey``, ``DriftPipelineDefinitionKey``).

This script resolves the substitutions from the template itself (the jobs role has a fixed name, so
its ARN is known before the stack exists), uploads the definition to a content-addressed key
``pipeline/definition-<sha256>.json`` in a per-stack deployment bucket (created encrypted, versioned,
private and TLS-only), makes sure the image tagged with the hash of its build context is in ECR
(reused when present, otherwise built and pushed with Docker), and runs ``sam deploy --config-env ENV``
with those values merged into the environment's ``parameter_overrides`` (SAM CLI replaces, not
merges, the configured overrides when any are given on the command line).

    python scripts/publish.py --config-env dev                  # publish, print the overrides
    python scripts/publish.py --config-env dev --deploy --sam .venv-tools/bin/sam
    python scripts/publish.py --config-env prod --image-uri 1234.dkr.ecr.../repo:tag --deploy ...
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from mlops_shared.aws import is_not_found

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
DOCKERFILE = "jobs/Dockerfile"
# What the Dockerfile copies: a change to any of these files is a new image.
IMAGE_CONTEXT_DIRS = ("jobs", "functions/shared/mlops_shared")
IMAGE_CONTEXT_IGNORED = re.compile(r"(^|/)(__pycache__/|[^/]+\.pyc$)")
DEFINITION_KEY_PREFIX = "pipeline/definition-"
IMAGES_KEPT = 30


class PublishError(Exception):
    """Something an operator must fix; the message says what."""


# -- samconfig.toml -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DeployConfig:
    """The deploy settings of one ``--config-env`` of samconfig.toml."""

    config_env: str
    stack_name: str
    region: str
    parameter_overrides: dict[str, str] = field(default_factory=dict)


def parse_parameter_overrides(value: str | list[str] | None) -> dict[str, str]:
    """``Key=Value Key2="a b"`` (string or list of such strings, samconfig's two forms) -> dict."""
    if not value:
        return {}
    items = value if isinstance(value, list) else [value]
    result: dict[str, str] = {}
    for item in items:
        for token in shlex.split(item):
            key, sep, val = token.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z0-9]+", key):
                raise PublishError(f"parameter override {token!r} is not Key=Value")
            result[key] = val
    return result


def load_deploy_config(config_env: str, samconfig: Path = SAMCONFIG) -> DeployConfig:
    config = tomllib.loads(samconfig.read_text())
    if config_env not in config:
        raise PublishError(f"{samconfig.name} has no environment {config_env!r} (have: {', '.join(sorted(k for k in config if k != 'version'))})")
    env = config[config_env]
    deploy = {**env.get("global", {}).get("parameters", {}), **env.get("deploy", {}).get("parameters", {})}
    for required in ("stack_name", "region"):
        if not deploy.get(required):
            raise PublishError(f"[{config_env}.deploy.parameters] of {samconfig.name} has no {required}")
    return DeployConfig(
        config_env=config_env,
        stack_name=deploy["stack_name"],
        region=deploy["region"],
        parameter_overrides=parse_parameter_overrides(deploy.get("parameter_overrides")),
    )


def render_parameter_overrides(overrides: dict[str, str]) -> list[str]:
    """One ``Key="value"`` argument per parameter, quoted the way SAM CLI unquotes them."""
    return [f'{key}="{value.replace(chr(34), chr(92) + chr(34))}"' for key, value in overrides.items()]


# -- template: the definition file and its substitutions ---------------------------------------

def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(path))))


@dataclass(frozen=True)
class StackContext:
    """What CloudFormation would know at deploy time, before any resource exists."""

    stack_name: str
    region: str
    account_id: str
    partition: str = "aws"
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
        }


class PreDeployResolver:
    """Resolves the intrinsics whose values are known before the stack exists (Ref to parameters and
    pseudo parameters, Sub, and GetAtt Arn of an IAM role with a fixed RoleName); refuses the rest."""

    def __init__(self, template: dict[str, Any], context: StackContext):
        self.template = template
        self.context = context

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return self.ref(node["Ref"])
        if set(node) == {"Fn::Sub"}:
            return self.sub(node["Fn::Sub"])
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
            return self.get_att(logical_id, attribute)
        if set(node) == {"Fn::Join"}:
            delimiter, values = node["Fn::Join"]
            return delimiter.join(str(v) for v in self.resolve(values))
        return {k: self.resolve(v) for k, v in node.items()}

    def ref(self, name: str) -> str:
        if name in self.context.pseudo:
            return self.context.pseudo[name]
        parameters = self.template.get("Parameters", {})
        if name in parameters:
            if name in self.context.parameters:
                return str(self.context.parameters[name])
            if "Default" in parameters[name]:
                return str(parameters[name]["Default"])
            raise PublishError(f"parameter {name} has no value (give it in parameter_overrides)")
        raise PublishError(f"Ref {name}: a resource's id is not known before the stack exists")

    def sub(self, value: str | list) -> str:
        text, variables = (value, {}) if isinstance(value, str) else (value[0], self.resolve(value[1]))

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource = self.template.get("Resources", {}).get(logical_id)
        if resource is None:
            raise PublishError(f"GetAtt {logical_id}.{attribute}: no such resource")
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role" and attribute == "Arn" and "RoleName" in props:
            path = props.get("Path", "/")
            return f"arn:{self.context.partition}:iam::{self.context.account_id}:role{path}{self.resolve(props['RoleName'])}"
        raise PublishError(
            f"GetAtt {logical_id}.{attribute} is only known after the stack exists; substitutions must "
            "use values known before (parameters, pseudo parameters, a role with a fixed RoleName)"
        )


DEFAULT_KEY_PARAMETER = "PipelineDefinitionKey"


@dataclass(frozen=True)
class PipelineDefinition:
    logical_id: str
    text: str
    # The stack parameter naming the definition's key (the `Ref` of PipelineDefinitionS3Location.Key).
    key_parameter: str = DEFAULT_KEY_PARAMETER

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def key(self) -> str:
        return f"{DEFINITION_KEY_PREFIX}{self.sha256}.json"


def pipeline_definitions(template: dict[str, Any], context: StackContext, root: Path = ROOT) -> list[PipelineDefinition]:
    """The substituted definition of every pipeline whose definition comes from a file."""
    resolver = PreDeployResolver(template, context)
    definitions = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::SageMaker::Pipeline":
            continue
        mlops = (resource.get("Metadata") or {}).get("Mlops") or {}
        if not mlops.get("DefinitionFile"):
            continue
        text = (root / mlops["DefinitionFile"]).read_text()
        substitutions = {name: resolver.resolve(value) for name, value in (mlops.get("Substitutions") or {}).items()}
        location = ((resource.get("Properties") or {}).get("PipelineDefinition") or {}).get("PipelineDefinitionS3Location") or {}
        key_ref = location.get("Key")
        key_parameter = key_ref.get("Ref") if isinstance(key_ref, dict) else None
        definitions.append(PipelineDefinition(logical_id, substitute_definition(text, substitutions),
                                              key_parameter or DEFAULT_KEY_PARAMETER))
    if not definitions:
        raise PublishError("the template has no AWS::SageMaker::Pipeline with Metadata.Mlops.DefinitionFile")
    parameters = [d.key_parameter for d in definitions]
    if len(set(parameters)) != len(parameters):
        raise PublishError("two pipelines take their definition key from the same parameter "
                           f"({', '.join(parameters)}): give each its own parameter in PipelineDefinitionS3Location.Key")
    return definitions


def substitute_definition(text: str, substitutions: dict[str, str]) -> str:
    """Replaces each ``${Name}`` of ``substitutions``; the result must be JSON with none of them left."""
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", str(value))
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise PublishError(f"the substituted pipeline definition is not JSON: {error}") from error
    return text


# -- AWS: deployment bucket, definition upload, ECR image --------------------------------------

def deployment_bucket_name(stack_name: str, account_id: str, region: str) -> str:
    name = f"{stack_name}-deploy-{account_id}-{region}".lower()
    if len(name) > 63:
        raise PublishError(f"bucket name {name!r} is longer than 63 characters; pass --bucket")
    return name


def ensure_deployment_bucket(s3, bucket: str, region: str, partition: str = "aws", *, tls_only: bool = True) -> None:
    """Creates the bucket if it does not exist, and (always) applies the security settings.
    ``tls_only=False`` leaves out the deny-plain-HTTP policy, for S3 emulators that evaluate bucket
    policies without their conditions (moto), where it would deny every request."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if not is_not_found(error):
            raise PublishError(f"bucket {bucket} exists but is not usable by these credentials: {error}") from error
        kwargs: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
    })
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}],
    })
    # Versioned so that a rollback of the stack still finds the definition it was created from.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if tls_only:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deployment_bucket_policy(bucket, partition)))


def deployment_bucket_policy(bucket: str, partition: str = "aws") -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:{partition}:s3:::{bucket}", f"arn:{partition}:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    }


def upload_definition(s3, bucket: str, definition: PipelineDefinition) -> bool:
    """Puts the definition at its content-addressed key unless it is there; True when uploaded."""
    try:
        s3.head_object(Bucket=bucket, Key=definition.key)
        return False
    except ClientError as error:
        if not is_not_found(error):
            raise
    s3.put_object(Bucket=bucket, Key=definition.key, Body=definition.text.encode(),
                  ContentType="application/json", Metadata={"sha256": definition.sha256})
    return True


def image_context_files(root: Path = ROOT) -> list[Path]:
    files = [root / DOCKERFILE]
    for directory in IMAGE_CONTEXT_DIRS:
        files += [p for p in (root / directory).rglob("*")
                  if p.is_file() and not IMAGE_CONTEXT_IGNORED.search(p.relative_to(root).as_posix())]
    return sorted(set(files))


def image_tag(root: Path = ROOT) -> str:
    """``jobs-<16 hex>``: the hash of every file the image is built from (same files, same tag)."""
    digest = hashlib.sha256()
    for path in image_context_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"jobs-{digest.hexdigest()[:16]}"


def repository_name(stack_name: str) -> str:
    return f"{stack_name}-jobs"


def ensure_repository(ecr, name: str) -> str:
    """Creates the ECR repository (scan on push, immutable tags, encrypted) if missing; its URI."""
    try:
        repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ClientError as error:
        if error.response["Error"]["Code"] != "RepositoryNotFoundException":
            raise
        repository = ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration={"encryptionType": "AES256"},
        )["repository"]
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps({"rules": [{
            "rulePriority": 1,
            "description": f"keep the {IMAGES_KEPT} most recent images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": IMAGES_KEPT},
            "action": {"type": "expire"},
        }]}))
    return repository["repositoryUri"]


def image_exists(ecr, repository: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] in {"ImageNotFoundException", "RepositoryNotFoundException"}:
            return False
        raise


def docker_commands(image_uri: str, root: Path = ROOT) -> list[list[str]]:
    """Build for x86_64 (the ml.* instances) without provenance attestations, which would make an OCI
    index SageMaker refuses; then push."""
    return [
        ["docker", "build", "--platform", "linux/amd64", "--provenance=false",
         "-f", str(root / DOCKERFILE), "-t", image_uri, str(root)],
        ["docker", "push", image_uri],
    ]


def docker_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def docker_build_and_push(ecr, image_uri: str, root: Path = ROOT) -> None:
    token = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    registry = image_uri.split("/", 1)[0]
    # The password goes through stdin, never the command line or the log.
    subprocess.run(["docker", "login", "--username", user, "--password-stdin", registry],
                   input=password.encode(), check=True, capture_output=True)
    for command in docker_commands(image_uri, root):
        print("+ " + shlex.join(command), file=sys.stderr)
        subprocess.run(command, check=True)


def publish_image(ecr, stack_name: str, root: Path = ROOT, *,
                  docker_available: Callable[[], bool] = docker_usable,
                  build_and_push: Callable[[Any, str, Path], None] = docker_build_and_push) -> str:
    """The URI of the jobs image for the current sources: reused from ECR, or built and pushed."""
    repository = repository_name(stack_name)
    uri = f"{ensure_repository(ecr, repository)}:{image_tag(root)}"
    if image_exists(ecr, repository, uri.rsplit(":", 1)[1]):
        print(f"image {uri} already in ECR", file=sys.stderr)
        return uri
    if not docker_available():
        raise PublishError(
            f"{uri} is not in ECR and Docker is not usable here. Build and push it on a machine with "
            f"Docker ({shlex.join(docker_commands(uri, root)[0])}; docker push {uri}) and run again, "
            "or pass --image-uri with an image you pushed."
        )
    build_and_push(ecr, uri, root)
    return uri


# -- the whole step --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    image_uri: str
    bucket: str
    definitions: list[PipelineDefinition]
    parameter_overrides: dict[str, str]


def publish(config: DeployConfig, *, session: boto3.session.Session | None = None, image_uri: str | None = None,
            bucket: str | None = None, extra_overrides: dict[str, str] | None = None, tls_only: bool = True,
            template_path: Path = TEMPLATE, root: Path = ROOT,
            docker_available: Callable[[], bool] = docker_usable,
            build_and_push: Callable[[Any, str, Path], None] = docker_build_and_push) -> Published:
    session = session or boto3.session.Session(region_name=config.region)
    identity = session.client("sts", region_name=config.region).get_caller_identity()
    account_id, partition = identity["Account"], identity["Arn"].split(":")[1]
    overrides = {**config.parameter_overrides, **(extra_overrides or {})}

    if image_uri is None:
        image_uri = publish_image(session.client("ecr", region_name=config.region), config.stack_name, root,
                                  docker_available=docker_available, build_and_push=build_and_push)
    overrides["JobImageUri"] = image_uri

    s3 = session.client("s3", region_name=config.region)
    bucket = bucket or deployment_bucket_name(config.stack_name, account_id, config.region)
    ensure_deployment_bucket(s3, bucket, config.region, partition, tls_only=tls_only)
    context = StackContext(config.stack_name, config.region, account_id, partition, overrides)
    definitions = pipeline_definitions(load_template(template_path), context, root)
    for definition in definitions:
        uploaded = upload_definition(s3, bucket, definition)
        print(f"definition of {definition.logical_id} s3://{bucket}/{definition.key} "
              f"({'uploaded' if uploaded else 'already there'})", file=sys.stderr)
        overrides[definition.key_parameter] = definition.key
    overrides["PipelineDefinitionBucket"] = bucket
    return Published(image_uri, bucket, definitions, overrides)


def sam_deploy_command(sam: str, config: DeployConfig, overrides: dict[str, str],
                       extra_args: Iterable[str] = ()) -> list[str]:
    return [sam, "deploy", "--config-env", config.config_env, "--config-file", str(SAMCONFIG),
            "--parameter-overrides", *render_parameter_overrides(overrides), *extra_args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-env", required=True, help="environment of samconfig.toml (dev, prod)")
    parser.add_argument("--image-uri", help="use this pushed jobs image instead of building one")
    parser.add_argument("--bucket", help="deployment bucket (default <stack>-deploy-<account>-<region>)")
    parser.add_argument("--parameter-override", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra stack parameter (repeatable); wins over samconfig.toml")
    parser.add_argument("--deploy", action="store_true", help="then run sam deploy with the overrides")
    parser.add_argument("--sam", default="sam", help="the sam executable (default: sam on PATH)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args, sam_args = parser.parse_known_args(argv)
    try:
        config = load_deploy_config(args.config_env)
        extra = parse_parameter_overrides(args.parameter_override)
        result = publish(config, image_uri=args.image_uri, bucket=args.bucket, extra_overrides=extra)
    except PublishError as error:
        print(f"publish: {error}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as error:
        print(f"publish: AWS refused or could not be reached: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"image_uri": result.image_uri, "bucket": result.bucket,
                          "definition_key": result.definitions[0].key,
                          "definition_keys": {d.key_parameter: d.key for d in result.definitions},
                          "parameter_overrides": result.parameter_overrides}, indent=2))
    else:
        print(" ".join(render_parameter_overrides(result.parameter_overrides)))
    if args.deploy:
        command = sam_deploy_command(args.sam, config, result.parameter_overrides, sam_args)
        print("+ " + shlex.join(command), file=sys.stderr)
        return subprocess.run(command, cwd=ROOT).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
