"""AWS::SecretsManager::Secret (GenerateSecretString honoured)."""
from __future__ import annotations

import json
import secrets
import string
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def secret(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("Name") or p.physical_name(logical_id, 256)
    value = props.get("SecretString")
    if value is None:
        value = generate_secret(props.get("GenerateSecretString") or {})
    kwargs = {"Name": name, "SecretString": value}
    if props.get("Description"):
        kwargs["Description"] = props["Description"]
    arn = p.client("secretsmanager").create_secret(**kwargs)["ARN"]
    p.add(logical_id, definition["Type"], arn, Arn=arn, Id=arn, Name=name)


def generate_secret(spec: dict) -> str:
    length = int(spec.get("PasswordLength", 32))
    excluded = set(spec.get("ExcludeCharacters", ""))
    alphabet = string.ascii_letters + string.digits
    if str(spec.get("ExcludePunctuation", "false")).lower() != "true":
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    alphabet = "".join(c for c in alphabet if c not in excluded)
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    if spec.get("SecretStringTemplate") and spec.get("GenerateStringKey"):
        document = json.loads(spec["SecretStringTemplate"])
        document[spec["GenerateStringKey"]] = value
        return json.dumps(document)
    return value
