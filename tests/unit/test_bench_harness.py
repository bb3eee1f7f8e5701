"""The benchmark harness's own logic: targets, the report, benchmark selection, the child protocol
and the small parsers the benchmarks rely on. No benchmark is run here and nothing is timed."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from bench import harness
from bench.harness import (
    RATIO_AT_LEAST,
    RATIO_AT_MOST,
    VALUE_AT_MOST,
    Benchmark,
    Row,
    Target,
    format_number,
    not_measured,
    render_markdown,
)


def test_ratio_targets_compare_ours_over_baseline():
    faster = Target(RATIO_AT_LEAST, 5.0)
    assert faster.is_met(600.0, 100.0) is True
    assert faster.is_met(400.0, 100.0) is False
    slower = Target(RATIO_AT_MOST, 3.0)
    assert slower.is_met(2.9, 1.0) is True
    assert slower.is_met(3.1, 1.0) is False


def test_value_targets_ignore_the_baseline():
    latency = Target(VALUE_AT_MOST, 10.0)
    assert latency.is_met(9.9, None) is True
    assert latency.is_met(10.1, 0.1) is False


def test_missing_numbers_are_not_judged():
    assert Target(RATIO_AT_MOST, 3.0).is_met(None, 1.0) is None
    assert Target(RATIO_AT_MOST, 3.0).is_met(1.0, None) is None
    assert Target(RATIO_AT_MOST, 3.0).is_met(1.0, 0.0) is None
    assert Target(VALUE_AT_MOST, 1.0).is_met(None, None) is None


def test_bad_target_is_refused():
    with pytest.raises(ValueError, match="target kind"):
        Target("faster", 1.0)
    with pytest.raises(ValueError, match="finite"):
        Target(RATIO_AT_MOST, float("inf"))


def test_target_descriptions():
    assert Target(RATIO_AT_LEAST, 5).describe() == "≥ 5.00× baseline"
    assert Target(RATIO_AT_MOST, 1.6).describe() == "≤ 1.60× baseline"
    assert Target(VALUE_AT_MOST, 150).describe("ms") == "≤ 150 ms"


@pytest.mark.parametrize("value, text", [
    (None, "—"), (0, "0"), (123456.7, "123,457"), (12.34, "12.3"), (1.234, "1.23"), (0.01234, "0.0123"),
])
def test_number_format(value, text):
    assert format_number(value) == text


def test_row_survives_json_round_trip():
    row = Row("P1", "ingest", 900.0, 100.0, "rows/s", Target(RATIO_AT_LEAST, 5), notes="n", details={"rows": 3})
    again = Row.from_json(json.loads(json.dumps(row.to_json())))
    assert again == row
    assert again.ratio == pytest.approx(9.0)
    assert again.met is True


def test_report_has_machine_info_table_and_verdicts():
    rows = [
        Row("P3", "training", 8.0, 4.0, "s", Target(RATIO_AT_MOST, 1.6), notes="a | b"),
        Row("P6", "p99", 3.0, 0.2, "ms", Target(VALUE_AT_MOST, 10)),
        not_measured("P4", "1M rows", "s", Target(RATIO_AT_MOST, 3), "too slow"),
    ]
    machine = {"cores": 2, "memory_gb": 23.4, "cpu_model": "Some CPU", "os": "Linux", "python": "3.11.9",
               "ray": "2.60.0", "xgboost": "2.0.3", "xgboost-ray": "0.1.19"}
    text = render_markdown(rows, machine, "python -m bench --quick", "2026-01-01 00:00", "1.0", "2.0",
                           {"P3": 12.0}, quick=True)
    assert "2 cores, 23.4 GB memory, Some CPU" in text
    assert "ray 2.60.0, xgboost 2.0.3" in text
    assert "`python -m bench --quick` (quick sizes" in text
    assert "| Benchmark | Measure | Ours | Baseline | Ratio | Target | Met? | Notes |" in text
    assert "| P3 | training | 8.00 s | 4.00 s | 2.00× | ≤ 1.60× baseline | **no** | a \\| b |" in text
    assert "| P6 | p99 | 3.00 ms | 0.20 ms | 15.0× | ≤ 10.0 ms | yes |" in text
    assert "| P4 | 1M rows | — | — | — | ≤ 3.00× baseline | — | not measured: too slow |" in text
    assert "Summary: 1 met, 1 not met, 1 not measured" in text
    assert "shared" in text  # the caveat about a busy machine


def test_select_keeps_suite_order_and_refuses_unknown_keys():
    assert [b.key for b in harness.select("p3, P1")] == ["P1", "P3"]
    assert [b.key for b in harness.select(None)] == list(harness.BENCHMARKS)
    with pytest.raises(ValueError, match="P9"):
        harness.select("P1,P9")


@pytest.fixture
def fake_benchmarks(tmp_path, monkeypatch):
    """Two benchmark modules on sys.path: one that reports a row then fails, one that reports."""
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(textwrap.dedent("""
        from bench.harness import Row, Target, RATIO_AT_MOST
        def run(quick, workdir, report):
            report(Row("X1", "size " + ("small" if quick else "big"), 2.0, 1.0, "s", Target(RATIO_AT_MOST, 3)))
    """))
    (package / "broken.py").write_text(textwrap.dedent("""
        from bench.harness import Row, Target, RATIO_AT_MOST
        def run(quick, workdir, report):
            report(Row("X2", "first", 1.0, 1.0, "s", Target(RATIO_AT_MOST, 3)))
            raise RuntimeError("the service is missing")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(harness.BENCHMARKS, "X1", Benchmark("X1", "good", "fakebench.good", 10, 10))
    monkeypatch.setitem(harness.BENCHMARKS, "X2", Benchmark("X2", "broken", "fakebench.broken", 10, 10))
    yield
    for name in [m for m in sys.modules if m.startswith("fakebench")]:
        del sys.modules[name]


