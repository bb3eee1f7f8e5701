"""The CSV validator on its own: each problem gets its own code and an actionable message, valid edge
cases pass, and large objects are judged from a sample. (The same cases run through the handler, S3,
SNS and SageMaker in test_start_pipeline.py.)"""
from __future__ import annotations

import codecs

import pytest

from mlops_shared.csv_validation import _MAGIC_NUMBERS, validate_csv_sample
from mlops_shared.intake import (
    DatasetRef,
    client_request_token,
    dataset_config_key,
    execution_display_name,
)
from mlops_shared.quarantine import quarantine_key

HEADER = "PRICE,SQUARE_FEET,NUM_BEDROOMS"


def csv_text(rows: int = 120, header: str = HEADER, newline: str = "\n") -> str:
    lines = [header] + [f"{100000 + i * 7},{1500 + i},{2 + i % 4}" for i in range(rows)]
    return newline.join(lines) + newline


def check(data: bytes | str, target: str = "PRICE", min_rows: int = 100, size: int | None = None):
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return validate_csv_sample(raw, object_size=len(raw) if size is None else size, target_column=target,
                               min_data_rows=min_rows)


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty_file", "empty"),
        (b"\xef\xbb\xbf\r\n\n", "empty_file", "empty"),
        (b"\x1f\x8b\x08\x00rest", "compressed_file", "gzip"),
        (b"PK\x03\x04rest", "compressed_file", "ZIP"),
        (b"BZh91AY&SY", "compressed_file", "bzip2"),
        (b"PAR1\x00\x00", "binary_file", "Parquet"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "binary_file", "Excel"),
        (b"PRICE,A\n1,\x00\x002\n", "binary_file", "NUL"),
        (b"  <!DOCTYPE html><html></html>", "html_page", "HTML"),
        (b"<html lang='en'><body>Access denied</body></html>", "html_page", "HTML"),
        (codecs.BOM_UTF16_LE + csv_text().encode("utf-16-le"), "unsupported_encoding", "UTF-16"),
        (csv_text().encode("utf-16-le"), "unsupported_encoding", "UTF-16"),
        (csv_text().encode("utf-16-be"), "unsupported_encoding", "UTF-16"),
        ("PRICE,CITY\n1,Montr\u00e9al\n".encode("cp1252"), "unsupported_encoding", "line 2"),
        (csv_text().replace(",", ";"), "wrong_delimiter", "semicolon"),
        (csv_text().replace(",", "\t"), "wrong_delimiter", "tab"),
        (csv_text().replace(",", "|"), "wrong_delimiter", "pipe"),
        (csv_text(header="PRICE,,NUM_BEDROOMS"), "empty_column_name", "2"),
        (csv_text(header="PRICE,SQUARE_FEET,PRICE"), "duplicate_column_name", "'PRICE'"),
        (csv_text(header="COST,SQUARE_FEET,NUM_BEDROOMS"), "missing_target", "'PRICE'"),
        (csv_text(header="price,SQUARE_FEET,NUM_BEDROOMS"), "missing_target", "case"),
        ("PRICE\n" + "1\n" * 150, "no_feature_columns", "only the target"),
        (csv_text() + "1,2\n", "rejected_rows", "line 122: the row has 2 fields, the header has 3"),
        (csv_text() + "1,2,3,4\n", "rejected_rows", "line 122: the row has 4 fields"),
        (csv_text() + "1,\"1,500\",3\n", "rejected_rows", "line 122: SQUARE_FEET value '1,500' is not a number"),
        (csv_text() + "1,inf,3\n", "rejected_rows", "'inf' is infinite"),
        (csv_text() + "1,1e999,3\n", "rejected_rows", "'1e999' is too large"),
        (csv_text() + "1e39,1,3\n", "rejected_rows", "beyond what the model can learn"),
        ("0,1,2\n" + csv_text(header="1,2,3"), "no_header_row", "no header row"),
        (",".join(f"c{i}" for i in range(2498)) + ",PRICE\n", "too_many_columns", "2499 columns"),
        ("PRICE,CITY,ROOMS\n" + "".join(f"{i},Town {i},{i}\n" for i in range(150)), "non_numeric_value",
         "'CITY' has 'Town 0' on line 2"),
        ("PRICE,ROOMS\n" + "".join(f"${i},{i}\n" for i in range(150)), "non_numeric_target", "'$0' on line 2"),
        ("PRICE,ROOMS\n" + "".join(f"100,{i}\n" for i in range(250)), "constant_target",
         "the target PRICE has one value (100) in all 250 rows: there is nothing to learn"),
        (csv_text(rows=99), "too_few_rows", "99 data rows"),
        (csv_text(rows=99) + "NA,1,2\n", "too_few_rows", "1 row(s) without a PRICE value dropped"),
        ('PRICE,A\n"1,2\n3,4\n', "malformed_csv", "line 3"),
        ('PRICE,A\n"1"x,2\n', "malformed_csv", "line 2"),
    ],
)
def test_problem_has_specific_code_message_and_fix(data, code, words):
    result = check(data)
    assert not result.ok
    assert result.issue.code == code, result.issue
    assert words.lower() in result.issue.message.lower()
    assert result.issue.fix


