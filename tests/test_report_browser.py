"""report.html in a real headless browser (Debian's chromium driven by Playwright): the page a person
opens shows the decision first, its plots decoded at the page's width, and nothing wider than the window."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from report_screenshot import CHROMIUM, chromium, launch  # noqa: E402
from run_dirs import build_run  # noqa: E402

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(chromium() is None, reason=f"chromium not found at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits_fp32_onnx: Path, digits_calib: np.ndarray) -> Path:
    """A run measured here (ONNX variants only) with its report written."""
    from edgekit.report import write_report

    run = build_run(tmp_path_factory.mktemp("run"), digits_fp32_onnx, digits_calib, tflite=False,
                    target="x86-64-avx2", runs=30, warmup=5)
    write_report(run)
    return run


def test_report_page_in_chromium(run_dir: Path) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((run_dir / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "figure img", "els => els.map(e => ({alt: e.alt, natural: e.naturalWidth, complete: e.complete,"
                              " shown: e.getBoundingClientRect().width}))")
            box = page.locator("#ship")
            shipped = page.locator("tr.ship")
            box_visible, shipped_count, shipped_visible = box.is_visible(), shipped.count(), shipped.first.is_visible()
            box_text = box.inner_text()
            first_section = page.evaluate("document.querySelector('h1').nextElementSibling.id")
            overflow = page.evaluate("""() => {
                const width = document.documentElement.clientWidth, out = [];
                for (const el of document.body.querySelectorAll('*')) {
                    const r = el.getBoundingClientRect();
                    if (r.width && (r.right > width + 0.5 || r.left < -0.5)) out.push(el.tagName + '.' + el.className);
                    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
                        out.push('scrolls: ' + el.tagName + '.' + el.className);
                }
                return {page: document.documentElement.scrollWidth - width, elements: out};
            }""")
            png = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert sorted(i["alt"] for i in images) == ["latency", "sizes", "tradeoff"]
    for image in images:
        assert image["complete"] and image["natural"] > 0, f"{image['alt']}: the PNG did not decode"
        assert image["shown"] > 560, f"{image['alt']}: shown {image['shown']} px wide on a 1280 px window"
    assert box_visible and first_section == "ship" and "ship" in box_text and ".onnx" in box_text
    document = json.loads((run_dir / "report.json").read_text())
    assert shipped_count == len(document["summary"]["ship"]) >= 1 and shipped_visible
    assert overflow == {"page": 0, "elements": []}, overflow
    width, height = Image.open(io.BytesIO(png)).size
    assert width == 1280 and 1500 < height < 8000, (width, height)
