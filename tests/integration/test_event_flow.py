"""The event layer end to end on the local cloud provisioned from template.yaml: S3 -> EventBridge ->
start_pipeline -> quarantine or pipeline execution -> status events -> notifications, and the
SageMaker model package events moto does not emit."""
from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from local import cli
from local.cli.common import EXIT_PIPELINE_FAILED, EXIT_QUARANTINED
from local.cli.datagen import generate_housing
from tests.e2e.lineage_checks import assert_lineage_matches_run


# -- helpers ------------------------------------------------------------------------------------
def housing_csv(rows: int, seed: int) -> bytes:
    buffer = io.StringIO()
    generate_housing(rows, seed).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def csv_failing_at_ingest() -> bytes:
    """Valid in the part start_pipeline samples (the first 256 KiB), but its last row holds a
    non-finite number, which ingest rejects (MaxRejectedRows 0) before any Ray work."""
    body = housing_csv(7000, seed=3)
    assert len(body) > 300 * 1024
    return body + b"inf,1990,2500.5,3,2.0,1.0,1,0,1\n"


def upload(cloud, name: str, body: bytes, target: str | None = None) -> dict:
    extra = {"Metadata": {"target": target}} if target else {}
    return cloud.client("s3").put_object(Bucket=cloud.stack.outputs["DataBucketName"], Key=f"incoming/{name}",
                                         Body=body, **extra)


def subscribe_queue(cloud, topic_arn: str, name: str) -> str:
    """An SQS queue subscribed to the topic: how a test reads the notifications people get."""
    sqs = cloud.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    cloud.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def rule_to_queue(cloud, name: str, pattern: dict) -> str:
    """An extra EventBridge rule delivering to a queue: how a test observes events on the bus."""
    sqs, events = cloud.client("sqs"), cloud.client("events")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=name, Targets=[{"Id": "test", "Arn": arn}])
    return url


def receive(cloud, queue_url: str, count: int, timeout: float) -> list[dict]:
    sqs = cloud.client("sqs")
    bodies: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < count and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def run_cli(capsys, cloud, path, *extra) -> tuple[int, dict]:
    """`mlops local run FILE --json` in this process: it finds the running cloud through cloud.json."""
    capsys.readouterr()
    code = cli.main(["local", "run", str(path), "--json", "--quiet", "--state-dir", str(cloud.state_dir), *extra])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines  # exactly one JSON object on stdout
    return code, json.loads(lines[0])


# -- tests --------------------------------------------------------------------------------------
def test_bad_files_are_quarantined_with_the_original_kept_and_no_execution(make_cloud, tmp_path, capsys):
    cloud = make_cloud()
    notifications = subscribe_queue(cloud, cloud.stack.outputs["NotificationTopicArn"], "test-quarantine-notes")
    good = housing_csv(150, seed=1).decode()
    bad_files = {
        "no-target.csv": (good.replace("PRICE", "COST", 1).encode(), "missing_target"),
        # A word where a number belongs: a rejected row, and the run accepts none (MaxRejectedRows 0).
        "words.csv": (good.replace("\n", "\nabc,1990,2000,3,2.0,1.0,1,0,1\n", 1).encode(), "rejected_rows"),
        "empty.csv": (b"", "empty_file"),
    }
    versions = {name: upload(cloud, name, body)["VersionId"] for name, (body, _) in bad_files.items()}

    s3, bucket = cloud.client("s3"), cloud.stack.outputs["DataBucketName"]
    for name, (body, code) in bad_files.items():
        reason = cloud.wait_for(lambda: _reason(s3, bucket, name), timeout=120, description=f"{name} quarantined")
        assert reason["code"] == code
        assert reason["source"]["version_id"] == versions[name]
        original = s3.get_object(Bucket=bucket, Key=f"incoming/{name}", VersionId=versions[name])
        assert original["Body"].read() == body  # the source is never lost
        assert s3.get_object(Bucket=bucket, Key=f"quarantine/{name}")["Body"].read() == body

    # Through the CLI, like a user: one more bad file, reported as a quarantine (its own exit code).
    path = tmp_path / "cli-bad.csv"
    path.write_bytes(bad_files["no-target.csv"][0])
    code, result = run_cli(capsys, cloud, path, "--timeout", "120")
    assert code == EXIT_QUARANTINED, result
    assert result["status"] == "quarantined" and result["reason"].startswith("missing_target")
    assert result["execution_arn"] is None

    cloud.wait_for_events(timeout=60)
    assert cloud.list_executions() == []
    messages = receive(cloud, notifications, 4, timeout=30)
    assert sorted(m["MessageAttributes"]["event_type"]["Value"] for m in messages) == ["dataset_quarantined"] * 4
    assert cloud.dead_letters() == []


