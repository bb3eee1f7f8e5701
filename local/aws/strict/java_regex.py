"""The `pattern` constraints of botocore service models, applied as AWS applies them.

The patterns are Java regular expressions (AWS's request validation runs on the JVM) and AWS
requires the *whole* value to match (`Matcher.matches()`, not `find()`): the tag-value pattern
`[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*` refuses `#` on AWS, which a search could never do, since `*` also
matches the empty prefix.

Java and Python's `regex` package agree on most syntax but not on every meaning. What differs for
*every* pattern is translated here, by the Java documentation of `java.util.regex.Pattern`
(https://docs.oracle.com/en/java/javase/17/docs/api/java.base/java/util/regex/Pattern.html):
`\\d \\s \\w` and their negations are ASCII-only in Java; `.` excludes all of Java's line
terminators (`\\n \\r \\u0085 \\u2028 \\u2029`), not only `\\n`; `$` and `\\Z` may match before a final
line terminator of any of those kinds; `\\b` is a boundary between a letter/digit/`_` and anything
else. What differs in a single pattern, or cannot be compiled by `regex` at all, is an entry of
`PATTERN_OVERRIDES`; `divergence()` names the reason, and a pattern that needs an override and has
none raises `PatternNotCheckable` instead of being skipped.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import regex


class PatternNotCheckable(Exception):
    """A model pattern that this module cannot apply with Java's meaning and that has no override."""


@dataclass(frozen=True)
class PatternOverride:
    python_pattern: str  # what is applied instead (a `regex` pattern, matched against the whole value)
    stands_for: str  # the documented constraint the model's pattern expresses
    documented_at: str


_XML_CHAR = "the XML 1.0 Char production (https://www.w3.org/TR/xml/#charsets)"
_TAG_CHARS = ("letters, separators and numbers in any script, and _ . : / = + - @ (the AWS tag character set, "
              "https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html)")
_JAVA_POSIX = ("Java's POSIX classes are US-ASCII only (\\p{Print} = [\\x20-\\x7E], \\p{Alnum} = [a-zA-Z0-9]), "
               "java.util.regex.Pattern, 'POSIX character classes (US-ASCII only)'")

# Keyed by the model's pattern text exactly; the same text may appear on several shapes and services.
PATTERN_OVERRIDES: dict[str, PatternOverride] = {
    # Quantified anchor `${1,256}`: a model authoring slip (the length belongs to the shape's max,
    # which the model also carries). Java compiles it as a zero-width `$`, so the constraint is the
    # character set alone. SageMaker CreateModelPackage CustomerMetadataProperties values/keys:
    # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html
    r"([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,256}": PatternOverride(
        r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*", _TAG_CHARS + "; at most 256 characters is the shape's max",
        "SageMaker API Reference, CreateModelPackage, CustomerMetadataProperties (value)"),
    r"([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,128}": PatternOverride(
        r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*", _TAG_CHARS + "; at most 128 characters is the shape's max",
        "SageMaker API Reference, CreateModelPackage, CustomerMetadataProperties (key)"),
    # `\uD800\uDC00-\uDBFF\uDFFF` is Java's way of writing the range U+10000-U+10FFFF with UTF-16
    # surrogate pairs; `regex` reads lone surrogates and refuses the range as reversed.
    "[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\t]*": PatternOverride(
        "[\\u0020-\\uD7FF\\uE000-\\uFFFD\\U00010000-\\U0010FFFF\\t]*",
        "any XML character except line breaks: tab, U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF",
        _XML_CHAR + "; SageMaker DataCatalogConfig TableName/Catalog/Database, AthenaDatasetDefinition"),
    "[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\r\\n\\t]*": PatternOverride(
        "[\\u0020-\\uD7FF\\uE000-\\uFFFD\\U00010000-\\U0010FFFF\\r\\n\\t]*",
        "any XML character: tab, CR, LF, U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF",
        _XML_CHAR + "; DynamoDB AutoScalingSettingsUpdate AutoScalingRoleArn"),
    # POSIX classes: `regex` reads \p{Print} and \p{Alnum} as Unicode properties; Java as ASCII.
    r"\A\S[\p{Print}]*\z": PatternOverride(
        r"\A[^ \t\n\x0B\f\r][\x20-\x7E]*\Z",
        "a first character that is not ASCII white space, then printable ASCII characters",
        _JAVA_POSIX + "; sagemaker-runtime InvokeEndpoint InferenceId, TargetModel"),
    r"\p{Print}+": PatternOverride(
        r"[\x20-\x7E]+", "one or more printable ASCII characters",
        _JAVA_POSIX + "; DynamoDB AutoScalingPolicyName"),
    r"arn:[\p{Alnum}\-]+:lambda:[\p{Alnum}\-]+:[0-9]{12}:function:.*": PatternOverride(
        r"arn:[a-zA-Z0-9\-]+:lambda:[a-zA-Z0-9\-]+:[0-9]{12}:function:[^\n\r\u0085\u2028\u2029]*",
        "a Lambda function ARN (ASCII letters, digits and - in partition and region)",
        _JAVA_POSIX + "; SageMaker TrainingRepositoryAuthConfig TrainingRepositoryCredentialsProviderArn"),
}

