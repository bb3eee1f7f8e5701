"""What a CSV dataset may look like: the rules intake applies to a sample and the ingest step to the
whole file, defined once so both reach the same verdict (docs/csv-format.md explains them to the
people who upload files).

Pure Python (the intake Lambda has no pandas); the ingest step's vectorised path is checked against
these functions by tests.

* Parsing: Python's `csv` module, comma separated, `"` quoting, UTF-8 (a BOM is allowed); blank lines
  are skipped. The first line is the header; names are stripped of surrounding spaces.
* Column names: any text. Feature Store allows only `[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}` and keeps
  some names for itself, so `feature_store_names` maps each name to a valid feature name once; the
  user's names are kept everywhere a person sees them and at the endpoint. Refused: an empty name,
  two names that are the same after stripping spaces, more columns than a feature group takes.
* Cells: a number (`1`, `-2.5`, `1e3`, `.5`); missing (empty, or one of pandas' default NA
  spellings such as `NaN`, `NA`, `null`); anything else is a bad cell (text, `inf`, `1e999`).
* Rows: a row whose target is missing cannot teach: it is dropped and counted (not rejected). A row
  with the wrong number of fields, a bad cell, or a target beyond what XGBoost stores (float32) is
  rejected: counted, kept in the rejects file with the reason, and subject to MaxRejectedRows.
  Missing feature cells are data (XGBoost learns a default direction for them).
* Columns: a column is numeric when more than half of its non-missing cells are numbers; otherwise
  it is text and the file is refused (the model takes numbers only). A feature column with no value
  at all is kept (every cell missing). A numeric column is Integral when every number in it is an
  integer that fits 64 bits, Fractional otherwise.
* Target: at least two distinct values among the rows kept, or there is nothing to learn.
"""
from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

DELIMITER = ","
DOCS_PAGE = "docs/csv-format.md"

# Feature Store (botocore's model of CreateFeatureGroup): FeatureName pattern and length,
# at most 2500 feature definitions per group.
FEATURE_NAME_PATTERN = re.compile(r"[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}")
FEATURE_NAME_MAX = 64
MAX_FEATURE_DEFINITIONS = 2500
# Names the pipeline (record id, event time, dataset version) and the offline store (write and API
# invocation times, deletion flag, year/month/day/hour partitions) use themselves; a CSV column of
# one of these names is stored under another feature name. Feature Store and Athena compare
# names without case.
RESERVED_FEATURE_NAMES = ("record_id", "event_time", "dataset_version", "write_time",
                          "api_invocation_time", "is_deleted", "year", "month", "day", "hour")
PIPELINE_FEATURES = 3  # record_id, event_time, dataset_version: in every group's definitions
MAX_CSV_COLUMNS = MAX_FEATURE_DEFINITIONS - PIPELINE_FEATURES

# pandas.read_csv's default NA spellings (pandas._libs.parsers.STR_NA_VALUES): what a data scientist
# expects to read as missing. Compared after stripping spaces.
NA_SPELLINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
# ASCII digits only (Python's \d also takes other scripts' digits, which nobody's export writes and
# which the ingest step's Arrow kernels, RE2, do not read as digits).
NUMBER_PATTERN = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
INTEGER_PATTERN = re.compile(r"[+-]?[0-9]+")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# XGBoost keeps labels as float32: a target beyond this cannot be learned.
TARGET_MAGNITUDE_MAX = 3.4028234663852886e38
MIN_DISTINCT_TARGET_VALUES = 2

MISSING, NUMBER, BAD = "missing", "number", "bad"
INTEGRAL, FRACTIONAL = "Integral", "Fractional"


# --------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    kind: str  # MISSING | NUMBER | BAD
    value: float | None = None
    integral: bool = False  # an integer that fits 64 bits

    @property
    def is_number(self) -> bool:
        return self.kind == NUMBER


_MISSING_CELL = Cell(MISSING)
_BAD_CELL = Cell(BAD)


def parse_cell(text: str) -> Cell:
    """What one cell holds: a finite number, a missing value, or something that is neither."""
    text = text.strip()
    if text in NA_SPELLINGS:
        return _MISSING_CELL
    if not NUMBER_PATTERN.fullmatch(text):
        return _BAD_CELL
    value = float(text)
    if not math.isfinite(value):  # 1e999
        return _BAD_CELL
    integral = bool(INTEGER_PATTERN.fullmatch(text)) and INT64_MIN <= int(text) <= INT64_MAX
    return Cell(NUMBER, value, integral)


def bad_cell_reason(column: str, text: str) -> str:
    text = text.strip()
    lowered = text.lower().lstrip("+-")
    if lowered in ("inf", "infinity"):
        return f"{column} value {text!r} is infinite, not a measurement"
    if NUMBER_PATTERN.fullmatch(text):
        return f"{column} value {text!r} is too large for a 64-bit number"
    return f"{column} value {text!r} is not a number"


# --------------------------------------------------------------------------- header
@dataclass(frozen=True)
class HeaderProblem:
    code: str
    message: str
    fix: str


def header_problem(header: Sequence[str], first_row: Sequence[str] | None = None) -> HeaderProblem | None:
    """Why this header cannot be used, or None. `header` as parsed (names not yet stripped)."""
    names = [name.strip() for name in header]
    if names and all(parse_cell(name).is_number for name in names):
        return HeaderProblem(
            "no_header_row",
            f"The first line is made only of numbers ({_shorten(names)}), so the file has no header row "
            "naming the columns.",
            "Add a first line with the column names (e.g. `Square Feet,Bedrooms,PRICE`); with pandas, "
            "`df.to_csv(path, index=False)` writes one.",
        )
    empty = [index + 1 for index, name in enumerate(names) if not name]
    if empty:
        return HeaderProblem(
            "empty_column_name",
            f"Header column(s) {', '.join(map(str, empty[:5]))} have no name (header: {_shorten(names)}).",
            "Give every column a name in the first line (an unnamed first column is often a saved index: "
            "export with `index=False`), and remove trailing commas.",
        )
    seen: dict[str, int] = {}
    duplicates = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 2:
            duplicates.append(name)
    if duplicates:
        return HeaderProblem(
            "duplicate_column_name",
            f"Column name(s) {', '.join(repr(d) for d in duplicates[:5])} appear more than once in the header "
            "(names are compared without surrounding spaces), so their values cannot be told apart.",
            "Rename the columns so every name is unique, then upload the file again.",
        )
    if len(names) > MAX_CSV_COLUMNS:
        return HeaderProblem(
            "too_many_columns",
            f"The file has {len(names)} columns; a feature group holds at most {MAX_CSV_COLUMNS} "
            f"({MAX_FEATURE_DEFINITIONS} features, {PIPELINE_FEATURES} of them the pipeline's own).",
            f"Keep at most {MAX_CSV_COLUMNS} columns (drop identifiers and unused columns, or reduce "
            "them, e.g. with PCA) and upload the file again.",
        )
    return None


def _shorten(names: Sequence[str], limit: int = 200) -> str:
    text = ", ".join(repr(name) for name in names)
    return "[" + (text if len(text) <= limit else text[:limit] + " ...") + "]"


# --------------------------------------------------------------------------- names
def _base_feature_name(name: str) -> str:
    """`Lot (acres)` -> `Lot_acres`, `größe_m²` -> `grosse_m2`: ASCII letters and digits joined by `_`."""
    text = unicodedata.normalize("NFKD", name.strip().replace("ß", "ss"))
    ascii_text = text.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_")


def feature_store_names(header: Sequence[str]) -> list[str]:
    """The Feature Store name of each CSV column, in order: the column's own name when Feature Store
    takes it, otherwise its letters and digits joined by `_`, cut to 64 characters; a name that is
    reserved or already taken (compared without case) gets a suffix. A name with no letter or digit
    becomes `column_<position>`. Deterministic, so the same header always maps the same way."""
    taken = {name.lower() for name in RESERVED_FEATURE_NAMES}
    result = []
    for position, raw in enumerate(header, start=1):
        name = raw.strip()
        base = name if FEATURE_NAME_PATTERN.fullmatch(name) else _base_feature_name(name)
        if not base:
            base = f"column_{position}"
        if len(base) > FEATURE_NAME_MAX:
            # Cut names stay apart by a digest of the whole name.
            digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
            base = base[:FEATURE_NAME_MAX - len(digest) - 1].rstrip("_-") + "_" + digest
        candidate, counter = base, 2
        while candidate.lower() in taken:
            suffix = f"_{counter}"
            candidate = base[:FEATURE_NAME_MAX - len(suffix)].rstrip("_-") + suffix
            counter += 1
        taken.add(candidate.lower())
        result.append(candidate)
    return result


# --------------------------------------------------------------------------- columns and rows
@dataclass
class ColumnTally:
    """What the cells of one column hold, counted as rows are read."""

    numbers: int = 0
    missing: int = 0
    bad: int = 0
    all_integral: bool = True
    first_bad: str | None = None

    def add(self, text: str) -> Cell:
        cell = parse_cell(text)
        if cell.kind == NUMBER:
            self.numbers += 1
            self.all_integral = self.all_integral and cell.integral
        elif cell.kind == MISSING:
            self.missing += 1
        else:
            self.bad += 1
            if self.first_bad is None:
                self.first_bad = text.strip()
        return cell

    @property
    def is_text(self) -> bool:
        """More than half of the non-missing cells are not numbers."""
        return self.bad > 0 and self.numbers * 2 <= self.numbers + self.bad

    @property
    def feature_type(self) -> str:
        return INTEGRAL if self.numbers and self.all_integral else FRACTIONAL


@dataclass(frozen=True)
class RowVerdict:
    kept: bool
    dropped: bool = False  # missing target: not a rejection
    reason: str | None = None


KEPT = RowVerdict(True)


def row_verdict(fields: Sequence[str], header: Sequence[str], target_index: int,
                text_columns: frozenset[int] = frozenset()) -> RowVerdict:
    """Kept, dropped (missing target) or rejected (with the reason) — one data row. A row with
    several problems gets the first of: field count, missing target (dropped), the first bad
    feature cell in column order, a bad or too large target.

    `text_columns` are positions of columns found to be text; their cells are not judged here (the
    file is refused for them as a whole)."""
    if len(fields) != len(header):
        return RowVerdict(False, reason=f"the row has {len(fields)} fields, the header has {len(header)}")
    target_text = fields[target_index]
    target = parse_cell(target_text)
    if target.kind == MISSING:
        return RowVerdict(False, dropped=True, reason=f"the target {header[target_index].strip()} is missing")
    for position, text in enumerate(fields):
        if position in text_columns or position == target_index:
            continue
        if parse_cell(text).kind == BAD:
            return RowVerdict(False, reason=bad_cell_reason(header[position].strip(), text))
    if target.kind == BAD:
        return RowVerdict(False, reason=bad_cell_reason(header[target_index].strip(), target_text))
    if abs(target.value) > TARGET_MAGNITUDE_MAX:
        return RowVerdict(False, reason=f"the target {header[target_index].strip()} value {target_text.strip()!r} "
                                        "is beyond what the model can learn (float32, about 3.4e38)")
    return KEPT