def _reason(s3, bucket, name):
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"quarantine/{name}.reason.json")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def test_a_target_given_at_upload_is_the_one_trained_on(make_cloud, tmp_path):
    """`mlops local run FILE --target preis` on a German header: the object metadata comes back as
    S3 returns it (keys lower-cased) through the gateway, and the execution trains on `preis`."""
    import argparse

    from local.cli.run import RunSession, upload as cli_upload, wait_for_intake

    cloud = make_cloud()
    s3, bucket = cloud.client("s3"), cloud.stack.outputs["DataBucketName"]
    s3.put_object(Bucket=bucket, Key="notes/any.txt", Body=b"x", Metadata={"Target": "preis", "owner": "Ana"})
    assert s3.head_object(Bucket=bucket, Key="notes/any.txt")["Metadata"] == {"target": "preis", "owner": "Ana"}

    path = tmp_path / "häuser.csv"
    generate_housing(150, seed=4).rename(columns={"PRICE": "preis"}).to_csv(path, index=False)
    session = RunSession(cloud.endpoint_url, cloud.state_dir, cloud.stack.outputs,
                         argparse.Namespace(approve=False, reject=False), deadline=time.monotonic() + 120,
                         cloud=cloud, credentials=cloud.client_kwargs(with_endpoint=False))
    dataset = cli_upload(session, path, "preis")
    intake = wait_for_intake(session, dataset, time.time() - 5)
    assert "execution_arn" in intake, intake
    sagemaker = cloud.client("sagemaker")
    parameters = {p["Name"]: p["Value"] for p in sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=intake["execution_arn"])["PipelineParameters"]}
    assert parameters["TargetColumn"] == "preis"
    assert parameters["InputDataUri"] == f"s3://{bucket}/incoming/häuser.csv"
    sagemaker.stop_pipeline_execution(PipelineExecutionArn=intake["execution_arn"])


def test_ten_uploads_each_delivered_ten_times_concurrently_start_ten_executions_every_api_knows(make_cloud):
    """EventBridge delivers at least once: ten objects, each "Object Created" event delivered ten
    times, the replays sent concurrently. Exactly ten executions, and every pipeline API answers
    about each of them (one owner per execution, not the executor for some calls and moto for others)."""
    cloud = make_cloud(max_concurrent_executions=1)
    bucket = cloud.stack.outputs["DataBucketName"]
    s3 = cloud.client("s3")
    names = [f"replayed-{i}.csv" for i in range(10)]
    details = []
    for name in names:
        version = upload(cloud, name, csv_failing_at_ingest())["VersionId"]
        head = s3.head_object(Bucket=bucket, Key=f"incoming/{name}")
        details.append({"version": "0", "bucket": {"name": bucket},
                        "object": {"key": f"incoming/{name}", "size": head["ContentLength"],
                                   "etag": head["ETag"].strip('"'), "version-id": version, "sequencer": "0"},
                        "request-id": "replay", "requester": "123456789012", "reason": "PutObject"})

    def replay(detail: dict) -> None:
        events = cloud.client("events")
        for _ in range(9):
            events.put_events(Entries=[{"Source": "aws.s3", "DetailType": "Object Created",
                                        "Resources": [f"arn:aws:s3:::{bucket}"], "Detail": json.dumps(detail)}])

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(replay, details))
    time.sleep(1)
    cloud.wait_for_events(timeout=180)
    executions = cloud.list_executions()
    assert len(executions) == 10
    assert cloud.dispatcher.delivered >= 100 and cloud.dead_letters() == []

    sagemaker = cloud.client("sagemaker")
    trained_on = set()
    for summary in executions:
        arn = summary["PipelineExecutionArn"]
        assert sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionArn"] == arn
        parameters = {p["Name"]: p["Value"] for p in sagemaker.list_pipeline_parameters_for_execution(
            PipelineExecutionArn=arn)["PipelineParameters"]}
        trained_on.add(parameters["InputDataUri"])
        assert "ingest" in sagemaker.describe_pipeline_definition_for_execution(
            PipelineExecutionArn=arn)["PipelineDefinition"].lower()
        sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn)  # answers, queued or running
    assert trained_on == {f"s3://{bucket}/incoming/{name}" for name in names}


def test_fifty_distinct_files_start_fifty_executions_and_shutdown_stops_the_queue(make_cloud, ray_head):
    cloud = make_cloud(ray_address=ray_head.address, max_concurrent_executions=1)
    names = [f"batch-{i:02d}.csv" for i in range(50)]
    for i, name in enumerate(names):
        upload(cloud, name, housing_csv(120, seed=100 + i))
    executions = cloud.wait_for(lambda: (lambda found: found if len(found) >= 50 else None)(cloud.list_executions()),
                                timeout=300, interval=1, description="50 executions")
    cloud.wait_for_events(timeout=60)
    executions = cloud.list_executions()
    assert len(executions) == 50
    descriptions = sorted(e.get("PipelineExecutionDescription", "") for e in executions)
    assert all(f"incoming/{name}" in d for name, d in zip(names, descriptions))
    running = [e for e in executions if e["PipelineExecutionStatus"] in ("Succeeded", "Failed")]
    assert len(running) < 50  # most are still queued behind max_concurrent_executions=1

    started = time.monotonic()
    cloud.stop()  # stops the queued executions and the running one
    assert time.monotonic() - started < 90