_LINE_TERMINATOR = r"\n\r\u0085\u2028\u2029"
_DOT = f"[^{_LINE_TERMINATOR}]"
_END_BEFORE_FINAL_TERMINATOR = f"(?=(?:\\r\\n|[{_LINE_TERMINATOR}])?\\Z)"
# Java's \b before JDK 19 (what AWS's JVMs run): a word character is a letter, a decimal digit or _.
_WORD = r"[\p{L}\p{Nd}_]"
_BOUNDARY = f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))"
_NOT_BOUNDARY = f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))"
# ASCII expansions of Java's predefined classes: (outside a class, inside a class).
_CLASS_ESCAPES = {
    "d": ("[0-9]", "0-9"),
    "D": ("[^0-9]", "\\x00-\\x2F\\x3A-\\U0010FFFF"),
    "s": ("[ \\t\\n\\x0B\\f\\r]", " \\t\\n\\x0B\\f\\r"),
    "S": ("[^ \\t\\n\\x0B\\f\\r]", "\\x00-\\x08\\x0E-\\x1F\\x21-\\U0010FFFF"),
    "w": ("[a-zA-Z0-9_]", "a-zA-Z0-9_"),
    "W": ("[^a-zA-Z0-9_]", "\\x00-\\x2F\\x3A-\\x40\\x5B-\\x5E\\x60\\x7B-\\U0010FFFF"),
}
_ANCHOR_ESCAPES = {"b": _BOUNDARY, "B": _NOT_BOUNDARY, "A": r"\A", "z": r"\Z", "Z": _END_BEFORE_FINAL_TERMINATOR}
# Escapes whose meaning is the same in Java and `regex`.
_SAME_ESCAPES = set("tnrfa.\\/[]{}()*+?^$|-&~:!=<>#@%'\",;_ ")
_GENERAL_CATEGORIES = {
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Ps",
    "Pe", "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "Z", "Zs", "Zl", "Zp", "C", "Cc", "Cf", "Co", "Cn",
    "ASCII",
}
_QUANTIFIER_START = "*+?{"


class _Divergent(Exception):
    pass


