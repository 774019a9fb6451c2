"""Drive the app in a real browser (headless Chromium) and save a screenshot of a real result.

    python scripts/screenshot.py --out docs/screenshot.png [--model checkpoints/siad-mini]
        [--image examples/images/gear_missing.png --class-name gear] [--chromium /usr/bin/chromium]

Starts the app in-process on a free local port, opens the page, uploads the image, types the
class, clicks Detect, waits for the result and saves the page as PNG. Uses Playwright with
Debian's chromium (no browser download). The README's screenshot comes from this script.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def find_chromium(explicit: str | None = None) -> str:
    path = explicit or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise FileNotFoundError("headless Chromium not found: install Debian's chromium (apt-get install chromium)")
    return path


def screenshot(url: str, image: Path, class_name: str, out: Path, chromium: str, timeout_s: float = 120.0) -> str:
    """Open the app at `url`, run Detect on `image`, save the page to `out`; returns the result text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
            page.get_by_role("button", name="Detect").wait_for(state="visible", timeout=timeout_s * 1000)
            page.locator("input[type=file]").first.set_input_files(str(image))
            box = page.get_by_label("Class name")
            box.click()
            box.fill(class_name)
            box.press("Enter")
            page.get_by_role("button", name="Detect").click()
            result = page.get_by_text("score", exact=False).first
            result.wait_for(state="visible", timeout=timeout_s * 1000)
            page.wait_for_timeout(1000)  # let the images finish rendering
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            return result.inner_text()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    import app

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default=str(app.DEFAULT_MODEL))
    parser.add_argument("--image", type=Path, default=app.EXAMPLES_DIR / "gear_missing.png")
    parser.add_argument("--class-name", default="gear")
    parser.add_argument("--chromium", default=None)
    args = parser.parse_args(argv)
    loaded = app.load_model(args.model, "cpu", "float32")
    demo = app.build_demo(loaded)
    demo.queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(prevent_thread_lock=True, ssr_mode=False, quiet=True)
    try:
        text = screenshot(url, args.image, args.class_name, args.out, find_chromium(args.chromium))
    finally:
        demo.close()
    print(f"{text.strip().splitlines()[0]} -> wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
