"""The model server over real HTTP: raw features in (JSON or CSV), scaled inside, predictions out."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.model_artifacts import FEATURES, expected_predictions, train_model_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    result = train_model_dir(model_dir)
    result["model_dir"] = model_dir
    return result


@pytest.fixture(scope="module")
def server(trained):
    from jobs.serve import build_server

    srv = build_server(trained["model_dir"], "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()


def call(port, method, path, body=b"", content_type="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_ping(server):
    assert call(server, "GET", "/ping", content_type=None)[0] == 200


def test_json_single_record_is_scaled_and_predicted(server, trained):
    row = trained["test"].iloc[[0]]
    record = {name: float(row[name].iloc[0]) for name in FEATURES}
    status, body = call(server, "POST", "/invocations", json.dumps(record).encode())
    assert status == 200
    assert body["predictions"] == pytest.approx(expected_predictions(trained, row).tolist(), rel=1e-5)
    # and it is a sensible house price, not a prediction on unscaled inputs
    assert abs(body["predictions"][0] - row["PRICE"].iloc[0]) < 5 * trained["rmse"]


def test_json_list_instances_and_target_column_ignored(server, trained):
    rows = trained["test"].iloc[:5]
    records = rows.to_dict(orient="records")  # includes PRICE, the target: ignored
    expected = expected_predictions(trained, rows).tolist()
    for payload in (records, {"instances": records}, {"instances": rows[FEATURES].values.tolist()}):
        status, body = call(server, "POST", "/invocations", json.dumps(payload).encode())
        assert status == 200, body
        assert body["predictions"] == pytest.approx(expected, rel=1e-5)


def test_csv_with_and_without_header(server, trained):
    rows = trained["test"].iloc[:4]
    expected = expected_predictions(trained, rows).tolist()
    shuffled = list(reversed(FEATURES))
    with_header = rows[shuffled].to_csv(index=False).encode()
    without_header = rows[FEATURES].to_csv(index=False, header=False).encode()
    for body_bytes in (with_header, without_header):
        status, body = call(server, "POST", "/invocations", body_bytes, content_type="text/csv")
        assert status == 200, body
        assert body["predictions"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("payload, content_type, status, fragment", [
    (b"", "application/json", 400, "empty"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (json.dumps({f: 1 for f in FEATURES[1:]}).encode(), "application/json", 400, "missing field(s) in record 0: YEAR_BUILT"),
    (json.dumps({**{f: 1 for f in FEATURES}, "POOL": 1}).encode(), "application/json", 400, "unknown field(s) in record 0: POOL"),
    (json.dumps({**{f: 1 for f in FEATURES}, "DECK": "yes"}).encode(), "application/json", 400, "field DECK in record 0 must be a number"),
    (json.dumps([{f: 1 for f in FEATURES}, {**{f: 1 for f in FEATURES}, "LOT_ACRES": None}]).encode(),
     "application/json", 400, "field LOT_ACRES in record 1"),
    (json.dumps([]).encode(), "application/json", 400, "no records"),
    (b"1,2,3\n", "text/csv", 400, "has 3 values; expected 8"),
    (("YEAR_BUILT,SQUARE_FEET\n2000,3000\n").encode(), "text/csv", 400, "missing field(s)"),
    (b"a,b", "application/x-npy", 415, "unsupported content type"),
])
def test_client_errors_are_clear_json(server, payload, content_type, status, fragment):
    got_status, body = call(server, "POST", "/invocations", payload, content_type=content_type)
    assert got_status == status
    assert fragment in body["error"]


def test_unknown_path_is_404(server):
    assert call(server, "POST", "/nope", b"{}")[0] == 404


def test_single_record_latency(server, trained):
    record = json.dumps({name: float(trained["test"][name].iloc[0]) for name in FEATURES}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        conn.request("POST", "/invocations", body=record, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        timings.append(time.perf_counter() - start)
        assert response.status == 200
    conn.close()
    # The target is p99 <= 10 ms; the bounds are generous for a busy shared 2-core machine but still
    # catch a per-request stall such as Nagle's algorithm meeting delayed ACKs (~40 ms each).
    assert np.percentile(timings, 50) < 0.005
    assert np.percentile(timings, 99) < 0.05


def test_cli_process_serves_and_reports_bad_model(tmp_path, trained):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "jobs.serve", "--model-dir", str(trained["model_dir"]),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("READY")
        assert call(port, "GET", "/ping", content_type=None)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    (tmp_path / "model.json").write_text("{broken")
    (tmp_path / "preprocessor.json").write_text("{}")
    bad = subprocess.run([sys.executable, "-m", "jobs.serve", "--model-dir", str(tmp_path), "--port", str(port),
                          "--host", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "cannot start the model server" in bad.stderr
