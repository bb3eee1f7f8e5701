"""Checks a CSV dataset from its first bytes, before any money is spent on a pipeline execution.

The checks run in a fixed order and stop at the first problem, because a later check makes no sense
when an earlier one failed (there is no header to look at in a gzip file). Each problem carries a
stable ``code`` (for programs and metrics), a ``message`` saying what is wrong with the numbers
involved, and a ``fix`` telling the person who uploaded the file what to do.

What a CSV may look like is defined once in ``csv_rules`` (header problems, cells, row verdicts,
text columns, the Feature Store name of each column), which the ingest step applies to every row:
this module applies the same rules to the sample, so a file it lets through is not refused later
for something it could have seen. What people read about it is docs/csv-format.md.

Only a sample is read (``DEFAULT_SAMPLE_BYTES``). When the object is larger than the sample, the
last, possibly cut, line is ignored and the number of rows is estimated from the bytes per row.
Rejected rows in the sample are a lower bound for the whole file, so exceeding MaxRejectedRows there
is final; a target with one value in a partial sample is left for the ingest step to judge.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from . import csv_rules

ALLOWED_DELIMITER = csv_rules.DELIMITER
OTHER_DELIMITERS = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}
UTF8_BOM = b"\xef\xbb\xbf"
MAX_REPORTED = 5  # examples quoted in a message: enough to find the problem, short enough to read
REJECTED_EXAMPLES = 50  # rejected lines kept in the profile (reason.json)

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
    # CSV column -> the Feature Store name it is stored under (csv_rules.feature_store_names); the
    # CSV names stay the names people use, at the endpoint too.
    feature_names: dict[str, str] = field(default_factory=dict)
    missing_cells: dict[str, int] = field(default_factory=dict)  # per column, in the sample
    rows_in_sample: int = 0  # data rows read (not blank)
    kept_rows: int = 0  # rows to train on
    dropped_rows: int = 0  # no target value: cannot teach, not counted as rejected
    rejected_rows: int = 0  # wrong field count or a bad cell: counted against MaxRejectedRows
    rejected_examples: list[dict[str, Any]] = field(default_factory=list)
    max_rejected_rows: int = 0
    distinct_target_values: int = 0  # among the kept rows of the sample
    estimated_rows: int | None = None  # rows to train on in the whole file


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
    max_rejected_rows: int = 0,
) -> ValidationResult:
    """Validates the first bytes of a CSV object of ``object_size`` bytes.

    ``sample`` is the object's beginning (the whole object when it is small). The result's ``issue``
    is ``None`` when the file is fit for training on ``target_column``. ``max_rejected_rows`` is the
    MaxRejectedRows the pipeline run will get: a sample rejecting more rows is refused here, before
    any paid step.
    """
    profile = CsvProfile(
        object_size=object_size,
        sample_bytes=len(sample),
        sample_is_whole_file=len(sample) >= object_size,
        target_column=target_column,
    )
    issue = _check(sample, profile, target_column, min_data_rows, max_rejected_rows)
    return ValidationResult(profile=profile, issue=issue)


def _check(
    sample: bytes, profile: CsvProfile, target: str, min_data_rows: int, max_rejected_rows: int
) -> ValidationIssue | None:
    blank = not sample.removeprefix(UTF8_BOM).strip()
    if blank and profile.object_size > len(sample):
        return _only_blank_lines(len(sample))
    if profile.object_size == 0 or blank:
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
    # Blank lines are skipped (csv_rules), those before the header too.
    header_line = next((line for line in re.split(r"\r\n|\n|\r", text) if line.strip()), "")

    issue = _check_delimiter(header_line)
    if issue:
        return issue
    profile.delimiter = ALLOWED_DELIMITER

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=ALLOWED_DELIMITER, strict=True)
    try:
        raw_header = next((row for row in reader if not _is_blank(row)), None)
        rows = [(reader.line_num, row) for row in reader if not _is_blank(row)]
    except csv.Error as exc:
        return ValidationIssue(
            "malformed_csv",
            f"The CSV cannot be parsed near line {reader.line_num}: {exc}.",
            "Check the quoting on that line: every opening double quote needs a closing one.",
            {"line": reader.line_num},
        )
    if raw_header is None:  # blank lines up to the sample's last whole line
        return _only_blank_lines(len(sample))
    header = [name.strip() for name in raw_header]
    profile.header = header

    problem = csv_rules.header_problem(raw_header, rows[0][1] if rows else None)
    if problem:
        return ValidationIssue(problem.code, problem.message, problem.fix, {"header": header})
    profile.feature_names = dict(zip(header, csv_rules.feature_store_names(header)))

    issue = _check_target(header, target)
    if issue:
        return issue
    target_index = header.index(target)
    profile.feature_columns = [name for name in header if name != target]
    if not profile.feature_columns:
        return ValidationIssue(
            "no_feature_columns",
            f"The file has only the target column {target!r}; there is nothing to learn from.",
            "Add the feature columns (numbers describing each row) next to the target column.",
            {"header": header},
        )

    issue = _check_text_columns(header, rows, target_index, profile)
    if issue:
        return issue

    issue = _judge_rows(header, rows, target_index, profile, max_rejected_rows)
    if issue:
        return issue

    profile.rows_in_sample = len(rows)
    if profile.sample_is_whole_file:
        profile.estimated_rows = profile.kept_rows
    else:
        profile.estimated_rows = int(profile.kept_rows * profile.object_size / max(len(sample), 1))
    if profile.estimated_rows < min_data_rows:
        qualifier = "" if profile.sample_is_whole_file else "about "
        not_kept = _not_kept_note(profile)
        return ValidationIssue(
            "too_few_rows",
            f"The file has {qualifier}{profile.estimated_rows} data rows to train on{not_kept}; at least "
            f"{min_data_rows} are needed to split it into training, validation and test sets.",
            f"Add more rows with a {target} value (at least {min_data_rows}) and upload the file again.",
            {"rows": profile.estimated_rows, "minimum": min_data_rows, "estimated": not profile.sample_is_whole_file,
             "dropped_rows": profile.dropped_rows, "rejected_rows": profile.rejected_rows},
        )

    # A partial sample may show one target value where the whole file has many: only the whole file
    # is judged here, the ingest step judges every row of a larger one.
    if profile.sample_is_whole_file and profile.distinct_target_values < csv_rules.MIN_DISTINCT_TARGET_VALUES:
        value = _first_kept_target(rows, header, target_index)
        return ValidationIssue(
            "constant_target",
            f"The target {target} has one value ({value}) in all {profile.kept_rows} rows: there is nothing to learn.",
            f"Upload rows whose {target} values differ (check the export did not fill the column with one value), "
            "or name another column as the target.",
            {"target": target, "value": value, "rows": profile.kept_rows},
        )
    return None


def _only_blank_lines(sample_bytes: int) -> ValidationIssue:
    return ValidationIssue(
        "empty_file",
        f"The first {sample_bytes} bytes hold only blank lines: no header and no rows.",
        "Remove the blank lines before the header and upload the file again.",
    )


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


def _well_formed(header: list[str], rows: list[tuple[int, list[str]]]) -> list[tuple[int, list[str]]]:
    return [(line, row) for line, row in rows if len(row) == len(header)]


def _check_text_columns(
    header: list[str], rows: list[tuple[int, list[str]]], target_index: int, profile: CsvProfile
) -> ValidationIssue | None:
    """Tallies every column (csv_rules.ColumnTally) over the rows with the header's field count and
    refuses text columns: the model takes numbers only."""
    tallies = [csv_rules.ColumnTally() for _ in header]
    first_bad_line: dict[int, int] = {}
    for line, row in _well_formed(header, rows):
        for position, text in enumerate(row):
            if tallies[position].add(text).kind == csv_rules.BAD:
                first_bad_line.setdefault(position, line)
    profile.missing_cells = {name: tally.missing for name, tally in zip(header, tallies)}
    text_columns = [position for position, tally in enumerate(tallies) if tally.is_text]
    if target_index in text_columns:
        tally = tallies[target_index]
        target = header[target_index]
        return ValidationIssue(
            "non_numeric_target",
            f"The target {target} holds text, not numbers: {tally.bad} of its {tally.bad + tally.numbers} values "
            f"are not numbers, e.g. {tally.first_bad!r} on line {first_bad_line[target_index]}. The model "
            "predicts a number (regression).",
            f"Make {target} a number in every row (encode categories as numbers, drop units and thousands "
            "separators), or name a numeric column as the target.",
            {"target": target, "value": tally.first_bad, "line": first_bad_line[target_index],
             "not_numbers": tally.bad, "numbers": tally.numbers},
        )
    if text_columns:
        examples = "; ".join(
            f"{header[position]!r} has {tallies[position].first_bad!r} on line {first_bad_line[position]}"
            for position in text_columns[:MAX_REPORTED]
        )
        return ValidationIssue(
            "non_numeric_value",
            f"{len(text_columns)} column(s) hold text, not numbers (more than half of their values are not "
            f"numbers): {examples}.",
            "Make every column numeric: encode categories as numbers (e.g. yes/no as 1/0), drop text columns, "
            "and write numbers without thousands separators or units, with '.' as the decimal mark.",
            {"columns": {header[position]: {"line": first_bad_line[position], "value": tallies[position].first_bad,
                                            "not_numbers": tallies[position].bad,
                                            "numbers": tallies[position].numbers}
                         for position in text_columns}},
        )
    return None


def _judge_rows(
    header: list[str], rows: list[tuple[int, list[str]]], target_index: int, profile: CsvProfile,
    max_rejected_rows: int,
) -> ValidationIssue | None:
    """Counts kept, dropped (no target) and rejected rows with csv_rules.row_verdict; refuses the file
    when the sample alone rejects more rows than the pipeline's MaxRejectedRows lets through."""
    rejected: list[tuple[int, str]] = []
    distinct_targets: set[float] = set()
    for line, row in rows:
        verdict = csv_rules.row_verdict(row, header, target_index)
        if verdict.kept:
            profile.kept_rows += 1
            distinct_targets.add(csv_rules.parse_cell(row[target_index]).value)
        elif verdict.dropped:
            profile.dropped_rows += 1
        else:
            rejected.append((line, verdict.reason or "rejected"))
    profile.rejected_rows = len(rejected)
    profile.rejected_examples = [{"line": line, "reason": reason} for line, reason in rejected[:REJECTED_EXAMPLES]]
    profile.distinct_target_values = len(distinct_targets)
    profile.max_rejected_rows = max_rejected_rows
    if len(rejected) <= max_rejected_rows:
        return None
    examples = "; ".join(f"line {line}: {reason}" for line, reason in rejected[:MAX_REPORTED])
    more = f" (and {len(rejected) - MAX_REPORTED} more)" if len(rejected) > MAX_REPORTED else ""
    scope = "" if profile.sample_is_whole_file else f" in the first {profile.sample_bytes} bytes"
    return ValidationIssue(
        "rejected_rows",
        f"{len(rejected)} row(s){scope} cannot be used and the pipeline accepts at most {max_rejected_rows} "
        f"(MaxRejectedRows): {examples}{more}.",
        f"Fix those lines: every row needs exactly {len(header)} values (quote values that contain commas), "
        "each a number or empty, without units or thousands separators. Or, if losing those rows is fine, "
        "start the run with a higher MaxRejectedRows (the stack parameter, or `mlops pipeline run FILE --parameter "
        "MaxRejectedRows=N`).",
        {"rejected_rows": len(rejected), "max_rejected_rows": max_rejected_rows,
         "expected_fields": len(header), "rows": profile.rejected_examples},
    )


def _not_kept_note(profile: CsvProfile) -> str:
    parts = []
    if profile.dropped_rows:
        parts.append(f"{profile.dropped_rows} row(s) without a {profile.target_column} value dropped")
    if profile.rejected_rows:
        parts.append(f"{profile.rejected_rows} row(s) rejected")
    scope = "" if profile.sample_is_whole_file else " in the sample"
    return f" ({', '.join(parts)}{scope})" if parts else ""


def _first_kept_target(rows: list[tuple[int, list[str]]], header: list[str], target_index: int) -> str:
    for _, row in rows:
        if csv_rules.row_verdict(row, header, target_index).kept:
            return row[target_index].strip()
    return "none"
