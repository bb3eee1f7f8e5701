"""`mlops`: the command line of the local face (and of tools that work against AWS too).

Each command module exposes `register(subparsers)`; the handler it sets with `set_defaults(func=...)`
returns the process exit code.

| command | module |
|---|---|
| `mlops local up` | `local.cli.up` |
| `mlops local run FILE` | `local.cli.run` (following the flow: `local.cli.follow`, `local.cli.approve`) |
| `mlops local schedule run NAME` | `local.cli.schedule` |
| `mlops local score FILE` | `local.cli.score` (batch scoring by drop) |
| `mlops pipeline run` | `local.cli.pipeline` |
| `mlops demo` | `local.cli.demo` |
| `mlops predict` | `local.cli.predict` |
| `mlops data generate` | `local.cli.datagen` |
| `mlops approvals resend PACKAGE_ARN` | `local.cli.approvals_resend` |
| `mlops status` | `local.cli.status` |
| `mlops lineage PACKAGE_ARN` | `local.cli.lineage` |

Exit codes: `local.cli.common` (`exit_code_for`), the table in docs/contracts.md. Every option's help
shows its default (`local.cli.common.MlopsArgumentParser`).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

from local.cli import approvals_resend, datagen, demo, lineage, pipeline, predict, run, schedule, score, status, up  # noqa: E402
from local.cli.common import MlopsArgumentParser, VersionAction  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    # Every sub-parser is an MlopsArgumentParser too (argparse makes them of the parent's class).
    parser = MlopsArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=VersionAction,
                        help="show the installed version (and the git commit of a checkout) and exit")
    subparsers = parser.add_subparsers(dest="command", required=True)
    local_group = subparsers.add_parser("local", help="run the stack on this machine (moto + local runtime)")
    local_commands = local_group.add_subparsers(dest="local_command", required=True)
    up.register(local_commands)
    run.register(local_commands)
    schedule.register(local_commands)
    score.register(local_commands)
    pipeline.register(subparsers)
    datagen.register(subparsers)
    demo.register(subparsers)
    predict.register(subparsers)
    approvals_resend.register(subparsers)
    status.register(subparsers)
    lineage.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
