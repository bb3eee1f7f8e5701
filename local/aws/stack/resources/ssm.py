"""AWS::SSM::Parameter."""
from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from local.aws.stack.provisioner import Provisioner


def parameter(p: Provisioner, logical_id: str, definition: dict) -> None:
    props = p.props(definition)
    name = props.get("Name") or p.physical_name(logical_id, 1000)
    p.client("ssm").put_parameter(Name=name, Value=str(props["Value"]), Type=props.get("Type", "String"),
                                  Overwrite=True)
    p.add(logical_id, definition["Type"], name, Name=name, Value=str(props["Value"]),
          Arn=p.arn("ssm", f"parameter{name if name.startswith('/') else '/' + name}"))
