"""Who acts in the local cloud, with what credentials — as on AWS, never with all-powerful test keys.

* The **local administrator** (an IAM user with an administrator policy): the person at the keyboard.
  The CLI, the provisioner and the tests use its keys; `cloud.json` publishes them.
* **Role sessions** for everything that runs as a role: each Lambda handler (its function's role),
  each pipeline job (the jobs role SageMaker passes it), the pipeline service itself (the pipeline
  execution role), Feature Store's offline-store writes (the feature group's role), the model
  server (the model's execution role), the deploy state machine (its role), EventBridge delivering
  to a state machine (the rule target's role). A session is minted only when the role's trust policy
  lets the AWS service that assumes it do so (`sts:AssumeRole` with `aws:SourceAccount`), exactly as
  that service would be refused on AWS.
* The **local runtime** (an IAM user of its own): the local stand-ins acting on their own resources,
  as AWS services do internally (the event dispatcher reading its shadow queues, the registry
  describing a package to build its event, ...). Its calls are authenticated; IAM evaluation does
  not apply to them (docs/strict-face.md lists them).
"""
from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass

from local.aws.stack.model import ACCOUNT_ID, REGION
from local.aws.strict.iam_policy import AuthorizationRequest, Principal, evaluate

ADMINISTRATOR_USER = "mlops-local-administrator"
RUNTIME_USER = "mlops-local-runtime"
_ADMINISTRATOR_POLICY = {"Version": "2012-10-17",
                         "Statement": [{"Sid": "AdministratorAccess", "Effect": "Allow", "Action": "*", "Resource": "*"}]}
SESSION_SECONDS = 12 * 3600


class RoleNotAssumable(PermissionError):
    """The role's trust policy does not let that service assume it (or the role does not exist)."""


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def client_kwargs(self) -> dict[str, str]:
        kwargs = {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key}
        if self.session_token:
            kwargs["aws_session_token"] = self.session_token
        return kwargs

    def env(self) -> dict[str, str]:
        """Environment variables of a process using these credentials. Build the environment from
        one without AWS_* keys: a session token inherited from the parent must never ride along."""
        env = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        return env

    def to_json(self) -> dict[str, str | None]:
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key,
                "aws_session_token": self.session_token}


class Identities:
    """The principals of one local cloud; create after moto is reset (its IAM state is theirs)."""

    def __init__(self, account: str = ACCOUNT_ID, region: str = REGION):
        self.account, self.region = account, region
        self._sessions: dict[tuple[str, str, str], AwsCredentials] = {}
        self._lock = threading.Lock()
        self.administrator = self._user(ADMINISTRATOR_USER, _ADMINISTRATOR_POLICY)
        self.runtime = self._user(RUNTIME_USER, None)

    def _iam(self):
        from moto.iam.models import iam_backends

        return iam_backends[self.account]["aws"]

    def _user(self, name: str, policy: dict | None) -> AwsCredentials:
        iam = self._iam()
        iam.create_user(self.region, name, path="/mlops-local/", tags=[])
        if policy is not None:
            iam.put_user_policy(name, "AdministratorAccess", json.dumps(policy))
        key = iam.create_access_key(name)
        return AwsCredentials(key.access_key_id, key.secret_access_key)

    def is_runtime(self, principal: Principal) -> bool:
        return principal.kind == "user" and principal.name == RUNTIME_USER

    def role_credentials(self, role_arn: str, service: str, session_name: str | None = None,
                         source_arn: str | None = None) -> AwsCredentials:
        """A session of `role_arn` as AWS service `service` (e.g. "lambda.amazonaws.com") gets it."""
        session_name = (session_name or service.split(".", 1)[0])[:64]
        key = (role_arn, service, session_name)
        with self._lock:
            cached = self._sessions.get(key)
            if cached is not None:
                return cached
            self._check_trust(role_arn, service, source_arn)
            from moto.sts.models import sts_backends

            session = sts_backends[self.account]["aws"].assume_role(
                region_name=self.region, role_session_name=session_name, role_arn=role_arn, policy="",
                duration=SESSION_SECONDS, external_id="")
            credentials = AwsCredentials(session.access_key_id, session.secret_access_key, session.session_token)
            self._sessions[key] = credentials
            return credentials

    def _check_trust(self, role_arn: str, service: str, source_arn: str | None) -> None:
        from moto.iam.exceptions import NotFoundException

        try:
            role = self._iam().get_role_by_arn(role_arn)
        except NotFoundException:
            raise RoleNotAssumable(f"{service} cannot assume {role_arn}: the role does not exist") from None
        document = role.assume_role_policy_document
        trust = {"PolicyName": "trust policy",
                 "PolicyDocument": json.loads(document) if isinstance(document, str) else document}
        context = {"aws:sourceaccount": self.account}
        if source_arn:
            context["aws:sourcearn"] = source_arn
        decision = evaluate(AuthorizationRequest("sts:AssumeRole", role_arn, context), [], trust,
                            Principal.service(service, self.account))
        if not decision.allowed:
            raise RoleNotAssumable(f"{service} is not allowed to assume {role_arn}: its trust policy does not "
                                   f"let the service assume it ({decision.reason})")


def session_name(*parts: str) -> str:
    """A role session name (`[\\w+=,.@-]{2,64}`) from readable parts, unique per call."""
    import re

    stem = "-".join(re.sub(r"[^\w+=,.@-]+", "-", p).strip("-") for p in parts if p)[:55] or "session"
    return f"{stem}-{secrets.token_hex(4)}"


def aws_client(service: str, endpoint_url: str, credentials: AwsCredentials, *, region: str = REGION,
               max_attempts: int = 3, pool_size: int = 10):
    """A boto3 client of the local cloud acting with `credentials`."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint_url, region_name=region,
                        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                                      max_pool_connections=pool_size),
                        **credentials.client_kwargs())
