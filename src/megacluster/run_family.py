"""Families of published runs: the runs that come from one source (one paper's table, one framework's benchmark
page). Leave-one-family-out scoring (``benchmarks/cross_validation.py``) holds out a family at a time, so that no
constant is scored on the runs it was read from.

The prediction intervals (``megacluster.uncertainty``) use the same key, so a band never holds a run's own family.
"""

from __future__ import annotations

import re

_ARXIV = re.compile(r"arxiv[:\s]*(\d{4}\.\d{4,5})", re.IGNORECASE)


def family_key(run: dict) -> str:
    """The family of a run: the arXiv id its source title names (``arxiv:2104.04473``; versions dropped),
    else its source title lower-cased with parenthesised details dropped and whitespace collapsed, else the
    document part of its source locator (before any parenthesis or comma), else its id up to the first
    digit-led part (a run without a source is a family of its own kind)."""
    src = run.get("source") if isinstance(run, dict) else None
    title = (src.get("title") if isinstance(src, dict) else src) or ""
    title = " ".join(str(title).split())
    m = _ARXIV.search(title)
    if m:
        return f"arxiv:{m.group(1)}"
    text = " ".join(re.sub(r"\([^)]*\)", " ", title).split()).strip(" ,.;:")
    if not text and isinstance(src, dict):
        text = " ".join(str(src.get("locator") or "").split("(")[0].split(",")[0].split()).strip(" ,.;:")
    if text:
        return text.lower()
    rid = str(run.get("id", "unnamed") if isinstance(run, dict) else "unnamed")
    return re.split(r"-(?=\d)", rid, maxsplit=1)[0]


def matches(family: str, source_key: str) -> bool:
    """Whether a catalog constant's source key (an arXiv id or a title fragment, any case) names ``family``."""
    k = " ".join(str(source_key).split()).lower()
    return bool(k) and (k == family or k in family)
