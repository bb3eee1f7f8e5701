"""Every `mlops` command and option: help on each option with its default shown, `--version`, and
FILE / `--csv FILE` given exactly once (refused before anything starts)."""
from __future__ import annotations

import argparse
import re
from importlib import metadata

import pytest

from local import cli
from local.cli.common import EXIT_USAGE


def all_parsers(parser: argparse.ArgumentParser, path: str = "mlops"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from all_parsers(child, f"{path} {name}")


def shows_default(action: argparse.Action) -> bool:
    return action.default not in (None, False, [], argparse.SUPPRESS)


def test_every_option_of_every_command_has_help_and_shows_its_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping (argparse also breaks words at hyphens)
    parsers = dict(all_parsers(cli.build_parser()))
    assert {"mlops local run", "mlops local up", "mlops pipeline run", "mlops status", "mlops demo"} <= set(parsers)
    for path, parser in parsers.items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"{path}: {name} has no help"
            if shows_default(action) and action.option_strings:
                default = " ".join(str(action.default).split())
                assert re.search(r"default[^)]*" + re.escape(default), text), \
                    f"{path}: {name}'s help does not show its default {action.default!r}"


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as shown:
        cli.main(["--version"])
    assert shown.value.code == 0
    assert capsys.readouterr().out.startswith(f"mlops {metadata.version('ray-sagemaker-mlops')}")


@pytest.mark.parametrize("command", [["pipeline", "run"], ["local", "run"]])
def test_the_csv_is_given_once_as_file_or_as_csv(command, tmp_path, capsys):
    state = str(tmp_path / "state")
    present = tmp_path / "houses.csv"
    present.write_text("PRICE,A\n1,2\n")
    assert cli.main([*command, "--json", "--state-dir", state]) == EXIT_USAGE
    assert "give the CSV once" in capsys.readouterr().err
    assert cli.main([*command, str(present), "--csv", str(present), "--json", "--state-dir", state]) == EXIT_USAGE
    assert "give the CSV once" in capsys.readouterr().err
    # --csv is FILE under another name: the same check of the same path.
    missing = tmp_path / "missing.csv"
    assert cli.main([*command, "--csv", str(missing), "--json", "--state-dir", state]) == EXIT_USAGE
    assert f"no such file: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # refused before any cloud was started