@pytest.mark.parametrize(
    "data",
    [
        csv_text(),
        "\ufeff" + csv_text(),
        csv_text(newline="\r\n"),
        csv_text() + "\n\n  \n",
        "\n  \r\n" + csv_text(),
        csv_text(header="NUM_BEDROOMS,PRICE,SQUARE_FEET"),
        '"PRICE","SQUARE_FEET","NUM_BEDROOMS"\n' + "".join(f'"{i}","{i}.5","-1e3"\n' for i in range(100)),
        csv_text(rows=100),
    ],
    ids=["plain", "bom", "crlf", "trailing-blank-lines", "leading-blank-lines", "reordered", "quoted-numbers",
         "exactly-minimum"],
)
def test_valid_edge_cases_pass(data):
    result = check(data)
    assert result.ok, result.issue
    assert result.profile.header[1:] and "PRICE" in result.profile.header


def test_profile_describes_the_file():
    result = check("\ufeff" + csv_text(newline="\r\n"))
    profile = result.profile
    assert profile.encoding == "utf-8-sig"
    assert profile.line_ending == "CRLF"
    assert profile.delimiter == ","
    assert profile.header == ["PRICE", "SQUARE_FEET", "NUM_BEDROOMS"]
    assert profile.feature_columns == ["SQUARE_FEET", "NUM_BEDROOMS"]
    assert profile.rows_in_sample == profile.estimated_rows == 120


def test_large_object_is_judged_from_its_sample_and_rows_estimated():
    text = csv_text(rows=10_000).encode()
    sample = text[:4096]  # cut in the middle of a line, as a ranged GET would
    result = validate_csv_sample(sample, object_size=len(text), target_column="PRICE", min_data_rows=100)
    assert result.ok, result.issue
    assert not result.profile.sample_is_whole_file
    assert 9_000 < result.profile.estimated_rows < 11_000

    too_small = validate_csv_sample(sample, object_size=len(text), target_column="PRICE", min_data_rows=50_000)
    assert too_small.issue.code == "too_few_rows"
    assert too_small.issue.details["estimated"] is True


def test_multibyte_character_cut_by_the_sample_is_not_an_encoding_error():
    text = ("PRICE,NAME_LEN\n" + "".join(f"{i},{i}\n" for i in range(200))).encode() + "\u00e9".encode() * 5000
    cut = text.index(b"\xc3") + 1  # the sample ends between the two bytes of an 'é'
    result = validate_csv_sample(text[:cut], object_size=len(text), target_column="PRICE")
    assert result.issue is None or result.issue.code != "unsupported_encoding"


def test_sample_without_any_line_break_is_rejected():
    result = validate_csv_sample(b"A" * 4096, object_size=10_000_000, target_column="PRICE")
    assert result.issue.code == "line_too_long"


def test_client_request_token_is_stable_and_valid():
    a = DatasetRef("bucket", "incoming/a.csv", version_id="v1", etag="e1")
    token = client_request_token(a)
    assert token == client_request_token(DatasetRef("bucket", "incoming/a.csv", version_id="v1", etag="other"))
    assert token != client_request_token(DatasetRef("bucket", "incoming/a.csv", version_id="v2", etag="e1"))
    assert 32 <= len(token) <= 64 and token.isalnum()
    unversioned = DatasetRef("bucket", "incoming/a.csv", etag='"abc"')
    assert unversioned.version == "abc"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("incoming/house_pricing.csv", "house-pricing-20240501-123045"),
        ("incoming/team/My Houses (v2).CSV", "My-Houses-v2-20240501-123045"),
        ("incoming/---.csv", "dataset-20240501-123045"),
        ("incoming/" + "x" * 200 + ".csv", "x" * 66 + "-20240501-123045"),
    ],
)
def test_display_name_is_recognisable_and_valid(key, expected):
    import re
    from datetime import datetime, timezone

    name = execution_display_name(key, datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc))
    assert name == expected
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}", name)


def test_paths_next_to_the_file():
    assert quarantine_key("incoming/a/b.csv") == "quarantine/a/b.csv"
    assert dataset_config_key("incoming/a/b.csv") == "incoming/a/dataset.json"
    assert dataset_config_key("incoming/b.csv") == "incoming/dataset.json"


def test_missing_feature_cells_are_data_and_counted_per_column():
    spellings = ["", "NA", "NaN", "null", "N/A", " ", "None"]
    rows = "".join(f"{100000 + i},{spellings[i % len(spellings)] if i % 3 == 0 else 1500 + i},{2 + i % 4}\n"
                   for i in range(140))
    result = check(HEADER + "\n" + rows)
    assert result.ok, result.issue
    assert result.profile.missing_cells == {"PRICE": 0, "SQUARE_FEET": 47, "NUM_BEDROOMS": 0}
    assert result.profile.kept_rows == 140 and result.profile.rejected_rows == 0


