"""Checks a CSV dataset from its first bytes, before any money is spent on a pipeline execution.

The checks run in a fixed order and stop at the first problem, because a later check makes no sense
when an earlier one failed (there is no header to look at in a gzip file). Each problem carries a
stable ``code`` (for programs and metrics), a ``message`` saying what is wrong with the numbers
involved, and a ``fix`` telling the person who uploaded the file what to do.

Only a sample is read (``DEFAULT_SAMPLE_BYTES``). When the object is larger than the sample, the
last, possibly cut, line is ignored and the number of rows is estimated from the bytes per row.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

ALLOWED_DELIMITER = ","
OTHER_DELIMITERS = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}
UTF8_BOM = b"\xef\xbb\xbf"
MAX_REPORTED = 5  # examples quoted in a message: enough to find the problem, short enough to read

# Signatures of formats people upload by mistake instead of a plain CSV: (magic, code, description).
_MAGIC_NUMBERS: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "compressed_file", "a gzip-compressed file"),
    (b"PK\x03\x04", "compressed_file", "a ZIP archive (an Excel .xlsx workbook is one too)"),
    (b"PK\x05\x06", "compressed_file", "an empty ZIP archive"),
    (b"BZh", "compressed_file", "a bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "compressed_file", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "compressed_file", "a zstd-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "compressed_file", "a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "binary_file", "a legacy Microsoft Office file (Excel .xls)"),
    (b"PAR1", "binary_file", "a Parquet file"),
    (b"%PDF", "binary_file", "a PDF document"),
    (b"\x89PNG", "binary_file", "a PNG image"),
    (b"\xff\xd8\xff", "binary_file", "a JPEG image"),
    (b"SQLite format 3\x00", "binary_file", "an SQLite database"),
)
_UNICODE_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big endian)"),
    (b"\xff\xfe", "UTF-16 (little endian)"),
    (b"\xfe\xff", "UTF-16 (big endian)"),
)
_HTML_STARTS = ("<!doctype html", "<html", "<head", "<body", "<!--")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class ValidationIssue:
    """What is wrong with a dataset and how the person who uploaded it can fix it."""

    code: str
    message: str
    fix: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CsvProfile:
    """What the validator found out about the file, kept in the quarantine reason for diagnosis."""

    object_size: int = 0
    sample_bytes: int = 0
    sample_is_whole_file: bool = True
    encoding: str | None = None
    line_ending: str | None = None
    delimiter: str | None = None
    header: list[str] = field(default_factory=list)
    target_column: str | None = None
    feature_columns: list[str] = field(default_factory=list)
    rows_in_sample: int = 0
    estimated_rows: int | None = None


@dataclass
class ValidationResult:
    profile: CsvProfile
    issue: ValidationIssue | None = None

    @property
    def ok(self) -> bool:
        return self.issue is None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "issue": asdict(self.issue) if self.issue else None, "profile": asdict(self.profile)}


def validate_csv_sample(
    sample: bytes,
    *,
    object_size: int,
    target_column: str,
    min_data_rows: int = 100,
) -> ValidationResult:
    """Validates the first bytes of a CSV object of ``object_size`` bytes.

    ``sample`` is the object's beginning (the whole object when it is small). The result's ``issue``
    is ``None`` when the file is fit for training on ``target_column``.
    """
    profile = CsvProfile(
        object_size=object_size,
        sample_bytes=len(sample),
        sample_is_whole_file=len(sample) >= object_size,
        target_column=target_column,
    )
    issue = _check(sample, profile, target_column, min_data_rows)
    return ValidationResult(profile=profile, issue=issue)


def _check(sample: bytes, profile: CsvProfile, target: str, min_data_rows: int) -> ValidationIssue | None:
    if profile.object_size == 0 or not sample.removeprefix(UTF8_BOM).strip():
        return ValidationIssue(
            "empty_file",
            f"The file is empty ({profile.object_size} bytes, no header and no rows).",
            "Upload the CSV again; check that the export or copy finished before the upload.",
        )

    issue = _check_binary(sample)
    if issue:
        return issue

    if sample.startswith(UTF8_BOM):
        profile.encoding = "utf-8-sig"
        sample = sample[len(UTF8_BOM):]
    else:
        profile.encoding = "utf-8"

    issue = _check_html(sample)
    if issue:
        return issue

    if not profile.sample_is_whole_file:
        # The sample ends inside a line: keep whole lines only.
        last_newline = max(sample.rfind(b"\n"), sample.rfind(b"\r"))
        if last_newline <= 0:
            return ValidationIssue(
                "line_too_long",
                f"The first {len(sample)} bytes contain no line break, so this is not a row-per-line CSV.",
                "Export the data as a CSV with one record per line and a header line.",
            )
        sample = sample[:last_newline + 1]

    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        profile.encoding = None
        return _encoding_issue(sample, exc)

    profile.line_ending = "CRLF" if "\r\n" in text else ("CR" if "\r" in text and "\n" not in text else "LF")
    header_line = re.split(r"\r\n|\n|\r", text, maxsplit=1)[0]

    issue = _check_delimiter(header_line)
    if issue:
        return issue
    profile.delimiter = ALLOWED_DELIMITER

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=ALLOWED_DELIMITER, strict=True)
    try:
        header = next(reader)
        rows = [(reader.line_num, row) for row in reader if not _is_blank(row)]
    except csv.Error as exc:
        return ValidationIssue(
            "malformed_csv",
            f"The CSV cannot be parsed near line {reader.line_num}: {exc}.",
            "Check the quoting on that line: every opening double quote needs a closing one.",
            {"line": reader.line_num},
        )
    profile.header = header

    issue = _check_header(header)
    if issue:
        return issue

    issue = _check_target(header, target)
    if issue:
        return issue
    profile.feature_columns = [name for name in header if name != target]
    if not profile.feature_columns:
        return ValidationIssue(
            "no_feature_columns",
            f"The file has only the target column {target!r}; there is nothing to learn from.",
            "Add the feature columns (numbers describing each row) next to the target column.",
            {"header": header},
        )

    issue = _check_ragged(header, rows)
    if issue:
        return issue

    issue = _check_numeric(header, rows)
    if issue:
        return issue

    profile.rows_in_sample = len(rows)
    if profile.sample_is_whole_file:
        profile.estimated_rows = len(rows)
    else:
        profile.estimated_rows = int(len(rows) * profile.object_size / max(len(sample), 1))
    if profile.estimated_rows < min_data_rows:
        qualifier = "" if profile.sample_is_whole_file else "about "
        return ValidationIssue(
            "too_few_rows",
            f"The file has {qualifier}{profile.estimated_rows} data rows; at least {min_data_rows} are needed to "
            "split it into training, validation and test sets.",
            f"Add more rows (at least {min_data_rows}) and upload the file again.",
            {"rows": profile.estimated_rows, "minimum": min_data_rows, "estimated": not profile.sample_is_whole_file},
        )
    return None


def _check_binary(sample: bytes) -> ValidationIssue | None:
    for magic, code, description in _MAGIC_NUMBERS:
        if sample.startswith(magic):
            fix = (
                "Decompress it and upload the plain .csv file."
                if code == "compressed_file"
                else "Export the data as a plain CSV file (comma separated, UTF-8) and upload that."
            )
            if "Excel" in description:
                fix = "Open it in Excel and use File > Save As > 'CSV UTF-8 (Comma delimited)', then upload the .csv."
            return ValidationIssue(
                code,
                f"The file is {description}, not a plain-text CSV (it starts with bytes {sample[:8].hex(' ')}).",
                fix,
                {"magic": sample[:8].hex()},
            )
    for bom, name in _UNICODE_BOMS:
        if sample.startswith(bom):
            return _utf16_issue(name)
    head = sample[:4096]
    if b"\x00" in head:
        even_nuls = head[0::2].count(0)
        odd_nuls = head[1::2].count(0)
        half = len(head) / 2
        if odd_nuls > 0.3 * half and even_nuls < 0.05 * half:
            return _utf16_issue("UTF-16 (little endian, no byte order mark)")
        if even_nuls > 0.3 * half and odd_nuls < 0.05 * half:
            return _utf16_issue("UTF-16 (big endian, no byte order mark)")
        offset = head.index(b"\x00")
        return ValidationIssue(
            "binary_file",
            f"The file contains binary data (a NUL byte at offset {offset}), not CSV text.",
            "Export the data as a plain CSV file (comma separated, UTF-8) and upload that.",
            {"offset": offset},
        )
    return None


def _utf16_issue(encoding: str) -> ValidationIssue:
    return ValidationIssue(
        "unsupported_encoding",
        f"The file is encoded as {encoding}; only UTF-8 is supported.",
        "Save the file as UTF-8 (Excel: 'CSV UTF-8 (Comma delimited)'; or run "
        "`iconv -f UTF-16 -t UTF-8 in.csv > out.csv`) and upload it again.",
        {"encoding": encoding},
    )


def _check_html(sample: bytes) -> ValidationIssue | None:
    head = sample[:2048].decode("utf-8", errors="replace").lstrip().lower()
    if head.startswith(_HTML_STARTS) or "<html" in head:
        return ValidationIssue(
            "html_page",
            "The file is an HTML web page, not CSV data (a sign-in, preview or error page was saved instead of "
            "the file itself).",
            "Download the raw CSV (for example the 'Download' or 'Raw' link, not the page showing it) and upload it.",
            {"starts_with": head[:80]},
        )
    return None


def _encoding_issue(sample: bytes, exc: UnicodeDecodeError) -> ValidationIssue:
    bad = sample[exc.start:exc.end]
    line = sample.count(b"\n", 0, exc.start) + 1
    as_windows = bad.decode("cp1252", errors="replace")
    return ValidationIssue(
        "unsupported_encoding",
        f"The file is not valid UTF-8: byte(s) {bad.hex(' ')} at offset {exc.start} (line {line}) "
        f"look like {as_windows!r} in Windows-1252/Latin-1.",
        "Save the file as UTF-8 (Excel: 'CSV UTF-8 (Comma delimited)'; or run "
        "`iconv -f WINDOWS-1252 -t UTF-8 in.csv > out.csv`) and upload it again.",
        {"offset": exc.start, "line": line, "bytes": bad.hex()},
    )


def _count_outside_quotes(line: str, char: str) -> int:
    count, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == char and not quoted:
            count += 1
    return count


def _check_delimiter(header_line: str) -> ValidationIssue | None:
    if _count_outside_quotes(header_line, ALLOWED_DELIMITER):
        return None
    counts = {d: _count_outside_quotes(header_line, d) for d in OTHER_DELIMITERS}
    delimiter, count = max(counts.items(), key=lambda item: item[1])
    if count == 0:
        return None  # a single column; the target/feature checks explain what is missing
    name = OTHER_DELIMITERS[delimiter]
    return ValidationIssue(
        "wrong_delimiter",
        f"Columns are separated by {name}, not by commas (header: {header_line[:120]!r}).",
        "Export the file with comma as the separator (and '.' as the decimal mark), e.g. in Excel "
        "'CSV UTF-8 (Comma delimited)' or pandas `df.to_csv(path, index=False)`.",
        {"detected_delimiter": delimiter, "header_line": header_line[:500]},
    )


def _check_header(header: list[str]) -> ValidationIssue | None:
    empty = [index + 1 for index, name in enumerate(header) if not name.strip()]
    if empty:
        return ValidationIssue(
            "empty_column_name",
            f"Header column(s) {', '.join(map(str, empty[:MAX_REPORTED]))} have no name "
            f"(header: {','.join(header)[:200]!r}).",
            "Give every column a name in the first line (an unnamed first column is often a saved index: "
            "export with `index=False`), and remove trailing commas.",
            {"positions": empty, "header": header},
        )
    seen: dict[str, int] = {}
    duplicates = []
    for name in (n.strip() for n in header):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 2:
            duplicates.append(name)
    if duplicates:
        return ValidationIssue(
            "duplicate_column_name",
            f"Column name(s) {', '.join(repr(d) for d in duplicates[:MAX_REPORTED])} appear more than once "
            "in the header.",
            "Rename the columns so every name is unique, then upload the file again.",
            {"duplicates": duplicates, "header": header},
        )
    return None


def _check_target(header: list[str], target: str) -> ValidationIssue | None:
    if target in header:
        return None
    near = [name for name in header if name.strip().lower() == target.strip().lower()]
    hint = f" Column {near[0]!r} differs only in case or spaces; names must match exactly." if near else ""
    return ValidationIssue(
        "missing_target",
        f"The target column {target!r} is not in the header {_shorten(header)}.{hint}",
        "Name the column to predict in the upload's metadata (`target`, e.g. `aws s3 cp data.csv "
        "s3://BUCKET/incoming/ --metadata target=COLUMN`), in a dataset.json (`{\"target\": \"COLUMN\"}`) "
        "next to the file, or rename the column to the stack default.",
        {"target": target, "header": header, "near_matches": near},
    )


def _shorten(header: list[str], limit: int = 300) -> str:
    text = ", ".join(repr(name) for name in header)
    return "[" + (text if len(text) <= limit else text[:limit] + " ...") + "]"


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _check_ragged(header: list[str], rows: list[tuple[int, list[str]]]) -> ValidationIssue | None:
    bad = [(line, len(row)) for line, row in rows if len(row) != len(header)]
    if not bad:
        return None
    examples = ", ".join(f"line {line} has {n}" for line, n in bad[:MAX_REPORTED])
    return ValidationIssue(
        "ragged_rows",
        f"{len(bad)} row(s) in the checked part do not have the header's {len(header)} fields: {examples}.",
        "Make every row have exactly one value per header column; quote values that contain commas.",
        {"expected_fields": len(header), "rows": [{"line": line, "fields": n} for line, n in bad[:50]]},
    )


def _is_number(value: str) -> bool:
    return bool(_NUMBER.fullmatch(value)) and math.isfinite(float(value))


def _check_numeric(header: list[str], rows: list[tuple[int, list[str]]]) -> ValidationIssue | None:
    non_numeric: dict[str, tuple[int, str]] = {}
    missing: dict[str, int] = {}
    for line, row in rows:
        for name, raw in zip(header, row):
            value = raw.strip()
            if not value:
                missing.setdefault(name, line)
            elif name not in non_numeric and not _is_number(value):
                non_numeric[name] = (line, raw)
    if non_numeric:
        examples = "; ".join(
            f"{name!r} has {value!r} on line {line}" for name, (line, value) in list(non_numeric.items())[:MAX_REPORTED]
        )
        return ValidationIssue(
            "non_numeric_value",
            f"{len(non_numeric)} column(s) contain values that are not numbers: {examples}.",
            "Make every column numeric: encode categories as numbers (e.g. yes/no as 1/0), drop text columns, "
            "and write numbers without thousands separators or units, with '.' as the decimal mark.",
            {"columns": {name: {"line": line, "value": value} for name, (line, value) in non_numeric.items()}},
        )
    if missing:
        examples = "; ".join(f"{name!r} on line {line}" for name, line in list(missing.items())[:MAX_REPORTED])
        return ValidationIssue(
            "missing_value",
            f"{len(missing)} column(s) have empty values: {examples}.",
            "Fill in the empty cells or remove the incomplete rows, then upload the file again.",
            {"columns": {name: {"line": line} for name, line in missing.items()}},
        )
    return None
