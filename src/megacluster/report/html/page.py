"""One self-contained HTML page of plotly figures, and the PNG of the main figure.

The page embeds plotly.js (``include_plotlyjs=True``) and loads nothing else: no CDN, no MathJax, no fonts
from the network, so it opens offline. Each figure has a caption and the sources of the published figures it
shows, under it. The PNG goes through plotly's maintained exporter (kaleido >= 1), which drives a Chrome or
Chromium already installed (Debian's ``chromium`` package is found on the PATH; ``BROWSER_PATH`` names
another); nothing is downloaded.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ...errors import UserError

CONFIG = {"displaylogo": False, "responsive": True}
PNG_SIZE = (1000, 700)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; white-space: pre-line; }
section.figure { margin: 1.5em 0 2.5em; border-top: 1px solid #ddd; padding-top: 0.5em; }
.caption { color: #333; font-size: 0.92em; }
.sources { color: #555; font-size: 0.85em; }
.sources li { margin: 0.15em 0; }
.notes { color: #444; font-size: 0.9em; }
footer { color: #777; font-size: 0.8em; margin-top: 3em; }
"""


def require_plotly() -> Any:
    """The plotly package, or a UserError naming the extra that installs it."""
    try:
        import plotly  # noqa: F401
        import plotly.graph_objects as go
    except ImportError:
        raise UserError("--html and --png need plotly: pip install 'megacluster[report]'") from None
    return go


@dataclass
class Panel:
    """One figure of a report: the plotly figure, a caption (plain text) and the sources of what it shows."""

    fig: Any
    caption: str = ""
    sources: list[str] = field(default_factory=list)


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in items:
        s = " ".join(str(s).split())
        if s and s not in out:
            out.append(s)
    return out


def page_html(title: str, subtitle: str, panels: list[Panel], notes: Iterable[str] = ()) -> str:
    """The whole HTML document: plotly.js inlined once, then one section per panel."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_esc(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="sub">{_esc(subtitle)}</p>')
    for i, p in enumerate(panels):
        parts.append('<section class="figure">')
        parts.append(p.fig.to_html(full_html=False, include_plotlyjs=(i == 0), include_mathjax=False,
                                   config=CONFIG, div_id=f"figure-{i + 1}", default_width="100%",
                                   default_height=f"{int(p.fig.layout.height or 480)}px"))
        if p.caption:
            parts.append(f'<p class="caption">{_esc(p.caption)}</p>')
        srcs = _unique(p.sources)
        if srcs:
            parts.append('<p class="sources">Sources:</p><ul class="sources">' +
                         "".join(f"<li>{_esc(s)}</li>" for s in srcs) + "</ul>")
        parts.append("</section>")
    notes = _unique(notes)
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>note: {_esc(n)}</li>" for n in notes) + "</ul>")
    parts.append(f"<footer>megacluster report, written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; plotly.js is "
                 "embedded, the page needs no network.</footer></body></html>")
    return "\n".join(parts)


def write_html(path: Path | str, title: str, subtitle: str, panels: list[Panel],
               notes: Iterable[str] = ()) -> Path:
    """Write the report; returns the path. A path that cannot be written is a UserError."""
    path = Path(path)
    text = page_html(title, subtitle, panels, notes)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"--html {path}: cannot write the report ({e.strerror or e})") from None
    return path


def write_png(path: Path | str, panel: Panel, size: tuple[int, int] = PNG_SIZE) -> Path:
    """The panel's figure as a PNG through plotly's exporter (kaleido >= 1 with an installed Chromium)."""
    path = Path(path)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise UserError("--png needs kaleido>=1 and an installed Chromium (pip install 'megacluster[report]'; "
                        "apt-get install chromium); --html needs neither") from None
    if not path.parent.exists():
        raise UserError(f"--png {path}: the folder {path.parent} does not exist")
    try:
        panel.fig.write_image(str(path), format="png", width=size[0], height=size[1])
    except Exception as e:     # the exporter's own errors (no browser found, browser crashed)
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise UserError(f"--png: plotly's exporter (kaleido) could not render the image ({first}); install "
                        "Chromium (apt-get install chromium) or set BROWSER_PATH to a Chrome") from None
    return path


def write_outputs(html_path: Optional[Path | str], png_path: Optional[Path | str], build, *args: Any,
                  **kwargs: Any) -> None:
    """Build the report with ``build(*args, **kwargs) -> (title, subtitle, panels, notes)`` and write the HTML
    and/or the PNG of the first (main) figure. Nothing is built when neither path is given."""
    if html_path is None and png_path is None:
        return
    require_plotly()
    if html_path is not None and not Path(html_path).parent.exists():
        raise UserError(f"--html {html_path}: the folder {Path(html_path).parent} does not exist")
    title, subtitle, panels, notes = build(*args, **kwargs)
    if html_path is not None:
        write_html(html_path, title, subtitle, panels, notes)
    if png_path is not None:
        write_png(png_path, panels[0])
