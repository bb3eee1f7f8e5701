"""The console and the handler logs in a real local cloud (template.yaml under the strict face):
`console_url` in cloud.json, the pages answering for the deployed stack, and a handler's log
written to `/aws/lambda/<function>` with the function's own role."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from local.cloud_file import find_running_cloud

pytestmark = pytest.mark.managed_policies


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_cloud_serves_its_console_and_ships_handler_logs(tmp_path, monkeypatch):
    from local.cloud import LocalCloud

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with LocalCloud(tmp_path / "state", start_ray=False, dispatch_events=False) as cloud:
        info = find_running_cloud(cloud.state_dir)
        assert info["console_url"] == cloud.console_url and cloud.console_url.startswith("http://127.0.0.1:")

        status, index = _get(cloud.console_url + "/")
        assert status == 200, index
        assert cloud.pipeline_name() in index and cloud.stack.outputs["ModelPackageGroupName"] in index
        assert cloud.stack.outputs["EndpointNameOutput"] in index and "not deployed" in index
        assert _get(cloud.console_url + "/executions/0123abcd")[0] == 404
        assert _get(cloud.console_url + "/packages/1")[0] == 404

        # A handler's output reaches its log group through the strict face, as the function's role.
        function = next(name for name in cloud.stack.functions if name.endswith("-pipeline-status"))
        result = cloud.lambda_runtime.invoke(function, {"detail-type": "not an event it knows", "detail": {}})
        logs = cloud.client("logs")
        group = f"/aws/lambda/{function}"
        deadline = time.monotonic() + 30
        while True:
            streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
            messages = [e["message"] for s in streams for e in logs.get_log_events(
                logGroupName=group, logStreamName=s["logStreamName"], startFromHead=True)["events"]]
            if any(m.startswith(f"REPORT RequestId: {result.request_id}") for m in messages) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert f"START RequestId: {result.request_id} Version: $LATEST" in messages, messages
        assert any(m.startswith(f"REPORT RequestId: {result.request_id}") for m in messages), messages
        refused = (cloud.state_dir / "logs" / "strict-face.log").read_text()
        assert "logs:" not in refused, refused
