"""P5 benchmark helpers: the import-time breakdown beyond the boto3 baseline and the probe environment."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def test_breakdown_after_the_baseline_counts_only_what_the_module_adds():
    from bench.p5_functions import imports_after, parse_importtime

    stderr = textwrap.dedent("""\
        import time: self [us] | cumulative | imported package
        import time:      5000 |       5000 |     botocore.session
        import time:       300 |       5300 |   boto3.session
        import time:       200 |       5500 | boto3
        import time:      1000 |       1000 |     aws_xray_sdk.core
        import time:       400 |        400 |   botocore.stub
        import time:        50 |       1450 | app
    """)
    after = imports_after(stderr, "boto3")
    assert parse_importtime(after) == [("aws_xray_sdk", 1.0), ("botocore", pytest.approx(0.4)),
                                       ("app", pytest.approx(0.05))]
    # Without the baseline's line, nothing is cut.
    assert imports_after(stderr, "numpy") == stderr.rstrip("\n")


def test_probe_environment_looks_like_the_lambda_runtime(tmp_path: Path):
    from bench.p5_functions import lambda_runtime_environment, probe_environment

    env = probe_environment({"POWERTOOLS_SERVICE_NAME": "x", **lambda_runtime_environment("fn", tmp_path)})
    assert env["LAMBDA_TASK_ROOT"] == str(tmp_path)  # Powertools' Tracer is active only with it
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    assert env["POWERTOOLS_SERVICE_NAME"] == "x"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"


def test_the_probe_counts_only_what_the_module_adds_to_one_imported_before_the_clock(tmp_path: Path):
    import os
    import sys

    from bench.p5_functions import import_probe

    (tmp_path / "base_layer.py").write_text("TOTAL = sum(range(4_000_000))  # CPU work at import\n")
    (tmp_path / "handler_module.py").write_text("import base_layer\n")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    _, alone_cpu = import_probe("handler_module", tmp_path, env, sys.executable, path=[tmp_path])
    _, beyond_cpu = import_probe("handler_module", tmp_path, env, sys.executable, path=[tmp_path], after="base_layer")
    assert alone_cpu > 20  # the base layer's work is paid when nothing imported it first...
    assert beyond_cpu < alone_cpu / 4  # ...and not again when it was imported before the clock started
