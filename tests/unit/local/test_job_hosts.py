"""Jobs run as SageMaker runs them: in the jobs image's environment, on as many hosts as their
instance count (each its own container root, address and CloudWatch log stream). The jobs here are
tiny Python programs (no Ray); the two-host pipeline on real Ray is in
tests/integration/test_pipeline_two_hosts.py."""
from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from local.aws.gateway import LocalGateway
from local.aws.sagemaker_pipelines.job_logs import (
    PROCESSING_LOG_GROUP,
    TRAINING_LOG_GROUP,
    HostLogStream,
    hosts_of_job,
    training_jobs_of_tuning_job,
)
from local.aws.sagemaker_pipelines.service import PipelineExecutor
from local.cli.step_hosts import step_summaries

ROLE = "arn:aws:iam::123456789012:role/jobs"

# Each host writes what it was told about itself into an output named after itself, so the test
# sees which hosts ran, with which root and environment. `--fail-on` makes one host fail.
HOST_JOB = r"""
import json, os, pathlib, sys, time
root = pathlib.Path(os.environ["SM_CONTAINER_ROOT"])
config = json.loads((root / "config/resourceconfig.json").read_text())
host = config["current_host"]
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print(f"job on {host} of {config['hosts']}", flush=True)
if args.get("--fail-on") == host:
    (root / "output").mkdir(parents=True, exist_ok=True)
    (root / "output/message").write_text(f"host {host} could not read its shard\n")
    sys.exit(1)
if args.get("--sleep-on") == host:
    time.sleep(120)
out = root / "processing/output/hosts"
out.mkdir(parents=True, exist_ok=True)
(out / f"{host}.json").write_text(json.dumps({
    "root": str(root), "hosts": config["hosts"], "ray_address": os.environ.get("RAY_ADDRESS"),
    "ray_head_port": os.environ.get("RAY_HEAD_PORT"), "cluster": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"),
    "cwd": os.getcwd(), "executable": sys.executable, "path": sys.path}))
"""


# A job's code arrives as an input, as for SageMaker's script processors: an entrypoint item holds at
# most 256 characters and no line break (its pattern is Java's `.*`).
CODE_URI = "s3://hosts-out/code/host_job.py"
CODE_DIR = "/opt/ml/processing/input/code"


def one_step_definition(entrypoint: list[str]) -> dict:
    return {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "Count", "Type": "Integer", "DefaultValue": 1},
                       {"Name": "FailOn", "Type": "String", "DefaultValue": "none"},
                       {"Name": "SleepOn", "Type": "String", "DefaultValue": "none"}],
        "Steps": [{"Name": "Hosts", "Type": "Processing", "Arguments": {
            "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": entrypoint,
                                 "ContainerArguments": ["--fail-on", {"Get": "Parameters.FailOn"},
                                                        "--sleep-on", {"Get": "Parameters.SleepOn"}]},
            "ProcessingInputs": [{"InputName": "code", "S3Input": {
                "S3Uri": CODE_URI, "LocalPath": CODE_DIR, "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "hosts", "S3Output": {
                "S3Uri": {"Std:Join": {"On": "/", "Values": ["s3://hosts-out", {"Get": "Execution.PipelineExecutionId"}]}},
                "LocalPath": "/opt/ml/processing/output/hosts", "S3UploadMode": "EndOfJob"}}]},
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": {"Get": "Parameters.Count"},
                                                      "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}},
            "RoleArn": ROLE}}],
    }


@pytest.fixture
def pipelines(tmp_path, monkeypatch):
    with LocalGateway() as gateway:
        monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
        urllib.request.urlopen(urllib.request.Request(f"{gateway.url}/moto-api/reset", method="POST")).read()
        executor = PipelineExecutor(gateway, tmp_path / "work", "127.0.0.1:6379", emit_events=False).install()
        sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
        s3.create_bucket(Bucket="hosts-out")
        s3.put_object(Bucket="hosts-out", Key=CODE_URI.split("/", 3)[3], Body=HOST_JOB.encode())
        for name, entrypoint in {
            "hosts": ["python3", f"{CODE_DIR}/host_job.py"],
            "imports-moto": ["python3", "-c", "import jobs.common, mlops_shared.aws; import moto"],
            "imports-sagemaker": ["python3", "-c", "import sagemaker"],
            "imports-local": ["python3", "-c", "from local.aws import gateway"],
            "imports-tests": ["python3", "-c", "import tests.conftest"],
        }.items():
            sm.create_pipeline(PipelineName=name, PipelineDefinition=json.dumps(one_step_definition(entrypoint)),
                               RoleArn=ROLE)
        try:
            yield executor, sm, s3, boto3.client("logs")
        finally:
            executor.shutdown()


