"""User-facing errors: one clear line, exit code 2, never a traceback."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any, Iterable


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 40, 40, 40


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters with ``...`` (never computes a huge repr)."""
    try:
        r = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        r = f"<{type(value).__name__}>"
    r = " ".join(r.split())
    return r if len(r) <= limit else r[:limit - 3] + "..."


class UserError(Exception):
    """Bad input from the user. The CLI prints ``error: <message>`` on stderr and exits with 2."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """Build the error for an unknown catalog name, suggesting the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name).lower()[:100], known, n=3, cutoff=0.4)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"unknown {kind} {short(name)}{hint} (`megacluster catalog` lists them)")
