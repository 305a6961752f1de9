"""Interactive HTML reports (``--html FILE``) and static images (``--png FILE``) of the commands' results.

One module per command builds its figures from the result the command already computed (``estimate_figs``,
``plan_figs``, ``campaign_figs`` (also for ``size``), ``reliability_figs``, ``validate_figs``); :mod:`.page`
writes them into one self-contained HTML file (plotly.js embedded, nothing fetched from the network) and
exports the main figure as PNG. plotly is the ``report`` extra: ``pip install 'megacluster[report]'``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

from .page import Panel, require_plotly, write_outputs

__all__ = ["Panel", "require_plotly", "write_outputs", "write_report", "BUILDERS"]

# command -> (module, function returning (title, subtitle, panels, notes))
BUILDERS = {
    "estimate": ("estimate_figs", "estimate_report"),
    "plan": ("plan_figs", "plan_report"),
    "sweep": ("plan_figs", "sweep_report"),
    "campaign": ("campaign_figs", "campaign_report"),
    "campaign-compare": ("campaign_figs", "compare_report"),
    "size": ("campaign_figs", "size_report"),
    "reliability": ("reliability_figs", "reliability_report"),
    "validate": ("validate_figs", "validate_report"),
}


def builder(kind: str):
    """The report function of a command (imports plotly's figure modules only when a report is asked for)."""
    mod, fn = BUILDERS[kind]
    return getattr(importlib.import_module(f"{__name__}.{mod}"), fn)


def write_report(kind: str, html: Optional[Path | str], png: Optional[Path | str], *args: Any, **kwargs: Any) -> None:
    """Write ``--html`` and/or ``--png`` for a command's result (nothing when both are None)."""
    if html is None and png is None:
        return
    require_plotly()
    write_outputs(html, png, builder(kind), *args, **kwargs)