def test_a_failing_pipeline_notifies_the_failing_step_and_reason(make_cloud, tmp_path, capsys):
    cloud = make_cloud()
    notifications = subscribe_queue(cloud, cloud.stack.outputs["NotificationTopicArn"], "test-failure-notes")
    path = tmp_path / "fails-at-ingest.csv"
    path.write_bytes(csv_failing_at_ingest())

    code, result = run_cli(capsys, cloud, path, "--timeout", "300")
    assert code == EXIT_PIPELINE_FAILED, result  # its own code: not an internal error, not success
    assert result["status"] == "failed"
    assert result["reason"].startswith("Ingest: ") and "rejected 1 of 7001 rows" in result["reason"]
    assert result["execution_arn"] and result["model_package_arn"] is None

    [message] = [m for m in receive(cloud, notifications, 1, timeout=120)
                 if m["MessageAttributes"]["event_type"]["Value"] != "dataset_quarantined"]
    assert "Ingest" in message["Subject"] + message["Message"]
    assert "rejected 1 of 7001 rows" in message["Message"]
    assert result["execution_arn"].rsplit("/", 1)[-1] in message["Message"]


def test_model_package_writes_emit_the_state_change_events_aws_would(make_cloud):
    cloud = make_cloud()
    group = cloud.stack.outputs["ModelPackageGroupName"]
    observed = rule_to_queue(cloud, "test-model-package-events", {
        "source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": [group]}})
    sagemaker = cloud.client("sagemaker")
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
                                                "ModelDataUrl": "s3://bucket/model.tar.gz"}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
        MetadataProperties={"GeneratedBy": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e"},
        CustomerMetadataProperties={"dataset_version": "v1", "target_column": "PRICE"},
    )["ModelPackageArn"]
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    # As on AWS, an update that does not name the metadata leaves it as it was (moto's would erase it).
    assert sagemaker.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"] == {
        "dataset_version": "v1", "target_column": "PRICE"}

    created, approved = receive(cloud, observed, 2, timeout=30)
    for event in (created, approved):
        assert (event["source"], event["resources"]) == ("aws.sagemaker", [arn])
        assert event["detail"]["ModelPackageArn"] == arn
        assert event["detail"]["ModelPackageGroupName"] == group
        assert event["detail"]["ModelPackageVersion"] == 1
        assert isinstance(event["detail"]["CreationTime"], int)  # epoch milliseconds, as AWS sends
    assert created["detail"]["ModelApprovalStatus"] == "PendingManualApproval"
    assert created["detail"]["MetadataProperties"]["GeneratedBy"].endswith("/execution/e")
    assert approved["detail"]["ModelApprovalStatus"] == "Approved"
    assert approved["detail"]["CustomerMetadataProperties"]["dataset_version"] == "v1"


def test_api_routes_of_the_template_are_served_locally(make_cloud):
    cloud = make_cloud()
    routes = {(r.method, r.path) for r in cloud.stack.api_routes}
    assert ("GET", "/approvals/{token}") in routes
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(f"{cloud.api_url}/Prod/no-such-route", timeout=30)
    assert unknown.value.code == 404
    try:  # a forged token reaches the real handler, which refuses it with a page, not a crash
        response = urllib.request.urlopen(f"{cloud.api_url}/Prod/approvals/not-a-real-token", timeout=120)
        status = response.status
    except urllib.error.HTTPError as refused:
        status = refused.code
    assert 400 <= status < 500


@pytest.mark.slow
def test_one_upload_trains_and_registers_one_model(make_cloud, ray_head, tmp_path, capsys):
    # Two tuning jobs on 3,000 rows keep this test short; the quality gate is not what it checks.
    cloud = make_cloud(ray_address=ray_head.address, parameters={"MaxTuningJobs": "2", "RMSEThreshold": "60000"})
    observed = rule_to_queue(cloud, "test-registered", {
        "source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"]})
    path = tmp_path / "houses.csv"
    path.write_bytes(housing_csv(3000, seed=11))

    code, result = run_cli(capsys, cloud, path, "--target", "PRICE", "--timeout", "1200")
    assert code == 0, result
    assert result["status"] == "registered", result
    assert result["model_package_arn"].startswith(
        f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{cloud.stack.outputs['ModelPackageGroupName']}/")
    assert 0 < result["metrics"]["rmse"] < 60000 and result["metrics"]["r2"] > 0.9
    assert len(cloud.list_executions()) == 1
    # Every step and the hosts it ran on (from the jobs' CloudWatch log streams): one host each.
    assert result["steps"] == [{"name": name, "status": "Succeeded", "hosts": hosts} for name, hosts in (
        ("Ingest", ["algo-1"]), ("Preprocess", ["algo-1"]), ("HPTuning", ["algo-1"]), ("Evaluate", ["algo-1"]),
        ("CheckRMSE", []), ("RegisterModel-RegisterModel", []))]

    [event] = receive(cloud, observed, 1, timeout=30)
    assert event["detail"]["ModelApprovalStatus"] == "PendingManualApproval"
    assert event["detail"]["ModelPackageArn"] == result["model_package_arn"]

    # `mlops lineage` names the object version, execution, trial hyperparameters and image this run used.
    lineage = assert_lineage_matches_run(cloud.state_dir, result)
    assert lineage["endpoints"] == []  # registered, not deployed
