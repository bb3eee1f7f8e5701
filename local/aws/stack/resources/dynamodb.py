"""AWS::DynamoDB::Table and AWS::Serverless::SimpleTable."""
from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def table(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("TableName") or p.physical_name(logical_id, 255)
    ddb = p.client("dynamodb")
    kwargs = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if kwargs["BillingMode"] == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = {k: int(v) for k, v in (props.get("ProvisionedThroughput") or {
            "ReadCapacityUnits": 5, "WriteCapacityUnits": 5}).items()}
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
        if key in props:
            kwargs[key] = props[key]
    table = ddb.create_table(**kwargs)["TableDescription"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and str(ttl.get("Enabled", "false")).lower() == "true":
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": ttl["AttributeName"]})
    p.add(logical_id, definition["Type"], name, Arn=table["TableArn"], Name=name,
          StreamArn=table.get("LatestStreamArn"))


def simple_table(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
    type_code = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
    table = {"Type": "AWS::DynamoDB::Table", "Properties": {
        "TableName": props.get("TableName") or p.physical_name(logical_id, 255),
        "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": type_code}],
        "BillingMode": "PAY_PER_REQUEST",
    }}
    table(p, logical_id, table)
