"""`mlops`: the command line of the local face (and of tools that work against AWS too).

Each command group lives in `local/commands/<group>.py` and exposes `register(subparsers)`; the
handler it sets with `set_defaults(func=...)` returns the process exit code.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

COMMAND_MODULES = ("local", "pipeline", "data", "demo", "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"local.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"local.commands.{name}":
                continue  # command group not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
