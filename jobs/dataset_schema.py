"""What a CSV dataset becomes: its schema (a Feature Store name and a feature type per column) and
its rows, typed, dropped or rejected with the reason. Used by the ingest step.

The rules are `mlops_shared.csv_rules` (intake applies the same ones to a sample). The file is read
as a stream of chunks (`CsvFile`): a first pass decides each column's type, a second prepares the
rows chunk by chunk, so memory is bounded by the chunk size, not the file.

`prepare_rows` (PutRecord path: cell strings as the feature store wants them, None for a missing
cell) and `prepare_columns` (bulk path: typed Arrow columns with nulls) make exactly the same
keep/drop/reject decisions with the same reasons as `csv_rules.row_verdict`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs import common, feature_store_layout
from mlops_shared import csv_rules

FEATURE_GROUP_NAME_MAX = 64
FEATURE_NAME_PATTERN = csv_rules.FEATURE_NAME_PATTERN
DEFAULT_CHUNK_ROWS = 250_000
_NA = sorted(csv_rules.NA_SPELLINGS)
_NUMBER = csv_rules.NUMBER_PATTERN.pattern


@dataclass(frozen=True)
class Schema:
    columns: list[str]  # the CSV's column names as the user wrote them (stripped), the target included
    feature_names: list[str]  # the Feature Store name of each column (csv_rules.feature_store_names)
    types: dict[str, str]  # feature name -> Integral | Fractional
    target: str  # the target column's CSV name

    @property
    def target_index(self) -> int:
        return self.columns.index(self.target)

    @property
    def target_feature(self) -> str:
        return self.feature_names[self.target_index]

    def feature_definitions(self) -> list[dict[str, str]]:
        """Feature definitions of the group: the pipeline's own features, then the CSV columns."""
        return [dict(d) for d in feature_store_layout.PIPELINE_FEATURE_DEFINITIONS] + [
            {"FeatureName": name, "FeatureType": self.types[name]} for name in self.feature_names]


@dataclass
class Chunk:
    """Consecutive data rows of the file: the well-formed ones as text cells (index: row number,
    columns: the CSV names) and the ones with another number of fields than the header."""

    frame: pd.DataFrame
    ragged: list[tuple[int, list[str]]] = field(default_factory=list)


@dataclass
class Outcome:
    """Rows of a chunk that were not kept: (row number, reason, the row's fields)."""

    rejected: list[tuple[int, str, list[str]]] = field(default_factory=list)
    dropped: list[tuple[int, str, list[str]]] = field(default_factory=list)


# --------------------------------------------------------------------------- reading
class CsvFile:
    """A CSV on local disk (or in memory), read as a stream: the header, then chunks of rows.

    Parsed by Python's `csv` module exactly as intake parses its sample (comma, `"` quotes, UTF-8
    with an optional BOM, blank lines skipped). Row numbers count data rows from 0."""

    def __init__(self, source: str | Path | bytes, uri: str):
        self.source, self.uri = source, uri
        with self._open() as handle:
            reader = csv.reader(handle, strict=True)
            try:
                header = next((row for row in reader if not _is_blank(row)), None)
            except csv.Error as err:
                raise common.JobFailure(f"{uri} is not a readable CSV file: line {reader.line_num}: {err}") from None
            except UnicodeDecodeError as err:
                raise common.JobFailure(_encoding_message(uri, err)) from None
        if header is None:
            raise common.JobFailure(f"{uri} is empty; see {csv_rules.DOCS_PAGE}")
        self.header = [name.strip() for name in header]
        problem = csv_rules.header_problem(header)
        if problem:
            raise common.JobFailure(f"{problem.message} {problem.fix} (see {csv_rules.DOCS_PAGE})")

    def _open(self) -> io.TextIOBase:
        if isinstance(self.source, bytes):
            raw: Any = io.BytesIO(self.source)
        else:
            raw = open(self.source, "rb")  # noqa: SIM115 - closed by the text wrapper
        # utf-8-sig: a BOM at the start is not part of the first column's name.
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")

    def chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        with self._open() as handle:
            reader = csv.reader(handle, strict=True)
            width = len(self.header)
            row_number = 0
            try:
                for fields in reader:  # the header: the first line that is not blank
                    if not _is_blank(fields):
                        break
                while batch := list(itertools.islice(reader, rows)):
                    # Usually every line of a batch is a well-formed row: one check in C for all.
                    if width > 1 and set(map(len, batch)) == {width}:
                        numbers = list(range(row_number, row_number + len(batch)))
                        row_number += len(batch)
                        yield self._chunk(numbers, batch, [])
                        continue
                    numbers, good, ragged = [], [], []
                    for fields in batch:
                        if _is_blank(fields):
                            continue
                        if len(fields) == width:
                            numbers.append(row_number)
                            good.append(fields)
                        else:
                            ragged.append((row_number, fields))
                        row_number += 1
                    if good or ragged:
                        yield self._chunk(numbers, good, ragged)
            except csv.Error as err:
                raise common.JobFailure(
                    f"{self.uri} cannot be parsed from line {reader.line_num} on: {err}. Check the quoting there: "
                    f"every opening double quote needs a closing one (see {csv_rules.DOCS_PAGE})") from None
            except UnicodeDecodeError as err:
                raise common.JobFailure(_encoding_message(self.uri, err)) from None

    def _chunk(self, numbers: list[int], rows: list[list[str]], ragged: list[tuple[int, list[str]]]) -> Chunk:
        frame = pd.DataFrame(rows, columns=self.header, index=pd.Index(numbers, dtype=np.int64), dtype=object)
        return Chunk(frame, list(ragged))