def test_rows_without_a_target_are_dropped_counted_and_not_rejected():
    result = check(csv_text(rows=100) + "".join(f"{blank},1,2\n" for blank in ["", "NA", "nan", "null"]))
    assert result.ok, result.issue
    profile = result.profile
    assert (profile.rows_in_sample, profile.kept_rows, profile.dropped_rows, profile.rejected_rows) == (104, 100, 4, 0)
    assert profile.estimated_rows == 100
    assert profile.missing_cells["PRICE"] == 4


def test_rejected_rows_pass_up_to_max_rejected_rows():
    data = csv_text() + "1,2\n" + "3,x,4\n"
    allowed = validate_csv_sample(data.encode(), object_size=len(data), target_column="PRICE", max_rejected_rows=2)
    assert allowed.ok, allowed.issue
    assert allowed.profile.rejected_rows == 2 and allowed.profile.kept_rows == 120
    assert allowed.profile.rejected_examples == [
        {"line": 122, "reason": "the row has 2 fields, the header has 3"},
        {"line": 123, "reason": "SQUARE_FEET value 'x' is not a number"},
    ]
    refused = validate_csv_sample(data.encode(), object_size=len(data), target_column="PRICE", max_rejected_rows=1)
    assert refused.issue.code == "rejected_rows"
    assert "at most 1 (MaxRejectedRows)" in refused.issue.message
    assert "line 122" in refused.issue.message and "line 123" in refused.issue.message
    assert "MaxRejectedRows" in refused.issue.fix
    assert refused.issue.details["rejected_rows"] == 2


def test_a_few_text_cells_in_a_numeric_column_are_rejected_rows_not_a_text_column():
    # 3 of 123 cells are text: the column is numeric, the 3 rows are rejected.
    data = csv_text() + "1,abc,3\n2,abd,3\n3,abe,3\n"
    assert check(data).issue.code == "rejected_rows"
    result = validate_csv_sample(data.encode(), object_size=len(data), target_column="PRICE", max_rejected_rows=3)
    assert result.ok, result.issue


def test_column_names_are_accepted_and_their_feature_store_names_recorded():
    header = "Sale Price,Square Feet,Lot (acres),year,größe_m²"
    rows = "".join(f"{100000 + i},{1500 + i},{i % 5},{1990 + i % 30},{50 + i}\n" for i in range(120))
    result = check(header + "\n" + rows, target="Sale Price")
    assert result.ok, result.issue
    assert result.profile.feature_names == {
        "Sale Price": "Sale_Price", "Square Feet": "Square_Feet", "Lot (acres)": "Lot_acres", "year": "year_2",
        "größe_m²": "grosse_m2",
    }
    assert result.profile.feature_columns == ["Square Feet", "Lot (acres)", "year", "größe_m²"]


def test_constant_target_in_a_partial_sample_is_left_to_the_ingest_step():
    text = ("PRICE,ROOMS\n" + "".join(f"100,{i}\n" for i in range(5000)) + "200,1\n").encode()
    result = validate_csv_sample(text[:4096], object_size=len(text), target_column="PRICE")
    assert result.ok, result.issue
    assert not result.profile.sample_is_whole_file
    assert result.profile.distinct_target_values == 1


def test_nesting_depth_counts_brackets_outside_strings_only():
    from mlops_shared.dataset_config import nesting_depth

    assert nesting_depth('{"target": "[[[{{{"}') == 1
    assert nesting_depth('{"a": [{"b": "\\"[["}]}') == 3
    assert nesting_depth("[" * 5000) == 5000
    assert nesting_depth("1") == 0


def test_every_quarantine_code_is_explained_in_the_docs_page():
    """A code people can receive that docs/csv-format.md does not explain fails here."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    shared = root / "functions" / "shared" / "mlops_shared"
    sources = "".join((shared / name).read_text() for name in ("csv_validation.py", "csv_rules.py", "intake.py"))
    codes = set(re.findall(r'(?:ValidationIssue|HeaderProblem)\(\s*"([a-z_]+)"', sources))
    codes |= {code for _, code, _ in _MAGIC_NUMBERS}
    assert {"no_header_row", "rejected_rows", "file_too_large", "invalid_dataset_config"} <= codes
    page = (root / "docs" / "csv-format.md").read_text()
    assert not {code for code in codes if f"| `{code}` |" not in page}


@pytest.mark.parametrize("blank_lines", [5000, 4090], ids=["sample-all-blank", "sample-ends-in-the-header"])
def test_a_sample_of_blank_lines_says_so(blank_lines):
    text = b"\n" * blank_lines + csv_text().encode()
    result = validate_csv_sample(text[:4096], object_size=len(text), target_column="PRICE")
    assert result.issue.code == "empty_file" and "only blank lines" in result.issue.message
