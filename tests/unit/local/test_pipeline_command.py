"""`mlops pipeline run` argument handling (the run itself is covered by the integration tests)."""
from __future__ import annotations

import argparse

import pytest

from local.cli.pipeline import cmd_run, parse_parameters


def test_parameters_are_name_value_pairs_of_the_pipelines_own_parameters():
    assert parse_parameters(["IngestionMode=OfflineStore", "MaxTuningJobs=8", "FeatureGroupName=a=b"]) == {
        "IngestionMode": "OfflineStore", "MaxTuningJobs": "8", "FeatureGroupName": "a=b"}
    with pytest.raises(ValueError, match="unknown pipeline parameter 'IngestMode'; known: .*IngestionMode"):
        parse_parameters(["IngestMode=OfflineStore"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_parameters(["IngestionMode"])


def test_a_bad_parameter_stops_before_anything_starts(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    csv.write_text("PRICE,A\n1,2\n")
    args = argparse.Namespace(csv=str(csv), target=None, state_dir=str(tmp_path / "state"), timeout=5.0,
                              json=True, parameter=["Bogus=1"])
    assert cmd_run(args) == 2
    assert "unknown pipeline parameter 'Bogus'" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
