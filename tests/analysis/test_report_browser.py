"""The HTML report renders in a real headless browser: no script or console errors, every plot decoded.

Uses the system's Chromium through playwright (``apt-get install chromium``;
``.ci/run`` installs it); without either the test skips and says which is missing.
A screenshot of the rendered page is written next to the report.
"""

import os
import shutil

import pytest

from rlhf_jax.analysis.report import analyze
from tests.analysis.test_report import fake_curves, fake_samples

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no headless Chromium on PATH (tried {', '.join(BROWSERS)}); "
                "`apt-get install chromium` as .ci/run does")


def test_report_html_renders_with_every_plot(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extra)")
    browser_path = chromium_path()
    out = str(tmp_path / "report")
    samples = {"sft": fake_samples(0, 0.0, 0), "ppo": fake_samples(60, 0.2, 1)}
    summary = analyze(samples, out, baseline="sft", curves=fake_curves())
    # Only the HTML travels: the PNGs beside it are removed, so images can come only from the page.
    page_path = os.path.join(out, "report.html")
    for name in os.listdir(out):
        if name.endswith(".png"):
            os.remove(os.path.join(out, name))

    errors = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.goto(f"file://{page_path}", wait_until="load")
            images = page.evaluate("""() => Array.from(document.images).map(img => ({
                alt: img.alt, complete: img.complete, width: img.naturalWidth,
                height: img.naturalHeight, shown: img.getBoundingClientRect().width}))""")
            tables = page.evaluate("() => document.querySelectorAll('table').length")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [img["alt"] for img in images] == [f["title"] for f in summary["figures"]]
    for img in images:
        assert img["complete"] and img["width"] >= 300 and img["height"] >= 200, img
        assert img["shown"] > 100, img  # laid out on the page, not collapsed
    assert tables >= 2
    assert os.path.getsize(tmp_path / "report.png") > 50_000
