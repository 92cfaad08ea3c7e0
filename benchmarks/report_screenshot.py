"""A screenshot of a run's report.html for the README, taken with Debian's chromium driven by Playwright.

    python benchmarks/report_screenshot.py runs/demo [--output benchmarks/figures/report.png]

The browser is the system's ``/usr/bin/chromium`` (``apt-get install chromium``), never a Playwright
download: ``playwright install`` needs a network this project does not assume. The PNG is reduced to
a 256-colour palette so that it stays small enough to commit (the page is flat colours and text).
tests/test_report_browser.py launches the browser the same way (:func:`launch`).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("EDGEKIT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


def chromium() -> str | None:
    """The chromium executable, or None when it is not installed."""
    path = CHROMIUM if os.path.isfile(CHROMIUM) else shutil.which("chromium")
    return path if path and os.access(path, os.X_OK) else None


def launch(playwright: Any) -> Any:
    """The system chromium, headless, with no network-using background services."""
    executable = chromium()
    if executable is None:
        raise RuntimeError(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=executable, args=ARGS, headless=True)


def screenshot(report_html: Path, output: Path, height: int) -> tuple[int, int]:
    """The top ``height`` px of the page at a 1280 px wide viewport into ``output`` (palette PNG,
    written atomically); returns its size in pixels."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(report_html.resolve().as_uri())
            page.wait_for_load_state("load")
            full = page.evaluate("document.documentElement.scrollHeight")
            png = page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"],
                                                        "height": min(height, full)})
        finally:
            browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    image.save(partial, format="PNG", optimize=True)
    partial.replace(output)
    return image.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with report.html (edgekit report RUN/ writes it)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "figures" / "report.png")
    parser.add_argument("--height", type=int, default=1500, help="how much of the page, from the top, in px")
    args = parser.parse_args()
    page = args.run_dir / "report.html"
    if not page.is_file():
        print(f"{page}: not found; run `edgekit report {args.run_dir}` first", file=sys.stderr)
        return 2
    width, height = screenshot(page, args.output, args.height)
    print(f"wrote {args.output} ({width}x{height} px, {args.output.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