def test_child_writes_reported_rows(fake_benchmarks, tmp_path, monkeypatch):
    monkeypatch.setattr(harness.signal, "signal", lambda *a: None)  # leave pytest's handlers alone
    result = tmp_path / "x1.json"
    assert harness.child_main("X1", True, result, tmp_path / "w") == 0
    rows = [Row.from_json(r) for r in json.loads(result.read_text())]
    assert [(r.measure, r.met) for r in rows] == [("size small", True)]


def test_child_keeps_rows_and_explains_a_failure(fake_benchmarks, tmp_path, monkeypatch):
    monkeypatch.setattr(harness.signal, "signal", lambda *a: None)
    result = tmp_path / "x2.json"
    assert harness.child_main("X2", False, result, tmp_path / "w") == 1
    rows = [Row.from_json(r) for r in json.loads(result.read_text())]
    assert rows[0].measure == "first"
    assert rows[1].ours is None
    assert rows[1].notes == "not measured: RuntimeError: the service is missing"


def test_importtime_breakdown_sums_self_time_per_package():
    from bench.p5_functions import parse_importtime

    stderr = textwrap.dedent("""\
        import time: self [us] | cumulative | imported package
        import time:       100 |        100 |   botocore.utils
        import time:       200 |        300 | botocore
        import time:      1000 |       1000 |     aws_xray_sdk.core
        import time:        50 |       1400 | app
        garbage line
    """)
    assert parse_importtime(stderr, top=2) == [("aws_xray_sdk", 1.0), ("botocore", pytest.approx(0.3))]


def test_package_size_counts_function_and_layer_without_caches(tmp_path):
    from bench.p5_functions import package_size

    function = tmp_path / "fn"
    (function / "__pycache__").mkdir(parents=True)
    (function / "app.py").write_text("x" * 1000)
    (function / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"y" * 5000)
    layer = tmp_path / "shared" / "pkg"
    layer.mkdir(parents=True)
    (layer / "logic.py").write_text("z" * 500)
    unzipped, zipped = package_size(function, tmp_path / "shared")
    assert unzipped == 1500
    assert 0 < zipped < unzipped


def test_function_environments_resolve_template_intrinsics():
    from bench.p5_functions import template_environments

    root = Path(__file__).resolve().parents[2]
    environments = template_environments(root / "template.yaml")
    assert environments, "template.yaml declares no function under functions/"
    for variables in environments.values():
        assert variables.get("POWERTOOLS_SERVICE_NAME")
        assert all(isinstance(v, str) for v in variables.values())
