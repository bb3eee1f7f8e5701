"""What approvers see, as a person sees it: the approval email and the confirmation page rendered by
headless Chromium to PNGs that are looked at.

The review is a real one: the real Evaluate step's outputs (a tiny model with a champion) in moto,
read by the same code the notify function and the approval API run. The email is the raw MIME the
notify function sends; its `cid:` images are written to files for rendering only. The confirmation
page is served by the approval API's handler on 127.0.0.1 with its own CSP header, its images come
from moto's presigned URLs on another 127.0.0.1 port (as from S3), and an image the CSP does not
list stays blocked. The PNGs are kept in `$EMAIL_RENDER_DIR` (docs/images holds two of them)."""
from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import boto3
import pytest

from mlops_shared.approval_messages import build_email, page_csp
from mlops_shared.approvals import approval_url, load_package_review
from tests.approval_world import API_BASE, BUCKET, SENDER, HandlerHttpServer, build_world, load_handler
from tests.unit.functions.test_approval_api import token

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
OUTPUT_DIR = Path(os.environ.get("EMAIL_RENDER_DIR", tempfile.gettempdir()))
WINDOW = (800, 2400)
# The Approve button's green, and the colour of the image no CSP lists.
APPROVE_GREEN, MAGENTA = (0x1A, 0x7F, 0x37), (255, 0, 255)
# Reports each image's natural size and place once everything loaded (rendering copies only: the
# served page's CSP forbids scripts).
BOX_PROBE = """<script>window.addEventListener('load', () => document.body.setAttribute('data-boxes',
JSON.stringify([...document.images].map(i => {const r = i.getBoundingClientRect();
return {alt: i.alt, natural: [i.naturalWidth, i.naturalHeight], box: [r.left, r.top, r.width, r.height]};}))));
</script>"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        # Idempotent; installs Debian's chromium and a font when they are missing.
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], check=True, timeout=900)
    return CHROMIUM


@pytest.fixture
def world(aws, monkeypatch, evaluation_outputs):
    return build_world(aws, monkeypatch, evaluation_outputs)


def run_chromium(chromium: Path, target: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args, target],
            check=True, capture_output=True, timeout=120, text=True)


def screenshot(chromium: Path, target: str, png: Path) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    run_chromium(chromium, target, f"--screenshot={png}")
    assert png.exists() and png.stat().st_size > 0
    return png


def keep(png: Path, name: str) -> Path:
    """A copy of a screenshot in OUTPUT_DIR for people (the README, a reviewer): the empty
    background below the content cropped, 256 colours, so it stays small."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    pixels = np.asarray(rgb)
    background = pixels[-1, 0]
    rows = np.nonzero((pixels != background).any(axis=(1, 2)))[0]
    bottom = int(rows[-1]) + 24 if len(rows) else pixels.shape[0]
    kept = OUTPUT_DIR / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    rgb.crop((0, 0, rgb.width, min(bottom, rgb.height))).quantize(colors=256).save(kept, optimize=True)
    return kept


