"""`mlops demo`: the whole flow on this machine, from a generated CSV to a registered model.

Generates the reference housing dataset (10,000 rows, fixed seed), starts the local cloud, drops the
file into incoming/ like a user, shows each pipeline step as it runs, prints the registered model
package with its metrics, and stops everything it started.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from local.commands.local import (
    DEFAULT_STATE_DIR,
    EXIT_INTERNAL_ERROR,
    EXIT_OK,
    EXIT_TIMEOUT,
    RunError,
    RunSession,
    run_dataset,
)

DEMO_ROWS = 10_000
DEMO_SEED = 7


def _say(message: str) -> None:
    print(message, flush=True)


def write_demo_csv(path: Path, rows: int = DEMO_ROWS, seed: int = DEMO_SEED) -> Path:
    from local.datagen import generate_housing

    path.parent.mkdir(parents=True, exist_ok=True)
    generate_housing(rows, seed).to_csv(path, index=False)
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    from local.cloud import LocalCloud

    state_dir = Path(args.state_dir).resolve()
    csv_path = write_demo_csv(state_dir / "demo" / "house_pricing.csv", args.rows, args.seed)
    _say(f"1. generated {args.rows} houses (seed {args.seed}): {csv_path}")
    _say("2. starting the local cloud (moto + local runtime + Ray) ...")
    started = time.monotonic()
    try:
        with LocalCloud(state_dir, parameters=_parameters(args)) as cloud:
            _say(f"   up in {time.monotonic() - started:.0f} s: AWS endpoint {cloud.endpoint_url}, "
                 f"approval API {cloud.api_url}")
            _say("3. dropping the file into incoming/ and following it:")
            session = RunSession(cloud.endpoint_url, cloud.state_dir, cloud.stack.outputs, args,
                                 deadline=time.monotonic() + args.timeout, progress=lambda m: _say("   " + m),
                                 cloud=cloud, api_url=cloud.api_url)
            result = run_dataset(session, csv_path, "PRICE")
            _say("4. outcome:")
            _say(json.dumps(result, indent=2))
            _say(f"   emails and Slack messages: {cloud.outbox_dir}")
    except TimeoutError as exc:
        _say(f"demo timed out: {exc}")
        return EXIT_TIMEOUT
    except RunError as exc:
        _say(f"demo failed: {exc}")
        return EXIT_INTERNAL_ERROR
    _say("5. local cloud stopped.")
    return EXIT_OK if result["status"] in ("registered", "approved", "deployed") else EXIT_INTERNAL_ERROR


def _parameters(args: argparse.Namespace) -> dict:
    return {"MaxTuningJobs": str(args.max_tuning_jobs)} if args.max_tuning_jobs else {}


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the whole flow locally on a generated dataset")
    parser.add_argument("--rows", type=int, default=DEMO_ROWS)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--max-tuning-jobs", type=int, default=None,
                        help="training jobs the tuning step runs (default: the template's)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    parser.set_defaults(func=cmd_demo, approve=False, reject=False)

