"""IAM's string patterns: `*` and `?` wildcards, policy variables, and ARN segment matching.

A pattern is compiled into a regular expression; one without variables to resolve is compiled once
per process (`_compiled_literal`: the strict face evaluates the same few policies on every request, and
compiling them again was a sixth of the gateway's CPU under PutRecord ingestion). Policy variables
(`${aws:username}`, `${aws:PrincipalTag/team}`, `${key, 'default'}`) are replaced by the request
context's value, which always matches literally (a user named `a*b` does not become a wildcard);
`${*}`, `${?}` and `${$}` stand for the literal characters. A variable whose key is not in the
context and has no default makes the whole pattern match nothing, as IAM documents.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,]+?)\s*,\s*'([^']*)'\s*$")
_LITERAL_ESCAPES = {"*": "*", "?": "?", "$": "$"}
ARN_SEGMENTS = 6  # arn:partition:service:region:account:resource (the resource may hold colons)


class Unresolved(Exception):
    """A policy variable names a key the request context does not have (and gives no default)."""


def variable_value(expression: str, context: Mapping[str, Any]) -> str:
    """The text a `${...}` expression stands for; raises Unresolved."""
    if expression in _LITERAL_ESCAPES:
        return _LITERAL_ESCAPES[expression]
    default = None
    match = _DEFAULT.match(expression)
    key = expression.strip()
    if match:
        key, default = match.group(1), match.group(2)
    value = context.get(key.lower())
    if isinstance(value, (list, tuple)):
        # A multivalued key cannot stand for one string.
        value = value[0] if len(value) == 1 else None
    if value is None or value == "":
        if default is None:
            raise Unresolved(key)
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _wildcard_regex(char: str, within_segment: bool, segment_ends_here: bool) -> str:
    if char == "?":
        return "[^:]" if within_segment else "."
    # IAM: inside an ARN segment `*` stays within the segment, except as the segment's last
    # character, where it may run on past colons.
    if within_segment and not segment_ends_here:
        return "[^:]*"
    return ".*"


def compile_pattern(pattern: str, context: Mapping[str, Any] | None = None, *, wildcards: bool = True,
                    variables: bool = False, arn_segments: bool = False,
                    ignore_case: bool = False) -> re.Pattern | None:
    """The regular expression of an IAM pattern, or None when a variable cannot be resolved.

    `arn_segments` applies the Resource element's rules: wildcards stay inside a colon-separated
    segment unless they end it, and variables are resolved in the resource part (after the fifth
    colon) only. Without it `*` matches any run of characters, as StringLike does.
    """
    if not (variables and "${" in pattern):
        return _compiled_literal(pattern, wildcards, arn_segments, ignore_case)
    return _compile(pattern, context or {}, wildcards, variables, arn_segments, ignore_case)


@functools.lru_cache(maxsize=4096)
def _compiled_literal(pattern: str, wildcards: bool, arn_segments: bool, ignore_case: bool) -> re.Pattern:
    """A pattern whose meaning does not depend on the request context (no variable to resolve)."""
    compiled = _compile(pattern, {}, wildcards, False, arn_segments, ignore_case)
    assert compiled is not None  # only an unresolved variable yields None
    return compiled


def _compile(pattern: str, context: Mapping[str, Any], wildcards: bool, variables: bool, arn_segments: bool,
             ignore_case: bool) -> re.Pattern | None:
    parts: list[str] = []
    index = 0
    colons = 0
    while index < len(pattern):
        char = pattern[index]
        in_resource_part = not arn_segments or colons >= ARN_SEGMENTS - 1
        if variables and in_resource_part and pattern.startswith("${", index):
            end = pattern.find("}", index)
            if end != -1:
                try:
                    parts.append(re.escape(variable_value(pattern[index + 2:end], context)))
                except Unresolved:
                    return None
                index = end + 1
                continue
        if wildcards and char in "*?":
            within = arn_segments and colons < ARN_SEGMENTS - 1
            next_char = pattern[index + 1] if index + 1 < len(pattern) else ":"
            parts.append(_wildcard_regex(char, within, next_char == ":"))
        else:
            if char == ":":
                colons += 1
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(pattern: str, value: str, context: Mapping[str, Any] | None = None, **options: Any) -> bool:
    compiled = compile_pattern(pattern, context, **options)
    return compiled is not None and compiled.fullmatch(value) is not None


def substitute(text: str, context: Mapping[str, Any]) -> str | None:
    """`text` with its policy variables replaced (no wildcards), or None when one cannot be resolved."""
    try:
        return _VARIABLE.sub(lambda m: variable_value(m.group(1), context), text)
    except Unresolved:
        return None


def split_arn(arn: str) -> list[str] | None:
    parts = arn.split(":", ARN_SEGMENTS - 1)
    return parts if len(parts) == ARN_SEGMENTS and parts[0] == "arn" else None


def arn_matches(pattern: str, arn: str, context: Mapping[str, Any] | None = None, variables: bool = False) -> bool:
    """ArnEquals/ArnLike: each of the six colon-delimited parts is matched on its own."""
    if variables:
        resolved = _resolve_variables_keeping_wildcards(pattern, context or {})
        if resolved is None:
            return False
        pattern_parts = split_arn(resolved[0])
        literal_masks = split_arn(resolved[1])
    else:
        pattern_parts = split_arn(pattern)
        literal_masks = None
    value_parts = split_arn(arn)
    if pattern_parts is None or value_parts is None:
        return False
    for position, (expected, actual) in enumerate(zip(pattern_parts, value_parts)):
        mask = literal_masks[position] if literal_masks else None
        if not _segment_matches(expected, actual, mask):
            return False
    return True


def _resolve_variables_keeping_wildcards(pattern: str, context: Mapping[str, Any]) -> tuple[str, str] | None:
    """(text, mask) where mask marks characters that came from variables ('L') so they stay literal."""
    text: list[str] = []
    mask: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("${", index) and pattern.find("}", index) != -1:
            end = pattern.find("}", index)
            try:
                value = variable_value(pattern[index + 2:end], context)
            except Unresolved:
                return None
            text.append(value)
            # Colons inside a variable value still separate ARN parts; only wildcards are literal.
            mask.append("".join(":" if c == ":" else "L" for c in value))
            index = end + 1
        else:
            text.append(pattern[index])
            mask.append(pattern[index] if pattern[index] == ":" else "P")
            index += 1
    return "".join(text), "".join(mask)


def _segment_matches(pattern: str, value: str, mask: str | None) -> bool:
    return _segment_regex(pattern, mask).fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def _segment_regex(pattern: str, mask: str | None) -> re.Pattern:
    parts = []
    for position, char in enumerate(pattern):
        literal = mask is not None and mask[position] == "L"
        if char == "*" and not literal:
            parts.append(".*")
        elif char == "?" and not literal:
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)
