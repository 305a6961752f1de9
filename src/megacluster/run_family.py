"""Families of published runs: the runs that come from one source (one paper's table, one framework's benchmark
page). Leave-one-family-out scoring (``benchmarks/cross_validation.py``) holds out a family at a time, so that no
constant is scored on the runs it was read from.

NOTE: the ``interval`` work (prediction intervals, ``megacluster.uncertainty``) keys runs by family too; the two
keys are to be unified into one function at merge.
"""

from __future__ import annotations

import re

_ARXIV = re.compile(r"arxiv[:\s]*(\d{4}\.\d{4,5})", re.IGNORECASE)


def family_key(run: dict) -> str:
    """The family of a run: the arXiv id its source title names (``arxiv:2104.04473``; versions dropped),
    else its source title lower-cased with whitespace collapsed, else its id up to the first digit-led part
    (a run without a source is a family of its own kind)."""
    src = run.get("source")
    title = (src.get("title") if isinstance(src, dict) else src) or ""
    title = " ".join(str(title).split())
    m = _ARXIV.search(title)
    if m:
        return f"arxiv:{m.group(1)}"
    if title:
        return title.lower()
    rid = str(run.get("id", "unnamed"))
    return re.split(r"-(?=\d)", rid, maxsplit=1)[0]


def matches(family: str, source_key: str) -> bool:
    """Whether a catalog constant's source key (an arXiv id or a title fragment, any case) names ``family``."""
    k = " ".join(str(source_key).split()).lower()
    return bool(k) and (k == family or k in family)
