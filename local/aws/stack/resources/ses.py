"""AWS::SES::EmailIdentity."""
from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def email_identity(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    identity = props["EmailIdentity"]
    ses = p.client("ses")
    if "@" in identity:
        ses.verify_email_identity(EmailAddress=identity)
    else:
        ses.verify_domain_identity(Domain=identity)
    p.add(logical_id, definition["Type"], identity, Name=identity)
