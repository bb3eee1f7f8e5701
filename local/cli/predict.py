"""`mlops predict ENDPOINT (--json '{...}' | --csv FILE | --npy FILE)`: score raw features on a deployed endpoint.

Talks to the local cloud that `mlops local up` is running (found through `<state>/cloud.json`), or,
with `--endpoint-url`, to any InvokeEndpoint-compatible URL; with `--aws` to the real AWS account
of the current credentials. Prints the endpoint's JSON answer (`{"predictions": [...]}`) on stdout.
The body goes as `application/json`, `text/csv` or, with `--npy`, `application/x-npy` (a NumPy .npy
file as `np.save` writes it, sent byte for byte: what the SageMaker SDK's NumpySerializer sends).

`--explain` asks the endpoint for each prediction's per-feature contributions (the SageMaker
CustomAttributes value `explain=true`, docs/monitoring.md): a table per row on a terminal (features
by the size of their contribution, then the bias and the prediction they add up to), the endpoint's
JSON answer when stdout is not a terminal or with `--format json`. (`--json` already names the
request body, hence `--format`.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from local.cli.common import DEFAULT_STATE_DIR, EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USAGE


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="score raw features on a deployed endpoint",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="endpoint name (see `mlops local run` output: endpoint_name)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--json", dest="json_body", help="one record, a list of records, or {\"instances\": [...]}")
    source.add_argument("--csv", dest="csv_file", help="CSV file of raw features (header optional; '-' = stdin)")
    source.add_argument("--npy", dest="npy_file",
                        help="NumPy .npy file of raw features: 2-D rows x features in the model's feature order, "
                             "or 1-D for one record ('-' = stdin)")
    parser.add_argument("--explain", action="store_true",
                        help="also return each feature's contribution to each prediction (CustomAttributes explain=true)")
    parser.add_argument("--format", choices=("auto", "table", "json"), default="auto",
                        help="output of --explain: a table on a terminal, JSON otherwise (default auto)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=f"local cloud state dir (default {DEFAULT_STATE_DIR})")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--endpoint-url", help="AWS endpoint URL to use instead of the running local cloud's")
    where.add_argument("--aws", action="store_true", help="use the AWS account of the current credentials")
    parser.set_defaults(func=run)


def request_body(args: argparse.Namespace) -> tuple[str, bytes]:
    """(content type, body) from --json, --csv or --npy; raises ValueError with a message for the user."""
    if args.json_body is not None:
        try:
            json.loads(args.json_body)
        except ValueError as exc:
            raise ValueError(f"--json is not valid JSON: {exc}") from None
        return "application/json", args.json_body.encode()
    option, name, content_type = (("--npy", args.npy_file, "application/x-npy") if args.npy_file is not None
                                  else ("--csv", args.csv_file, "text/csv"))
    if name == "-":
        body = sys.stdin.buffer.read()
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"{option} file not found: {path}")
        body = path.read_bytes()
    # The endpoint checks the array itself; this only catches the wrong file before a round trip.
    if option == "--npy" and not body.startswith(NPY_MAGIC):
        raise ValueError(f"--npy {name} is not a NumPy .npy file (write one with numpy.save)")
    return content_type, body


def runtime_client(args: argparse.Namespace):
    if args.aws:
        return boto3.client("sagemaker-runtime")
    if args.endpoint_url:
        return boto3.client("sagemaker-runtime", endpoint_url=args.endpoint_url)
    from local.cloud_file import find_running_cloud

    info = find_running_cloud(args.state_dir)
    if info is None:
        raise ValueError(f"no local cloud is running for state dir {args.state_dir}; start one with `mlops local up`")
    from local.cli.run import administrator_credentials

    return boto3.client("sagemaker-runtime", endpoint_url=info["endpoint_url"], region_name="us-east-1",
                        **administrator_credentials(info))


def run(args: argparse.Namespace) -> int:
    try:
        content_type, body = request_body(args)
        runtime = runtime_client(args)
    except ValueError as exc:
        print(f"mlops predict: {exc}", file=sys.stderr)
        return EXIT_USAGE
    extra = {"CustomAttributes": EXPLAIN_ATTRIBUTES} if args.explain else {}
    try:
        response = runtime.invoke_endpoint(EndpointName=args.endpoint, ContentType=content_type,
                                           Accept="application/json", Body=body, **extra)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"mlops predict: {error.get('Code', 'Error')}: {error.get('Message', exc)}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except BotoCoreError as exc:
        print(f"mlops predict: {exc}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    answer = response["Body"].read().decode()
    as_table = args.format == "table" or (args.format == "auto" and sys.stdout.isatty())
    if args.explain and as_table:
        try:
            sys.stdout.write(explanation_table(json.loads(answer)))
            return EXIT_OK
        except (ValueError, KeyError, TypeError) as exc:
            print(f"mlops predict: the endpoint's answer has no explanations ({exc}); as it came:", file=sys.stderr)
    sys.stdout.write(answer + "\n")
    return EXIT_OK


EXPLAIN_ATTRIBUTES = "explain=true"
NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins


def explanation_table(answer: dict) -> str:
    """One block per row: each feature's contribution (largest effect first), the bias and the
    prediction they add up to."""
    blocks = []
    for number, (prediction, explanation) in enumerate(zip(answer["predictions"], answer["explanations"])):
        contributions = sorted(explanation["contributions"].items(), key=lambda item: -abs(item[1]))
        width = max([len("feature"), len("(bias)"), *(len(name) for name, _ in contributions)])
        lines = [f"row {number}: prediction {prediction:,.4f}", f"  {'feature':<{width}}  {'contribution':>16}"]
        lines += [f"  {name:<{width}}  {value:>+16,.4f}" for name, value in contributions]
        lines.append(f"  {'(bias)':<{width}}  {explanation['bias']:>+16,.4f}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
