"""What a CSV dataset becomes: its schema (a feature type per column, the names Feature Store
accepts) and its rows, typed or rejected with the reason. Used by the ingest step.

`prepare_rows` (PutRecord path: cell strings as the feature store wants them) and `prepare_columns`
(bulk path: typed columns) make exactly the same accept/reject decisions with the same reasons.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from jobs import common, feature_store_layout

# Names the feature store adds to the offline store or that the pipeline adds itself; a CSV column
# with one of these names would be overwritten, so it is refused.
RESERVED_NAMES = set(feature_store_layout.METADATA_COLUMNS)
FEATURE_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}$")
FEATURE_GROUP_NAME_MAX = 64
INTEGRAL_PATTERN = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Schema:
    columns: list[str]  # CSV columns in order (the target included)
    types: dict[str, str]  # column -> Integral | Fractional
    target: str

    def feature_definitions(self) -> list[dict[str, str]]:
        """Feature definitions of the group: the pipeline's own features, then the CSV columns."""
        return [dict(d) for d in feature_store_layout.PIPELINE_FEATURE_DEFINITIONS] + [
            {"FeatureName": c, "FeatureType": self.types[c]} for c in self.columns]


def read_frame(data: bytes, input_uri: str) -> pd.DataFrame:
    """Parses the CSV keeping every cell as text (types are decided per column afterwards)."""
    if not data.strip():
        raise common.JobFailure(f"{input_uri} is empty")
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise common.JobFailure(f"{input_uri} is not a readable CSV file: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise common.JobFailure(f"{input_uri} has a header but no data rows")
    return frame


def infer_schema(frame: pd.DataFrame, target: str) -> Schema:
    """Integral or Fractional per column; refuses non-numeric columns and bad column names.

    A column is numeric when most of its non-empty cells parse as numbers; the cells that do not
    are rejected row by row later (a few bad cells should not hide a whole column)."""
    columns = list(frame.columns)
    if target not in columns:
        raise common.JobFailure(
            f"target column {target!r} is not in the CSV; columns found: {', '.join(columns)}"
        )
    problems = []
    lowered: dict[str, str] = {}
    for column in columns:
        if column.lower() in RESERVED_NAMES:
            problems.append(f"{column!r} is a reserved name")
        elif not FEATURE_NAME_PATTERN.match(column):
            problems.append(
                f"{column!r} is not a valid feature name (letters, digits, - and _, at most 64)"
            )
        elif column.lower() in lowered:
            problems.append(f"{column!r} duplicates {lowered[column.lower()]!r}")
        lowered.setdefault(column.lower(), column)
    if problems:
        raise common.JobFailure("invalid CSV header: " + "; ".join(problems))
    types: dict[str, str] = {}
    non_numeric = []
    for column in columns:
        text = frame[column].str.strip()
        present = text[text != ""]
        numbers = pd.to_numeric(present, errors="coerce").to_numpy(dtype=float)
        valid = pd.Series(np.isfinite(numbers), index=present.index)
        if len(present) == 0:
            non_numeric.append(f"{column} (empty)")
            continue
        if valid.sum() * 2 <= len(present):
            non_numeric.append(f"{column} (e.g. {present[~valid].iloc[0]!r})")
            continue
        integral = present[valid].str.fullmatch(INTEGRAL_PATTERN.pattern).all()
        types[column] = "Integral" if integral else "Fractional"
    if non_numeric:
        raise common.JobFailure(
            "only numeric columns can be used; non-numeric columns: " + ", ".join(non_numeric)
        )
    return Schema(columns=columns, types=types, target=target)


def effective_group_name(base: str, schema: Schema) -> str:
    """`<base>-<8 hex of sha1(feature definitions)>`, at most 64 characters.

    A group's feature definitions are fixed, so each schema gets its own group; the definitions are
    sorted so a file with the same columns in another order shares the group.
    """
    definitions = sorted(schema.feature_definitions(), key=lambda d: d["FeatureName"])
    digest = hashlib.sha1(json.dumps(definitions, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    room = FEATURE_GROUP_NAME_MAX - len(digest) - 1
    trimmed = base[:room].rstrip("-_")
    if not trimmed or not FEATURE_NAME_PATTERN.match(trimmed):
        raise common.JobFailure(f"feature group name {base!r} is not valid")
    return f"{trimmed}-{digest}"


def prepare_rows(
    frame: pd.DataFrame, schema: Schema
) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """Splits rows into writable ones (row number, cell values as the feature store wants them)
    and rejected ones (row number, reason). Row numbers start at 0 for the first data row."""
    cells = {c: frame[c].str.strip().tolist() for c in schema.columns}
    good: list[tuple[int, list[str]]] = []
    rejected: list[tuple[int, str]] = []
    for row_number in range(len(frame)):
        values, reason = [], None
        for column in schema.columns:
            text = cells[column][row_number]
            if text == "":
                reason = f"{column} is empty"
                break
            if schema.types[column] == "Integral":
                if not INTEGRAL_PATTERN.match(text):
                    reason = f"{column} value {text!r} is not an integer"
                    break
                values.append(str(int(text)))
            else:
                try:
                    number = float(text)
                except ValueError:
                    reason = f"{column} value {text!r} is not a number"
                    break
                if not math.isfinite(number):
                    reason = f"{column} value {text!r} is not a finite number"
                    break
                values.append(repr(number))
        if reason is None:
            good.append((row_number, values))
        else:
            rejected.append((row_number, reason))
    return good, rejected


@dataclass
class PreparedColumns:
    """The writable rows of a CSV as typed columns (the bulk path's `prepare_rows`)."""

    row_numbers: np.ndarray  # int64, ascending: which CSV rows these are
    values: dict[str, np.ndarray]  # column -> int64 (Integral) or float64 (Fractional) values


def prepare_columns(frame: pd.DataFrame, schema: Schema) -> tuple[PreparedColumns, list[tuple[int, str]]]:
    """`prepare_rows` for large data: the same accept/reject decisions and reasons (the first
    failing column of a row, in column order), computed a column at a time; values come back typed.

    Cells are parsed with Python's own `int`/`float` (numpy casts of text call them), so a value
    means exactly what it means on the PutRecord path; an Integral beyond 64 bits, which the
    feature store refuses there, is rejected here with the reason."""
    count = len(frame)
    reasons = np.full(count, None, dtype=object)
    parsed: dict[str, np.ndarray] = {}
    for column in schema.columns:
        text = frame[column].str.strip().to_numpy(dtype=object)
        open_rows = pd.isna(reasons)
        empty = text == ""
        _reject(reasons, open_rows & empty, lambda _: f"{column} is empty")
        if schema.types[column] == "Integral":
            well_formed = pd.Series(text).str.fullmatch(INTEGRAL_PATTERN.pattern).to_numpy(dtype=bool)
            _reject(reasons, pd.isna(reasons) & ~empty & ~well_formed,
                    lambda cell: f"{column} value {cell!r} is not an integer", text)
            parsed[column] = _parse_integral(column, text, well_formed, reasons)
        else:
            parsed[column] = _parse_fractional(column, text, ~empty, reasons)
    good = pd.isna(reasons)
    row_numbers = np.flatnonzero(good).astype(np.int64)
    rejected = [(int(n), reasons[n]) for n in np.flatnonzero(~good)]
    return PreparedColumns(row_numbers, {c: v[good] for c, v in parsed.items()}), rejected


def _reject(reasons: np.ndarray, mask: np.ndarray, reason: Callable[[Any], str], cells: np.ndarray | None = None) -> None:
    for index in np.flatnonzero(mask):
        reasons[index] = reason(None if cells is None else cells[index])


def _parse_integral(column: str, text: np.ndarray, well_formed: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    values = np.zeros(len(text), dtype=np.int64)
    candidates = np.where(well_formed, text, "0")
    try:
        values[:] = candidates.astype(np.int64)
    except OverflowError:  # some value needs more than 64 bits: find which, one by one
        for index in np.flatnonzero(well_formed):
            number = int(text[index])
            if feature_store_layout.INT64_MIN <= number <= feature_store_layout.INT64_MAX:
                values[index] = number
            elif pd.isna(reasons[index]):
                reasons[index] = f"{column} value {text[index]!r} does not fit in a 64-bit integer"
    return values


def _parse_fractional(column: str, text: np.ndarray, present: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    values = np.zeros(len(text), dtype=np.float64)
    candidates = np.where(present, text, "0")
    try:
        values[:] = candidates.astype(np.float64)
        unparsable = np.zeros(len(text), dtype=bool)
    except ValueError:  # some cell is not a number: find which, one by one
        unparsable = np.zeros(len(text), dtype=bool)
        for index in np.flatnonzero(present):
            try:
                values[index] = float(text[index])
            except ValueError:
                unparsable[index] = True
    open_rows = pd.isna(reasons)
    _reject(reasons, open_rows & unparsable, lambda cell: f"{column} value {cell!r} is not a number", text)
    _reject(reasons, open_rows & present & ~unparsable & ~np.isfinite(values),
            lambda cell: f"{column} value {cell!r} is not a finite number", text)
    return values
