"""The Condition element of IAM policies, as IAM's documentation defines it.

* All operators of a block must hold, and all keys of an operator (AND); the values given for one
  key are alternatives (OR).
* Condition key names are case-insensitive (the context is keyed by lower-case names).
* A key missing from the request context makes a positive operator false and a negated one
  (`StringNotEquals`, `ArnNotLike`, `NotIpAddress`, ...) true. `...IfExists` makes any operator
  true for a missing key; `Null` tests presence itself.
* `ForAllValues:` is true when every request value matches (and for a missing or empty key);
  `ForAnyValue:` when at least one does (false for a missing or empty key). A multivalued key used
  without a qualifier is matched like `ForAnyValue:` (negated operators: no value may match).
* Policy variables are resolved in String and ARN operators only.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from local.aws.strict import iam_patterns

FOR_ALL = "forallvalues"
FOR_ANY = "foranyvalue"
IF_EXISTS = "ifexists"


class InvalidPolicy(ValueError):
    """A policy IAM would have refused to store (unknown operator, malformed element)."""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _epoch_seconds(value: Any) -> float | None:
    """ISO 8601 (W3C profile) or epoch seconds, as both policy and context may use."""
    if isinstance(value, datetime):
        moment = value
    else:
        number = _number(value)
        if number is not None:
            return number
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# `variables` is the request context when policy variables apply (policy Version 2012-10-17),
# None when `${...}` is literal text.
Variables = Mapping[str, Any] | None


def _resolve(expected: Any, variables: Variables) -> str | None:
    text = _text(expected)
    return text if variables is None else iam_patterns.substitute(text, variables)


def _string_equals(actual: Any, expected: Any, variables: Variables) -> bool:
    resolved = _resolve(expected, variables)
    return resolved is not None and _text(actual) == resolved


def _string_equals_ignore_case(actual: Any, expected: Any, variables: Variables) -> bool:
    resolved = _resolve(expected, variables)
    return resolved is not None and _text(actual).casefold() == resolved.casefold()


def _string_like(actual: Any, expected: Any, variables: Variables) -> bool:
    return iam_patterns.matches(_text(expected), _text(actual), variables, variables=variables is not None)


def _numeric(compare: Callable[[float, float], bool]):
    def check(actual: Any, expected: Any, variables: Variables) -> bool:
        left, right = _number(actual), _number(expected)
        return left is not None and right is not None and compare(left, right)
    return check


def _date(compare: Callable[[float, float], bool]):
    def check(actual: Any, expected: Any, variables: Variables) -> bool:
        left, right = _epoch_seconds(actual), _epoch_seconds(expected)
        return left is not None and right is not None and compare(left, right)
    return check


def _bool(actual: Any, expected: Any, variables: Variables) -> bool:
    resolved = _resolve(expected, variables)
    return resolved is not None and _text(actual).lower() == resolved.lower()


def _binary(actual: Any, expected: Any, variables: Variables) -> bool:
    try:
        wanted = base64.b64decode(str(expected), validate=True)
    except (binascii.Error, ValueError):
        return False
    if isinstance(actual, bytes):
        return actual == wanted
    try:  # a context value given as text is its base64 form
        return base64.b64decode(str(actual), validate=True) == wanted
    except (binascii.Error, ValueError):
        return False


def _ip(actual: Any, expected: Any, variables: Variables) -> bool:
    try:
        address = ipaddress.ip_address(str(actual).strip())
        network = ipaddress.ip_network(str(expected).strip(), strict=False)  # no prefix: /32 (/128)
    except ValueError:
        return False
    return address.version == network.version and address in network


def _arn(actual: Any, expected: Any, variables: Variables) -> bool:
    return iam_patterns.arn_matches(_text(expected), _text(actual), variables, variables=variables is not None)


@dataclass(frozen=True)
class Operator:
    compare: Callable[[Any, Any, Variables], bool]
    negated: bool = False


_EQ = lambda a, b: a == b  # noqa: E731
OPERATORS: dict[str, Operator] = {
    "stringequals": Operator(_string_equals),
    "stringnotequals": Operator(_string_equals, negated=True),
    "stringequalsignorecase": Operator(_string_equals_ignore_case),
    "stringnotequalsignorecase": Operator(_string_equals_ignore_case, negated=True),
    "stringlike": Operator(_string_like),
    "stringnotlike": Operator(_string_like, negated=True),
    "numericequals": Operator(_numeric(_EQ)),
    "numericnotequals": Operator(_numeric(_EQ), negated=True),
    "numericlessthan": Operator(_numeric(lambda a, b: a < b)),
    "numericlessthanequals": Operator(_numeric(lambda a, b: a <= b)),
    "numericgreaterthan": Operator(_numeric(lambda a, b: a > b)),
    "numericgreaterthanequals": Operator(_numeric(lambda a, b: a >= b)),
    "dateequals": Operator(_date(_EQ)),
    "datenotequals": Operator(_date(_EQ), negated=True),
    "datelessthan": Operator(_date(lambda a, b: a < b)),
    "datelessthanequals": Operator(_date(lambda a, b: a <= b)),
    "dategreaterthan": Operator(_date(lambda a, b: a > b)),
    "dategreaterthanequals": Operator(_date(lambda a, b: a >= b)),
    "bool": Operator(_bool),
    "binaryequals": Operator(_binary),
    "ipaddress": Operator(_ip),
    "notipaddress": Operator(_ip, negated=True),
    "arnequals": Operator(_arn),
    "arnlike": Operator(_arn),
    "arnnotequals": Operator(_arn, negated=True),
    "arnnotlike": Operator(_arn, negated=True),
}


@dataclass(frozen=True)
class ParsedOperator:
    name: str
    qualifier: str | None  # FOR_ALL, FOR_ANY or None
    if_exists: bool
    base: Operator | None  # None for Null


def parse_operator(name: str) -> ParsedOperator:
    qualifier, _, rest = name.rpartition(":")
    qualifier = qualifier.lower() or None
    if qualifier not in (None, FOR_ALL, FOR_ANY):
        raise InvalidPolicy(f"unknown condition set operator {name!r}")
    key = rest.lower()
    if key == "null":
        if qualifier:
            raise InvalidPolicy(f"the Null condition operator takes no set qualifier: {name!r}")
        return ParsedOperator(name, None, False, None)
    if_exists = key.endswith(IF_EXISTS) and key[: -len(IF_EXISTS)] in OPERATORS
    base = OPERATORS.get(key[: -len(IF_EXISTS)] if if_exists else key)
    if base is None:
        raise InvalidPolicy(f"unknown condition operator {name!r}")
    return ParsedOperator(name, qualifier, if_exists, base)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def _absent(value: Any) -> bool:
    return value is None or value == []


def _empty_set(value: Any) -> bool:
    # IAM: "key values that resolve to an empty data set (for example, an empty string)".
    return _absent(value) or value == ""


def _null_check(value: Any, expected: list[Any]) -> bool:
    return any(_text(e).lower() == ("true" if _absent(value) else "false") for e in expected)


def evaluate_key(operator: ParsedOperator, key: str, expected: Any, context: Mapping[str, Any],
                 variables: bool = True) -> bool:
    """One key of one operator: does the request context satisfy it?"""
    expected_values = _as_list(expected)
    value = context.get(key.lower())
    if operator.base is None:
        return _null_check(value, expected_values)
    base = operator.base
    resolver = context if variables else None

    def positive(actual: Any) -> bool:
        return any(base.compare(actual, wanted, resolver) for wanted in expected_values)

    def value_matches(actual: Any) -> bool:
        return not positive(actual) if base.negated else positive(actual)

    if operator.qualifier == FOR_ALL:
        return True if _empty_set(value) else all(value_matches(v) for v in _as_list(value))
    if operator.qualifier == FOR_ANY:
        if _empty_set(value):
            return operator.if_exists and _absent(value)
        return any(value_matches(v) for v in _as_list(value))
    if _absent(value):
        return operator.if_exists or base.negated
    if isinstance(value, (list, tuple, set, frozenset)):
        hit = any(positive(v) for v in value)
        return not hit if base.negated else hit
    return value_matches(value)


def evaluate_condition(block: Mapping[str, Any] | None, context: Mapping[str, Any], variables: bool = True) -> bool:
    """The whole Condition element: every operator, every key. `variables` is False for policies
    without `"Version": "2012-10-17"`, where `${...}` is literal text."""
    if not block:
        return True
    if not isinstance(block, Mapping):
        raise InvalidPolicy(f"Condition must be an object, got {block!r}")
    for operator_name, keys in block.items():
        operator = parse_operator(operator_name)
        if not isinstance(keys, Mapping):
            raise InvalidPolicy(f"condition operator {operator_name!r} must map keys to values")
        for key, expected in keys.items():
            if not evaluate_key(operator, key, expected, context, variables):
                return False
    return True
