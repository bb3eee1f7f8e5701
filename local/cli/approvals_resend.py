"""`mlops approvals resend PACKAGE_ARN [--to EMAIL]`: email fresh approve/reject links for a package
that is still waiting for approval (its links expired, or an approver lost the email).

The stack's notify function sends them (the CLI only invokes it): to `--to` — which must be one of
the configured approvers — or to every approver, at most once per approver, package and hour. Talks
to the local cloud that `mlops local up` is running, or with `--aws --function NAME` to the stack's
notify function in the AWS account of the current credentials (output `NotifyApprovalFunctionName`;
the caller needs `lambda:InvokeFunction` on it). Prints the function's answer as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from local.cli.common import DEFAULT_STATE_DIR, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USAGE

EXIT_REFUSED = 1  # the function refused: not pending, not an approver (its reason is printed)


def register(subparsers) -> None:
    group = subparsers.add_parser("approvals", help="approval links")
    commands = group.add_subparsers(dest="approvals_command", required=True)
    parser = commands.add_parser("resend", help="email fresh approval links for a pending model package",
                                 description=__doc__.splitlines()[0])
    parser.add_argument("model_package_arn", help="the pending model package (see `mlops local run` output)")
    parser.add_argument("--to", dest="recipient", help="one approver's address (default: every approver)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=f"local cloud state dir (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--aws", action="store_true", help="use the AWS account of the current credentials")
    parser.add_argument("--function", help="the notify function's name (required with --aws)")
    parser.set_defaults(func=run)


def lambda_client_and_function(args: argparse.Namespace):
    if args.aws:
        if not args.function:
            raise ValueError("--aws needs --function (the stack output NotifyApprovalFunctionName)")
        return boto3.client("lambda"), args.function
    from local.cli.run import administrator_credentials
    from local.cloud_file import find_running_cloud

    info = find_running_cloud(args.state_dir)
    if info is None:
        raise ValueError(f"no local cloud is running for state dir {args.state_dir}; start one with `mlops local up`")
    function = args.function or ((info.get("stack") or {}).get("outputs") or {}).get("NotifyApprovalFunctionName")
    if not function:
        raise ValueError("the running local cloud publishes no NotifyApprovalFunctionName output")
    client = boto3.client("lambda", endpoint_url=info["endpoint_url"], region_name="us-east-1",
                          **administrator_credentials(info))
    return client, function


def resend(client, function: str, model_package_arn: str, recipient: str | None) -> dict:
    """The notify function's answer to a fresh-links request (raises RuntimeError if it failed)."""
    response = client.invoke(FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(
        {"fresh_links": {"model_package_arn": model_package_arn, "recipient": recipient}}).encode())
    answer = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError"):
        raise RuntimeError(answer.get("errorMessage") or json.dumps(answer))
    return answer


def run(args: argparse.Namespace) -> int:
    try:
        client, function = lambda_client_and_function(args)
    except ValueError as exc:
        print(f"mlops approvals resend: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        answer = resend(client, function, args.model_package_arn, args.recipient)
    except (ClientError, BotoCoreError, RuntimeError) as exc:
        print(f"mlops approvals resend: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    print(json.dumps(answer, indent=2))
    if not answer.get("fresh_links"):
        print(f"mlops approvals resend: {answer.get('reason', 'refused')}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK
