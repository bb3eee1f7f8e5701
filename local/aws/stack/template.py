"""Reading `template.yaml` (CloudFormation/SAM YAML with its short-form intrinsics) into plain values."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def load_template(path: str | Path) -> dict:
    from cfnlint.decode import cfn_yaml

    return _plain(cfn_yaml.load(str(path)))


def loads_template(text: str) -> dict:
    from cfnlint.decode import cfn_yaml

    return _plain(cfn_yaml.loads(text))


def _plain(value: Any) -> Any:
    """cfn-lint's node classes carry line marks; plain dict/list/str are easier to copy and dump."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def json_text(value: Any) -> str:
    """A policy document or attribute the template gives as YAML: the JSON text the APIs want."""
    return value if isinstance(value, str) else json.dumps(value)