def image_boxes(chromium: Path, html_file: Path) -> list[dict]:
    """Each <img>'s natural size and box on the page, from a copy of it with the probe."""
    probe = html_file.with_name(f"probe-{html_file.name}")
    probe.write_text(html_file.read_text(encoding="utf-8").replace("</body>", BOX_PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(chromium, probe.as_uri(), "--dump-dom").stdout
    boxes = re.search(r'data-boxes="([^"]*)"', dom)
    assert boxes, "the page never finished loading"
    return json.loads(boxes.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def region(png: Path, box) -> dict:
    """Statistics of a region of a screenshot: grey-level variance, distinct colours, and the
    share of pixels that are near white (the background), plot blue, champion orange, the Approve
    green, magenta. Marks are drawn translucent: blue and orange are judged by hue (blue well above
    red; red well above blue with green between), not by the exact colour."""
    import numpy as np
    from PIL import Image

    left, top, width, height = (int(round(v)) for v in box)
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB").crop((left, top, left + width, top + height)), dtype=int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = np.asarray(0.299 * r + 0.587 * g + 0.114 * b)

    def share(colour, tolerance):
        return float((np.abs(rgb - np.array(colour)) <= tolerance).all(axis=-1).mean())

    return {"variance": float(grey.var()), "colours": len(np.unique(rgb.reshape(-1, 3), axis=0)),
            "white": share((255, 255, 255), 6), "blue": float(((b - r > 60) & (b > g)).mean()),
            "orange": float(((r - b > 60) & (b < g) & (g < r)).mean()),
            "green": share(APPROVE_GREEN, 12), "magenta": share(MAGENTA, 30)}


def assert_shows_plot(stats: dict, name: str, champion: bool) -> None:
    assert stats["variance"] > 300 and stats["colours"] > 50, f"{name}: the image area is blank"
    assert stats["white"] < 0.97, f"{name}: the image area is only background"
    assert stats["blue"] > 0.003, f"{name}: no challenger (blue) marks"
    if champion:
        assert stats["orange"] > 0.003, f"{name}: no champion (orange) overlay"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: dict[str, str] = {}
        self._href = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href and data.strip():
            self.links[data.strip()] = self._href

    def handle_endtag(self, tag):
        if tag == "a":
            self._href = None


def test_approval_email_shows_the_plots_inline_and_buttons_that_lead_to_the_approval_api(chromium, world, tmp_path):
    review = load_package_review(world.model_package_arn, presign_seconds=72 * 3600, plot_content=True)
    approve = approval_url(API_BASE, token(world, action="approve"))
    reject = approval_url(API_BASE, token(world, action="reject"))
    message = build_email(sender=SENDER, recipient="alice@example.com", review=review, approve_url=approve,
                          reject_url=reject, expires_text="on 2025-01-18 10:00 UTC")
    # As a mail reader gets it: the raw bytes SES would carry, parsed again.
    received = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    related = received.get_body(preferencelist=("related",))
    html_part, *images = related.get_payload()
    html_text = html_part.get_content()
    # For rendering only: each cid: image as a file next to the page.
    page = tmp_path / "approval-email.html"
    rendered = html_text
    for image in images:
        cid = image["Content-ID"].strip("<>")
        (tmp_path / image.get_filename()).write_bytes(image.get_content())
        assert f"cid:{cid}" in rendered
        rendered = rendered.replace(f"cid:{cid}", image.get_filename())
    assert "cid:" not in rendered
    page.write_text(rendered, encoding="utf-8")

    png = screenshot(chromium, page.as_uri(), tmp_path / "approval-email.png")
    boxes = image_boxes(chromium, page)
    assert [box["alt"] for box in boxes] == [f"{plot.name} plot" for plot in review.plots]
    from PIL import Image

    with Image.open(png) as shot:
        assert shot.size == WINDOW
    for box, plot in zip(boxes, review.plots):
        assert box["natural"] == [plot.width, plot.height], f"{plot.name} did not load"
        left, top, width, height = box["box"]
        assert 300 < width <= 590 and abs(width / height - plot.width / plot.height) < 0.02
        assert top + height <= WINDOW[1], f"{plot.name} is below the screenshot"
        assert_shows_plot(region(png, box["box"]), plot.name, champion=plot.name != "feature importance")
    assert region(png, (0, 0, *WINDOW))["green"] > 0.001, "the green Approve button is not visible"

    keep(png, "approval-email.png")

    links = _Links()
    links.feed(html_text)
    assert links.links["Approve"] == approve and links.links["Reject"] == reject
    assert links.links["residuals"] == next(p.url for p in review.plots if p.name == "residuals")


def test_confirmation_page_shows_the_plots_its_csp_allows_and_blocks_any_other_image(chromium, world, tmp_path):
    api = load_handler("approval_api")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="elsewhere/unlisted.png", Body=magenta_png())
    unlisted = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "elsewhere/unlisted.png"},
                                         ExpiresIn=600)
    served = {}

    def handler(event, context):
        # The real page and headers, plus (test only) one image from the same S3 host but a path the
        # page's CSP does not list; `served["csp"] = False` is the control without the header.
        result = api.lambda_handler(event, context)
        if served.get("inject", True):
            result["body"] = result["body"].replace(
                "<h1", f"<img src='{unlisted}' alt='unlisted' width='200' height='60'><h1", 1)
        headers = {**(result.get("headers") or {}),
                   **{k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()}}
        if not served.get("csp", True):
            headers.pop("Content-Security-Policy")
        result["headers"], result["multiValueHeaders"] = headers, {}
        served["headers"], served["body"] = headers, result["body"]
        return result

    server = HandlerHttpServer(handler)
    base = server.start()
    try:
        url = f"{base}/approvals/{token(world, action='approve')}"
        served["inject"] = False  # the page as it is, for people to look at
        keep(screenshot(chromium, url, tmp_path / "as-served.png"), "confirmation-page.png")
        served["inject"] = True
        png = screenshot(chromium, url, tmp_path / "confirmation-page.png")
        policy, body = served["headers"]["Content-Security-Policy"], served["body"]
        served["csp"] = False
        control = screenshot(chromium, url, tmp_path / "confirmation-page-without-csp.png")
    finally:
        server.stop()

    srcs = [src.replace("&amp;", "&") for src in re.findall(r"<img src='([^']+)'", body)]
    extra, plots = srcs[0], srcs[1:]
    assert extra == unlisted and len(plots) == 3
    assert policy.endswith(page_csp(plots).split("frame-ancestors 'none'")[1])    # img-src: the plots only
    assert all(p.startswith("http://127.0.0.1:") and not p.startswith(base) for p in plots)  # another port

    # Where each image sits (width/height attributes fix the layout whether it loads or not).
    (tmp_path / "page.html").write_text(body, encoding="utf-8")
    boxes = image_boxes(chromium, tmp_path / "page.html")
    assert [box["alt"] for box in boxes] == ["unlisted", "predicted vs actual plot", "residuals plot",
                                             "feature importance plot"]
    for box in boxes[1:]:
        assert box["box"][1] + box["box"][3] <= WINDOW[1], f"{box['alt']} is below the screenshot"
        assert_shows_plot(region(png, box["box"]), box["alt"], champion=box["alt"] != "feature importance plot")
    blocked, shown = region(png, boxes[0]["box"]), region(control, boxes[0]["box"])
    assert shown["magenta"] > 0.9, "the control page does not show the unlisted image: the check proves nothing"
    assert blocked["magenta"] < 0.01, "an image the CSP does not list was loaded"
    assert "Challenger (this model)" in body and "Champion v" in body and "(champion + tolerance)" in body


def magenta_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), MAGENTA).save(buffer, format="PNG")
    return buffer.getvalue()
