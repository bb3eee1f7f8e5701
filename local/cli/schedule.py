"""`mlops local schedule run NAME [--aws]`: start an EventBridge Scheduler schedule's target now.

EventBridge Scheduler has no "run now" API; what works on AWS works locally too: a one-time copy of
the schedule (`at()` now, same target, role, input, retry policy and dead-letter queue,
`ActionAfterCompletion: DELETE`) is created next to it. The local runtime (`local.aws.scheduler`)
fires it within its poll interval and deletes it; AWS does the same. Prints one JSON object
(`schedule`, `one_time_schedule`, `status`: "fired" once the copy is gone, "pending" if it was not
fired within `--wait` seconds). Exit codes: 0 fired, 3 still pending, 2 usage (unknown or disabled
schedule, no running cloud), 1 anything else.
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta, timezone

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from local.cli.common import DEFAULT_STATE_DIR, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE

COPIED = ("Target", "KmsKeyArn")


def register(local_commands) -> None:
    group = local_commands.add_parser("schedule", help="EventBridge Scheduler schedules of the stack")
    commands = group.add_subparsers(dest="schedule_command", required=True)
    parser = commands.add_parser("run", help="start a schedule's target now", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the schedule's name (stack output DriftMonitorScheduleName)")
    parser.add_argument("--group", default="default", help="the schedule group (default default)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the run (default 60.0)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=f"local cloud state dir (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--aws", action="store_true", help="use the AWS account of the current credentials")
    parser.set_defaults(func=run)


def scheduler_client(args: argparse.Namespace):
    if args.aws:
        return boto3.client("scheduler")
    from local.cli.run import administrator_credentials
    from local.cloud_file import find_running_cloud

    info = find_running_cloud(args.state_dir)
    if info is None:
        raise ValueError(f"no local cloud is running for state dir {args.state_dir}; start one with `mlops local up`")
    return boto3.client("scheduler", endpoint_url=info["endpoint_url"], region_name="us-east-1",
                        **administrator_credentials(info))


def run_now(scheduler, name: str, group: str = "default", wait: float = 60.0, now: datetime | None = None) -> dict:
    schedule = scheduler.get_schedule(Name=name, GroupName=group)
    if schedule.get("State", "ENABLED") != "ENABLED":
        raise ValueError(f"schedule {group}/{name} is {schedule['State']}: enable it to run it")
    now = now or datetime.now(timezone.utc)
    one_time = f"{name[:40]}-run-{now:%Y%m%d%H%M%S}"
    when = (now + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    scheduler.create_schedule(Name=one_time, GroupName=group, ScheduleExpression=f"at({when})",
                              ScheduleExpressionTimezone="UTC", FlexibleTimeWindow={"Mode": "OFF"},
                              ActionAfterCompletion="DELETE", State="ENABLED",
                              Description=f"run now of {name}"[:512],
                              **{k: schedule[k] for k in COPIED if schedule.get(k)})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            scheduler.get_schedule(Name=one_time, GroupName=group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return {"schedule": name, "one_time_schedule": one_time, "status": "fired"}
            raise
        time.sleep(1.0)
    return {"schedule": name, "one_time_schedule": one_time, "status": "pending"}


def run(args: argparse.Namespace) -> int:
    try:
        result = run_now(scheduler_client(args), args.name, args.group, args.wait)
    except ValueError as exc:
        print(json.dumps({"status": "error", "error": str(exc)}))
        return EXIT_USAGE
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        print(json.dumps({"status": "error", "error": f"{code}: {exc.response['Error'].get('Message', '')}"}))
        return EXIT_USAGE if code == "ResourceNotFoundException" else EXIT_INTERNAL_ERROR
    except BotoCoreError as exc:
        print(json.dumps({"status": "error", "error": str(exc)}))
        return EXIT_INTERNAL_ERROR
    print(json.dumps(result))
    return EXIT_OK if result["status"] == "fired" else EXIT_TIMEOUT