def _is_blank(row: Sequence[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _encoding_message(uri: str, err: UnicodeDecodeError) -> str:
    return (f"{uri} is not valid UTF-8 (byte {err.object[err.start:err.end].hex()} at offset {err.start} of a "
            f"read block); save it as UTF-8 and upload it again (see {csv_rules.DOCS_PAGE})")


def spool(body: Any, path: Path, block: int = 8 << 20) -> int:
    """Copies a streaming body (an S3 GetObject body) to `path` a block at a time; returns the bytes."""
    size = 0
    with path.open("wb") as out:
        for data in iter(lambda: body.read(block), b""):
            out.write(data)
            size += len(data)
    return size


# --------------------------------------------------------------------------- cells, a column at a time
# Python's str.strip() whitespace: the Arrow kernels below trim exactly what csv_rules.parse_cell does.
_WHITESPACE = "".join(chr(code) for code in range(0x110000) if chr(code).isspace())
_NUMBER_RE2 = f"^(?:{_NUMBER})$"
_INTEGER_RE2 = f"^(?:{csv_rules.INTEGER_PATTERN.pattern})$"
_INT64_SAFE_DIGITS = 18  # any integer of up to 18 digits fits 64 bits


@dataclass
class CellKinds:
    """`csv_rules.parse_cell` for a whole column of text cells at once, with Arrow's compute kernels
    (C++: trimming, set membership, RE2 regexes, number parsing): which cells are missing, which are
    finite numbers (and their values), which numbers are integers that fit 64 bits. Whatever is
    neither missing nor a number is a bad cell. The patterns are csv_rules' (ASCII digits only, so
    RE2 and Python's `re` agree)."""

    text: pa.Array  # stripped
    missing: np.ndarray
    numeric: np.ndarray
    values: np.ndarray  # float64; 0 where not numeric
    integral: np.ndarray

    @classmethod
    def of(cls, column: pd.Series) -> "CellKinds":
        import pyarrow.compute as pc

        text = pc.utf8_trim(pa.array(column.to_numpy(dtype=object), type=pa.string()), characters=_WHITESPACE)
        missing = pc.is_in(text, value_set=pa.array(_NA, type=pa.string())).to_numpy(zero_copy_only=False)
        well_formed = pc.match_substring_regex(text, _NUMBER_RE2).to_numpy(zero_copy_only=False)
        values = pc.cast(pc.if_else(pa.array(well_formed), text, "0"), pa.float64()).to_numpy(zero_copy_only=False)
        numeric = well_formed & np.isfinite(values)
        integral = numeric & pc.match_substring_regex(text, _INTEGER_RE2).to_numpy(zero_copy_only=False)
        long_digits = integral & (pc.utf8_length(pc.utf8_ltrim(text, characters="+-"))
                                  .to_numpy(zero_copy_only=False) > _INT64_SAFE_DIGITS)
        for index in np.flatnonzero(long_digits):
            integral[index] = csv_rules.INT64_MIN <= int(text[index].as_py()) <= csv_rules.INT64_MAX
        values = np.where(numeric, values, 0.0)
        return cls(text, missing.astype(bool), numeric, values, integral)

    @property
    def bad(self) -> np.ndarray:
        return ~self.missing & ~self.numeric

    def cell(self, index: int) -> str:
        return self.text[index].as_py()

    def integers(self, rows: np.ndarray) -> np.ndarray:
        """The int64 values of `rows` (each an integral cell)."""
        import pyarrow.compute as pc

        chosen = self.text.filter(pa.array(rows))
        return pc.cast(pc.replace_substring_regex(chosen, r"^\+", ""), pa.int64()).to_numpy(zero_copy_only=False)

    def count_into(self, tally: csv_rules.ColumnTally) -> None:
        """Adds these cells to a column's tally, as `ColumnTally.add` would one by one."""
        bad = self.bad
        tally.numbers += int(self.numeric.sum())
        tally.missing += int(self.missing.sum())
        tally.bad += int(bad.sum())
        if tally.first_bad is None and bad.any():
            tally.first_bad = self.cell(int(np.flatnonzero(bad)[0]))
        tally.all_integral = tally.all_integral and bool(self.integral[self.numeric].all())


# --------------------------------------------------------------------------- schema
def infer_schema(csv_file: CsvFile, target: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[Schema, int]:
    """Reads the whole file once and decides each column's type (csv_rules.ColumnTally); returns
    the schema and the number of data rows. Refuses a missing target, text columns and a target
    with fewer than two distinct values among the rows that would be kept."""
    columns = csv_file.header
    if target.strip() not in columns:
        near = [c for c in columns if c.lower() == target.strip().lower()]
        hint = f" ({near[0]!r} differs only in case)" if near else ""
        raise common.JobFailure(
            f"target column {target!r} is not in the CSV{hint}; columns found: {', '.join(columns)}. Name the "
            f"column to predict in the upload's `target` metadata or a dataset.json (see {csv_rules.DOCS_PAGE})"
        )
    target = target.strip()
    target_index = columns.index(target)
    tallies = [csv_rules.ColumnTally() for _ in columns]
    distinct_targets: set[float] = set()
    rows = 0
    for chunk in csv_file.chunks(chunk_rows):
        rows += len(chunk.frame) + len(chunk.ragged)
        for position, name in enumerate(columns):
            cells = CellKinds.of(chunk.frame[name])
            cells.count_into(tallies[position])
            if position == target_index and len(distinct_targets) < csv_rules.MIN_DISTINCT_TARGET_VALUES:
                distinct_targets.update(np.unique(cells.values[cells.numeric])[:2].tolist())
    if rows == 0:
        raise common.JobFailure(f"{csv_file.uri} has a header but no data rows; add the rows and upload it again")
    text_columns = [f"{name!r} (e.g. {tally.first_bad!r})" for name, tally in zip(columns, tallies) if tally.is_text]
    if text_columns:
        raise common.JobFailure(
            "only numeric columns can be used; text columns: " + ", ".join(text_columns)
            + ". Encode categories as numbers or drop those columns "
            + f"(see {csv_rules.DOCS_PAGE})"
        )
    if len(distinct_targets) < csv_rules.MIN_DISTINCT_TARGET_VALUES:
        only = f"one value ({next(iter(distinct_targets)):g})" if distinct_targets else "no value"
        raise common.JobFailure(
            f"the target {target!r} has {only} in all {rows} rows: there is nothing to learn. Check that the "
            f"right column is the target and that the export kept its values (see {csv_rules.DOCS_PAGE})"
        )
    names = csv_rules.feature_store_names(columns)
    types = {name: tally.feature_type for name, tally in zip(names, tallies)}
    return Schema(columns=list(columns), feature_names=names, types=types, target=target), rows


def effective_group_name(base: str, schema: Schema) -> str:
    """`<base>-<8 hex of sha1(feature definitions)>`, at most 64 characters.

    A group's feature definitions are fixed, so each schema gets its own group; the definitions are
    sorted so a file with the same columns in another order shares the group.
    """
    definitions = sorted(schema.feature_definitions(), key=lambda d: d["FeatureName"])
    digest = hashlib.sha1(json.dumps(definitions, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    room = FEATURE_GROUP_NAME_MAX - len(digest) - 1
    trimmed = base[:room].rstrip("-_")
    if not trimmed or not FEATURE_NAME_PATTERN.fullmatch(trimmed):
        raise common.JobFailure(f"feature group name {base!r} is not valid")
    return f"{trimmed}-{digest}"


# --------------------------------------------------------------------------- rows
def _ragged_outcome(chunk: Chunk, schema: Schema) -> Outcome:
    outcome = Outcome()
    for number, fields in chunk.ragged:
        verdict = csv_rules.row_verdict(fields, schema.columns, schema.target_index)
        outcome.rejected.append((number, verdict.reason or "malformed row", fields))
    return outcome


def prepare_rows(chunk: Chunk, schema: Schema) -> tuple[list[tuple[int, list[str | None]]], Outcome]:
    """The chunk's kept rows (row number, each column's value as the feature store wants it, None
    for a missing cell) and the rows dropped or rejected, by `csv_rules.row_verdict`."""
    outcome = _ragged_outcome(chunk, schema)
    good: list[tuple[int, list[str | None]]] = []
    integral = [schema.types[name] == csv_rules.INTEGRAL for name in schema.feature_names]
    for number, fields in zip(chunk.frame.index.tolist(), chunk.frame.itertuples(index=False, name=None)):
        fields = list(fields)
        verdict = csv_rules.row_verdict(fields, schema.columns, schema.target_index)
        if verdict.dropped:
            outcome.dropped.append((number, verdict.reason, fields))
            continue
        if not verdict.kept:
            outcome.rejected.append((number, verdict.reason, fields))
            continue
        values: list[str | None] = []
        for text, is_integral in zip(fields, integral):
            cell = csv_rules.parse_cell(text)
            if cell.kind == csv_rules.MISSING:
                values.append(None)
            else:
                values.append(str(int(text.strip())) if is_integral else repr(cell.value))
        good.append((number, values))
    return good, outcome


@dataclass
class PreparedColumns:
    """The kept rows of a chunk as typed columns (the bulk path's `prepare_rows`)."""

    row_numbers: np.ndarray  # int64, ascending: which CSV rows these are
    values: dict[str, pa.Array]  # feature name -> int64 (Integral) or float64 (Fractional), null = missing


def prepare_columns(chunk: Chunk, schema: Schema) -> tuple[PreparedColumns, Outcome]:
    """`prepare_rows` for large data, a column at a time (`CellKinds`): the same decisions and
    reasons (the first failing rule of a row, in `row_verdict`'s order); values come back as Arrow
    columns."""
    frame = chunk.frame
    count = len(frame)
    kinds = {name: CellKinds.of(frame[name]) for name in schema.columns}
    target = kinds[schema.target]
    reasons = np.full(count, None, dtype=object)
    dropped = target.missing
    for name in schema.columns:
        if name == schema.target:
            continue
        bad = kinds[name].bad & ~dropped & pd.isna(reasons)
        for index in np.flatnonzero(bad):
            reasons[index] = csv_rules.bad_cell_reason(name, kinds[name].cell(index))
    for index in np.flatnonzero(target.bad & ~dropped & pd.isna(reasons)):
        reasons[index] = csv_rules.bad_cell_reason(schema.target, target.cell(index))
    too_large = ~dropped & target.numeric & pd.isna(reasons) & (np.abs(target.values) > csv_rules.TARGET_MAGNITUDE_MAX)
    for index in np.flatnonzero(too_large):
        reasons[index] = (f"the target {schema.target} value {target.cell(index)!r} is beyond what the model "
                          "can learn (float32, about 3.4e38)")
    outcome = _ragged_outcome(chunk, schema)
    numbers = frame.index.to_numpy(dtype=np.int64)
    rejected = ~pd.isna(reasons)
    if dropped.any() or rejected.any():
        rows = frame.to_numpy(dtype=object)
        for index in np.flatnonzero(dropped):
            outcome.dropped.append((int(numbers[index]), f"the target {schema.target} is missing", list(rows[index])))
        for index in np.flatnonzero(rejected):
            outcome.rejected.append((int(numbers[index]), reasons[index], list(rows[index])))
    keep = ~dropped & ~rejected
    columns: dict[str, pa.Array] = {}
    for name, feature in zip(schema.columns, schema.feature_names):
        cells = kinds[name]
        mask = cells.missing[keep]
        if schema.types[feature] == csv_rules.INTEGRAL:
            # Every number of an Integral column is an integer that fits 64 bits (infer_schema checked).
            ints = np.zeros(count, dtype=np.int64)
            present = keep & cells.numeric
            ints[present] = cells.integers(present)
            columns[feature] = pa.array(ints[keep], type=pa.int64(), mask=mask)
        else:
            columns[feature] = pa.array(cells.values[keep], type=pa.float64(), mask=mask)
    return PreparedColumns(numbers[keep], columns), outcome

