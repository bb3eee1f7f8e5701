"""AWS's public SSM parameters (`/aws/service/...`) the template reads, and what the local face
answers for them.

On AWS, a template parameter of type `AWS::SSM::Parameter::Value<String>` whose value is a public
path resolves to what AWS stores there; locally no such parameter exists, so this is the one table
of the public paths the template uses and the value each gets here. A path the table does not know
fails provisioning with its name: add it here, with where AWS documents it.

The Powertools layer (Powertools for AWS Lambda (Python), "Lambda Layer" / "SSM Parameter Store"):
`/aws/service/powertools/python/<arch>/<runtime>/<version>` holds the ARN of the AWS-managed layer
`arn:aws:lambda:<region>:017000801446:layer:AWSLambdaPowertoolsPythonV3-<python3NN>-<arch>:<n>`, built
as `aws-lambda-powertools[all]==<version>` without boto3 and its dependencies. Locally the path gets
an ARN of that name in the local region whose layer version counts the versions published locally
(1 for the first), and the local Lambda runtime builds the layer from the version in the path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from local.aws.stack.model import ManagedLayer

POWERTOOLS_ACCOUNT = "017000801446"
POWERTOOLS_PATH = re.compile(
    r"/aws/service/powertools/python/(?P<arch>x86_64|arm64)/(?P<runtime>python3\.\d+)/(?P<version>\d+\.\d+\.\d+)")
# What the Powertools layer's build removes: the runtime ships boto3 and its dependencies.
RUNTIME_SDK_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "python-dateutil", "urllib3", "six", "jmespath")


class UnknownPublicParameter(LookupError):
    pass


def powertools_parameter_path(arch: str, runtime: str, version: str) -> str:
    return f"/aws/service/powertools/python/{arch}/{runtime}/{version}"


@dataclass
class PublicParameters:
    """Resolves public parameter paths; remembers the layers it published, by ARN."""

    region: str
    layers: dict[str, ManagedLayer] = field(default_factory=dict)

    def resolve(self, path: str) -> str:
        match = POWERTOOLS_PATH.fullmatch(path)
        if match:
            return self._powertools_layer(match["arch"], match["runtime"], match["version"]).arn
        raise UnknownPublicParameter(
            f"public SSM parameter {path} has no local value; add it to {__name__} (with where AWS documents it)")

    def layer(self, arn: str) -> ManagedLayer | None:
        return self.layers.get(arn)

    def _powertools_layer(self, arch: str, runtime: str, version: str) -> ManagedLayer:
        packages = (f"aws-lambda-powertools[all]=={version}",)
        name = f"AWSLambdaPowertoolsPythonV3-{runtime.replace('.', '')}-{arch}"
        for layer in self.layers.values():
            if layer.packages == packages and f":layer:{name}:" in layer.arn:
                return layer
        published = sum(f":layer:{name}:" in arn for arn in self.layers)
        arn = f"arn:aws:lambda:{self.region}:{POWERTOOLS_ACCOUNT}:layer:{name}:{published + 1}"
        self.layers[arn] = ManagedLayer(arn, packages, RUNTIME_SDK_DISTRIBUTIONS)
        return self.layers[arn]
