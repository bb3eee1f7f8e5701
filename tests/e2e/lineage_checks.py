"""`mlops lineage` on a package of a local run, compared with what the run actually used.

`assert_lineage_matches_run(state_dir, result)` takes the state dir of a running local cloud and
the `mlops local run --json` object of a run that registered a package. It runs `mlops lineage
--json` in this process and checks it against evidence the recorder never read:

* the data object: the line the Ingest job logged (CloudWatch Logs, `/aws/sagemaker/ProcessingJobs`)
  when it resolved its dataset reference, `dataset s3://bucket/key (version V) from ...`;
* the pipeline execution: the run's own `execution_arn`;
* the trial's hyperparameters: the `hyperparameters.json` the best trial's container read
  (`<state>/work/pipelines/<execution>/HPTuning/<trial>/.../input/config/`), and the tuning job's
  best trial as the executor chose it;
* the image/code version: the execution's `JobImageUri` parameter pinned to the digest of the
  jobs environment the local cloud runs every job in (`local.jobs_image`).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path

import boto3

from local.aws.lineage_jobs import local_image_digest
from local.cli import main as cli_main
from local.cli.run import administrator_credentials
from local.cloud_file import find_running_cloud
from local.jobs_image import default_image

PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
# Keys are what people name files: spaces, parentheses, `&` — only the version and the reference URI are tokens.
_DATASET_LINE = re.compile(r"dataset (s3://.+?) \(version ([^\s)]+)\) from s3://\S+$")


def mlops_lineage_json(state_dir: Path, model_package_arn: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["lineage", model_package_arn, "--json", "--state-dir", str(state_dir)])
    lines = out.getvalue().strip().splitlines()
    assert code == 0 and len(lines) == 1, (code, lines)  # one JSON object on stdout
    return json.loads(lines[0])


def wait_for_lineage(state_dir: Path, model_package_arn: str, timeout: float = 120.0) -> dict:
    """The recorder runs on the registry's event, asynchronously: until the chain is there."""
    deadline = time.monotonic() + timeout
    while True:
        lineage = mlops_lineage_json(state_dir, model_package_arn)
        if lineage["training"] is not None and lineage["code"] is not None:
            return lineage
        dead = [p.read_text()[:3000] for p in sorted((Path(state_dir) / "dlq").glob("*record-lineage*.json"))]
        assert not dead, f"the lineage recorder failed: {dead}"
        assert time.monotonic() < deadline, f"lineage still incomplete after {timeout:.0f} s: {lineage['missing']}"
        time.sleep(1.0)


def assert_lineage_matches_run(state_dir: Path, result: dict) -> dict:
    state_dir = Path(state_dir)
    info = find_running_cloud(state_dir)
    assert info is not None, f"no local cloud runs for {state_dir}"
    kwargs = dict(endpoint_url=info["endpoint_url"], region_name="us-east-1", **administrator_credentials(info))
    sagemaker, logs = boto3.client("sagemaker", **kwargs), boto3.client("logs", **kwargs)
    execution_arn, package_arn = result["execution_arn"], result["model_package_arn"]
    lineage = wait_for_lineage(state_dir, package_arn)
    assert lineage["model_package_arn"] == package_arn

    # The execution that produced it.
    assert lineage["pipeline_execution"]["arn"] == execution_arn

    steps = {s["StepName"]: s for s in sagemaker.list_pipeline_execution_steps(
        PipelineExecutionArn=execution_arn)["PipelineExecutionSteps"]}

    # The exact object version: what Ingest logged when it opened the data.
    ingest_job = steps["Ingest"]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1]
    messages, token = [], None
    while True:
        page = logs.filter_log_events(logGroupName=PROCESSING_LOG_GROUP, logStreamNamePrefix=f"{ingest_job}/",
                                      **({"nextToken": token} if token else {}))
        messages += [e["message"] for e in page["events"]]
        token = page.get("nextToken")
        if not token or not page["events"]:
            break
    [(uri, version)] = {m.groups() for m in map(_DATASET_LINE.search, messages) if m}
    dataset = lineage["dataset"]
    assert f"s3://{dataset['bucket']}/{dataset['key']}" == uri == dataset["uri"]
    assert dataset["version_id"] == version and version

    # The trial: the best one of the tuning job, with the hyperparameters its container read.
    tuning_job = steps["HPTuning"]["Metadata"]["TuningJob"]["Arn"].rsplit("/", 1)[1]
    best = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job)["BestTrainingJob"]
    training = lineage["training"]
    assert training["training_job_name"] == best["TrainingJobName"]
    trial_root = state_dir / "work" / "pipelines" / execution_arn.rsplit("/", 1)[1] / "HPTuning" / best["TrainingJobName"]
    [read_by_trial] = list(trial_root.rglob("input/config/hyperparameters.json"))[:1]
    assert training["hyperparameters"] == json.loads(read_by_trial.read_text()), read_by_trial
    assert all(training["hyperparameters"][k] == v for k, v in best["TunedHyperParameters"].items())

    # The image/code version: the pipeline's image, pinned to the environment every job ran in.
    parameters = {p["Name"]: p["Value"] for p in sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution_arn)["PipelineParameters"]}
    if "JobImageUri" not in parameters:  # not given at the start: the definition's default applied
        definition = json.loads(sagemaker.describe_pipeline_definition_for_execution(
            PipelineExecutionArn=execution_arn)["PipelineDefinition"])
        parameters["JobImageUri"] = next(p["DefaultValue"] for p in definition["Parameters"] if p["Name"] == "JobImageUri")
    image = default_image()
    assert image.is_built()
    digest = local_image_digest(image.fingerprint())
    assert lineage["code"]["image_uri"] == f"{parameters['JobImageUri']}@{digest}"
    assert lineage["code"]["image_digest"] == digest

    # The manifest Ingest wrote, and it exists.
    manifest_uri = lineage["manifest"]["uri"]
    bucket, key = manifest_uri.removeprefix("s3://").split("/", 1)
    boto3.client("s3", **kwargs).head_object(Bucket=bucket, Key=key)
    return lineage
