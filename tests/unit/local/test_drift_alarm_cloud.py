"""The drift alarm in a real local cloud (template.yaml under the strict face): the schedule fires
its target as its role, the alarm evaluator turns a DriftedFeatures datapoint into ALARM, and the
state change reaches DriftAlarmFunction through the EventBridge rule, whose message names the
drifted features of the newest report."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

pytestmark = pytest.mark.managed_policies


def test_schedule_alarm_rule_and_function(tmp_path, monkeypatch):
    from local.cloud import LocalCloud

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with LocalCloud(tmp_path / "state", start_ray=False, write_cloud_file=False) as cloud:
        outputs = cloud.stack.outputs
        endpoint = outputs["EndpointNameOutput"]
        sqs, sns, s3 = cloud.client("sqs"), cloud.client("sns"), cloud.client("s3")
        inbox = sqs.create_queue(QueueName="people")["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=outputs["NotificationTopicArn"], Protocol="sqs", Endpoint=inbox_arn,
                      Attributes={"RawMessageDelivery": "true"})

        # The schedule, provisioned into moto, fired now as DriftMonitorScheduleRole.
        schedule = cloud.scheduler.describe(outputs["DriftMonitorScheduleName"])
        assert schedule["Target"]["Arn"] == "arn:aws:scheduler:::aws-sdk:sagemaker:startPipelineExecution"
        fired = cloud.run_schedule(outputs["DriftMonitorScheduleName"])
        # The drift monitor pipeline is in the stack: the run started, with the schedule's parameters.
        assert fired.status == "succeeded", fired.error
        execution = fired.response["PipelineExecutionArn"]
        parameters = cloud.client("sagemaker").list_pipeline_parameters_for_execution(
            PipelineExecutionArn=execution)["PipelineParameters"]
        assert {p["Name"]: p["Value"] for p in parameters}["EndpointName"] == endpoint
        refused = (cloud.state_dir / "logs" / "strict-face.log").read_text()
        assert "scheduler" not in refused and "AccessDenied" not in refused, refused

        # The drift job's outputs: a report and the metric.
        report_key = f"monitoring/{endpoint}/2026/12/01/120000/drift_report.json"
        s3.put_object(Bucket=outputs["ArtifactsBucketName"], Key=report_key, Body=json.dumps({
            "window": {"end": "2026-12-01T12:00:00Z"},
            "features": [{"feature": "SQUARE_FEET", "drifted": True, "statistics": {"PSI": 0.5}, "thresholds": {"PSI": 0.2}}]}))
        cloud.client("cloudwatch").put_metric_data(Namespace="RaySageMakerMLOps/DataDrift", MetricData=[{
            "MetricName": "DriftedFeatures", "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
            "Value": 1, "Timestamp": datetime.now(timezone.utc)}])
        cloud.evaluate_alarms([outputs["DataDriftAlarmName"]])  # (or the evaluator's own round got there first)
        [alarm] = cloud.client("cloudwatch").describe_alarms(AlarmNames=[outputs["DataDriftAlarmName"]])["MetricAlarms"]
        assert alarm["StateValue"] == "ALARM", alarm
        assert [c.new_state for c in cloud.alarm_evaluator.changes if c.alarm_name == alarm["AlarmName"]] == ["ALARM"]
        cloud.wait_for_events(timeout=120)

        bodies = []
        for _ in range(10):
            bodies += [m["Body"] for m in sqs.receive_message(QueueUrl=inbox, WaitTimeSeconds=2,
                                                              MaxNumberOfMessages=10).get("Messages", [])]
            if len(bodies) >= 2:
                break
        alarm_mail = [json.loads(b) for b in bodies if b.startswith("{")]
        assert [m["NewStateValue"] for m in alarm_mail] == ["ALARM"]  # the alarm's own SNS action
        [function_mail] = [b for b in bodies if not b.startswith("{")]
        assert "- SQUARE_FEET: PSI 0.5 (threshold 0.2)" in function_mail
        assert f"s3://{outputs['ArtifactsBucketName']}/{report_key}" in function_mail
        assert "Retraining on drift is off" in function_mail
        assert cloud.dead_letters() == []
