"""CloudFormation intrinsic functions, resolved against parameters, conditions and the resources
provisioned so far: Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split, Fn::If and the
condition functions, Fn::Base64, Fn::GetAZs, Fn::FindInMap; `references` finds what a fragment
depends on (for the creation order); `substitute` fills `${Name}` placeholders of definition files.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from local.aws.stack.model import PARTITION, URL_SUFFIX, ProvisionError, Stack

# Marker for AWS::NoValue: removed from the dict/list that holds it after resolution.
_NO_VALUE = object()

_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")

# ------------------------------------------------------------------------------------------------
# Intrinsic functions
# ------------------------------------------------------------------------------------------------
class Resolver:
    """Resolves intrinsics against parameters, conditions and already-provisioned resources."""

    def __init__(self, stack: Stack, template: dict, api_url_rewrites: dict[str, str] | None = None):
        self.stack = stack
        self.template = template
        self.conditions: dict[str, bool] = {}
        self._api_url_rewrites = api_url_rewrites or {}
        for name in template.get("Conditions") or {}:
            self.condition(name)

    # pseudo parameters and parameters
    def pseudo(self, name: str) -> Any:
        stack = self.stack
        return {
            "AWS::StackName": stack.name,
            "AWS::Region": stack.region,
            "AWS::AccountId": stack.account_id,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackId": f"arn:aws:cloudformation:{stack.region}:{stack.account_id}:stack/{stack.name}/local",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": _NO_VALUE,
        }.get(name, None)

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            value = self.pseudo(name)
            if value is None:
                raise ProvisionError(f"unknown pseudo parameter {name}")
            return value
        if name in self.stack.parameters:
            return self.stack.parameters[name]
        if name in self.stack.resources:
            return self.stack.resources[name].ref
        if name in self.stack.skipped:
            # Not provisioned locally (a dashboard, say): an Output may still name it; give the
            # physical name CloudFormation would generate rather than fail the whole stack.
            return f"{self.stack.name}-{name}"
        raise ProvisionError(f"Ref to {name!r}, which is neither a parameter nor a provisioned resource")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        resource = self.stack.resources.get(logical_id)
        if resource is None and logical_id in self.stack.skipped:
            return f"{self.stack.name}-{logical_id}.{attribute} (not provisioned locally)"
        if resource is None:
            raise ProvisionError(f"GetAtt {logical_id}.{attribute}: no such resource (yet)")
        if attribute in resource.attributes:
            return resource.attributes[attribute]
        for suffix, key in (("Arn", "Arn"), ("Name", "Name")):
            if attribute.endswith(suffix) and key in resource.attributes:
                return resource.attributes[key]
        raise ProvisionError(f"GetAtt {logical_id}.{attribute}: attribute not known locally")

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            definitions = self.template.get("Conditions") or {}
            if name not in definitions:
                raise ProvisionError(f"unknown condition {name}")
            self.conditions[name] = bool(self.resolve(definitions[name]))
        return self.conditions[name]

    # the walker
    def resolve(self, value: Any) -> Any:
        result = self._resolve(value)
        return None if result is _NO_VALUE else result

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self._resolve(item) for item in value) if v is not _NO_VALUE]
        if isinstance(value, str):
            return self._rewrite_api_url(value)
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
        resolved = {}
        for key, item in value.items():
            item = self._resolve(item)
            if item is not _NO_VALUE:
                resolved[key] = item
        return resolved

    def rewrite_api_host(self, api_host: str, local_url: str) -> None:
        """From now on, `api_host` (an API's invoke host) in any string resolves to `local_url`."""
        self._api_url_rewrites[api_host] = local_url

    def _rewrite_api_url(self, text: str) -> str:
        # An API's invoke URL (https://<id>.execute-api.<region>.amazonaws.com) is served locally.
        for api_host, local_url in self._api_url_rewrites.items():
            if api_host in text:
                text = text.replace(api_host, local_url)
        return text

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            template, variables = arg[0], {k: self._resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            template, variables = arg, {}
        if not isinstance(template, str):
            raise ProvisionError(f"Fn::Sub needs a string, got {template!r}")

        def replace(match: re.Match) -> str:
            name = match.group(1).strip()
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                value = self.get_att(logical_id, attribute)
            else:
                value = self.ref(name)
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            return str(value)

        # `${!Literal}` stays as `${Literal}`
        text = _SUB_VARIABLE.sub(replace, template).replace("${!", "${")
        return self._rewrite_api_url(text)


def _fn_ref(r: Resolver, arg):
    return r.ref(r.resolve(arg))


def _fn_get_att(r: Resolver, arg):
    if isinstance(arg, str):
        logical_id, attribute = arg.split(".", 1)
    else:
        logical_id, attribute = arg[0], r.resolve(arg[1])
    return r.get_att(logical_id, attribute)


def _fn_join(r: Resolver, arg):
    delimiter, items = arg
    items = r.resolve(items)
    return r.resolve(delimiter).join(str(i) for i in items)


def _fn_select(r: Resolver, arg):
    index, items = r.resolve(arg[0]), r.resolve(arg[1])
    return items[int(index)]


def _fn_split(r: Resolver, arg):
    delimiter, text = r.resolve(arg[0]), r.resolve(arg[1])
    return text.split(delimiter)


def _fn_if(r: Resolver, arg):
    name, when_true, when_false = arg
    return r._resolve(when_true if r.condition(name) else when_false)


def _fn_equals(r: Resolver, arg):
    left, right = r.resolve(arg[0]), r.resolve(arg[1])
    return str(left) == str(right)


def _fn_base64(r: Resolver, arg):
    import base64

    return base64.b64encode(str(r.resolve(arg)).encode()).decode()


def _fn_get_azs(r: Resolver, arg):
    return [f"{r.stack.region}{zone}" for zone in "abc"]


def _fn_find_in_map(r: Resolver, arg):
    name, top, second = (r.resolve(a) for a in arg[:3])
    return r.template["Mappings"][name][top][second]



_INTRINSICS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": _fn_ref,
    "Fn::GetAtt": _fn_get_att,
    "Fn::Sub": lambda r, arg: r.sub(arg),
    "Fn::Join": _fn_join,
    "Fn::Select": _fn_select,
    "Fn::Split": _fn_split,
    "Fn::If": _fn_if,
    "Fn::Equals": _fn_equals,
    "Fn::And": lambda r, arg: all(r.resolve(a) for a in arg),
    "Fn::Or": lambda r, arg: any(r.resolve(a) for a in arg),
    "Fn::Not": lambda r, arg: not r.resolve(arg[0]),
    "Condition": lambda r, arg: r.condition(arg),
    "Fn::Base64": _fn_base64,
    "Fn::GetAZs": _fn_get_azs,
    "Fn::FindInMap": _fn_find_in_map,
}


def references(value: Any) -> set[str]:
    """Logical ids (or parameter names) a template fragment refers to."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if len(node) == 1:
                (key, arg), = node.items()
                if key == "Ref" and isinstance(arg, str):
                    found.add(arg)
                    return
                if key == "Fn::GetAtt":
                    found.add(arg.split(".", 1)[0] if isinstance(arg, str) else arg[0])
                    return
                if key == "Fn::Sub":
                    text = arg[0] if isinstance(arg, list) else arg
                    local_vars = set(arg[1]) if isinstance(arg, list) and isinstance(arg[1], dict) else set()
                    for name in _SUB_VARIABLE.findall(text if isinstance(text, str) else ""):
                        name = name.strip().split(".", 1)[0]
                        if name not in local_vars:
                            found.add(name)
                    if isinstance(arg, list):
                        walk(arg[1])
                    return
            for item in node.values():
                walk(item)

    walk(value)
    return {name for name in found if not name.startswith("AWS::")}


def substitute(text: str, substitutions: dict[str, Any]) -> str:
    """Replaces `${Name}` for each given name, leaving every other `${...}` as it is."""
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", str(value))
    return text
