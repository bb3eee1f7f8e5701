"""The approval email as a person sees it: rendered by headless Chromium to a PNG that is not blank,
with Approve/Reject links that lead to the approval API."""
from __future__ import annotations

import os
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mlops_shared.approval_messages import PackageReview, Plot, confirmation_page, email_html

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
API_BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/v1"
OUTPUT_DIR = Path(os.environ.get("EMAIL_RENDER_DIR", tempfile.gettempdir()))


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        # Idempotent; installs Debian's chromium and a font when they are missing.
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], check=True, timeout=900)
    return CHROMIUM


def review() -> PackageReview:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/ray-mlops-models/7"
    return PackageReview(
        model_package_arn=arn, group_name="ray-mlops-models", version=7, approval_status="PendingManualApproval",
        rmse=9876.54, rmse_std=123.4, mae=7654.32, r2=0.9712, rmse_threshold=15000.0,
        champion_rmse_limit=10616.55,
        champion={"model_package_arn": arn[:-1] + "6", "rmse": 10111.0, "mae": 8000.0, "r2": 0.965},
        dataset_uri="s3://data-bucket/incoming/house_pricing.csv", dataset_version="v-42", target_column="PRICE",
        plots=[Plot("predicted vs actual", "https://artifacts.s3.amazonaws.com/p.png?X-Amz-Signature=abc&x=1"),
               Plot("residuals", "https://artifacts.s3.amazonaws.com/r.png?X-Amz-Signature=def")],
    )


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


def screenshot(chromium: Path, html_text: str, name: str, size=(800, 1000)) -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    png = OUTPUT_DIR / f"{name}.png"
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as work:
        page = Path(work) / f"{name}.html"
        page.write_text(html_text, encoding="utf-8")
        subprocess.run(
            [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={work}/profile", f"--screenshot={png}", f"--window-size={size[0]},{size[1]}",
             page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    assert png.exists() and png.stat().st_size > 0
    return png


def pixel_stats(png: Path) -> tuple[float, int, float]:
    """(grey-level variance, distinct colours, fraction of green 'Approve' button pixels)."""
    from PIL import Image

    with Image.open(png) as image:
        rgb = image.convert("RGB")
        grey = list(rgb.convert("L").getdata())
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        pixels = list(rgb.getdata())
    mean = sum(grey) / len(grey)
    variance = sum((value - mean) ** 2 for value in grey) / len(grey)
    green = sum(1 for r, g, b in pixels if abs(r - 0x1A) < 12 and abs(g - 0x7F) < 12 and abs(b - 0x37) < 12)
    return variance, len(colours), green / len(pixels)


def test_approval_email_renders_with_buttons_that_lead_to_the_approval_api(chromium):
    approve = f"{API_BASE}/approvals/eyJhIjoiYXBwcm92ZSJ9.c2lnbmF0dXJl"
    reject = f"{API_BASE}/approvals/eyJhIjoicmVqZWN0In0.c2lnbmF0dXJl"
    html_text = email_html(review(), "alice@example.com", approve, reject, "on 2025-01-18 10:00 UTC")
    png = screenshot(chromium, html_text, "approval-email")
    variance, colours, green = pixel_stats(png)
    assert variance > 100, "the rendered email looks blank"
    assert colours > 50, "the rendered email has no text or anti-aliasing"
    assert green > 0.001, "the green Approve button is not visible"

    links = _Links()
    links.feed(html_text)
    assert links.links["Approve"] == approve
    assert links.links["Reject"] == reject
    assert all(url.startswith(f"{API_BASE}/approvals/") for label, url in links.links.items()
               if label in ("Approve", "Reject"))
    assert links.links["predicted vs actual"].endswith("X-Amz-Signature=abc&x=1")  # unescaped by the parser


def test_confirmation_page_renders_with_one_confirm_button(chromium):
    html_text = confirmation_page(review(), "reject", "bob@example.com", "on 2025-01-18 10:00 UTC")
    png = screenshot(chromium, html_text, "approval-confirmation", size=(800, 900))
    variance, colours, _ = pixel_stats(png)
    assert variance > 100 and colours > 50
    assert html_text.count("<form method='post'>") == 1
