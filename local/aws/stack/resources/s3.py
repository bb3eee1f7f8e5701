"""AWS::S3::Bucket (versioning, EventBridge notifications, public access block) and AWS::S3::BucketPolicy."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from local.aws.stack.model import REGION, URL_SUFFIX

if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner

log = logging.getLogger(__name__)



def bucket(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("BucketName") or p.physical_name(logical_id, 63, lower=True)
    s3 = p.client("s3")
    s3.create_bucket(Bucket=name)
    status = (props.get("VersioningConfiguration") or {}).get("Status")
    if status:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    notification = props.get("NotificationConfiguration") or {}
    if str((notification.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled", "false")).lower() == "true":
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
    for key in set(notification) - {"EventBridgeConfiguration"}:
        log.info("%s: S3 %s not provisioned locally (use EventBridge)", logical_id, key)
    if props.get("PublicAccessBlockConfiguration"):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    p.add(logical_id, definition["Type"], name, Arn=f"arn:aws:s3:::{name}", Name=name,
          DomainName=f"{name}.s3.{URL_SUFFIX}", RegionalDomainName=f"{name}.s3.{REGION}.{URL_SUFFIX}")


def bucket_policy(p: Provisioner, logical_id: str, definition: dict) -> None:
    """The bucket's resource policy, kept on the stack for the strict face to evaluate. Not given to
    moto: its S3 applies bucket policies itself, without condition context (so `DenyInsecureTransport`
    would refuse every request), where the strict face evaluates them as IAM does."""
    props = p.props(definition)
    p.stack.resource_policies[f"arn:aws:s3:::{props['Bucket']}"] = {
        "PolicyName": f"bucket policy {logical_id}", "PolicyDocument": props["PolicyDocument"]}
    p.add(logical_id, definition["Type"], props["Bucket"])
