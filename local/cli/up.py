"""`mlops local up`: the local cloud in the foreground, its URLs printed; Ctrl-C stops every process it started."""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from local.cli.common import DEFAULT_STATE_DIR, EXIT_USAGE, LOCAL_DEPLOY_PARAMETERS, parse_assignments, stderr


def cmd_up(args: argparse.Namespace) -> int:
    from local.cloud import LocalCloud
    from local.cloud_file import find_running_cloud

    state_dir = Path(args.state_dir)
    if find_running_cloud(state_dir):
        stderr(f"a local cloud is already running with state dir {state_dir}")
        return 1
    try:
        parameters = {**LOCAL_DEPLOY_PARAMETERS, **parse_assignments(args.parameter)}
    except ValueError as exc:
        stderr(f"mlops local up: {exc}")
        return EXIT_USAGE
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stderr("starting the local cloud ...")
    with LocalCloud(state_dir, replication_delay_seconds=args.replication_delay,
                    max_concurrent_executions=args.max_concurrent_executions, parameters=parameters,
                    strict=not args.no_strict) as cloud:
        outputs = cloud.stack.outputs
        print(f"AWS endpoint:      {cloud.endpoint_url}   (export AWS_ENDPOINT_URL={cloud.endpoint_url})")
        stages = sorted({f"/{r.stage}" if r.kind == "rest" else "" for r in cloud.stack.api_routes})
        for stage in stages or [""]:
            print(f"Approval API:      {cloud.api_url}{stage}")
        print(f"Runtime endpoint:  {cloud.endpoint_url}/endpoints/<name>/invocations")
        print(f"Console:           {cloud.console_url}   (read-only: executions, DAG, logs, models, lineage)")
        print(f"Drop CSVs into:    s3://{outputs.get('DataBucketName')}/incoming/")
        print(f"State:             {cloud.state_dir}  (outbox: {cloud.outbox_dir})")
        print(f"Credentials:       the local administrator's, in {cloud.cloud_file} ('credentials'); "
              f"strict face {'on' if cloud.strict else 'OFF'}")
        print("Ctrl-C stops everything.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stderr("stopping the local cloud ...")
    return 0


def register(local_commands) -> None:
    """`mlops local up` (under the `local` group the CLI creates)."""
    up = local_commands.add_parser("up", help="start the local cloud in the foreground; Ctrl-C stops it")
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="where the local cloud keeps its state")
    up.add_argument("--replication-delay", type=float, default=0.0,
                    help="seconds before Feature Store records reach the offline store")
    up.add_argument("--max-concurrent-executions", type=int, default=1,
                    help="pipeline executions run at the same time (more wait in a queue)")
    up.add_argument("--parameter", action="append", metavar="NAME=VALUE",
                    help="template parameter override (repeatable), e.g. RMSEThreshold=20000")
    up.add_argument("--no-strict", action="store_true",
                    help="debugging only: do not authenticate, authorize or check requests against the "
                         "services' constraints (default: strict, as AWS)")
    up.set_defaults(func=cmd_up)
