"""The console as a person sees it, in headless Chromium: used by the slow end-to-end run
(tests/e2e/test_local_run.py), which watches the page while the pipeline runs and looks at the
registered model afterwards.

Statuses are read from the DOM Chromium rendered after the page's own script fetched and drew them
(`--dump-dom` dumps after JavaScript ran; `--virtual-time-budget` lets the first poll finish), so
they prove the page's polling, not only the server's HTML: the server renders no status into the
DAG at all.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
# Step colours of local/console/static/console.js, as RGB.
SUCCEEDED_GREEN = (0x2E, 0x7D, 0x32)


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], check=True, timeout=900)
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", *args],
            check=True, capture_output=True, timeout=timeout)


def rendered_dom(url: str, budget_ms: int = 5000) -> str:
    """The page's DOM once its script has run (fetches included) for `budget_ms` of virtual time."""
    return _chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url).stdout.decode("utf-8", "replace")


def screenshot(url: str, png: Path, size: tuple[int, int] = (1400, 1000), budget_ms: int = 5000) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _chromium(f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", url)
    assert png.exists() and png.stat().st_size > 0, f"no screenshot of {url}"
    return png


class _Elements(HTMLParser):
    """(tag, attributes) of every element, and the text of the page."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


class _Section(HTMLParser):
    """The text inside the element with a given id (and everything nested in it)."""

    def __init__(self, element_id: str):
        super().__init__()
        self.element_id, self.depth, self.text = element_id, 0, []

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID and (self.depth or dict(attrs).get("id") == self.element_id):
            self.depth += 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)


def section_text(html: str, element_id: str) -> str:
    parser = _Section(element_id)
    parser.feed(html)
    return " ".join(parser.text)


def dag_statuses(dom: str) -> dict[str, str]:
    """Step name -> status of the DAG nodes the page's script drew (`<g class="step" ...>`)."""
    return {a["data-step"]: a["data-status"] for tag, a in parse(dom).elements
            if tag == "g" and a.get("class") == "step"}


def pixel_stats(png: Path, colour: tuple[int, int, int]) -> tuple[float, int, float]:
    """(grey-level variance, distinct colours, fraction of pixels within a few levels of `colour`)."""
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
        grey = list(rgb.convert("L").getdata())
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        pixels = list(rgb.getdata())
    mean = sum(grey) / len(grey)
    variance = sum((value - mean) ** 2 for value in grey) / len(grey)
    near = sum(1 for r, g, b in pixels if abs(r - colour[0]) < 10 and abs(g - colour[1]) < 10 and abs(b - colour[2]) < 10)
    return variance, len(colours), near / len(pixels)


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def first_execution_id(console_url: str) -> str | None:
    status, _, body = get(console_url + "/")
    if status != 200:
        return None
    match = re.search(r"href='/executions/([A-Za-z0-9-]+)'", body.decode())
    return match.group(1) if match else None


class ConsoleWatcher:
    """Polls the execution page in Chromium while a run goes, recording each step's statuses in the
    order the page showed them."""

    def __init__(self, console_url: str, interval: float = 4.0):  # steps run for tens of seconds
        self.console_url = console_url
        self.interval = interval
        self.execution_id: str | None = None
        self.seen: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-watcher", daemon=True)

    def start(self) -> "ConsoleWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.execution_id = self.execution_id or first_execution_id(self.console_url)
                if self.execution_id:
                    for step, status in dag_statuses(rendered_dom(
                            f"{self.console_url}/executions/{self.execution_id}", budget_ms=3000)).items():
                        history = self.seen.setdefault(step, [])
                        if not history or history[-1] != status:
                            history.append(status)
            except Exception as error:  # noqa: BLE001 - kept and reported by the test
                self.errors.append(repr(error))
            self._stop.wait(self.interval)

    def went_from_executing_to_succeeded(self) -> list[str]:
        return [step for step, history in self.seen.items()
                if "Executing" in history and "Succeeded" in history[history.index("Executing"):]]


def check_console_after_run(console_url: str, watcher: ConsoleWatcher, result: dict, shots: Path,
                            lineage: dict | None = None) -> None:
    """What a person looks for once the run is over: every step of the execution, the registered
    model with its approval, metrics, plots and lineage, each in the rendered page and on screen."""
    assert watcher.errors == [] or watcher.seen, watcher.errors[-3:]
    assert watcher.went_from_executing_to_succeeded(), f"no step seen going Executing -> Succeeded: {watcher.seen}"
    execution_id = result["execution_arn"].rsplit("/", 1)[1]
    execution_url = f"{console_url}/executions/{execution_id}"

    statuses = dag_statuses(rendered_dom(execution_url))
    ran = {step["name"]: step["status"] for step in result["steps"]}
    assert {name: statuses.get(name) for name in ran} == ran, (statuses, ran)
    assert statuses.get("RMSETooHigh") == "NotStarted"  # drawn from the definition, never run
    png = screenshot(execution_url, shots / "console-execution.png", size=(1400, 800))
    variance, colours, green = pixel_stats(png, SUCCEEDED_GREEN)
    assert variance > 100 and colours > 50, "the execution page looks blank"
    assert green > 0.005, f"the DAG shows no Succeeded step colour ({green:.4f} of the pixels)"
    if os.environ.get("MLOPS_CONSOLE_SCREENSHOT_TO_DOCS"):  # refresh the README's picture
        shutil.copyfile(png, ROOT / "docs" / "images" / "console.png")

    log_text = " ".join(parse(rendered_dom(f"{execution_url}/steps/Preprocess/log", budget_ms=1000)).text)
    assert "/aws/sagemaker/ProcessingJobs" in log_text and "algo-1" in log_text, log_text[:2000]

    version = result["model_package_arn"].rsplit("/", 1)[1]
    package_url = f"{console_url}/packages/{version}"
    dom = rendered_dom(package_url, budget_ms=1000)
    page = parse(dom)
    text = " ".join(page.text)
    assert "Approved" in text and "Approved by " in text, text[:3000]  # who decided, from ApprovalDescription
    assert f"{result['metrics']['rmse']:,.1f}" in text, (result["metrics"], text[:3000])
    plots = [a["src"] for tag, a in page.elements if tag == "img"]
    assert len(plots) >= 2, plots
    for src in plots:
        status, headers, body = get(console_url + src.replace("&amp;", "&"))
        assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG"), (src, status)
    assert any(a.get("id") == "lineage" for _, a in page.elements), "no lineage section"
    lineage_text = section_text(dom, "lineage")
    if lineage is None:
        assert "lineage: not recorded" in lineage_text or "dataset" in lineage_text, lineage_text
    else:  # the chain `mlops lineage` read, as the page shows it
        assert "lineage: not recorded" not in lineage_text, lineage_text
        dataset = lineage["dataset"]
        for expected in (dataset["key"], dataset["version_id"], lineage["pipeline_execution"]["arn"].rsplit("/", 1)[1],
                         lineage["training"]["training_job_name"], *lineage["training"]["hyperparameters"].values()):
            assert expected and str(expected) in lineage_text, (expected, lineage_text[:3000])
        assert result["endpoint_name"] in lineage_text, lineage_text[:3000]  # the endpoint serving it
    png = screenshot(package_url, shots / "console-package.png", size=(1400, 1400))
    variance, colours, _ = pixel_stats(png, SUCCEEDED_GREEN)
    assert variance > 100 and colours > 200, "the package page shows no plots"

    status, headers, _ = get(console_url + "/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    request = urllib.request.Request(console_url + "/", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("the console accepted a POST")
    except urllib.error.HTTPError as refused:
        assert refused.code == 405


def check_lambda_logs(info: dict) -> None:
    """Handler logs reached CloudWatch Logs as Lambda writes them, through the strict face with
    each function's own role (the administrator reads them back)."""
    import boto3

    creds = info["credentials"]
    logs = boto3.client("logs", endpoint_url=info["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=creds["aws_access_key_id"], aws_secret_access_key=creds["aws_secret_access_key"],
                        aws_session_token=creds.get("aws_session_token"))
    written = {}
    for function in info["stack"]["functions"]:
        group = f"/aws/lambda/{function}"
        try:
            streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            continue
        for stream in streams:
            assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", stream["logStreamName"]), stream
            events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"],
                                         startFromHead=True)["events"]
            written.setdefault(function, []).extend(e["message"] for e in events)
    start_pipeline = next(name for name in written if "start" in name.lower() and "pipeline" in name.lower())
    messages = written[start_pipeline]
    assert any(m.startswith("START RequestId:") for m in messages)
    assert any(m.startswith("REPORT RequestId:") and "Billed Duration" in m for m in messages)
    assert len(messages) > 3 * sum(m.startswith("START") for m in messages), messages[:20]  # the handler's lines too
    assert len(written) >= 3, sorted(written)  # intake, approval notification, deployment ...