def run(executor, sm, pipeline: str, **parameters):
    arn = sm.start_pipeline_execution(
        PipelineName=pipeline, ClientRequestToken=f"{pipeline}-{time.time_ns()}".ljust(32, "-"),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in parameters.items()])["PipelineExecutionArn"]
    described = executor.wait(arn, timeout=120)
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    return arn, described, steps


def host_reports(s3, arn: str) -> dict[str, dict]:
    execution_id = arn.rsplit("/", 1)[1]
    listed = s3.list_objects_v2(Bucket="hosts-out", Prefix=f"{execution_id}/").get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1].removesuffix(".json"): json.loads(
        s3.get_object(Bucket="hosts-out", Key=o["Key"])["Body"].read()) for o in listed}


def job_name_of(step: dict) -> str:
    return step["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1]


# -- the image's environment -------------------------------------------------------------------

@pytest.mark.parametrize("pipeline, module", [
    ("imports-moto", "moto"), ("imports-sagemaker", "sagemaker"), ("imports-local", "local"), ("imports-tests", "tests"),
])
def test_a_job_importing_what_the_image_lacks_fails_with_its_own_error(pipelines, pipeline, module):
    executor, sm, _, _ = pipelines
    _, described, steps = run(executor, sm, pipeline)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert steps[0]["FailureReason"].endswith(f"ModuleNotFoundError: No module named '{module}'"), steps[0]


def test_a_job_sees_only_the_image_program_and_interpreter(pipelines):
    executor, sm, s3, _ = pipelines
    arn, described, _ = run(executor, sm, "hosts")
    assert described["PipelineExecutionStatus"] == "Succeeded", described
    report = host_reports(s3, arn)["algo-1"]
    image = executor.image
    assert report["executable"] == str(image.python)
    program = report["cwd"]  # the image's WORKDIR, a snapshot of what the Dockerfile copies there
    assert program.startswith(str(image.base_dir / "program"))
    assert sorted(p.name for p in Path(program).iterdir()) == ["jobs", "mlops_shared"]
    # The script's own directory (its code input, under the host's root) comes first, as for any
    # `python3 script.py`; then the WORKDIR on PYTHONPATH. Nothing of the repository.
    script_dir, *searched = report["path"]
    assert script_dir == f"{report['root']}/processing/input/code"
    outside_python = {p for p in searched if not p.startswith((str(image.env_dir), sys.base_prefix))}
    assert outside_python == {program}, outside_python


# -- hosts ---------------------------------------------------------------------------------------

def test_one_host_is_algo_1_on_the_shared_ray_head_with_its_log_in_cloudwatch(pipelines):
    executor, sm, s3, logs = pipelines
    arn, described, steps = run(executor, sm, "hosts")
    report = host_reports(s3, arn)["algo-1"]
    assert report["hosts"] == ["algo-1"] and report["ray_address"] == "127.0.0.1:6379"
    job = job_name_of(steps[0])
    assert hosts_of_job(logs, PROCESSING_LOG_GROUP, job) == ["algo-1"]
    (stream,) = logs.describe_log_streams(logGroupName=PROCESSING_LOG_GROUP, logStreamNamePrefix=f"{job}/")["logStreams"]
    assert stream["logStreamName"].startswith(f"{job}/algo-1-")
    messages = [e["message"] for e in logs.get_log_events(logGroupName=PROCESSING_LOG_GROUP,
                                                            logStreamName=stream["logStreamName"])["events"]]
    assert "job on algo-1 of ['algo-1']" in messages
    log_file = executor.work_dir / arn.rsplit("/", 1)[1] / "logs" / "Hosts.log"
    assert "job on algo-1" in log_file.read_text()  # the local log file stays


def test_two_hosts_get_their_own_roots_addresses_and_log_streams_and_no_shared_head(pipelines):
    executor, sm, s3, logs = pipelines
    arn, described, steps = run(executor, sm, "hosts", Count=2)
    assert described["PipelineExecutionStatus"] == "Succeeded", described
    reports = host_reports(s3, arn)  # each host's output dir was uploaded
    assert sorted(reports) == ["127.0.0.2", "127.0.0.3"]
    first, second = reports["127.0.0.2"], reports["127.0.0.3"]
    assert first["hosts"] == second["hosts"] == ["127.0.0.2", "127.0.0.3"]
    assert first["root"] != second["root"] and first["root"].endswith("/127.0.0.2")
    assert first["ray_address"] is None and second["ray_address"] is None
    assert first["ray_head_port"] == second["ray_head_port"] and int(first["ray_head_port"]) > 0
    assert first["cluster"] == "1"
    assert hosts_of_job(logs, PROCESSING_LOG_GROUP, job_name_of(steps[0])) == ["127.0.0.2", "127.0.0.3"]
    assert step_summaries(logs, steps) == [{"name": "Hosts", "status": "Succeeded",
                                            "hosts": ["127.0.0.2", "127.0.0.3"]}]


def test_one_failing_host_fails_the_job_with_its_reason_and_stops_the_others(pipelines):
    executor, sm, _, _ = pipelines
    started = time.monotonic()
    _, described, steps = run(executor, sm, "hosts", Count=2, FailOn="127.0.0.3", SleepOn="127.0.0.2")
    assert time.monotonic() - started < 60  # the sleeping head was stopped, not waited for
    assert described["PipelineExecutionStatus"] == "Failed"
    assert steps[0]["FailureReason"] == "host 127.0.0.3 could not read its shard (host 127.0.0.3)"


# -- log streams -----------------------------------------------------------------------------------

def test_a_host_log_reaches_its_stream_while_it_is_written_and_the_rest_at_close(aws, tmp_path):
    logs = boto3.client("logs")
    path = tmp_path / "host.log"
    path.write_text("first line\nsecond")
    stream = HostLogStream(lambda: boto3.client("logs"), TRAINING_LOG_GROUP, "tune-a-001-0123abcd", "algo-1",
                           path, started=1700000000).start()
    deadline = time.monotonic() + 10
    events = []
    while time.monotonic() < deadline and not events:
        events = logs.get_log_events(logGroupName=TRAINING_LOG_GROUP,
                                     logStreamName="tune-a-001-0123abcd/algo-1-1700000000")["events"]
        time.sleep(0.2)
    assert [e["message"] for e in events] == ["first line"]  # "second" is not a whole line yet
    with path.open("a") as handle:
        handle.write(" half\n" + "x" * 300_000 + "\nlast, unterminated")
    stream.close()
    messages = [e["message"] for e in logs.get_log_events(
        logGroupName=TRAINING_LOG_GROUP, logStreamName="tune-a-001-0123abcd/algo-1-1700000000")["events"]]
    assert messages[:2] == ["first line", "second half"]
    assert len(messages[2].encode()) == 256 * 1024 - 26  # an event's limit
    assert messages[3] == "last, unterminated"
    assert training_jobs_of_tuning_job(logs, "tune-a") == {"tune-a-001-0123abcd": ["algo-1"]}
    assert training_jobs_of_tuning_job(logs, "tune") == {}  # another tuning job's name is not a prefix match
    assert hosts_of_job(logs, PROCESSING_LOG_GROUP, "never-ran") == []


def test_sharded_inputs_give_each_host_its_share_and_replicated_ones_everything(aws, tmp_path):
    from local.aws.sagemaker_pipelines.hosts import JobHosts
    from local.aws.sagemaker_pipelines.jobs import download_prefix, input_shard

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="shards")
    for n in range(5):
        s3.put_object(Bucket="shards", Key=f"train/part-{n}.parquet", Body=b"x")
    hosts = JobHosts(("127.0.0.2", "127.0.0.3"), ray_port=1)
    got = {}
    for index, host in enumerate(hosts.names):
        download_prefix(s3, "s3://shards/train", tmp_path / host, input_shard("ShardedByS3Key", index, hosts))
        got[host] = sorted(p.name for p in (tmp_path / host).iterdir())
    assert got == {"127.0.0.2": ["part-0.parquet", "part-2.parquet", "part-4.parquet"],
                   "127.0.0.3": ["part-1.parquet", "part-3.parquet"]}
    download_prefix(s3, "s3://shards/train", tmp_path / "all", input_shard("FullyReplicated", 1, hosts))
    assert len(list((tmp_path / "all").iterdir())) == 5