def _translate(java: str) -> str:
    """The `regex` pattern with the meaning of `java`; raises _Divergent where it cannot be exact."""
    out: list[str] = []
    i, n = 0, len(java)
    in_class = False
    class_start = 0
    previous_was_anchor = False
    dot = _DOT
    if java.startswith("(?s)"):  # DOTALL for the whole pattern: `.` is any character
        dot, i = r"[\s\S]", 4
    while i < n:
        char = java[i]
        if previous_was_anchor and not in_class and char in _QUANTIFIER_START:
            raise _Divergent(f"quantifier on a zero-width anchor at {i}")
        previous_was_anchor = False
        if char == "\\":
            if i + 1 >= n:
                raise _Divergent("trailing backslash")
            escape = java[i + 1]
            if escape in "pP":
                end = java.find("}", i) if i + 2 < n and java[i + 2] == "{" else i + 2
                name = java[i + 3:end] if java[i + 2:i + 3] == "{" else java[i + 2:i + 3]
                if name not in _GENERAL_CATEGORIES:
                    raise _Divergent(f"\\{escape}{{{name}}} is read differently by Java and regex")
                out.append(java[i:end + 1])
                i = end + 1
                if in_class and java.startswith("-", i) and not java.startswith("-]", i):
                    out.append("\\-")  # as after \\w: a literal `-` in Java
                    i += 1
                continue
            if escape in _CLASS_ESCAPES:
                out.append(_CLASS_ESCAPES[escape][1 if in_class else 0])
                if in_class and java.startswith("-", i + 2) and not java.startswith("-]", i + 2):
                    out.append("\\-")  # Java reads `-` after a predefined class as a literal
                    i += 1
            elif escape in _ANCHOR_ESCAPES and not in_class:
                out.append(_ANCHOR_ESCAPES[escape])
                previous_was_anchor = True
            elif escape == "u" and regex.fullmatch(r"[0-9a-fA-F]{4}", java[i + 2:i + 6]):
                out.append(java[i:i + 6])
                i += 6
                continue
            elif escape == "x" and regex.fullmatch(r"[0-9a-fA-F]{2}", java[i + 2:i + 4]):
                out.append(java[i:i + 4])
                i += 4
                continue
            elif escape.isdigit() and escape != "0" and not in_class:
                out.append(java[i:i + 2])  # a back-reference
            elif escape in _SAME_ESCAPES:
                out.append(java[i:i + 2])
            else:
                raise _Divergent(f"escape \\{escape} is not known to mean the same in Java and regex")
            i += 2
            continue
        if in_class:
            if char == "[":
                raise _Divergent("nested character class (a union in Java)")
            if java.startswith("&&", i):
                raise _Divergent("character class intersection")
            if char == "]" and i > class_start:
                in_class = False
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            i += 1
            if i < n and java[i] == "^":
                out.append("^")
                i += 1
            if i < n and java[i] == "]":
                raise _Divergent("']' first in a class (an error in Java, a literal in regex)")
            class_start = i
            continue
        if char == "(" and java.startswith("(?", i):
            flags = regex.match(r"\(\?([a-zA-Z-]+)[:)]", java[i:])
            if flags and set(flags.group(1)) - {"i"}:
                raise _Divergent(f"inline flags (?{flags.group(1)})")
        if char == ".":
            out.append(dot)
        elif char == "$":
            out.append(_END_BEFORE_FINAL_TERMINATOR)
            previous_was_anchor = True
        elif char == "^":
            out.append(r"\A")
            previous_was_anchor = True
        else:
            out.append(char)
        i += 1
    if in_class:
        raise _Divergent("unterminated character class")
    return "".join(out)


def divergence(java_pattern: str) -> str | None:
    """Why this model pattern cannot be applied through the translation with Java's meaning, or None."""
    try:
        regex.compile(_translate(java_pattern))
    except _Divergent as exc:
        return str(exc)
    except regex.error as exc:
        return f"not compilable by regex: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def compiled(java_pattern: str) -> regex.Pattern:
    """The compiled form of a model pattern (cached: this runs on every request)."""
    override = PATTERN_OVERRIDES.get(java_pattern)
    if override is not None:
        return regex.compile(override.python_pattern)
    reason = divergence(java_pattern)
    if reason is not None:
        raise PatternNotCheckable(f"model pattern {java_pattern!r} needs an entry in PATTERN_OVERRIDES: {reason}")
    return regex.compile(_translate(java_pattern))


def matches(java_pattern: str, value: str) -> bool:
    """Whether the whole of `value` matches, as Java's `Matcher.matches()` decides."""
    return compiled(java_pattern).fullmatch(value) is not None
