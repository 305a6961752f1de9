"""Regenerate the README's gallery: each command's HTML report, opened in headless Chromium (Debian's chromium
driven by Playwright, nothing downloaded) and captured at 1000 x 700 (the title and the main figure) into
docs/gallery/NAME.png.

    python docs/gallery.py [--only estimate,plan,...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
from pathlib import Path

from megacluster.cli import main as megacluster

HERE = Path(__file__).resolve().parent / "gallery"
SIZE = {"width": 1000, "height": 700}
# name -> (command line, figure to capture (1-based); the README shows the same commands)
REPORTS = {
    "estimate": (["estimate", "-m", "llama3.1-405b", "-g", "h100-sxm", "-n", "16384", "--tp", "8", "--pp", "16",
                  "--global-batch", "2048", "--vp", "2", "--zero", "3"], 1),
    "plan": (["plan", "-m", "llama3.1-70b", "-g", "h100-sxm", "-n", "1024"], 2),
    "plan-sweep": (["plan", "-m", "llama3.1-70b", "-g", "h100-sxm", "--sweep-gpus", "256,1024,4096,16384"], 1),
    "campaign": (["campaign", "--scenario", "meta-llama3-405b"], 2),
    "reliability": (["reliability", "--gpus", "16384", "--days", "54"], 1),
    "validate": (["validate"], 1),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated report names")
    a = ap.parse_args()
    names = [n for n in REPORTS if not a.only or n in a.only.split(",")]
    tmp = Path(tempfile.mkdtemp())
    for name in names:
        argv, _ = REPORTS[name]
        with contextlib.redirect_stdout(io.StringIO()):          # the command's JSON is not wanted here
            megacluster(argv + ["--json", "--html", str(tmp / f"{name}.html")])
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("error: no chromium on PATH (apt-get install chromium)")
    HERE.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport=SIZE)
        page.set_default_timeout(180_000)                # a loaded machine takes a while over 5 MB of JavaScript
        for name in names:
            fig = REPORTS[name][1]
            page.goto((tmp / f"{name}.html").as_uri())
            page.wait_for_function("document.querySelectorAll('.plotly-graph-div svg.main-svg').length > 0")
            if fig > 1:                                  # bring the chosen figure to the top, under the title
                page.evaluate(f"document.getElementById('figure-{fig}').scrollIntoView()")
                page.evaluate("window.scrollBy(0, -60)")
            page.wait_for_timeout(300)
            out = HERE / f"{name}.png"
            page.screenshot(path=str(out))
            print(f"{out} ({out.stat().st_size / 1e3:.0f} kB)")
        browser.close()


if __name__ == "__main__":
    main()
