"""The HTML reports (``--html``/``--png``): written by each command, self-contained, and rendered in a real
browser (Debian's chromium driven by Playwright, one browser session for all reports) with every figure drawn,
no JavaScript error and no network request."""

from __future__ import annotations

import json
import os
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from megacluster.cli import main

pytest.importorskip("plotly", reason="the HTML reports need plotly (pip install 'megacluster[report]')")

# command line of each report, small enough to run in about a second each
REPORTS = {
    "estimate": ["estimate", "-m", "llama3.1-8b", "-g", "h100-sxm", "-n", "64", "--tp", "2", "--pp", "4"],
    "plan": ["plan", "-m", "llama3.1-8b", "-g", "h100-sxm", "-n", "64", "--top", "3"],
    "sweep": ["plan", "-m", "llama3.1-8b", "-g", "h100-sxm", "--sweep-gpus", "64,512"],
    "campaign": ["campaign", "--scenario", "meta-llama3-405b", "--trials", "20"],
    "reliability": ["reliability", "--gpus", "16384", "--days", "54", "--trials", "50"],
    "validate": ["validate"],
}
# figures each report holds
FIGURES = {"estimate": 3, "plan": 2, "sweep": 2, "campaign": 5, "reliability": 3, "validate": 2}


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    paths = {}
    for name, argv in REPORTS.items():
        paths[name] = out / f"{name}.html"
        main(argv + ["--json", "--html", str(paths[name])])         # --json: no tables to draw
    return paths


class _Tags(HTMLParser):
    """The tags of a page that would load something: script src, link href, img/iframe src."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.scripts += tag == "script"
        for key in ("src", "href"):
            if a.get(key) and tag in ("script", "link", "img", "iframe"):
                self.loads.append(f"{tag} {a[key]}")


def test_each_command_writes_one_self_contained_file(reports, capsys):
    for name, path in reports.items():
        text = path.read_text()
        tags = _Tags()
        tags.feed(text)
        assert text.count('class="plotly-graph-div"') == FIGURES[name], name
        assert tags.loads == [] and tags.scripts >= FIGURES[name], name          # plotly.js inlined, no CDN
        assert "Plotly.newPlot" in text and len(text) > 1_000_000, name           # the library is embedded
        assert "<h1>megacluster " in text


def test_published_figures_carry_their_sources(reports):
    camp = reports["campaign"].read_text()
    assert "Llama 3 paper Table 4" in camp                  # the scenario's published MFU, with its source
    val = reports["validate"].read_text()
    assert "Narayanan et al. 2021" in val                  # a run's source under the scatter
    rel = reports["reliability"].read_text()
    assert "Daly 2006" in rel and "Llama 3 paper" in rel


def test_html_with_json_still_prints_only_json(tmp_path, capsys):
    path = tmp_path / "e.html"
    main(REPORTS["estimate"] + ["--json", "--html", str(path)])
    json.loads(capsys.readouterr().out)
    assert path.stat().st_size > 0


def test_html_into_a_missing_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(REPORTS["estimate"] + ["--html", str(tmp_path / "nope" / "e.html")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --html") and "does not exist" in err and "\n" not in err


def test_missing_plotly_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)            # import plotly -> ImportError
    with pytest.raises(SystemExit) as e:
        main(REPORTS["estimate"] + ["--html", str(tmp_path / "e.html")])
    assert e.value.code == 2
    assert "pip install 'megacluster[report]'" in capsys.readouterr().err
    assert not (tmp_path / "e.html").exists()


def test_png_of_the_main_figure(tmp_path):
    pytest.importorskip("kaleido", reason="--png needs kaleido (pip install 'megacluster[report]')")
    if not (shutil.which("chromium") or os.environ.get("BROWSER_PATH")):
        if os.environ.get("MEGACLUSTER_BROWSER_REQUIRED"):
            pytest.fail("chromium is required here but not found")
        pytest.skip("--png needs an installed Chromium (apt-get install chromium)")
    path = tmp_path / "r.png"
    main(REPORTS["reliability"] + ["--png", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def _browser(p):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    why = None if exe else "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
    if exe:
        try:
            return p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:            # noqa: BLE001 - the browser's own launch errors
            why = f"chromium at {exe} does not start: {str(e).splitlines()[0]}"
    if os.environ.get("MEGACLUSTER_BROWSER_REQUIRED"):
        pytest.fail(why)
    pytest.skip(why)


# every plotly div: its SVG is there and holds at least one drawn trace
_RENDERED = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
    id: d.id, svg: d.querySelectorAll('svg.main-svg').length,
    traces: d.querySelectorAll('g.trace, g.point, path.point').length,
    title: (d.querySelector('.gtitle') || {}).textContent || ''}))"""


def test_reports_render_in_chromium_without_errors_or_network(reports):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright "
                                   "(pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(180_000)            # a loaded CI machine parses 5 MB of JavaScript slowly
            errors: list[str] = []
            requests: list[str] = []

            def route(r):
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:                               # anything from the network: refuse and remember
                    requests.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            for name, path in reports.items():
                page.goto(path.resolve().as_uri())
                page.wait_for_function(
                    f"document.querySelectorAll('.plotly-graph-div svg.main-svg').length >= {FIGURES[name]}")
                figs = page.evaluate(_RENDERED)
                assert len(figs) == FIGURES[name], name
                for f in figs:
                    assert f["svg"] > 0 and f["traces"] > 0, (name, f)
                    assert f["title"].strip(), (name, f)
                assert not errors, (name, errors)
                assert not requests, (name, requests)
        finally:
            browser.close()
